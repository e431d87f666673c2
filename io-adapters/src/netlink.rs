//! Network links through rtnetlink: the state of every link, turned into
//! [`Input::LinkChanged`], and the `link-up` heal.
//!
//! ## Entry points (for the runtime)
//!
//! ```text
//! let links = netlink::watch(tx.clone()).await?;   // at startup, before the first Tick:
//!                                                   // the initial dump is already in `tx`
//! Effect::LinkUp { ifname, .. } => netlink::link_up(&ifname).await   // never runs `ip`
//! medic status: links.view("eth0") -> Option<LinkView { state, addresses }>
//! ```
//!
//! * [`watch`] opens one netlink socket subscribed to the link, IPv4-address and IPv6-address
//!   groups, dumps every link and then every address, sends one [`Input::LinkChanged`] per link
//!   that exists, and only then returns. A task spawned on the current runtime (current-thread
//!   is fine: no `LocalSet` needed) then follows the kernel's notifications and sends
//!   `LinkChanged` whenever the [`LinkState`] of a *name* changes: a link appearing, changing,
//!   disappearing (`link: None`) or being renamed (the old name disappears, the new one
//!   appears). Nothing is sent when a notification leaves the state the kernel knows unchanged.
//! * Dropping the [`LinkWatcher`] stops the task; so does dropping the receiver of `tx`.
//! * [`link_up`] sets a link administratively up by name on a short-lived netlink socket.
//!
//! ## Keeping in step with the kernel
//!
//! Dump replies are requested without being tracked as requests, so the dump and the
//! notifications arrive on one stream, in the order the kernel queued them: a notification
//! older than the dump can never overwrite it. When the socket's receive buffer overflows
//! (`ENOBUFS`, seen as an overrun message) or a dump reports it was interrupted
//! (`NLM_F_DUMP_INTR`), the watcher dumps again and removes whatever the new dump no longer
//! shows (mark and sweep by generation), so a lost `RTM_DELLINK` still ends in `link: None`.
//! If the socket itself fails, the watcher opens a new one after [`RECONNECT_DELAY`] and
//! dumps again. While a dump runs nothing is sent, so the kernel never sees a half-swept
//! table.
//!
//! ## What counts as what
//! * `admin_up`: `IFF_UP`;
//! * `carrier`: `IFF_LOWER_UP` (a veth whose peer is down, a cable out);
//! * `ipv4`: any IPv4 address on the link;
//! * `ipv6_global`: an IPv6 address of scope universe that is neither tentative (duplicate
//!   address detection still running) nor dadfailed.
//!
//! Only `AF_UNSPEC` link messages describe a link: a bridge port's `AF_BRIDGE` `RTM_DELLINK`
//! (the port leaving a bridge) does not delete the link.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use medic_kernel::{Input, LinkState};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::proto::Connection;
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use rtnetlink::{Handle, LinkUnspec, MulticastGroup};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;

/// After the netlink socket fails, wait this long before opening a new one, so a persistent
/// failure costs one attempt per interval and not a busy loop.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// A dump that has not finished after this long is treated as a failed socket. A dump of a
/// router's few dozen links and addresses takes well under a millisecond.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of [`watch_with`]. [`watch`] uses the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchOptions {
    /// The netlink socket's receive buffer (`SO_RCVBUF`) in bytes; `None` keeps the system
    /// default (`net.core.rmem_default`). Tests set it tiny to provoke `ENOBUFS`.
    pub receive_buffer_bytes: Option<usize>,
}

/// A link as `medic status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkView {
    /// The kernel's interface index.
    pub index: u32,
    /// `"down"`, `"up, no carrier"` or `"up, carrier"`.
    pub state: String,
    /// Every address as `address/prefix`, IPv4 first, with ` (tentative)` or ` (dadfailed)`
    /// after an IPv6 address that is not usable yet.
    pub addresses: Vec<String>,
    /// What the kernel is told about the link.
    pub link: LinkState,
}

