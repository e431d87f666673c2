//! The route-netlink messages medic uses, as bytes: requests built into a buffer, received
//! datagrams parsed into [`Message`]s. Pure: no socket, no allocation beyond the messages.
//!
//! Layouts are the kernel's (`include/uapi/linux/netlink.h`, `rtnetlink.h`, `if_link.h`,
//! `if_addr.h`), in the host's byte order, every header and attribute aligned to 4 bytes:
//!
//! ```text
//! nlmsghdr  len u32 | type u16 | flags u16 | seq u32 | pid u32            16 bytes
//! ifinfomsg family u8 | pad u8 | type u16 | index i32 | flags u32 | change u32   16 bytes
//! ifaddrmsg family u8 | prefixlen u8 | flags u8 | scope u8 | index u32     8 bytes
//! nlmsgerr  error i32 | the request's nlmsghdr ...                          4+ bytes
//! rtattr    len u16 | type u16 | payload, padded to 4
//! ```
//!
//! Every length is checked before it is used. A datagram whose message header is truncated
//! or claims more bytes than there are ends the parse with [`Malformed`] (the messages after
//! it cannot be found); a message whose body or attributes are truncated or misaligned is one
//! [`Malformed`] item, and the parse goes on with the next message. Nothing here panics or
//! reads out of bounds on any input (the proptests at the bottom feed it arbitrary bytes).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `sizeof(struct nlmsghdr)`.
pub const HEADER_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTATTR_HEADER_LEN: usize = 4;

// Message types (netlink.h, rtnetlink.h).
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;

// Header flags (netlink.h).
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// `NLM_F_ROOT | NLM_F_MATCH`.
pub const NLM_F_DUMP: u16 = 0x300;

// Multicast groups, as the bit mask of `sockaddr_nl.nl_groups` (rtnetlink.h).
pub const RTMGRP_LINK: u32 = 0x1;
pub const RTMGRP_IPV4_IFADDR: u32 = 0x10;
pub const RTMGRP_IPV6_IFADDR: u32 = 0x100;

// Address families (socket.h).
pub const AF_UNSPEC: u8 = 0;
pub const AF_INET: u8 = 2;
pub const AF_BRIDGE: u8 = 7;
pub const AF_INET6: u8 = 10;

// Link flags (if.h).
pub const IFF_UP: u32 = 0x1;
pub const IFF_RUNNING: u32 = 0x40;
pub const IFF_LOWER_UP: u32 = 0x1_0000;

// Link attributes (if_link.h).
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
/// A link-layer address longer than this is not kept (an InfiniBand address is 20 bytes).
const MAX_LINK_ADDRESS: usize = 32;

// Address attributes and flags (if_addr.h).
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
pub const IFA_F_DADFAILED: u32 = 0x08;
pub const IFA_F_TENTATIVE: u32 = 0x40;
pub const IFA_F_PERMANENT: u32 = 0x80;

/// `rt_scope_t`: `RT_SCOPE_UNIVERSE` (global), `RT_SCOPE_LINK` (link-local).
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;

/// `nla_type` without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The longest interface name [`set_link_request`] sends (the kernel's limit is 15 bytes;
/// anything up to this is left to the kernel to refuse, with its own errno).
pub const MAX_IFNAME_BYTES: usize = 255;

/// A message header (`struct nlmsghdr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The message's length, header included.
    pub len: u32,
    /// `nlmsg_type`: `RTM_NEWLINK`, `NLMSG_DONE`, ...
    pub kind: u16,
    /// `nlmsg_flags`: `NLM_F_MULTI`, `NLM_F_DUMP_INTR`, ...
    pub flags: u16,
    /// The request's sequence number in a reply; 0 in a notification.
    pub seq: u32,
    /// The sender's port id: 0 for the kernel.
    pub pid: u32,
}

