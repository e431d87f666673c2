//! The daemon's side of the control socket: bind it, check each peer, read one request, hand
//! it to the loop as a [`Call`], write the answers. Every connection runs on its own task.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use super::wire::*;
use crate::statedir::{remove_if_same, FileId};

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
    id: FileId,
    pools: Pools,
}

/// The connections of a [`Server`], to wait for at exit.
#[derive(Clone, Debug)]
pub struct Connections(Pools);

impl Connections {
    /// Waits until no connection is being served: every pool is empty (no connection still
    /// sending its request, following, or being answered), so every one has written what was
    /// queued for it and closed. Bound it with a timeout: a client may be slow to read.
    pub async fn finished(&self) {
        let pools = &self.0;
        let _ = tokio::join!(
            pools.following.acquire_many(MAX_FOLLOWING as u32),
            pools.answering.acquire_many(MAX_ANSWERING as u32),
            pools.waiting_emptied(),
        );
    }
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
    let id =
        FileId::of(path).map_err(|e| context(&format!("cannot stat {}", path.display()), e))?;
    Ok(Server {
        listener,
        path: path.to_path_buf(),
        own_uid: nix::unistd::geteuid().as_raw(),
        id,
        pools: Pools {
            waiting: Arc::new(Mutex::new(Waiting::default())),
            waiting_left: Arc::new(Notify::new()),
            following: Arc::new(Semaphore::new(MAX_FOLLOWING)),
            answering: Arc::new(Semaphore::new(MAX_ANSWERING)),
        },
    })
}

impl Server {
    /// The socket file this server bound: remove it with [`remove_if_same`], never by path
    /// alone (another daemon may have bound a new one there since).
    pub fn id(&self) -> FileId {
        self.id
    }

    /// Its connections, to wait for at exit.
    pub fn connections(&self) -> Connections {
        Connections(self.pools.clone())
    }

    /// Accepts connections, one task each, and hands their requests to `tx`, until the
    /// receiver of `tx` is dropped; then removes the socket file.
    ///
    /// Who may connect is checked first (`SO_PEERCRED`), before anything is spent on the
    /// connection: a refused peer gets its error frame without blocking and is closed, without
    /// a task or a slot. Then three bounded pools, so that no client can lock out `status` or
    /// `stop`: at most [`MAX_CONNECTIONS`] connections still sending their request (a new one
    /// beyond that closes the oldest of the process that holds the most; each has
    /// [`READ_TIMEOUT`]), at most
    /// [`MAX_FOLLOWING`] followers, and at most [`MAX_ANSWERING`] one-shot requests being
    /// answered.
    ///
    /// Out of file descriptors, a client is still told so: a spare descriptor, held for this,
    /// is let go to accept the connection and answer it with an error, then taken back.
    pub async fn run(self, tx: mpsc::Sender<Call>) {
        let pools = self.pools.clone();
        let mut spare = std::fs::File::open("/dev/null").ok();
        let mut warned: Option<std::time::Instant> = None;
        loop {
            let stream = tokio::select! {
                _ = tx.closed() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        if warned.is_none_or(|at| at.elapsed() >= ACCEPT_WARN_EVERY) {
                            warned = Some(std::time::Instant::now());
                            tracing::warn!("control socket {}: accept: {e}", self.path.display());
                        }
                        let out_of_fds = matches!(
                            e.raw_os_error(),
                            Some(libc::EMFILE) | Some(libc::ENFILE)
                        );
                        if out_of_fds && spare.take().is_some() {
                            let next = self.listener.accept();
                            if let Ok(Ok((stream, _))) =
                                tokio::time::timeout(Duration::from_millis(10), next).await
                            {
                                refuse(&stream, format!("the daemon is out of file descriptors ({e}); try again"));
                            }
                            spare = std::fs::File::open("/dev/null").ok();
                        }
                        // Wait instead of spinning.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let pid = match check_peer(&stream, self.own_uid) {
                Ok(pid) => pid,
                Err(message) => {
                    refuse(&stream, message);
                    continue;
                }
            };
            let (id, evicted) = match pools.waiting_admit(pid) {
                Admitted::Yes(id, evicted) => (id, evicted),
                Admitted::Full => {
                    let busy = format!(
                        "the daemon has {} new connections not yet read; try again",
                        2 * MAX_CONNECTIONS
                    );
                    refuse(&stream, busy);
                    continue;
                }
            };
            let tx = tx.clone();
            let pools = pools.clone();
            tokio::spawn(async move {
                serve_connection(stream, tx, id, evicted, pools).await;
            });
        }
        remove_if_same(&self.path, self.id);
    }
}

/// The bounded pools of connections of one server.
#[derive(Clone, Debug)]
struct Pools {
    waiting: Arc<Mutex<Waiting>>,
    /// Told each time a connection leaves the waiting pool.
    waiting_left: Arc<Notify>,
    following: Arc<Semaphore>,
    answering: Arc<Semaphore>,
}

