//! sd_notify readiness (`ready = "sd-notify"`): one datagram socket per process, named by
//! `NOTIFY_SOCKET`, and the check of who sent a `READY=1`.
//!
//! * A service running as the daemon's user gets a socket file in the state dir's `notify/`
//!   directory (mode 0700, like the state dir).
//! * A service with `user =` cannot reach that directory, and opening it to everyone would
//!   let any local user send `READY=1`. It gets a socket in the abstract namespace instead
//!   (`NOTIFY_SOCKET=@medic/…`, which sd_notify(3) understands), with a random name.
//! * Either way the socket has `SO_PASSCRED`: the kernel attaches the sender's pid and uid to
//!   every datagram, and `READY=1` counts only from a process of the service: its main
//!   process, or one in its process group or session. A sender that has already exited (a
//!   `systemd-notify` the service ran and reaped) can no longer be looked up: then its uid
//!   must be the service's. Anything else is ignored, with a log line.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A bound sd_notify socket.
#[derive(Debug)]
pub struct NotifySocket {
    sock: UnixDatagram,
    /// `NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace.
    address: PathBuf,
    /// The socket file, removed with the process; `None` in the abstract namespace.
    pub file: Option<PathBuf>,
}

impl NotifySocket {
    /// A socket file at `path` (replacing a stale one).
    pub fn bind_file(path: &Path) -> io::Result<NotifySocket> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path)?;
        // A `group =` service runs with the daemon's uid but another gid.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        NotifySocket::new(sock, path.to_path_buf(), Some(path.to_path_buf()))
    }

    /// A socket in the abstract namespace, reachable whatever user the service runs as, named
    /// `medic/<daemon pid>/<tag>/<random>`.
    pub fn bind_abstract(tag: &str) -> io::Result<NotifySocket> {
        use std::os::linux::net::SocketAddrExt;
        let mut last = io::Error::other("no name tried");
        for _ in 0..4 {
            let name = format!("medic/{}/{tag}/{:016x}", std::process::id(), random());
            let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
            match UnixDatagram::bind_addr(&addr) {
                Ok(sock) => return NotifySocket::new(sock, format!("@{name}").into(), None),
                // Someone took the name first: another one.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn new(
        sock: UnixDatagram,
        address: PathBuf,
        file: Option<PathBuf>,
    ) -> io::Result<NotifySocket> {
        sock.set_nonblocking(true)?;
        setsockopt(&sock, sockopt::PassCred, &true).map_err(io::Error::from)?;
        Ok(NotifySocket {
            sock,
            address,
            file,
        })
    }

    /// What `NOTIFY_SOCKET` must say.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// Waits for a `READY=1` from a process of the service whose main process is `main`
    /// (also its process group and session) and whose processes run as `uid`. Returns when
    /// one comes; never if the socket fails. `service` names it in the log.
    pub async fn ready(self, main: u32, uid: u32, service: String) {
        let fd: OwnedFd = self.sock.into();
        // SAFETY: the socket is owned by the `AsyncFd` and stays open as long as it.
        let Ok(afd) = (unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }) else {
            return std::future::pending().await;
        };
        let mut buf = vec![0u8; 4096];
        let mut ignored = 0u64;
        loop {
            let Ok(mut guard) = afd.readable().await else {
                return std::future::pending().await;
            };
            let received = guard.try_io(|fd| receive(fd.get_ref(), &mut buf));
            let (n, sender) = match received {
                Ok(Ok(got)) => got,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => {
                    tracing::warn!(service = %service, "sd_notify socket: {e}");
                    return std::future::pending().await;
                }
                Err(_would_block) => continue,
            };
            if !buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") {
                continue;
            }
            match sender {
                Some((pid, from)) if from_service(pid, from, main, uid) => return,
                _ => {
                    ignored += 1;
                    // Said once per power of two, so a flood cannot flood the log.
                    if ignored.is_power_of_two() {
                        let who = sender.map_or("an unknown sender".to_string(), |(p, u)| {
                            format!("pid {p} (uid {u})")
                        });
                        tracing::warn!(
                            service = %service,
                            "ignored READY=1 from {who}: not a process of the service \
                             ({ignored} ignored so far)"
                        );
                    }
                }
            }
        }
    }
}

/// One datagram into `buf`: its length, and its sender's (pid, uid) when the kernel said.
fn receive(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Option<(u32, u32)>)> {
    let mut space = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut sender = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            // Descriptors someone passed are closed when the owned message drops.
            if let ControlMessageOwned::ScmCredentials(c) = cmsg {
                sender = Some((c.pid() as u32, c.uid()));
            }
        }
    }
    Ok((msg.bytes, sender))
}

/// Whether a datagram from process `pid` running as `uid` comes from the service whose main
/// process is `main` and whose processes run as `service_uid`.
pub fn from_service(pid: u32, uid: u32, main: u32, service_uid: u32) -> bool {
    if pid == main {
        return true;
    }
    match crate::process::read_stat(pid) {
        Some(s) => s.pgrp == main || s.session == main,
        // Gone already (a helper that sent and exited): its uid is all there is to go by.
        None => pid != 0 && uid == service_uid,
    }
}

/// 64 random bits (getrandom; without it, early at boot, the clock and the pid).
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, libc::GRND_NONBLOCK) };
    if n == 8 {
        return u64::from_ne_bytes(bytes);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_services_processes_count() {
        let me = std::process::id();
        let my_uid = nix::unistd::geteuid().as_raw();
        let stat = crate::process::read_stat(me).unwrap();
        assert!(from_service(me, my_uid, me, 12345), "the main process");
        assert!(
            from_service(me, my_uid, stat.session, 12345),
            "in its session"
        );
        // A live process of another session and group is refused whatever its uid.
        assert!(!from_service(me, my_uid, 4_000_000, my_uid));
        // A sender that is gone: by uid.
        assert!(from_service(4_000_001, 7, 4_000_000, 7));
        assert!(!from_service(4_000_001, 8, 4_000_000, 7));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_sender_is_known_and_a_ready_from_the_service_is_taken() {
        use std::os::linux::net::SocketAddrExt;
        let sock = NotifySocket::bind_abstract("test").unwrap();
        let address = sock.address().to_str().unwrap().to_string();
        assert!(address.starts_with("@medic/"), "{address}");
        let addr = SocketAddr::from_abstract_name(&address.as_bytes()[1..]).unwrap();
        let me = std::process::id();
        let my_uid = nix::unistd::geteuid().as_raw();
        let sender = UnixDatagram::unbound().unwrap();
        sender.send_to_addr(b"READY=1", &addr).unwrap();
        // The kernel names the sender: this process, which is no process of a service whose
        // main process is another.
        let fd: OwnedFd = sock.sock.try_clone().unwrap().into();
        let mut buf = [0u8; 64];
        let (n, from) = receive(&fd, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert_eq!(from, Some((me, my_uid)));
        assert!(!from_service(me, my_uid, 4_000_000, my_uid));
        // The same from the service's own main process is taken.
        sender.send_to_addr(b"STATUS=x\nREADY=1\n", &addr).unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            sock.ready(me, 12345, "t".into()),
        )
        .await
        .expect("taken");
    }
}
