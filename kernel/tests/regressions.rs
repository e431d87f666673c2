//! Kernel bugs found by the simulator (medic-sim), each pinned by the smallest scenario that
//! showed it.

use medic_kernel::config::parse;
use medic_kernel::{
    CommandPurpose, Condition, Effect, ExitStatus, Input, Instant, JobId, Kernel, LinkState,
    Operator, ServiceId,
};

struct Run {
    k: Kernel,
    now: Instant,
    out: Vec<Effect>,
}

impl Run {
    fn new(text: &str) -> Run {
        let k = Kernel::new(parse(text, "test.toml").unwrap_or_else(|e| panic!("{e}")));
        Run {
            k,
            now: Instant::ZERO,
            out: Vec::new(),
        }
    }

    fn id(&self, name: &str) -> ServiceId {
        self.k.lookup(name).expect("service")
    }

    fn at(&mut self, ms: u64, input: Input) -> Vec<Effect> {
        self.now = Instant::from_millis(ms);
        self.out.clear();
        self.k.step(self.now, input, &mut self.out);
        self.out.clone()
    }

    fn condition(&self, name: &str) -> Condition {
        self.k
            .status(self.id(name))
            .expect("slot")
            .condition()
            .clone()
    }

    /// The job of the spawn of `name` among `effects`.
    fn spawned(&self, effects: &[Effect], name: &str) -> Option<JobId> {
        let id = self.id(name);
        effects.iter().find_map(|e| match e {
            Effect::Spawn { service, job, .. } if *service == id => Some(*job),
            _ => None,
        })
    }

    fn invariants(&self) {
        if let Err(e) = self.k.check_invariants() {
            panic!("{e:?}");
        }
    }
}

const LINK_UP: LinkState = LinkState {
    admin_up: true,
    carrier: true,
    ipv4: true,
    ipv6_global: true,
};

/// Seed 34: a process restarted by a heal waited for ever for a done oneshot that needs it
/// (with `stop-when-needs-fail`) to stop; the oneshot, having no process, was never stopped,
/// and once undone nothing told the process it could go on.
#[test]
fn a_restart_is_not_held_up_for_ever_by_a_done_oneshot_that_needs_it() {
    let mut r = Run::new(
        "[service.db]\nrun = [\"/bin/db\"]\n\n[service.setup]\noneshot = [\"/bin/setup\"]\n\
         needs = [\"db\"]\nstop-when-needs-fail = true\n",
    );
    let (db, setup) = (r.id("db"), r.id("setup"));
    let boot = r.at(0, Input::Tick);
    let db_job = r.spawned(&boot, "db").expect("db spawned");
    let up = r.at(
        1,
        Input::Spawned {
            service: db,
            job: db_job,
            pid: 10,
        },
    );
    let setup_job = r
        .spawned(&up, "setup")
        .expect("setup spawned once db is ready");
    r.at(
        2,
        Input::Spawned {
            service: setup,
            job: setup_job,
            pid: 11,
        },
    );
    r.at(
        3,
        Input::Exited {
            service: setup,
            job: setup_job,
            status: ExitStatus::Code(0),
        },
    );
    assert_eq!(r.condition("setup"), Condition::Ready);
    // The operator restarts db: setup must be undone, then db stopped and started again.
    let effects = r.at(10, Input::Operator(Operator::Restart("db".into())));
    let signalled = effects
        .iter()
        .any(|e| matches!(e, Effect::Signal { service, .. } if *service == db));
    assert!(signalled, "db's stop signal is not held back: {effects:?}");
    r.at(
        20,
        Input::Exited {
            service: db,
            job: db_job,
            status: ExitStatus::Signal(15),
        },
    );
    let again = r.k.status(db).expect("db").job();
    assert!(again.is_some_and(|j| j != db_job), "db started again");
    r.invariants();
}

/// Seed 37: `restart` (or `reload`) of a done oneshot forgot it was up without running its
/// `stop` command, so its `stop` never ran, not even at shutdown.
#[test]
fn restarting_a_done_oneshot_runs_its_stop_command_first() {
    let mut r = Run::new(
        "[service.firewall]\noneshot = [\"/etc/fw\", \"up\"]\nstop = [\"/etc/fw\", \"down\"]\n",
    );
    let fw = r.id("firewall");
    let boot = r.at(0, Input::Tick);
    let job = r.spawned(&boot, "firewall").expect("spawned");
    r.at(
        1,
        Input::Spawned {
            service: fw,
            job,
            pid: 10,
        },
    );
    r.at(
        2,
        Input::Exited {
            service: fw,
            job,
            status: ExitStatus::Code(0),
        },
    );
    assert_eq!(r.condition("firewall"), Condition::Ready);
    let effects = r.at(10, Input::Operator(Operator::Restart("firewall".into())));
    let stop = effects.iter().find_map(|e| match e {
        Effect::RunCommand {
            job,
            purpose: CommandPurpose::Stop,
            ..
        } => Some(*job),
        _ => None,
    });
    let stop = stop.unwrap_or_else(|| panic!("the stop command runs first: {effects:?}"));
    assert!(
        r.spawned(&effects, "firewall").is_none(),
        "not started before it is undone"
    );
    let effects = r.at(
        20,
        Input::CommandDone {
            service: fw,
            job: stop,
            status: ExitStatus::Code(0),
        },
    );
    assert!(
        r.spawned(&effects, "firewall").is_some(),
        "started again once undone"
    );
    r.invariants();
}

