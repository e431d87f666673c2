//! Timed jobs (DESIGN.md §11): `every` runs a oneshot again that long after its last success;
//! `restart-every` restarts a process that long after each start. Neither is an intervention:
//! no strike, no settle time; the history says what was planned, and what was skipped.

use crate::health::Condition;
use crate::kernel::Kernel;
use crate::protocol::{Effect, ServiceId};
use crate::timers::Timer;

impl Kernel {
    /// The `every` or `restart-every` timer of `id` is due.
    pub(crate) fn on_periodic(&mut self, id: ServiceId, out: &mut Vec<Effect>) {
        let slot = &self.slots[id.index()];
        let config = slot.config.clone();
        if !slot.wanted || self.shutting_down || slot.removed {
            return; // stopped: its next start arms the timer again
        }
        let (period, what) = match (config.every, config.restart_every) {
            (Some(every), _) if slot.is_oneshot() => (every, "run again"),
            (_, Some(every)) if !slot.is_oneshot() => (every, "planned restart"),
            _ => return, // the definition changed meanwhile
        };
        let period_words = humantime::format_duration(period);
        let key = if slot.is_oneshot() {
            "every"
        } else {
            "restart-every"
        };
        // Why not now, if not now: the history says so and the next period is waited for.
        let skip = if slot.unhealthy_needs > 0 {
            Some(format!("needs {} down", self.unhealthy_need_names(id)))
        } else if slot.is_oneshot() && slot.proc.is_some() {
            Some("the previous run is still going".to_string())
        } else if slot.is_oneshot() && !slot.oneshot_done {
            return; // failed or stopped: the heal rules own it; its next success re-arms
        } else if !slot.is_oneshot() && slot.proc.is_none() {
            return; // not running: its next start re-arms
        } else if slot.condition != Condition::Ready {
            Some(format!("it is {}", slot.condition.name()))
        } else {
            None
        };
        if let Some(why) = skip {
            self.note(
                id,
                format!("{key} {period_words}: {what} skipped: {why}"),
                out,
            );
            let at = self.now + period;
            let slot = &mut self.slots[id.index()];
            self.timers.set(&mut slot.timers, id, Timer::Periodic, at);
            return;
        }
        self.note(id, format!("{key} {period_words}: {what}"), out);
        if self.slots[id.index()].is_oneshot() {
            // Up to now it was done; `act` starts the next run.
            self.slots[id.index()].oneshot_done = false;
            self.mark(id);
        } else {
            self.restart(id);
        }
    }
}
