//! Device services (DESIGN §12) as small stories: a modem appears, vanishes, re-enumerates,
//! and its `absent` heal is tried a bounded number of times.

mod common;

use common::World;
use medic_kernel::{Device, Input};

const MODEM: &str = r#"
    [service.modem]
    device = { subsystem = "tty", name = "ttyUSB*", attrs = { idVendor = "12d1" } }
    [service.modem.on.absent]
    heal = { run = ["/usr/sbin/usb_modeswitch", "-c", "/etc/usb_modeswitch.conf"] }
    settle = "15s"
    [service.pppd]
    run = ["/usr/sbin/pppd", "nodetach", "call", "lte"]
    needs = ["modem"]
    stop-when-needs-fail = true
"#;

/// The Huawei stick's first serial port, as the adapter reports it.
fn tty_usb(n: u32) -> Device {
    Device {
        devpath: format!(
            "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.{n}/ttyUSB{n}/tty/ttyUSB{n}"
        ),
        subsystem: "tty".into(),
        name: format!("ttyUSB{n}"),
        devname: Some(format!("/dev/ttyUSB{n}")),
        devtype: None,
        driver: Some("option".into()),
        attrs: [("idVendor".to_string(), "12d1".to_string())].into(),
    }
}

/// A disk that no service asks for.
fn disk() -> Device {
    Device {
        devpath: "/devices/virtual/block/loop0".into(),
        subsystem: "block".into(),
        name: "loop0".into(),
        devname: Some("/dev/loop0".into()),
        devtype: Some("disk".into()),
        ..Device::default()
    }
}

fn devices(w: &mut World, set: Vec<Device>) {
    w.input(Input::Devices(set));
}

fn heal_times(w: &World) -> Vec<u64> {
    w.heals("modem").iter().map(|(t, _)| *t).collect()
}

#[test]
fn a_device_present_at_coldplug_is_ready_and_its_dependent_starts_at_boot() {
    let mut w = World::new(MODEM);
    devices(&mut w, vec![disk(), tty_usb(0)]);
    let w = w.boot();
    assert_eq!(w.condition("modem"), "ready");
    assert_eq!(w.condition("pppd"), "ready");
    assert_eq!(w.spawns("pppd"), vec![0]);
    assert!(w.heals("modem").is_empty());
    let id = w.id("modem");
    let matched = w.kernel.device(id).expect("the modem's facts are kept");
    assert_eq!(matched.devname.as_deref(), Some("/dev/ttyUSB0"));
    assert_eq!(matched.driver.as_deref(), Some("option"));
    // Every present device the adapter told of, asked for or not.
    let mut told: Vec<&str> = w.kernel.devices().iter().map(|d| d.name.as_str()).collect();
    told.sort_unstable();
    assert_eq!(told, ["loop0", "ttyUSB0"]);
}

#[test]
fn appear_makes_the_device_ready_and_starts_its_dependent() {
    let mut w = World::new(MODEM).boot();
    assert_eq!(w.condition("modem"), "absent");
    assert_eq!(w.condition("pppd"), "waiting");
    w.run_until(2_000);
    // Something that does not match changes nothing.
    devices(&mut w, vec![disk()]);
    assert_eq!(w.condition("modem"), "absent");
    devices(&mut w, vec![disk(), tty_usb(0), tty_usb(1)]);
    assert_eq!(w.condition("modem"), "ready");
    assert_eq!(w.condition("pppd"), "ready");
    assert_eq!(w.spawns("pppd"), vec![2_000]);
    // With two ports the first by devpath is the one shown.
    let id = w.id("modem");
    assert_eq!(w.kernel.device(id).unwrap().name, "ttyUSB0");
}

#[test]
fn vanish_makes_it_absent_and_stops_a_dependent_with_stop_when_needs_fail() {
    let mut w = World::new(MODEM);
    devices(&mut w, vec![tty_usb(0)]);
    let mut w = w.boot();
    w.run_until(1_000);
    devices(&mut w, vec![disk()]);
    assert_eq!(w.condition("modem"), "absent");
    assert_eq!(w.condition("pppd"), "blocked");
    assert!(!w.is_running("pppd"));
    assert_eq!(
        w.effects_of("pppd"),
        vec!["0ms spawn", "1000ms signal TERM"]
    );
    assert!(w.kernel.device(w.id("modem")).is_none());
    assert!(
        w.heals("pppd").is_empty(),
        "a stop for a need is not a heal"
    );
}

#[test]
fn vanish_blocks_a_dependent_without_stop_when_needs_fail() {
    let mut w = World::new(&MODEM.replace("stop-when-needs-fail = true", ""));
    devices(&mut w, vec![tty_usb(0)]);
    let mut w = w.boot();
    w.run_until(1_000);
    devices(&mut w, vec![]);
    assert_eq!(w.condition("pppd"), "blocked");
    assert!(w.is_running("pppd"), "blocked, not stopped");
    devices(&mut w, vec![tty_usb(0)]);
    assert_eq!(w.condition("pppd"), "ready");
    assert_eq!(w.spawns("pppd"), vec![0]);
}

