//! The DHCP clients' script interface (`medic hook dhcpcd|udhcpc|odhcp6c`), normalised: the
//! arguments and environment a client runs its script with become one output map, the same
//! whichever client it was (DESIGN.md §9). Pure: no I/O, the caller hands in `args` and `env`.
//!
//! # The map
//!
//! Every leaf is a string (§9: output values are strings, lists or maps), so a number is its
//! decimal text (`"3600"`; a lifetime of `"4294967295"` is the protocol's "infinite"). Keys are
//! in byte order (a `serde_json::Map` is a `BTreeMap`), so the same input gives the same bytes.
//!
//! ```text
//! state      "bound" | "unbound" | "notice"
//! reason     the client's own word for the event ("BOUND6", "renew", "ra-updated")
//! client     "dhcpcd" | "udhcpc" | "odhcp6c"
//! interface  the interface, when the client said (absent otherwise)
//! ipv4       {address, prefix-len, router?, dns: [..], domain?, lease-s?}   (bound, v4 only)
//! ipv6       {addresses: [A..], prefixes: [A..], dns: [..], domains: [..], delegated: [P..]}
//!            A = {address, length, preferred-s, valid-s}; P = {address, length}
//! raw        every variable the client set, by name, value as given
//! errors     ["NAME: why", ..]   (only when some variable did not parse)
//! ```
//!
//! * `bound`: the client holds a configuration and the map carries what this event gave:
//!   `ipv4` for a DHCPv4 event, `ipv6` for a DHCPv6 one. `unbound`: it holds none (deconfig,
//!   expire, nak, release, stop, unbound, …): no `ipv4`, no `ipv6`. `notice`: an event that
//!   changes nothing (dhcpcd's PREINIT, CARRIER, ROUTERADVERT, …): the hook prints it with
//!   `--print` but does not publish it, so it never wipes a lease. Nor is dhcpcd's
//!   `DELEGATED6` (about a downstream interface numbered from the delegation, `ia_pd 1
//!   lan/0/64`: it would replace the uplink's map, whose `prefixes` hold the delegation).
//! * `router`, `domain` and `lease-s` are absent when the client gave none, so a template that
//!   needs one fails (and keeps its old file) instead of rendering an empty value.
//! * A prefix or address with valid lifetime 0 is a withdrawal: it is left out.
//! * `delegated` is dhcpcd's `new_delegated_dhcp6_prefix`: what it assigned downstream from a
//!   delegation, without lifetimes; empty for the other clients.
//!
//! # Bad input: never a half map
//!
//! A section (`ipv4`, `ipv6`) is all or nothing. A variable it is built from that does not
//! parse, is too large or has too many entries leaves the whole section out; the variable is
//! still in `raw` (unless too large), and `errors` names it and says why. So a consumer sees
//! either every prefix the client gave or none, never two of three. `state`, `reason`, `raw`
//! are always there. An event with no state at all, or one the hook does not know, is an
//! [`HookError`]: nothing is published.
//!
//! # Limits
//!
//! A variable's value may have [`MAX_VALUE_BYTES`]; `raw` holds at most [`MAX_RAW_VARIABLES`]
//! variables and [`MAX_RAW_BYTES`] in all (names and values, in name order: the rest is left
//! out and one error says so); a list (DNS servers, prefixes) at most [`MAX_ENTRIES`] entries.

mod dhcpcd;
mod odhcp6c;
mod udhcpc;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

/// The largest value of one variable, in bytes (a hex DHCPv6 option of a full packet fits).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// The most variables `raw` holds.
pub const MAX_RAW_VARIABLES: usize = 256;
/// The most bytes (names and values) `raw` holds.
pub const MAX_RAW_BYTES: usize = 64 * 1024;
/// The most entries of one list (servers, domains, addresses, prefixes).
pub const MAX_ENTRIES: usize = 64;

/// A DHCP client whose script interface the hook speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// dhcpcd (`dhcpcd -c SCRIPT`): `$reason`, `new_*` variables, no arguments.
    Dhcpcd,
    /// busybox udhcpc (`udhcpc -s SCRIPT`): `$1` the event, option variables.
    Udhcpc,
    /// OpenWrt's odhcp6c (`odhcp6c -s SCRIPT`): `$1` the interface, `$2` the state.
    Odhcp6c,
}

impl Client {
    /// The client's name, as in `medic hook NAME` and the map's `client`.
    pub fn name(self) -> &'static str {
        match self {
            Client::Dhcpcd => "dhcpcd",
            Client::Udhcpc => "udhcpc",
            Client::Odhcp6c => "odhcp6c",
        }
    }
}

