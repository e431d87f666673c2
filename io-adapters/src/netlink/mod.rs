//! Network links through route netlink: the state of every link, turned into
//! [`Input::LinkChanged`], and the `link-up` heal. The messages are read and written by
//! medic's own [`codec`]; this module owns the sockets.
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
//! * [`link_up`] sets a link administratively up by name on a short-lived netlink socket
//!   ([`link_set`] sets it up or down).
//!
//! ## Keeping in step with the kernel
//!
//! Dump replies and notifications arrive on the one socket, in the order the kernel queued
//! them: a notification older than the dump can never overwrite it. When the socket's receive
//! buffer overflows (`recv` fails with `ENOBUFS`: notifications were lost), a datagram is
//! truncated, or a dump reports it was interrupted (`NLM_F_DUMP_INTR`), the watcher dumps
//! again and removes whatever the new dump no longer shows (mark and sweep by generation), so
//! a lost `RTM_DELLINK` still ends in `link: None`. If the socket itself fails, the watcher
//! opens a new one after [`RECONNECT_DELAY`] and dumps again. While a dump runs nothing is
//! sent, so the kernel never sees a half-swept table. A malformed message is logged and
//! skipped; it never stops the watcher.
//!
//! ## What counts as what
//! * `admin_up`: `IFF_UP`;
//! * `carrier`: `IFF_LOWER_UP` (a veth whose peer is down, a cable out);
//! * `ipv4`: any IPv4 address on the link;
//! * `ipv6_global`: an IPv6 address of scope universe that is neither tentative (duplicate
//!   address detection still running) nor dadfailed. The address flags are `IFA_FLAGS`
//!   (32 bits) when the message carries it, else the header's 8 bits.
//!
//! Only `AF_UNSPEC` link messages describe a link: a bridge port's `AF_BRIDGE` `RTM_DELLINK`
//! (the port leaving a bridge) does not delete the link.

