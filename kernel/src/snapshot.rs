//! Checks a kernel snapshot that came from outside (a trace file) before anything steps it.
//!
//! A [`Kernel`] built by [`Kernel::new`] and moved only by [`Kernel::step`] is consistent; one
//! decoded from bytes is whatever the bytes say. The kernel indexes its slot table with the
//! service ids it holds, trusts its timer queue to agree with its slots, and so on: a corrupt
//! snapshot made `medic replay` panic (issue 9). [`check`] refuses such a snapshot with a
//! sentence instead.
//!
use std::collections::BTreeSet;

use crate::kernel::Kernel;
use crate::protocol::ServiceId;
use crate::service::Slot;

/// Counters that a step increments: this far from overflowing is more than any run reaches
/// (a job a nanosecond for 500 years), and a snapshot past it is corrupt.
const COUNTER_LIMIT: u64 = u64::MAX / 2;

/// Whether `kernel` is a state that [`Kernel::step`] can safely go on from: every service id it
/// holds names one of its slots, its indexes agree with its slots, its timer queue with the
/// timers of its slots, its counters are far from overflowing, and
/// [`Kernel::check_invariants`] holds. `Err` says what is wrong.
pub fn check(kernel: &Kernel) -> Result<(), String> {
    check_structure(kernel)?;
    kernel
        .check_invariants()
        .map_err(|broken| broken.join("; "))
}

fn check_structure(k: &Kernel) -> Result<(), String> {
    let n = k.slots.len();
    let known = |id: &ServiceId, what: &str| -> Result<(), String> {
        if id.index() < n {
            Ok(())
        } else {
            Err(format!("{what} names service #{}, of {n}", id.0))
        }
    };
    if n > u32::MAX as usize {
        return Err(format!("{n} services"));
    }
    for (i, slot) in k.slots.iter().enumerate() {
        let name = &slot.config.name;
        if slot.id.index() != i {
            return Err(format!("slot {i} ({name}) says it is #{}", slot.id.0));
        }
        if slot.first_job.0 > k.next_job() {
            return Err(format!(
                "slot {i} ({name}) starts at job {}, past the next job {}",
                slot.first_job.0,
                k.next_job()
            ));
        }
        for (what, ids) in [
            ("needs", &slot.needs),
            ("after", &slot.after),
            ("dependents", &slot.dependents),
            ("successors", &slot.successors),
        ] {
            for id in ids {
                known(id, &format!("{what} of {name}"))?;
            }
        }
        let history = &slot.history;
        if history.capacity() == 0 || history.len() > history.capacity() as usize {
            return Err(format!(
                "the history of {name} holds {} records in room for {}",
                history.len(),
                history.capacity()
            ));
        }
        if history.next_seq() > COUNTER_LIMIT {
            return Err(format!(
                "the history of {name} is numbered past {COUNTER_LIMIT}"
            ));
        }
        if slot.medical.needs_restarts > u32::MAX / 2 || slot.probe_failures > u32::MAX / 2 {
            return Err(format!("the counters of {name} are past {}", u32::MAX / 2));
        }
    }
    // `dependents` and `successors` are the reverses of `needs` and `after`, edge for edge: the
    // kernel counts a service's unhealthy needs up and down along them.
    for (forward, backward, what) in [
        (
            edges(&k.slots, |s| &s.needs),
            edges(&k.slots, |s| &s.dependents),
            "needs and dependents",
        ),
        (
            edges(&k.slots, |s| &s.after),
            edges(&k.slots, |s| &s.successors),
            "after and successors",
        ),
    ] {
        let mut reversed: Vec<_> = backward.into_iter().map(|(a, b)| (b, a)).collect();
        reversed.sort_unstable();
        if forward != reversed {
            return Err(format!("the {what} of the services disagree"));
        }
    }
    let mut in_order = BTreeSet::new();
    for id in &k.order {
        known(id, "the service order")?;
        if !in_order.insert(*id) {
            return Err(format!("the service order holds #{} twice", id.0));
        }
    }
    for (name, id) in &k.by_name {
        known(id, &format!("the name {name}"))?;
        if &k.slots[id.index()].config.name != name {
            return Err(format!(
                "the name {name} points to the slot of {}",
                k.slots[id.index()].config.name
            ));
        }
    }
    for (ifname, ids) in &k.link_services {
        for id in ids {
            known(id, &format!("the services of link {ifname}"))?;
        }
    }
    for id in k.device_services.iter().chain(k.device_matches.keys()) {
        known(id, "the device services")?;
    }
    for (path, watchers) in &k.watches {
        for (id, _) in watchers {
            known(id, &format!("the watchers of {path}"))?;
        }
    }
    for id in k.timers.services() {
        known(&id, "a timer")?;
    }
    let per: Vec<_> = k.slots.iter().map(|s| &s.timers).collect();
    k.timers.check(&per)?;
    if k.next_job() > COUNTER_LIMIT {
        return Err(format!("the job counter is past {COUNTER_LIMIT}"));
    }
    Ok(())
}

