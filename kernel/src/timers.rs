//! The kernel's timers: at most one of each [`Timer`] kind per service, kept in one ordered set
//! so that `next_deadline` and firing cost `O(log n)` whatever the size of the graph.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::protocol::ServiceId;
use crate::time::Instant;

/// What a timer is for. At most one of each kind per service, so the number of pending timers
/// is bounded by `services × Timer::COUNT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Timer {
    /// The settle time of the last intervention ends: record its outcome.
    Settle,
    /// Settle or backoff has passed: the next intervention may be made.
    Retry,
    /// A starting process has not become ready in time.
    StartTimeout,
    /// A stopping process has not exited in time: SIGKILL its group.
    StopTimeout,
    /// Next readiness poll.
    ReadyPoll,
    /// Next probe.
    Probe,
    /// Next memory sample.
    Memory,
    /// Watched files changed and the debounce time has passed.
    Debounce,
    /// A `given-up` service may be tried again.
    RetryAfter,
    /// Healthy for `forgive-after`: clear the strikes.
    Forgive,
    /// `every` (a oneshot's next run) or `restart-every` (a process's planned restart).
    Periodic,
    /// The next `at` time.
    At,
    /// Outputs a service's templates read changed and its debounce has passed: render again.
    Render,
}

impl Timer {
    /// How many kinds there are.
    pub const COUNT: usize = 13;

    /// The timers that watch a running process: they end when it ends or is asked to stop.
    pub const OF_RUNNING_PROCESS: [Timer; 4] = [
        Timer::StartTimeout,
        Timer::ReadyPoll,
        Timer::Probe,
        Timer::Memory,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// One service's pending timers, one slot per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTimers([Option<Instant>; Timer::COUNT]);

impl ServiceTimers {
    /// When the timer of `kind` fires, if set.
    pub fn get(&self, kind: Timer) -> Option<Instant> {
        self.0[kind.index()]
    }

    /// Forgets a timer that [`Timers::pop_due`] has just removed from the queue.
    pub fn fired(&mut self, kind: Timer) {
        self.0[kind.index()] = None;
    }
}

/// Every pending timer of every service, ordered by deadline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timers {
    queue: BTreeSet<(Instant, ServiceId, Timer)>,
}

impl Timers {
    /// Sets (or moves) the timer `kind` of `service` to `at`.
    pub fn set(&mut self, per: &mut ServiceTimers, service: ServiceId, kind: Timer, at: Instant) {
        if let Some(old) = per.0[kind.index()].replace(at) {
            self.queue.remove(&(old, service, kind));
        }
        self.queue.insert((at, service, kind));
    }

    /// Sets the timer unless it is already set to fire no later than `at`.
    pub fn set_earliest(
        &mut self,
        per: &mut ServiceTimers,
        service: ServiceId,
        kind: Timer,
        at: Instant,
    ) {
        match per.get(kind) {
            Some(old) if old <= at => {}
            _ => self.set(per, service, kind, at),
        }
    }

    /// Cancels the timer `kind` of `service`, if set.
    pub fn clear(&mut self, per: &mut ServiceTimers, service: ServiceId, kind: Timer) {
        if let Some(old) = per.0[kind.index()].take() {
            self.queue.remove(&(old, service, kind));
        }
    }

    /// Cancels every timer of `kinds`.
    pub fn clear_each(&mut self, per: &mut ServiceTimers, service: ServiceId, kinds: &[Timer]) {
        for &kind in kinds {
            self.clear(per, service, kind);
        }
    }

    /// The services that have a timer pending (with repeats).
    pub fn services(&self) -> impl Iterator<Item = ServiceId> + '_ {
        self.queue.iter().map(|&(_, id, _)| id)
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns the earliest timer due at or before `now`. The caller then calls
    /// [`ServiceTimers::fired`] on that service's slots.
    pub fn pop_due(&mut self, now: Instant) -> Option<(ServiceId, Timer)> {
        let &(at, service, kind) = self.queue.first()?;
        if at > now {
            return None;
        }
        self.queue.pop_first();
        Some((service, kind))
    }

    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Checks that the ordered set and the per-service slots agree.
    pub fn check(&self, per: &[&ServiceTimers]) -> Result<(), String> {
        let mut count = 0;
        for (i, timers) in per.iter().enumerate() {
            for (k, at) in timers.0.iter().enumerate() {
                if let Some(at) = at {
                    count += 1;
                    if !self.queue.contains(&(*at, ServiceId(i as u32), ALL[k])) {
                        return Err(format!(
                            "timer {:?} of service {i} missing from queue",
                            ALL[k]
                        ));
                    }
                }
            }
        }
        if count != self.queue.len() {
            return Err(format!(
                "timer queue holds {} entries, services hold {count}",
                self.queue.len()
            ));
        }
        Ok(())
    }
}

/// Every kind.
pub(crate) const ALL: [Timer; Timer::COUNT] = [
    Timer::Settle,
    Timer::Retry,
    Timer::StartTimeout,
    Timer::StopTimeout,
    Timer::ReadyPoll,
    Timer::Probe,
    Timer::Memory,
    Timer::Debounce,
    Timer::RetryAfter,
    Timer::Forgive,
    Timer::Periodic,
    Timer::At,
    Timer::Render,
];
