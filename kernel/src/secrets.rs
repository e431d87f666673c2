//! Secrets and confirm-or-roll-back (DESIGN §10).
//!
//! * **A secret is `(name, generation)`** to the kernel: [`Input::SecretSet`] says that `name`
//!   is at `generation` now, [`Input::SecretRemoved`] that it is gone. The bytes stay in the
//!   adapter's store; no byte and no digest of one reaches the kernel, so none can reach a
//!   trace, a history, an event or a log line.
//! * **Copies.** A service that declares `[service.X.secret.NAME]` has a copy of the secret at
//!   its `target`, rendered with its templates ([`Effect::Render`] names the generation of each
//!   secret it copies; the adapter reads those bytes from its store). It is not started until
//!   every secret it copies exists (`waiting`, "waiting for secret NAME"). A new generation is
//!   a line in its history (`secret authorized-keys: generation 2`) and renders it at once
//!   (no debounce: a push is one deliberate act); a changed copy applies its `on-change`.
//! * **Confirm or roll back.** A push or a config applied with `confirm_within` keeps what was
//!   in force before and sets a deadline (a kernel timer, so the simulator and replay see it).
//!   [`Input::Confirm`] makes it final; at the deadline the previous generation (or config) is
//!   in force again, the consumers render again and get their `on-change` again, and each
//!   history names what was rolled back. **One change waits at a time**: another push, removal
//!   or apply meanwhile is refused with a [`Effect::Notice`] and changes nothing (the adapter
//!   refuses it before it stores anything, with the same words).
//! * **The store follows the kernel's word**: [`Effect::DropSecret`] says when a generation is
//!   no longer needed (superseded, confirmed over, rolled back, removed).

use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::kernel::Kernel;
use crate::protocol::{Effect, ServiceId};
use crate::time::Instant;
use crate::timers::Timer;

/// A change that waits for `medic confirm`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// `medic secret set NAME --confirm-within D`.
    Secret {
        /// The secret.
        name: String,
        /// The generation pushed.
        generation: u64,
        /// The generation in force before (`None`: there was none).
        previous: Option<u64>,
    },
    /// `medic apply FILE --confirm-within D`.
    Config {
        /// The config in force before.
        previous: Box<Config>,
    },
}

/// The change waiting for its confirmation, and when it is rolled back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// What changed.
    pub change: Change,
    /// Rolled back at this instant unless confirmed.
    pub deadline: Instant,
    /// The time it was given (for the history's words).
    pub within: Duration,
}

impl Pending {
    /// `secret authorized-keys generation 3 (else back to generation 2)`, `the config applied
    /// by medic apply (else back to the config before it)`.
    pub fn describe(&self) -> String {
        match &self.change {
            Change::Secret {
                name,
                generation,
                previous: Some(p),
            } => format!("secret {name} generation {generation} (else back to generation {p})"),
            Change::Secret {
                name, generation, ..
            } => format!("secret {name} generation {generation} (else removed)"),
            Change::Config { .. } => {
                "the config applied by medic apply (else back to the config before it)".into()
            }
        }
    }
}

/// The words of a refusal while a change waits.
fn busy(pending: &Pending) -> String {
    format!(
        "{} waits for `medic confirm`; one change at a time: confirm it or let it roll back first",
        pending.describe()
    )
}

impl Kernel {
    /// The generation in force of every secret, by name.
    pub fn secrets(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.secrets
    }

    /// The change waiting for `medic confirm`, if any.
    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// The services whose templates copy secret `name`, in config order.
    fn consumers(&self, name: &str) -> Vec<ServiceId> {
        self.order
            .iter()
            .copied()
            .filter(|id| {
                self.slots[id.index()]
                    .config
                    .templates
                    .iter()
                    .any(|t| t.secrets_read().any(|s| s == name))
            })
            .collect()
    }

    /// [`crate::Input::SecretSet`].
    pub(crate) fn on_secret_set(
        &mut self,
        name: String,
        generation: u64,
        confirm_within: Option<Duration>,
        out: &mut Vec<Effect>,
    ) {
        if !crate::outputs::valid_key(&name) {
            out.push(Effect::Notice {
                message: format!("secret set: `{name}` is not a secret name; nothing changed"),
            });
            return;
        }
        if let Some(pending) = &self.pending {
            out.push(Effect::Notice {
                message: format!("secret set {name}: refused: {}", busy(pending)),
            });
            return;
        }
        let previous = self.secrets.insert(name.clone(), generation);
        if !self.booted {
            return; // the store's secrets, told before boot: nothing has copied them yet
        }
        if previous == Some(generation) {
            return; // the same generation again: nothing new
        }
        let mut note = format!("secret {name}: generation {generation}");
        match confirm_within {
            Some(within) => {
                note.push_str(&format!(
                    ", to be confirmed within {}",
                    humantime::format_duration(within)
                ));
                self.pending = Some(Pending {
                    change: Change::Secret {
                        name: name.clone(),
                        generation,
                        previous,
                    },
                    deadline: self.now + within,
                    within,
                });
            }
            None => {
                if let Some(generation) = previous {
                    out.push(Effect::DropSecret {
                        name: name.clone(),
                        generation,
                    });
                }
            }
        }
        self.secret_changed(&name, note, out);
    }