/// Why a hook could not make a map at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The client gave no event (no `$reason`, no `$1`, no `$2`).
    #[error("{client}: no {what}; is this run by {client} as its script?")]
    NoState {
        /// The client.
        client: &'static str,
        /// Where the event should have been (`$reason`, `$1`).
        what: &'static str,
    },
    /// An event the hook does not know: not published, so it cannot wipe a lease.
    #[error("{client}: unknown event {state:?} in {what}; nothing published")]
    UnknownState {
        /// The client.
        client: &'static str,
        /// Where the event was.
        what: &'static str,
        /// The event, shortened to 64 bytes.
        state: String,
    },
}

/// The normalised map of one event, and what did not parse.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalised {
    /// The map (see the module's documentation); it has `errors` when `errors` is not empty.
    pub map: Map<String, Value>,
    /// Each variable that did not parse, as `NAME: why`.
    pub errors: Vec<String>,
    /// Whether the hook publishes this map (false for a `notice`).
    pub publish: bool,
}

impl Normalised {
    /// The map as one JSON value.
    pub fn to_value(&self) -> Value {
        Value::Object(self.map.clone())
    }
}

/// What an event means, in the map's `state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Bound,
    Unbound,
    Notice,
}

impl State {
    fn text(self) -> &'static str {
        match self {
            State::Bound => "bound",
            State::Unbound => "unbound",
            State::Notice => "notice",
        }
    }
}

/// Normalises one run of `client`'s script: `args` are its arguments (without the program),
/// `env` its environment.
pub fn normalise(
    client: Client,
    args: &[String],
    env: &BTreeMap<String, String>,
) -> Result<Normalised, HookError> {
    let mut vars = Vars::new(client, env);
    let event = match client {
        Client::Dhcpcd => dhcpcd::event(&mut vars)?,
        Client::Udhcpc => udhcpc::event(args, &mut vars)?,
        Client::Odhcp6c => odhcp6c::event(args, &mut vars)?,
    };
    let mut map = Map::new();
    map.insert("state".into(), text(event.state.text()));
    map.insert("reason".into(), text(&event.reason));
    map.insert("client".into(), text(client.name()));
    if let Some(interface) = event.interface {
        map.insert("interface".into(), text(&interface));
    }
    if event.state == State::Bound {
        if let Some(ipv4) = event.ipv4 {
            map.insert("ipv4".into(), Value::Object(ipv4));
        }
        if let Some(ipv6) = event.ipv6 {
            map.insert("ipv6".into(), Value::Object(ipv6));
        }
    }
    let (raw, mut errors) = vars.raw();
    errors.extend(vars.errors);
    map.insert("raw".into(), Value::Object(raw));
    if !errors.is_empty() {
        map.insert(
            "errors".into(),
            Value::Array(errors.iter().map(|e| text(e)).collect()),
        );
    }
    Ok(Normalised {
        map,
        errors,
        // dhcpcd's DELEGATED6 is about a downstream interface it numbered from a delegation
        // (`ia_pd 1 lan/0/64`): published, it would replace the uplink's map, which carries
        // the delegated prefix already.
        publish: event.state != State::Notice
            && !(client == Client::Dhcpcd && event.reason == "DELEGATED6"),
    })
}

/// What one client's module makes of an event.
struct Event {
    state: State,
    reason: String,
    interface: Option<String>,
    ipv4: Option<Map<String, Value>>,
    ipv6: Option<Map<String, Value>>,
}

/// The client's variables, as the client modules read them: each read is checked against the
/// limits, and each failure is recorded once, naming the variable.
struct Vars<'a> {
    client: Client,
    env: &'a BTreeMap<String, String>,
    errors: Vec<String>,
}

/// A variable that could not be used; the error is recorded already.
#[derive(Debug)]
struct Bad;

impl<'a> Vars<'a> {
    fn new(client: Client, env: &'a BTreeMap<String, String>) -> Vars<'a> {
        Vars {
            client,
            env,
            errors: Vec::new(),
        }
    }

    /// Records that `name` (with `value`) does not parse, and why.
    fn bad(&mut self, name: &str, value: &str, why: impl fmt::Display) -> Bad {
        if value.is_empty() {
            self.errors.push(format!("{name}: {why}"));
        } else {
            self.errors
                .push(format!("{name}: {why} (in {:?})", shorten(value, 64)));
        }
        Bad
    }

    /// The value of `name`, if set; a value over [`MAX_VALUE_BYTES`] is an error.
    fn get(&mut self, name: &str) -> Result<Option<&'a str>, Bad> {
        let Some(value) = self.env.get(name) else {
            return Ok(None);
        };
        if value.len() > MAX_VALUE_BYTES {
            self.errors.push(format!(
                "{name}: {} bytes, more than the {MAX_VALUE_BYTES} a variable may have",
                value.len()
            ));
            return Err(Bad);
        }
        Ok(Some(value.as_str()))
    }