/// Connections still sending their request, oldest first.
#[derive(Debug, Default)]
struct Waiting {
    queue: VecDeque<Waiter>,
    next: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    /// The peer's pid (`SO_PEERCRED`).
    pid: Option<i32>,
    /// Its task has run and tried to read: a request that was there has been taken. Only such
    /// connections are closed to make room, so a burst of new connections cannot close one
    /// whose request simply has not been looked at yet.
    polled: bool,
    /// Closes it.
    evict: oneshot::Sender<()>,
}

/// Waiting connections from one process at most: a process holding more has its own oldest
/// one closed, not someone else's. (The command line uses one connection per process.)
const MAX_WAITING_PER_PEER: usize = 4;

/// What admitting a new connection did.
enum Admitted {
    /// It waits for its request; the receiver says when it is closed to make room.
    Yes(u64, oneshot::Receiver<()>),
    /// Every slot is held by connections whose requests have not even been looked at yet
    /// (a burst of twice [`MAX_CONNECTIONS`]): refused.
    Full,
}

impl Pools {
    /// Admits a new connection from process `pid` to the waiting pool, making room when the
    /// pool (or this process's share of it) is full by closing the oldest connection that has
    /// already been looked at.
    fn waiting_admit(&self, pid: Option<i32>) -> Admitted {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let queue = &mut waiting.queue;
        let of_peer = queue
            .iter()
            .filter(|w| pid.is_some() && w.pid == pid)
            .count();
        let made_room = if of_peer >= MAX_WAITING_PER_PEER {
            evict_oldest(queue, |w| w.pid == pid)
        } else if queue.len() >= MAX_CONNECTIONS {
            // From the process that holds the most: a client with one connection (`status`)
            // is not closed to make room for the tenth reconnect of a crowd of idle ones.
            match busiest_peer(queue) {
                Some(busiest) => evict_oldest(queue, |w| w.pid == busiest),
                None => false,
            }
        } else {
            true
        };
        // A burst of connections none of which has been looked at yet goes over the bounds
        // above, up to twice the pool.
        let room = made_room || queue.len() < 2 * MAX_CONNECTIONS;
        if !room {
            return Admitted::Full;
        }
        let (evict, evicted) = oneshot::channel();
        waiting.next += 1;
        let id = waiting.next;
        waiting.queue.push_back(Waiter {
            id,
            pid,
            polled: false,
            evict,
        });
        Admitted::Yes(id, evicted)
    }

    /// The task of connection `id` runs: from now on it may be closed to make room.
    fn waiting_polled(&self, id: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = waiting.queue.iter_mut().find(|w| w.id == id) {
            w.polled = true;
        }
    }

    /// The connection `id` has sent its request (or failed): it leaves the waiting pool.
    fn waiting_done(&self, id: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.queue.retain(|w| w.id != id);
        drop(waiting);
        self.waiting_left.notify_waiters();
    }

    /// Waits until no connection is waiting to send its request.
    async fn waiting_emptied(&self) {
        loop {
            let left = self.waiting_left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            let empty = {
                let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                waiting.queue.is_empty()
            };
            if empty {
                return;
            }
            left.await;
        }
    }
}

/// Closes the oldest looked-at connection that `which` selects; whether there was one.
/// The peer with the most waiting connections that may be closed (polled ones), if any; of
/// peers with as many, the one whose oldest came first. Connections whose peer is unknown count
/// as one peer.
fn busiest_peer(queue: &VecDeque<Waiter>) -> Option<Option<i32>> {
    // (count, first position) per peer; at most MAX_CONNECTIONS * 2 entries.
    let mut peers: Vec<(Option<i32>, usize, usize)> = Vec::new();
    for (i, w) in queue.iter().enumerate().filter(|(_, w)| w.polled) {
        match peers.iter_mut().find(|(pid, _, _)| *pid == w.pid) {
            Some((_, count, _)) => *count += 1,
            None => peers.push((w.pid, 1, i)),
        }
    }
    peers
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
        .map(|(pid, _, _)| pid)
}

fn evict_oldest(queue: &mut VecDeque<Waiter>, which: impl Fn(&Waiter) -> bool) -> bool {
    match queue.iter().position(|w| w.polled && which(w)) {
        Some(i) => {
            if let Some(w) = queue.remove(i) {
                let _ = w.evict.send(());
            }
            true
        }
        None => false,
    }
}

/// Whether the peer of `stream` may talk to a daemon running as `own_uid`: its pid if so, the
/// error message for it if not.
fn check_peer(stream: &UnixStream, own_uid: u32) -> Result<Option<i32>, String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot tell who is connecting (SO_PEERCRED): {e}"))?;
    let peer = cred.uid();
    if peer_allowed(peer, own_uid) {
        Ok(cred.pid())
    } else {
        Err(format!(
            "uid {peer} may not control medic: only root and uid {own_uid} may"
        ))
    }
}

