//! dhcpcd, as `dhcpcd-run-hooks(8)` documents its script's environment: `$reason`,
//! `$interface`, DHCPv4 `new_*` (`new_ip_address`, `new_subnet_cidr`, `new_routers`,
//! `new_domain_name_servers`, `new_domain_name`, `new_dhcp_lease_time`) and DHCPv6
//! `new_dhcp6_*` (`new_dhcp6_ia_na1_ia_addr1[_pltime|_vltime]`,
//! `new_dhcp6_ia_pd1_prefix1[_length|_pltime|_vltime]`, `new_dhcp6_name_servers`,
//! `new_dhcp6_domain_search`, `new_delegated_dhcp6_prefix`). dhcpcd clears the environment
//! but for PATH and runs its script with no arguments. One event carries one protocol: a
//! DHCPv4 event has no `new_dhcp6_*`, a DHCPv6 one no `new_ip_address`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use super::{
    first_domain, lease_entry, mask_length, parse_ipv6_prefix, parse_length, shorten, text, Bad,
    Event, HookError, Ipv4Section, Ipv6Section, State, Vars, MAX_ENTRIES,
};

/// Which protocol an event is about, and what it means.
fn classify(reason: &str) -> Option<(State, bool)> {
    // (state, is DHCPv6)
    Some(match reason {
        "BOUND" | "RENEW" | "REBIND" | "REBOOT" | "INFORM" | "STATIC" | "TIMEOUT" | "IPV4LL" => {
            (State::Bound, false)
        }
        "BOUND6" | "RENEW6" | "REBIND6" | "REBOOT6" | "INFORM6" | "DELEGATED6" | "STATIC6"
        | "TIMEOUT6" => (State::Bound, true),
        "EXPIRE" | "NAK" | "RELEASE" | "STOP" | "FAIL" | "NOCARRIER" | "DEPARTED" | "STOPPED" => {
            (State::Unbound, false)
        }
        "EXPIRE6" | "RELEASE6" | "STOP6" => (State::Unbound, true),
        "PREINIT" | "CARRIER" | "NOCARRIER_ROAMING" | "ROUTERADVERT" | "RECONFIGURE"
        | "3RDPARTY" | "TEST" | "UNKNOWN" => (State::Notice, false),
        _ => return None,
    })
}

pub(super) fn event(vars: &mut Vars<'_>) -> Result<Event, HookError> {
    let reason = match vars.env.get("reason") {
        Some(r) if !r.is_empty() => r.clone(),
        _ => {
            return Err(HookError::NoState {
                client: "dhcpcd",
                what: "$reason",
            })
        }
    };
    let Some((mut state, v6)) = classify(&reason) else {
        return Err(HookError::UnknownState {
            client: "dhcpcd",
            what: "$reason",
            state: shorten(&reason, 64),
        });
    };
    // IPV4LL runs both when an address is taken and when it is dropped (then as old_*).
    if reason == "IPV4LL" && !vars.env.contains_key("new_ip_address") {
        state = State::Unbound;
    }
    let interface = vars.env.get("interface").cloned();
    let (mut ipv4, mut ipv6) = (None, None);
    if state == State::Bound {
        if v6 {
            ipv6 = ipv6_section(vars).ok().map(Ipv6Section::into_map);
        } else {
            ipv4 = ipv4_section(vars).ok().map(Ipv4Section::into_map);
        }
    }
    Ok(Event {
        state,
        reason,
        interface,
        ipv4,
        ipv6,
    })
}

fn ipv4_section(vars: &mut Vars<'_>) -> Result<Ipv4Section, Bad> {
    let Some(value) = vars.get("new_ip_address")? else {
        return Err(vars.bad("new_ip_address", "", "missing in a bound event"));
    };
    let address = value
        .parse::<Ipv4Addr>()
        .map_err(|_| vars.bad("new_ip_address", value, "not an IPv4 address"))?;
    let prefix_len = match (vars.get("new_subnet_cidr")?, vars.get("new_subnet_mask")?) {
        (Some(cidr), _) => parse_length(cidr, 32)
            .ok_or_else(|| vars.bad("new_subnet_cidr", cidr, "not a prefix length (0-32)"))?,
        (None, Some(mask)) => mask
            .parse::<Ipv4Addr>()
            .ok()
            .and_then(mask_length)
            .map(|n| n as u8)
            .ok_or_else(|| vars.bad("new_subnet_mask", mask, "not a netmask"))?,
        (None, None) => {
            return Err(vars.bad("new_subnet_cidr", "", "missing, and no new_subnet_mask"))
        }
    };
    Ok(Ipv4Section {
        address,
        prefix_len,
        routers: vars.ipv4_list("new_routers")?,
        dns: vars.ipv4_list("new_domain_name_servers")?,
        domain: first_domain(vars, "new_domain_name")?,
        lease_s: vars.seconds("new_dhcp_lease_time")?,
    })
}

