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
