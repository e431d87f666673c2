//! Devices in the simulator (DESIGN §12): an LTE stick that is plugged in and out, boots as a
//! CD-ROM until usb_modeswitch turns it into a modem, re-enumerates, drops a port; the uevent
//! adapter loses events and repairs by re-walking sysfs. The kernel runs unchanged (or a
//! broken wrapper of it, to prove the checker bites).
//!
//! Judged from the world, not the kernel's record:
//! * **present-only**: `pppd` (needs the modem, `stop-when-needs-fail`) is never started while
//!   the adapter has told the kernel no modem is there, and its process never outlives the
//!   modem by more than the adapter's worst repair time (a re-walk after lost events) plus
//!   `stop-timeout` and the time a process takes to die;
//! * **settle**: usb_modeswitch is never run again within its settle time (a stick that
//!   re-enumerates meanwhile gets no second one);
//! * **liveness**: once the faults stop with the modem plugged in, `pppd` runs within the
//!   backoff bound;
//! * the kernel's invariants after every step.
//!
//! ```text
//! SIM_SEEDS=10000 cargo test -p medic-sim --release --test devices   # a soak
//! ```

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use medic_kernel::{Device, Effect, ExitStatus, Input, Instant, JobId, Kernel, ServiceId};

use crate::rng::Rng;
use crate::{OneInstant, Supervisor};

/// The config every device run uses; `@SETTLE@` is drawn per seed.
const CONFIG: &str = r#"
[service.modem]
device = { subsystem = "tty", name = "ttyUSB*", attrs = { idVendor = "12d1" } }
give-up-after = 4
retry-after = "2m"
[service.modem.on.absent]
heal = { run = ["/usr/sbin/usb_modeswitch", "-c", "/etc/usb_modeswitch.conf"] }
settle = "@SETTLE@"

[service.pppd]
run = ["/usr/sbin/pppd", "nodetach", "call", "lte"]
needs = ["modem"]
stop-when-needs-fail = true
stop-timeout = "2s"

[service.gpsd]
run = ["/usr/sbin/gpsd", "-N", "/dev/ttyUSB1"]
needs = ["modem"]
"#;

/// The adapter notices lost events (ENOBUFS on its next read) and re-walks within this.
pub const REWALK_MAX: Duration = Duration::from_secs(2);
/// A uevent reaches the kernel within this when it is not lost.
const DELIVERY_MAX: Duration = Duration::from_millis(5);
/// A process dies within this of its stop signal, when it honours it.
const EXIT_MAX: Duration = Duration::from_millis(50);
/// The run's fault phase, then the calm phase for liveness.
const FAULT_TIME: Duration = Duration::from_secs(600);
const CALM_TIME: Duration = Duration::from_secs(600);

/// What the stick is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stick {
    Unplugged,
    /// A USB CD-ROM (`sr0`): no serial ports, nothing matches.
    Storage,
    /// Two serial ports, `ttyUSB0` and `ttyUSB1`.
    Modem,
}

#[derive(Debug)]
enum Event {
    /// The world changes the stick: a fault (`true`: the next fault is drawn when it
    /// happens), or the second half of a re-enumeration, or usb_modeswitch's doing.
    Stick(Stick, bool),
    /// One port vanishes (`true`: comes back) without the stick changing mode.
    Port1(bool),
    /// The adapter has read a uevent: the device at `devpath` is present or not.
    Uevent(String, bool),
    /// The adapter re-walks sysfs after lost events.
    Rewalk,
    /// An input for the kernel (a process spawned or exited, a command done).
    Input(Input),
}

/// What one run ended with.
#[derive(Debug)]
pub struct DeviceReport {
    /// Steps taken.
    pub steps: u64,
    /// Times the stick changed.
    pub changes: u64,
    /// Uevents lost (each repaired by a re-walk).
    pub lost: u64,
    /// Spawns of `pppd`.
    pub pppd_starts: u64,
    /// Runs of usb_modeswitch.
    pub heals: u64,
}

/// A failed run: what broke, and how to see it again.
#[derive(Debug)]
pub struct DeviceFailure {
    /// The seed.
    pub seed: u64,
    /// Every broken expectation, in order.
    pub broken: Vec<String>,
}

impl core::fmt::Display for DeviceFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(f, "device sim, seed {}:", self.seed)?;
        for b in self.broken.iter().take(20) {
            writeln!(f, "  {b}")?;
        }
        write!(
            f,
            "reproduce: SIM_SEED={} cargo test -p medic-sim --test devices -- --nocapture",
            self.seed
        )
    }
}

