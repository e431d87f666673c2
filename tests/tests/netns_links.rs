//! The netlink adapter against a real kernel: every test makes its own network namespace with a
//! veth pair whose `wan` end plays the router's uplink, runs `medic_io::netlink::watch` inside
//! it, changes the links with `ip`, and checks the `Input::LinkChanged` that come out.
//!
//! Needs root (see `netns_common`); skipped with a message otherwise, never skipped in CI.

mod netns_common;

use std::time::{Duration, Instant};

use medic_io::netlink::WatchOptions;
use medic_kernel::LinkState;
use netns_common::Netns;

/// Generous for CI: these tests check what is reported, never how fast (the netlink bench
/// measures that: architecture.md §8).
const SOON: Duration = Duration::from_secs(2);

fn carrier(want: bool) -> impl Fn(Option<LinkState>) -> bool {
    move |l| l.is_some_and(|l| l.admin_up && l.carrier == want)
}

#[test]
fn the_initial_dump_reports_every_link_before_watch_returns() {
    let Some(ns) = Netns::new("dump") else { return };
    ns.veth_wan();
    ns.ip(&[
        "link",
        "add",
        "spare",
        "type",
        "veth",
        "peer",
        "name",
        "sparepeer",
    ]); // left down
    let w = ns.watch();
    let wan = w.initial_state("wan").expect("wan in the initial dump");
    assert!(wan.admin_up && wan.carrier, "wan: {wan:?}");
    let spare = w.initial_state("spare").expect("spare in the initial dump");
    assert!(!spare.admin_up && !spare.carrier, "spare: {spare:?}");
    assert!(w.initial_state("lo").is_some_and(|l| l.admin_up));
    assert_eq!(w.initial_state("eth9"), None);
    let view = w.table.view("wan").expect("wan in the table");
    assert_eq!(view.state, "up, carrier");
    assert_eq!(w.table.view("spare").unwrap().state, "down");
    assert_eq!(w.table.view("eth9"), None);
}

#[test]
fn carrier_follows_the_peer() {
    let Some(ns) = Netns::new("carrier") else {
        return;
    };
    ns.veth_wan();
    let mut w = ns.watch();
    ns.ip(&["link", "set", "wanpeer", "down"]);
    w.wait_for("wan", SOON, carrier(false));
    assert_eq!(w.table.view("wan").unwrap().state, "up, no carrier");
    ns.ip(&["link", "set", "wanpeer", "up"]);
    w.wait_for("wan", SOON, carrier(true));
    assert_eq!(w.table.view("wan").unwrap().state, "up, carrier");
}

#[test]
fn link_up_brings_an_administratively_down_link_up() {
    let Some(ns) = Netns::new("linkup") else {
        return;
    };
    ns.veth_wan();
    let mut w = ns.watch();
    ns.ip(&["link", "set", "wan", "down"]);
    w.wait_for("wan", SOON, |l| {
        l.is_some_and(|l| !l.admin_up && !l.carrier)
    });
    ns.link_up("wan").expect("link_up wan");
    w.wait_for("wan", SOON, carrier(true));

    let missing = ns.link_up("eth9").expect_err("no such link");
    assert_eq!(missing.raw_os_error(), Some(libc::ENODEV), "{missing}");
}

#[test]
fn link_set_takes_a_link_down_and_up_and_refuses_a_name_it_cannot_send() {
    let Some(ns) = Netns::new("linkset") else {
        return;
    };
    ns.veth_wan();
    let mut w = ns.watch();
    ns.link_set("wan", false).expect("link_set wan down");
    w.wait_for("wan", SOON, |l| l.is_some_and(|l| !l.admin_up));
    ns.link_set("wan", true).expect("link_set wan up");
    w.wait_for("wan", SOON, carrier(true));

    let refused = ns.link_set("wan\0x", true).expect_err("a NUL in the name");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::InvalidInput,
        "{refused}"
    );
    // A name the kernel refuses (longer than IFNAMSIZ) comes back with the kernel's errno:
    // ERANGE from its attribute policy (EINVAL on kernels that word it so).
    let long = ns
        .link_set("a-name-far-too-long", true)
        .expect_err("too long");
    let errno = long.raw_os_error();
    assert!(matches!(errno, Some(libc::ERANGE | libc::EINVAL)), "{long}");
}

#[test]
fn a_deleted_link_is_absent_and_comes_back_when_recreated() {
    let Some(ns) = Netns::new("hotplug") else {
        return;
    };
    ns.veth_wan();
    let mut w = ns.watch();
    ns.ip(&["link", "del", "wan"]); // takes wanpeer with it
    w.wait_for("wan", SOON, |l| l.is_none());
    assert_eq!(w.table.view("wan"), None);
    ns.veth_wan();
    w.wait_for("wan", SOON, carrier(true));
}

