//! The daemon's own log (stderr), made unable to stall or kill the supervisor.
//!
//! * **Never blocks.** Log records go into a bounded in-memory queue ([`QUEUE_BYTES`]); one
//!   dedicated thread takes the whole queue at a time and writes it to file descriptor 2. A reader that stalls or is slow
//!   (a pipe nobody reads, a serial console) blocks only that thread. When the queue is full a
//!   record is dropped and counted, and once the writer catches up it writes
//!   `N log lines dropped` where they were lost.
//! * **Never fatal.** A write that fails (closed pipe, `/dev/full`, a revoked terminal) loses
//!   that batch and nothing else: no panic, no abort, no retry loop.
//! * **Bounded per service.** A service's output lines are copied into the daemon log through
//!   a token bucket per service ([`LineLimiter`]: a burst of [`BURST_LINES`], then
//!   [`LINES_PER_SEC`] lines a second), each cut to [`MAX_LOGGED_LINE_BYTES`] and with control
//!   characters made visible; what is held back is counted (`N lines suppressed`). The
//!   service's own ring (`medic logs`) keeps every line within its own bound.
//!
//! The daemon's tracing subscriber [`push`]es each formatted line; use [`line`] for plain
//! messages, and [`flush`] with a timeout before the process exits.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, SystemTime};

use crate::terminal;

/// Bytes of log records queued while the writer thread is behind; more are dropped and
/// counted. With the batch the writer holds, at most twice this is in memory.
pub const QUEUE_BYTES: usize = 64 * 1024;
/// The writer keeps its emptied batch buffer for the next swap only up to this capacity.
const SPARE_BYTES: usize = 8 * 1024;
/// Lines of one service copied into the daemon log in a burst before the rate applies.
pub const BURST_LINES: u64 = 200;
/// Lines of one service copied into the daemon log per second, once the burst is spent.
pub const LINES_PER_SEC: u64 = 20;
/// A service's line is cut to this many bytes in the daemon log (`medic logs` has it whole).
pub const MAX_LOGGED_LINE_BYTES: usize = 1024;

struct Queue {
    /// Records, each ending with a newline.
    buf: Vec<u8>,
    /// Records dropped since the writer last took the queue.
    dropped: u64,
    /// The writer thread is writing a batch.
    writing: bool,
    /// The writer thread could not be started: records are dropped at once.
    no_writer: bool,
}

struct Sink {
    queue: Mutex<Queue>,
    /// Signalled when a record is queued.
    wake: Condvar,
    /// Signalled when the writer has written a batch.
    idle: Condvar,
}

static SINK: Sink = Sink {
    queue: Mutex::new(Queue {
        buf: Vec::new(),
        dropped: 0,
        writing: false,
        no_writer: false,
    }),
    wake: Condvar::new(),
    idle: Condvar::new(),
};
static START: Once = Once::new();

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // Nothing panics while holding the lock; a poisoned one is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sink, with its writer thread started on first use.
fn sink() -> &'static Sink {
    START.call_once(|| {
        let started = std::thread::Builder::new()
            .name("medic-log".into())
            .stack_size(64 * 1024)
            .spawn(writer_thread);
        if started.is_err() {
            lock(&SINK.queue).no_writer = true;
        }
    });
    &SINK
}

/// Queues one record (a newline is added when it lacks one); never waits for the writer.
/// Returns whether it was queued (`false`: the queue was full and it was counted as dropped).
pub fn push(record: &[u8]) -> bool {
    if record.is_empty() {
        return true;
    }
    let sink = sink();
    let mut q = lock(&sink.queue);
    let newline = usize::from(record.last() != Some(&b'\n'));
    if q.no_writer || q.buf.len() + record.len() + newline > QUEUE_BYTES {
        // One record larger than the whole queue is cut rather than lost, when there is room.
        if !q.no_writer && q.buf.is_empty() {
            let cut = QUEUE_BYTES - 4;
            let end = (0..=cut).rev().find(|&i| is_char_boundary(record, i));
            q.buf.extend_from_slice(&record[..end.unwrap_or(0)]);
            q.buf.extend_from_slice("…\n".as_bytes());
            drop(q);
            sink.wake.notify_one();
            return true;
        }
        q.dropped += 1;
        return false;
    }
    q.buf.extend_from_slice(record);
    if newline == 1 {
        q.buf.push(b'\n');
    }
    drop(q);
    sink.wake.notify_one();
    true
}

