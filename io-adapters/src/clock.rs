//! The wall clock, for the kernel's `at` times (DESIGN.md §11): read at start, and again
//! whenever the clock is stepped (settimeofday, an NTP client's first sync), which a
//! `CLOCK_REALTIME` timerfd armed with `TFD_TIMER_CANCEL_ON_SET` reports without polling: the
//! daemon wakes for a step, never on a timer of its own.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use medic_kernel::WallClock;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// For tests: names a file holding milliseconds added to every reading of the wall clock, read
/// again at each reading (at start, and at each step of the real clock). The end-to-end tests
/// fake a clock that boots in 1970 and is then set by NTP with it, without moving the host's
/// clock for everything else on the machine.
pub const TEST_OFFSET_ENV: &str = "MEDIC_TEST_WALL_OFFSET_FILE";

/// Reads the wall clock: Unix ms, the local offset from UTC (`TZ`), and this host's number.
pub fn read(host: u64) -> WallClock {
    let unix_ms = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    };
    let unix_ms = unix_ms.saturating_add(test_offset_ms());
    WallClock {
        unix_ms,
        utc_offset_s: utc_offset(unix_ms.div_euclid(1000)),
        host,
    }
}

/// The offset [`TEST_OFFSET_ENV`] names, 0 without one (or one that does not parse).
fn test_offset_ms() -> i64 {
    let Some(path) = std::env::var_os(TEST_OFFSET_ENV) else {
        return 0;
    };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    match text.trim().parse() {
        Ok(ms) => ms,
        Err(e) => {
            tracing::warn!("{TEST_OFFSET_ENV}: {}: {e}", path.to_string_lossy());
            0
        }
    }
}

/// The local time's offset from UTC at `unix_s`, as the C library sees `TZ` (0 when it
/// cannot say).
fn utc_offset(unix_s: i64) -> i32 {
    let t = unix_s as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills; both pointers are valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return 0;
    }
    i32::try_from(tm.tm_gmtoff).unwrap_or(0)
}

/// A number fixed for this host, for `jitter`: from `/etc/machine-id`, else the host name.
pub fn host_number() -> u64 {
    let id = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    medic_kernel::trace::fnv1a(0, id.trim().as_bytes())
}

/// Tells when the wall clock is stepped.
pub struct Steps {
    fd: AsyncFd<OwnedFd>,
}

impl Steps {
    /// A `CLOCK_REALTIME` timerfd set far in the future with `TFD_TIMER_CANCEL_ON_SET`.
    pub fn new() -> io::Result<Steps> {
        // SAFETY: plain syscalls; the fd is owned at once.
        let raw = unsafe {
            libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        arm(&fd)?;
        // SAFETY: the timerfd is owned by the `AsyncFd` and stays open as long as it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Steps { fd })
    }

    /// Waits for the next step of the clock.
    pub async fn stepped(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 8];
            // SAFETY: reads at most 8 bytes into `buf`.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n >= 0 {
                continue; // expired (it never should, set in the year 2^40): wait again
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => guard.clear_ready(),
                // The clock was set: arm again for the next step, and say so.
                Some(libc::ECANCELED) => {
                    arm(self.fd.get_ref())?;
                    return Ok(());
                }
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
    }
}

/// Far away on the wall clock: in 36,812 (2^40 s) where `time_t` has 64 bits; where it has 32
/// (armv7 musl, as the `libc` crate declares it), its largest value, in 2038 — not `2^40`
/// cast down to 0, which would disarm the timer and so never see the clock set.
#[cfg(target_pointer_width = "64")]
const FAR_AWAY: libc::time_t = 1 << 40;
#[cfg(not(target_pointer_width = "64"))]
const FAR_AWAY: libc::time_t = libc::time_t::MAX;

/// Sets the timer far away, to be cancelled (and read as ECANCELED) when the clock is set.
fn arm(fd: &OwnedFd) -> io::Result<()> {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: FAR_AWAY,
            tv_nsec: 0,
        },
    };
    // SAFETY: `spec` is valid for the call; the old value is not asked for.
    let rc = unsafe {
        libc::timerfd_settime(
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_reads_now_and_the_host_number_is_stable() {
        let w = read(host_number());
        assert!(w.unix_ms > 1_700_000_000_000, "{w:?}");
        assert!(w.utc_offset_s.abs() <= 14 * 3600);
        assert_eq!(w.host, host_number());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_step_detector_can_be_set_up_and_is_quiet_while_the_clock_is() {
        let mut steps = Steps::new().expect("a timerfd");
        let quiet =
            tokio::time::timeout(std::time::Duration::from_millis(50), steps.stepped()).await;
        assert!(quiet.is_err(), "no step, no wake-up");
    }
}
