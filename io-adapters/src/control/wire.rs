//! The wire contract of the control socket: the messages and how they are framed. This file
//! is what old clients and new daemons (and the reverse) must agree on: every type here only
//! ever grows at the end (postcard numbers variants and fields by position), and
//! `wire_numbers_of_variants_never_change` guards the numbering.

use std::io;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The socket's file name in the state dir.
pub const SOCKET_NAME: &str = "control.sock";
/// The largest request frame the daemon reads (the body, without the length prefix).
pub const MAX_REQUEST_BYTES: u32 = 64 * 1024;
/// The largest answer frame a client reads.
pub const MAX_RESPONSE_BYTES: u32 = 16 * 1024 * 1024;
/// A request must arrive whole within this after the connection is accepted (a client sends it
/// at once: a connection that sends nothing must not hold a slot for long).
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Every frame the daemon writes must be taken by the client within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for the answer to a request that does not follow.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client whose request could not be sent looks for an answer already there.
pub(crate) const EARLY_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections still sending their request at once; a new connection beyond this closes the
/// one that has waited longest (so connections that send nothing cannot lock anyone out).
pub const MAX_CONNECTIONS: usize = 32;
/// Connections following (`events --follow`, `logs --follow`) at once; more are refused. Well
/// below [`MAX_CONNECTIONS`], and apart from [`MAX_ANSWERING`]: followers never take the room
/// of `status` or an operator command.
pub const MAX_FOLLOWING: usize = 8;
/// Connections being answered a one-shot request (`status`, `stop`, …) at once; more are
/// refused.
pub const MAX_ANSWERING: usize = 32;
/// Answers queued per connection before the daemon's `try_send` fails.
pub const REPLY_QUEUE: usize = 64;

/// What a client asks. Variants are only ever added at the end (postcard numbers them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The status of these services (all, in config order, when empty).
    Status {
        /// Service names.
        services: Vec<String>,
    },
    /// Operator start of each service.
    Start(Vec<String>),
    /// Operator stop of each service.
    Stop(Vec<String>),
    /// Operator restart of each service.
    Restart(Vec<String>),
    /// Operator reload of each service.
    Reload(Vec<String>),
    /// The medical history of one service.
    History {
        /// The service's name.
        service: String,
    },
    /// The captured output of one service.
    Logs {
        /// The service's name.
        service: String,
        /// How many of the most recent lines.
        lines: u32,
        /// Keep sending new lines as they come.
        follow: bool,
    },
    /// Recent transitions and interventions of every service.
    Events {
        /// Keep sending new events as they happen.
        follow: bool,
    },
    /// Write the in-memory trace ring to a file.
    TraceSave {
        /// An absolute path, as seen by the daemon.
        path: String,
    },
    /// Is anybody there?
    Ping,
    /// Who the daemon is, and its clocks (to turn `at_ms` into wall-clock time).
    Info,
    /// [`Request::Status`] with the daemon's info, the plan and the memory of each service:
    /// answered by [`Response::StatusReport`].
    StatusReport {
        /// Service names (every service, in config order, when empty).
        services: Vec<String>,
    },
    /// [`Request::Logs`] with each line's time, stream and run: answered by
    /// [`Response::LogRecords`].
    LogRecords {
        /// The service's name.
        service: String,
        /// How many of the most recent lines.
        lines: u32,
        /// Keep sending new lines as they come.
        follow: bool,
    },
    /// Re-read the config file and apply only the difference, as SIGHUP does; answered by
    /// `Done`, or by an error naming every problem (then nothing changes).
    ReloadConfig,
    /// Upgrade in place (DESIGN §13): check that `binary` (an absolute path; the running
    /// binary when `None`) accepts this daemon's state, then `execve` it with the same pid,
    /// taking over every process. Answered by `Done` just before the `execve`, or by an error
    /// saying why nothing changed.
    Reexec {
        /// The binary to run.
        binary: Option<String>,
    },
    /// The outputs of one service: answered by [`Response::Outputs`].
    Output {
        /// The service's name.
        service: String,
    },
    /// Replace the whole output map of one service (`medic output set`, a DHCP hook):
    /// answered by `Done` once handed to the kernel, or by an error (unknown service, a bad
    /// key, a map over a bound), and then nothing changes.
    OutputSet {
        /// The service's name.
        service: String,
        /// Its outputs.
        outputs: medic_kernel::Outputs,
    },
    /// Which program image answers: answered by [`Response::Image`]. `medic reexec` asks it
    /// before and after, to tell a new image from the old one that went on after a failed
    /// `execve`.
    Image,
    /// Store a new generation of a secret (`medic secret set`, DESIGN §10): answered by
    /// `Done` once stored and handed to the kernel, or by an error (a bad name, too large, a
    /// change waiting for its confirmation), and then nothing changes.
    SecretSet {
        /// The secret's name (`[a-z0-9_-]`, 1 to 64 bytes).
        name: String,
        /// Its bytes (at most [`crate::secrets::MAX_SECRET_BYTES`]).
        bytes: SecretBytes,
        /// Roll back unless `medic confirm` comes within this many milliseconds.
        confirm_within_ms: Option<u64>,
    },
    /// Remove a secret (`medic secret rm`): `Done`, or an error.
    SecretRemove {
        /// The secret's name.
        name: String,
    },
    /// Every secret, without its bytes: answered by [`Response::Secrets`].
    SecretList,
    /// Validate the config file at `path` (absolute, read by the daemon) and apply the
    /// difference as SIGHUP does (`medic apply`); it is the daemon's config file from then on.
    /// `Done`, or an error naming every problem (then nothing changes).
    Apply {
        /// The config file.
        path: String,
        /// Roll back unless `medic confirm` comes within this many milliseconds.
        confirm_within_ms: Option<u64>,
    },
    /// Make the change waiting for its confirmation final (`medic confirm`): `Done`, or an
    /// error when nothing waits.
    Confirm,
    /// The change waiting for its confirmation, if any: answered by [`Response::Pending`].
    Pending,
}

