//! Devices (DESIGN §12): which pieces of hardware are present, from sysfs and the kernel's
//! uevents, told to the kernel as the whole set of devices a device service could match
//! ([`Input::Devices`]).
//!
//! * **Coldplug**: at start, every device under `/sys/bus/*/devices/*` and `/sys/class/*/*`
//!   (symlinks resolved to `/sys/devices/…`, each once) has its `uevent` file read.
//! * **Hotplug**: a `NETLINK_KOBJECT_UEVENT` socket (the kernel's multicast group 1),
//!   non-blocking, on the loop through `AsyncFd`. Each uevent re-reads that one device.
//! * **Repair**: when the socket overflows (ENOBUFS: events were lost) sysfs is walked again,
//!   off the loop, and the set it finds replaces what was known: a device whose remove event
//!   was lost is gone, one whose add event was lost is there.
//!
//! Only devices that some service's matcher names are kept and sent, so the kernel (and the
//! trace) see a handful, not the hundreds a machine has. The socket is opened only while the
//! config has a device service.
//!
//! Limits: a uevent datagram of at most [`MAX_UEVENT`] bytes and [`MAX_KEYS`] properties
//! (larger ones are logged and skipped), sysfs files read up to [`MAX_SYSFS_FILE`] bytes, a
//! walk of at most [`MAX_WALK`] entries, at most [`MAX_DEVICES`] devices kept. A malformed
//! event or a file that vanishes mid-walk is skipped, never fatal.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use medic_kernel::{Device, DeviceMatch, Input};
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvfrom, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// The largest uevent datagram read; the kernel's own buffer is 2 KiB.
pub const MAX_UEVENT: usize = 8 * 1024;
/// The most properties in one uevent (the kernel sends at most 64).
pub const MAX_KEYS: usize = 128;
/// The most bytes read of one sysfs file (`uevent`, an attribute).
pub const MAX_SYSFS_FILE: u64 = 4 * 1024;
/// The most directory entries one walk looks at.
pub const MAX_WALK: usize = 100_000;
/// The most matching devices kept.
pub const MAX_DEVICES: usize = 1_024;
/// The most ancestors looked at for a driver or an attribute.
const MAX_DEPTH: usize = 64;
/// Receive buffer asked for, so a burst (a USB hub with a dozen ports) fits.
const RCVBUF: usize = 1 << 20;

/// What a uevent says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `add`
    Add,
    /// `remove`
    Remove,
    /// `change`
    Change,
    /// `move` (renamed; `DEVPATH_OLD` names the old path)
    Move,
    /// `online`
    Online,
    /// `offline`
    Offline,
    /// `bind` (a driver was bound)
    Bind,
    /// `unbind`
    Unbind,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "add" => Action::Add,
            "remove" => Action::Remove,
            "change" => Action::Change,
            "move" => Action::Move,
            "online" => Action::Online,
            "offline" => Action::Offline,
            "bind" => Action::Bind,
            "unbind" => Action::Unbind,
            _ => return None,
        })
    }
}

/// One parsed uevent: from the socket, or a sysfs `uevent` file (which has no action).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uevent {
    /// What happened (`None` for a sysfs file).
    pub action: Option<Action>,
    /// The device's path below `/sys`, starting with `/devices/`.
    pub devpath: String,
    /// `KEY=VALUE` properties (`SUBSYSTEM`, `DEVNAME`, `DEVTYPE`, `DRIVER`, …).
    pub props: BTreeMap<String, String>,
}

/// Why a uevent was skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UeventError {
    /// Larger than [`MAX_UEVENT`].
    #[error("uevent of {0} bytes is over the {MAX_UEVENT}-byte limit")]
    TooLarge(usize),
    /// From udev (`libudev` header), not the kernel.
    #[error("a udev message, not the kernel's")]
    Udev,
    /// No `ACTION@DEVPATH` header, or a bad one.
    #[error("no ACTION@DEVPATH header")]
    NoHeader,
    /// The header and `ACTION=`/`DEVPATH=` disagree, or a property is not `KEY=VALUE`.
    #[error("malformed: {0}")]
    Malformed(String),
    /// More than [`MAX_KEYS`] properties.
    #[error("more than {MAX_KEYS} properties")]
    TooManyKeys,
}