/// The simulated world of one device run.
struct World {
    rng: Rng,
    now: Instant,
    seq: u64,
    queue: BTreeMap<(Instant, u64), Event>,
    stick: Stick,
    /// Devices that exist, by devpath (the truth).
    present: BTreeSet<String>,
    /// What the adapter believes exists (what it told the kernel).
    known: BTreeSet<String>,
    /// Since when no modem port exists (truth); `None` while one does.
    absent_since: Option<Instant>,
    /// A re-walk is scheduled.
    rewalk_due: bool,
    /// Uevents reach the adapter in order: not before this.
    last_delivery: Instant,
    /// Live processes by job: (service, pid).
    procs: BTreeMap<JobId, ServiceId>,
    next_pid: u32,
    /// Faults on: the stick is changed at random.
    faults: bool,
    report: DeviceReport,
    broken: Vec<String>,
    /// The modem's `settle`, and when usb_modeswitch was last run.
    settle: Duration,
    last_heal: Option<Instant>,
}

const PORT0: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0";
const PORT1: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.1/ttyUSB1/tty/ttyUSB1";
const CDROM: &str =
    "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0/block/sr0";

/// The facts the adapter reads of a device (what it sends the kernel).
fn facts(devpath: &str) -> Device {
    let name = devpath.rsplit('/').next().unwrap_or_default().to_string();
    let cdrom = devpath == CDROM;
    Device {
        devpath: devpath.to_string(),
        subsystem: if cdrom { "block" } else { "tty" }.into(),
        devname: Some(format!("/dev/{name}")),
        name,
        devtype: cdrom.then(|| "disk".to_string()),
        driver: Some(if cdrom { "usb-storage" } else { "option" }.into()),
        attrs: [("idVendor".to_string(), "12d1".to_string())].into(),
    }
}

fn is_port(devpath: &str) -> bool {
    devpath == PORT0 || devpath == PORT1
}

