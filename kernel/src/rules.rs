//! The medical rules (architecture.md §2), as pure functions over one service's [`Medical`] record:
//! which heal to try now, or when, or to give up; what an intervention, a new fact and
//! forgiveness do to the strikes, the settle time and the backoff.
//!
//! Nothing here knows about processes, timers or other services: the kernel asks, then acts.

use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Heal, ServiceConfig};
use crate::health::{self, Condition};
use crate::time::Instant;

/// What the medical history says about one service: its strikes and when it may next be
/// treated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Medical {
    /// The medical history says stop trying until a new fact.
    pub given_up: bool,
    /// Interventions since the service was last healthy for `forgive-after`.
    pub strikes: u32,
    /// No automatic intervention before this (the settle time of the last one).
    pub settle_until: Instant,
    /// No automatic intervention before this (settle or backoff, whichever is later).
    pub next_allowed: Instant,
    /// The history record of the intervention whose outcome is not known yet.
    pub pending_attempt: Option<u64>,
    /// The service fell ill again after that intervention had made it healthy.
    pub relapsed: bool,
    /// Stopped by `stop-when-needs-fail`; its next start waits for `start_gate`.
    pub stopped_for_needs: bool,
    /// That stop was for needs down for a planned restart or run (`restart-every`,
    /// `every`, `at`, upstream or theirs): the start after it is not counted.
    pub needs_planned: bool,
    /// Starts after a need came back, since the service was last healthy for `forgive-after`.
    pub needs_restarts: u32,
    /// No start after a need came back before this.
    pub start_gate: Instant,
}

/// What the medical rules say to do about an unhealthy service now.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Plan {
    /// Nothing to do (healthy, transient, or no heal); the reason when there is one.
    Nothing(Option<String>),
    /// A heal is due but must wait until the instant (settle or backoff).
    Defer(Instant, String),
    /// The strikes are used up: go `given-up`.
    GiveUp,
    /// Make this intervention now, with this settle time.
    Heal(Heal, Duration),
}

/// What to do about a wanted service in `condition` at `now`.
pub(crate) fn plan(
    m: &Medical,
    config: &ServiceConfig,
    condition: &Condition,
    now: Instant,
) -> Plan {
    if condition.is_transient() {
        return Plan::Nothing(None);
    }
    let verdict = health::verdict(config, condition);
    if verdict.healthy {
        return Plan::Nothing(None);
    }
    if matches!(
        condition,
        Condition::Blocked | Condition::GivenUp | Condition::Stopped
    ) {
        return Plan::Nothing(None);
    }
    if verdict.heal.is_empty() {
        return Plan::Nothing(Some(format!("no heal for {condition}")));
    }
    if m.strikes >= config.give_up_after {
        // The last intervention gets its whole settle time to work before giving up.
        if now < m.settle_until {
            let at = m.settle_until;
            return Plan::Defer(at, format!("settling until {at}, then giving up"));
        }
        return Plan::GiveUp;
    }
    let at = m.settle_until.max(m.next_allowed);
    if now < at {
        let why = if now < m.settle_until && at > m.settle_until {
            format!(
                "settling until {}, then backing off until {at} after {} strikes",
                m.settle_until, m.strikes
            )
        } else if now < m.settle_until {
            format!("settling until {at}")
        } else {
            format!("backing off until {at} after {} strikes", m.strikes)
        };
        return Plan::Defer(at, why);
    }
    // The n-th consecutive attempt uses rung n, the last rung repeating.
    let rung = (m.strikes as usize).min(verdict.heal.len() - 1);
    let heal = verdict.heal[rung].clone();
    let settle = health::settle_of(&verdict, &heal);
    Plan::Heal(heal, settle)
}

/// The wait after the `strikes`-th intervention: `min(settle × 2^(strikes−1), max_backoff)`.
pub fn backoff(settle: Duration, strikes: u32, max_backoff: Duration) -> Duration {
    let factor = 1u32 << strikes.saturating_sub(1).min(30);
    settle.saturating_mul(factor).min(max_backoff)
}

impl Medical {
    /// An intervention is made at `now`: one more strike, and nothing else is tried before its
    /// settle time, nor before the backoff its strikes demand. Returns the strike's number.
    pub fn intervene(&mut self, now: Instant, settle: Duration, max_backoff: Duration) -> u32 {
        self.strikes += 1;
        let wait = backoff(settle, self.strikes, max_backoff);
        self.settle_until = now + settle;
        self.next_allowed = now + settle.max(wait);
        self.relapsed = false;
        self.strikes
    }

    /// The outcome of the pending intervention at the end of its settle time: healthy then,
    /// and not fallen ill since it was made, is resolved.
    pub fn outcome(&self, healthy: bool) -> crate::history::Outcome {
        if healthy && !self.relapsed {
            crate::history::Outcome::Resolved
        } else {
            crate::history::Outcome::Unresolved
        }
    }

    /// A new fact (architecture.md §2): strikes and `given-up` are cleared. The settle time of the
    /// last intervention still stands.
    pub fn new_fact(&mut self) {
        self.strikes = 0;
        self.given_up = false;
        self.next_allowed = self.settle_until;
    }

    /// Healthy for `forgive-after`: the starts after needs came back are forgotten, and the
    /// strikes cleared (an interface that gave up and came back by itself too). Returns the
    /// strikes cleared, if any.
    pub fn forgive(&mut self, now: Instant) -> Option<u32> {
        if self.needs_restarts > 0 {
            self.needs_restarts = 0;
            self.start_gate = now;
        }
        if self.strikes == 0 {
            return None;
        }
        let cleared = self.strikes;
        self.strikes = 0;
        self.next_allowed = self.settle_until;
        self.given_up = false;
        Some(cleared)
    }