#[test]
fn a_repeated_set_is_a_no_op_so_a_rewalk_after_lost_events_repairs_without_noise() {
    let mut w = World::new(MODEM);
    devices(&mut w, vec![tty_usb(0)]);
    let mut w = w.boot();
    let before = w.log.len();
    devices(&mut w, vec![tty_usb(0), disk()]);
    devices(&mut w, vec![disk(), tty_usb(0)]);
    assert_eq!(w.log.len(), before, "nothing changed, nothing said");
    // The remove event was lost; the re-walk's set no longer has the modem.
    w.run_until(500);
    devices(&mut w, vec![disk()]);
    assert_eq!(w.condition("pppd"), "blocked");
}

#[test]
fn re_enumeration_within_settle_gets_no_second_heal_and_backoff_applies() {
    let mut w = World::new(MODEM).boot();
    // Storage mode at boot: usb_modeswitch is run at once.
    assert_eq!(heal_times(&w), vec![0]);
    // The stick re-enumerates as a modem.
    w.run_until(3_000);
    devices(&mut w, vec![tty_usb(0)]);
    assert_eq!(w.condition("pppd"), "ready");
    w.run_until(20_000);
    assert!(
        w.history("modem").iter().any(|l| l.contains("resolved")),
        "{:#?}",
        w.history("modem")
    );
    // Gone at 20 s: the second strike (15 s after the first is long past).
    devices(&mut w, vec![]);
    assert_eq!(heal_times(&w), vec![0, 20_000]);
    assert!(!w.is_running("pppd"));
    // Back at 21 s, gone again at 22 s: within the settle time nothing more is tried,
    // and then the backoff (15 s × 2) waits until 50 s.
    w.run_until(21_000);
    devices(&mut w, vec![tty_usb(0)]);
    assert!(w.is_running("pppd"));
    w.run_until(22_000);
    devices(&mut w, vec![]);
    assert!(!w.is_running("pppd"));
    w.run_until(49_999);
    assert_eq!(heal_times(&w), vec![0, 20_000]);
    w.run_until(50_000);
    assert_eq!(heal_times(&w), vec![0, 20_000, 50_000]);
    assert_eq!(w.spawns("pppd"), vec![3_000, 21_000]);
}

#[test]
fn an_absent_heal_is_not_retried_for_ever() {
    let mut w = World::new(&MODEM.replace(
        "[service.modem.on.absent]",
        "give-up-after = 3\n    retry-after = \"never\"\n    [service.modem.on.absent]",
    ))
    .boot();
    w.run_until(24 * 3_600_000);
    assert_eq!(heal_times(&w), vec![0, 15_000, 45_000]);
    assert_eq!(w.condition("modem"), "given-up");
    assert_eq!(w.kernel.next_deadline(), None, "quiet: nothing more to try");
    assert_eq!(w.condition("pppd"), "waiting");
    // The modem turns up by itself after all: ready, and pppd starts.
    devices(&mut w, vec![tty_usb(0)]);
    assert_eq!(w.condition("modem"), "ready");
    assert_eq!(w.condition("pppd"), "ready");
}

#[test]
fn a_config_replacement_rematches_the_known_devices() {
    let mut w = World::new(MODEM);
    devices(&mut w, vec![tty_usb(0), disk()]);
    let mut w = w.boot();
    assert_eq!(w.condition("modem"), "ready");
    let text = MODEM.replace(
        r#"device = { subsystem = "tty", name = "ttyUSB*", attrs = { idVendor = "12d1" } }"#,
        r#"device = { subsystem = "block", devtype = "disk" }"#,
    );
    w.run_until(1_000);
    w.input(Input::ReplaceConfig { text });
    assert_eq!(w.condition("modem"), "ready");
    assert_eq!(w.kernel.device(w.id("modem")).unwrap().name, "loop0");
    let text = MODEM.replace("12d1", "19d2");
    w.input(Input::ReplaceConfig { text });
    assert_eq!(w.condition("modem"), "absent");
}

#[test]
fn a_device_service_publishes_the_matched_device_as_its_outputs() {
    let mut w = World::new(MODEM).boot();
    let none = w.kernel.outputs("modem").cloned().unwrap_or_default();
    assert!(none.is_empty(), "nothing while absent: {none:?}");
    devices(&mut w, vec![tty_usb(0)]);
    let outputs = w.kernel.outputs("modem").expect("published").clone();
    let text = |k: &str| match outputs.get(k) {
        Some(medic_kernel::Value::String(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("devname"), "/dev/ttyUSB0");
    assert_eq!(text("subsystem"), "tty");
    assert_eq!(text("driver"), "option");
    assert!(text("devpath").ends_with("/ttyUSB0/tty/ttyUSB0"));
    assert!(w
        .history("modem")
        .iter()
        .any(|l| l.contains("outputs:") && l.contains("/dev/ttyUSB0")));
    // Another port after a re-enumeration: the outputs follow; gone: cleared.
    devices(&mut w, vec![tty_usb(1)]);
    assert_eq!(
        w.kernel.outputs("modem").unwrap().get("devname"),
        Some(&medic_kernel::Value::String("/dev/ttyUSB1".into()))
    );
    devices(&mut w, vec![disk()]);
    assert!(w.kernel.outputs("modem").is_none_or(|o| o.is_empty()));
}
