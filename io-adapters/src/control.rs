//! The control socket (DESIGN.md §5): how `medic status|start|…` talk to the daemon.
//!
//! ## Wire format
//! A Unix stream socket, `control.sock` in the state dir, mode 0600. On each connection the
//! client sends one [`Request`] and the daemon answers with one [`Response`], or with a stream
//! of them for `follow` requests, then closes. Every message is a *frame*: a `u32`
//! little-endian length, then that many bytes of postcard. A request frame is at most
//! [`MAX_REQUEST_BYTES`]; an answer at most [`MAX_RESPONSE_BYTES`] (a history of 4096 records
//! does not fit in 64 KiB, and answers come from the trusted side).
//!
//! Postcard encodes enum variants and struct fields by position, so every type here only ever
//! grows at the end: new variants after the last one, new fields after the last field. An old
//! daemon asked something new answers with [`Response::Error`].
//!
//! ## Robustness
//! The socket is served by [`Server::run`] on tasks of its own, so no client can stall the
//! daemon's loop: at most [`MAX_CONNECTIONS`] connections at once (more are closed at once),
//! a request must arrive whole within [`READ_TIMEOUT`], every write must finish within
//! [`WRITE_TIMEOUT`]. An oversized, undecodable, truncated or late request gets a
//! [`Response::Error`] (when the client still listens) and the connection is closed. Only
//! root and the daemon's own uid may talk to it (`SO_PEERCRED`).
//!
//! ## For the runtime: answering calls
//! ```text
//! let server = control::bind(&state_dir.join(control::SOCKET_NAME))?;   // at startup
//! let (tx, mut calls) = mpsc::channel(16);
//! tokio::spawn(server.run(tx));
//! … in the loop, for each Call { request, reply }:
//!   Status { services } => status_rows(&kernel, &services, now, |ifname| links.view(ifname)…)
//!   Start/Stop/Restart/Reload => request.operators(&kernel): feed each Operator, reply Done
//!   History { service }  => history_rows(&kernel, &service)
//!   Events { follow }    => recent_events(&kernel, n), then keep `reply` and try_send one
//!                           Events(vec![EventRow::new(&kernel, id, &record)]) per Effect::Event
//!   Logs { .. }, TraceSave { .. }: from the runtime's own state;   Ping => Pong
//! ```
//! A reply that is an error is `Response::Error(message)`. Dropping `reply` ends the answer;
//! the server closes the connection then. For a follower, use `try_send` (never block the
//! loop on a slow client) and forget it once `try_send` fails: the client has gone or stopped
//! reading.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use medic_kernel::{Instant, Kernel, LinkState, Operator, Record, ServiceId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};

/// The socket's file name in the state dir.
pub const SOCKET_NAME: &str = "control.sock";
/// The largest request frame the daemon reads (the body, without the length prefix).
pub const MAX_REQUEST_BYTES: u32 = 64 * 1024;
/// The largest answer frame a client reads.
pub const MAX_RESPONSE_BYTES: u32 = 16 * 1024 * 1024;
/// A request must arrive whole within this after the connection is accepted.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Every frame the daemon writes must be taken by the client within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for the answer to a request that does not follow.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client whose request could not be sent looks for an answer already there.
const EARLY_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Answers queued per connection before the daemon's `try_send` fails.
pub const REPLY_QUEUE: usize = 64;

// ----- messages ----------------------------------------------------------------------------

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
}

/// One service in [`Response::Status`]. Fields are only ever added at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRow {
    /// The service's name.
    pub name: String,
    /// `process`, `oneshot` or `interface`.
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

impl LinkInfo {
    /// What the kernel's [`LinkState`] says, without addresses (`None`: no such link).
    pub fn from_state(link: Option<&LinkState>) -> LinkInfo {
        let state = match link {
            None => "absent",
            Some(l) if !l.admin_up => "down",
            Some(l) if !l.carrier => "up, no carrier",
            Some(_) => "up, carrier",
        };
        LinkInfo {
            state: state.to_string(),
            addresses: Vec::new(),
        }
    }
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
}