    /// The names of the client's variables, in order.
    fn names(&self) -> impl Iterator<Item = &'a str> + '_ {
        let client = self.client;
        self.env
            .keys()
            .map(String::as_str)
            .filter(move |name| is_client_variable(client, name))
    }

    /// A space-separated list (servers, domains), at most [`MAX_ENTRIES`].
    fn words(&mut self, name: &str) -> Result<Vec<&'a str>, Bad> {
        let Some(value) = self.get(name)? else {
            return Ok(Vec::new());
        };
        let words: Vec<&str> = value.split_ascii_whitespace().collect();
        if words.len() > MAX_ENTRIES {
            return Err(self.bad(
                name,
                value,
                format!("{} entries, more than {MAX_ENTRIES}", words.len()),
            ));
        }
        Ok(words)
    }

    /// A space-separated list of IPv4 addresses, canonical.
    fn ipv4_list(&mut self, name: &str) -> Result<Vec<Value>, Bad> {
        let words = self.words(name)?;
        let value = self.env.get(name).map(String::as_str).unwrap_or("");
        let mut out = Vec::with_capacity(words.len());
        for word in words {
            match word.parse::<Ipv4Addr>() {
                Ok(addr) => out.push(text(&addr.to_string())),
                Err(_) => {
                    return Err(self.bad(name, value, format!("{word:?} is not an IPv4 address")))
                }
            }
        }
        Ok(out)
    }

    /// A space-separated list of IPv6 addresses, canonical.
    fn ipv6_list(&mut self, name: &str) -> Result<Vec<Value>, Bad> {
        let words = self.words(name)?;
        let value = self.env.get(name).map(String::as_str).unwrap_or("");
        let mut out = Vec::with_capacity(words.len());
        for word in words {
            match word.parse::<Ipv6Addr>() {
                Ok(addr) => out.push(text(&addr.to_string())),
                Err(_) => {
                    return Err(self.bad(name, value, format!("{word:?} is not an IPv6 address")))
                }
            }
        }
        Ok(out)
    }

    /// A space-separated list of domain names.
    fn domain_list(&mut self, name: &str) -> Result<Vec<Value>, Bad> {
        let words = self.words(name)?;
        let value = self.env.get(name).map(String::as_str).unwrap_or("");
        let mut out = Vec::with_capacity(words.len());
        for word in words {
            if !is_domain(word) {
                return Err(self.bad(name, value, format!("{word:?} is not a domain name")));
            }
            out.push(text(word));
        }
        Ok(out)
    }

    /// A decimal number of seconds (a lifetime, a lease time), at most `u32::MAX`.
    fn seconds(&mut self, name: &str) -> Result<Option<u32>, Bad> {
        let Some(value) = self.get(name)? else {
            return Ok(None);
        };
        match parse_u32(value) {
            Some(n) => Ok(Some(n)),
            None => Err(self.bad(name, value, "not a number of seconds (0-4294967295)")),
        }
    }

    /// `raw`: the client's variables within the limits, and an error for what was left out.
    fn raw(&self) -> (Map<String, Value>, Vec<String>) {
        let mut raw = Map::new();
        let mut bytes = 0usize;
        let mut left_out = 0usize;
        let mut errors = Vec::new();
        for name in self.names() {
            let value = &self.env[name];
            if value.len() > MAX_VALUE_BYTES {
                // Named by `get` when a section reads it; named here when none does.
                if !self
                    .errors
                    .iter()
                    .any(|e| e.starts_with(&format!("{name}: ")))
                {
                    errors.push(format!(
                        "{name}: {} bytes, more than the {MAX_VALUE_BYTES} a variable may have; \
                         left out of raw",
                        value.len()
                    ));
                }
                continue;
            }
            if raw.len() == MAX_RAW_VARIABLES || bytes + name.len() + value.len() > MAX_RAW_BYTES {
                left_out += 1;
                continue;
            }
            bytes += name.len() + value.len();
            raw.insert(raw_key(self.client, name), text(value));
        }
        if left_out > 0 {
            errors.push(format!(
                "raw: {left_out} variables left out, over {MAX_RAW_VARIABLES} variables or \
                 {MAX_RAW_BYTES} bytes"
            ));
        }
        (raw, errors)
    }
}