/// Seed 62, first half: with its last allowed strike made, a service still unhealthy in the
/// same instant went `given-up` at once, so the last heal never had its settle time.
#[test]
fn the_last_intervention_gets_its_settle_time_before_giving_up() {
    let mut r = Run::new("[service.wan]\ninterface = \"eth0\"\ngive-up-after = 1\n");
    r.at(
        0,
        Input::LinkChanged {
            ifname: "eth0".into(),
            link: Some(LinkState {
                admin_up: false,
                ..LINK_UP
            }),
        },
    );
    let effects = r.at(0, Input::Tick);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::LinkUp { .. })),
        "link-up: {effects:?}"
    );
    assert_eq!(
        r.condition("wan"),
        Condition::AdminDown,
        "not given up while the heal settles"
    );
    r.at(
        5,
        Input::LinkChanged {
            ifname: "eth0".into(),
            link: Some(LINK_UP),
        },
    );
    assert_eq!(r.condition("wan"), Condition::Ready);
    assert!(!r.k.status(r.id("wan")).expect("wan").given_up());
    r.invariants();
}

/// Seed 62, second half: an interface that gave up and then came back by itself was forgiven
/// its strikes but stayed `given-up` underneath, so the next blip gave up with 0 strikes.
#[test]
fn forgiveness_clears_given_up_too() {
    let mut r = Run::new(
        "[service.wan]\ninterface = \"eth0\"\ngive-up-after = 1\nforgive-after = \"1s\"\n",
    );
    let down = Some(LinkState {
        admin_up: false,
        ..LINK_UP
    });
    r.at(
        0,
        Input::LinkChanged {
            ifname: "eth0".into(),
            link: down,
        },
    );
    r.at(0, Input::Tick); // link-up, strike 1
    r.at(6_000, Input::Tick); // settle over, still down: given up
    assert_eq!(r.condition("wan"), Condition::GivenUp);
    r.at(
        7_000,
        Input::LinkChanged {
            ifname: "eth0".into(),
            link: Some(LINK_UP),
        },
    );
    assert_eq!(r.condition("wan"), Condition::Ready);
    r.at(8_000, Input::Tick); // healthy for forgive-after
    r.at(
        9_000,
        Input::LinkChanged {
            ifname: "eth0".into(),
            link: down,
        },
    );
    let effects = r.at(9_000, Input::Tick);
    assert_ne!(
        r.condition("wan"),
        Condition::GivenUp,
        "a forgiven service tries again"
    );
    assert!(
        effects.iter().any(|e| matches!(e, Effect::LinkUp { .. })) || r.k.next_deadline().is_some()
    );
    r.invariants();
}

/// Seed 7990: a service ordered `after` another whose process became ready while that one was
/// `blocked` was never started: readiness did not change the blocked one's condition, so
/// nothing told the service after it to look again.
#[test]
fn after_ordering_sees_readiness_of_a_blocked_service() {
    let mut r = Run::new(
        "[service.wan]\ninterface = \"eth0\"\n\n[service.a]\nrun = [\"/bin/a\"]\nneeds = [\"wan\"]\n\
         ready = \"sd-notify\"\n\n[service.b]\nrun = [\"/bin/b\"]\nafter = [\"a\"]\n",
    );
    let a = r.id("a");
    r.at(
        0,
        Input::LinkChanged {
            ifname: "eth0".into(),
            link: Some(LINK_UP),
        },
    );
    let boot = r.at(0, Input::Tick);
    let job = r.spawned(&boot, "a").expect("a started");
    assert!(
        r.spawned(&boot, "b").is_none(),
        "b waits until a has been tried"
    );
    r.at(
        1,
        Input::Spawned {
            service: a,
            job,
            pid: 10,
        },
    );
    r.at(
        2,
        Input::LinkChanged {
            ifname: "eth0".into(),
            link: None,
        },
    );
    assert_eq!(r.condition("a"), Condition::Blocked);
    let effects = r.at(3, Input::ReadyNotified { service: a, job });
    assert!(
        r.spawned(&effects, "b").is_some(),
        "b starts once a is ready: {effects:?}"
    );
    r.invariants();
}