impl HistoryRow {
    /// The row for one kernel record.
    pub fn from_record(record: &Record) -> HistoryRow {
        HistoryRow {
            at_ms: record.at.as_millis(),
            condition: record.condition.name().to_string(),
            heal: record.heal.as_ref().map(|h| h.describe()),
            outcome: record.outcome.map(|o| o.name().to_string()),
            note: record.note.clone(),
        }
    }
}

/// One event of [`Response::Events`]: a history record and whose it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    /// The service's name.
    pub service: String,
    /// What happened.
    pub record: HistoryRow,
}

impl EventRow {
    /// The row for an [`medic_kernel::Effect::Event`] of service `id`.
    pub fn new(kernel: &Kernel, id: ServiceId, record: &Record) -> EventRow {
        EventRow {
            service: kernel.name(id).to_string(),
            record: HistoryRow::from_record(record),
        }
    }
}

// ----- answers built from the kernel's state -------------------------------------------------

/// The ids of `names`, each checked; an error names every unknown one.
fn resolve(kernel: &Kernel, names: &[String]) -> Result<Vec<ServiceId>, String> {
    let mut ids = Vec::with_capacity(names.len());
    let mut unknown = Vec::new();
    for name in names {
        match kernel.lookup(name) {
            Some(id) => ids.push(id),
            None => unknown.push(unknown_service(kernel, name)),
        }
    }
    if unknown.is_empty() {
        Ok(ids)
    } else {
        Err(unknown.join("; "))
    }
}

/// ``no service `dnsmask` in the config; did you mean `dnsmasq`?``
fn unknown_service(kernel: &Kernel, name: &str) -> String {
    let nearest = kernel
        .services()
        .map(|s| s.config.name.as_str())
        .map(|n| (strsim::damerau_levenshtein(name, n), n))
        // Close enough to be a typo: one edit in three characters.
        .filter(|&(d, _)| d * 3 <= name.chars().count().max(3))
        .min();
    match nearest {
        Some((_, n)) => format!("no service `{name}` in the config; did you mean `{n}`?"),
        None => format!("no service `{name}` in the config; `medic status` lists them"),
    }
}

/// The rows of [`Response::Status`] for `names` (every service when empty), in config order.
/// `now` is the daemon's current time on the kernel's clock (for uptimes); `links` gives the
/// netlink view of a link by name, when the runtime has one (else the kernel's state is shown).
pub fn status_rows(
    kernel: &Kernel,
    names: &[String],
    now: Instant,
    links: impl Fn(&str) -> Option<LinkInfo>,
) -> Result<Vec<StatusRow>, String> {
    let wanted = resolve(kernel, names)?;
    let rows = kernel
        .services()
        .filter(|slot| wanted.is_empty() || wanted.contains(&slot.id))
        .map(|slot| {
            let link = match &slot.config.kind {
                medic_kernel::config::Kind::Interface { ifname, .. } => {
                    Some(links(ifname).unwrap_or_else(|| LinkInfo::from_state(kernel.link(ifname))))
                }
                _ => None,
            };
            let uptime = match slot.running() {
                Some(p) => Some(now.saturating_since(p.started)),
                None if slot.healthy => Some(now.saturating_since(slot.since)),
                None => None,
            };
            StatusRow {
                name: slot.config.name.clone(),
                kind: slot.config.kind.name().to_string(),
                condition: slot.condition.name().to_string(),
                healthy: slot.healthy,
                pid: slot.running().and_then(|p| p.pid),
                strikes: slot.strikes,
                since_ms: slot.since.as_millis(),
                needs: slot.config.needs.clone(),
                link,
                uptime_ms: uptime.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }
        })
        .collect();
    Ok(rows)
}

/// The id of service `name`, or an error that names it and suggests the nearest one: for
/// requests about one service (`history`, `logs`).
pub fn service_id(kernel: &Kernel, name: &str) -> Result<ServiceId, String> {
    kernel
        .lookup(name)
        .ok_or_else(|| unknown_service(kernel, name))
}

/// The rows of [`Response::History`] for service `name`, oldest first.
pub fn history_rows(kernel: &Kernel, name: &str) -> Result<Vec<HistoryRow>, String> {
    let id = service_id(kernel, name)?;
    let history = kernel.history(id).map(|h| h.iter()).into_iter().flatten();
    Ok(history.map(HistoryRow::from_record).collect())
}

