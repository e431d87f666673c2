//! File descriptors at daemon start: the daemon's soft limit raised to its hard limit (each
//! running service costs it a few descriptors), and every descriptor it inherited above 2
//! marked close-on-exec, so that none leaks into the services it starts (whatever user they
//! run as).

use std::io;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the `(old, new)` soft limits.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // `rlim_t` is 32 bits on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    Ok((old as u64, lim.rlim_cur as u64))
}

/// Descriptors a service may cost the daemon while it starts and runs: its output pipe, its
/// readiness pipe or socket, its pidfd, and one to spare.
const PER_SERVICE: u64 = 4;

/// How many descriptors the daemon keeps free for itself, out of a soft limit of `limit`:
/// a quarter, at least 8 and at most 64. With them, `status`, `stop` and the daemon's own
/// files still work when more services are configured than the limit allows to run.
pub fn reserve(limit: u64) -> u64 {
    (limit / 4).clamp(8, 64)
}

/// Whether starting one more service would leave the daemon fewer than [`reserve`] free
/// descriptors; if so, why, in words for the log and the service's history. `None` when
/// there is room, or when it cannot be told (no `/proc`): then a spawn finds out itself.
///
/// A `restart` (of a service whose process ran) may dip into half the reserve: the process
/// that ended freed what it needs, and it must not lose them to services that never ran
/// (their output pipes may not be closed yet when the restart is asked for).
///
/// Costs one `getrlimit` and a listing of `/proc/self/fd` (as many entries as the daemon has
/// descriptors open).
pub fn short_of_descriptors(restart: bool) -> Option<String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    // `rlim_t` is 32 bits on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let limit = lim.rlim_cur as u64;
    let open = match std::fs::read_dir("/proc/self/fd") {
        // Less the descriptor of the listing itself.
        Ok(dir) => (dir.count() as u64).saturating_sub(1),
        Err(e) if crate::process::is_resource_shortage(e.raw_os_error()) => {
            return Some(format!("the daemon is out of file descriptors ({e})"));
        }
        Err(_) => return None,
    };
    shortage(limit, open, restart)
}

/// Whether `open` descriptors out of a soft limit of `limit` leave room for one more service
/// and the [`reserve`] (half of it for a `restart`); if not, why.
fn shortage(limit: u64, open: u64, restart: bool) -> Option<String> {
    let keep = match restart {
        true => reserve(limit) / 2,
        false => reserve(limit),
    };
    (limit.saturating_sub(open) < keep + PER_SERVICE).then(|| {
        format!(
            "the daemon is short of file descriptors: {open} of {limit} open, {keep} kept \
             for the control socket"
        )
    })
}

/// Marks every open descriptor above 2 close-on-exec. Call it first thing, before the daemon
/// opens anything of its own (everything medic opens is close-on-exec already).
///
/// `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)` (Linux 5.11); on older kernels every descriptor
/// `/proc/self/fd` lists. Returns how many were marked on the fallback path (0 with
/// `close_range`, which does not say).
pub fn cloexec_inherited() -> io::Result<usize> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: a system call with integer arguments.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == 0 {
        return Ok(0);
    }
    let fds: Vec<libc::c_int> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    let mut marked = 0;
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; one that was the directory listing and is
        // closed by now just fails with EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0
            && flags & libc::FD_CLOEXEC == 0
            && unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } == 0
        {
            marked += 1;
        }
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        // A descriptor without FD_CLOEXEC, as a parent would leave one.
        // SAFETY: dup of stdin's number into a fresh descriptor we own.
        let fd = unsafe { libc::fcntl(0, libc::F_DUPFD, 3) };
        assert!(fd > 2);
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: fcntl on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, 0);
        cloexec_inherited().unwrap();
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        // SAFETY: fcntl on descriptor 0.
        let stdin = unsafe { libc::fcntl(0, libc::F_GETFD) };
        assert_eq!(stdin & libc::FD_CLOEXEC, 0, "0, 1 and 2 are left alone");
    }

    #[test]
    fn the_reserve_is_a_quarter_between_8_and_64() {
        assert_eq!(reserve(16), 8);
        assert_eq!(reserve(100), 25);
        assert_eq!(reserve(256), 64);
        assert_eq!(reserve(1 << 20), 64);
    }

    #[test]
    fn a_limit_near_the_open_descriptors_is_a_shortage() {
        // 256: 64 kept, 4 for the next service.
        assert_eq!(shortage(256, 188, false), None);
        let why = shortage(256, 189, false).expect("short");
        assert!(why.contains("189 of 256 open, 64 kept"), "{why}");
        assert!(shortage(256, 300, false).is_some());
        assert!(
            shortage(8, 0, false).is_some(),
            "a limit below the reserve runs nothing"
        );
        // A restart may use half the reserve.
        assert_eq!(shortage(256, 220, true), None);
        let why = shortage(256, 221, true).expect("short");
        assert!(why.contains("221 of 256 open, 32 kept"), "{why}");
        // This test process is far from its limit.
        assert_eq!(short_of_descriptors(false), None);
    }

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let (old, new) = raise_nofile_limit().unwrap();
        assert!(new >= old);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