/// A secret's bytes in a request: their `Debug` shows only their size, so no log line or
/// panic message can print them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// One secret in [`Response::Secrets`]: never its bytes. Frozen (it travels in a `Vec`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRow {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its generation in force.
    pub generation: u64,
    /// When that generation was set, in milliseconds since 1970.
    pub set_at_unix_ms: i64,
    /// Pushed with `--confirm-within` and not confirmed yet.
    pub unconfirmed: bool,
}

/// The change waiting for `medic confirm`, in [`Response::Pending`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRow {
    /// What it is, in words (`secret authorized-keys generation 3 (else back to generation 2)`).
    pub what: String,
    /// When it is rolled back, in milliseconds since the daemon started.
    pub deadline_ms: u64,
}

/// What the daemon answers. Variants are only ever added at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// One row per service asked for.
    Status(Vec<StatusRow>),
    /// The operation was carried out (for an operator command: handed to the kernel).
    Done,
    /// The medical history, oldest first.
    History(Vec<HistoryRow>),
    /// Captured output lines, oldest first.
    LogLines(Vec<String>),
    /// Events, oldest first.
    Events(Vec<EventRow>),
    /// The trace was written.
    TraceSaved {
        /// Its size in bytes.
        bytes: u64,
    },
    /// The request failed; the message says why and what to do.
    Error(String),
    /// The answer to [`Request::Ping`].
    Pong,
    /// The last answer of a followed stream (`--follow`): the daemon ends it, and says why
    /// (`the medic daemon shut down`).
    Ended(String),
    /// The answer to [`Request::Info`].
    Info(DaemonInfo),
    /// The answer to [`Request::StatusReport`].
    StatusReport(StatusReport),
    /// The answer to [`Request::LogRecords`]: lines, oldest first.
    LogRecords(Vec<LogRow>),
    /// The answer to [`Request::Output`].
    Outputs(medic_kernel::Outputs),
    /// The answer to [`Request::Image`].
    Image(ImageInfo),
    /// The answer to [`Request::SecretList`], by name.
    Secrets(Vec<SecretRow>),
    /// The answer to [`Request::Pending`].
    Pending(Option<PendingRow>),
}

