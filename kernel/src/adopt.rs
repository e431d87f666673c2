//! Surviving the daemon's own crash (DESIGN §13): what the kernel keeps of itself ([`Saved`],
//! from [`Kernel::saved`]) and how a new kernel takes it back ([`Input::Resume`]).
//!
//! The daemon writes [`Kernel::saved`] into its state file whenever it changes. A daemon that
//! starts beside such a file builds a fresh kernel for its config, finds out which recorded
//! processes still run and are still the same ones (the adapter's business: pid, start time,
//! instance tag), marks the others [`SavedProcess::survived`]` = false`, and feeds the result
//! as [`Input::Resume`] before the first tick. Then, for every service still in the config:
//!
//! * the history, the medical record (strikes, settle, backoff, given-up), whether it is
//!   wanted, its standing problem and whether a oneshot is done come back;
//! * a process that survived is **adopted** under a new job ([`Effect::Adopt`]), unless it
//!   cannot go on as it was: a changed definition, a stop under way, a oneshot's command (its
//!   exit status is what it is run for, and only its parent can read it), a readiness channel
//!   that died with the old daemon. The adapter stops every process of the old daemon that
//!   was not adopted before the first tick, so the fresh start that follows is the only one;
//! * a process that ended while no daemon watched is an end like any other, its exit status
//!   unknown: the medical rules treat it as a failure (a strike), so healing stays bounded
//!   across crashes of the daemon (property 2), and the history says so.
//!
//! A saved state comes from a file: everything in it is checked or clamped (strikes to
//! `give-up-after`, the history to its ring, problems to conditions that can be problems)
//! so that no file can make the kernel inconsistent. Resume is refused after boot.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{defaults, Kind, Readiness, ServiceConfig};
use crate::health::Condition;
use crate::history::History;
use crate::kernel::Kernel;
use crate::protocol::{Effect, ExitStatus, JobId, ServiceId};
use crate::rules::Medical;
use crate::service::Proc;
use crate::time::Instant;
use crate::timers::Timer;

/// What a daemon keeps of its kernel across its own crash: per live service, everything that
/// is not re-learnt from the world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// The kernel's job counter: the jobs of a resumed kernel never reuse a number (the
    /// adapter's instance tags are made of them).
    pub next_job: u64,
    /// The live services, in config order.
    pub services: Vec<SavedService>,
}

/// One service in a [`Saved`] state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedService {
    /// Its name (services are matched by name: ids are a kernel's own).
    pub name: String,
    /// Wanted up (an operator stop is kept).
    pub wanted: bool,
    /// Started at least once.
    pub ever_started: bool,
    /// A oneshot that is done.
    pub oneshot_done: bool,
    /// The definition its current instance (process or done oneshot) was started from.
    pub instance: Arc<ServiceConfig>,
    /// The standing problem (`exited`, `unresponsive`, …).
    pub problem: Option<Condition>,
    /// Words about it.
    pub problem_note: String,
    /// Strikes, settle, backoff, given-up.
    pub(crate) medical: Medical,
    /// When a given-up service may be tried again.
    pub retry_after_at: Option<Instant>,
    /// The medical history.
    pub history: History,
    /// Its last run with a trusted clock, in Unix ms (`catch-up`).
    pub at_last: Option<i64>,
    /// Its process, once its pid was known.
    pub process: Option<SavedProcess>,
    /// What it publishes (DESIGN §9): a resumed daemon's consumers read the same.
    pub outputs: crate::outputs::Outputs,
}

/// A service's process in a [`Saved`] state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedProcess {
    /// The job it ran as (the adapter's instance tag names it).
    pub job: JobId,
    /// Its pid.
    pub pid: u32,
    /// When it was spawned (kernel time).
    pub started: Instant,
    /// Ready then.
    pub ready: bool,
    /// Being stopped then.
    pub stopping: bool,
    /// Still running, and still the same process: [`Kernel::saved`] says `true`; the adapter
    /// that resumes sets `false` for every process it found gone or changed.
    pub survived: bool,
}

/// Counters past this in a saved state are corrupt (as in a trace snapshot).
const COUNTER_LIMIT: u64 = u64::MAX / 2;

