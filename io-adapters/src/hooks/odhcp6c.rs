//! OpenWrt's odhcp6c, as its README and `src/script.c` define the state script: `$1` the
//! interface, `$2` the state (`started`, `bound`, `informed`, `updated`, `ra-updated`,
//! `rebound`, `unbound`, `stopped`). `ADDRESSES`, `PREFIXES` and `RA_ADDRESSES` are
//! space-separated entries `addr/len,preferred,valid` followed by more comma-separated fields
//! that vary with the version (`,t1,t2` in newer ones; `,class=…`, `,excluded=addr/len`):
//! those are kept in `raw` only. `PREFIXES` and `ADDRESSES` are set only while bound; a prefix
//! with valid lifetime 0 is passed on purpose, to withdraw it. `RDNSS`, `RA_DNS` are
//! space-separated addresses, `DOMAINS`, `RA_DOMAINS` domain names. The script inherits
//! odhcp6c's environment too.

use std::net::Ipv6Addr;

use serde_json::Value;

use super::{
    lease_entry, parse_ipv6_prefix, parse_u32, shorten, Bad, Event, HookError, Ipv6Section, State,
    Vars,
};

/// The variables odhcp6c sets (README "State Script", `script_call`), plus the prefixes of
/// the families (`OPTION_23`, `RA_MTU`) and a few of older versions (`USERPREFIX`, `CER`).
const NAMES: &[&str] = &[
    "SERVER",
    "RDNSS",
    "DOMAINS",
    "SNTP_IP",
    "SNTP_FQDN",
    "NTP_IP",
    "NTP_FQDN",
    "SIP_IP",
    "SIP_DOMAIN",
    "PREFIXES",
    "ADDRESSES",
    "AFTR",
    "MAPE",
    "MAPT",
    "LW4O6",
    "CAPTIVE_PORTAL_URI",
    "PASSTHRU",
    "USERPREFIX",
    "CER",
];

/// Whether odhcp6c sets `name` (rather than it being inherited).
pub(super) fn is_variable(name: &str) -> bool {
    NAMES.contains(&name)
        || name.strip_prefix("RA_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        })
        || name
            .strip_prefix("OPTION_")
            .is_some_and(|n| parse_u32(n).is_some_and(|n| n <= 65535))
}

pub(super) fn event(args: &[String], vars: &mut Vars<'_>) -> Result<Event, HookError> {
    let Some(reason) = args.get(1).filter(|a| !a.is_empty()).cloned() else {
        return Err(HookError::NoState {
            client: "odhcp6c",
            what: "$2",
        });
    };
    let state = match reason.as_str() {
        "bound" | "informed" | "updated" | "ra-updated" | "rebound" => State::Bound,
        "started" | "unbound" | "stopped" => State::Unbound,
        _ => {
            return Err(HookError::UnknownState {
                client: "odhcp6c",
                what: "$2",
                state: shorten(&reason, 64),
            })
        }
    };
    let interface = args.first().filter(|a| !a.is_empty()).cloned();
    let ipv6 = if state == State::Bound {
        ipv6_section(vars).ok().map(Ipv6Section::into_map)
    } else {
        None
    };
    Ok(Event {
        state,
        reason,
        interface,
        ipv4: None,
        ipv6,
    })
}

fn ipv6_section(vars: &mut Vars<'_>) -> Result<Ipv6Section, Bad> {
    // Every check runs, so that each bad variable is named, not only the first.
    let addresses = entries(vars, "ADDRESSES");
    let ra_addresses = entries(vars, "RA_ADDRESSES");
    let prefixes = entries(vars, "PREFIXES");
    let rdnss = vars.ipv6_list("RDNSS");
    let ra_dns = vars.ipv6_list("RA_DNS");
    let domains = vars.domain_list("DOMAINS");
    let ra_domains = vars.domain_list("RA_DOMAINS");
    let mut section = Ipv6Section {
        addresses: addresses?,
        prefixes: prefixes?,
        dns: rdnss?,
        domains: domains?,
        delegated: Vec::new(),
    };
    section.addresses.extend(ra_addresses?);
    section.dns.extend(ra_dns?);
    section.domains.extend(ra_domains?);
    Ok(section)
}

/// The entries of `name`, `addr/len,preferred,valid[,more…]`; valid 0 is a withdrawal.
fn entries(vars: &mut Vars<'_>, name: &str) -> Result<Vec<Value>, Bad> {
    let words = vars.words(name)?;
    let mut out = Vec::with_capacity(words.len());
    for word in words {
        let (address, length, preferred_s, valid_s) =
            entry(word).map_err(|why| vars.bad(name, word, why))?;
        if valid_s > 0 {
            out.push(lease_entry(address, length, preferred_s, valid_s));
        }
    }
    Ok(out)
}

fn entry(word: &str) -> Result<(Ipv6Addr, u8, u32, u32), String> {
    let mut fields = word.split(',');
    let (address, length) = parse_ipv6_prefix(fields.next().unwrap_or(""))?;
    let mut lifetime = |what: &str| {
        let field = fields.next().unwrap_or("");
        parse_u32(field)
            .ok_or_else(|| format!("{what} lifetime {field:?} is not a number of seconds"))
    };
    let preferred_s = lifetime("preferred")?;
    let valid_s = lifetime("valid")?;
    // What follows (t1, t2, class=, excluded=) is not part of the normalised entry.
    Ok((address, length, preferred_s, valid_s))
}