    /// Whether forgiveness has anything to clear (so a healthy service without strikes sets
    /// no timer: no idle wake-ups).
    pub fn has_anything_to_forgive(&self) -> bool {
        self.strikes > 0 || self.needs_restarts > 0
    }

    /// A service stopped by `stop-when-needs-fail` may start again now that its needs are
    /// back: `Err(at)` when a flapping need would cycle it faster than a restart's settle
    /// time (doubling while the flapping goes on), else the start is counted. A stop for a
    /// planned restart upstream is not flapping: the start after it waits for a gate that
    /// stands, but is not counted and moves no gate (else a need restarted more often than
    /// `max-backoff` would keep it down for ever).
    pub fn start_after_needs(
        &mut self,
        now: Instant,
        max_backoff: Duration,
    ) -> Result<(), Instant> {
        if !self.stopped_for_needs {
            return Ok(());
        }
        if now < self.start_gate {
            return Err(self.start_gate);
        }
        self.stopped_for_needs = false;
        if core::mem::take(&mut self.needs_planned) {
            return Ok(());
        }
        self.needs_restarts = self.needs_restarts.saturating_add(1);
        let settle = Heal::Restart.default_settle();
        self.start_gate = now + backoff(settle, self.needs_restarts, max_backoff);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;

    fn config() -> ServiceConfig {
        ServiceConfig::new(
            "x",
            Kind::Process {
                argv: vec!["/bin/true".into()],
            },
        )
    }

    #[test]
    fn backoff_doubles_from_the_settle_time_up_to_the_cap() {
        let s = Duration::from_secs(1);
        let cap = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=10).map(|n| backoff(s, n, cap).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff(s, 0, cap), s);
        assert_eq!(backoff(s, u32::MAX, cap), cap);
    }

    #[test]
    fn the_ladder_climbs_one_rung_per_strike_and_the_last_rung_repeats() {
        let mut c = config();
        c.on.insert(
            Condition::Exited,
            crate::config::VerdictOverride {
                healthy: None,
                heal: Some(vec![Heal::Restart, Heal::Kill]),
                settle: None,
            },
        );
        let mut m = Medical::default();
        let mut now = Instant::ZERO;
        let mut heals = Vec::new();
        for _ in 0..3 {
            match plan(&m, &c, &Condition::Exited, now) {
                Plan::Heal(h, settle) => {
                    heals.push(h);
                    m.intervene(now, settle, c.max_backoff);
                }
                other => panic!("expected a heal, got {other:?}"),
            }
            now = m.next_allowed;
        }
        assert_eq!(heals, [Heal::Restart, Heal::Kill, Heal::Kill]);
    }

    #[test]
    fn strikes_used_up_wait_for_the_last_settle_then_give_up() {
        let c = config();
        let mut m = Medical::default();
        let now = Instant::from_millis(1000);
        for _ in 0..c.give_up_after {
            m.intervene(now, Duration::from_secs(1), c.max_backoff);
        }
        assert!(matches!(
            plan(&m, &c, &Condition::Exited, now),
            Plan::Defer(..)
        ));
        let later = now + Duration::from_secs(1);
        assert_eq!(plan(&m, &c, &Condition::Exited, later), Plan::GiveUp);
        m.new_fact();
        assert!(matches!(
            plan(&m, &c, &Condition::Exited, later),
            Plan::Heal(..)
        ));
    }

    #[test]
    fn a_new_fact_clears_strikes_and_backoff_but_not_the_settle_time() {
        let mut m = Medical::default();
        let now = Instant::ZERO;
        for _ in 0..5 {
            m.intervene(now, Duration::from_secs(1), Duration::from_secs(300));
        }
        assert_eq!(m.next_allowed, now + Duration::from_secs(16));
        m.new_fact();
        assert_eq!(
            (m.strikes, m.next_allowed),
            (0, now + Duration::from_secs(1))
        );
    }

    #[test]
    fn a_deferred_heal_says_what_it_waits_for_and_until_when() {
        let c = config();
        let why = |m: &Medical, ms: u64| match plan(
            m,
            &c,
            &Condition::Exited,
            Instant::from_millis(ms),
        ) {
            Plan::Defer(_, why) => why,
            other => panic!("expected a deferral, got {other:?}"),
        };
        // One strike: its settle time is all there is to wait for.
        let mut one = Medical::default();
        one.intervene(Instant::ZERO, Duration::from_secs(1), c.max_backoff);
        assert_eq!(why(&one, 500), "settling until 1.000s");
        // Three strikes: the settle time, then the backoff after it.
        let mut three = Medical::default();
        for _ in 0..3 {
            three.intervene(Instant::ZERO, Duration::from_secs(1), c.max_backoff);
        }
        assert_eq!(
            why(&three, 500),
            "settling until 1.000s, then backing off until 4.000s after 3 strikes"
        );
        assert_eq!(
            why(&three, 1_000),
            "backing off until 4.000s after 3 strikes",
            "the settle time is over at its instant"
        );
        assert_eq!(
            why(&three, 2_000),
            "backing off until 4.000s after 3 strikes"
        );
    }

    #[test]
    fn blocked_given_up_and_healthy_conditions_get_no_heal() {
        let c = config();
        let m = Medical::default();
        for condition in [
            Condition::Blocked,
            Condition::GivenUp,
            Condition::Stopped,
            Condition::Ready,
            Condition::Starting,
        ] {
            assert_eq!(plan(&m, &c, &condition, Instant::ZERO), Plan::Nothing(None));
        }
        assert_eq!(
            plan(&m, &c, &Condition::NoCarrier, Instant::ZERO),
            Plan::Nothing(Some("no heal for no-carrier".into()))
        );
    }
}