    /// [`crate::Input::SecretRemoved`].
    pub(crate) fn on_secret_removed(&mut self, name: String, out: &mut Vec<Effect>) {
        if let Some(pending) = &self.pending {
            out.push(Effect::Notice {
                message: format!("secret rm {name}: refused: {}", busy(pending)),
            });
            return;
        }
        let Some(generation) = self.secrets.remove(&name) else {
            return;
        };
        out.push(Effect::DropSecret {
            name: name.clone(),
            generation,
        });
        let note = format!("secret {name}: removed (a copy already made stays)");
        self.secret_changed(&name, note, out);
    }

    /// [`crate::Input::ApplyConfig`].
    pub(crate) fn on_apply_config(
        &mut self,
        text: &str,
        confirm_within: Option<Duration>,
        out: &mut Vec<Effect>,
    ) {
        if let Some(pending) = &self.pending {
            out.push(Effect::Notice {
                message: format!("medic apply: refused: {}", busy(pending)),
            });
            return;
        }
        let Some(new) = self.parse_config(text, out) else {
            return;
        };
        let previous = self.config.clone();
        let why = match confirm_within {
            Some(within) => format!(
                "definition changed (medic apply, to be confirmed within {})",
                humantime::format_duration(within)
            ),
            None => "definition changed (medic apply)".to_string(),
        };
        self.replace_with(new, &why, out);
        if let Some(within) = confirm_within {
            self.pending = Some(Pending {
                change: Change::Config {
                    previous: Box::new(previous),
                },
                deadline: self.now + within,
                within,
            });
        }
    }

    /// [`crate::Input::Confirm`].
    pub(crate) fn on_confirm(&mut self, out: &mut Vec<Effect>) {
        let Some(pending) = self.pending.take() else {
            out.push(Effect::Notice {
                message: "medic confirm: nothing waits for a confirmation".into(),
            });
            return;
        };
        match pending.change {
            Change::Secret {
                name,
                generation,
                previous,
            } => {
                if let Some(previous) = previous {
                    out.push(Effect::DropSecret {
                        name: name.clone(),
                        generation: previous,
                    });
                }
                for id in self.consumers(&name) {
                    self.note(
                        id,
                        format!("secret {name}: generation {generation} confirmed"),
                        out,
                    );
                }
            }
            Change::Config { .. } => out.push(Effect::Notice {
                message: "medic confirm: the config applied by medic apply is final".into(),
            }),
        }
    }

    /// The deadline of the pending change, if it is due at `now`: roll it back.
    pub(crate) fn roll_back_if_due(&mut self, out: &mut Vec<Effect>) {
        if self.pending.as_ref().is_none_or(|p| p.deadline > self.now) {
            return;
        }
        let Some(pending) = self.pending.take() else {
            return;
        };
        let within = humantime::format_duration(pending.within);
        match pending.change {
            Change::Secret {
                name,
                generation,
                previous,
            } => {
                let back = match previous {
                    Some(p) => {
                        self.secrets.insert(name.clone(), p);
                        format!("rolled back to generation {p}")
                    }
                    None => {
                        self.secrets.remove(&name);
                        "rolled back to none (a copy already made stays)".to_string()
                    }
                };
                out.push(Effect::DropSecret {
                    name: name.clone(),
                    generation,
                });
                let note = format!(
                    "secret {name}: generation {generation} not confirmed within {within}; {back}"
                );
                self.secret_changed(&name, note, out);
            }
            Change::Config { previous } => {
                let why = format!(
                    "definition changed (config rolled back: medic apply not confirmed within {within})"
                );
                out.push(Effect::Notice {
                    message: format!(
                        "the config applied by medic apply was not confirmed within {within}: \
                         the config before it is back"
                    ),
                });
                self.replace_with(*previous, &why, out);
                out.push(Effect::ConfigRolledBack);
            }
        }
    }

    /// Secret `name` changed (a new generation, removed, rolled back): each service that copies
    /// it gets `note` in its history and its copies are made again at once (no debounce: a push
    /// is one deliberate act), whether it runs or not: a rolled-back key must leave the disk
    /// even while its consumer is down. A running consumer then gets its `on-change`; one that
    /// does not run is rendered afresh before its next start.
    fn secret_changed(&mut self, name: &str, note: String, out: &mut Vec<Effect>) {
        for id in self.consumers(name) {
            self.note(id, note.clone(), out);
            let slot = &mut self.slots[id.index()];
            if slot.removed || self.shutting_down {
                continue;
            }
            slot.render.ready_for_start = false;
            slot.render.failed = None;
            slot.render.waiting_secret = None;
            let ever_started = slot.ever_started;
            if slot.render.in_flight.is_some() {
                slot.render.again = true;
            } else if ever_started && self.missing_secret(id).is_none() {
                // A render the outputs scheduled is no longer needed.
                let slot = &mut self.slots[id.index()];
                self.timers.clear(&mut slot.timers, id, Timer::Render);
                self.ask_render(id, crate::render::RenderPurpose::Refresh, out);
            }
            self.mark(id);
        }
    }

    /// The first secret `id` copies that does not exist, if any.
    pub(crate) fn missing_secret(&self, id: ServiceId) -> Option<&str> {
        self.slots[id.index()]
            .config
            .templates
            .iter()
            .flat_map(|t| t.secrets_read())
            .find(|s| !self.secrets.contains_key(*s))
    }

    /// The generation of each secret `id` copies (those that exist).
    pub(crate) fn secrets_read_by(&self, id: ServiceId) -> std::collections::BTreeMap<String, u64> {
        self.slots[id.index()]
            .config
            .templates
            .iter()
            .flat_map(|t| t.secrets_read())
            .filter_map(|s| Some((s.to_string(), *self.secrets.get(s)?)))
            .collect()
    }
}