/// The most recent `limit` records of every service's history, oldest first (ties in config
/// order): what `medic events` shows before following.
pub fn recent_events(kernel: &Kernel, limit: usize) -> Vec<EventRow> {
    let mut all: Vec<(Instant, usize, u64, EventRow)> = Vec::new();
    for (index, slot) in kernel.services().enumerate() {
        for record in slot.history.iter() {
            let row = EventRow::new(kernel, slot.id, record);
            all.push((record.at, index, record.seq, row));
        }
    }
    all.sort_by_key(|(at, index, seq, _)| (*at, *index, *seq));
    let skip = all.len().saturating_sub(limit);
    all.into_iter().skip(skip).map(|(.., row)| row).collect()
}

impl Request {
    /// For `Start`, `Stop`, `Restart` and `Reload`: the operator inputs to feed the kernel, one
    /// per service, or an error naming every unknown service (then nothing is to be done).
    /// `None` for any other request.
    pub fn operators(&self, kernel: &Kernel) -> Option<Result<Vec<Operator>, String>> {
        let (names, make): (&[String], fn(String) -> Operator) = match self {
            Request::Start(n) => (n, Operator::Start),
            Request::Stop(n) => (n, Operator::Stop),
            Request::Restart(n) => (n, Operator::Restart),
            Request::Reload(n) => (n, Operator::Reload),
            _ => return None,
        };
        if names.is_empty() {
            return Some(Err("name at least one service".to_string()));
        }
        Some(resolve(kernel, names).map(|_| names.iter().cloned().map(make).collect()))
    }
}

// ----- frames --------------------------------------------------------------------------------

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

/// Decodes the body of one frame (the bytes after its length prefix): what the server does
/// with every request it reads and a client with every answer. Bytes from a peer are trusted
/// for nothing: this never panics (`fuzz/fuzz_targets/control_decode.rs`).
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

// ----- the server ----------------------------------------------------------------------------

/// One request from a client, handed to the daemon's loop. Send one [`Response`] on `reply`
/// (or a stream of them for `follow`), then drop it to end the answer.
#[derive(Debug)]
pub struct Call {
    /// What the client asks.
    pub request: Request,
    /// Where the answer goes; bounded by [`REPLY_QUEUE`].
    pub reply: mpsc::Sender<Response>,
}

/// A bound control socket, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    own_uid: u32,
}

/// Whether a peer with uid `peer` may control a daemon running as `own`: root, or the same uid.
pub fn peer_allowed(peer: u32, own: u32) -> bool {
    peer == 0 || peer == own
}

/// Binds the control socket at `path` (mode 0600), creating its directory (mode 0700) if
/// needed. A socket left by a daemon that is gone is replaced; one that a live daemon answers
/// on is an error, as is a path that is not a socket. Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> io::Result<Server> {
    let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| context(&format!("cannot create the state dir {}", dir.display()), e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; remove it or choose another --state-dir",
                    path.display()
                ),
            ));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another medic daemon answers on {}; stop it first or choose another \
                         --state-dir",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| context(&format!("cannot remove the stale {}", path.display()), e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context(&format!("cannot inspect {}", path.display()), e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        context(
            &format!("cannot bind the control socket {}", path.display()),
            e,
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| context(&format!("cannot chmod 0600 {}", path.display()), e))?;
    Ok(Server {
        listener,
        path: path.to_path_buf(),
        own_uid: nix::unistd::geteuid().as_raw(),
    })
}