/// Parses a `NETLINK_KOBJECT_UEVENT` datagram: `ACTION@DEVPATH\0KEY=VALUE\0…`.
pub fn parse_netlink(buf: &[u8]) -> Result<Uevent, UeventError> {
    if buf.len() > MAX_UEVENT {
        return Err(UeventError::TooLarge(buf.len()));
    }
    if buf.starts_with(b"libudev\0") {
        return Err(UeventError::Udev);
    }
    let mut parts = buf.split(|&b| b == 0).filter(|p| !p.is_empty());
    let header = parts.next().ok_or(UeventError::NoHeader)?;
    let header = std::str::from_utf8(header).map_err(|_| UeventError::NoHeader)?;
    let (action, devpath) = header.split_once('@').ok_or(UeventError::NoHeader)?;
    let action = Action::parse(action).ok_or(UeventError::NoHeader)?;
    let props = properties(parts)?;
    let agree = |key: &str, want: &str| props.get(key).is_none_or(|v| v == want);
    if !agree("DEVPATH", devpath) {
        return Err(UeventError::Malformed(format!(
            "header names {devpath}, DEVPATH another"
        )));
    }
    if !agree("ACTION", header.split('@').next().unwrap_or_default()) {
        return Err(UeventError::Malformed(
            "ACTION disagrees with the header".into(),
        ));
    }
    if !devpath.starts_with('/') || devpath.contains("/../") || devpath.ends_with("/..") {
        return Err(UeventError::Malformed(format!("devpath {devpath:?}")));
    }
    Ok(Uevent {
        action: Some(action),
        devpath: devpath.to_string(),
        props,
    })
}

/// Parses a sysfs `uevent` file (`KEY=VALUE` lines) of the device at `devpath`.
pub fn parse_sysfs(devpath: &str, text: &[u8]) -> Result<Uevent, UeventError> {
    if text.len() > MAX_UEVENT {
        return Err(UeventError::TooLarge(text.len()));
    }
    let props = properties(text.split(|&b| b == b'\n').filter(|l| !l.is_empty()))?;
    Ok(Uevent {
        action: None,
        devpath: devpath.to_string(),
        props,
    })
}

fn properties<'a>(
    parts: impl Iterator<Item = &'a [u8]>,
) -> Result<BTreeMap<String, String>, UeventError> {
    let mut props = BTreeMap::new();
    for part in parts {
        let text = String::from_utf8_lossy(part);
        let (k, v) = text
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| UeventError::Malformed(format!("{text:?} is not KEY=VALUE")))?;
        props.insert(k.to_string(), v.to_string());
        if props.len() > MAX_KEYS {
            return Err(UeventError::TooManyKeys);
        }
    }
    Ok(props)
}

/// Reads at most [`MAX_SYSFS_FILE`] bytes of a sysfs file.
fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SYSFS_FILE)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The last part of where the symlink at `path` points (`…/bus/usb-serial` → `usb-serial`).
fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Where sysfs is mounted (`/sys`; a fake tree in tests) and what the services match.
#[derive(Clone, Debug)]
pub struct Sysfs {
    /// The mount point.
    pub root: PathBuf,
    /// Every device service's matcher.
    pub matchers: Arc<Vec<DeviceMatch>>,
}

impl Sysfs {
    /// The facts of the device `ev` names, if some matcher could name it: its own properties
    /// first (cheap), then its driver and attributes from sysfs, itself or up its ancestors.
    pub fn device(&self, ev: &Uevent) -> Option<Device> {
        let subsystem = ev.props.get("SUBSYSTEM")?.clone();
        let name = ev
            .devpath
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut device = Device {
            devpath: ev.devpath.clone(),
            subsystem,
            name,
            devname: ev.props.get("DEVNAME").map(|n| match n.starts_with('/') {
                true => n.clone(),
                false => format!("/dev/{n}"),
            }),
            devtype: ev.props.get("DEVTYPE").cloned(),
            driver: ev.props.get("DRIVER").cloned(),
            attrs: BTreeMap::new(),
        };
        // Properties alone rule most devices out before any file is read.
        let cheap = |m: &DeviceMatch| {
            let probe = DeviceMatch {
                driver: None,
                attrs: BTreeMap::new(),
                ..m.clone()
            };
            probe.matches(&device)
        };
        let candidates: Vec<&DeviceMatch> = self.matchers.iter().filter(|m| cheap(m)).collect();
        if candidates.is_empty() {
            return None;
        }
        if device.driver.is_none() {
            device.driver = self.ancestor_driver(&ev.devpath);
        }
        for m in &candidates {
            for key in m.attrs.keys() {
                if !device.attrs.contains_key(key) {
                    if let Some(v) = self.attr(&ev.devpath, key) {
                        device.attrs.insert(key.clone(), v);
                    }
                }
            }
        }
        candidates
            .iter()
            .any(|m| m.matches(&device))
            .then_some(device)
    }

