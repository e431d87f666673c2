//! busybox udhcpc, as its `-s` script interface is documented (udhcpc(8), busybox's
//! `examples/udhcp/simple.script`): `$1` is `deconfig`, `bound`, `renew`, `nak` or
//! `leasefail`; the lease is in `ip`, `mask` (prefix length) or `subnet` (dotted), `router`,
//! `dns` (space-separated), `domain`, `lease` (seconds), beside `interface` and every other
//! option by name. The script inherits udhcpc's environment too.

use std::net::Ipv4Addr;

use super::{
    first_domain, mask_length, parse_length, shorten, Bad, Event, HookError, Ipv4Section, State,
    Vars,
};

pub(super) fn event(args: &[String], vars: &mut Vars<'_>) -> Result<Event, HookError> {
    let Some(reason) = args.first().filter(|a| !a.is_empty()).cloned() else {
        return Err(HookError::NoState {
            client: "udhcpc",
            what: "$1",
        });
    };
    let state = match reason.as_str() {
        "bound" | "renew" => State::Bound,
        // nak and leasefail come with no lease (udhcpc deconfigures after a nak).
        "deconfig" | "nak" | "leasefail" => State::Unbound,
        _ => {
            return Err(HookError::UnknownState {
                client: "udhcpc",
                what: "$1",
                state: shorten(&reason, 64),
            })
        }
    };
    let interface = vars.env.get("interface").cloned();
    let ipv4 = if state == State::Bound {
        ipv4_section(vars).ok().map(Ipv4Section::into_map)
    } else {
        None
    };
    Ok(Event {
        state,
        reason,
        interface,
        ipv4,
        ipv6: None,
    })
}

fn ipv4_section(vars: &mut Vars<'_>) -> Result<Ipv4Section, Bad> {
    let Some(value) = vars.get("ip")? else {
        return Err(vars.bad("ip", "", "missing in a bound event"));
    };
    let address = value
        .parse::<Ipv4Addr>()
        .map_err(|_| vars.bad("ip", value, "not an IPv4 address"))?;
    let prefix_len = match (vars.get("mask")?, vars.get("subnet")?) {
        (Some(mask), _) => parse_length(mask, 32)
            .ok_or_else(|| vars.bad("mask", mask, "not a prefix length (0-32)"))?,
        (None, Some(subnet)) => subnet
            .parse::<Ipv4Addr>()
            .ok()
            .and_then(mask_length)
            .map(|n| n as u8)
            .ok_or_else(|| vars.bad("subnet", subnet, "not a netmask"))?,
        (None, None) => return Err(vars.bad("subnet", "", "missing, and no mask")),
    };
    Ok(Ipv4Section {
        address,
        prefix_len,
        routers: vars.ipv4_list("router")?,
        dns: vars.ipv4_list("dns")?,
        domain: first_domain(vars, "domain")?,
        lease_s: vars.seconds("lease")?,
    })
}