impl Server {
    /// Accepts connections, one task each, and hands their requests to `tx`, until the
    /// receiver of `tx` is dropped; then removes the socket file.
    pub async fn run(self, tx: mpsc::Sender<Call>) {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let stream = tokio::select! {
                _ = tx.closed() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait instead of spinning.
                        tracing::warn!("control socket {}: accept: {e}", self.path.display());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                refuse_busy(&stream);
                continue;
            };
            let tx = tx.clone();
            let own_uid = self.own_uid;
            tokio::spawn(async move {
                let _permit = permit;
                serve_connection(stream, tx, own_uid).await;
            });
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Tells a client over the connection bound that the daemon is busy, without waiting.
fn refuse_busy(stream: &UnixStream) {
    let busy = Response::Error(format!(
        "the daemon is serving {MAX_CONNECTIONS} connections already; try again"
    ));
    if let Ok(frame) = encode_frame(&busy, MAX_RESPONSE_BYTES) {
        let _ = stream.try_write(&frame);
    }
}

/// One connection: check the peer, read one request, hand it to the loop, write the answers.
async fn serve_connection(mut stream: UnixStream, tx: mpsc::Sender<Call>, own_uid: u32) {
    let peer = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            let message = format!("cannot tell who is connecting (SO_PEERCRED): {e}");
            return answer_error(&mut stream, message).await;
        }
    };
    if !peer_allowed(peer, own_uid) {
        // Take the request first, so that the client hears why rather than a broken pipe.
        let _ = read_frame::<Request, _>(&mut stream, MAX_REQUEST_BYTES, Some(READ_TIMEOUT)).await;
        let message = format!("uid {peer} may not control medic: only root and uid {own_uid} may");
        return answer_error(&mut stream, message).await;
    }
    let request =
        match read_frame::<Request, _>(&mut stream, MAX_REQUEST_BYTES, Some(READ_TIMEOUT)).await {
            Ok(request) => request,
            Err(FrameError::Closed) | Err(FrameError::Io(_)) => return,
            Err(e) => {
                let message = format!(
                    "bad request: {e} (is this medic's control socket protocol, and the same \
                 version of medic?)"
                );
                return answer_error(&mut stream, message).await;
            }
        };
    let (reply, mut answers) = mpsc::channel(REPLY_QUEUE);
    if tx.send(Call { request, reply }).await.is_err() {
        return answer_error(&mut stream, "the daemon is shutting down".to_string()).await;
    }
    let (mut from_client, mut to_client) = stream.split();
    let mut answered = false;
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            answer = answers.recv() => {
                let Some(answer) = answer else { break };
                answered = true;
                let written = write_frame(
                    &mut to_client,
                    &answer,
                    MAX_RESPONSE_BYTES,
                    Some(WRITE_TIMEOUT),
                )
                .await;
                if let Err(e) = written {
                    if let FrameError::TooLarge { .. } = e {
                        answer_error(&mut to_client, format!("the answer is too large to send: {e}"))
                            .await;
                    }
                    return;
                }
            }
            // A client that hangs up while following must not keep its slot for ever; bytes
            // after the request are ignored.
            read = from_client.read(&mut scratch) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
        }
    }
    if !answered {
        let message = "the daemon dropped the request without an answer".to_string();
        answer_error(&mut to_client, message).await;
    }
}

/// Best effort: the client may already be gone.
async fn answer_error<W: AsyncWrite + Unpin>(w: &mut W, message: String) {
    let error = Response::Error(message);
    let _ = write_frame(w, &error, MAX_RESPONSE_BYTES, Some(WRITE_TIMEOUT)).await;
}

// ----- the client ----------------------------------------------------------------------------

/// Why a client could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens on the socket (missing, or refused): no daemon is running there.
    #[error(
        "no medic daemon is answering on {}: {source}; start one with `medic daemon`, or point \
         --state-dir (or MEDIC_STATE_DIR) at the state dir of the running one",
        path.display()
    )]
    NoDaemon {
        /// The socket.
        path: PathBuf,
        /// What connecting said.
        source: io::Error,
    },
    /// The daemon did not answer in time.
    #[error(
        "the medic daemon on {} did not answer within {} s; it may be stuck (`medic trace save` \
         and its log may tell why)",
        path.display(),
        timeout.as_secs()
    )]
    TimedOut {
        /// The socket.
        path: PathBuf,
        /// How long the client waited.
        timeout: Duration,
    },
    /// Connecting was forbidden.
    #[error(
        "permission denied on {}: only root and the user the daemon runs as may control it",
        path.display()
    )]
    Forbidden {
        /// The socket.
        path: PathBuf,
    },
    /// The connection failed, or the answer could not be read.
    #[error("talking to the medic daemon on {}: {source}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        source: FrameError,
    },
}

impl ClientError {
    /// Whether this means that no daemon answers (exit status 3 of the command line).
    pub fn no_daemon(&self) -> bool {
        matches!(
            self,
            ClientError::NoDaemon { .. } | ClientError::TimedOut { .. }
        )
    }
}

