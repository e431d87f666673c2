//! Why a service is as it is, and what the kernel will do about it next: the WHY and NEXT of
//! `medic status`.
//!
//! What the kernel has scheduled comes from [`ServiceView::next_action`] (its timers: the
//! heal a backoff waits for, SIGKILL after `stop-timeout`, `retry-after`, a start timeout, the
//! decision of an outcome). When nothing is scheduled, NEXT says what the service waits for
//! instead (a need, an operator, forgiveness), derived from the view: the condition and when
//! it began, the strikes, the config, and the notes of the medical history, which carry the
//! instants the rules wait for (`backing off until 12.000s after 3 strikes`).

use medic_kernel::config::Kind;
use medic_kernel::health;
use medic_kernel::{Condition, Instant, Kernel, ServiceView};

/// What `status` says about a service beyond its condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Explained {
    /// Why it is in its condition (empty when there is nothing to say).
    pub why: String,
    /// What happens next, or why nothing does (empty when all is well).
    pub next: String,
    /// When `next` is due; `None` when it waits for an event.
    pub at: Option<Instant>,
}

/// The kernel's own plan for `v`: what it has scheduled.
fn kernel_plan(v: &ServiceView<'_>) -> Option<(Option<Instant>, String)> {
    v.next_action().map(|(at, what)| (Some(at), what))
}

/// WHY and NEXT for service `v` at `now`.
pub fn explain(kernel: &Kernel, v: &ServiceView<'_>, now: Instant) -> Explained {
    let why = why(kernel, v);
    let (at, next) = kernel_plan(v).unwrap_or_else(|| derive_plan(kernel, v, now));
    Explained { why, next, at }
}

