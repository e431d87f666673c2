//! The device scenario (DESIGN §12, `medic_sim::devices`) on many seeds, and proof that its
//! checker bites: a kernel that never hears a device vanish keeps `pppd` running without its
//! modem, and one that starts `pppd` without looking is caught starting it with no modem.

use medic_kernel::{Effect, Input, Instant, Kernel};
use medic_sim::devices::run_devices;
use medic_sim::{seeds_from_env, Supervisor};

#[test]
fn a_dependent_of_a_device_runs_only_while_the_device_is_there() {
    let (mut lost, mut starts, mut changes, mut steps, mut heals) = (0, 0, 0, 0, 0);
    let seeds = seeds_from_env(200);
    for &seed in &seeds {
        match run_devices(seed, |k| k) {
            Ok(report) => {
                lost += report.lost;
                starts += report.pppd_starts;
                changes += report.changes;
                steps += report.steps;
                heals += report.heals;
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    eprintln!(
        "{} seeds: {steps} steps, {changes} device changes, {lost} uevents lost, {starts} starts of pppd, {heals} runs of usb_modeswitch",
        seeds.len()
    );
    // The scenario exercises what it claims to.
    if std::env::var_os("SIM_SEED").is_none() {
        assert!(lost > 0, "no uevent was ever lost");
        assert!(starts > 200, "pppd was started only {starts} times");
        assert!(heals > 100, "usb_modeswitch was run only {heals} times");
    }
}

/// Drops every device set without a modem port: the kernel never hears the modem go.
struct DeafToRemovals(Kernel);

impl Supervisor for DeafToRemovals {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        if let Input::Devices(set) = &input {
            if !set.iter().any(|d| d.name.starts_with("ttyUSB")) {
                return;
            }
        }
        self.0.step(now, input, out)
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.0.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.0
    }
}

/// Hears every device set as if the modem were there: starts pppd without a modem.
struct SeesAModem(Kernel);

impl Supervisor for SeesAModem {
    fn step(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        let input = match input {
            Input::Devices(_) => Input::Devices(vec![medic_kernel::Device {
                devpath: "/devices/ghost/ttyUSB9".into(),
                subsystem: "tty".into(),
                name: "ttyUSB9".into(),
                attrs: [("idVendor".to_string(), "12d1".to_string())].into(),
                ..Default::default()
            }]),
            other => other,
        };
        self.0.step(now, input, out)
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.0.next_deadline()
    }
    fn kernel(&self) -> &Kernel {
        &self.0
    }
}

fn first_failure<S: Supervisor>(wrap: impl Fn(Kernel) -> S) -> String {
    seeds_from_env(50)
        .into_iter()
        .find_map(|seed| run_devices(seed, &wrap).err())
        .map(|f| f.to_string())
        .expect("the broken kernel was never caught")
}

#[test]
fn the_checker_bites_a_kernel_deaf_to_removals() {
    let report = first_failure(DeafToRemovals);
    assert!(report.contains("pppd still runs"), "{report}");
}

#[test]
fn the_checker_bites_a_kernel_that_starts_without_the_device() {
    let report = first_failure(SeesAModem);
    assert!(
        report.contains("pppd started while the kernel had been told no modem"),
        "{report}"
    );
}