#[test]
fn a_renamed_link_is_followed_by_name() {
    let Some(ns) = Netns::new("rename") else {
        return;
    };
    ns.ip(&[
        "link", "add", "eth1", "type", "veth", "peer", "name", "eth1peer",
    ]);
    let mut w = ns.watch();
    assert!(w.initial_state("eth1").is_some());
    ns.ip(&["link", "set", "eth1", "name", "wan"]);
    w.wait_for("eth1", SOON, |l| l.is_none());
    w.wait_for("wan", SOON, |l| l.is_some());
}

#[test]
fn addresses_set_ipv4_and_ipv6_global() {
    let Some(ns) = Netns::new("addr") else {
        return;
    };
    ns.veth_wan();
    let mut w = ns.watch();
    let wan = w.initial_state("wan").unwrap();
    assert!(!wan.ipv4 && !wan.ipv6_global, "{wan:?}");

    ns.ip(&["addr", "add", "2001:db8::7/64", "dev", "wan", "nodad"]);
    w.wait_for("wan", SOON, |l| l.is_some_and(|l| l.ipv6_global));
    ns.ip(&["addr", "add", "192.0.2.7/24", "dev", "wan"]);
    w.wait_for("wan", SOON, |l| l.is_some_and(|l| l.ipv4 && l.ipv6_global));
    let view = w.table.view("wan").unwrap();
    for want in ["192.0.2.7/24", "2001:db8::7/64"] {
        assert!(
            view.addresses.iter().any(|a| a == want),
            "{want} in {view:?}"
        );
    }

    ns.ip(&["addr", "del", "2001:db8::7/64", "dev", "wan"]);
    w.wait_for("wan", SOON, |l| l.is_some_and(|l| l.ipv4 && !l.ipv6_global));
    ns.ip(&["addr", "del", "192.0.2.7/24", "dev", "wan"]);
    w.wait_for("wan", SOON, |l| l.is_some_and(|l| !l.ipv4));
}

