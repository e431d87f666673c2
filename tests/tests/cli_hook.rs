//! `medic hook dhcpcd|udhcpc|odhcp6c`, run as the DHCP clients run their script: a cleared
//! environment holding only what the client sets, the client's arguments, and `--print` (no
//! daemon needed). Without `--print`, no daemon answering is exit 3, within a second.

use std::os::unix::net::UnixListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use medic_tests::medic_bin;
use serde_json::{json, Value};

/// Runs `medic hook ARGS…` with exactly `env` as its environment.
fn hook(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(medic_bin())
        .arg("hook")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running medic hook")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The printed map, after checking the exit status.
fn printed(out: &Output, status: i32) -> Value {
    assert_eq!(
        out.status.code(),
        Some(status),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

#[test]
fn udhcpc_bound_is_printed_as_the_normalised_map() {
    let out = hook(
        &["udhcpc", "--print", "bound"],
        &[
            ("MEDIC_SERVICE", "wan"),
            ("PATH", "/usr/bin:/bin"),
            ("interface", "eth1"),
            ("ip", "192.0.2.10"),
            ("mask", "24"),
            ("subnet", "255.255.255.0"),
            ("router", "192.0.2.1"),
            ("dns", "198.51.100.53 198.51.100.54"),
            ("domain", "isp.example"),
            ("lease", "600"),
        ],
    );
    let map = printed(&out, 0);
    assert_eq!(
        map,
        json!({
            "state": "bound",
            "reason": "bound",
            "client": "udhcpc",
            "interface": "eth1",
            "ipv4": {
                "address": "192.0.2.10",
                "prefix-len": "24",
                "router": "192.0.2.1",
                "dns": ["198.51.100.53", "198.51.100.54"],
                "domain": "isp.example",
                "lease-s": "600",
            },
            "raw": {
                "interface": "eth1",
                "ip": "192.0.2.10",
                "mask": "24",
                "subnet": "255.255.255.0",
                "router": "192.0.2.1",
                "dns": "198.51.100.53 198.51.100.54",
                "domain": "isp.example",
                "lease": "600",
            },
        })
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn odhcp6c_prefixes_with_extra_fields_and_a_withdrawal() {
    let out = hook(
        &["odhcp6c", "--print", "wan6", "bound"],
        &[
            ("MEDIC_SERVICE", "dhcp6"),
            (
                "PREFIXES",
                "2001:db8:1200::/56,1800,3600,900,1440,class=00000002,excluded=2001:db8:1200::/64 \
                 2001:db8:9900::/56,0,0",
            ),
            ("RDNSS", "2001:db8::53"),
            ("DOMAINS", "isp.example"),
        ],
    );
    let map = printed(&out, 0);
    assert_eq!(map["interface"], "wan6");
    assert_eq!(
        map["ipv6"]["prefixes"],
        json!([{"address": "2001:db8:1200::", "length": "56",
                "preferred-s": "1800", "valid-s": "3600"}]),
        "the withdrawn prefix is left out"
    );
    assert_eq!(map["ipv6"]["dns"], json!(["2001:db8::53"]));
    assert_eq!(map["raw"]["rdnss"], "2001:db8::53");
}

#[test]
fn dhcpcd_bound6_with_service_flag_as_dhcpcd_clears_the_environment() {
    let out = hook(
        &["dhcpcd", "--service", "wan", "--print"],
        &[
            ("PATH", "/usr/bin"),
            ("reason", "BOUND6"),
            ("interface", "eth0"),
            ("new_dhcp6_ia_pd1_prefix1", "2001:db8:1200::"),
            ("new_dhcp6_ia_pd1_prefix1_length", "56"),
            ("new_dhcp6_ia_pd1_prefix1_pltime", "1800"),
            ("new_dhcp6_ia_pd1_prefix1_vltime", "3600"),
            ("new_dhcp6_name_servers", "2001:db8::53"),
            ("new_delegated_dhcp6_prefix", "2001:db8:1201::1/64"),
        ],
    );
    let map = printed(&out, 0);
    assert_eq!(map["state"], "bound");
    assert_eq!(map["reason"], "BOUND6");
    assert_eq!(map["ipv6"]["prefixes"][0]["length"], "56");
    assert_eq!(
        map["ipv6"]["delegated"],
        json!([{"address": "2001:db8:1201::1", "length": "64"}])
    );
}

#[test]
fn a_deconfig_is_state_unbound_with_no_sections() {
    let out = hook(
        &["udhcpc", "--print", "deconfig"],
        &[("MEDIC_SERVICE", "wan"), ("interface", "eth1")],
    );
    let map = printed(&out, 0);
    assert_eq!(map["state"], "unbound");
    assert!(
        map.get("ipv4").is_none() && map.get("ipv6").is_none(),
        "{map}"
    );
}

#[test]
fn a_variable_that_does_not_parse_is_named_and_its_section_left_out_exit_1() {
    let out = hook(
        &["udhcpc", "--print", "--service", "wan", "bound"],
        &[("ip", "192.0.2.300"), ("mask", "24")],
    );
    let map = printed(&out, 1);
    assert!(map.get("ipv4").is_none(), "never a half map: {map}");
    assert_eq!(map["raw"]["ip"], "192.0.2.300");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("hook for wan: ip: not an IPv4 address"),
        "{stderr}"
    );
    assert_eq!(map["errors"].as_array().map(Vec::len), Some(1), "{map}");
}

#[test]
fn no_service_is_exit_2_saying_how_to_name_one() {
    let out = hook(&["udhcpc", "--print", "bound"], &[("ip", "192.0.2.10")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--service NAME") && stderr.contains("MEDIC_SERVICE"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_event_it_does_not_know_publishes_nothing_and_says_so() {
    let out = hook(
        &["odhcp6c", "--print", "wan6", "exploded"],
        &[("MEDIC_SERVICE", "x")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("unknown event \"exploded\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn without_print_no_daemon_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let out = hook(
        &["udhcpc", "--state-dir", state, "deconfig"],
        &[("MEDIC_SERVICE", "wan")],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no medic daemon"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn without_print_a_daemon_that_never_answers_is_exit_3_well_before_the_usual_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Listening, never accepting: the connect succeeds and no answer ever comes.
    let _silent = UnixListener::bind(dir.path().join("control.sock")).unwrap();
    let started = Instant::now();
    let out = hook(
        &[
            "udhcpc",
            "--state-dir",
            dir.path().to_str().unwrap(),
            "deconfig",
        ],
        &[("MEDIC_SERVICE", "wan")],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // The hook waits 900 ms; other commands wait 10 s. 5 s leaves room for a loaded machine
    // and still tells the two apart.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