/// Tells a client why it is refused, without waiting (the frame is small enough for an empty
/// socket buffer; the client reads it even if its request could not be sent), and closes.
/// An accept error is logged at most this often (it repeats every 100 ms while it lasts).
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

fn refuse(stream: &UnixStream, message: String) {
    if let Ok(frame) = encode_frame(&Response::Error(message), MAX_RESPONSE_BYTES) {
        let _ = stream.try_write(&frame);
    }
}

/// One connection: read one request (unless a newer connection closes it first), hand it to
/// the loop, write the answers.
async fn serve_connection(
    mut stream: UnixStream,
    tx: mpsc::Sender<Call>,
    id: u64,
    evicted: oneshot::Receiver<()>,
    pools: Pools,
) {
    pools.waiting_polled(id);
    let read = tokio::select! {
        read = read_frame::<Request, _>(&mut stream, MAX_REQUEST_BYTES, Some(READ_TIMEOUT)) => {
            Some(read)
        }
        _ = evicted => None,
    };
    pools.waiting_done(id);
    let request = match read {
        Some(Ok(request)) => request,
        None => {
            let message = format!(
                "closed: more than {MAX_CONNECTIONS} connections (or {MAX_WAITING_PER_PEER} \
                 of this process) were waiting to send a request, and this one had waited \
                 longest"
            );
            return refuse(&stream, message);
        }
        Some(Err(FrameError::Closed)) | Some(Err(FrameError::Io(_))) => return,
        Some(Err(e)) => {
            let message = format!(
                "bad request: {e} (is this medic's control socket protocol, and the same \
                 version of medic?)"
            );
            return answer_error(&mut stream, message).await;
        }
    };
    let follows = matches!(
        request,
        Request::Events { follow: true } | Request::Logs { follow: true, .. }
    );
    let (pool, limit, what) = match follows {
        true => (&pools.following, MAX_FOLLOWING, "followers"),
        false => (&pools.answering, MAX_ANSWERING, "requests being answered"),
    };
    let Ok(_permit) = pool.clone().try_acquire_owned() else {
        let message = format!("the daemon has {limit} {what} already; try again later");
        return answer_error(&mut stream, message).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::client::*;
    use medic_kernel::{Condition, Instant, Record};
    use tokio::io::AsyncWriteExt;

    fn waiter(pid: i32, polled: bool) -> (Waiter, oneshot::Receiver<()>) {
        let (evict, evicted) = oneshot::channel();
        let w = Waiter {
            id: 0,
            pid: Some(pid),
            polled,
            evict,
        };
        (w, evicted)
    }

    #[test]
    fn a_full_pool_closes_a_connection_of_the_peer_that_holds_the_most() {
        let mut queue = VecDeque::new();
        let mut evicted = Vec::new();
        // The lone client first (the oldest), then three of peer 7 and two of peer 8.
        for pid in [1, 7, 8, 7, 8, 7] {
            let (w, rx) = waiter(pid, true);
            queue.push_back(w);
            evicted.push((pid, rx));
        }
        assert_eq!(busiest_peer(&queue), Some(Some(7)));
        assert!(evict_oldest(&mut queue, |w| w.pid == Some(7)));
        assert!(evicted[1].1.try_recv().is_ok(), "peer 7's oldest is closed");
        assert!(evicted[0].1.try_recv().is_err(), "the lone client is not");
        // 7 and 8 now hold two each: the one whose oldest came first goes (8).
        assert_eq!(busiest_peer(&queue), Some(Some(8)));
        // Connections not yet looked at are never chosen.
        let (w, _rx) = waiter(9, false);
        let unpolled: VecDeque<Waiter> = [w].into_iter().collect();
        assert_eq!(busiest_peer(&unpolled), None);
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
                                outcome_at: None,
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

        // Clients that send nothing hold at most MAX_CONNECTIONS slots: a new connection
        // closes the one that waited longest, so a client that sends its request at once is
        // always answered; and each is closed after READ_TIMEOUT anyway.
        let mut stalled = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 5 {
            stalled.push(UnixStream::connect(&path).await.unwrap());
        }
        assert_eq!(request(&path, Request::Ping).await.unwrap(), Response::Pong);
        // Now that they have all been looked at, a new connection closes the oldest one.
        assert_eq!(request(&path, Request::Ping).await.unwrap(), Response::Pong);
        let r: Response = read_frame(&mut stalled[0], MAX_RESPONSE_BYTES, None)
            .await
            .unwrap();
        assert!(
            matches!(&r, Response::Error(m) if m.contains("waited longest")),
            "{r:?}"
        );
        let last = stalled.last_mut().unwrap();
        let r: Response = read_frame(last, MAX_RESPONSE_BYTES, Some(READ_TIMEOUT * 3))
            .await
            .unwrap();
        assert!(
            matches!(&r, Response::Error(m) if m.contains("within")),
            "a silent client is closed after READ_TIMEOUT: {r:?}"
        );
        drop(stalled);

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