#[test]
fn a_tentative_ipv6_address_counts_only_once_dad_succeeds() {
    let Some(ns) = Netns::new("dad") else { return };
    ns.veth_wan();
    // Make duplicate address detection run, and finish quickly, on wan. Writes to
    // /proc/sys/net apply to the namespace of the writing thread.
    // DAD of 3 probes 1 s apart: the address stays tentative for 3 s, far longer than the
    // watcher takes to see it.
    ns.run(|| {
        for (key, value) in [
            ("conf/wan/accept_dad", "1"),
            ("conf/wan/dad_transmits", "3"),
            ("neigh/wan/retrans_time_ms", "1000"),
        ] {
            let path = format!("/proc/sys/net/ipv6/{key}");
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    });
    let mut w = ns.watch();
    let added = Instant::now();
    ns.ip(&["addr", "add", "2001:db8::9/64", "dev", "wan"]);
    // Seen first as tentative: in the table, but not ipv6_global.
    let view = medic_tests::wait_for(
        "the address in wan's table",
        || {
            let view = w.table.view("wan")?;
            let seen = view
                .addresses
                .iter()
                .any(|a| a.starts_with("2001:db8::9/64"));
            seen.then_some(view)
        },
        || format!("{:?}", w.table.view("wan")),
    );
    assert!(
        view.addresses
            .contains(&"2001:db8::9/64 (tentative)".to_string()),
        "first seen {:?} after the address was added: {view:?}",
        added.elapsed()
    );
    assert!(!view.link.ipv6_global, "{view:?}");
    w.wait_for("wan", Duration::from_secs(20), |l| {
        l.is_some_and(|l| l.ipv6_global)
    });
    assert!(w
        .table
        .view("wan")
        .unwrap()
        .addresses
        .contains(&"2001:db8::9/64".to_string()));
}

#[test]
fn a_port_leaving_a_bridge_is_not_a_deleted_link() {
    let Some(ns) = Netns::new("bridge") else {
        return;
    };
    ns.veth_wan();
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    let mut w = ns.watch();
    ns.ip(&["link", "set", "wan", "master", "br0"]);
    ns.ip(&["link", "set", "wan", "nomaster"]);
    let changes = w.collect("wan", Duration::from_millis(300));
    assert!(
        changes.iter().all(|l| l.is_some()),
        "wan reported gone: {changes:?}"
    );
    assert!(w.table.view("wan").is_some());
}

/// A receive buffer far too small for a burst of notifications: the kernel drops them and
/// says `ENOBUFS`; the watcher must dump again, so even a deletion whose notification was
/// lost ends in `link: None`.
#[test]
fn a_lost_notification_is_recovered_by_dumping_again() {
    let Some(ns) = Netns::new("enobufs") else {
        return;
    };
    ns.veth_wan();
    ns.ip(&[
        "link", "add", "usb0", "type", "veth", "peer", "name", "usb0peer",
    ]);
    ns.ip(&["link", "set", "usb0", "up"]);
    let options = WatchOptions {
        receive_buffer_bytes: Some(1), // the kernel rounds this up to its minimum (a few KiB)
    };
    let mut w = ns.watch_with(options);
    assert!(w.initial_state("usb0").is_some());
    assert_eq!(w.table.dumps(), 1);

    w.stall(Duration::from_millis(3000));
    std::thread::sleep(Duration::from_millis(50)); // the stall has begun
                                                   // Flood: 200 address notifications, far more than the buffer holds.
    let batch: String = (0..200)
        .map(|i| format!("addr add 198.51.100.{}/32 dev wan\n", i + 1))
        .collect();
    let path = std::env::temp_dir().join(format!("{}.batch", ns.name));
    std::fs::write(&path, batch).unwrap();
    ns.ip(&["-batch", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    // These notifications are surely lost.
    ns.ip(&["link", "del", "usb0"]);
    ns.ip(&["link", "set", "wanpeer", "down"]);

    w.wait_for("usb0", Duration::from_secs(10), |l| l.is_none());
    w.wait_for("wan", Duration::from_secs(10), |l| {
        l.is_some_and(|l| l.ipv4 && !l.carrier)
    });
    assert!(w.table.dumps() >= 2, "no dump after the overrun");
    let view = w.table.view("wan").unwrap();
    let flood = view
        .addresses
        .iter()
        .filter(|a| a.starts_with("198.51.100."));
    assert_eq!(flood.count(), 200, "{view:?}");
}

/// The queue from the watcher to the daemon's loop is bounded: while the loop does not read,
/// changes that do not fit wait in the watcher's table and are sent, in their latest state,
/// once there is room. Nothing is lost, nothing grows.
#[test]
fn a_full_queue_to_the_loop_loses_no_change() {
    let Some(ns) = Netns::new("queue") else {
        return;
    };
    ns.veth_wan();
    let mut w = ns.watch_with_queue(WatchOptions::default(), 2);
    w.ignore(Duration::from_millis(1500));
    for i in 0..10 {
        let (a, b) = (format!("q{i}"), format!("q{i}p"));
        ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
    }
    ns.ip(&["link", "del", "q0"]); // and q0p with it
    w.wait_for("q0", Duration::from_secs(10), |l| l.is_none());
    for i in 1..10 {
        w.wait_for(&format!("q{i}"), Duration::from_secs(10), |l| l.is_some());
    }
    let last_q0 = w.seen.iter().rev().find(|(n, _)| n == "q0");
    assert_eq!(
        last_q0.map(|(_, l)| *l),
        Some(None),
        "q0 ends deleted: {:?}",
        w.seen
    );
    assert!(
        w.table.delayed() > 0,
        "the queue of 2 never filled up, so this proves nothing"
    );
}

/// What an interface publishes (`LinkTable::outputs`) follows an address or an MTU that
/// changes no [`LinkState`]: the watcher announces it through `LinkTable::facts`, which is
/// what wakes the daemon's loop to publish it.
#[test]
fn a_second_address_or_a_new_mtu_is_announced_as_facts_without_a_link_change() {
    let Some(ns) = Netns::new("facts") else {
        return;
    };
    ns.veth_wan();
    ns.ip(&["addr", "add", "2001:db8::1/64", "dev", "wan", "nodad"]);
    let w = ns.watch();
    let wan = w.initial_state("wan").expect("wan in the initial dump");
    assert!(wan.ipv6_global, "{wan:?}");
    let mut facts = w.table.facts();
    let announced = |facts: &mut tokio::sync::watch::Receiver<u64>,
                     table: &medic_io::netlink::LinkTable,
                     what: &str,
                     want: &dyn Fn(&medic_kernel::Outputs) -> bool| {
        let start = Instant::now();
        loop {
            if facts.has_changed().expect("the watcher runs") {
                facts.borrow_and_update();
                if want(&table.outputs("wan")) {
                    return;
                }
            }
            assert!(
                start.elapsed() < SOON,
                "{what} not announced: {:?}",
                table.outputs("wan")
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let text = |s: &str| medic_kernel::Value::String(s.into());
    ns.ip(&["addr", "add", "2001:db8::2/64", "dev", "wan", "nodad"]);
    announced(&mut facts, &w.table, "the second address", &|o| {
        o.get("ipv6")
            == Some(&medic_kernel::Value::List(vec![
                text("2001:db8::1/64"),
                text("2001:db8::2/64"),
            ]))
    });
    ns.ip(&["link", "set", "wan", "mtu", "1280"]);
    announced(&mut facts, &w.table, "the new MTU", &|o| {
        o.get("mtu") == Some(&text("1280"))
    });
}