/// A link message (`RTM_NEWLINK`, `RTM_DELLINK`): `struct ifinfomsg` and the attributes
/// medic reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// `AF_UNSPEC` for the link itself; `AF_BRIDGE` for its bridge port, among others.
    pub family: u8,
    /// `ARPHRD_*`: the kind of hardware.
    pub kind: u16,
    pub index: u32,
    /// `IFF_*`.
    pub flags: u32,
    /// `IFLA_IFNAME`, when present.
    pub name: Option<String>,
    /// `IFLA_MTU`, when present.
    pub mtu: Option<u32>,
    /// `IFLA_ADDRESS`: the link-layer address (a MAC), when present and at most 32 bytes.
    pub mac: Option<Vec<u8>>,
}

/// An address message (`RTM_NEWADDR`, `RTM_DELADDR`): `struct ifaddrmsg` and the attributes
/// medic reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub family: u8,
    pub prefix_len: u8,
    /// `IFA_F_*`: the header's 8 bits, or `IFA_FLAGS` (32 bits) when the message has it.
    pub flags: u32,
    /// `RT_SCOPE_*`.
    pub scope: u8,
    pub index: u32,
    /// `IFA_ADDRESS`: the address, or a point-to-point link's peer.
    pub address: Option<IpAddr>,
    /// `IFA_LOCAL`: the local address of a point-to-point link (IPv4 only).
    pub local: Option<IpAddr>,
}

impl Address {
    /// The address on this link: `IFA_LOCAL` when present (on a point-to-point link
    /// `IFA_ADDRESS` is the peer's), else `IFA_ADDRESS`.
    pub fn ip(&self) -> Option<IpAddr> {
        self.local.or(self.address)
    }
}

/// One received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    NewLink(Link),
    DelLink(Link),
    NewAddress(Address),
    DelAddress(Address),
    /// The end of a dump (`NLMSG_DONE`).
    Done,
    /// `NLMSG_ERROR`: 0 acknowledges a request, a negative errno refuses it.
    Error(i32),
    /// `NLMSG_OVERRUN`: data was lost.
    Overrun,
    /// Any other type (`NLMSG_NOOP`, route messages...): nothing medic reads.
    Other,
}

/// What was wrong with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Fewer than 16 bytes left where a message header should be.
    TruncatedHeader { remaining: usize },
    /// `nlmsg_len` below 16 or beyond the end of the datagram.
    BadLength { len: u32, remaining: usize },
    /// A body shorter than its fixed header (`ifinfomsg`, `ifaddrmsg`, `nlmsgerr`).
    TruncatedBody { kind: u16, len: usize },
    /// An attribute whose length is below 4 or beyond the end of its message.
    BadAttribute { kind: u16, offset: usize },
    /// An attribute whose payload has the wrong size for its type.
    BadAttributeValue {
        kind: u16,
        attribute: u16,
        len: usize,
    },
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Malformed::TruncatedHeader { remaining } => {
                write!(f, "truncated message header ({remaining} bytes left)")
            }
            Malformed::BadLength { len, remaining } => {
                write!(f, "message length {len} with {remaining} bytes left")
            }
            Malformed::TruncatedBody { kind, len } => {
                write!(f, "message type {kind}: body of {len} bytes is truncated")
            }
            Malformed::BadAttribute { kind, offset } => {
                write!(f, "message type {kind}: bad attribute at offset {offset}")
            }
            Malformed::BadAttributeValue {
                kind,
                attribute,
                len,
            } => write!(
                f,
                "message type {kind}: attribute {attribute} has a {len}-byte value"
            ),
        }
    }
}

/// The messages of one datagram, in order: see [`messages`].
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

/// Parse a received datagram. Each item is a message with its header, or what was wrong
/// with it; after a framing error (a bad message header) the iterator ends.
pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages { rest: datagram }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<(Header, Message), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let remaining = self.rest.len();
        let Some(header) = self.rest.get(..HEADER_LEN) else {
            self.rest = &[];
            return Some(Err(Malformed::TruncatedHeader { remaining }));
        };
        let header = Header {
            len: u32_at(header, 0),
            kind: u16_at(header, 4),
            flags: u16_at(header, 6),
            seq: u32_at(header, 8),
            pid: u32_at(header, 12),
        };
        let len = header.len as usize;
        let (Some(message), true) = (self.rest.get(..len), len >= HEADER_LEN) else {
            self.rest = &[];
            return Some(Err(Malformed::BadLength {
                len: header.len,
                remaining,
            }));
        };
        // The next message starts at the aligned end; the last one may omit its padding.
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        let body = &message[HEADER_LEN..];
        Some(parse_body(header.kind, body).map(|m| (header, m)))
    }
}