pub mod codec;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use codec::Message;
use medic_kernel::{Input, LinkState, Outputs, Value};
use nix::sys::socket::{self, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// After the netlink socket fails, wait this long before opening a new one, so a persistent
/// failure costs one attempt per interval and not a busy loop.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// A dump that has not finished after this long is treated as a failed socket. A dump of a
/// router's few dozen links and addresses takes well under a millisecond.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// [`link_set`] gives up on a kernel that has not answered after this long (it answers at
/// once: the request is handled in the `sendmsg` call).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The receive buffer: the kernel fills a dump datagram up to the reader's buffer size, capped
/// at 32 KiB (`netlink_recvmsg`), and a notification is far smaller. A larger datagram is
/// truncated (`MSG_TRUNC`) and treated as lost notifications.
const RECEIVE_BYTES: usize = 32 * 1024;

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
#[derive(Clone, Debug)]
pub struct LinkTable {
    table: Arc<Mutex<Table>>,
    /// Counts the rounds in which what [`LinkTable::outputs`] shows may have changed.
    facts: Arc<watch::Sender<u64>>,
}

impl Default for LinkTable {
    fn default() -> Self {
        LinkTable {
            table: Arc::default(),
            facts: Arc::new(watch::channel(0).0),
        }
    }
}

/// At most this many addresses of each family in an interface's outputs (a link with
/// hundreds of IPv6 privacy addresses must not push the map over its bounds).
pub const MAX_OUTPUT_ADDRESSES: usize = 256;

impl LinkTable {
    /// The link called `ifname`, or `None` when no such link exists.
    pub fn view(&self, ifname: &str) -> Option<LinkView> {
        let table = self.lock();
        let (&index, _) = table.links.iter().find(|(_, l)| l.name == ifname)?;
        Some(table.view(index))
    }

    /// The outputs of an interface service on the link `ifname` (DESIGN §9): `ifname`,
    /// `ifindex`, `mtu`, `mac` (`aa:bb:cc:dd:ee:ff`), `ipv4` (every IPv4 address as
    /// `a.b.c.d/len`) and `ipv6` (every usable global IPv6 address as `addr/len`: neither
    /// tentative nor dadfailed), each list in address order and cut at
    /// [`MAX_OUTPUT_ADDRESSES`]; an empty map when there is no such link.
    pub fn outputs(&self, ifname: &str) -> Outputs {
        let table = self.lock();
        let mut outputs = Outputs::new();
        let Some((&index, link)) = table.links.iter().find(|(_, l)| l.name == ifname) else {
            return outputs;
        };
        let text = |s: String| Value::String(s);
        outputs.insert("ifname".into(), text(link.name.clone()));
        outputs.insert("ifindex".into(), text(index.to_string()));
        if let Some(mtu) = link.mtu {
            outputs.insert("mtu".into(), text(mtu.to_string()));
        }
        if let Some(mac) = &link.mac {
            let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
            outputs.insert("mac".into(), text(hex.join(":")));
        }
        let (mut ipv4, mut ipv6) = (Vec::new(), Vec::new());
        for (ip, prefix, address) in table.addresses_of(index) {
            match ip {
                IpAddr::V4(_) if ipv4.len() < MAX_OUTPUT_ADDRESSES => {
                    ipv4.push(text(format!("{ip}/{prefix}")));
                }
                IpAddr::V6(_)
                    if address.scope == codec::RT_SCOPE_UNIVERSE
                        && address.unusable().is_none()
                        && ipv6.len() < MAX_OUTPUT_ADDRESSES =>
                {
                    ipv6.push(text(format!("{ip}/{prefix}")));
                }
                _ => {}
            }
        }
        outputs.insert("ipv4".into(), Value::List(ipv4));
        outputs.insert("ipv6".into(), Value::List(ipv6));
        outputs
    }

    /// Changes whenever what [`LinkTable::outputs`] shows may have changed (a link or an
    /// address came, went or changed), once the table is consistent (never mid-dump).
    pub fn facts(&self) -> watch::Receiver<u64> {
        self.facts.subscribe()
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
/// but through netlink. Fails with the kernel's error (`ENODEV` when there is no such link).
pub async fn link_up(ifname: &str) -> io::Result<()> {
    link_set(ifname, true).await
}

/// Set the link called `ifname` administratively up or down, like `ip link set IFNAME up|down`:
/// an `RTM_NEWLINK` naming the link, on a short-lived netlink socket, acknowledged by the
/// kernel. Fails with the kernel's error (`ENODEV` when there is no such link), or
/// `InvalidInput` for a name that cannot be sent (a NUL in it, or over 255 bytes).
pub async fn link_set(ifname: &str, up: bool) -> io::Result<()> {
    const SEQ: u32 = 1;
    let mut request = Vec::new();
    codec::set_link_request(&mut request, SEQ, ifname, up).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{ifname:?} cannot be a link name"),
        )
    })?;
    let mut socket = Socket::open(0)?;
    socket.send(&request)?;
    let answer = async {
        loop {
            let Received::Datagram(len) = socket.recv().await? else {
                continue; // no notifications on this socket: nothing to lose
            };
            for message in codec::messages(&socket.buffer[..len]) {
                match message {
                    Ok((header, Message::Error(code))) if header.seq == SEQ => {
                        return match code {
                            0 => Ok(()),
                            _ => Err(errno(code)),
                        };
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!("netlink: {e}"),
                }
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, answer)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the kernel did not answer"))?
}

/// The error of an `NLMSG_ERROR` message: a negative errno.
fn errno(code: i32) -> io::Error {
    match code.checked_neg() {
        Some(errno) if errno > 0 => io::Error::from_raw_os_error(errno),
        _ => io::Error::other(format!("netlink error code {code}")),
    }
}

/// What [`Socket::recv`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Received {
    /// A whole datagram of this many bytes, in the socket's buffer.
    Datagram(usize),
    /// Datagrams were lost: the receive buffer overflowed (`ENOBUFS`), or this one was larger
    /// than the buffer (and is dropped).
    Lost,
}

/// A nonblocking `NETLINK_ROUTE` socket and its receive buffer.
struct Socket {
    fd: AsyncFd<OwnedFd>,
    buffer: Vec<u8>,
}

impl Socket {
    /// A socket subscribed to `groups` (`RTMGRP_*`; 0 for none).
    fn open(groups: u32) -> io::Result<Socket> {
        let fd = socket::socket(
            socket::AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        // SAFETY: the socket is owned by the `AsyncFd` and stays open as long as it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Socket {
            fd,
            buffer: vec![0; RECEIVE_BYTES],
        })
    }

    fn set_receive_buffer(&self, bytes: usize) -> io::Result<()> {
        socket::setsockopt(&self.fd.as_fd(), socket::sockopt::RcvBuf, &bytes)?;
        Ok(())
    }

    /// Send one request to the kernel. The kernel handles it within the call, so it does not
    /// block; `EAGAIN` would be an error like any other.
    fn send(&self, request: &[u8]) -> io::Result<()> {
        let sent = socket::sendto(
            self.fd.as_raw_fd(),
            request,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        if sent != request.len() {
            return Err(io::Error::other(format!(
                "netlink: sent {sent} of {} bytes",
                request.len()
            )));
        }
        Ok(())
    }

    /// The next datagram, waiting for one.
    async fn recv(&mut self) -> io::Result<Received> {
        loop {
            let mut ready = self.fd.readable().await?;
            let buffer = &mut self.buffer;
            match ready.try_io(|fd| receive(fd.get_ref(), buffer)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// The next datagram if one is queued, without waiting.
    fn try_recv(&mut self) -> io::Result<Option<Received>> {
        match receive(self.fd.get_ref(), &mut self.buffer) {
            Ok(received) => Ok(Some(received)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One `recv` on the nonblocking socket. With `MSG_TRUNC` the kernel returns the datagram's
/// real length, so a datagram larger than the buffer is seen, not silently cut.
fn receive(fd: &OwnedFd, buffer: &mut [u8]) -> io::Result<Received> {
    let flags = MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT;
    match socket::recv(fd.as_raw_fd(), buffer, flags) {
        Ok(len) if len > buffer.len() => {
            tracing::warn!("netlink: a {len}-byte datagram did not fit the buffer");
            Ok(Received::Lost)
        }
        Ok(len) => Ok(Received::Datagram(len)),
        Err(nix::errno::Errno::ENOBUFS) => Ok(Received::Lost),
        Err(e) => Err(e.into()),
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

/// One netlink socket subscribed to links and addresses, carrying both the notifications and
/// the replies to our dump requests.
struct Session {
    socket: Socket,
    phase: Phase,
    /// The sequence number of the last dump request (for the logs: replies are not matched).
    seq: u32,
    /// Dump again once the running dump completes (lost notifications, an interrupted dump).
    dump_again: bool,
    /// The loop's queue was full: some changes are still to be sent once it has room.
    behind: bool,
}

impl Session {
    fn open(options: WatchOptions) -> io::Result<Session> {
        let groups = codec::RTMGRP_LINK | codec::RTMGRP_IPV4_IFADDR | codec::RTMGRP_IPV6_IFADDR;
        let socket = Socket::open(groups)?;
        if let Some(bytes) = options.receive_buffer_bytes {
            socket.set_receive_buffer(bytes)?;
        }
        Ok(Session {
            socket,
            phase: Phase::Idle,
            seq: 0,
            dump_again: false,
            behind: false,
        })
    }

    /// Dump every link, then (on its `Done`) every address. Every link and address seen from
    /// now on is marked with a new generation; the rest is swept when its dump completes.
    fn start_dump(&mut self, table: &LinkTable) -> io::Result<()> {
        table.lock().generation += 1;
        self.phase = Phase::Links;
        self.request(codec::RTM_GETLINK)
    }

    fn request(&mut self, kind: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut request = Vec::with_capacity(codec::HEADER_LEN + 16);
        codec::dump_request(&mut request, kind, self.seq);
        self.socket.send(&request)
    }

    async fn serve(
        &mut self,
        table: &LinkTable,
        tx: &Sender<Input>,
        until: Until,
    ) -> io::Result<()> {
        loop {
            // While the loop's queue is full, wait for room as well as for the socket.
            let received = if self.behind {
                tokio::select! {
                    permit = tx.reserve() => match permit {
                        Ok(_) => None,
                        Err(_) => return Ok(()), // nobody listens any more
                    },
                    received = self.next_datagram() => Some(received?),
                }
            } else {
                Some(self.next_datagram().await?)
            };
            match received {
                Some(received) => {
                    self.handle(table, received)?;
                    // Everything the kernel queued in the same moment is one change: `ip link
                    // del` sends "down" and then "deleted"; the kernel is told only "deleted".
                    while let Some(received) = self.socket.try_recv()? {
                        self.handle(table, received)?;
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
            if std::mem::take(&mut table.lock().facts_changed) {
                table
                    .facts
                    .send_modify(|round| *round = round.wrapping_add(1));
            }
            if until == Until::Synced {
                return Ok(());
            }
        }
    }

    /// The next datagram; while a dump runs, for at most [`DUMP_TIMEOUT`].
    async fn next_datagram(&mut self) -> io::Result<Received> {
        if self.phase == Phase::Idle {
            return self.socket.recv().await;
        }
        tokio::time::timeout(DUMP_TIMEOUT, self.socket.recv())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "dump did not complete"))?
    }

    fn handle(&mut self, table: &LinkTable, received: Received) -> io::Result<()> {
        let len = match received {
            Received::Datagram(len) => len,
            Received::Lost => return self.lost(table),
        };
        // The buffer is lent out while its messages are handled (they may send a request).
        let buffer = std::mem::take(&mut self.socket.buffer);
        let mut result = Ok(());
        for message in codec::messages(&buffer[..len]) {
            match message {
                Ok((header, message)) => {
                    result = self.handle_message(table, header, message);
                    if result.is_err() {
                        break;
                    }
                }
                Err(e) => tracing::warn!("netlink: skipping a malformed message: {e}"),
            }
        }
        self.socket.buffer = buffer;
        result
    }

    /// Notifications were lost: dump again, now or when the running dump completes.
    fn lost(&mut self, table: &LinkTable) -> io::Result<()> {
        tracing::warn!("netlink: notifications lost (receive buffer overrun), dumping again");
        if self.phase == Phase::Idle {
            self.start_dump(table)
        } else {
            self.dump_again = true;
            Ok(())
        }
    }

    fn handle_message(
        &mut self,
        table: &LinkTable,
        header: codec::Header,
        message: Message,
    ) -> io::Result<()> {
        if header.flags & codec::NLM_F_DUMP_INTR != 0 {
            // The table changed while the kernel was dumping it: the dump may be inconsistent.
            self.dump_again = true;
        }
        match message {
            Message::Done => self.dump_done(table),
            Message::Overrun => self.lost(table),
            // Notifications never carry errors, and no acks are asked for: this answers a
            // dump request.
            Message::Error(code) if code != 0 => Err(io::Error::other(format!(
                "dump {} refused: {}",
                header.seq,
                errno(code)
            ))),
            message => {
                table.lock().apply(message);
                Ok(())
            }
        }
    }

    fn dump_done(&mut self, table: &LinkTable) -> io::Result<()> {
        match self.phase {
            Phase::Links => {
                table.lock().sweep_links();
                self.phase = Phase::Addresses;
                self.request(codec::RTM_GETADDR)
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
    /// A link or an address was applied or swept since the facts were last announced.
    facts_changed: bool,
}

#[derive(Debug)]
struct Link {
    name: String,
    /// `IFF_*`.
    flags: u32,
    mtu: Option<u32>,
    mac: Option<Vec<u8>>,
    seen: u64,
}

#[derive(Debug)]
struct Address {
    /// `IFA_F_*`.
    flags: u32,
    /// `RT_SCOPE_*`.
    scope: u8,
    seen: u64,
}

impl Address {
    /// Duplicate address detection has not (or not successfully) finished.
    fn unusable(&self) -> Option<&'static str> {
        if self.flags & codec::IFA_F_DADFAILED != 0 {
            Some("dadfailed")
        } else if self.flags & codec::IFA_F_TENTATIVE != 0 {
            Some("tentative")
        } else {
            None
        }
    }
}

impl Table {
    fn apply(&mut self, message: Message) {
        if matches!(
            message,
            Message::NewLink(_)
                | Message::DelLink(_)
                | Message::NewAddress(_)
                | Message::DelAddress(_)
        ) {
            self.facts_changed = true;
        }
        match message {
            Message::NewLink(m) if m.family == codec::AF_UNSPEC => {
                let link = self.links.entry(m.index).or_insert_with(|| Link {
                    name: String::new(),
                    flags: 0,
                    mtu: None,
                    mac: None,
                    seen: 0,
                });
                if let Some(name) = m.name {
                    link.name = name;
                }
                if m.mtu.is_some() {
                    link.mtu = m.mtu;
                }
                if m.mac.is_some() {
                    link.mac = m.mac;
                }
                link.flags = m.flags;
                link.seen = self.generation;
            }
            Message::DelLink(m) if m.family == codec::AF_UNSPEC => {
                let index = m.index;
                self.links.remove(&index);
                self.addresses.retain(|&(i, _, _), _| i != index);
            }
            Message::NewAddress(m) => {
                if let Some(ip) = m.ip() {
                    let address = Address {
                        flags: m.flags,
                        scope: m.scope,
                        seen: self.generation,
                    };
                    self.addresses.insert((m.index, ip, m.prefix_len), address);
                }
            }
            Message::DelAddress(m) => {
                if let Some(ip) = m.ip() {
                    self.addresses.remove(&(m.index, ip, m.prefix_len));
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
            admin_up: link.flags & codec::IFF_UP != 0,
            carrier: link.flags & codec::IFF_LOWER_UP != 0,
            ipv4: false,
            ipv6_global: false,
        };
        for (ip, _, address) in self.addresses_of(index) {
            match ip {
                IpAddr::V4(_) => state.ipv4 = true,
                IpAddr::V6(_) => {
                    if address.scope == codec::RT_SCOPE_UNIVERSE && address.unusable().is_none() {
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

#[cfg(test)]
mod tests {
    use super::*;

    use codec::{Address as Addr, Link as L, AF_BRIDGE, AF_INET, AF_INET6, AF_UNSPEC};
    use codec::{IFA_F_PERMANENT, IFA_F_TENTATIVE, IFF_LOWER_UP, IFF_RUNNING, IFF_UP};
    use codec::{RT_SCOPE_LINK, RT_SCOPE_UNIVERSE};

    fn link(index: u32, name: &str, flags: u32) -> Message {
        Message::NewLink(L {
            family: AF_UNSPEC,
            kind: 1, // ARPHRD_ETHER
            index,
            flags,
            name: Some(name.to_string()),
            mtu: Some(1500),
            mac: Some(vec![2, 0, 0, 0, 0, index as u8]),
        })
    }

    fn del_link(index: u32, family: u8) -> Message {
        Message::DelLink(L {
            family,
            kind: 1,
            index,
            flags: 0,
            name: None,
            mtu: None,
            mac: None,
        })
    }

    fn address(index: u32, ip: &str, scope: u8, flags: u32) -> Addr {
        let ip: IpAddr = ip.parse().unwrap();
        Addr {
            family: if ip.is_ipv4() { AF_INET } else { AF_INET6 },
            prefix_len: 64,
            flags,
            scope,
            index,
            address: Some(ip),
            local: None,
        }
    }

    const UP_CARRIER: u32 = IFF_UP | IFF_LOWER_UP;

    fn up(carrier: bool) -> LinkState {
        LinkState {
            admin_up: true,
            carrier,
            ..LinkState::default()
        }
    }

    #[test]
    fn an_interfaces_outputs_are_its_facts_and_its_usable_addresses() {
        let links = LinkTable::default();
        let facts = links.facts();
        assert_eq!(links.outputs("wan"), Outputs::new(), "no such link: empty");
        {
            let mut t = links.lock();
            t.apply(link(3, "wan", UP_CARRIER));
            t.apply(Message::NewAddress(address(
                3,
                "192.0.2.1",
                RT_SCOPE_UNIVERSE,
                0,
            )));
            t.apply(Message::NewAddress(address(
                3,
                "2001:db8::1",
                RT_SCOPE_UNIVERSE,
                0,
            )));
            t.apply(Message::NewAddress(address(3, "fe80::1", RT_SCOPE_LINK, 0)));
            let tentative = address(3, "2001:db8::2", RT_SCOPE_UNIVERSE, IFA_F_TENTATIVE);
            t.apply(Message::NewAddress(tentative));
            assert!(t.facts_changed);
        }
        let s = |text: &str| Value::String(text.into());
        let expected: Outputs = [
            ("ifname".to_string(), s("wan")),
            ("ifindex".to_string(), s("3")),
            ("mtu".to_string(), s("1500")),
            ("mac".to_string(), s("02:00:00:00:00:03")),
            ("ipv4".to_string(), Value::List(vec![s("192.0.2.1/64")])),
            ("ipv6".to_string(), Value::List(vec![s("2001:db8::1/64")])),
        ]
        .into();
        assert_eq!(links.outputs("wan"), expected);
        assert!(medic_kernel::outputs::validate(&expected).is_ok());
        // A link with more addresses than an output map holds is cut, not refused.
        {
            let mut t = links.lock();
            for i in 0..(MAX_OUTPUT_ADDRESSES as u32 + 10) {
                let ip = format!("2001:db8:1::{i:x}");
                t.apply(Message::NewAddress(address(3, &ip, RT_SCOPE_UNIVERSE, 0)));
            }
        }
        let many = links.outputs("wan");
        let Some(Value::List(v6)) = many.get("ipv6") else {
            panic!("{many:?}")
        };
        assert_eq!(v6.len(), MAX_OUTPUT_ADDRESSES);
        assert!(medic_kernel::outputs::validate(&many).is_ok());
        // The watcher announces a round only through `facts`; nothing was announced here.
        assert!(!facts.has_changed().unwrap());
    }

    #[test]
    fn a_change_is_reported_once_and_an_unchanged_state_not_at_all() {
        let mut t = Table::default();
        t.apply(link(2, "wan", UP_CARRIER));
        assert_eq!(t.changes(), vec![("wan".into(), Some(up(true)))]);
        // The same state again (say a statistics update): nothing to say.
        t.apply(link(2, "wan", UP_CARRIER | IFF_RUNNING));
        assert_eq!(t.changes(), vec![]);
        t.apply(link(2, "wan", IFF_UP));
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
        t.apply(del_link(4, AF_BRIDGE));
        assert_eq!(t.changes(), vec![]);
        t.apply(del_link(4, AF_UNSPEC));
        assert_eq!(t.changes(), vec![("lan1".into(), None)]);
    }

    #[test]
    fn only_a_usable_global_ipv6_address_counts() {
        let mut t = Table::default();
        t.apply(link(2, "wan", UP_CARRIER));
        let ll = address(2, "fe80::1", RT_SCOPE_LINK, IFA_F_PERMANENT);
        t.apply(Message::NewAddress(ll));
        let tentative = address(2, "2001:db8::1", RT_SCOPE_UNIVERSE, IFA_F_TENTATIVE);
        t.apply(Message::NewAddress(tentative));
        assert_eq!(t.changes(), vec![("wan".into(), Some(up(true)))]);
        assert_eq!(
            t.view(2).addresses,
            vec!["2001:db8::1/64 (tentative)", "fe80::1/64"]
        );
        // DAD finished: the same address without the tentative flag.
        let done = address(2, "2001:db8::1", RT_SCOPE_UNIVERSE, IFA_F_PERMANENT);
        t.apply(Message::NewAddress(done.clone()));
        let global = LinkState {
            ipv6_global: true,
            ..up(true)
        };
        assert_eq!(t.changes(), vec![("wan".into(), Some(global))]);
        t.apply(Message::DelAddress(done));
        assert_eq!(t.changes(), vec![("wan".into(), Some(up(true)))]);
    }

    #[test]
    fn ipv4_and_status_view() {
        let mut t = Table::default();
        t.apply(link(2, "wan", IFF_UP));
        let v4 = address(2, "192.0.2.7", RT_SCOPE_UNIVERSE, IFA_F_PERMANENT);
        t.apply(Message::NewAddress(v4));
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
        let v4 = address(2, "192.0.2.7", RT_SCOPE_UNIVERSE, IFA_F_PERMANENT);
        t.apply(Message::NewAddress(v4));
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
