//! Taking over from a daemon that crashed (DESIGN §13), the OS side: which recorded processes
//! still run and are still the same, which processes of this state dir nobody accounts for,
//! stopping those, and reading an adopted process's output again.
//!
//! * **The same process**: its pid, its start time (field 22 of `/proc/PID/stat`, clock ticks
//!   since boot: a reused pid has another) and its `MEDIC_INSTANCE` (from
//!   `/proc/PID/environ`) all agree with the state file, on the same boot
//!   (`/proc/sys/kernel/random/boot_id`). Its end is then watched through a pidfd, which works
//!   whoever its parent is: a new daemon is not the parent of what the old one started (the
//!   orphans went to the old daemon's own subreaper, or to PID 1), so `waitpid` cannot see it.
//!   Without pidfds (Linux < 5.3) its end could not be noticed at once: it is stopped and
//!   started afresh instead of adopted.
//! * **Tags**: `MEDIC_INSTANCE` is `DIRTAG.JOB`, `DIRTAG` a digest of the state dir's path, so
//!   every process a daemon of this state dir started (and what they forked, which inherits
//!   the environment) can be found in `/proc` after a crash. Whatever carries this state
//!   dir's tag and was not adopted is stopped before the new daemon starts anything: SIGTERM
//!   (to its group if it leads one), [`STRAY_GRACE`] to end, then SIGKILL.
//! * **Output**: a service's stdout and stderr are pipes whose read ends died with the old
//!   daemon (a write meanwhile gets SIGPIPE or EPIPE). When `/proc/PID/fd/1` and `2` are still
//!   the pipes the state file names (by inode), they are opened again and read as before.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal as NixSignal;

use crate::process;

/// How long processes nobody accounts for get between SIGTERM and SIGKILL.
pub const STRAY_GRACE: Duration = Duration::from_secs(2);

/// This boot's id; empty when the kernel does not say.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock of `std::time::Instant` on Linux).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The tag of the state dir `dir`: 16 hex digits of a digest of its canonical path.
pub fn dir_tag(dir: &Path) -> String {
    let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let digest = medic_kernel::trace::bytes_digest(path.as_os_str().as_encoded_bytes());
    format!("{digest:016x}")
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot; `None`
/// when it is gone, or dead and not yet reaped (a zombie: its parent is no longer a daemon
/// that would reap it, and it runs nothing).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, tail) = text.rsplit_once(')')?;
    let mut fields = tail.split_whitespace();
    // The first is field 3, the state.
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The `MEDIC_INSTANCE` in `pid`'s environment (as it was exec'd).
pub fn instance_of(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"MEDIC_INSTANCE="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The inode of a pipe.
pub fn inode(fd: &OwnedFd) -> Option<u64> {
    // `st_ino` is narrower than 64 bits on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::stat::fstat(fd).ok().map(|s| s.st_ino as u64)
}

/// Every process whose `MEDIC_INSTANCE` starts with `prefix` and is not in `keep` (nor this
/// daemon).
pub fn tagged(prefix: &str, keep: &BTreeSet<String>) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            instance_of(pid).is_some_and(|tag| tag.starts_with(prefix) && !keep.contains(&tag))
        })
        .collect()
}

/// How long what got SIGKILL may take to be gone before boot goes on anyway.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// Stops `pids`: SIGTERM (to the group of a group leader), up to `grace` for them to end,
/// then SIGKILL to what is left, and up to [`KILL_WAIT`] for that to end too (a port the old
/// process held is free when the new one starts). Waits on pidfds, so a pid reused meanwhile
/// is never hit.
pub fn stop(pids: &[u32], grace: Duration) {
    let targets: Vec<(u32, Option<OwnedFd>)> =
        pids.iter().map(|&p| (p, process::pidfd_open(p))).collect();
    for (pid, _) in &targets {
        signal(*pid, NixSignal::SIGTERM);
    }
    if wait_all(&targets, Instant::now() + grace) {
        return;
    }
    for (pid, fd) in &targets {
        match fd {
            Some(fd) => {
                // SAFETY: pidfd_send_signal on a pidfd we own; no siginfo.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
            }
            None => signal(*pid, NixSignal::SIGKILL),
        }
    }
    wait_all(&targets, Instant::now() + KILL_WAIT);
}