fn ipv6_section(vars: &mut Vars<'_>) -> Result<Ipv6Section, Bad> {
    let mut section = Ipv6Section::default();
    // Every check runs, so that each bad variable is named, not only the first.
    let addresses = indexed(vars, "new_dhcp6_ia_na", "_ia_addr")
        .and_then(|keys| entries(vars, &keys, Kind::Address));
    let prefixes = indexed(vars, "new_dhcp6_ia_pd", "_prefix")
        .and_then(|keys| entries(vars, &keys, Kind::Prefix));
    let dns = vars.ipv6_list("new_dhcp6_name_servers");
    let domains = vars.domain_list("new_dhcp6_domain_search");
    let delegated = delegated(vars);
    section.addresses = addresses?;
    section.prefixes = prefixes?;
    section.dns = dns?;
    section.domains = domains?;
    section.delegated = delegated?;
    Ok(section)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Address,
    Prefix,
}

/// The names `{head}N{mid}M` (digits only for N and M, nothing after), in numeric order:
/// `new_dhcp6_ia_pd1_prefix1`, `new_dhcp6_ia_pd1_prefix2`, `new_dhcp6_ia_pd2_prefix1`, ….
fn indexed(vars: &mut Vars<'_>, head: &str, mid: &str) -> Result<Vec<String>, Bad> {
    let mut found: BTreeMap<(u32, u32), String> = BTreeMap::new();
    for name in vars.names() {
        let Some(rest) = name.strip_prefix(head) else {
            continue;
        };
        let Some((n, m)) = rest.split_once(mid) else {
            continue;
        };
        if let (Some(n), Some(m)) = (index(n), index(m)) {
            found.insert((n, m), name.to_string());
        }
    }
    if found.len() > MAX_ENTRIES {
        let name = format!("{head}*{mid}*");
        let why = format!("{} entries, more than {MAX_ENTRIES}", found.len());
        return Err(vars.bad(&name, "", why));
    }
    Ok(found.into_values().collect())
}

/// A 1-based index: digits, no leading zero.
fn index(s: &str) -> Option<u32> {
    (!s.starts_with('0'))
        .then(|| super::parse_u32(s))
        .flatten()
        .filter(|&n| n > 0)
}

/// The addresses or prefixes named `keys`, with their `_length` (prefixes; addresses are /128),
/// `_pltime` and `_vltime`; those with a valid lifetime of 0 are withdrawals, left out.
fn entries(vars: &mut Vars<'_>, keys: &[String], kind: Kind) -> Result<Vec<Value>, Bad> {
    let mut out = Vec::new();
    let mut bad = None;
    for key in keys {
        match entry(vars, key, kind) {
            Ok(Some(entry)) => out.push(entry),
            Ok(None) => {}
            Err(b) => bad = Some(b),
        }
    }
    match bad {
        Some(b) => Err(b),
        None => Ok(out),
    }
}

fn entry(vars: &mut Vars<'_>, key: &str, kind: Kind) -> Result<Option<Value>, Bad> {
    let value = vars.get(key)?.unwrap_or("");
    let address = value
        .parse::<Ipv6Addr>()
        .map_err(|_| vars.bad(key, value, "not an IPv6 address"))?;
    let length = match kind {
        Kind::Address => 128,
        Kind::Prefix => {
            let name = format!("{key}_length");
            let Some(len) = vars.get(&name)? else {
                return Err(vars.bad(&name, "", "missing"));
            };
            parse_length(len, 128).ok_or_else(|| vars.bad(&name, len, "not a length (0-128)"))?
        }
    };
    let lifetime = |vars: &mut Vars<'_>, suffix: &str| {
        let name = format!("{key}_{suffix}");
        match vars.seconds(&name)? {
            Some(s) => Ok(s),
            None => Err(vars.bad(&name, "", "missing")),
        }
    };
    let preferred_s = lifetime(vars, "pltime")?;
    let valid_s = lifetime(vars, "vltime")?;
    if valid_s == 0 {
        return Ok(None);
    }
    Ok(Some(lease_entry(address, length, preferred_s, valid_s)))
}

/// `new_delegated_dhcp6_prefix`: space-separated `addr/len`.
fn delegated(vars: &mut Vars<'_>) -> Result<Vec<Value>, Bad> {
    let name = "new_delegated_dhcp6_prefix";
    let words = vars.words(name)?;
    let mut out = Vec::with_capacity(words.len());
    for word in words {
        let (address, length) = parse_ipv6_prefix(word).map_err(|why| vars.bad(name, word, why))?;
        let mut entry = Map::new();
        entry.insert("address".into(), text(&address.to_string()));
        entry.insert("length".into(), text(&length.to_string()));
        out.push(Value::Object(entry));
    }
    Ok(out)
}