/// A link's state in words, as `medic status` shows it: `absent`, `down`, `up, no carrier` or
/// `up, carrier`.
pub fn describe(link: Option<&LinkState>) -> &'static str {
    match link {
        None => "absent",
        Some(l) if !l.admin_up => "down",
        Some(l) if !l.carrier => "up, no carrier",
        Some(_) => "up, carrier",
    }
}

/// A cheap, cloneable handle on the watcher's table of links, for `medic status`.
#[derive(Clone, Debug, Default)]
pub struct LinkTable {
    table: Arc<Mutex<Table>>,
}

impl LinkTable {
    /// The link called `ifname`, or `None` when no such link exists.
    pub fn view(&self, ifname: &str) -> Option<LinkView> {
        let table = self.lock();
        let (&index, _) = table.links.iter().find(|(_, l)| l.name == ifname)?;
        Some(table.view(index))
    }

    /// How many full dumps the watcher has started: 1 after the initial dump, one more after
    /// every overrun, interrupted dump or new socket.
    pub fn dumps(&self) -> u64 {
        self.lock().generation
    }

    /// How many changes could not be sent at once because the loop's queue was full (each was
    /// sent later, in its latest state).
    pub fn delayed(&self) -> u64 {
        self.lock().delayed
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves a table that is at worst stale; keep serving it.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running watcher: owns the task that follows netlink notifications. Dropping it stops
/// the task.
#[derive(Debug)]
pub struct LinkWatcher {
    table: LinkTable,
    task: JoinHandle<()>,
}

impl LinkWatcher {
    /// A handle on the table of links, for `medic status`.
    pub fn table(&self) -> LinkTable {
        self.table.clone()
    }

    /// The link called `ifname`, or `None` when no such link exists.
    pub fn view(&self, ifname: &str) -> Option<LinkView> {
        self.table.view(ifname)
    }
}

impl Drop for LinkWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start watching links with the default [`WatchOptions`]; see the [module docs](self).
///
/// Returns once the initial dump has been sent through `tx`, one [`Input::LinkChanged`] per
/// existing link. Must be called from within a tokio runtime (it spawns the watcher task).
pub async fn watch(tx: Sender<Input>) -> io::Result<LinkWatcher> {
    watch_with(tx, WatchOptions::default()).await
}

/// [`watch`] with explicit options.
pub async fn watch_with(tx: Sender<Input>, options: WatchOptions) -> io::Result<LinkWatcher> {
    let table = LinkTable::default();
    let mut session = Session::open(options)?;
    session.start_dump(&table)?;
    session.serve(&table, &tx, Until::Synced).await?;
    let task = tokio::spawn(follow(session, table.clone(), tx, options));
    Ok(LinkWatcher { table, task })
}

/// Set the link called `ifname` administratively up (`IFF_UP`), like `ip link set IFNAME up`
/// but through rtnetlink. Fails with the kernel's error (`ENODEV` when there is no such link).
pub async fn link_up(ifname: &str) -> io::Result<()> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let request = handle
        .link()
        .set(LinkUnspec::new_with_name(ifname).up().build())
        .execute();
    tokio::select! {
        result = request => result.map_err(netlink_error),
        () = connection => Err(io::Error::other("netlink connection closed")),
    }
}

/// An rtnetlink error as an `io::Error`, keeping the kernel's errno where there is one.
///
/// Worded here rather than by rtnetlink's `Display`, which prints an unexpected message with
/// `{:?}`: that one format string links the `Debug` code of every netlink message type, about
/// 70 KiB of the router binary. An unexpected reply is named by its message type instead; the
/// other errors read as rtnetlink words them.
fn netlink_error(error: rtnetlink::Error) -> io::Error {
    use rtnetlink::Error as E;
    match error {
        E::NetlinkError(message) => match message.code {
            Some(code) => io::Error::from_raw_os_error(-code.get()),
            None => io::Error::other(format!("Received a netlink error message {message}")),
        },
        E::UnexpectedMessage(message) => io::Error::other(format!(
            "Received an unexpected message (type {})",
            message.header.message_type
        )),
        E::RequestFailed => io::Error::other("A netlink request failed"),
        E::NamespaceError(e) => io::Error::other(format!("Namespace error {e}")),
        // The other variants in rtnetlink's words.
        E::InvalidHardwareAddress(addr) => io::Error::other(format!(
            "Received a link message (RTM_GETLINK, RTM_NEWLINK, RTM_SETLINK or RTMGETLINK) \
             with an invalid hardware address attribute: {addr:?}."
        )),
        E::InvalidIp(addr) => io::Error::other(format!("Failed to parse an IP address: {addr:?}")),
        E::InvalidAddress(ip, mask) => io::Error::other(format!(
            "Failed to parse a network address (IP and mask): {ip:?}/{mask:?}"
        )),
        E::InvalidNla(nla) => io::Error::other(format!("Attempting to set and Invalid NLA: {nla}")),
    }
}

/// The watcher task: serve the session; when it fails, open a new one and dump again.
async fn follow(mut session: Session, table: LinkTable, tx: Sender<Input>, options: WatchOptions) {
    loop {
        match session.serve(&table, &tx, Until::Closed).await {
            Ok(()) => return, // nobody listens any more
            Err(e) => tracing::warn!("netlink: {e}; reconnecting"),
        }
        session = loop {
            tokio::time::sleep(RECONNECT_DELAY).await;
            if tx.is_closed() {
                return;
            }
            match Session::open(options).and_then(|mut s| s.start_dump(&table).map(|()| s)) {
                Ok(s) => break s,
                Err(e) => tracing::warn!("netlink: reconnecting: {e}"),
            }
        };
    }
}

type Messages = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// Which dump is running on the socket (the kernel allows one at a time per socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Links,
    Addresses,
}

