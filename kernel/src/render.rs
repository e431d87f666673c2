//! Templates (DESIGN §9): the kernel decides *when* a service's files are rendered; the adapter
//! renders ([`Effect::Render`]) and answers [`Input::RenderDone`](crate::Input::RenderDone).
//!
//! * **Before each start** a service with templates is rendered; it starts only once the render
//!   succeeded (`changed` or `unchanged`). A failed render leaves it `waiting`, the history
//!   saying why; it is tried again when what it reads changes or on a new fact (an operator
//!   start or restart, a changed definition).
//! * **While it runs**, a change of the outputs it reads renders it again after its `debounce`
//!   (the timer restarts with every change: DHCP clients publish in bursts). `changed` is a new
//!   fact (strikes and `given-up` cleared) and applies the strongest `on-change` of the files
//!   that changed; `unchanged` does nothing; `failed` leaves the old files and the process as
//!   they were, and the history says why.
//! * At most one render per service is in flight; a change meanwhile renders once more after it.
//!   The answer of the render made old is thrown away, but a `changed` one has replaced files
//!   already: their `on-change` is owed, and applied (once) with the answer of the render after
//!   it, whatever that answer (`unchanged` included: the bytes changed on disk all the same).

use serde::{Deserialize, Serialize};

use crate::config::{Heal, OnChange};
use crate::kernel::Kernel;
use crate::protocol::{Effect, JobId, RenderResult, ServiceId};
use crate::timers::Timer;

/// Why a render was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RenderPurpose {
    /// Before a start: the start waits for it.
    Start,
    /// The outputs it reads changed while it runs.
    Refresh,
}

/// A service's render state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RenderState {
    /// The render in flight.
    pub in_flight: Option<(JobId, RenderPurpose)>,
    /// Outputs changed while a render was in flight: render again when it is done.
    pub again: bool,
    /// The files are rendered for the next start (nothing it reads has changed since).
    pub ready_for_start: bool,
    /// The last render before a start failed, with why: no start until something changes.
    pub failed: Option<String>,
    /// A secret it copies does not exist: no start until it is pushed (DESIGN §10).
    pub waiting_secret: Option<String>,
    /// Targets a thrown-away `changed` answer replaced while the process ran: their
    /// `on-change` is owed, applied with the next answer (each a target of a template: bounded
    /// by them). Cleared by a spawn, which reads the files as they are.
    pub owed: Vec<String>,
}

impl Kernel {
    /// Whether `id` may start now. A service with templates is rendered first: this asks for
    /// the render and says no until it has succeeded.
    pub(crate) fn rendered_for_start(&mut self, id: ServiceId, out: &mut Vec<Effect>) -> bool {
        if self.slots[id.index()].config.templates.is_empty() {
            return true;
        }
        if let Some(secret) = self.missing_secret(id).map(str::to_string) {
            let slot = &mut self.slots[id.index()];
            if slot.render.waiting_secret.as_ref() != Some(&secret) {
                slot.render.waiting_secret = Some(secret.clone());
                self.note(id, format!("waiting for secret {secret}"), out);
            }
            return false;
        }
        let slot = &mut self.slots[id.index()];
        slot.render.waiting_secret = None;
        let render = &mut slot.render;
        if render.ready_for_start {
            render.ready_for_start = false;
            return true;
        }
        if render.in_flight.is_none() && render.failed.is_none() {
            self.ask_render(id, RenderPurpose::Start, out);
        }
        false
    }

    /// What `id` reads changed (outputs published or cleared): a running service renders
    /// again after its debounce; one that is not running renders afresh before its start.
    pub(crate) fn inputs_changed(&mut self, id: ServiceId) {
        let now = self.now;
        let slot = &mut self.slots[id.index()];
        if slot.is_free() || slot.removed {
            return;
        }
        slot.render.ready_for_start = false;
        slot.render.failed = None;
        if self.shutting_down {
            return;
        }
        match slot.render.in_flight {
            Some(_) => slot.render.again = true,
            None if slot.running().is_some() => {
                let at = now + slot.config.render_debounce();
                self.timers.set(&mut slot.timers, id, Timer::Render, at);
            }
            None => {}
        }
        self.mark(id);
    }

    /// A new fact for `id`: a failed render is tried again at its next start.
    pub(crate) fn forget_render_failure(&mut self, id: ServiceId) {
        self.slots[id.index()].render.failed = None;
    }

    /// The debounce after a change of outputs is over.
    pub(crate) fn on_render_timer(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let slot = &mut self.slots[id.index()];
        if slot.render.in_flight.is_some() {
            slot.render.again = true;
        } else if slot.running().is_some() && !self.shutting_down {
            if let Some(secret) = self.missing_secret(id) {
                // Removed, or rolled back to none: the copy it has stays (a router must not
                // lose its ssh keys because one was removed from the store).
                let note = format!("secret {secret} is gone: its copy stays as it is");
                self.note(id, note, out);
                return;
            }
            self.ask_render(id, RenderPurpose::Refresh, out);
        }
    }

    pub(crate) fn ask_render(
        &mut self,
        id: ServiceId,
        purpose: RenderPurpose,
        out: &mut Vec<Effect>,
    ) {
        let job = self.new_job();
        let outputs = self.outputs_read_by(id);
        let secrets = self.secrets_read_by(id);
        let slot = &mut self.slots[id.index()];
        slot.render.in_flight = Some((job, purpose));
        slot.render.again = false;
        out.push(Effect::Render {
            service: id,
            job,
            templates: slot.config.templates.clone(),
            outputs,
            secrets,
        });
    }