/// Every edge `(slot, other)` of the lists `of` picks, sorted.
fn edges(slots: &[Slot], of: impl Fn(&Slot) -> &Vec<ServiceId>) -> Vec<(u32, u32)> {
    let mut all: Vec<_> = slots
        .iter()
        .flat_map(|s| of(s).iter().map(move |other| (s.id.0, other.0)))
        .collect();
    all.sort_unstable();
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ExitStatus, Input, LinkState};
    use crate::service::FileAction;
    use crate::time::Instant;
    use crate::timers::ServiceTimers;
    use crate::{config, Effect};

    const TEXT: &str = "[service.wan]\ninterface = \"eth0\"\n\n[service.a]\nrun = [\"/bin/a\"]\n\
                        needs = [\"wan\"]\nreload-on = [\"/etc/a.conf\"]\n\n[service.b]\n\
                        run = [\"/bin/b\"]\nneeds = [\"a\"]\nprobe = { file = \"/f\" }\n";

    /// A kernel after boot, a link coming up, spawns and one crash: timers, jobs and history.
    fn running() -> Kernel {
        let mut k = Kernel::new(config::parse(TEXT, "t").expect("valid"));
        let mut out = Vec::new();
        let link = LinkState {
            admin_up: true,
            carrier: true,
            ..LinkState::default()
        };
        k.step(
            Instant::ZERO,
            Input::LinkChanged {
                ifname: "eth0".into(),
                link: Some(link),
            },
            &mut out,
        );
        k.step(Instant::ZERO, Input::Tick, &mut out);
        let mut now = 0;
        for _ in 0..4 {
            let spawns: Vec<_> = out
                .drain(..)
                .filter_map(|e| match e {
                    Effect::Spawn { service, job, .. } => Some((service, job)),
                    _ => None,
                })
                .collect();
            now += 1;
            for (service, job) in spawns {
                let at = Instant::from_millis(now);
                k.step(
                    at,
                    Input::Spawned {
                        service,
                        job,
                        pid: 7,
                    },
                    &mut out,
                );
                if k.name(service) == "a" {
                    let status = ExitStatus::Code(1);
                    k.step(
                        at,
                        Input::Exited {
                            service,
                            job,
                            status,
                        },
                        &mut out,
                    );
                }
            }
            k.step(Instant::from_millis(now * 2_000), Input::Tick, &mut out);
        }
        k
    }

    #[test]
    fn a_kernel_that_stepped_is_consistent() {
        for k in [
            Kernel::new(config::parse(TEXT, "t").expect("valid")),
            running(),
        ] {
            assert_eq!(check(&k), Ok(()));
        }
        assert!(running().timers.len() > 0, "the test covers timers");
    }

    /// `running()` after `edit` damaged it.
    fn edited(edit: impl FnOnce(&mut Kernel)) -> Kernel {
        let mut k = running();
        edit(&mut k);
        k
    }

    #[test]
    fn out_of_range_ids_and_disagreeing_indexes_are_refused() {
        type Edit = Box<dyn FnOnce(&mut Kernel)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|s| s.order.push(ServiceId(9))),
                "the service order names service #9, of 3",
            ),
            (
                Box::new(|s| s.slots[2].needs[0] = ServiceId(40)),
                "needs of b names service #40, of 3",
            ),
            (
                Box::new(|s| s.slots[0].dependents.push(ServiceId(3))),
                "dependents of wan names service #3, of 3",
            ),
            (
                Box::new(|s| s.slots[1].id = ServiceId(0)),
                "slot 1 (a) says it is #0",
            ),
            (
                Box::new(|s| {
                    s.by_name.insert("a".into(), ServiceId(2));
                }),
                "the name a points to the slot of b",
            ),
            (
                Box::new(|s| {
                    s.link_services
                        .entry("eth0".into())
                        .or_default()
                        .push(ServiceId(5))
                }),
                "the services of link eth0 names service #5, of 3",
            ),
            (
                Box::new(|s| {
                    let w = s.watches.entry("/etc/a.conf".into()).or_default();
                    w.push((ServiceId(8), FileAction::Reload));
                }),
                "the watchers of /etc/a.conf names service #8, of 3",
            ),
            (
                Box::new(|s| s.order.push(ServiceId(0))),
                "the service order holds #0 twice",
            ),
            (
                // wan lists b as a dependent, but b does not need wan.
                Box::new(|s| s.slots[0].dependents.push(ServiceId(2))),
                "the needs and dependents of the services disagree",
            ),
            (
                Box::new(|s| s.slots[1].successors.push(ServiceId(0))),
                "the after and successors of the services disagree",
            ),
            (
                Box::new(|s| s.set_next_job(u64::MAX)),
                "the job counter is past",
            ),
            (
                Box::new(|s| {
                    for slot in &mut s.slots {
                        slot.timers = ServiceTimers::default();
                    }
                }),
                "timer queue holds",
            ),
        ];
        for (edit, expected) in cases {
            let err = check(&edited(edit)).expect_err(expected);
            assert!(err.contains(expected), "{err:?} does not say {expected:?}");
        }
    }

    #[test]
    fn a_snapshot_that_breaks_an_invariant_is_refused() {
        let k = edited(|s| s.slots[2].medical.strikes = 1_000);
        let err = check(&k).expect_err("strikes over give-up-after");
        assert!(err.contains("strikes exceed give-up-after"), "{err}");
    }

    #[test]
    fn a_counter_about_to_overflow_is_refused() {
        let k = edited(|s| {
            s.slots[1].medical.needs_restarts = u32::MAX;
        });
        assert!(check(&k).expect_err("overflow").contains("counters of a"));
    }

    /// Each counter is taken exactly at its limit and refused one past it.
    #[test]
    fn a_counter_at_its_limit_is_taken_and_one_past_it_is_not() {
        let half = u32::MAX / 2;
        for (value, ok) in [(half, true), (half + 1, false)] {
            let restarts = edited(|s| s.slots[1].medical.needs_restarts = value);
            assert_eq!(check(&restarts).is_ok(), ok, "needs_restarts {value}");
            let probes = edited(|s| s.slots[1].probe_failures = value);
            assert_eq!(check(&probes).is_ok(), ok, "probe_failures {value}");
        }
        for (value, ok) in [(COUNTER_LIMIT, true), (COUNTER_LIMIT + 1, false)] {
            let jobs = edited(|s| s.set_next_job(value));
            assert_eq!(check(&jobs).is_ok(), ok, "next job {value}");
        }
    }
}