/// How long [`Session::serve`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    /// Until a dump has completed and its changes are sent (the initial dump).
    Synced,
    /// Until the socket fails (an error) or `tx` is closed (`Ok`).
    Closed,
}

/// One netlink socket: its connection future, a handle to send dump requests, and the single
/// stream of notifications and dump replies.
struct Session {
    connection: Pin<Box<Connection<RouteNetlinkMessage>>>,
    handle: Handle,
    messages: Messages,
    phase: Phase,
    /// Dump again once the running dump completes (an overrun or an interrupted dump).
    dump_again: bool,
    /// The loop's queue was full: some changes are still to be sent once it has room.
    behind: bool,
}

impl Session {
    fn open(options: WatchOptions) -> io::Result<Session> {
        let groups = [
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ];
        let (mut connection, handle, messages) = rtnetlink::new_multicast_connection(&groups)?;
        if let Some(bytes) = options.receive_buffer_bytes {
            connection.socket_mut().socket_mut().set_rx_buf_sz(bytes)?;
        }
        Ok(Session {
            connection: Box::pin(connection),
            handle,
            messages,
            phase: Phase::Idle,
            dump_again: false,
            behind: false,
        })
    }

    /// Dump every link, then (on its `Done`) every address. Every link and address seen from
    /// now on is marked with a new generation; the rest is swept when its dump completes.
    fn start_dump(&mut self, table: &LinkTable) -> io::Result<()> {
        table.lock().generation += 1;
        self.phase = Phase::Links;
        self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()))
    }

    /// Send a dump request whose replies come through `messages`, in order with the
    /// notifications (untracked, so the connection does not route them to a response stream).
    fn request(&mut self, message: RouteNetlinkMessage) -> io::Result<()> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        self.handle.notify(request).map_err(netlink_error)
    }

    async fn serve(
        &mut self,
        table: &LinkTable,
        tx: &Sender<Input>,
        until: Until,
    ) -> io::Result<()> {
        loop {
            // While the loop's queue is full, wait for room as well as for the socket.
            let message = if self.behind {
                tokio::select! {
                    permit = tx.reserve() => match permit {
                        Ok(_) => None,
                        Err(_) => return Ok(()), // nobody listens any more
                    },
                    message = self.next_message() => Some(message?),
                }
            } else {
                Some(self.next_message().await?)
            };
            match message {
                Some(message) => {
                    self.handle_message(table, message)?;
                    // Everything the kernel queued in the same moment is one change: `ip link
                    // del` sends "down" and then "deleted"; the kernel is told only "deleted".
                    while let Ok((message, _)) = self.messages.try_recv() {
                        self.handle_message(table, message)?;
                    }
                }
                None => self.behind = false,
            }
            if self.phase != Phase::Idle {
                continue;
            }
            // The queue to the loop is bounded: what does not fit is sent when there is room,
            // in its latest state (the table is the truth; only the sending is late).
            let changes = table.lock().changes();
            for (ifname, link) in changes {
                if self.behind {
                    table.lock().unsent(ifname);
                    continue;
                }
                match tx.try_send(Input::LinkChanged { ifname, link }) {
                    Ok(()) => {}
                    Err(TrySendError::Full(Input::LinkChanged { ifname, .. })) => {
                        tracing::debug!("netlink: the loop's queue is full; sending later");
                        table.lock().unsent(ifname);
                        self.behind = true;
                    }
                    Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Closed(_)) => return Ok(()),
                }
            }
            if until == Until::Synced {
                return Ok(());
            }
        }
    }

    async fn next_message(&mut self) -> io::Result<NetlinkMessage<RouteNetlinkMessage>> {
        let Session {
            connection,
            messages,
            phase,
            ..
        } = self;
        let wait = async {
            tokio::select! {
                // Read what is queued before noticing a closed socket.
                biased;
                next = messages.next() => next.map(|(message, _)| message),
                () = connection => None,
            }
        };
        let next = if *phase == Phase::Idle {
            wait.await
        } else {
            tokio::time::timeout(DUMP_TIMEOUT, wait)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "dump did not complete"))?
        };
        next.ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "netlink socket closed"))
    }

    fn handle_message(
        &mut self,
        table: &LinkTable,
        message: NetlinkMessage<RouteNetlinkMessage>,
    ) -> io::Result<()> {
        if message.header.flags & NLM_F_DUMP_INTR != 0 {
            // The table changed while the kernel was dumping it: the dump may be inconsistent.
            self.dump_again = true;
        }
        match message.payload {
            NetlinkPayload::InnerMessage(inner) => table.lock().apply(inner),
            NetlinkPayload::Done(_) => self.dump_done(table)?,
            NetlinkPayload::Overrun(_) => {
                tracing::warn!("netlink: receive buffer overrun (ENOBUFS), dumping again");
                if self.phase == Phase::Idle {
                    self.start_dump(table)?;
                } else {
                    self.dump_again = true;
                }
            }
            // Notifications never carry errors, and no acks are asked for: this answers a
            // dump request.
            NetlinkPayload::Error(error) if error.code.is_some() => {
                return Err(io::Error::other(format!("dump refused: {error}")));
            }
            _ => {}
        }
        Ok(())
    }

    fn dump_done(&mut self, table: &LinkTable) -> io::Result<()> {
        match self.phase {
            Phase::Links => {
                table.lock().sweep_links();
                self.phase = Phase::Addresses;
                self.request(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            }
            Phase::Addresses => {
                table.lock().sweep_addresses();
                self.phase = Phase::Idle;
                if std::mem::take(&mut self.dump_again) {
                    self.start_dump(table)?;
                }
                Ok(())
            }
            Phase::Idle => Ok(()),
        }
    }
}