/// Whether `name` is one of the variables `client` sets, rather than the environment it
/// inherited (PATH, HOME, MEDIC_SERVICE…). dhcpcd and udhcpc name theirs in lower case
/// (`reason`, `new_ip_address`, `ip`, `opt53`); odhcp6c in upper case, from a known list.
fn is_client_variable(client: Client, name: &str) -> bool {
    match client {
        Client::Dhcpcd | Client::Udhcpc => {
            name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }
        Client::Odhcp6c => odhcp6c::is_variable(name),
    }
}

/// The key of `name` in `raw`: as given, but odhcp6c's upper-case names in lower case, so that
/// every key of the map is `[a-z0-9_-]+` as §9 asks (`RA_DNS` is `raw.ra_dns`).
fn raw_key(client: Client, name: &str) -> String {
    match client {
        Client::Odhcp6c => name.to_ascii_lowercase(),
        Client::Dhcpcd | Client::Udhcpc => name.to_string(),
    }
}

fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

/// `s` cut to at most `max` bytes at a character boundary, with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A plain decimal `u32`: digits only, no sign, at most 10 of them.
fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A domain name as DHCP gives it: labels of letters, digits, `-` and `_`, dots between, an
/// optional final dot, at most 253 bytes.
fn is_domain(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The prefix length of a dotted netmask (`255.255.255.0` → 24); `None` when not contiguous.
fn mask_length(mask: Ipv4Addr) -> Option<u32> {
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len)
}

/// `{address, length, preferred-s, valid-s}`.
fn lease_entry(address: Ipv6Addr, length: u8, preferred_s: u32, valid_s: u32) -> Value {
    let mut entry = Map::new();
    entry.insert("address".into(), text(&address.to_string()));
    entry.insert("length".into(), text(&length.to_string()));
    entry.insert("preferred-s".into(), text(&preferred_s.to_string()));
    entry.insert("valid-s".into(), text(&valid_s.to_string()));
    Value::Object(entry)
}

/// `addr/len` with an IPv6 address and a length of 0-128.
fn parse_ipv6_prefix(s: &str) -> Result<(Ipv6Addr, u8), String> {
    let Some((addr, len)) = s.split_once('/') else {
        return Err(format!("{s:?} is not addr/len"));
    };
    let addr = addr
        .parse::<Ipv6Addr>()
        .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
    let len = parse_length(len, 128).ok_or_else(|| format!("{len:?} is not a length (0-128)"))?;
    Ok((addr, len))
}

/// A prefix length of 0..=`max`.
fn parse_length(s: &str, max: u8) -> Option<u8> {
    parse_u32(s)
        .filter(|&n| n <= u32::from(max))
        .map(|n| n as u8)
}

/// The `ipv4` section: `{address, prefix-len, router?, dns, domain?, lease-s?}`.
struct Ipv4Section {
    address: Ipv4Addr,
    prefix_len: u8,
    routers: Vec<Value>,
    dns: Vec<Value>,
    domain: Option<String>,
    lease_s: Option<u32>,
}

impl Ipv4Section {
    fn into_map(self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("address".into(), text(&self.address.to_string()));
        map.insert("prefix-len".into(), text(&self.prefix_len.to_string()));
        if let Some(router) = self.routers.into_iter().next() {
            map.insert("router".into(), router);
        }
        map.insert("dns".into(), Value::Array(self.dns));
        if let Some(domain) = self.domain {
            map.insert("domain".into(), text(&domain));
        }
        if let Some(lease_s) = self.lease_s {
            map.insert("lease-s".into(), text(&lease_s.to_string()));
        }
        map
    }
}

/// The `ipv6` section: `{addresses, prefixes, dns, domains, delegated}`.
#[derive(Default)]
struct Ipv6Section {
    addresses: Vec<Value>,
    prefixes: Vec<Value>,
    dns: Vec<Value>,
    domains: Vec<Value>,
    delegated: Vec<Value>,
}

impl Ipv6Section {
    fn into_map(self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("addresses".into(), Value::Array(self.addresses));
        map.insert("prefixes".into(), Value::Array(self.prefixes));
        map.insert("dns".into(), Value::Array(dedup(self.dns)));
        map.insert("domains".into(), Value::Array(dedup(self.domains)));
        map.insert("delegated".into(), Value::Array(self.delegated));
        map
    }
}

/// `values` without repeats, first one kept (RDNSS and RA_DNS often name the same server).
fn dedup(values: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(values.len());
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Reads the domain of `name`: one domain name (dhcpcd's `new_domain_name` may hold several,
/// space-separated: the first is the domain).
fn first_domain(vars: &mut Vars<'_>, name: &str) -> Result<Option<String>, Bad> {
    let domains = vars.domain_list(name)?;
    Ok(domains
        .into_iter()
        .next()
        .and_then(|v| v.as_str().map(str::to_string)))
}

#[cfg(test)]
mod tests;