fn is_char_boundary(bytes: &[u8], i: usize) -> bool {
    i == 0 || i >= bytes.len() || (bytes[i] & 0xc0) != 0x80
}

/// Queues a plain line (no timestamp or level): the daemon's own last words, config errors.
pub fn line(text: &str) -> bool {
    push(text.as_bytes())
}

/// Waits until everything queued has been written, at most `timeout`; whether it was.
pub fn flush(timeout: Duration) -> bool {
    if !START.is_completed() {
        return true;
    }
    let sink = &SINK;
    let deadline = std::time::Instant::now() + timeout;
    let mut q = lock(&sink.queue);
    while !q.no_writer && (q.writing || !q.buf.is_empty() || q.dropped > 0) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        q = match sink.idle.wait_timeout(q, left) {
            Ok((q, _)) => q,
            Err(e) => e.into_inner().0,
        };
    }
    true
}

fn writer_thread() {
    let sink = &SINK;
    let mut spare = Vec::new();
    loop {
        let (mut batch, dropped) = {
            let mut q = lock(&sink.queue);
            while q.buf.is_empty() && q.dropped == 0 {
                q = sink.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            q.writing = true;
            let batch = std::mem::replace(&mut q.buf, std::mem::take(&mut spare));
            (batch, std::mem::take(&mut q.dropped))
        };
        // A failed write loses this batch only; the next one is tried afresh.
        let _ = write_stderr(&batch);
        if dropped > 0 {
            let note = format!(
                "{}  WARN medic: {dropped} log lines dropped: stderr was not keeping up\n",
                utc_now()
            );
            let _ = write_stderr(note.as_bytes());
        }
        batch.clear();
        if batch.capacity() > SPARE_BYTES {
            // After a burst, only the queue keeps a large buffer.
            batch = Vec::new();
        }
        let mut q = lock(&sink.queue);
        q.writing = false;
        spare = batch;
        drop(q);
        sink.idle.notify_all();
    }
}

/// Writes all of `bytes` to file descriptor 2, waiting as long as it takes (this is the
/// writer thread: nobody else waits for it).
fn write_stderr(mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid buffer to a descriptor number; a closed one is EBADF.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            // stderr was left non-blocking by whoever opened it: wait until it takes more.
            io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: 2,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, -1) } < 0
                    && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted
                {
                    return Err(io::Error::last_os_error());
                }
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Now as `2026-01-31T12:34:56.789012Z`, the way the daemon's log lines start.
fn utc_now() -> String {
    utc(SystemTime::now())
}