/// What the watcher knows: links by index, their addresses, and what the kernel was told.
#[derive(Debug, Default)]
struct Table {
    links: BTreeMap<u32, Link>,
    /// By (link index, address, prefix length).
    addresses: BTreeMap<(u32, IpAddr, u8), Address>,
    /// The last state sent for each name; a name is absent here when `None` was sent.
    reported: BTreeMap<String, LinkState>,
    /// Names whose last change could not be sent (the loop's queue was full): reported again
    /// with their current state by the next [`Table::changes`].
    unsent: BTreeSet<String>,
    /// Changes that could not be sent at once, ever.
    delayed: u64,
    /// The current dump's generation: what is not marked with it when the dump ends is gone.
    generation: u64,
}

#[derive(Debug)]
struct Link {
    name: String,
    flags: LinkFlags,
    seen: u64,
}

#[derive(Debug)]
struct Address {
    flags: AddressFlags,
    scope: AddressScope,
    seen: u64,
}

impl Address {
    /// Duplicate address detection has not (or not successfully) finished.
    fn unusable(&self) -> Option<&'static str> {
        if self.flags.contains(AddressFlags::Dadfailed) {
            Some("dadfailed")
        } else if self.flags.contains(AddressFlags::Tentative) {
            Some("tentative")
        } else {
            None
        }
    }
}