    /// [`crate::Input::RenderDone`].
    pub(crate) fn on_render_done(
        &mut self,
        id: ServiceId,
        job: JobId,
        result: RenderResult,
        out: &mut Vec<Effect>,
    ) {
        let slot = &mut self.slots[id.index()];
        let Some((pending, purpose)) = slot.render.in_flight else {
            return;
        };
        if pending != job {
            return; // a render the kernel has moved on from
        }
        slot.render.in_flight = None;
        if std::mem::take(&mut slot.render.again) {
            // What it read changed while it rendered: that result is already old. Files it
            // changed are replaced all the same: the process must still hear of them.
            if let (RenderPurpose::Refresh, RenderResult::Changed(targets)) = (purpose, &result) {
                self.owe_on_change(id, targets);
                let note = format!(
                    "rendered {}; what it reads changed meanwhile: its on-change waits for the \
                     render after it",
                    targets.join(", ")
                );
                self.note(id, note, out);
            }
            match purpose {
                RenderPurpose::Start => self.mark(id),
                RenderPurpose::Refresh => self.on_render_timer(id, out),
            }
            return;
        }
        let rendered = !matches!(result, RenderResult::Failed(_));
        match (purpose, result) {
            (RenderPurpose::Start, RenderResult::Failed(why)) => {
                let note = format!("render failed: {why}; not started");
                self.slots[id.index()].render.failed = Some(why);
                self.note(id, note, out);
            }
            (RenderPurpose::Start, RenderResult::Changed(targets)) => {
                self.slots[id.index()].render.ready_for_start = true;
                self.note(id, format!("rendered {}", targets.join(", ")), out);
            }
            (RenderPurpose::Start, RenderResult::Unchanged) => {
                self.slots[id.index()].render.ready_for_start = true;
            }
            (RenderPurpose::Refresh, RenderResult::Failed(why)) => {
                let note = format!("render failed: {why}; the old files stay");
                self.note(id, note, out);
                // The files a thrown-away answer replaced stay too: they were rendered and
                // checked, so they are good, and they are what any start of the process would
                // read now. Applying their owed `on-change` now, rather than keeping it owed
                // for a render that may never succeed (the outputs may stay unrenderable),
                // is what keeps the process from running on files older than the disk's.
                let owed = std::mem::take(&mut self.slots[id.index()].render.owed);
                if !owed.is_empty() {
                    self.rendered_changed(id, &owed, out);
                }
            }
            (RenderPurpose::Refresh, RenderResult::Unchanged) => {
                let owed = std::mem::take(&mut self.slots[id.index()].render.owed);
                if !owed.is_empty() {
                    self.rendered_changed(id, &owed, out);
                }
            }
            (RenderPurpose::Refresh, RenderResult::Changed(targets)) => {
                let mut owed = std::mem::take(&mut self.slots[id.index()].render.owed);
                for t in targets {
                    if !owed.contains(&t) {
                        owed.push(t);
                    }
                }
                self.rendered_changed(id, &owed, out)
            }
        }
        // A refresh of a service that does not run (a secret changed meanwhile): its files
        // are rendered from what it reads now, ready for its next start.
        let slot = &mut self.slots[id.index()];
        if purpose == RenderPurpose::Refresh && rendered && slot.running().is_none() {
            slot.render.ready_for_start = true;
        }
        self.mark(id);
    }

    /// A thrown-away answer of `id` replaced `targets`: their `on-change` is owed. Only the
    /// targets of its templates, each once.
    fn owe_on_change(&mut self, id: ServiceId, targets: &[String]) {
        let slot = &mut self.slots[id.index()];
        for t in targets {
            let known = slot.config.templates.iter().any(|tpl| &tpl.target == t);
            if known && !slot.render.owed.contains(t) {
                slot.render.owed.push(t.clone());
            }
        }
    }

    /// Files of a running service changed: a new fact, and the strongest `on-change` of them.
    fn rendered_changed(&mut self, id: ServiceId, targets: &[String], out: &mut Vec<Effect>) {
        self.new_fact(id);
        let slot = &self.slots[id.index()];
        let on_change = slot
            .config
            .templates
            .iter()
            .filter(|t| targets.contains(&t.target))
            .map(|t| t.on_change)
            .max()
            .unwrap_or(OnChange::None);
        let condition = slot.condition.clone();
        let running = slot.running().is_some() && slot.wanted;
        let heal = match on_change {
            OnChange::Reload if running => Some(Heal::Reload),
            OnChange::Restart if running => Some(Heal::Restart),
            _ => None,
        };
        let changed = || {
            slot.config
                .templates
                .iter()
                .filter(|t| targets.contains(&t.target))
        };
        let why = if changed().any(|t| matches!(t.source, crate::config::TemplateSource::Secret(_)))
        {
            "a secret changed"
        } else if changed().any(|t| !t.secrets.is_empty()) {
            "outputs or a secret changed"
        } else {
            "outputs changed"
        };
        let note = format!("rendered {} ({why})", targets.join(", "));
        self.record(id, condition, heal.clone(), None, note, out);
        match heal {
            Some(Heal::Restart) => {
                // The files were just rendered: the start that follows need not render again.
                self.slots[id.index()].render.ready_for_start = true;
                self.restart(id);
            }
            Some(heal) => self.apply_heal(id, heal, out),
            None => {}
        }
    }
}