impl World {
    fn at(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    /// The devices of a stick mode.
    fn devices_of(stick: Stick) -> BTreeSet<String> {
        match stick {
            Stick::Unplugged => BTreeSet::new(),
            Stick::Storage => [CDROM.to_string()].into(),
            Stick::Modem => [PORT0.to_string(), PORT1.to_string()].into(),
        }
    }

    /// Sets which devices exist; each change is a uevent, lost or delivered in order.
    fn set_present(&mut self, now: Instant, present: BTreeSet<String>) {
        let gone: Vec<String> = self.present.difference(&present).cloned().collect();
        let new: Vec<String> = present.difference(&self.present).cloned().collect();
        self.present = present;
        let any_port = self.present.iter().any(|d| is_port(d));
        match (any_port, self.absent_since) {
            (true, _) => self.absent_since = None,
            (false, None) => self.absent_since = Some(now),
            (false, Some(_)) => {}
        }
        for (devpath, there) in gone
            .into_iter()
            .map(|d| (d, false))
            .chain(new.into_iter().map(|d| (d, true)))
        {
            self.report.changes += 1;
            if self.faults && self.rng.ratio(1, 6) {
                self.report.lost += 1;
                if !self.rewalk_due {
                    self.rewalk_due = true;
                    let at = now
                        + Duration::from_millis(self.rng.range(10, REWALK_MAX.as_millis() as u64));
                    self.at(at, Event::Rewalk);
                }
                continue;
            }
            let d = Duration::from_millis(self.rng.range(0, DELIVERY_MAX.as_millis() as u64));
            let at = (now + d).max(self.last_delivery);
            self.last_delivery = at;
            self.at(at, Event::Uevent(devpath, there));
        }
    }

    /// The input telling the kernel what the adapter knows.
    fn devices_input(&self) -> Input {
        Input::Devices(self.known.iter().map(|d| facts(d)).collect())
    }

    fn known_port(&self) -> bool {
        self.known.iter().any(|d| is_port(d))
    }

    /// A random fault, some time from now.
    fn next_fault(&mut self) {
        let at = self.now + Duration::from_millis(self.rng.range(200, 40_000));
        let event = match self.rng.below(10) {
            0 | 1 => Event::Stick(Stick::Unplugged, true),
            2 => Event::Stick(Stick::Storage, true),
            3 | 4 => Event::Stick(Stick::Modem, true),
            5 => Event::Port1(false),
            _ => {
                // Re-enumeration: gone, then back within a few seconds.
                let back = at + Duration::from_millis(self.rng.range(1, 5_000));
                self.at(back, Event::Stick(Stick::Modem, false));
                Event::Stick(Stick::Unplugged, true)
            }
        };
        self.at(at, event);
    }

    /// Carries out the kernel's effects; answers come back as events.
    fn carry_out(&mut self, effects: &[Effect], pppd: ServiceId) {
        for e in effects {
            match e {
                Effect::Spawn { service, job, .. } => {
                    if *service == pppd {
                        self.report.pppd_starts += 1;
                        if !self.known_port() {
                            self.broken.push(format!(
                                "{}: pppd started while the kernel had been told no modem is there",
                                self.now
                            ));
                        }
                    }
                    self.next_pid += 1;
                    self.procs.insert(*job, *service);
                    let input = Input::Spawned {
                        service: *service,
                        job: *job,
                        pid: self.next_pid,
                    };
                    self.at(self.now, Event::Input(input));
                }
                Effect::Signal { service, job, .. } | Effect::Kill { service, job }
                    if self.procs.contains_key(job) =>
                {
                    let d = Duration::from_millis(self.rng.range(1, EXIT_MAX.as_millis() as u64));
                    let input = Input::Exited {
                        service: *service,
                        job: *job,
                        status: ExitStatus::Signal(15),
                    };
                    self.at(self.now + d, Event::Input(input));
                }
                Effect::RunCommand { service, job, .. } => {
                    // Settle (property 1): a re-enumeration within the settle time gets no
                    // second usb_modeswitch.
                    if let Some(last) = self.last_heal {
                        if self.now < last + self.settle {
                            self.broken.push(format!(
                                "{}: usb_modeswitch again {:?} after the last, settle is {:?}",
                                self.now,
                                self.now.saturating_since(last),
                                self.settle
                            ));
                        }
                    }
                    self.last_heal = Some(self.now);
                    self.report.heals += 1;
                    // usb_modeswitch: a stick in storage mode becomes a modem (mostly).
                    if self.stick == Stick::Storage && self.rng.ratio(3, 4) {
                        let d = Duration::from_millis(self.rng.range(500, 4_000));
                        self.at(self.now + d, Event::Stick(Stick::Modem, false));
                    }
                    let input = Input::CommandDone {
                        service: *service,
                        job: *job,
                        status: ExitStatus::Code(0),
                    };
                    self.at(self.now + Duration::from_millis(300), Event::Input(input));
                }
                _ => {}
            }
        }
    }

    /// present-only, the second half: pppd does not outlive the modem.
    fn check_outlives(&mut self, pppd: ServiceId, stop_timeout: Duration) {
        let Some(since) = self.absent_since else {
            return;
        };
        let bound = REWALK_MAX + DELIVERY_MAX + stop_timeout + EXIT_MAX * 2;
        let alive = self.procs.values().any(|s| *s == pppd);
        if alive && self.now > since + bound {
            let msg = format!(
                "{}: pppd still runs {:?} after the modem went (bound {bound:?})",
                self.now,
                self.now.saturating_since(since)
            );
            if self.broken.last() != Some(&msg) {
                self.broken.push(msg);
            }
        }
    }
}

/// Runs the device scenario of `seed` on the kernel as wrapped by `wrap`.
pub fn run_devices<S: Supervisor>(
    seed: u64,
    wrap: impl Fn(Kernel) -> S,
) -> Result<DeviceReport, DeviceFailure> {
    let mut rng = Rng::new(seed ^ 0xdec1_ce5e_ed00_0000);
    let settle_s = *rng.pick(&[1, 5, 15]);
    let text = CONFIG.replace("@SETTLE@", &format!("{settle_s}s"));
    let config =
        medic_kernel::config::parse(&text, "devices.toml").expect("the device sim's config");
    let mut kernel = wrap(Kernel::new(config));
    let pppd = kernel.kernel().lookup("pppd").expect("pppd");
    let stop_timeout = Duration::from_secs(2);
    let first = *rng.pick(&[Stick::Unplugged, Stick::Storage, Stick::Modem]);
    let mut w = World {
        rng,
        now: Instant::ZERO,
        seq: 0,
        queue: BTreeMap::new(),
        stick: first,
        present: BTreeSet::new(),
        known: BTreeSet::new(),
        absent_since: Some(Instant::ZERO),
        rewalk_due: false,
        last_delivery: Instant::ZERO,
        procs: BTreeMap::new(),
        next_pid: 1000,
        faults: true,
        report: DeviceReport {
            steps: 0,
            changes: 0,
            lost: 0,
            pppd_starts: 0,
            heals: 0,
        },
        broken: Vec::new(),
        settle: Duration::from_secs(settle_s),
        last_heal: None,
    };
    // Coldplug: the adapter walks sysfs before boot.
    w.present = World::devices_of(first);
    w.known = w.present.clone();
    if w.present.iter().any(|d| is_port(d)) {
        w.absent_since = None;
    }
    let mut out = Vec::new();
    let coldplug = w.devices_input();
    kernel.step(w.now, coldplug, &mut out);
    w.next_fault();
    let end_faults = Instant::ZERO + FAULT_TIME;
    let end = end_faults + CALM_TIME;
    let mut calm = false;
    let mut one_instant = OneInstant::default();
    loop {
        let deadline = kernel.next_deadline();
        let event_at = w.queue.keys().next().map(|k| k.0);
        let next = match (deadline, event_at) {
            (Some(d), Some(e)) => d.min(e),
            (Some(d), None) => d,
            (None, Some(e)) => e,
            (None, None) => break,
        };
        if !calm && next > end_faults {
            // The faults stop with the modem plugged in: the liveness phase.
            calm = true;
            w.faults = false;
            w.now = w.now.max(end_faults);
            w.queue
                .retain(|_, e| matches!(e, Event::Input(_) | Event::Uevent(..) | Event::Rewalk));
            w.stick = Stick::Modem;
            let now = w.now;
            w.set_present(now, World::devices_of(Stick::Modem));
            continue;
        }
        if next > end {
            break;
        }
        w.now = w.now.max(next);
        let input = if event_at == Some(next) {
            let (_, event) = w.queue.pop_first().expect("an event");
            match event {
                Event::Stick(mode, fault) => {
                    if w.faults || mode == Stick::Modem {
                        w.stick = mode;
                        let now = w.now;
                        w.set_present(now, World::devices_of(mode));
                    }
                    if fault && w.faults {
                        w.next_fault();
                    }
                    None
                }
                Event::Port1(back) => {
                    if w.stick == Stick::Modem {
                        let mut p = w.present.clone();
                        if back {
                            p.insert(PORT1.to_string());
                        } else {
                            p.remove(PORT1);
                            let at = w.now + Duration::from_millis(w.rng.range(1, 3_000));
                            w.at(at, Event::Port1(true));
                        }
                        let now = w.now;
                        w.set_present(now, p);
                    }
                    if !back && w.faults {
                        w.next_fault();
                    }
                    None
                }
                Event::Uevent(devpath, there) => {
                    let before = w.known.clone();
                    if there {
                        w.known.insert(devpath);
                    } else {
                        w.known.remove(&devpath);
                    }
                    (w.known != before).then(|| w.devices_input())
                }
                Event::Rewalk => {
                    w.rewalk_due = false;
                    w.known = w.present.clone();
                    Some(w.devices_input())
                }
                Event::Input(input) => {
                    if let Input::Exited { job, .. } = &input {
                        w.procs.remove(job);
                    }
                    Some(input)
                }
            }
        } else {
            Some(Input::Tick)
        };
        w.check_outlives(pppd, stop_timeout);
        let Some(input) = input else { continue };
        out.clear();
        kernel.step(w.now, input, &mut out);
        w.report.steps += 1;
        if let Some(why) = one_instant.step(w.now) {
            w.broken.push(why);
            break;
        }
        if let Err(broken) = kernel.kernel().check_invariants() {
            w.broken.extend(
                broken
                    .into_iter()
                    .map(|b| format!("{}: invariant: {b}", w.now)),
            );
        }
        let effects = std::mem::take(&mut out);
        w.carry_out(&effects, pppd);
        out = effects;
        if w.broken.len() > 20 {
            break;
        }
    }
    w.now = w.now.max(end);
    w.check_outlives(pppd, stop_timeout);
    // Liveness: calm for CALM_TIME with the modem in, and pppd runs.
    if w.broken.is_empty() && !w.procs.values().any(|s| *s == pppd) {
        let v = kernel.kernel().status(pppd).map(|v| format!("{v:?}"));
        w.broken.push(format!(
            "{}: the modem has been in for {CALM_TIME:?} and pppd does not run: {v:?}",
            w.now
        ));
    }
    if w.broken.is_empty() {
        Ok(w.report)
    } else {
        Err(DeviceFailure {
            seed,
            broken: w.broken,
        })
    }
}