impl Table {
    fn apply(&mut self, message: RouteNetlinkMessage) {
        match message {
            RouteNetlinkMessage::NewLink(m)
                if m.header.interface_family == AddressFamily::Unspec =>
            {
                let name = m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name.clone()),
                    _ => None,
                });
                let index = m.header.index;
                let link = self.links.entry(index).or_insert_with(|| Link {
                    name: String::new(),
                    flags: LinkFlags::empty(),
                    seen: 0,
                });
                if let Some(name) = name {
                    link.name = name;
                }
                link.flags = m.header.flags;
                link.seen = self.generation;
            }
            RouteNetlinkMessage::DelLink(m)
                if m.header.interface_family == AddressFamily::Unspec =>
            {
                let index = m.header.index;
                self.links.remove(&index);
                self.addresses.retain(|&(i, _, _), _| i != index);
            }
            RouteNetlinkMessage::NewAddress(m) => {
                if let Some(key) = address_key(&m) {
                    let address = Address {
                        flags: address_flags(&m),
                        scope: m.header.scope,
                        seen: self.generation,
                    };
                    self.addresses.insert(key, address);
                }
            }
            RouteNetlinkMessage::DelAddress(m) => {
                if let Some(key) = address_key(&m) {
                    self.addresses.remove(&key);
                }
            }
            _ => {}
        }
    }

    fn sweep_links(&mut self) {
        let generation = self.generation;
        self.links.retain(|_, l| l.seen == generation);
        let links = &self.links;
        self.addresses.retain(|(i, _, _), _| links.contains_key(i));
    }

    fn sweep_addresses(&mut self) {
        let generation = self.generation;
        self.addresses.retain(|_, a| a.seen == generation);
    }

    fn addresses_of(&self, index: u32) -> impl Iterator<Item = (IpAddr, u8, &Address)> + '_ {
        self.addresses
            .range((index, IpAddr::from([0u8; 4]), 0)..)
            .take_while(move |((i, _, _), _)| *i == index)
            .map(|(&(_, ip, prefix), a)| (ip, prefix, a))
    }

    fn state(&self, index: u32, link: &Link) -> LinkState {
        let mut state = LinkState {
            admin_up: link.flags.contains(LinkFlags::Up),
            carrier: link.flags.contains(LinkFlags::LowerUp),
            ipv4: false,
            ipv6_global: false,
        };
        for (ip, _, address) in self.addresses_of(index) {
            match ip {
                IpAddr::V4(_) => state.ipv4 = true,
                IpAddr::V6(_) => {
                    if address.scope == AddressScope::Universe && address.unusable().is_none() {
                        state.ipv6_global = true;
                    }
                }
            }
        }
        state
    }

    fn view(&self, index: u32) -> LinkView {
        let link = &self.links[&index];
        let state = self.state(index, link);
        let text = describe(Some(&state));
        let addresses = self
            .addresses_of(index)
            .map(|(ip, prefix, a)| match a.unusable() {
                Some(why) => format!("{ip}/{prefix} ({why})"),
                None => format!("{ip}/{prefix}"),
            })
            .collect();
        LinkView {
            index,
            state: text.to_string(),
            addresses,
            link: state,
        }
    }

    /// Every name whose state differs from what was last reported, with its new state
    /// (`None`: gone); records them as reported.
    fn changes(&mut self) -> Vec<(String, Option<LinkState>)> {
        let current: BTreeMap<String, LinkState> = self
            .links
            .iter()
            .filter(|(_, l)| !l.name.is_empty())
            .map(|(&index, l)| (l.name.clone(), self.state(index, l)))
            .collect();
        let mut changes = Vec::new();
        for name in self.reported.keys() {
            if !current.contains_key(name) {
                changes.push((name.clone(), None));
            }
        }
        for (name, state) in &current {
            if self.reported.get(name) != Some(state) {
                changes.push((name.clone(), Some(*state)));
            }
        }
        for name in std::mem::take(&mut self.unsent) {
            if !changes.iter().any(|(n, _)| *n == name) {
                let state = current.get(&name).copied();
                changes.push((name, state));
            }
        }
        self.reported = current;
        changes
    }

    /// The change of `name` just returned by [`Table::changes`] could not be sent.
    fn unsent(&mut self, name: String) {
        self.delayed += 1;
        self.unsent.insert(name);
    }
}

