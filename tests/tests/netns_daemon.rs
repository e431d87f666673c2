//! Interface services end to end: the real `medic daemon` inside a network namespace of its
//! own (spawned from a thread that entered the namespace, so it and its children live there),
//! with `wan` the `wan` end of a veth pair and a process service that needs it. The links are
//! changed with `ip`; what medic did is read back with `medic status --json` and
//! `medic history SERVICE --json` (architecture.md §4).
//!
//! Needs root (see `netns_common`); skipped with a message otherwise, never skipped in CI.

mod netns_common;

use std::time::{Duration, Instant};

use medic_tests::{pids_in, wait_for, Daemon};
use netns_common::Netns;
use serde_json::Value;

/// `wan` ready when it has carrier, `app` needs it; `@EXTRA@` is added to `app`. Every start
/// of `app` appends its pid to `@DIR@/starts`.
const CONFIG: &str = r#"
[service.wan]
interface = "wan"
ready-when = "carrier"

[service.app]
run = ["/bin/sh", "-c", "echo $$ >> @DIR@/starts; exec sleep 1000"]
needs = ["wan"]
@EXTRA@
"#;

fn start(ns: &Netns, extra: &str) -> Daemon {
    let config = CONFIG.replace("@EXTRA@", extra);
    ns.run(|| Daemon::start(&config))
}

fn starts(d: &Daemon) -> usize {
    pids_in(&d.path("starts")).len()
}

/// History records of `name` in which medic intervened.
fn heals(d: &Daemon, name: &str) -> Vec<Value> {
    d.history(name)
        .into_iter()
        .filter(|r| !r["heal"].is_null())
        .collect()
}

/// History records of `name` in `condition` in which medic intervened.
fn heals_in(d: &Daemon, name: &str, condition: &str) -> Vec<Value> {
    let mut heals = heals(d, name);
    heals.retain(|r| r["condition"] == condition);
    heals
}

#[test]
fn a_dependent_waits_for_the_link_and_is_blocked_not_healed_while_carrier_is_lost() {
    let Some(ns) = Netns::new("dwait") else {
        return;
    };
    let d = start(&ns, "");
    // No link yet: wan absent, app waits and is not started.
    d.wait_condition("wan", "absent");
    d.wait_condition("app", "waiting");
    assert_eq!(starts(&d), 0);
    assert_eq!(d.service("wan")["link"]["state"], "absent");

    ns.veth_wan();
    d.wait_condition("wan", "ready");
    let pid = d.wait_condition("app", "ready")["pid"].as_u64();
    assert!(pid.is_some());
    assert_eq!(d.service("wan")["link"]["state"], "up, carrier");

    let lost = Instant::now();
    ns.ip(&["link", "set", "wanpeer", "down"]);
    d.wait_condition("wan", "no-carrier");
    let blocked = d.wait_condition("app", "blocked");
    eprintln!(
        "carrier lost -> app blocked seen by polling status: {:?}",
        lost.elapsed()
    );
    assert_eq!(
        blocked["pid"].as_u64(),
        pid,
        "a blocked service keeps running"
    );
    std::thread::sleep(Duration::from_millis(1500)); // longer than any default settle
    assert_eq!(d.condition("app"), "blocked");
    assert_eq!(
        heals(&d, "app"),
        Vec::<Value>::new(),
        "nobody heals a blocked service"
    );
    assert_eq!(
        heals_in(&d, "wan", "no-carrier"),
        Vec::<Value>::new(),
        "no-carrier has no heal"
    );

    ns.ip(&["link", "set", "wanpeer", "up"]);
    let ready = d.wait_condition("app", "ready");
    assert_eq!(ready["pid"].as_u64(), pid, "not restarted");
    assert_eq!(starts(&d), 1);
}

#[test]
fn stop_when_needs_fail_stops_the_dependent_and_starts_it_when_carrier_returns() {
    let Some(ns) = Netns::new("dstop") else {
        return;
    };
    ns.veth_wan();
    let d = start(&ns, "stop-when-needs-fail = true");
    let first = d.wait_condition("app", "ready")["pid"].as_u64().unwrap() as u32;

    ns.ip(&["link", "set", "wanpeer", "down"]);
    wait_for(
        "app blocked and its process stopped",
        || {
            let app = d.service("app");
            (app["condition"] == "blocked" && app["pid"].is_null()).then_some(())
        },
        || d.describe("app"),
    );
    wait_for(
        "the old process to be gone",
        || medic_tests::process_gone(first).then_some(()),
        || d.describe("app"),
    );
    assert_eq!(
        heals(&d, "app"),
        Vec::<Value>::new(),
        "a stop for a need is no heal"
    );

    ns.ip(&["link", "set", "wanpeer", "up"]);
    let second = d.wait_new_pid("app", Some(first));
    d.wait_condition("app", "ready");
    assert_ne!(second, first);
    assert_eq!(starts(&d), 2);
}