fn parse_body(kind: u16, body: &[u8]) -> Result<Message, Malformed> {
    let truncated = Malformed::TruncatedBody {
        kind,
        len: body.len(),
    };
    match kind {
        RTM_NEWLINK | RTM_DELLINK => {
            let fixed = body.get(..IFINFOMSG_LEN).ok_or(truncated)?;
            let mut link = Link {
                family: fixed[0],
                kind: u16_at(fixed, 2),
                index: u32_at(fixed, 4),
                flags: u32_at(fixed, 8),
                name: None,
                mtu: None,
                mac: None,
            };
            for attribute in attributes(kind, &body[IFINFOMSG_LEN..]) {
                let (attribute, value) = attribute?;
                match attribute {
                    IFLA_IFNAME => link.name = Some(c_string(value)),
                    IFLA_MTU if value.len() == 4 => link.mtu = Some(u32_at(value, 0)),
                    IFLA_ADDRESS if !value.is_empty() && value.len() <= MAX_LINK_ADDRESS => {
                        link.mac = Some(value.to_vec());
                    }
                    _ => {}
                }
            }
            Ok(if kind == RTM_NEWLINK {
                Message::NewLink(link)
            } else {
                Message::DelLink(link)
            })
        }
        RTM_NEWADDR | RTM_DELADDR => {
            let fixed = body.get(..IFADDRMSG_LEN).ok_or(truncated)?;
            let mut address = Address {
                family: fixed[0],
                prefix_len: fixed[1],
                flags: u32::from(fixed[2]),
                scope: fixed[3],
                index: u32_at(fixed, 4),
                address: None,
                local: None,
            };
            for attribute in attributes(kind, &body[IFADDRMSG_LEN..]) {
                let (attribute, value) = attribute?;
                let bad_value = Malformed::BadAttributeValue {
                    kind,
                    attribute,
                    len: value.len(),
                };
                match attribute {
                    IFA_ADDRESS => address.address = ip(address.family, value, bad_value)?,
                    IFA_LOCAL => address.local = ip(address.family, value, bad_value)?,
                    IFA_FLAGS => {
                        let bytes: [u8; 4] = value.try_into().map_err(|_| bad_value)?;
                        address.flags = u32::from_ne_bytes(bytes);
                    }
                    _ => {}
                }
            }
            Ok(if kind == RTM_NEWADDR {
                Message::NewAddress(address)
            } else {
                Message::DelAddress(address)
            })
        }
        NLMSG_DONE => Ok(Message::Done),
        NLMSG_ERROR => {
            let error = body.get(..4).ok_or(truncated)?;
            Ok(Message::Error(i32::from_ne_bytes([
                error[0], error[1], error[2], error[3],
            ])))
        }
        NLMSG_OVERRUN => Ok(Message::Overrun),
        _ => Ok(Message::Other),
    }
}

/// An address attribute's value: 4 bytes for `AF_INET`, 16 for `AF_INET6`; `None` for
/// another family (not an IP address).
fn ip(family: u8, value: &[u8], bad: Malformed) -> Result<Option<IpAddr>, Malformed> {
    match family {
        AF_INET => {
            let octets: [u8; 4] = value.try_into().map_err(|_| bad)?;
            Ok(Some(IpAddr::V4(Ipv4Addr::from(octets))))
        }
        AF_INET6 => {
            let octets: [u8; 16] = value.try_into().map_err(|_| bad)?;
            Ok(Some(IpAddr::V6(Ipv6Addr::from(octets))))
        }
        _ => Ok(None),
    }
}