/// (link index, local address, prefix length). For a point-to-point IPv4 address `IFA_LOCAL`
/// is ours and `IFA_ADDRESS` the peer's; otherwise they are equal or only `IFA_ADDRESS` is set.
fn address_key(m: &AddressMessage) -> Option<(u32, IpAddr, u8)> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    Some((m.header.index, local.or(address)?, m.header.prefix_len))
}

/// The full flags: `IFA_FLAGS` when present (32 bits), else the header's 8 bits.
fn address_flags(m: &AddressMessage) -> AddressFlags {
    m.attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Flags(flags) => Some(*flags),
            _ => None,
        })
        .unwrap_or_else(|| header_flags(m.header.flags))
}

fn header_flags(flags: AddressHeaderFlags) -> AddressFlags {
    AddressFlags::from_bits_retain(u32::from(flags.bits()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, flags: LinkFlags) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        RouteNetlinkMessage::NewLink(m)
    }

    fn del_link(index: u32, family: AddressFamily) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.interface_family = family;
        RouteNetlinkMessage::DelLink(m)
    }

    fn address(index: u32, ip: &str, scope: AddressScope, flags: AddressFlags) -> AddressMessage {
        let ip: IpAddr = ip.parse().unwrap();
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.prefix_len = 64;
        m.header.scope = scope;
        m.attributes.push(AddressAttribute::Address(ip));
        m.attributes.push(AddressAttribute::Flags(flags));
        m
    }

    const UP_CARRIER: LinkFlags = LinkFlags::Up.union(LinkFlags::LowerUp);

    fn up(carrier: bool) -> LinkState {
        LinkState {
            admin_up: true,
            carrier,
            ..LinkState::default()
        }
    }

    #[test]
    fn a_change_is_reported_once_and_an_unchanged_state_not_at_all() {
        let mut t = Table::default();
        t.apply(link(2, "wan", UP_CARRIER));
        assert_eq!(t.changes(), vec![("wan".into(), Some(up(true)))]);
        // The same state again (say a statistics update): nothing to say.
        t.apply(link(2, "wan", UP_CARRIER | LinkFlags::Running));
        assert_eq!(t.changes(), vec![]);
        t.apply(link(2, "wan", LinkFlags::Up));
        assert_eq!(t.changes(), vec![("wan".into(), Some(up(false)))]);
    }

    #[test]
    fn a_rename_is_the_old_name_gone_and_the_new_one_present() {
        let mut t = Table::default();
        t.apply(link(3, "eth1", UP_CARRIER));
        t.changes();
        t.apply(link(3, "wan", UP_CARRIER));
        assert_eq!(
            t.changes(),
            vec![("eth1".into(), None), ("wan".into(), Some(up(true)))]
        );
    }

    #[test]
    fn a_bridge_port_leaving_its_bridge_does_not_delete_the_link() {
        let mut t = Table::default();
        t.apply(link(4, "lan1", UP_CARRIER));
        t.changes();
        t.apply(del_link(4, AddressFamily::Bridge));
        assert_eq!(t.changes(), vec![]);
        t.apply(del_link(4, AddressFamily::Unspec));
        assert_eq!(t.changes(), vec![("lan1".into(), None)]);
    }

    #[test]
    fn only_a_usable_global_ipv6_address_counts() {
        let mut t = Table::default();
        t.apply(link(2, "wan", UP_CARRIER));
        let ll = address(2, "fe80::1", AddressScope::Link, AddressFlags::Permanent);
        t.apply(RouteNetlinkMessage::NewAddress(ll));
        let tentative = address(
            2,
            "2001:db8::1",
            AddressScope::Universe,
            AddressFlags::Tentative,
        );
        t.apply(RouteNetlinkMessage::NewAddress(tentative));
        assert_eq!(t.changes(), vec![("wan".into(), Some(up(true)))]);
        assert_eq!(
            t.view(2).addresses,
            vec!["2001:db8::1/64 (tentative)", "fe80::1/64"]
        );
        // DAD finished: the same address without the tentative flag.
        let done = address(
            2,
            "2001:db8::1",
            AddressScope::Universe,
            AddressFlags::Permanent,
        );
        t.apply(RouteNetlinkMessage::NewAddress(done.clone()));
        let global = LinkState {
            ipv6_global: true,
            ..up(true)
        };
        assert_eq!(t.changes(), vec![("wan".into(), Some(global))]);
        t.apply(RouteNetlinkMessage::DelAddress(done));
        assert_eq!(t.changes(), vec![("wan".into(), Some(up(true)))]);
    }

    #[test]
    fn ipv4_and_status_view() {
        let mut t = Table::default();
        t.apply(link(2, "wan", LinkFlags::Up));
        let v4 = address(
            2,
            "192.0.2.7",
            AddressScope::Universe,
            AddressFlags::Permanent,
        );
        t.apply(RouteNetlinkMessage::NewAddress(v4));
        let view = t.view(2);
        assert_eq!(view.state, "up, no carrier");
        assert!(view.link.ipv4);
        assert_eq!(view.addresses, vec!["192.0.2.7/64"]);
    }

    #[test]
    fn a_dump_sweeps_what_it_no_longer_shows() {
        let mut t = Table {
            generation: 1,
            ..Table::default()
        };
        t.apply(link(2, "wan", UP_CARRIER));
        t.apply(link(3, "usb0", UP_CARRIER));
        let v4 = address(
            2,
            "192.0.2.7",
            AddressScope::Universe,
            AddressFlags::Permanent,
        );
        t.apply(RouteNetlinkMessage::NewAddress(v4));
        t.changes();
        // Notifications were lost; the new dump shows wan without its address, no usb0.
        t.generation = 2;
        t.apply(link(2, "wan", UP_CARRIER));
        t.sweep_links();
        t.sweep_addresses();
        assert_eq!(
            t.changes(),
            vec![("usb0".into(), None), ("wan".into(), Some(up(true)))]
        );
    }
}