    /// `/sys` + `devpath`, then each parent up to `/sys/devices`.
    fn lineage<'a>(&'a self, devpath: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
        let mut path = Some(devpath);
        std::iter::from_fn(move || {
            let p = path.filter(|p| p.len() > "/devices".len() && p.starts_with("/devices/"))?;
            path = p.rsplit_once('/').map(|(parent, _)| parent);
            Some(self.root.join(p.trim_start_matches('/')))
        })
        .take(MAX_DEPTH)
    }

    /// The attribute `key` of the device or its nearest ancestor that has it, trimmed.
    fn attr(&self, devpath: &str, key: &str) -> Option<String> {
        if key.contains('/') || key.starts_with('.') {
            return None;
        }
        self.lineage(devpath).find_map(|dir| {
            let bytes = read_small(&dir.join(key)).ok()?;
            Some(String::from_utf8_lossy(&bytes).trim_end().to_string())
        })
    }

    /// The driver bound to the device or its nearest ancestor (the `driver` symlink's name).
    fn ancestor_driver(&self, devpath: &str) -> Option<String> {
        self.lineage(devpath)
            .find_map(|dir| link_name(&dir.join("driver")))
    }

    /// Coldplug: every device in sysfs that a matcher names. Blocking file I/O: run it off
    /// the loop (or before it starts).
    pub fn walk(&self) -> BTreeMap<String, Device> {
        let mut seen = std::collections::BTreeSet::new();
        let mut found = BTreeMap::new();
        let mut budget = MAX_WALK;
        let canonical_root = std::fs::canonicalize(&self.root).unwrap_or(self.root.clone());
        for (top, sub) in [("bus", Some("devices")), ("class", None)] {
            let Ok(groups) = std::fs::read_dir(self.root.join(top)) else {
                continue;
            };
            for group in groups.flatten() {
                let dir = match sub {
                    Some(s) => group.path().join(s),
                    None => group.path(),
                };
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    budget = budget.saturating_sub(1);
                    if budget == 0 {
                        tracing::warn!(
                            "sysfs walk stopped after {MAX_WALK} entries: devices beyond are not seen"
                        );
                        return found;
                    }
                    // A device may vanish mid-walk: whatever fails is skipped.
                    let Ok(real) = std::fs::canonicalize(entry.path()) else {
                        continue;
                    };
                    let Ok(rel) = real.strip_prefix(&canonical_root) else {
                        continue;
                    };
                    let devpath = format!("/{}", rel.to_string_lossy());
                    if !devpath.starts_with("/devices/") || !seen.insert(devpath.clone()) {
                        continue;
                    }
                    let Ok(text) = read_small(&real.join("uevent")) else {
                        continue;
                    };
                    let Ok(mut ev) = parse_sysfs(&devpath, &text) else {
                        continue;
                    };
                    // A uevent file has no SUBSYSTEM (the kernel adds it to the event
                    // only): it is the name the `subsystem` link points to.
                    if !ev.props.contains_key("SUBSYSTEM") {
                        let Some(subsystem) = link_name(&real.join("subsystem")) else {
                            continue;
                        };
                        ev.props.insert("SUBSYSTEM".into(), subsystem);
                    }
                    if let Some(d) = self.device(&ev) {
                        if found.len() < MAX_DEVICES {
                            found.insert(devpath, d);
                        }
                    }
                }
            }
        }
        found
    }
}

/// The present matching devices, kept up to date from uevents.
#[derive(Debug, Default)]
pub struct Table {
    /// By devpath.
    pub devices: BTreeMap<String, Device>,
}