/// A NUL-terminated string attribute (a missing NUL is tolerated). Interface names are bytes
/// to the kernel; one that is not UTF-8 is shown with replacement characters.
fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// The attributes of a message body after its fixed header: `(type, value)` pairs.
fn attributes(kind: u16, mut rest: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), Malformed>> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bad = Malformed::BadAttribute { kind, offset };
        let parsed = rest.get(..RTATTR_HEADER_LEN).and_then(|header| {
            let len = usize::from(u16_at(header, 0));
            let value = rest.get(RTATTR_HEADER_LEN..len)?;
            Some((u16_at(header, 2) & NLA_TYPE_MASK, value, len))
        });
        match parsed {
            Some((attribute, value, len)) => {
                let next = align(len);
                rest = rest.get(next..).unwrap_or(&[]);
                offset += next;
                Some(Ok((attribute, value)))
            }
            None => {
                rest = &[];
                Some(Err(bad))
            }
        }
    })
}

/// A dump of every link (`RTM_GETLINK`) or every address (`RTM_GETADDR`), appended to `out`.
pub fn dump_request(out: &mut Vec<u8>, kind: u16, seq: u32) {
    let start = begin(out, kind, NLM_F_REQUEST | NLM_F_DUMP, seq);
    let body = if kind == RTM_GETADDR {
        IFADDRMSG_LEN
    } else {
        IFINFOMSG_LEN
    };
    out.resize(out.len() + body, 0); // every family, every link
    finish(out, start);
}