/// Waits until every target has ended, or `deadline`; whether all have. A target without a
/// pidfd (Linux < 5.3) cannot be watched: then the whole time is waited.
fn wait_all(targets: &[(u32, Option<OwnedFd>)], deadline: Instant) -> bool {
    if targets.iter().any(|(_, fd)| fd.is_none()) {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        return false;
    }
    loop {
        let mut fds: Vec<libc::pollfd> = targets
            .iter()
            .filter_map(|(_, fd)| fd.as_ref())
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if fds.is_empty() {
            return true;
        }
        if left.is_zero() {
            return false;
        }
        // SAFETY: poll on descriptors we own, for at most `left`.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                left.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
        if fds.iter().all(|f| f.revents != 0) {
            return true;
        }
    }
}

/// `sig` to the group `pid` leads, or to `pid` alone.
fn signal(pid: u32, sig: NixSignal) {
    let leads = process::read_stat(pid).is_some_and(|s| s.pgrp == pid);
    let _ = match leads {
        true => process::signal_group(pid, sig),
        false => process::signal_main(pid, sig),
    };
}

/// Opens the stdout and stderr pipes of `pid` again, those that are still the pipes of
/// inodes `pipes`.
pub fn reattach(pid: u32, pipes: [Option<u64>; 2]) -> [Option<OwnedFd>; 2] {
    let open = |fd: u32, inode: Option<u64>| -> Option<OwnedFd> {
        let path = format!("/proc/{pid}/fd/{fd}");
        let link = std::fs::read_link(&path).ok()?;
        if link.as_os_str() != format!("pipe:[{}]", inode?).as_str() {
            return None;
        }
        let c = std::ffi::CString::new(path).ok()?;
        // SAFETY: open of a NUL-terminated path; the descriptor is ours alone.
        let raw = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        // SAFETY: a fresh descriptor from open.
        (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
    };
    [open(1, pipes[0]), open(2, pipes[1])]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    #[test]
    fn a_process_is_known_by_its_start_time_and_tag() {
        let mut child = Command::new("sleep")
            .arg("30")
            .env("MEDIC_INSTANCE", "feedface.7")
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .expect("sleep");
        let pid = child.id();
        // spawn returns when the exec has begun; its new environment is set up just after.
        let t0 = Instant::now();
        while instance_of(pid).is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no environment after exec"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(start_ticks(pid).is_some());
        assert_eq!(start_ticks(pid), start_ticks(pid), "stable");
        assert_eq!(instance_of(pid).as_deref(), Some("feedface.7"));
        assert_eq!(tagged("feedface.", &BTreeSet::new()), vec![pid]);
        let keep = BTreeSet::from(["feedface.7".to_string()]);
        assert!(tagged("feedface.", &keep).is_empty());
        let stdout: OwnedFd = child.stdout.take().expect("piped").into();
        let ino = inode(&stdout);
        let [out, err] = reattach(pid, [ino, Some(1)]);
        assert!(out.is_some(), "its stdout is the pipe of that inode");
        assert!(err.is_none(), "its stderr is not a pipe of inode 1");
        let started = Instant::now();
        stop(&[pid], Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "sleep ends at SIGTERM"
        );
        let status = child.wait().expect("wait");
        assert!(!status.success());
        assert!(boot_id().len() >= 32);
        assert!(monotonic_ns() > 0);
    }

    #[test]
    fn what_ignores_sigterm_gets_sigkill_after_the_grace() {
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 1; done"])
            .process_group(0)
            .spawn()
            .expect("sh");
        // Until the shell has set its trap, a TERM would end it at once.
        let pid = child.id();
        let t0 = Instant::now();
        let ignores_term = || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
        };
        while !ignores_term() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the trap was never set"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        stop(&[pid], Duration::from_millis(300));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().expect("wait").signal(), Some(9));
    }
}