impl Table {
    /// Applies one uevent; true when the set changed.
    pub fn apply(&mut self, sysfs: &Sysfs, ev: &Uevent) -> bool {
        let before = self.devices.clone();
        if ev.action == Some(Action::Move) {
            if let Some(old) = ev.props.get("DEVPATH_OLD") {
                self.remove_tree(old);
            }
        }
        match ev.action {
            Some(Action::Remove) => self.remove_tree(&ev.devpath),
            _ => match sysfs.device(ev) {
                Some(d)
                    if self.devices.len() < MAX_DEVICES
                        || self.devices.contains_key(&d.devpath) =>
                {
                    self.devices.insert(d.devpath.clone(), d);
                }
                Some(d) => tracing::warn!(
                    "device {} not kept: already {MAX_DEVICES} matching devices",
                    d.devpath
                ),
                None => {
                    self.devices.remove(&ev.devpath);
                }
            },
        }
        self.devices != before
    }

    /// The device at `devpath` and everything below it are gone.
    fn remove_tree(&mut self, devpath: &str) {
        let below = format!("{devpath}/");
        self.devices
            .retain(|p, _| p != devpath && !p.starts_with(&below));
    }

    /// The input that tells the kernel this set.
    pub fn input(&self) -> Input {
        Input::Devices(self.devices.values().cloned().collect())
    }
}

/// The uevent socket: the kernel's multicast group 1, non-blocking, close-on-exec, with a
/// receive buffer of `rcvbuf` bytes (default [`RCVBUF`]; tests make it tiny to overflow it).
fn open_socket(rcvbuf: Option<usize>) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    // A bigger buffer for bursts; beyond the limit root may force it. Neither is fatal.
    match rcvbuf {
        Some(bytes) => setsockopt(&fd, sockopt::RcvBuf, &bytes)?,
        None => {
            if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF).is_err() {
                let _ = setsockopt(&fd, sockopt::RcvBuf, &RCVBUF);
            }
        }
    }
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))?;
    Ok(fd)
}

/// A running device watcher; dropping it stops it and closes the socket.
pub struct DeviceWatcher {
    matchers: watch::Sender<Arc<Vec<DeviceMatch>>>,
    task: AbortHandle,
}

impl DeviceWatcher {
    /// The config changed: match with these from now on (sysfs is walked again).
    pub fn set_matchers(&self, matchers: Vec<DeviceMatch>) {
        let _ = self.matchers.send(Arc::new(matchers));
    }
}