/// `t` as `2026-01-31T12:34:56.789012Z`: RFC 3339 in UTC, to the microsecond (a time before
/// 1970 as 1970-01-01T00:00:00.000000Z).
pub fn utc(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

// ----- services' lines into the daemon log ---------------------------------------------------

/// One service's allowance: time credit in nanoseconds, a line costing `1 s / LINES_PER_SEC`.
#[derive(Debug)]
struct Bucket {
    credit_ns: u64,
    last_ns: u64,
    suppressed: u64,
}

const LINE_COST_NS: u64 = 1_000_000_000 / LINES_PER_SEC;
const CREDIT_CAP_NS: u64 = BURST_LINES * LINE_COST_NS;
/// Buckets kept before the idle ones (full, nothing held back) are forgotten.
const PRUNE_AT: usize = 64;

impl Bucket {
    fn refill(&mut self, now_ns: u64) {
        let gained = now_ns.saturating_sub(self.last_ns);
        self.credit_ns = self.credit_ns.saturating_add(gained).min(CREDIT_CAP_NS);
        self.last_ns = self.last_ns.max(now_ns);
    }
}

/// Token buckets of services' output lines into the daemon log; see the module docs.
#[derive(Debug, Default)]
pub struct LineLimiter {
    buckets: BTreeMap<String, Bucket>,
}

impl LineLimiter {
    /// Whether a line of `service` read at `now_ns` (any monotonic nanoseconds) goes into the
    /// daemon log: `Some(n)` yes, and `n` lines were held back since the last one that did;
    /// `None`: hold it back (it is counted).
    pub fn admit(&mut self, service: &str, now_ns: u64) -> Option<u64> {
        if !self.buckets.contains_key(service) {
            if self.buckets.len() >= PRUNE_AT {
                self.buckets.retain(|_, b| {
                    b.refill(now_ns);
                    b.suppressed > 0 || b.credit_ns < CREDIT_CAP_NS
                });
            }
            let full = Bucket {
                credit_ns: CREDIT_CAP_NS,
                last_ns: now_ns,
                suppressed: 0,
            };
            self.buckets.insert(service.to_string(), full);
        }
        let b = self.buckets.get_mut(service)?;
        b.refill(now_ns);
        if b.credit_ns < LINE_COST_NS {
            b.suppressed += 1;
            return None;
        }
        b.credit_ns -= LINE_COST_NS;
        Some(std::mem::take(&mut b.suppressed))
    }

    /// Copies one line of a service's output into the daemon log, if its bucket allows:
    /// control characters made visible, cut to [`MAX_LOGGED_LINE_BYTES`], preceded by a count
    /// of the lines held back before it. `stream` is `""` for stdout or `" (stderr)"`.
    pub fn log(&mut self, service: &str, stream: &str, text: &str, now_ns: u64) {
        let Some(suppressed) = self.admit(service, now_ns) else {
            return;
        };
        if suppressed > 0 {
            tracing::warn!(
                target: "medic::output",
                "{service}: {suppressed} lines suppressed (over {LINES_PER_SEC} lines/s); \
                 `medic logs {service}` has the most recent"
            );
        }
        let cut = (0..=MAX_LOGGED_LINE_BYTES.min(text.len()))
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        let more = if cut < text.len() { "…" } else { "" };
        let shown = terminal::sanitize(&text[..cut]);
        tracing::info!(target: "medic::output", "{service}{stream}: {shown}{more}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chatty_service_is_held_to_its_rate() {
        let mut l = LineLimiter::default();
        let mut admitted = 0;
        for _ in 0..1000 {
            if l.admit("chatty", 0).is_some() {
                admitted += 1;
            }
        }
        assert_eq!(
            admitted, BURST_LINES,
            "the burst, then nothing at the same instant"
        );
        assert_eq!(l.admit("quiet", 0), Some(0), "buckets are per service");
        // One second later: LINES_PER_SEC more, the first of them reporting what was held.
        let second = 1_000_000_000;
        assert_eq!(l.admit("chatty", second), Some(1000 - BURST_LINES));
        let more = (1..LINES_PER_SEC)
            .filter(|_| l.admit("chatty", second) == Some(0))
            .count();
        assert_eq!(more as u64, LINES_PER_SEC - 1);
        assert_eq!(l.admit("chatty", second), None);
        // A clock that goes backwards never adds credit.
        assert_eq!(l.admit("chatty", 0), None);
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let mut l = LineLimiter::default();
        for i in 0..PRUNE_AT * 3 {
            l.admit(&format!("s{i}"), i as u64 * CREDIT_CAP_NS);
        }
        assert!(l.buckets.len() <= PRUNE_AT + 1, "{}", l.buckets.len());
    }

    #[test]
    fn utc_dates_are_civil() {
        let now = utc_now();
        assert_eq!(now.len(), "2026-01-31T12:34:56.789012Z".len(), "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
        let at = |secs, micros| {
            utc(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(at(1_709_251_199, 999_999), "2024-02-29T23:59:59.999999Z");
        assert_eq!(at(1_796_030_528, 954_823), "2026-11-30T09:22:08.954823Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000Z");
    }
}