/// The program image that answers ([`Request::Image`]). Fields only ever grow at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The daemon's pid (the same across a reexec).
    pub pid: u32,
    /// `CLOCK_MONOTONIC` in nanoseconds when this image began: a successful `execve` gives a
    /// later one, with the same pid.
    pub started_ns: u64,
    /// How many `execve`s of `medic reexec` this image has tried and survived (each one
    /// failed: the image went on).
    pub failed_execs: u32,
    /// Why the last of those failed.
    pub last_failure: Option<String>,
}

/// Who the daemon is, and its two clocks read at the same moment: a time `at_ms` of any other
/// answer was `now_unix_ms - (now_ms - at_ms)` on the wall clock, as the wall clock reads now
/// (so a clock set by NTP after boot still gives right times). Fields only ever grow at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// The daemon's pid.
    pub pid: u32,
    /// medic's version.
    pub version: String,
    /// The config file it reads (and re-reads on SIGHUP or `medic reload-config`).
    pub config_path: String,
    /// Its state directory.
    pub state_dir: String,
    /// Its monotonic clock now: milliseconds since it started (the `at_ms` clock).
    pub now_ms: u64,
    /// The wall clock now: milliseconds since the UNIX epoch.
    pub now_unix_ms: u64,
}

/// The answer to [`Request::StatusReport`]. Fields only ever grow at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The daemon.
    pub daemon: DaemonInfo,
    /// One per service asked for, in config order.
    pub services: Vec<ServiceStatus>,
    /// For each device service asked for that a device matches: that device.
    pub devices: Vec<DeviceStatus>,
}

/// The device a device service matches (the first by devpath), in [`StatusReport::devices`].
/// Fields only ever grow at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// The device service.
    pub service: String,
    /// Its device node (`/dev/ttyUSB0`), when it has one.
    pub devname: Option<String>,
    /// Its sysfs path below `/sys`.
    pub devpath: String,
    /// Its subsystem (`tty`).
    pub subsystem: String,
    /// Its driver, or its nearest ancestor's.
    pub driver: Option<String>,
}

/// One service in a [`StatusReport`]: the status row, why it is as it is, and what is planned.
///
/// [`StatusRow`] travels in a `Vec`: postcard is positional and not self-describing, so a
/// field added to it would shift every later row for a peer of another version. It is frozen;
/// new fields go here (and this type, being in a `Vec` too, is frozen once released: grow the
/// [`StatusReport`] instead, or add a request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// What [`Request::Status`] answers.
    pub row: StatusRow,
    /// Why it is in its condition, in words (the last history note, without the plan).
    pub why: String,
    /// What the daemon will do next (`restart`, `give up`, `start-timeout`, `retry`), or, when
    /// nothing is planned, why not (`nothing: no heal for no-carrier`); empty when all is well.
    pub next: String,
    /// When `next` is due, in milliseconds since the daemon started; `None` when it waits for
    /// an event rather than a time.
    pub next_at_ms: Option<u64>,
    /// The last memory sample of its process group, in bytes.
    pub memory_bytes: Option<u64>,
    /// Its `memory-max` in bytes (a percentage resolved against the RAM).
    pub memory_max_bytes: Option<u64>,
    /// Its `give-up-after`.
    pub give_up_after: u32,
    /// The services that need it.
    pub dependents: Vec<String>,
    /// How its process last ended (`exit code 1`, `killed by signal 9`), from its history.
    pub last_exit: Option<String>,
    /// When, in milliseconds since the daemon started.
    pub last_exit_at_ms: Option<u64>,
}