/// Set the link called `ifname` up or down (`RTM_NEWLINK` naming the link, `IFF_UP` in
/// `ifi_change`), asking for an acknowledgement; appended to `out`. `None` when the name
/// cannot be sent (it contains a NUL, or is longer than [`MAX_IFNAME_BYTES`]).
pub fn set_link_request(out: &mut Vec<u8>, seq: u32, ifname: &str, up: bool) -> Option<()> {
    if ifname.len() > MAX_IFNAME_BYTES || ifname.as_bytes().contains(&0) {
        return None;
    }
    let start = begin(out, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    out.extend_from_slice(&[AF_UNSPEC, 0]);
    out.extend_from_slice(&0u16.to_ne_bytes()); // type
    out.extend_from_slice(&0i32.to_ne_bytes()); // index: by name
    out.extend_from_slice(&(if up { IFF_UP } else { 0 }).to_ne_bytes());
    out.extend_from_slice(&IFF_UP.to_ne_bytes()); // change
    let len = RTATTR_HEADER_LEN + ifname.len() + 1;
    // At most 4 + 255 + 1 bytes: fits the u16.
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
    out.extend_from_slice(ifname.as_bytes());
    out.push(0);
    out.resize(start + align(out.len() - start), 0);
    finish(out, start);
    Some(())
}

/// Append a message header with a placeholder length; returns where it starts.
fn begin(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32) -> usize {
    let start = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
    start
}

/// Write the length of the message that starts at `start` and ends at the end of `out`.
fn finish(out: &mut [u8], start: usize) {
    // Our messages are a few hundred bytes at most.
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// Callers pass a slice at least `at + 2` long (a checked fixed header).
fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

/// Callers pass a slice at least `at + 4` long (a checked fixed header).
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Datagrams captured from Linux 6.x (x86_64) by a dump in a fresh network namespace holding
    // a veth pair `wan` (index 3) and `wanpeer` (index 2), both up, with
    //   192.0.2.7/24 and 2001:db8::7/64 (nodad) on wan,
    //   10.9.9.1 peer 10.9.9.2/32 and 2001:db8:1::9/64 (still tentative) on wanpeer:
    // the link dump (lo and wanpeer, then wan, then NLMSG_DONE) and the address dump (every
    // address, then NLMSG_DONE). Host byte order: little-endian.
    #[cfg(target_endian = "little")]
    const LINK_DUMP: [&[u8]; 3] = [
        include_bytes!("testdata/link-dump-0.bin"),
        include_bytes!("testdata/link-dump-1.bin"),
        include_bytes!("testdata/link-dump-2.bin"),
    ];
    #[cfg(target_endian = "little")]
    const ADDRESS_DUMP: [&[u8]; 2] = [
        include_bytes!("testdata/address-dump-0.bin"),
        include_bytes!("testdata/address-dump-1.bin"),
    ];

    fn parse(datagram: &[u8]) -> Vec<Result<(Header, Message), Malformed>> {
        messages(datagram).collect()
    }

    fn ok(datagram: &[u8]) -> Vec<Message> {
        parse(datagram)
            .into_iter()
            .map(|m| m.expect("well-formed").1)
            .collect()
    }

    /// A message as the kernel lays it out: header, fixed body, attributes (each padded).
    fn message(kind: u16, flags: u16, seq: u32, fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(fixed);
        for (kind, value) in attrs {
            out.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(value);
            out.resize(align(out.len()), 0);
        }
        // The length counts no padding after an unaligned fixed part; the next message still
        // starts aligned.
        let len = out.len() as u32;
        out[..4].copy_from_slice(&len.to_ne_bytes());
        out.resize(align(out.len()), 0);
        out
    }

    fn ifinfomsg(family: u8, index: u32, flags: u32) -> Vec<u8> {
        let mut out = vec![family, 0];
        out.extend_from_slice(&1u16.to_ne_bytes()); // ARPHRD_ETHER
        out.extend_from_slice(&index.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out
    }

    fn ifaddrmsg(family: u8, prefix_len: u8, flags: u8, scope: u8, index: u32) -> Vec<u8> {
        let mut out = vec![family, prefix_len, flags, scope];
        out.extend_from_slice(&index.to_ne_bytes());
        out
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_captured_link_dump() {
        let first = parse(LINK_DUMP[0]);
        assert_eq!(first.len(), 2, "{first:?}");
        let (header, lo) = first[0].clone().unwrap();
        assert_eq!(header.kind, RTM_NEWLINK);
        assert_eq!(header.flags & NLM_F_MULTI, NLM_F_MULTI);
        assert_eq!(header.seq, 7);
        let Message::NewLink(lo) = lo else {
            panic!("{lo:?}")
        };
        assert_eq!(lo.family, AF_UNSPEC);
        assert_eq!(lo.kind, 772); // ARPHRD_LOOPBACK
        assert_eq!(lo.index, 1);
        assert_eq!(lo.flags & IFF_UP, 0, "a new namespace's lo is down");
        assert_eq!(lo.name.as_deref(), Some("lo"));
        let expect = |index, name: &str| {
            Message::NewLink(Link {
                family: AF_UNSPEC,
                kind: 1,
                index,
                flags: 0x1_1043, // UP, BROADCAST, RUNNING, MULTICAST, LOWER_UP
                name: Some(name.to_string()),
                mtu: Some(1500),
                mac: None,
            })
        };
        // A veth's MAC is random: checked for its length, then left out of the comparison.
        let without_mac = |m: Message| match m {
            Message::NewLink(mut l) => {
                assert_eq!(l.mac.take().map(|m| m.len()), Some(6), "{l:?}");
                Message::NewLink(l)
            }
            other => other,
        };
        assert_eq!(lo.mtu, Some(65536));
        assert_eq!(lo.mac.as_deref(), Some(&[0u8; 6][..]));
        assert_eq!(
            without_mac(first[1].clone().unwrap().1),
            expect(2, "wanpeer")
        );
        let wan: Vec<Message> = ok(LINK_DUMP[1]).into_iter().map(without_mac).collect();
        assert_eq!(wan, vec![expect(3, "wan")]);
        assert_eq!(ok(LINK_DUMP[2]), vec![Message::Done]);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_captured_address_dump() {
        let addresses: Vec<_> = ok(ADDRESS_DUMP[0])
            .into_iter()
            .map(|m| match m {
                Message::NewAddress(a) => {
                    let unusable = a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) != 0;
                    let ip = a.ip().expect("an IP address");
                    (a.index, format!("{ip}/{}", a.prefix_len), a.scope, unusable)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        let expect = [
            (2, "10.9.9.1/32", RT_SCOPE_UNIVERSE, false), // IFA_LOCAL, not the peer
            (3, "192.0.2.7/24", RT_SCOPE_UNIVERSE, false),
            (2, "2001:db8:1::9/64", RT_SCOPE_UNIVERSE, true),
            (2, "fe80::b8aa:40ff:fe31:dd38/64", RT_SCOPE_LINK, true),
            (3, "2001:db8::7/64", RT_SCOPE_UNIVERSE, false),
            (3, "fe80::5099:ecff:fe14:bb9a/64", RT_SCOPE_LINK, true),
        ];
        let expect: Vec<_> = expect
            .iter()
            .map(|&(i, a, s, u)| (i, a.to_string(), s, u))
            .collect();
        assert_eq!(addresses, expect);
        assert_eq!(ok(ADDRESS_DUMP[1]), vec![Message::Done]);
    }

    #[test]
    fn a_bridge_port_notification_keeps_its_family() {
        let bytes = message(RTM_DELLINK, 0, 0, &ifinfomsg(AF_BRIDGE, 4, IFF_UP), &[]);
        let parsed = ok(&bytes);
        assert!(
            matches!(&parsed[..], [Message::DelLink(l)] if l.family == AF_BRIDGE && l.index == 4),
            "{parsed:?}"
        );
    }

    #[test]
    fn ifa_flags_override_the_header_flags() {
        let fixed = ifaddrmsg(AF_INET6, 64, 0, RT_SCOPE_UNIVERSE, 2);
        let ip = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        // The header's 8 bits say nothing; IFA_FLAGS says tentative (and more, above bit 7).
        let flags = (IFA_F_TENTATIVE | 0x100).to_ne_bytes();
        let bytes = message(
            RTM_NEWADDR,
            0,
            0,
            &fixed,
            &[(IFA_ADDRESS, &ip), (IFA_FLAGS, &flags)],
        );
        let [Message::NewAddress(a)] = &ok(&bytes)[..] else {
            panic!()
        };
        assert_eq!(a.flags, IFA_F_TENTATIVE | 0x100);
        // Without IFA_FLAGS the header's bits count.
        let fixed = ifaddrmsg(AF_INET6, 64, IFA_F_DADFAILED as u8, RT_SCOPE_UNIVERSE, 2);
        let bytes = message(RTM_DELADDR, 0, 0, &fixed, &[(IFA_ADDRESS, &ip)]);
        let [Message::DelAddress(a)] = &ok(&bytes)[..] else {
            panic!()
        };
        assert_eq!(a.flags, IFA_F_DADFAILED);
        assert_eq!(a.ip(), Some(IpAddr::V6(Ipv6Addr::from(ip))));
    }

    #[test]
    fn errors_acks_interrupted_dumps_and_other_types() {
        let request = message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 9, &[0; 16], &[]);
        let mut enodev = (-libc::ENODEV).to_ne_bytes().to_vec();
        enodev.extend_from_slice(&request[..HEADER_LEN]);
        let mut datagram = message(NLMSG_ERROR, 0, 9, &enodev, &[]);
        datagram.extend(message(NLMSG_ERROR, 0, 10, &0i32.to_ne_bytes(), &[]));
        datagram.extend(message(
            NLMSG_DONE,
            NLM_F_MULTI | NLM_F_DUMP_INTR,
            11,
            &[0; 4],
            &[],
        ));
        datagram.extend(message(NLMSG_OVERRUN, 0, 0, &[], &[]));
        datagram.extend(message(24, 0, 0, &[0; 12], &[])); // RTM_NEWROUTE
        let parsed: Vec<_> = parse(&datagram).into_iter().map(Result::unwrap).collect();
        let summary: Vec<_> = parsed.iter().map(|(h, m)| (h.seq, m.clone())).collect();
        assert_eq!(
            summary,
            vec![
                (9, Message::Error(-libc::ENODEV)),
                (10, Message::Error(0)),
                (11, Message::Done),
                (0, Message::Overrun),
                (0, Message::Other),
            ]
        );
        assert_eq!(parsed[2].0.flags & NLM_F_DUMP_INTR, NLM_F_DUMP_INTR);
    }

    #[test]
    fn a_bad_message_header_ends_the_datagram() {
        let good = message(NLMSG_DONE, 0, 1, &[0; 4], &[]);
        // 10 bytes: not even a header.
        let mut datagram = good.clone();
        datagram.extend_from_slice(&[0; 10]);
        let parsed = parse(&datagram);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1], Err(Malformed::TruncatedHeader { remaining: 10 }));
        // A length beyond the datagram, and one below the header's own.
        for len in [1000u32, 8] {
            let mut bad = good.clone();
            bad[..4].copy_from_slice(&len.to_ne_bytes());
            let mut datagram = bad;
            datagram.extend_from_slice(&good);
            let parsed = parse(&datagram);
            assert_eq!(
                parsed,
                vec![Err(Malformed::BadLength {
                    len,
                    remaining: datagram.len()
                })]
            );
        }
    }

    #[test]
    fn a_bad_body_or_attribute_is_one_bad_message_and_the_next_is_read() {
        let next = message(NLMSG_DONE, 0, 2, &[0; 4], &[]);
        let cases: Vec<(Vec<u8>, Malformed)> = vec![
            (
                message(RTM_NEWLINK, 0, 1, &[0; 10], &[]),
                Malformed::TruncatedBody {
                    kind: RTM_NEWLINK,
                    len: 10,
                },
            ),
            (
                message(NLMSG_ERROR, 0, 1, &[], &[]),
                Malformed::TruncatedBody {
                    kind: NLMSG_ERROR,
                    len: 0,
                },
            ),
            (
                {
                    // An attribute claiming 2 bytes: below its own header.
                    let mut fixed = ifinfomsg(AF_UNSPEC, 3, 0);
                    fixed.extend_from_slice(&2u16.to_ne_bytes());
                    fixed.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
                    message(RTM_NEWLINK, 0, 1, &fixed, &[])
                },
                Malformed::BadAttribute {
                    kind: RTM_NEWLINK,
                    offset: 0,
                },
            ),
            (
                {
                    // A second attribute claiming more bytes than the message has.
                    let mut fixed = ifinfomsg(AF_UNSPEC, 3, 0);
                    fixed.extend_from_slice(&8u16.to_ne_bytes());
                    fixed.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
                    fixed.extend_from_slice(b"wan\0");
                    fixed.extend_from_slice(&200u16.to_ne_bytes());
                    fixed.extend_from_slice(&4u16.to_ne_bytes());
                    message(RTM_NEWLINK, 0, 1, &fixed, &[])
                },
                Malformed::BadAttribute {
                    kind: RTM_NEWLINK,
                    offset: 8,
                },
            ),
            (
                message(
                    RTM_NEWADDR,
                    0,
                    1,
                    &ifaddrmsg(AF_INET, 24, 0, 0, 3),
                    &[(IFA_ADDRESS, &[192, 0, 2, 7, 0])],
                ),
                Malformed::BadAttributeValue {
                    kind: RTM_NEWADDR,
                    attribute: IFA_ADDRESS,
                    len: 5,
                },
            ),
            (
                message(
                    RTM_NEWADDR,
                    0,
                    1,
                    &ifaddrmsg(AF_INET6, 64, 0, 0, 3),
                    &[(IFA_FLAGS, &[0x40, 0])],
                ),
                Malformed::BadAttributeValue {
                    kind: RTM_NEWADDR,
                    attribute: IFA_FLAGS,
                    len: 2,
                },
            ),
        ];
        for (bad, why) in cases {
            let mut datagram = bad;
            datagram.extend_from_slice(&next);
            let parsed = parse(&datagram);
            assert_eq!(parsed.len(), 2, "{why:?}: {parsed:?}");
            assert_eq!(parsed[0], Err(why));
            assert_eq!(parsed[1].clone().map(|(_, m)| m), Ok(Message::Done));
        }
    }

    #[test]
    fn an_address_of_another_family_is_no_ip() {
        let bytes = message(
            RTM_NEWADDR,
            0,
            0,
            &ifaddrmsg(17, 0, 0, 0, 3), // AF_PACKET
            &[(IFA_ADDRESS, &[1, 2, 3, 4, 5, 6])],
        );
        let [Message::NewAddress(a)] = &ok(&bytes)[..] else {
            panic!()
        };
        assert_eq!(a.ip(), None);
    }

    #[test]
    fn a_name_without_its_nul_or_not_utf8_is_still_a_name() {
        let fixed = ifinfomsg(AF_UNSPEC, 5, IFF_UP);
        let bytes = message(RTM_NEWLINK, 0, 0, &fixed, &[(IFLA_IFNAME, b"wan")]);
        let [Message::NewLink(l)] = &ok(&bytes)[..] else {
            panic!()
        };
        assert_eq!(l.name.as_deref(), Some("wan"));
        let bytes = message(RTM_NEWLINK, 0, 0, &fixed, &[(IFLA_IFNAME, b"w\xffn\0")]);
        let [Message::NewLink(l)] = &ok(&bytes)[..] else {
            panic!()
        };
        assert_eq!(l.name.as_deref(), Some("w\u{fffd}n"));
    }

    #[test]
    fn dump_requests_are_laid_out_as_the_kernel_reads_them() {
        let mut out = Vec::new();
        dump_request(&mut out, RTM_GETLINK, 5);
        let mut expect = message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 5, &[0; 16], &[]);
        assert_eq!(out, expect);
        assert_eq!(out.len(), 32);
        out.clear();
        dump_request(&mut out, RTM_GETADDR, 6);
        expect = message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 6, &[0; 8], &[]);
        assert_eq!(out, expect);
        assert_eq!(out.len(), 24);
    }

    #[test]
    fn a_set_link_request_names_the_link_and_changes_only_iff_up() {
        for up in [true, false] {
            let mut out = Vec::new();
            set_link_request(&mut out, 3, "wan0", up).unwrap();
            let mut fixed = vec![AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0];
            fixed.extend_from_slice(&(if up { IFF_UP } else { 0 }).to_ne_bytes());
            fixed.extend_from_slice(&IFF_UP.to_ne_bytes());
            let expect = message(
                RTM_NEWLINK,
                NLM_F_REQUEST | NLM_F_ACK,
                3,
                &fixed,
                &[(IFLA_IFNAME, b"wan0\0")],
            );
            assert_eq!(out, expect);
            assert_eq!(out.len(), 16 + 16 + 12, "the name's attribute padded to 4");
            // It parses back as the link it names.
            let [Message::NewLink(l)] = &ok(&out)[..] else {
                panic!()
            };
            assert_eq!((l.index, l.name.as_deref()), (0, Some("wan0")));
        }
        let mut out = Vec::new();
        assert_eq!(set_link_request(&mut out, 1, "a\0b", true), None);
        assert_eq!(set_link_request(&mut out, 1, &"x".repeat(256), true), None);
        assert!(out.is_empty());
    }

    fn captured() -> Vec<Vec<u8>> {
        let mut all = vec![
            message(NLMSG_ERROR, 0, 1, &(-19i32).to_ne_bytes(), &[]),
            message(
                RTM_NEWADDR,
                0,
                0,
                &ifaddrmsg(AF_INET6, 64, 0, 0, 2),
                &[
                    (
                        IFA_ADDRESS,
                        &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    ),
                    (IFA_FLAGS, &[0x40, 0, 0, 0]),
                ],
            ),
        ];
        #[cfg(target_endian = "little")]
        all.extend(LINK_DUMP.iter().chain(&ADDRESS_DUMP).map(|d| d.to_vec()));
        all
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            // Every item is either a message or an error; the parse ends.
            let n = messages(&bytes).count();
            prop_assert!(n <= bytes.len() / HEADER_LEN + 1);
        }

        #[test]
        fn a_truncated_or_damaged_datagram_never_panics_and_keeps_its_whole_messages(
            which in 0usize..16,
            cut in any::<prop::sample::Index>(),
            damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let all = captured();
            let full = &all[which % all.len()];
            let whole = parse(full);
            let cut = cut.index(full.len() + 1);
            let truncated = parse(&full[..cut]);
            // Every message that lies wholly before the cut parses as it did.
            let mut end = 0;
            for (i, item) in whole.iter().enumerate() {
                let (header, _) = item.as_ref().expect("the captured datagrams are well-formed");
                end += header.len as usize;
                if end > cut {
                    break;
                }
                prop_assert_eq!(&truncated[i], item);
                end = align(end);
            }
            let mut damaged = full.clone();
            for (at, byte) in damage {
                let at = at.index(damaged.len());
                damaged[at] = byte;
            }
            let _ = parse(&damaged);
        }
    }
}