impl Kernel {
    /// What the state file keeps of this kernel (see the module docs).
    pub fn saved(&self) -> Saved {
        let services = self
            .order
            .iter()
            .map(|id| {
                let s = &self.slots[id.index()];
                SavedService {
                    name: s.config.name.clone(),
                    wanted: s.wanted,
                    ever_started: s.ever_started,
                    oneshot_done: s.oneshot_done,
                    instance: s.instance.clone(),
                    problem: s.problem.clone(),
                    problem_note: s.problem_note.clone(),
                    medical: s.medical.clone(),
                    retry_after_at: s.timers.get(Timer::RetryAfter),
                    history: s.history.clone(),
                    at_last: s.at_last,
                    outputs: self
                        .outputs
                        .get(&s.config.name)
                        .cloned()
                        .unwrap_or_default(),
                    process: s.proc.and_then(|p| {
                        Some(SavedProcess {
                            job: p.job,
                            pid: p.pid?,
                            started: p.started,
                            ready: p.ready,
                            stopping: p.stop.is_some(),
                            survived: true,
                        })
                    }),
                }
            })
            .collect();
        Saved {
            next_job: self.next_job(),
            services,
        }
    }

    /// [`Input::Resume`](crate::Input::Resume): takes back a saved state, before boot.
    pub(crate) fn on_resume(&mut self, saved: Saved, out: &mut Vec<Effect>) {
        if self.booted || self.slots.iter().any(|s| s.proc.is_some()) {
            out.push(Effect::Notice {
                message: "resume refused: a saved state is taken back only once, before boot"
                    .into(),
            });
            return;
        }
        if saved.next_job < COUNTER_LIMIT {
            self.advance_jobs(saved.next_job);
        }
        let mut seen = std::collections::BTreeSet::new();
        for service in saved.services {
            // A service no longer in the config: its process, if any, is not adopted (the
            // adapter stops it), its history goes with it. A name twice: the first counts.
            if let Some(id) = self.lookup(&service.name).filter(|id| seen.insert(*id)) {
                self.resume_service(id, service, out);
            }
        }
    }

    fn resume_service(&mut self, id: ServiceId, s: SavedService, out: &mut Vec<Effect>) {
        let now = self.now;
        let history_len = self.config.daemon.history_len;
        // Outputs from a file are checked like any others; a bad map is dropped, not kept.
        if !s.outputs.is_empty() && crate::outputs::validate(&s.outputs).is_ok() {
            let name = self.slots[id.index()].config.name.clone();
            self.outputs.insert(name, s.outputs);
        }
        let slot = &mut self.slots[id.index()];
        slot.history = s.history.restored(history_len);
        let mut medical = s.medical;
        medical.strikes = medical.strikes.min(slot.config.give_up_after);
        medical.needs_restarts = medical.needs_restarts.min(u32::MAX / 2);
        slot.medical = medical;
        slot.wanted = s.wanted;
        slot.ever_started = s.ever_started;
        slot.at_last = s.at_last;
        let same = *s.instance == *slot.config;
        if same && s.problem.as_ref().is_some_and(can_be_problem) {
            slot.problem = s.problem;
            slot.problem_note = s.problem_note;
        }
        if slot.medical.given_up {
            let at = match (s.retry_after_at, slot.config.retry_after) {
                (Some(at), _) => Some(at),
                (None, Some(after)) => Some(now + after),
                (None, None) => None,
            };
            if let Some(at) = at {
                self.timers.set(&mut slot.timers, id, Timer::RetryAfter, at);
            }
        }
        if slot.medical.pending_attempt.is_some() {
            let at = slot.medical.settle_until;
            self.timers.set(&mut slot.timers, id, Timer::Settle, at);
        }
        if s.oneshot_done && same && slot.is_oneshot() && s.process.is_none() {
            slot.oneshot_done = true;
            slot.instance = slot.config.clone();
            // Done but not wanted: the operator stopped it and its stop command was running
            // when the old daemon ended (the adapter ended that command with it). The stop is
            // carried out again, or what it needs would wait for it to stop for ever.
            if !slot.wanted {
                self.undo_oneshot(id);
            }
            return; // no process
        }
        let Some(p) = s.process else { return };
        if !p.survived {
            let note = format!(
                "pid {} ended while no daemon watched it: {}",
                p.pid,
                ExitStatus::Unknown
            );
            if slot.wanted && !p.stopping {
                let failure = slot.failure_condition();
                let written = note.clone();
                slot.observe(failure, || written);
            }
            slot.ever_started = true;
            self.note(id, note, out);
            return;
        }
        if let Some(why) = not_adoptable(&slot.config, same, slot.wanted, &p) {
            let then = if slot.wanted {
                "; stopped, started afresh"
            } else {
                "; stopped"
            };
            self.note(id, format!("pid {} not adopted: {why}{then}", p.pid), out);
            return;
        }
        let job = self.new_job();
        let slot = &mut self.slots[id.index()];
        let config = slot.config.clone();
        slot.proc = Some(Proc {
            job,
            pid: Some(p.pid),
            started: p.started,
            ready: p.ready,
            stop: None,
        });
        slot.instance = config.clone();
        slot.ever_started = true;
        out.push(Effect::Adopt {
            service: id,
            job,
            pid: p.pid,
            was: p.job,
        });
        // The timers that watch a running process, as a start or readiness would arm them.
        let timers = &mut self.timers;
        if p.ready {
            if let Some(probe) = &config.probe {
                timers.set(&mut slot.timers, id, Timer::Probe, now + probe.every);
            }
        } else {
            let at = p.started + config.start_timeout;
            timers.set(&mut slot.timers, id, Timer::StartTimeout, at);
            if let Readiness::Poll(_) = config.ready {
                let at = now + defaults::READY_POLL_FIRST;
                timers.set(&mut slot.timers, id, Timer::ReadyPoll, at);
            }
        }
        if config.memory_max.is_some() {
            let at = now + config.memory_every;
            timers.set(&mut slot.timers, id, Timer::Memory, at);
        }
        let note = format!("adopted pid {}, left running by the previous daemon", p.pid);
        self.note(id, note, out);
    }
}