/// One captured line in [`Response::LogRecords`]. Frozen (it travels in a `Vec`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRow {
    /// When the daemon read it, in milliseconds since the daemon started.
    pub at_ms: u64,
    /// `out` or `err`; `start` for the mark of a new run of the process (then `text` is
    /// empty and `pid` is its pid).
    pub stream: String,
    /// The line, raw, without its newline.
    pub text: String,
    /// For a `start` mark: the pid of the new process.
    pub pid: Option<u32>,
}

/// One service in [`Response::Status`]. Frozen: it travels in a `Vec` (see [`ServiceStatus`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRow {
    /// The service's name.
    pub name: String,
    /// `process`, `oneshot`, `interface` or `device`.
    pub kind: String,
    /// The condition's name (`ready`, `exited`, a probe's custom name, …).
    pub condition: String,
    /// The verdict's health bit for the condition.
    pub healthy: bool,
    /// The pid of the running process (its process group too).
    pub pid: Option<u32>,
    /// Interventions since the service was last healthy for `forgive-after`.
    pub strikes: u32,
    /// When the condition began, in milliseconds since the daemon started.
    pub since_ms: u64,
    /// The `needs` of the service, as named in the config.
    pub needs: Vec<String>,
    /// For an interface service: what the link looks like.
    pub link: Option<LinkInfo>,
    /// How long it has been up, in milliseconds: since the spawn for a running process, since
    /// it became ready for a service without a process; `None` when neither.
    pub uptime_ms: Option<u64>,
}

/// The link of an interface service, in [`StatusRow::link`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// `absent`, `down`, `up, no carrier`, `up, carrier`.
    pub state: String,
    /// Addresses as `address/prefix`.
    pub addresses: Vec<String>,
}

/// One record of a medical history. Fields are only ever added at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// When, in milliseconds since the daemon started.
    pub at_ms: u64,
    /// The service's condition then.
    pub condition: String,
    /// The intervention made (`restart`, `signal USR1`, …); `None` when nothing was done.
    pub heal: Option<String>,
    /// `resolved`, `unresolved` or `pending`; `None` when there was no intervention.
    pub outcome: Option<String>,
    /// Why, in words (`exit code 1`, `blocked by wan`).
    pub note: String,
    /// When the outcome was decided (the end of the settle time), in milliseconds since the
    /// daemon started; `None` while pending or without an intervention.
    pub outcome_at_ms: Option<u64>,
}

/// One event of [`Response::Events`]: a history record and whose it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    /// The service's name.
    pub service: String,
    /// What happened.
    pub record: HistoryRow,
}

// ----- frames -----------------------------------------------------------------------------

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection before the first byte of a frame.
    #[error("the connection was closed")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("the frame ended after {got} of {want} bytes")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced (4 for the length prefix itself).
        want: usize,
    },
    /// The length prefix announces more than the limit.
    #[error("a frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The frame did not arrive (or could not be sent) in time.
    #[error("no complete frame within {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// The body is not a postcard message of the expected type.
    #[error("undecodable frame: {0}")]
    Garbage(#[from] postcard::Error),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Reads one frame of at most `max` bytes and decodes it, within `timeout` when given.
pub async fn read_frame<T, R>(
    r: &mut R,
    max: u32,
    timeout: Option<Duration>,
) -> Result<T, FrameError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let read = async {
        let mut prefix = [0u8; 4];
        match read_full(r, &mut prefix).await? {
            0 => return Err(FrameError::Closed),
            4 => {}
            got => return Err(FrameError::Truncated { got, want: 4 }),
        }
        let len = u32::from_le_bytes(prefix);
        if len > max {
            return Err(FrameError::TooLarge {
                len: len.into(),
                max,
            });
        }
        let mut body = vec![0u8; len as usize];
        let got = read_full(r, &mut body).await?;
        if got < body.len() {
            return Err(FrameError::Truncated {
                got,
                want: body.len(),
            });
        }
        decode_body(&body)
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, read)
            .await
            .unwrap_or(Err(FrameError::TimedOut(t))),
        None => read.await,
    }
}

