//! Each client's documented variables, as the client sets them, and what the map says.

use super::*;
use serde_json::json;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn run(client: Client, a: &[&str], e: &[(&str, &str)]) -> Normalised {
    normalise(client, &args(a), &env(e)).expect("an event the hook knows")
}

// --- udhcpc -------------------------------------------------------------------------------

#[test]
fn udhcpc_bound_gives_ipv4_from_ip_subnet_router_dns_domain_lease() {
    let n = run(
        Client::Udhcpc,
        &["bound"],
        &[
            ("interface", "eth1"),
            ("ip", "192.0.2.10"),
            ("subnet", "255.255.255.0"),
            ("router", "192.0.2.1 192.0.2.2"),
            ("dns", "198.51.100.53 198.51.100.54"),
            ("domain", "isp.example"),
            ("lease", "3600"),
            ("serverid", "192.0.2.1"),
            ("PATH", "/usr/bin:/bin"),
            ("MEDIC_SERVICE", "wan"),
        ],
    );
    assert!(n.errors.is_empty(), "{:?}", n.errors);
    assert!(n.publish);
    assert_eq!(
        n.to_value(),
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
                "lease-s": "3600",
            },
            "raw": {
                "interface": "eth1",
                "ip": "192.0.2.10",
                "subnet": "255.255.255.0",
                "router": "192.0.2.1 192.0.2.2",
                "dns": "198.51.100.53 198.51.100.54",
                "domain": "isp.example",
                "lease": "3600",
                "serverid": "192.0.2.1",
            },
        })
    );
}

#[test]
fn udhcpc_mask_is_the_prefix_length_and_wins_over_subnet() {
    let n = run(
        Client::Udhcpc,
        &["renew"],
        &[("ip", "10.0.0.5"), ("mask", "8"), ("subnet", "255.255.0.0")],
    );
    assert_eq!(n.map["ipv4"]["prefix-len"], "8");
    assert_eq!(n.map["ipv4"]["dns"], json!([]));
    let ipv4 = n.map["ipv4"].as_object().unwrap();
    assert!(
        !ipv4.contains_key("router"),
        "no router given, none made up"
    );
    assert!(!ipv4.contains_key("domain"));
    assert!(!ipv4.contains_key("lease-s"));
}

#[test]
fn udhcpc_deconfig_nak_and_leasefail_are_unbound_with_no_sections() {
    for event in ["deconfig", "nak", "leasefail"] {
        let n = run(
            Client::Udhcpc,
            &[event],
            &[
                ("interface", "eth1"),
                ("ip", "192.0.2.10"),
                ("message", "no"),
            ],
        );
        assert_eq!(n.map["state"], "unbound", "{event}");
        assert_eq!(n.map["reason"], event);
        assert!(!n.map.contains_key("ipv4"), "{event}");
        assert!(!n.map.contains_key("ipv6"), "{event}");
        assert!(n.publish);
    }
}