impl Drop for DeviceWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens the uevent socket, walks sysfs (before returning, so the boot sees what is plugged
/// in), and follows uevents on a local task that sends [`Input::Devices`] on `tx` whenever
/// the set of matching devices changes. Must be called on a `LocalSet`.
pub fn watch(
    root: PathBuf,
    matchers: Vec<DeviceMatch>,
    tx: mpsc::Sender<Input>,
) -> io::Result<(DeviceWatcher, Input)> {
    watch_with(root, matchers, tx, None)
}

/// [`watch`] with the socket's receive buffer set to `rcvbuf` bytes (tests overflow it).
pub fn watch_with(
    root: PathBuf,
    matchers: Vec<DeviceMatch>,
    tx: mpsc::Sender<Input>,
    rcvbuf: Option<usize>,
) -> io::Result<(DeviceWatcher, Input)> {
    // The socket first: what happens during the walk waits in it.
    // SAFETY: the socket is owned by the `AsyncFd` and stays open as long as it.
    let fd = unsafe { AsyncFd::register_with_interest(open_socket(rcvbuf)?, Interest::READABLE) }?;
    let mut sysfs = Sysfs {
        root,
        matchers: Arc::new(matchers),
    };
    let mut table = Table {
        devices: sysfs.walk(),
    };
    let first = table.input();
    let (matchers_tx, mut matchers_rx) = watch::channel(sysfs.matchers.clone());
    let task = tokio::task::spawn_local(async move {
        let mut buf = vec![0u8; MAX_UEVENT + 1];
        loop {
            let rewalk = tokio::select! {
                changed = matchers_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    sysfs.matchers = matchers_rx.borrow_and_update().clone();
                    true
                }
                ready = fd.readable() => {
                    let Ok(mut guard) = ready else { return };
                    match guard.try_io(|fd| {
                        recvfrom::<NetlinkAddr>(fd.get_ref().as_raw_fd(), &mut buf)
                            .map_err(io::Error::from)
                    }) {
                        Err(_would_block) => continue,
                        Ok(Ok((len, from))) => {
                            // Only the kernel (port 0) speaks for devices.
                            if from.is_some_and(|a| a.pid() != 0) {
                                continue;
                            }
                            match parse_netlink(&buf[..len.min(buf.len())]) {
                                Ok(_) if len > MAX_UEVENT => {
                                    tracing::warn!("uevent of {len} bytes skipped (limit {MAX_UEVENT})");
                                }
                                Ok(ev) => {
                                    if table.apply(&sysfs, &ev) && tx.send(table.input()).await.is_err() {
                                        return;
                                    }
                                }
                                Err(UeventError::Udev) => {}
                                Err(e) => tracing::warn!("uevent skipped: {e}"),
                            }
                            false
                        }
                        Ok(Err(e)) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                            tracing::warn!("uevents were lost (socket overflow): walking sysfs again");
                            true
                        }
                        Ok(Err(e)) => {
                            tracing::warn!("uevent socket: {e}");
                            false
                        }
                    }
                }
            };
            if rewalk {
                let walker = sysfs.clone();
                let Ok(devices) = tokio::task::spawn_blocking(move || walker.walk()).await else {
                    continue;
                };
                if devices != table.devices {
                    table.devices = devices;
                    if tx.send(table.input()).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok((
        DeviceWatcher {
            matchers: matchers_tx,
            task: task.abort_handle(),
        },
        first,
    ))
}

/// Every device service's matcher in `config`.
pub fn matchers(config: &medic_kernel::Config) -> Vec<DeviceMatch> {
    config
        .services
        .iter()
        .filter_map(|s| match &s.kind {
            medic_kernel::config::Kind::Device { matcher } => Some(matcher.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nl(parts: &[&str]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in parts {
            v.extend_from_slice(p.as_bytes());
            v.push(0);
        }
        v
    }

    const TTY: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0";

    #[test]
    fn a_usb_tty_add() {
        let buf = nl(&[
            &format!("add@{TTY}"),
            "ACTION=add",
            &format!("DEVPATH={TTY}"),
            "SUBSYSTEM=tty",
            "MAJOR=188",
            "MINOR=0",
            "DEVNAME=ttyUSB0",
            "SEQNUM=4242",
        ]);
        let ev = parse_netlink(&buf).unwrap();
        assert_eq!(ev.action, Some(Action::Add));
        assert_eq!(ev.devpath, TTY);
        assert_eq!(ev.props["SUBSYSTEM"], "tty");
        assert_eq!(ev.props["DEVNAME"], "ttyUSB0");
        assert_eq!(ev.props.len(), 7);
    }

    #[test]
    fn remove_change_bind_unbind_of_block_net_and_usb() {
        let loop0 = "/devices/virtual/block/loop0";
        let ev = parse_netlink(&nl(&[
            &format!("remove@{loop0}"),
            "ACTION=remove",
            &format!("DEVPATH={loop0}"),
            "SUBSYSTEM=block",
            "MAJOR=7",
            "MINOR=0",
            "DEVNAME=loop0",
            "DEVTYPE=disk",
            "DISKSEQ=9",
            "SEQNUM=5000",
        ]))
        .unwrap();
        assert_eq!(ev.action, Some(Action::Remove));
        assert_eq!(ev.props["DEVTYPE"], "disk");

        let ev = parse_netlink(&nl(&[
            &format!("change@{loop0}"),
            "ACTION=change",
            &format!("DEVPATH={loop0}"),
            "SUBSYSTEM=block",
            "DISK_MEDIA_CHANGE=1",
            "DEVNAME=loop0",
            "DEVTYPE=disk",
            "SEQNUM=5001",
        ]))
        .unwrap();
        assert_eq!(ev.action, Some(Action::Change));

        let net = "/devices/virtual/net/medtest0";
        let ev = parse_netlink(&nl(&[
            &format!("add@{net}"),
            "ACTION=add",
            &format!("DEVPATH={net}"),
            "SUBSYSTEM=net",
            "INTERFACE=medtest0",
            "IFINDEX=7",
            "SEQNUM=5002",
        ]))
        .unwrap();
        assert_eq!(ev.props["INTERFACE"], "medtest0");

        let usb = "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0";
        let ev = parse_netlink(&nl(&[
            &format!("bind@{usb}"),
            "ACTION=bind",
            &format!("DEVPATH={usb}"),
            "SUBSYSTEM=usb",
            "DEVTYPE=usb_interface",
            "DRIVER=option",
            "PRODUCT=12d1/1506/102",
            "TYPE=0/0/0",
            "INTERFACE=255/255/255",
            "MODALIAS=usb:v12D1p1506d0102dc00dsc00dp00icFFiscFFipFFin00",
            "SEQNUM=5003",
        ]))
        .unwrap();
        assert_eq!(ev.action, Some(Action::Bind));
        assert_eq!(ev.props["DRIVER"], "option");

        let ev = parse_netlink(&nl(&[
            &format!("unbind@{usb}"),
            "ACTION=unbind",
            &format!("DEVPATH={usb}"),
            "SUBSYSTEM=usb",
            "DEVTYPE=usb_interface",
            "SEQNUM=5004",
        ]))
        .unwrap();
        assert_eq!(ev.action, Some(Action::Unbind));
    }

    #[test]
    fn bad_datagrams_are_errors_not_panics() {
        assert_eq!(parse_netlink(b""), Err(UeventError::NoHeader));
        assert_eq!(parse_netlink(b"\0\0"), Err(UeventError::NoHeader));
        assert_eq!(parse_netlink(b"add"), Err(UeventError::NoHeader));
        assert_eq!(
            parse_netlink(b"explode@/devices/x\0"),
            Err(UeventError::NoHeader)
        );
        assert_eq!(
            parse_netlink(b"libudev\0\xfe\xed\xca\xfe"),
            Err(UeventError::Udev)
        );
        assert!(matches!(
            parse_netlink(b"add@/devices/x\0NOEQUALS\0"),
            Err(UeventError::Malformed(_))
        ));
        assert!(matches!(
            parse_netlink(b"add@/devices/x\0DEVPATH=/devices/y\0"),
            Err(UeventError::Malformed(_))
        ));
        assert!(matches!(
            parse_netlink(b"add@/devices/../etc\0"),
            Err(UeventError::Malformed(_))
        ));
        assert_eq!(
            parse_netlink(&vec![b'a'; MAX_UEVENT + 1]),
            Err(UeventError::TooLarge(MAX_UEVENT + 1))
        );
        let many: Vec<String> = (0..200).map(|i| format!("K{i}=v")).collect();
        let mut parts = vec!["add@/devices/x".to_string()];
        parts.extend(many);
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        assert_eq!(parse_netlink(&nl(&refs)), Err(UeventError::TooManyKeys));
        // Invalid UTF-8 in a value is kept, lossily; in the header it is refused.
        assert!(parse_netlink(b"add@/devices/x\0K=\xff\0").is_ok());
        assert_eq!(
            parse_netlink(b"add@/devices/\xff\0"),
            Err(UeventError::NoHeader)
        );
    }

    #[test]
    fn a_sysfs_uevent_file() {
        let ev = parse_sysfs("/devices/virtual/net/lo", b"INTERFACE=lo\nIFINDEX=1\n").unwrap();
        assert_eq!(ev.action, None);
        assert_eq!(ev.props["IFINDEX"], "1");
        assert!(parse_sysfs("/devices/x", b"").unwrap().props.is_empty());
        assert!(parse_sysfs("/devices/x", b"garbage\n").is_err());
    }

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fake sysfs: a Huawei stick's tty under its USB device, a loop disk, links from
    /// `class` and `bus`.
    fn fake_sysfs(name: &str) -> (Scratch, Sysfs) {
        let root =
            std::env::temp_dir().join(format!("medic-devices-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = Scratch(root.clone());
        let usb = root.join("devices/pci0000:00/0000:00:14.0/usb1/1-2");
        let port = usb.join("1-2:1.0/ttyUSB0");
        let tty = port.join("tty/ttyUSB0");
        std::fs::create_dir_all(&tty).unwrap();
        std::fs::write(usb.join("idVendor"), "12d1\n").unwrap();
        std::fs::write(usb.join("uevent"), "DEVTYPE=usb_device\nDRIVER=usb\n").unwrap();
        std::fs::create_dir_all(root.join("bus/usb-serial/drivers/option1")).unwrap();
        std::os::unix::fs::symlink(
            root.join("bus/usb-serial/drivers/option1"),
            port.join("driver"),
        )
        .unwrap();
        std::fs::write(tty.join("uevent"), "MAJOR=188\nMINOR=0\nDEVNAME=ttyUSB0\n").unwrap();
        std::fs::create_dir_all(root.join("class/tty")).unwrap();
        std::os::unix::fs::symlink(root.join("class/tty"), tty.join("subsystem")).unwrap();
        std::os::unix::fs::symlink(&tty, root.join("class/tty/ttyUSB0")).unwrap();
        let lp = root.join("devices/virtual/block/loop0");
        std::fs::create_dir_all(&lp).unwrap();
        std::fs::write(
            lp.join("uevent"),
            "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("class/block")).unwrap();
        std::os::unix::fs::symlink(root.join("class/block"), lp.join("subsystem")).unwrap();
        std::os::unix::fs::symlink(&lp, root.join("class/block/loop0")).unwrap();
        // A broken link (a device gone mid-walk) is skipped.
        std::os::unix::fs::symlink(root.join("devices/gone"), root.join("class/block/gone"))
            .unwrap();
        let matchers = vec![
            DeviceMatch {
                subsystem: Some("tty".into()),
                name: Some("ttyUSB*".into()),
                driver: Some("option1".into()),
                attrs: [("idVendor".to_string(), "12d1".to_string())].into(),
                ..DeviceMatch::default()
            },
            DeviceMatch {
                subsystem: Some("block".into()),
                name: Some("loop*".into()),
                ..DeviceMatch::default()
            },
        ];
        let sysfs = Sysfs {
            root,
            matchers: Arc::new(matchers),
        };
        (dir, sysfs)
    }

    #[test]
    fn coldplug_finds_the_matching_devices_with_ancestors_attrs_and_driver() {
        let (_dir, sysfs) = fake_sysfs("walk");
        let found = sysfs.walk();
        let paths: Vec<&str> = found.keys().map(String::as_str).collect();
        assert_eq!(paths, [TTY, "/devices/virtual/block/loop0"]);
        let tty = &found[TTY];
        assert_eq!(tty.name, "ttyUSB0");
        assert_eq!(tty.devname.as_deref(), Some("/dev/ttyUSB0"));
        assert_eq!(tty.driver.as_deref(), Some("option1"));
        assert_eq!(tty.attrs["idVendor"], "12d1");
        assert_eq!(
            found["/devices/virtual/block/loop0"].devtype.as_deref(),
            Some("disk")
        );
    }

    #[test]
    fn the_table_follows_add_and_remove_and_ignores_what_no_service_matches() {
        let (_dir, sysfs) = fake_sysfs("table");
        let mut table = Table::default();
        let add = |devpath: &str, props: &[(&str, &str)]| Uevent {
            action: Some(Action::Add),
            devpath: devpath.into(),
            props: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let tty = add(TTY, &[("SUBSYSTEM", "tty"), ("DEVNAME", "ttyUSB0")]);
        assert!(table.apply(&sysfs, &tty));
        assert!(!table.apply(&sysfs, &tty), "the same again changes nothing");
        let mouse = add("/devices/virtual/input/mouse0", &[("SUBSYSTEM", "input")]);
        assert!(!table.apply(&sysfs, &mouse));
        // The USB device above the tty goes: the tty goes with it.
        let mut gone = add(
            "/devices/pci0000:00/0000:00:14.0/usb1/1-2",
            &[("SUBSYSTEM", "usb")],
        );
        gone.action = Some(Action::Remove);
        assert!(table.apply(&sysfs, &gone));
        assert!(table.devices.is_empty());
        let Input::Devices(set) = table.input() else {
            panic!("not a device set")
        };
        assert!(set.is_empty());
    }
}
