//! Property 10 (DESIGN.md §11): a timed job never has two runs at once (property 4 holds that
//! for every service), and a oneshot with `every` runs at most once per period: after a run
//! the world saw succeed, the next spawn comes `every` later at the earliest.
//!
//! Judged from what the world saw and the inputs, not from the kernel's record. A spawn sooner
//! is excused only by something that may rightly start it again: an operator command, a new
//! config, a watched file, or anything happening to one of its needs (a need that failed may
//! have stopped it, with `stop-when-needs-fail`, and its recovery starts it).

use std::collections::{BTreeMap, BTreeSet};

use medic_kernel::{Effect, Input, Instant, JobId, Kernel, ServiceId};

use crate::check::{Checker, Property};

/// What the checker remembers of one timed oneshot.
#[derive(Clone, Debug, Default)]
struct Track {
    /// The last run that succeeded, and when.
    succeeded_at: Option<Instant>,
    /// Since then, something may rightly have started it again.
    excused: bool,
}

/// The property 10 checker.
#[derive(Clone, Debug, Default)]
pub struct TimedJobs {
    tracks: BTreeMap<ServiceId, Track>,
    /// Services whose current run has been sent a stop signal (its exit, even 0, is a stop).
    signaled: BTreeSet<ServiceId>,
    /// The job of each service's latest spawn: only its exit is the run's end.
    current: BTreeMap<ServiceId, JobId>,
}

impl TimedJobs {
    /// Checks one step (after the world has carried out `effects`).
    pub fn after_step(
        &mut self,
        now: Instant,
        input: &Input,
        k: &Kernel,
        effects: &[Effect],
        checker: &mut Checker,
    ) {
        if matches!(
            input,
            Input::Operator(_) | Input::ReplaceConfig { .. } | Input::FileChanged { .. }
        ) {
            self.tracks.values_mut().for_each(|t| t.excused = true);
            if matches!(input, Input::ReplaceConfig { .. }) {
                // A slot may hold another service now: start afresh.
                self.tracks.clear();
            }
        }
        // What happened to which service in this step.
        let mut touched: BTreeSet<ServiceId> = BTreeSet::new();
        if let Some((service, _)) = input.job() {
            touched.insert(service);
        }
        if let Input::LinkChanged { ifname, .. } = input {
            for v in k.views() {
                if matches!(&v.config().kind, medic_kernel::config::Kind::Interface { ifname: i, .. } if i == ifname)
                {
                    touched.insert(v.id());
                }
            }
        }
        for e in effects {
            if let Some(service) = effect_service(e) {
                touched.insert(service);
            }
        }
        for (id, t) in self.tracks.iter_mut() {
            let Some(v) = k.status(*id) else { continue };
            if v.needs().iter().any(|n| touched.contains(n)) {
                t.excused = true;
            }
        }
        for e in effects {
            if let Effect::Signal { service, .. } | Effect::Kill { service, .. } = e {
                self.signaled.insert(*service);
            }
            let Effect::Spawn {
                service,
                config,
                job,
            } = e
            else {
                continue;
            };
            self.signaled.remove(service);
            self.current.insert(*service, *job);
            let Some(every) = config.every else { continue };
            let t = self.tracks.entry(*service).or_default();
            if let (Some(at), false) = (t.succeeded_at, t.excused) {
                if now < at + every {
                    let what = format!(
                        "ran again {:?} after its last success, `every` is {:?}",
                        now.saturating_since(at),
                        every
                    );
                    checker.report(Property::Timed, Some(*service), &config.name, now, what);
                }
            }
            t.succeeded_at = None;
        }
        if let Input::Exited {
            service,
            status,
            job,
        } = input
        {
            let this_run = self.current.get(service) == Some(job);
            let timed = k
                .status(*service)
                .is_some_and(|v| v.config().every.is_some());
            if timed && this_run && status.success() && !self.signaled.contains(service) {
                self.tracks.insert(
                    *service,
                    Track {
                        succeeded_at: Some(now),
                        excused: false,
                    },
                );
            }
        }
    }
}

/// The service an effect is about, if any.
fn effect_service(e: &Effect) -> Option<ServiceId> {
    match e {
        Effect::Spawn { service, .. }
        | Effect::Signal { service, .. }
        | Effect::Kill { service, .. }
        | Effect::RunCommand { service, .. }
        | Effect::Event { service, .. } => Some(*service),
        _ => None,
    }
}