#[test]
fn udhcpc_without_an_event_or_with_an_unknown_one_is_an_error_naming_it() {
    let err = normalise(Client::Udhcpc, &[], &env(&[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "udhcpc: no $1; is this run by udhcpc as its script?"
    );
    let err = normalise(Client::Udhcpc, &args(&["frobnicate"]), &env(&[])).unwrap_err();
    assert!(err.to_string().contains("\"frobnicate\""), "{err}");
}

#[test]
fn udhcpc_a_bad_variable_is_named_kept_in_raw_and_leaves_ipv4_out() {
    let n = run(
        Client::Udhcpc,
        &["bound"],
        &[
            ("ip", "192.0.2.10"),
            ("subnet", "255.255.255.0"),
            ("dns", "198.51.100.53 not-an-address"),
        ],
    );
    assert_eq!(n.map["state"], "bound");
    assert!(!n.map.contains_key("ipv4"), "never a half map");
    assert_eq!(n.map["raw"]["dns"], "198.51.100.53 not-an-address");
    assert_eq!(n.errors.len(), 1, "{:?}", n.errors);
    assert!(
        n.errors[0].starts_with("dns: \"not-an-address\" is not an IPv4 address"),
        "{:?}",
        n.errors
    );
    assert_eq!(n.map["errors"], json!(n.errors));
}

#[test]
fn a_netmask_with_holes_is_not_a_prefix_length() {
    let n = run(
        Client::Udhcpc,
        &["bound"],
        &[("ip", "192.0.2.10"), ("subnet", "255.0.255.0")],
    );
    assert!(!n.map.contains_key("ipv4"));
    assert!(
        n.errors[0].starts_with("subnet: not a netmask"),
        "{:?}",
        n.errors
    );
    assert_eq!(mask_length(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
    assert_eq!(mask_length(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
    assert_eq!(mask_length(Ipv4Addr::new(255, 255, 254, 0)), Some(23));
}

// --- dhcpcd -------------------------------------------------------------------------------

#[test]
fn dhcpcd_bound_gives_ipv4_from_the_new_variables() {
    let n = run(
        Client::Dhcpcd,
        &[],
        &[
            ("reason", "BOUND"),
            ("interface", "eth0"),
            ("protocol", "dhcp"),
            ("new_ip_address", "203.0.113.7"),
            ("new_subnet_cidr", "22"),
            ("new_subnet_mask", "255.255.252.0"),
            ("new_routers", "203.0.113.1"),
            ("new_domain_name_servers", "203.0.113.53"),
            ("new_domain_name", "example.net"),
            ("new_dhcp_lease_time", "86400"),
            ("PATH", "/usr/bin"),
        ],
    );
    assert!(n.errors.is_empty(), "{:?}", n.errors);
    assert_eq!(
        n.map["ipv4"],
        json!({
            "address": "203.0.113.7",
            "prefix-len": "22",
            "router": "203.0.113.1",
            "dns": ["203.0.113.53"],
            "domain": "example.net",
            "lease-s": "86400",
        })
    );
    assert!(!n.map.contains_key("ipv6"));
    assert!(!n.map["raw"].as_object().unwrap().contains_key("PATH"));
    assert_eq!(n.map["interface"], "eth0");
}

/// The environment of a dhcpcd BOUND6 with two delegated prefixes (one withdrawn), an
/// address and DNS, named as `dhcpcd --variables` and dhcpcd-definitions.conf name them.
fn dhcpcd_bound6() -> Vec<(&'static str, &'static str)> {
    vec![
        ("reason", "BOUND6"),
        ("interface", "eth0"),
        ("protocol", "dhcp6"),
        ("new_dhcp6_ia_na1_iaid", "00000001"),
        ("new_dhcp6_ia_na1_ia_addr1", "2001:db8:0:1::1234"),
        ("new_dhcp6_ia_na1_ia_addr1_pltime", "3600"),
        ("new_dhcp6_ia_na1_ia_addr1_vltime", "7200"),
        ("new_dhcp6_ia_pd1_iaid", "00000002"),
        ("new_dhcp6_ia_pd1_prefix1", "2001:db8:1200::"),
        ("new_dhcp6_ia_pd1_prefix1_length", "56"),
        ("new_dhcp6_ia_pd1_prefix1_pltime", "1800"),
        ("new_dhcp6_ia_pd1_prefix1_vltime", "3600"),
        ("new_dhcp6_ia_pd1_prefix2", "2001:db8:ff00::"),
        ("new_dhcp6_ia_pd1_prefix2_length", "56"),
        ("new_dhcp6_ia_pd1_prefix2_pltime", "0"),
        ("new_dhcp6_ia_pd1_prefix2_vltime", "0"),
        ("new_dhcp6_name_servers", "2001:db8::53 2001:DB8:0:0::54"),
        ("new_dhcp6_domain_search", "isp.example lan.example"),
        (
            "new_delegated_dhcp6_prefix",
            "2001:db8:1200::1/64 2001:db8:1201::1/64",
        ),
    ]
}

#[test]
fn dhcpcd_bound6_gives_ipv6_from_the_ia_pd_prefix_family_and_leaves_out_withdrawals() {
    let n = run(Client::Dhcpcd, &[], &dhcpcd_bound6());
    assert!(n.errors.is_empty(), "{:?}", n.errors);
    assert!(!n.map.contains_key("ipv4"));
    assert_eq!(
        n.map["ipv6"],
        json!({
            "addresses": [{"address": "2001:db8:0:1::1234", "length": "128",
                           "preferred-s": "3600", "valid-s": "7200"}],
            "prefixes": [{"address": "2001:db8:1200::", "length": "56",
                          "preferred-s": "1800", "valid-s": "3600"}],
            "dns": ["2001:db8::53", "2001:db8::54"],
            "domains": ["isp.example", "lan.example"],
            "delegated": [{"address": "2001:db8:1200::1", "length": "64"},
                          {"address": "2001:db8:1201::1", "length": "64"}],
        })
    );
    // The withdrawn prefix is still in raw, as the client gave it.
    assert_eq!(n.map["raw"]["new_dhcp6_ia_pd1_prefix2_vltime"], "0");
}

#[test]
fn dhcpcd_prefixes_are_in_numeric_order_across_ia_pds() {
    let mut e = dhcpcd_bound6();
    e.extend([
        ("new_dhcp6_ia_pd10_prefix1", "2001:db8:a::"),
        ("new_dhcp6_ia_pd10_prefix1_length", "48"),
        ("new_dhcp6_ia_pd10_prefix1_pltime", "10"),
        ("new_dhcp6_ia_pd10_prefix1_vltime", "20"),
        ("new_dhcp6_ia_pd2_prefix1", "2001:db8:2::"),
        ("new_dhcp6_ia_pd2_prefix1_length", "48"),
        ("new_dhcp6_ia_pd2_prefix1_pltime", "4294967295"),
        ("new_dhcp6_ia_pd2_prefix1_vltime", "4294967295"),
    ]);
    let n = run(Client::Dhcpcd, &[], &e);
    let addresses: Vec<&str> = n.map["ipv6"]["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        ["2001:db8:1200::", "2001:db8:2::", "2001:db8:a::"]
    );
    assert_eq!(n.map["ipv6"]["prefixes"][1]["valid-s"], "4294967295");
}

#[test]
fn dhcpcd_a_prefix_without_its_length_leaves_ipv6_out_and_names_the_variable() {
    let e: Vec<_> = dhcpcd_bound6()
        .into_iter()
        .filter(|(k, _)| *k != "new_dhcp6_ia_pd1_prefix1_length")
        .chain([("new_dhcp6_name_servers", "2001:db8::53 ::g")])
        .collect();
    let n = run(Client::Dhcpcd, &[], &e);
    assert!(!n.map.contains_key("ipv6"), "never a half map");
    assert_eq!(n.map["state"], "bound");
    assert_eq!(
        n.errors.len(),
        2,
        "every bad variable is named: {:?}",
        n.errors
    );
    assert!(n.errors[0].starts_with("new_dhcp6_ia_pd1_prefix1_length: missing"));
    assert!(n.errors[1].starts_with("new_dhcp6_name_servers: \"::g\""));
}

#[test]
fn dhcpcd_bad_lengths_and_lifetimes_are_named() {
    for (name, value) in [
        ("new_dhcp6_ia_pd1_prefix1_length", "129"),
        ("new_dhcp6_ia_pd1_prefix1_vltime", "-1"),
        ("new_dhcp6_ia_pd1_prefix1_pltime", "4294967296"),
        ("new_dhcp6_ia_pd1_prefix1", "2001:db8::/56"),
        ("new_delegated_dhcp6_prefix", "2001:db8:1200::1"),
    ] {
        let mut e = dhcpcd_bound6();
        e.retain(|(k, _)| *k != name);
        e.push((name, value));
        let n = run(Client::Dhcpcd, &[], &e);
        assert!(!n.map.contains_key("ipv6"), "{name}={value}");
        assert!(
            n.errors
                .iter()
                .any(|err| err.starts_with(&format!("{name}: "))),
            "{name}={value}: {:?}",
            n.errors
        );
        assert_eq!(n.map["raw"][name], value);
    }
}

#[test]
fn dhcpcd_expire_stop_and_nocarrier_are_unbound_and_notices_are_not_published() {
    for reason in [
        "EXPIRE",
        "EXPIRE6",
        "NAK",
        "STOP",
        "RELEASE6",
        "NOCARRIER",
        "DEPARTED",
    ] {
        let n = run(
            Client::Dhcpcd,
            &[],
            &[("reason", reason), ("old_ip_address", "192.0.2.1")],
        );
        assert_eq!(n.map["state"], "unbound", "{reason}");
        assert!(!n.map.contains_key("ipv4") && !n.map.contains_key("ipv6"));
        assert!(n.publish, "{reason}");
    }
    for reason in ["PREINIT", "CARRIER", "ROUTERADVERT", "TEST"] {
        let n = run(Client::Dhcpcd, &[], &[("reason", reason)]);
        assert_eq!(n.map["state"], "notice", "{reason}");
        assert!(!n.publish, "{reason} must not wipe a lease");
    }
    let n = run(Client::Dhcpcd, &[], &[("reason", "IPV4LL")]);
    assert_eq!(n.map["state"], "unbound", "an IPV4LL address dropped");
}

#[test]
fn dhcpcd_without_reason_is_an_error() {
    let err = normalise(Client::Dhcpcd, &[], &env(&[("interface", "eth0")])).unwrap_err();
    assert_eq!(
        err,
        HookError::NoState {
            client: "dhcpcd",
            what: "$reason"
        }
    );
}

// --- odhcp6c ------------------------------------------------------------------------------

#[test]
fn odhcp6c_entries_with_extra_fields_after_the_lifetimes() {
    let n = run(
        Client::Odhcp6c,
        &["wan6", "bound"],
        &[
            // Newer odhcp6c: ,t1,t2 then class= and excluded=; older: class=/excluded= only.
            (
                "PREFIXES",
                "2001:db8:1200::/56,1800,3600,900,1440,class=00000002,excluded=2001:db8:1200::/64 \
                 2001:db8:3400::/60,100,200,excluded=2001:db8:3400::/64,class=00000003 \
                 2001:db8:ff00::/56,0,0",
            ),
            ("ADDRESSES", "2001:db8::1234/128,3600,7200,1800,2880"),
            ("RA_ADDRESSES", "2001:db8:0:1:aaaa::1/64,604800,2592000"),
            ("RDNSS", "2001:db8::53"),
            ("RA_DNS", "2001:db8::53 2001:db8::54"),
            ("DOMAINS", "isp.example"),
            ("RA_DOMAINS", "isp.example ra.example"),
            ("RA_MTU", "1492"),
            ("OPTION_23", "20010db8000000000000000000000053"),
            ("SERVER", "fe80::1"),
            ("PATH", "/usr/sbin:/usr/bin"),
            ("HOME", "/root"),
        ],
    );
    assert!(n.errors.is_empty(), "{:?}", n.errors);
    assert_eq!(n.map["interface"], "wan6");
    assert_eq!(n.map["state"], "bound");
    assert_eq!(
        n.map["ipv6"],
        json!({
            "addresses": [
                {"address": "2001:db8::1234", "length": "128", "preferred-s": "3600", "valid-s": "7200"},
                {"address": "2001:db8:0:1:aaaa::1", "length": "64", "preferred-s": "604800", "valid-s": "2592000"},
            ],
            "prefixes": [
                {"address": "2001:db8:1200::", "length": "56", "preferred-s": "1800", "valid-s": "3600"},
                {"address": "2001:db8:3400::", "length": "60", "preferred-s": "100", "valid-s": "200"},
            ],
            "dns": ["2001:db8::53", "2001:db8::54"],
            "domains": ["isp.example", "ra.example"],
            "delegated": [],
        })
    );
    let raw = n.map["raw"].as_object().unwrap();
    assert_eq!(raw["ra_mtu"], "1492", "odhcp6c's names in lower case");
    assert_eq!(raw["option_23"], "20010db8000000000000000000000053");
    assert!(raw["prefixes"].as_str().unwrap().contains("excluded="));
    assert!(!raw.contains_key("path") && !raw.contains_key("home"));
    for key in n.map["raw"].as_object().unwrap().keys() {
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
            "{key} is not a §9 key"
        );
    }
}

#[test]
fn odhcp6c_only_withdrawn_prefixes_leave_prefixes_empty() {
    let n = run(
        Client::Odhcp6c,
        &["wan6", "updated"],
        &[("PREFIXES", "2001:db8:1200::/56,0,0,class=00000002")],
    );
    assert_eq!(n.map["ipv6"]["prefixes"], json!([]));
    assert!(n.errors.is_empty());
}

#[test]
fn odhcp6c_a_bad_entry_is_named_and_leaves_ipv6_out() {
    for (entries, why) in [
        ("2001:db8:1200::/56,1800", "valid lifetime \"\""),
        ("2001:db8:1200::/56,x,3600", "preferred lifetime \"x\""),
        ("2001:db8:1200::,1800,3600", "is not addr/len"),
        ("2001:db8:1200::/200,1800,3600", "\"200\" is not a length"),
        ("zz::/56,1800,3600", "\"zz::\" is not an IPv6 address"),
    ] {
        let n = run(
            Client::Odhcp6c,
            &["wan6", "bound"],
            &[("PREFIXES", entries), ("RDNSS", "2001:db8::53")],
        );
        assert!(!n.map.contains_key("ipv6"), "{entries}");
        assert_eq!(n.errors.len(), 1, "{entries}: {:?}", n.errors);
        assert!(
            n.errors[0].starts_with("PREFIXES: ") && n.errors[0].contains(why),
            "{entries}: {:?}",
            n.errors
        );
        assert_eq!(n.map["raw"]["prefixes"], entries);
    }
}

#[test]
fn odhcp6c_started_unbound_and_stopped_are_unbound() {
    for state in ["started", "unbound", "stopped"] {
        let n = run(
            Client::Odhcp6c,
            &["wan6", state],
            &[("RA_DNS", "2001:db8::53")],
        );
        assert_eq!(n.map["state"], "unbound", "{state}");
        assert!(!n.map.contains_key("ipv6"));
        assert_eq!(n.map["raw"]["ra_dns"], "2001:db8::53");
    }
    let err = normalise(Client::Odhcp6c, &args(&["wan6"]), &env(&[])).unwrap_err();
    assert!(err.to_string().contains("no $2"), "{err}");
}

// --- limits -------------------------------------------------------------------------------

#[test]
fn a_huge_variable_is_named_left_out_of_raw_and_of_its_section() {
    let huge = format!("2001:db8::53 {}", "2001:db8::54 ".repeat(2000));
    let n = run(
        Client::Odhcp6c,
        &["wan6", "bound"],
        &[("RDNSS", &huge), ("RA_MTU", "1500")],
    );
    assert!(!n.map.contains_key("ipv6"));
    assert!(!n.map["raw"].as_object().unwrap().contains_key("rdnss"));
    assert_eq!(n.map["raw"]["ra_mtu"], "1500");
    assert_eq!(n.errors.len(), 1, "{:?}", n.errors);
    assert!(n.errors[0].starts_with("RDNSS: 26013 bytes, more than the 16384"));

    // One nobody reads: named once, as left out of raw.
    let n = run(
        Client::Udhcpc,
        &["deconfig"],
        &[("opt250", &"ab".repeat(MAX_VALUE_BYTES))],
    );
    assert_eq!(n.errors.len(), 1, "{:?}", n.errors);
    assert!(n.errors[0].contains("left out of raw"), "{:?}", n.errors);
}

#[test]
fn raw_is_bounded_in_count_and_bytes() {
    let names: Vec<String> = (0..600).map(|i| format!("opt{i}")).collect();
    let value = "x".repeat(200);
    let e: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    let n = run(Client::Udhcpc, &["deconfig"], &e);
    let raw = n.map["raw"].as_object().unwrap();
    assert!(raw.len() <= MAX_RAW_VARIABLES);
    let bytes: usize = raw
        .iter()
        .map(|(k, v)| k.len() + v.as_str().unwrap().len())
        .sum();
    assert!(bytes <= MAX_RAW_BYTES, "{bytes}");
    assert_eq!(n.errors.len(), 1, "{:?}", n.errors);
    assert!(n.errors[0].starts_with("raw: "), "{:?}", n.errors);
}

#[test]
fn too_many_entries_in_a_list_is_an_error_naming_it() {
    let many = vec!["192.0.2.53"; MAX_ENTRIES + 1].join(" ");
    let n = run(
        Client::Udhcpc,
        &["bound"],
        &[("ip", "192.0.2.10"), ("mask", "24"), ("dns", &many)],
    );
    assert!(!n.map.contains_key("ipv4"));
    assert!(
        n.errors[0].starts_with("dns: 65 entries, more than 64"),
        "{:?}",
        n.errors
    );
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let a = serde_json::to_string(&run(Client::Dhcpcd, &[], &dhcpcd_bound6()).to_value()).unwrap();
    let mut reversed = dhcpcd_bound6();
    reversed.reverse();
    let b = serde_json::to_string(&run(Client::Dhcpcd, &[], &reversed).to_value()).unwrap();
    assert_eq!(a, b);
    assert!(
        a.starts_with("{\"client\":\"dhcpcd\",\"interface\":\"eth0\",\"ipv6\":"),
        "{a}"
    );
}

#[test]
fn dhcpcd_delegated6_for_a_downstream_interface_is_printed_not_published() {
    let env: BTreeMap<String, String> = [
        ("reason", "DELEGATED6"),
        ("interface", "lan"),
        ("new_delegated_dhcp6_prefix", "2001:db8:100::1/64"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let n = normalise(Client::Dhcpcd, &[], &env).unwrap();
    assert!(!n.publish, "it would replace the uplink's map");
    assert_eq!(n.map["state"], "bound");
    assert_eq!(n.map["interface"], "lan");
}