/// Decodes the body of a frame (without its length prefix): what [`read_frame`] does once the
/// bytes are in, public so that a fuzz target can drive it with arbitrary bytes.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(body)?)
}

/// Encodes `value` as one frame of at most `max` bytes and writes it, within `timeout` when
/// given.
pub async fn write_frame<T, W>(
    w: &mut W,
    value: &T,
    max: u32,
    timeout: Option<Duration>,
) -> Result<(), FrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let frame = encode_frame(value, max)?;
    let write = async {
        w.write_all(&frame).await?;
        w.flush().await?;
        Ok(())
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, write)
            .await
            .unwrap_or(Err(FrameError::TimedOut(t))),
        None => write.await,
    }
}

/// The bytes of one frame: length prefix and postcard body.
pub fn encode_frame<T: Serialize>(value: &T, max: u32) -> Result<Vec<u8>, FrameError> {
    let mut frame = postcard::to_extend(value, vec![0u8; 4])?;
    let len = frame.len() - 4;
    if len > max as usize {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let requests = [
            Request::Status {
                services: vec!["a".into()],
            },
            Request::Logs {
                service: "a".into(),
                lines: 20,
                follow: true,
            },
            Request::TraceSave {
                path: "/tmp/x".into(),
            },
            Request::Ping,
        ];
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        for r in &requests {
            write_frame(&mut a, r, MAX_REQUEST_BYTES, None)
                .await
                .unwrap();
        }
        for r in &requests {
            let got: Request = read_frame(&mut b, MAX_REQUEST_BYTES, None).await.unwrap();
            assert_eq!(&got, r);
        }
        let row = StatusRow {
            name: "wan".into(),
            kind: "interface".into(),
            condition: "no-carrier".into(),
            healthy: false,
            pid: None,
            strikes: 2,
            since_ms: 99,
            needs: vec![],
            link: Some(LinkInfo::from_state(None)),
            uptime_ms: None,
        };
        let response = Response::Status(vec![row]);
        write_frame(&mut a, &response, MAX_RESPONSE_BYTES, None)
            .await
            .unwrap();
        let got: Response = read_frame(&mut b, MAX_RESPONSE_BYTES, None).await.unwrap();
        assert_eq!(got, response);
    }

    #[test]
    fn wire_numbers_of_variants_never_change() {
        // Postcard numbers variants by position: these bytes are the contract between a daemon
        // and a client of another version. Append new variants; never reorder.
        assert_eq!(postcard::to_allocvec(&Request::Ping).unwrap(), [9]);
        assert_eq!(postcard::to_allocvec(&Response::Pong).unwrap(), [7]);
        assert_eq!(postcard::to_allocvec(&Response::Done).unwrap(), [1]);
        let ended = postcard::to_allocvec(&Response::Ended("x".into())).unwrap();
        assert_eq!(ended, [8, 1, b'x']);
        let stop = postcard::to_allocvec(&Request::Stop(vec!["a".into()])).unwrap();
        assert_eq!(stop, [2, 1, 1, b'a']);
        assert_eq!(postcard::to_allocvec(&Request::Info).unwrap(), [10]);
        assert_eq!(postcard::to_allocvec(&Request::ReloadConfig).unwrap(), [13]);
        let reexec = Request::Reexec { binary: None };
        assert_eq!(postcard::to_allocvec(&reexec).unwrap(), [14, 0]);
        let output = Request::Output {
            service: "a".into(),
        };
        assert_eq!(postcard::to_allocvec(&output).unwrap(), [15, 1, b'a']);
        let set = Request::OutputSet {
            service: "a".into(),
            outputs: Default::default(),
        };
        assert_eq!(postcard::to_allocvec(&set).unwrap(), [16, 1, b'a', 0]);
        let secret = Request::SecretSet {
            name: "k".into(),
            bytes: SecretBytes(vec![7]),
            confirm_within_ms: None,
        };
        assert_eq!(
            postcard::to_allocvec(&secret).unwrap(),
            [18, 1, b'k', 1, 7, 0]
        );
        assert!(
            format!("{secret:?}").contains("<1 bytes>"),
            "the bytes are never shown"
        );
        assert_eq!(postcard::to_allocvec(&Request::SecretList).unwrap(), [20]);
        assert_eq!(postcard::to_allocvec(&Request::Confirm).unwrap(), [22]);
        assert_eq!(postcard::to_allocvec(&Request::Pending).unwrap(), [23]);
        let pending = Response::Pending(None);
        assert_eq!(postcard::to_allocvec(&pending).unwrap(), [15, 0]);
        let outputs = Response::Outputs(Default::default());
        assert_eq!(postcard::to_allocvec(&outputs).unwrap(), [12, 0]);
        let report = Request::StatusReport { services: vec![] };
        assert_eq!(postcard::to_allocvec(&report).unwrap(), [11, 0]);
        let logs = Request::LogRecords {
            service: "a".into(),
            lines: 1,
            follow: false,
        };
        assert_eq!(postcard::to_allocvec(&logs).unwrap(), [12, 1, b'a', 1, 0]);
        let lines = Response::LogRecords(vec![]);
        assert_eq!(postcard::to_allocvec(&lines).unwrap(), [11, 0]);
        assert_eq!(postcard::to_allocvec(&Request::Image).unwrap(), [17]);
        let image = Response::Image(ImageInfo {
            pid: 1,
            started_ns: 2,
            failed_execs: 3,
            last_failure: None,
        });
        assert_eq!(postcard::to_allocvec(&image).unwrap(), [13, 1, 2, 3, 0]);
    }

    #[tokio::test]
    async fn bad_frames_are_errors_not_panics() {
        // Oversized length prefix.
        let mut huge: &[u8] = &u32::MAX.to_le_bytes();
        let err = read_frame::<Request, _>(&mut huge, MAX_REQUEST_BYTES, None).await;
        assert!(matches!(err, Err(FrameError::TooLarge { .. })), "{err:?}");
        // Truncated prefix and body.
        let mut short: &[u8] = &[5, 0];
        let err = read_frame::<Request, _>(&mut short, MAX_REQUEST_BYTES, None).await;
        assert!(matches!(
            err,
            Err(FrameError::Truncated { got: 2, want: 4 })
        ));
        let mut short: &[u8] = &[5, 0, 0, 0, 1, 2];
        let err = read_frame::<Request, _>(&mut short, MAX_REQUEST_BYTES, None).await;
        assert!(matches!(
            err,
            Err(FrameError::Truncated { got: 2, want: 5 })
        ));
        // Garbage body: variant 200 does not exist.
        let mut garbage: &[u8] = &[3, 0, 0, 0, 200, 1, 2];
        let err = read_frame::<Request, _>(&mut garbage, MAX_REQUEST_BYTES, None).await;
        assert!(matches!(err, Err(FrameError::Garbage(_))), "{err:?}");
        // Empty stream.
        let mut empty: &[u8] = &[];
        let err = read_frame::<Request, _>(&mut empty, MAX_REQUEST_BYTES, None).await;
        assert!(matches!(err, Err(FrameError::Closed)));
        // Stalled stream.
        let (_keep, mut stalled) = tokio::io::duplex(64);
        let t = Duration::from_millis(20);
        let err = read_frame::<Request, _>(&mut stalled, MAX_REQUEST_BYTES, Some(t)).await;
        assert!(matches!(err, Err(FrameError::TimedOut(_))));
        // Too large to send.
        let big = Request::TraceSave {
            path: "x".repeat(MAX_REQUEST_BYTES as usize),
        };
        assert!(matches!(
            encode_frame(&big, MAX_REQUEST_BYTES),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
