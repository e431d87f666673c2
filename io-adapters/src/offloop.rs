//! File I/O the loop must never wait for: `medic trace save` to a FIFO nobody reads or to a
//! hung mount, a config file that is a FIFO or on a dead NFS server. Each runs on a thread of
//! its own, detached (a thread stuck for ever in `open` or `write` only costs itself; it never
//! holds up the loop or the daemon's exit), and hands its result back through a channel.
//!
//! Bounds: at most [`MAX_TRACE_WRITERS`] trace saves at once (more are refused with an error
//! answer), one config read at a time (the runtime coalesces SIGHUPs that arrive meanwhile),
//! and a config file is read up to [`MAX_CONFIG_BYTES`] only.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::control::Response;

/// Trace saves writing at once; a save asked for while this many are still writing (a FIFO
/// nobody reads, a hung mount) is refused.
pub const MAX_TRACE_WRITERS: usize = 2;

/// A config file larger than this is refused on SIGHUP without being read further (a config
/// pointed at `/dev/zero` must not eat the router's memory).
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// The trace saves in flight.
#[derive(Debug, Default, Clone)]
pub struct TraceWriters(Arc<AtomicUsize>);

impl TraceWriters {
    /// Writes `bytes` to `path` on a thread of its own and answers on `reply` when done:
    /// [`Response::TraceSaved`] or an error. Returns at once; refuses (with an error answer)
    /// when [`MAX_TRACE_WRITERS`] saves are still writing.
    pub fn save(&self, path: String, bytes: Vec<u8>, reply: mpsc::Sender<Response>) {
        let busy = self.0.fetch_add(1, Ordering::SeqCst);
        if busy >= MAX_TRACE_WRITERS {
            self.0.fetch_sub(1, Ordering::SeqCst);
            let _ = reply.try_send(Response::Error(format!(
                "{busy} trace saves are still writing (a FIFO nobody reads, or a hung mount?); \
                 try again once they are done"
            )));
            return;
        }
        let count = self.0.clone();
        let error_reply = reply.clone();
        let spawned = std::thread::Builder::new()
            .name("medic-trace".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let answer = match write_file(Path::new(&path), &bytes) {
                    Ok(()) => Response::TraceSaved {
                        bytes: bytes.len() as u64,
                    },
                    Err(e) => Response::Error(format!("cannot write the trace to {path}: {e}")),
                };
                count.fetch_sub(1, Ordering::SeqCst);
                // The client may have given up meanwhile: then nobody listens, which is fine.
                let _ = reply.try_send(answer);
            });
        if let Err(e) = spawned {
            self.0.fetch_sub(1, Ordering::SeqCst);
            let _ = error_reply.try_send(Response::Error(format!(
                "cannot start a thread to write the trace: {e}"
            )));
        }
    }

    /// How many saves are writing now.
    pub fn in_flight(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.flush()
}

/// Reads the config file at `path` on a thread of its own, at most [`MAX_CONFIG_BYTES`];
/// the text comes on the returned channel (which is closed without a value only if no thread
/// could be started: the error says so).
pub fn read_config(path: PathBuf) -> io::Result<oneshot::Receiver<io::Result<String>>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("medic-config".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = tx.send(read_limited(&path, MAX_CONFIG_BYTES));
        })?;
    Ok(rx)
}

/// The text of `path`, refused when it holds more than `limit` bytes or is not UTF-8.
pub fn read_limited(path: &Path, limit: u64) -> io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("medic-offloop-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn fifo(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        path
    }

    #[test]
    fn a_trace_save_to_a_fifo_nobody_reads_returns_at_once_and_is_bounded() {
        let dir = scratch("fifo");
        let path = fifo(&dir, "trace");
        let writers = TraceWriters::default();
        let mut replies = Vec::new();
        for _ in 0..MAX_TRACE_WRITERS {
            let (tx, rx) = mpsc::channel(1);
            writers.save(path.display().to_string(), vec![1, 2, 3], tx);
            replies.push(rx);
        }
        assert_eq!(writers.in_flight(), MAX_TRACE_WRITERS);
        // One more is refused at once.
        let (tx, mut rx) = mpsc::channel(1);
        writers.save(path.display().to_string(), vec![1], tx);
        match rx.try_recv() {
            Ok(Response::Error(m)) => assert!(m.contains("still writing"), "{m}"),
            other => panic!("not refused: {other:?}"),
        }
        // A reader comes: the blocked saves finish (into the same reader, or into the next
        // one) and answer.
        let mut got = Vec::new();
        while got.len() < 3 * MAX_TRACE_WRITERS {
            let mut f = std::fs::File::open(&path).unwrap();
            f.read_to_end(&mut got).unwrap();
        }
        let mut answers = Vec::new();
        let start = std::time::Instant::now();
        while answers.len() < replies.len() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "answers: {answers:?}"
            );
            for rx in &mut replies {
                if let Ok(r) = rx.try_recv() {
                    answers.push(r);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got, [1, 2, 3].repeat(MAX_TRACE_WRITERS));
        assert!(answers
            .iter()
            .all(|r| *r == Response::TraceSaved { bytes: 3 }));
        let start = std::time::Instant::now();
        while writers.in_flight() > 0 {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_config_is_read_up_to_its_limit() {
        let dir = scratch("config");
        let path = dir.join("c.toml");
        std::fs::write(&path, "x".repeat(100)).unwrap();
        assert_eq!(read_limited(&path, 100).unwrap().len(), 100);
        let err = read_limited(&path, 99).unwrap_err();
        assert!(err.to_string().contains("larger than 99"), "{err}");
        assert!(read_limited(Path::new("/dev/zero"), 1 << 20).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