/// An answer being received: one [`Response`] or, for `follow` requests, a stream of them.
#[derive(Debug)]
pub struct Answers {
    stream: UnixStream,
    path: PathBuf,
    timeout: Option<Duration>,
    /// An answer read before the request was sent in full.
    early: Option<Response>,
}

impl Answers {
    /// The next response; `None` once the daemon has closed the connection.
    pub async fn next(&mut self) -> Result<Option<Response>, ClientError> {
        if let Some(response) = self.early.take() {
            return Ok(Some(response));
        }
        match read_frame(&mut self.stream, MAX_RESPONSE_BYTES, self.timeout).await {
            Ok(response) => Ok(Some(response)),
            Err(FrameError::Closed) => Ok(None),
            Err(FrameError::TimedOut(timeout)) => Err(ClientError::TimedOut {
                path: self.path.clone(),
                timeout,
            }),
            Err(source) => Err(ClientError::Protocol {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// Sends `request` to the daemon on socket `path`. Each answer must come within `timeout`
/// when given (`None` for `follow` requests, whose answers come as things happen).
pub async fn request_stream(
    path: &Path,
    request: Request,
    timeout: Option<Duration>,
) -> Result<Answers, ClientError> {
    let mut stream = UnixStream::connect(path).await.map_err(|source| {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::PermissionDenied => ClientError::Forbidden { path },
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::NoDaemon { path, source }
            }
            _ => ClientError::Protocol {
                path,
                source: FrameError::Io(source),
            },
        }
    })?;
    let mut early = None;
    if let Err(source) = write_frame(&mut stream, &request, MAX_REQUEST_BYTES, timeout).await {
        // The daemon may have answered and closed before taking the request (too many
        // connections): its answer is still there to read.
        let answer = read_frame(&mut stream, MAX_RESPONSE_BYTES, Some(EARLY_ANSWER_TIMEOUT));
        match answer.await {
            Ok(response) => early = Some(response),
            Err(_) => {
                return Err(ClientError::Protocol {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(Answers {
        stream,
        path: path.to_path_buf(),
        timeout,
        early,
    })
}

/// Sends `request` to the daemon on socket `path` and returns its answer, waiting at most
/// [`ANSWER_TIMEOUT`].
pub async fn request(path: &Path, request: Request) -> Result<Response, ClientError> {
    let mut answers = request_stream(path, request, Some(ANSWER_TIMEOUT)).await?;
    match answers.next().await? {
        Some(response) => Ok(response),
        None => Err(ClientError::Protocol {
            path: path.to_path_buf(),
            source: FrameError::Closed,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_kernel::config::{Heal, Kind, ServiceConfig};
    use medic_kernel::{Condition, Effect, Input, Outcome};

    fn kernel() -> Kernel {
        let wan = ServiceConfig::new(
            "wan",
            Kind::Interface {
                ifname: "eth0".into(),
                ready_when: medic_kernel::config::LinkReady::Carrier,
            },
        );
        let mut dnsmasq = ServiceConfig::new(
            "dnsmasq",
            Kind::Process {
                argv: vec!["/usr/sbin/dnsmasq".into()],
            },
        );
        dnsmasq.needs = vec!["wan".into()];
        let sleeper = ServiceConfig::new(
            "sleeper",
            Kind::Process {
                argv: vec!["sleep".into()],
            },
        );
        let config = medic_kernel::Config {
            daemon: Default::default(),
            services: vec![Arc::new(wan), Arc::new(dnsmasq), Arc::new(sleeper)],
        };
        Kernel::new(config)
    }

    /// Boots the kernel with eth0 up and every spawn answered with pid 100 + id.
    fn booted() -> Kernel {
        let mut k = kernel();
        let mut out = Vec::new();
        let link = LinkState {
            admin_up: true,
            carrier: true,
            ipv4: true,
            ipv6_global: false,
        };
        k.step(
            Instant::ZERO,
            Input::LinkChanged {
                ifname: "eth0".into(),
                link: Some(link),
            },
            &mut out,
        );
        let mut pending = Vec::new();
        k.step(Instant::from_millis(1), Input::Tick, &mut out);
        for _ in 0..4 {
            pending.append(&mut out);
            for effect in pending.drain(..) {
                if let Effect::Spawn { service, job, .. } = effect {
                    let pid = 100 + service.0;
                    let input = Input::Spawned { service, job, pid };
                    k.step(Instant::from_millis(2), input, &mut out);
                }
            }
        }
        k
    }

    #[test]
    fn status_rows_follow_the_kernel() {
        let k = booted();
        let rows = status_rows(&k, &[], Instant::from_millis(5001), |_| None).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["wan", "dnsmasq", "sleeper"], "config order");
        let dnsmasq = &rows[1];
        assert_eq!(dnsmasq.kind, "process");
        assert_eq!(dnsmasq.condition, "ready");
        assert!(dnsmasq.healthy);
        assert_eq!(dnsmasq.pid, Some(101));
        assert_eq!(dnsmasq.needs, ["wan"]);
        assert_eq!(dnsmasq.link, None);
        assert_eq!(
            dnsmasq.uptime_ms,
            Some(5000),
            "since the spawn at boot, 1 ms"
        );
        let wan = &rows[0];
        assert_eq!(wan.pid, None);
        assert_eq!(wan.link.as_ref().unwrap().state, "up, carrier");
        let view = |_: &str| {
            Some(LinkInfo {
                state: "up, carrier".into(),
                addresses: vec!["192.0.2.1/24".into()],
            })
        };
        let rows = status_rows(&k, &["wan".into()], Instant::from_millis(5002), view).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].link.as_ref().unwrap().addresses, ["192.0.2.1/24"]);
    }

    #[test]
    fn unknown_services_are_named_with_a_suggestion() {
        let k = booted();
        let names = ["dnsmask".to_string(), "zzzzzzzz".to_string()];
        let err = status_rows(&k, &names, Instant::ZERO, |_| None).unwrap_err();
        assert!(
            err.contains("`dnsmask`") && err.contains("did you mean `dnsmasq`"),
            "{err}"
        );
        assert!(
            err.contains("`zzzzzzzz`") && err.contains("medic status"),
            "{err}"
        );
        assert!(history_rows(&k, "nope").is_err());
        let stop = Request::Stop(vec!["dnsmasq".into(), "nope".into()]);
        assert!(stop.operators(&k).unwrap().is_err(), "all or nothing");
        let ops = Request::Restart(vec!["dnsmasq".into()]).operators(&k);
        assert_eq!(ops, Some(Ok(vec![Operator::Restart("dnsmasq".into())])));
        assert!(Request::Start(vec![]).operators(&k).unwrap().is_err());
        assert_eq!(Request::Ping.operators(&k), None);
    }

    #[test]
    fn history_rows_carry_heal_and_outcome() {
        let record = Record {
            seq: 3,
            at: Instant::from_millis(812),
            condition: Condition::Exited,
            heal: Some(Heal::Restart),
            outcome: Some(Outcome::Resolved),
            note: "exit code 1".into(),
        };
        let row = HistoryRow::from_record(&record);
        assert_eq!(row.at_ms, 812);
        assert_eq!(row.condition, "exited");
        assert_eq!(row.heal.as_deref(), Some("restart"));
        assert_eq!(row.outcome.as_deref(), Some("resolved"));
        assert_eq!(row.note, "exit code 1");
        let mut k = booted();
        let mut out = Vec::new();
        let job = k.services().nth(2).unwrap().proc.unwrap().job;
        let exited = Input::Exited {
            service: ServiceId(2),
            job,
            status: medic_kernel::ExitStatus::Code(1),
        };
        k.step(Instant::from_millis(900), exited, &mut out);
        let rows = history_rows(&k, "sleeper").unwrap();
        assert!(rows.iter().any(|r| r.condition == "exited"), "{rows:?}");
        let events = recent_events(&k, 1000);
        assert!(events.iter().any(|e| e.service == "sleeper"));
        assert!(events
            .windows(2)
            .all(|w| w[0].record.at_ms <= w[1].record.at_ms));
        assert_eq!(recent_events(&k, 1).len(), 1);
    }

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
        let stop = postcard::to_allocvec(&Request::Stop(vec!["a".into()])).unwrap();
        assert_eq!(stop, [2, 1, 1, b'a']);
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

    #[test]
    fn only_root_and_the_daemons_uid_may_connect() {
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(1000, 1000));
        assert!(!peer_allowed(1001, 1000));
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1000, 0));
    }

    /// A daemon loop that answers Ping with Pong, Events { follow } with three events, and
    /// drops everything else unanswered.
    async fn fake_loop(mut calls: mpsc::Receiver<Call>) {
        while let Some(Call { request, reply }) = calls.recv().await {
            match request {
                Request::Ping => {
                    let _ = reply.send(Response::Pong).await;
                }
                Request::Events { follow: true } => {
                    for i in 0..3 {
                        let row = EventRow {
                            service: format!("s{i}"),
                            record: HistoryRow::from_record(&Record {
                                seq: i,
                                at: Instant::from_millis(i),
                                condition: Condition::Ready,
                                heal: None,
                                outcome: None,
                                note: String::new(),
                            }),
                        };
                        let _ = reply.send(Response::Events(vec![row])).await;
                    }
                }
                _ => drop(reply),
            }
        }
    }

    #[tokio::test]
    async fn server_answers_and_survives_bad_clients() {
        let dir = std::env::temp_dir().join(format!("medic-control-test-{}", std::process::id()));
        let path = dir.join(SOCKET_NAME);
        let server = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(bind(&path).is_err(), "a live socket is not taken over");
        let (tx, calls) = mpsc::channel(4);
        tokio::spawn(server.run(tx));
        tokio::spawn(fake_loop(calls));

        assert_eq!(request(&path, Request::Ping).await.unwrap(), Response::Pong);

        // A huge length prefix: an error reply, then the connection is closed.
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        let r: Response = read_frame(&mut s, MAX_RESPONSE_BYTES, None).await.unwrap();
        assert!(
            matches!(&r, Response::Error(m) if m.contains("over the limit")),
            "{r:?}"
        );

        // Garbage: an error reply.
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(&[4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        let r: Response = read_frame(&mut s, MAX_RESPONSE_BYTES, None).await.unwrap();
        assert!(
            matches!(&r, Response::Error(m) if m.contains("undecodable")),
            "{r:?}"
        );

        // Truncated: the client stops writing half-way.
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(&[10, 0, 0, 0, 1]).await.unwrap();
        s.shutdown().await.unwrap();
        let r: Response = read_frame(&mut s, MAX_RESPONSE_BYTES, None).await.unwrap();
        assert!(
            matches!(&r, Response::Error(m) if m.contains("ended after")),
            "{r:?}"
        );

        // Stalled clients hold at most MAX_CONNECTIONS slots; the next ones are refused at once
        // rather than queued, and once the stalled ones go the daemon answers again.
        let mut stalled = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            stalled.push(UnixStream::connect(&path).await.unwrap());
        }
        let r = request(&path, Request::Ping).await;
        assert!(
            matches!(&r, Ok(Response::Error(m)) if m.contains("try again")),
            "{r:?}"
        );
        drop(stalled);
        let mut answered = false;
        for _ in 0..100 {
            if request(&path, Request::Ping).await.ok() == Some(Response::Pong) {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            answered,
            "the daemon answers once the stalled clients are gone"
        );

        // A request the loop drops without an answer.
        let r = request(&path, Request::Status { services: vec![] }).await;
        assert!(matches!(&r, Ok(Response::Error(m)) if m.contains("without an answer")));

        // A stream of answers, ended by the loop.
        let follow = Request::Events { follow: true };
        let mut answers = request_stream(&path, follow, None).await.unwrap();
        let mut got = 0;
        while let Some(r) = answers.next().await.unwrap() {
            assert!(matches!(r, Response::Events(rows) if rows.len() == 1));
            got += 1;
        }
        assert_eq!(got, 3);

        assert_eq!(request(&path, Request::Ping).await.unwrap(), Response::Pong);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn no_daemon_is_told_apart() {
        let path = std::env::temp_dir().join("medic-control-test-none/control.sock");
        let err = request(&path, Request::Ping).await.unwrap_err();
        assert!(err.no_daemon(), "{err}");
        assert!(err.to_string().contains("medic daemon"), "{err}");
    }
}