#[test]
fn an_administratively_down_link_is_brought_up_by_medic() {
    let Some(ns) = Netns::new("dadmin") else {
        return;
    };
    ns.veth_wan();
    let d = start(&ns, "");
    d.wait_condition("wan", "ready");
    d.wait_condition("app", "ready");

    ns.ip(&["link", "set", "wan", "down"]);
    wait_for(
        "an admin-down record healed by link-up in wan's history",
        || {
            d.history("wan")
                .into_iter()
                .find(|r| r["condition"] == "admin-down" && r["heal"] == "link-up")
        },
        || d.describe("wan"),
    );
    d.wait_condition("wan", "ready");
    d.wait_condition("app", "ready");
    let out = ns.try_ip(&["link", "show", "wan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(",UP") || text.contains("<UP"),
        "wan is up again: {text}"
    );
    assert_eq!(starts(&d), 1, "app was blocked, not restarted");
}

#[test]
fn a_deleted_link_is_absent_and_the_dependent_comes_back_when_it_is_recreated() {
    let Some(ns) = Netns::new("dhotplug") else {
        return;
    };
    ns.veth_wan();
    let d = start(&ns, "stop-when-needs-fail = true");
    let first = d.wait_condition("app", "ready")["pid"].as_u64().unwrap() as u32;

    ns.ip(&["link", "del", "wan"]);
    d.wait_condition("wan", "absent");
    d.wait_condition("app", "blocked");
    // (`ip link del` sets the link down first; should medic see that, a link-up heal of
    // `admin-down` is right; but `absent` itself has no default heal.)
    assert_eq!(
        heals_in(&d, "wan", "absent"),
        Vec::<Value>::new(),
        "absent has no default heal"
    );

    ns.veth_wan();
    d.wait_condition("wan", "ready");
    d.wait_new_pid("app", Some(first));
    d.wait_condition("app", "ready");
}

#[test]
fn ipv6_global_readiness_waits_for_a_global_address() {
    let Some(ns) = Netns::new("dipv6") else {
        return;
    };
    ns.veth_wan();
    let config = CONFIG
        .replace("ready-when = \"carrier\"", "ready-when = \"ipv6-global\"")
        .replace("@EXTRA@", "");
    let d = ns.run(|| Daemon::start(&config));
    d.wait_condition("wan", "no-address");
    d.wait_condition("app", "waiting");

    ns.ip(&["addr", "add", "2001:db8::1/64", "dev", "wan", "nodad"]);
    d.wait_condition("wan", "ready");
    d.wait_condition("app", "ready");
    let wan = d.service("wan");
    let addresses = wan["link"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        addresses.iter().any(|a| a == "2001:db8::1/64"),
        "status shows the address: {wan}"
    );
}

/// A link flapping far faster than the restart settle time (1 s): with
/// `stop-when-needs-fail`, the dependent is stopped and started again, but not faster than
/// settle and backoff allow.
#[test]
fn a_flapping_link_does_not_restart_the_dependent_faster_than_settle_allows() {
    let Some(ns) = Netns::new("dflap") else {
        return;
    };
    ns.veth_wan();
    let d = start(&ns, "stop-when-needs-fail = true");
    d.wait_condition("app", "ready");

    let storm = Instant::now();
    for _ in 0..25 {
        ns.ip(&["link", "set", "wanpeer", "down"]);
        std::thread::sleep(Duration::from_millis(10));
        ns.ip(&["link", "set", "wanpeer", "up"]);
        std::thread::sleep(Duration::from_millis(10));
    }
    let storm = storm.elapsed();
    let during = starts(&d) - 1;
    d.wait_condition("wan", "ready");
    d.wait_condition("app", "ready");
    // One start at once, then at most one per restart settle (1 s) of the storm.
    let allowed = 1 + storm.as_secs() as usize + 1;
    eprintln!("{during} restarts during a {storm:?} storm of 25 flaps (allowed {allowed})");
    assert!(
        during <= allowed,
        "{during} restarts during a {storm:?} storm of 25 flaps, at most {allowed} allowed\n{}",
        d.describe("app")
    );
    // And it did flap: medic saw the carrier go more than once, stopped app for it, and
    // started it again.
    let losses = d
        .history("wan")
        .iter()
        .filter(|r| r["condition"] == "no-carrier")
        .count();
    assert!(
        losses >= 2,
        "{losses} carrier losses seen in a storm of 25\n{}",
        d.describe("wan")
    );
    let blocked = d
        .history("app")
        .iter()
        .filter(|r| r["condition"] == "blocked")
        .count();
    eprintln!("{losses} carrier losses seen, app blocked {blocked} times");
    assert!(
        blocked >= 1,
        "app was never stopped for wan\n{}",
        d.describe("app")
    );
    assert!(
        starts(&d) >= 2,
        "app was never started again after the storm\n{}",
        d.describe("app")
    );
}

/// Without `stop-when-needs-fail`, flapping never restarts the dependent at all.
#[test]
fn a_flapping_link_only_blocks_a_dependent_that_keeps_running() {
    let Some(ns) = Netns::new("dflap2") else {
        return;
    };
    ns.veth_wan();
    let d = start(&ns, "");
    let pid = d.wait_condition("app", "ready")["pid"].as_u64();
    for _ in 0..25 {
        ns.ip(&["link", "set", "wanpeer", "down"]);
        std::thread::sleep(Duration::from_millis(10));
        ns.ip(&["link", "set", "wanpeer", "up"]);
        std::thread::sleep(Duration::from_millis(10));
    }
    let app = d.wait_condition("app", "ready");
    assert_eq!(app["pid"].as_u64(), pid);
    assert_eq!(starts(&d), 1);
    assert_eq!(heals(&d, "app"), Vec::<Value>::new());
}

/// An interface publishes its link's facts as outputs (DESIGN §9), and a template that reads
/// them renders again when an address comes and goes: `medic output wan --json` shows
/// `ifname`, `ifindex`, `mtu`, `mac`, `ipv4` and the usable global `ipv6` addresses.
#[test]
fn an_interface_publishes_its_addresses_and_a_template_follows_them() {
    let Some(ns) = Netns::new("dout") else {
        return;
    };
    ns.veth_wan();
    ns.ip(&["link", "set", "wan", "mtu", "1400"]);
    let extra = r#"
uses = ["wan"]
reload = { signal = "HUP" }
[[service.app.template]]
text = "mtu {{ wan.mtu }} mac {{ wan.mac }}\nv4 {{ wan.ipv4 | join(\",\") }}\nv6 {{ wan.ipv6 | join(\",\") }}\n"
target = "@DIR@/app.conf"
debounce = "50ms"
"#;
    let d = start(&ns, extra);
    d.wait_condition("app", "ready");
    let outputs = |d: &Daemon| -> Value {
        serde_json::from_str(&d.medic_ok(&["output", "wan", "--json"])).expect("json")
    };
    let first = outputs(&d);
    assert_eq!(first["ifname"], "wan", "{first}");
    assert_eq!(first["mtu"], "1400", "{first}");
    let mac = first["mac"].as_str().expect("a mac").to_string();
    assert_eq!(mac.len(), 17, "aa:bb:cc:dd:ee:ff: {first}");
    assert!(
        first["ifindex"].as_str().unwrap().parse::<u32>().is_ok(),
        "{first}"
    );
    assert_eq!(first["ipv4"], serde_json::json!([]), "{first}");
    assert_eq!(
        d.read("app.conf"),
        format!("mtu 1400 mac {mac}\nv4 \nv6 \n"),
        "rendered before the start"
    );

    // Addresses come: a tentative IPv6 address is not usable yet, a link-local never is.
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "wan"]);
    ns.ip(&["addr", "add", "2001:db8::1/64", "dev", "wan", "nodad"]);
    let want = format!("mtu 1400 mac {mac}\nv4 192.0.2.1/24\nv6 2001:db8::1/64\n");
    wait_for(
        "the template rendered with the new addresses",
        || (d.read("app.conf") == want).then_some(()),
        || format!("{}\n{}", d.read("app.conf"), d.describe("app")),
    );
    let history: Vec<String> = d
        .history("wan")
        .iter()
        .filter_map(|r| r["note"].as_str().map(str::to_string))
        .collect();
    assert!(
        history
            .iter()
            .any(|n| n.contains("ipv6 (none) → 2001:db8::1/64")
                || n.contains("ipv6  → 2001:db8::1/64")),
        "the history names the change: {history:?}"
    );

    // A second global address and a new MTU change no link state the kernel is told (it
    // already has a global address): only the facts, and the template follows them.
    ns.ip(&["addr", "add", "2001:db8::2/64", "dev", "wan", "nodad"]);
    ns.ip(&["link", "set", "wan", "mtu", "1280"]);
    let want = format!("mtu 1280 mac {mac}\nv4 192.0.2.1/24\nv6 2001:db8::1/64,2001:db8::2/64\n");
    wait_for(
        "the template rendered with the second address and the new MTU",
        || (d.read("app.conf") == want).then_some(()),
        || format!("{}\n{}", d.read("app.conf"), d.describe("app")),
    );

    // The addresses go: rendered again.
    ns.ip(&["addr", "del", "2001:db8::1/64", "dev", "wan"]);
    ns.ip(&["addr", "del", "2001:db8::2/64", "dev", "wan"]);
    let want = format!("mtu 1280 mac {mac}\nv4 192.0.2.1/24\nv6 \n");
    wait_for(
        "the template rendered without the removed address",
        || (d.read("app.conf") == want).then_some(()),
        || format!("{}\n{}", d.read("app.conf"), d.describe("app")),
    );
    assert_eq!(outputs(&d)["ipv6"], serde_json::json!([]));
}