/// Why a process that survived cannot be adopted, if it cannot.
fn not_adoptable(
    config: &ServiceConfig,
    same: bool,
    wanted: bool,
    p: &SavedProcess,
) -> Option<&'static str> {
    if !matches!(config.kind, Kind::Process { .. }) {
        return Some("a oneshot's command is watched to its end by its parent only");
    }
    if p.stopping || !wanted {
        return Some("it was being stopped");
    }
    if !same {
        return Some("its definition changed while no daemon ran");
    }
    let notified = matches!(config.ready, Readiness::NotifyFd(_) | Readiness::SdNotify);
    if !p.ready && notified {
        return Some("it was not ready yet, and its readiness channel ended with the old daemon");
    }
    None
}

/// Whether `c` can stand as a process's problem (a saved `ready` must not stand in for one).
fn can_be_problem(c: &Condition) -> bool {
    matches!(
        c,
        Condition::Exited
            | Condition::Failed
            | Condition::StartTimeout
            | Condition::Unresponsive
            | Condition::MemoryHigh
            | Condition::Custom(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::protocol::Input;

    const TEXT: &str = "[service.web]\nrun = [\"/bin/web\"]\n\n\
                        [service.late]\nrun = [\"/bin/late\"]\nready = \"sd-notify\"\n\n\
                        [service.setup]\noneshot = [\"/bin/setup\"]\n";

    fn kernel(text: &str) -> Kernel {
        Kernel::new(config::parse(text, "t").expect("valid"))
    }

    /// Boots `k` and answers every spawn (pid 100 + job).
    fn boot(k: &mut Kernel, at: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        k.step(Instant::from_millis(at), Input::Tick, &mut out);
        answer_spawns(k, at, &mut out);
        out
    }

    fn answer_spawns(k: &mut Kernel, at: u64, out: &mut Vec<Effect>) {
        let spawns: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Spawn { service, job, .. } => Some((*service, *job)),
                _ => None,
            })
            .collect();
        for (service, job) in spawns {
            let pid = 100 + job.0 as u32;
            k.step(
                Instant::from_millis(at),
                Input::Spawned { service, job, pid },
                out,
            );
        }
    }

    fn spawned(out: &[Effect], k: &Kernel, name: &str) -> bool {
        out.iter()
            .any(|e| matches!(e, Effect::Spawn { service, .. } if k.name(*service) == name))
    }

    fn adopted(out: &[Effect]) -> Vec<(ServiceId, JobId, u32, JobId)> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Adopt {
                    service,
                    job,
                    pid,
                    was,
                } => Some((*service, *job, *pid, *was)),
                _ => None,
            })
            .collect()
    }

    fn resume(text: &str, saved: Saved, at: u64) -> (Kernel, Vec<Effect>) {
        let mut k = kernel(text);
        let mut out = Vec::new();
        k.step(
            Instant::from_millis(at),
            Input::Resume(Box::new(saved)),
            &mut out,
        );
        (k, out)
    }

    #[test]
    fn a_surviving_process_is_adopted_not_started_again() {
        let mut old = kernel(TEXT);
        boot(&mut old, 0);
        let web = old.lookup("web").unwrap();
        let pid = old.status(web).unwrap().pid().unwrap();
        let saved = old.saved();
        let history_before = old.history(web).unwrap().len();
        let (mut k, out) = resume(TEXT, saved.clone(), 5_000);
        let adopts = adopted(&out);
        assert_eq!(
            adopts.len(),
            1,
            "only web: late is not ready, setup is a oneshot"
        );
        let (service, job, apid, was) = adopts[0];
        assert_eq!((k.name(service), apid), ("web", pid));
        assert_eq!(Some(was), old.status(web).unwrap().job());
        assert!(
            job.0 >= saved.next_job,
            "a new job never reuses an old number"
        );
        let mut out = Vec::new();
        k.step(Instant::from_millis(5_000), Input::Tick, &mut out);
        assert!(
            !spawned(&out, &k, "web"),
            "adopted, not started again: {out:?}"
        );
        assert!(spawned(&out, &k, "late"), "not adopted: started afresh");
        let view = k.status(web).unwrap();
        assert_eq!(
            (view.pid(), view.condition()),
            (Some(pid), &Condition::Ready)
        );
        assert!(
            k.history(web).unwrap().len() > history_before,
            "the history goes on"
        );
        assert!(k
            .history(web)
            .unwrap()
            .lines()
            .iter()
            .any(|l| l.contains("adopted pid")));
        // Its death, exit status unknown, is an end like any other: restarted at once.
        let mut out = Vec::new();
        let status = ExitStatus::Unknown;
        k.step(
            Instant::from_millis(6_000),
            Input::Exited {
                service,
                job,
                status,
            },
            &mut out,
        );
        assert!(spawned(&out, &k, "web"), "restarted at once: {out:?}");
        assert!(out
            .iter()
            .any(|e| matches!(e, Effect::Sweep { job: j, .. } if *j == job)));
        let last = k.history(web).unwrap().lines();
        assert!(
            last.iter().any(|l| l.contains("exit status unknown")),
            "{last:?}"
        );
        assert_eq!(k.check_invariants(), Ok(()));
    }

    #[test]
    fn a_process_that_ended_meanwhile_is_a_failure_with_a_strike() {
        let mut old = kernel(TEXT);
        boot(&mut old, 0);
        // setup is done before the crash.
        let setup = old.lookup("setup").unwrap();
        let (job, mut out) = (old.status(setup).unwrap().job().unwrap(), Vec::new());
        let status = ExitStatus::Code(0);
        old.step(
            Instant::from_millis(10),
            Input::Exited {
                service: setup,
                job,
                status,
            },
            &mut out,
        );
        let mut saved = old.saved();
        for s in &mut saved.services {
            if let Some(p) = s.process.as_mut() {
                p.survived = false;
            }
        }
        let (mut k, out) = resume(TEXT, saved, 5_000);
        assert!(adopted(&out).is_empty());
        let mut out = Vec::new();
        k.step(Instant::from_millis(5_000), Input::Tick, &mut out);
        assert!(spawned(&out, &k, "web"));
        let web = k.lookup("web").unwrap();
        assert_eq!(
            k.status(web).unwrap().strikes(),
            1,
            "a restart heal, counted"
        );
        let lines = k.history(web).unwrap().lines();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("ended while no daemon watched it")),
            "{lines:?}"
        );
        // The done oneshot stays done: not run again.
        assert!(!spawned(&out, &k, "setup"), "{out:?}");
    }

    #[test]
    fn a_changed_definition_is_not_adopted() {
        let mut old = kernel(TEXT);
        boot(&mut old, 0);
        let text = TEXT.replace("/bin/web", "/bin/web2");
        let (mut k, out) = resume(&text, old.saved(), 5_000);
        assert!(adopted(&out).iter().all(|a| k.name(a.0) != "web"));
        let mut out = Vec::new();
        k.step(Instant::from_millis(5_000), Input::Tick, &mut out);
        assert!(spawned(&out, &k, "web"));
        assert!(
            spawned(&out, &k, "setup"),
            "a running oneshot is never adopted"
        );
    }

    #[test]
    fn healing_stays_bounded_across_crashes_of_the_daemon() {
        // The daemon crashes again and again, and web dies each time meanwhile: the strikes
        // carry over, and web is given up after give-up-after of them.
        let text = "[service.web]\nrun = [\"/bin/web\"]\ngive-up-after = 3\n";
        let mut k = kernel(text);
        boot(&mut k, 0);
        let mut at = 0;
        for _ in 0..10 {
            at += 60_000;
            let mut saved = k.saved();
            for s in &mut saved.services {
                if let Some(p) = s.process.as_mut() {
                    p.survived = false;
                }
            }
            k = resume(text, saved, at).0;
            boot(&mut k, at);
            assert_eq!(k.check_invariants(), Ok(()));
        }
        let web = k.status(k.lookup("web").unwrap()).unwrap();
        assert_eq!(web.condition(), &Condition::GivenUp);
        assert_eq!(web.strikes(), 3);
    }

    #[test]
    fn resume_is_refused_after_boot_and_a_bad_state_is_clamped() {
        let mut old = kernel(TEXT);
        boot(&mut old, 0);
        let mut saved = old.saved();
        saved.services[0].medical.strikes = 1_000;
        saved.services[0].problem = Some(Condition::Ready);
        saved.next_job = u64::MAX;
        let (mut k, _) = resume(TEXT, saved.clone(), 1_000);
        assert_eq!(k.check_invariants(), Ok(()));
        boot(&mut k, 1_000);
        assert_eq!(k.check_invariants(), Ok(()));
        assert_eq!(crate::snapshot::check(&k), Ok(()));
        let mut out = Vec::new();
        k.step(
            Instant::from_millis(2_000),
            Input::Resume(Box::new(saved)),
            &mut out,
        );
        assert!(matches!(&out[..], [Effect::Notice { .. }]), "{out:?}");
    }

    // ----- catch-up (DESIGN §11): the last run is kept in the saved state --------------------

    const NIGHTLY: &str = "[service.nightly]\noneshot = [\"/bin/refresh\"]\nat = [\"03:00\"]\n";
    /// 2026-11-30, a Monday, 00:00 UTC, in Unix ms.
    const MONDAY: i64 = 1_795_996_800_000;
    const HOUR: i64 = 3_600_000;

    fn read_clock(k: &mut Kernel, at: u64, unix_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        let wall = crate::protocol::WallClock {
            unix_ms,
            utc_offset_s: 0,
            host: 7,
        };
        k.step(Instant::from_millis(at), Input::WallClock(wall), &mut out);
        out
    }

    /// Boots a kernel on `text` at Monday `hour`:00, and lets its oneshot succeed.
    fn first_daemon(text: &str, hour: i64) -> Kernel {
        first_daemon_at(text, MONDAY + hour * HOUR)
    }

    /// Boots a kernel on `text` with the clock at `unix_ms`, and lets its oneshot succeed.
    fn first_daemon_at(text: &str, unix_ms: i64) -> Kernel {
        let mut k = kernel(text);
        read_clock(&mut k, 0, unix_ms);
        let out = boot(&mut k, 0);
        let (service, job) = out
            .iter()
            .find_map(|e| match e {
                Effect::Spawn { service, job, .. } => Some((*service, *job)),
                _ => None,
            })
            .expect("the oneshot runs at boot");
        let status = ExitStatus::Code(0);
        let exited = Input::Exited {
            service,
            job,
            status,
        };
        k.step(Instant::from_millis(1_000), exited, &mut Vec::new());
        k
    }

    /// A second daemon on the first one's saved state, `down` hours later; its boot's effects.
    fn second_daemon(text: &str, first: &Kernel, hour: i64, down: i64) -> (Kernel, Vec<Effect>) {
        let at = (down * HOUR) as u64;
        let (mut k, _) = resume(text, first.saved(), at);
        read_clock(&mut k, at, MONDAY + (hour + down) * HOUR);
        let mut out = Vec::new();
        k.step(Instant::from_millis(at), Input::Tick, &mut out);
        (k, out)
    }

    fn history_has(k: &Kernel, name: &str, words: &str) -> bool {
        let id = k.lookup(name).unwrap();
        k.history(id)
            .unwrap()
            .lines()
            .iter()
            .any(|l| l.contains(words))
    }

    #[test]
    fn catch_up_runs_an_at_time_missed_while_no_daemon_ran_once() {
        let text = format!("{NIGHTLY}catch-up = true\n");
        // Done at 02:00; no daemon from then to 05:00: 03:00 was missed.
        let first = first_daemon(&text, 2);
        let (k, out) = second_daemon(&text, &first, 2, 3);
        assert!(spawned(&out, &k, "nightly"), "caught up at once: {out:?}");
        assert!(history_has(
            &k,
            "nightly",
            "catch-up of at 03:00: run again"
        ));
        // Down from 02:00 to 02:30 only: nothing was missed, and the oneshot stays done.
        let (k, out) = second_daemon(&text, &first, 2, 0);
        assert!(!spawned(&out, &k, "nightly"), "{out:?}");
        // Without `catch-up`, a missed time is let go.
        let first = first_daemon(NIGHTLY, 2);
        let (k, out) = second_daemon(NIGHTLY, &first, 2, 3);
        assert!(!spawned(&out, &k, "nightly"), "{out:?}");
    }

    #[test]
    fn catch_up_needs_a_known_last_run_and_forgets_one_from_a_wrong_clock() {
        let text = format!("{NIGHTLY}catch-up = true\n");
        // A router that boots in 1970 runs its oneshot on an untrusted clock: no last run is
        // known, so the 03:00 its clock then passes is not a miss.
        let first = first_daemon_at(&text, 10_000);
        let id = first.lookup("nightly").unwrap();
        assert_eq!(first.slots[id.index()].at_last, None);
        let (k, out) = second_daemon(&text, &first, 2, 3);
        assert!(!spawned(&out, &k, "nightly"), "{out:?}");
        // A last run stamped by a clock that ran a year ahead is forgotten, not waited for.
        let mut first = first_daemon(&text, 2);
        first.slots[id.index()].at_last = Some(MONDAY + 365 * 24 * HOUR);
        let (k, out) = second_daemon(&text, &first, 2, 3);
        assert!(!spawned(&out, &k, "nightly"), "{out:?}");
        assert_eq!(k.slots[id.index()].at_last, Some(MONDAY + 5 * HOUR));
    }

    #[test]
    fn catch_up_without_at_is_refused() {
        let err = config::parse(
            "[service.s]\noneshot = [\"/bin/s\"]\nevery = \"1h\"\ncatch-up = true\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`catch-up` in [service.s] needs `at`"),
            "{err}"
        );
    }

    fn saved_service<'a>(saved: &'a mut Saved, name: &str) -> &'a mut SavedService {
        saved
            .services
            .iter_mut()
            .find(|s| s.name == name)
            .expect("saved")
    }

    #[test]
    fn a_ready_notify_process_is_adopted_and_one_caught_mid_restart_is_not() {
        let mut old = kernel(TEXT);
        boot(&mut old, 0);
        let mut saved = old.saved();
        // late (sd-notify) had said it was ready: its readiness is known, it is adopted.
        saved_service(&mut saved, "late")
            .process
            .as_mut()
            .expect("late runs")
            .ready = true;
        // web was being restarted (a heal, `medic restart`): that restart must still happen.
        saved_service(&mut saved, "web")
            .process
            .as_mut()
            .expect("web runs")
            .stopping = true;
        let (mut k, out) = resume(TEXT, saved, 5_000);
        let names: Vec<&str> = adopted(&out).iter().map(|a| k.name(a.0)).collect();
        assert_eq!(names, ["late"], "{out:?}");
        let mut out = Vec::new();
        k.step(Instant::from_millis(5_000), Input::Tick, &mut out);
        assert!(spawned(&out, &k, "web"), "web started afresh: {out:?}");
        assert!(!spawned(&out, &k, "late"), "late adopted: {out:?}");
    }

    #[test]
    fn a_standing_problem_and_its_backoff_survive_a_resume_and_a_corrupt_one_does_not() {
        let text = "[service.web]\nrun = [\"/bin/web\"]\n\n\
                    [service.db]\nrun = [\"/bin/db\"]\n";
        let mut old = kernel(text);
        boot(&mut old, 0);
        let mut saved = old.saved();
        // web had crashed and waits out its backoff until 60 s.
        let web = saved_service(&mut saved, "web");
        web.process = None;
        web.problem = Some(Condition::Exited);
        web.problem_note = "exit code 1".into();
        web.medical.strikes = 3;
        web.medical.settle_until = Instant::from_millis(2_000);
        web.medical.next_allowed = Instant::from_millis(60_000);
        // db's saved "problem" is `ready` with no process: a corrupt file, not a problem.
        let db = saved_service(&mut saved, "db");
        db.process = None;
        db.problem = Some(Condition::Ready);
        let (mut k, _) = resume(text, saved, 5_000);
        let mut out = Vec::new();
        k.step(Instant::from_millis(5_000), Input::Tick, &mut out);
        let web = k.lookup("web").unwrap();
        assert_eq!(k.status(web).unwrap().condition(), &Condition::Exited);
        assert!(!spawned(&out, &k, "web"), "the backoff holds: {out:?}");
        assert!(spawned(&out, &k, "db"), "db starts: {out:?}");
        let mut out = Vec::new();
        k.step(Instant::from_millis(60_000), Input::Tick, &mut out);
        assert!(
            spawned(&out, &k, "web"),
            "restarted after the backoff: {out:?}"
        );
    }

    /// A done oneshot with a stop command, stopped by the operator just before the daemon
    /// crashed (its stop command had not finished): the resumed kernel runs the stop command
    /// again, and what it needs may then stop and start as usual.
    #[test]
    fn a_oneshot_stopped_just_before_a_crash_runs_its_stop_command_after_resume() {
        let text = "[service.base]\nrun = [\"/bin/base\"]\n\n\
                    [service.fw]\noneshot = [\"/bin/fw\"]\nstop = [\"/bin/fw-stop\"]\n\
                    needs = [\"base\"]\n";
        let mut old = kernel(text);
        boot(&mut old, 0);
        let fw = old.lookup("fw").unwrap();
        let job = old.status(fw).unwrap().job().expect("fw runs");
        let mut out = Vec::new();
        let status = ExitStatus::Code(0);
        let done = Input::Exited {
            service: fw,
            job,
            status,
        };
        old.step(Instant::from_millis(10), done, &mut out);
        assert_eq!(old.status(fw).unwrap().condition(), &Condition::Ready);
        let mut out = Vec::new();
        let stop = Input::Operator(crate::protocol::Operator::Stop("fw".into()));
        old.step(Instant::from_millis(20), stop, &mut out);
        let stop_command = |out: &[Effect]| {
            out.iter()
                .filter(
                    |e| matches!(e, Effect::RunCommand { argv, .. } if argv[0] == "/bin/fw-stop"),
                )
                .count()
        };
        assert_eq!(stop_command(&out), 1, "{out:?}");
        // The daemon crashes now, the stop command still running.
        let (mut k, _) = resume(text, old.saved(), 5_000);
        let mut out = Vec::new();
        k.step(Instant::from_millis(5_000), Input::Tick, &mut out);
        assert!(!spawned(&out, &k, "fw"), "stopped by the operator: {out:?}");
        let runs: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                Effect::RunCommand { job, argv, .. } if argv[0] == "/bin/fw-stop" => Some(*job),
                _ => None,
            })
            .collect();
        assert_eq!(runs.len(), 1, "the stop is carried out: {out:?}");
        let fw = k.lookup("fw").unwrap();
        let status = ExitStatus::Code(0);
        let mut more = Vec::new();
        let done = Input::CommandDone {
            service: fw,
            job: runs[0],
            status,
        };
        k.step(Instant::from_millis(5_100), done, &mut more);
        assert_eq!(k.status(fw).unwrap().condition(), &Condition::Stopped);
        // A restart of base no longer waits for fw.
        let mut out = Vec::new();
        let restart = Input::Operator(crate::protocol::Operator::Restart("base".into()));
        k.step(Instant::from_millis(6_000), restart, &mut out);
        assert!(
            out.iter().any(|e| matches!(e, Effect::Signal { .. })),
            "base is stopped at once: {out:?}"
        );
        assert_eq!(k.check_invariants(), Ok(()));
    }

    fn tick(k: &mut Kernel, at: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        k.step(Instant::from_millis(at), Input::Tick, &mut out);
        out
    }

    /// A state is taken back once: a second resume before boot is refused, and adopts nothing
    /// twice.
    #[test]
    fn a_second_resume_is_refused_even_before_boot() {
        let mut old = kernel(TEXT);
        boot(&mut old, 0);
        let saved = old.saved();
        let (mut k, out) = resume(TEXT, saved.clone(), 5_000);
        assert_eq!(adopted(&out).len(), 1);
        let mut again = Vec::new();
        k.step(
            Instant::from_millis(5_000),
            Input::Resume(Box::new(saved)),
            &mut again,
        );
        assert!(adopted(&again).is_empty(), "{again:?}");
        assert!(
            again.iter().any(
                |e| matches!(e, Effect::Notice { message } if message.starts_with("resume refused"))
            ),
            "{again:?}"
        );
    }

    /// A job counter at the corrupt limit is not trusted: the jobs stay below it.
    #[test]
    fn a_job_counter_at_the_limit_is_not_taken() {
        let mut saved = kernel(TEXT).saved();
        saved.next_job = COUNTER_LIMIT;
        let (mut k, _) = resume(TEXT, saved, 0);
        let out = tick(&mut k, 0);
        let jobs: Vec<u64> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Spawn { job, .. } => Some(job.0),
                _ => None,
            })
            .collect();
        assert!(!jobs.is_empty());
        assert!(jobs.iter().all(|j| *j < COUNTER_LIMIT), "{jobs:?}");
    }

    /// What comes back with a service: no outputs for one that published none, its count of
    /// restarts by a flapping need, and no render at boot for one that copies no secret.
    #[test]
    fn a_resume_keeps_what_was_and_adds_nothing() {
        let mut old = kernel(TEXT);
        boot(&mut old, 0);
        let mut saved = old.saved();
        saved_service(&mut saved, "web").medical.needs_restarts = 4;
        let (mut k, _) = resume(TEXT, saved, 5_000);
        assert_eq!(k.outputs("web"), None, "web publishes nothing");
        let web = k.lookup("web").unwrap();
        assert_eq!(k.slots[web.index()].medical.needs_restarts, 4);
        let out = tick(&mut k, 5_000);
        assert!(
            !out.iter().any(|e| matches!(e, Effect::Render { .. })),
            "web copies no secret: {out:?}"
        );
    }

    /// A service edited while no daemon ran starts afresh from its new definition: its old
    /// standing problem and backoff are not its new one's.
    #[test]
    fn an_edited_definition_starts_afresh_after_resume() {
        let mut old = kernel(TEXT);
        boot(&mut old, 0);
        let mut saved = old.saved();
        let web = saved_service(&mut saved, "web");
        web.process = None;
        web.problem = Some(Condition::Exited);
        web.medical.next_allowed = Instant::from_millis(60_000);
        let edited = TEXT.replace("[\"/bin/web\"]", "[\"/bin/web\", \"-v\"]");
        let (mut k, _) = resume(&edited, saved, 5_000);
        let out = tick(&mut k, 5_000);
        assert!(spawned(&out, &k, "web"), "started at once: {out:?}");
        let web = k.lookup("web").unwrap();
        assert_eq!(k.status(web).unwrap().strikes(), 0);
    }

    /// A process that ended unseen while it was being stopped for a restart is started afresh:
    /// the restart was wanted, so it is no failure and no strike.
    #[test]
    fn a_process_that_ended_unseen_during_its_restart_is_no_failure() {
        let mut old = kernel(TEXT);
        boot(&mut old, 0);
        let mut saved = old.saved();
        let p = saved_service(&mut saved, "web").process.as_mut().unwrap();
        p.stopping = true;
        p.survived = false;
        let (mut k, _) = resume(TEXT, saved, 5_000);
        let out = tick(&mut k, 5_000);
        assert!(spawned(&out, &k, "web"), "{out:?}");
        let web = k.lookup("web").unwrap();
        assert_eq!(k.status(web).unwrap().strikes(), 0);
        assert_eq!(k.status(web).unwrap().condition(), &Condition::Starting);
    }

    /// A oneshot is taken as done after a resume only if it was done, from the same
    /// definition: one edited while no daemon ran runs its new command, one that had not run
    /// yet runs.
    #[test]
    fn a_oneshot_runs_after_resume_unless_done_from_the_same_definition() {
        let mut old = kernel(TEXT);
        boot(&mut old, 0);
        let setup = old.lookup("setup").unwrap();
        let job = old.status(setup).unwrap().job().unwrap();
        let (status, mut out) = (ExitStatus::Code(0), Vec::new());
        let done = Input::Exited {
            service: setup,
            job,
            status,
        };
        old.step(Instant::from_millis(10), done, &mut out);
        // Done, same definition: not run again.
        let (mut k, _) = resume(TEXT, old.saved(), 5_000);
        assert!(!spawned(&tick(&mut k, 5_000), &k, "setup"));
        // Done, edited meanwhile: the new command runs.
        let edited = TEXT.replace("[\"/bin/setup\"]", "[\"/bin/setup\", \"v2\"]");
        let (mut k, _) = resume(&edited, old.saved(), 5_000);
        assert!(spawned(&tick(&mut k, 5_000), &k, "setup"));
        // Never run (the daemon ended before boot): it runs.
        let (mut k, _) = resume(TEXT, kernel(TEXT).saved(), 5_000);
        assert!(spawned(&tick(&mut k, 5_000), &k, "setup"));
    }
}