/// The parts of a history note that are not the plan: `exit code 1; backing off until 12.000s
/// after 3 strikes` is `exit code 1`.
pub fn without_plan(note: &str) -> String {
    note.split("; ")
        .filter(|part| planned_at(part).is_none())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The instant a note part says the rules wait for: `backing off until 12.000s …`,
/// `settling until 13.000s, then giving up`.
fn planned_at(part: &str) -> Option<Instant> {
    let rest = part
        .strip_prefix("backing off until ")
        .or_else(|| part.strip_prefix("settling until "))?;
    let end = rest.find('s')?;
    let (secs, millis) = rest[..end].split_once('.')?;
    let secs: u64 = secs.parse().ok()?;
    let millis: u64 = millis.parse().ok()?;
    Some(Instant::from_millis(
        secs.saturating_mul(1000).saturating_add(millis),
    ))
}

/// The names of the needs of `v` that are not healthy, `a, b`.
fn unhealthy_needs(kernel: &Kernel, v: &ServiceView<'_>) -> String {
    let names: Vec<&str> = v
        .needs()
        .iter()
        .filter_map(|&id| kernel.status(id))
        .filter(|n| !n.healthy())
        .map(|n| n.name())
        .collect();
    match names.is_empty() {
        true => "its needs".to_string(),
        false => names.join(", "),
    }
}

/// The last history note, if it was written since the condition began, without the plan.
fn current_note(v: &ServiceView<'_>) -> Option<String> {
    let last = v.history().last()?;
    (last.at >= v.since() && &last.condition == v.condition() || v.condition().is_transient())
        .then(|| without_plan(&last.note))
        .filter(|n| !n.is_empty())
}

fn why(kernel: &Kernel, v: &ServiceView<'_>) -> String {
    match v.condition() {
        Condition::Ready => String::new(),
        Condition::Waiting if v.unhealthy_needs() == 0 => match v.render_failure() {
            _ if v.waiting_secret().is_some() => {
                format!(
                    "waiting for secret {}",
                    v.waiting_secret().unwrap_or_default()
                )
            }
            Some(why) => format!("render failed: {why}"),
            None if v.rendering() => "rendering its templates".to_string(),
            None => format!("waiting for {}", unhealthy_needs(kernel, v)),
        },
        Condition::Waiting => format!("waiting for {}", unhealthy_needs(kernel, v)),
        Condition::Blocked => format!("blocked by {}", unhealthy_needs(kernel, v)),
        Condition::Stopped if !v.ever_started() && v.history().is_empty() => {
            "not started".to_string()
        }
        _ => current_note(v).unwrap_or_default(),
    }
}

/// The plan, from the view and the history.
fn derive_plan(kernel: &Kernel, v: &ServiceView<'_>, now: Instant) -> (Option<Instant>, String) {
    let config = v.config();
    let condition = v.condition();
    if v.is_stopping() || *condition == Condition::Stopping {
        let kill = v.since() + config.stop_timeout;
        return match v.pid() {
            Some(_) => (Some(kill), "SIGKILL to the group".into()),
            None => (None, String::new()),
        };
    }
    if !v.wanted() {
        return (None, String::new());
    }
    match condition {
        Condition::Ready if v.strikes() > 0 => {
            let strikes = match v.strikes() {
                1 => "1 strike".to_string(),
                n => format!("{n} strikes"),
            };
            let at = v.since() + config.forgive_after;
            (Some(at), format!("forgive {strikes}"))
        }
        Condition::Ready => (None, String::new()),
        Condition::Waiting if v.unhealthy_needs() == 0 && v.waiting_secret().is_some() => (
            None,
            format!(
                "start once `medic secret set {}` pushes it",
                v.waiting_secret().unwrap_or_default()
            ),
        ),
        Condition::Waiting if v.unhealthy_needs() == 0 && v.render_failure().is_some() => (
            None,
            "render again when what it reads changes, or on `medic restart`".into(),
        ),
        Condition::Waiting if v.unhealthy_needs() == 0 && v.rendering() => {
            (None, "start once rendered".into())
        }
        Condition::Waiting => (None, format!("start once {} healthy", is_or_are(kernel, v))),
        Condition::Blocked if config.stop_when_needs_fail => {
            (None, format!("start once {} healthy", is_or_are(kernel, v)))
        }
        Condition::Blocked => (None, "nothing: the cure is upstream".into()),
        Condition::Starting => match config.kind {
            Kind::Interface { .. } => (None, String::new()),
            _ => {
                let started = v.process_started().unwrap_or(v.since());
                (Some(started + config.start_timeout), "start-timeout".into())
            }
        },
        // WHY says it has given up.
        Condition::GivenUp => match config.retry_after {
            Some(after) => (Some(v.since() + after), "retry".into()),
            None => (None, "nothing until `medic restart`".into()),
        },
        Condition::Stopped => (None, String::new()),
        _ => {
            let verdict = health::verdict(config, condition);
            if verdict.healthy {
                return (None, String::new());
            }
            if verdict.heal.is_empty() {
                return (None, format!("nothing: no heal for {condition}"));
            }
            let waits_until = v
                .history()
                .last()
                .filter(|r| &r.condition == condition && r.at >= v.since())
                .and_then(|r| r.note.split("; ").find_map(planned_at));
            let at = waits_until.map_or(now, |at| at.max(now));
            if v.strikes() >= config.give_up_after {
                return (Some(at), "give up".into());
            }
            let rung = (v.strikes() as usize).min(verdict.heal.len() - 1);
            (Some(at), verdict.heal[rung].describe())
        }
    }
}

/// `wan is` or `wan, lan are`.
fn is_or_are(kernel: &Kernel, v: &ServiceView<'_>) -> String {
    let names = unhealthy_needs(kernel, v);
    match names.contains(", ") || names == "its needs" {
        true => format!("{names} are"),
        false => format!("{names} is"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_lose_their_plan_and_give_its_instant() {
        let note = "exit code 1; backing off until 12.000s after 3 strikes";
        assert_eq!(without_plan(note), "exit code 1");
        assert_eq!(
            note.split("; ").find_map(planned_at),
            Some(Instant::from_millis(12_000))
        );
        let last = "settling until 2592000.123s, then giving up";
        assert_eq!(planned_at(last), Some(Instant::from_millis(2_592_000_123)));
        assert_eq!(without_plan(last), "");
        assert_eq!(without_plan("blocked by wan"), "blocked by wan");
        assert_eq!(planned_at("strike 1 of 10"), None);
    }
}
