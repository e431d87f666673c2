//! The daemon's side of the control socket: bind it, check each peer, read one request, hand
//! it to the loop as a [`Call`], write the answers. Every connection runs on its own task.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};

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
    permits: Arc<Semaphore>,
}

/// The connections of a [`Server`], to wait for at exit.
#[derive(Clone, Debug)]
pub struct Connections(Arc<Semaphore>);

impl Connections {
    /// Waits until no connection is being served: every one has written what was queued for
    /// it and closed. Bound it with a timeout: a client may be slow to read.
    pub async fn finished(&self) {
        let _ = self.0.acquire_many(MAX_CONNECTIONS as u32).await;
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
        permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
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
        Connections(self.permits.clone())
    }

    /// Accepts connections, one task each, and hands their requests to `tx`, until the
    /// receiver of `tx` is dropped; then removes the socket file.
    pub async fn run(self, tx: mpsc::Sender<Call>) {
        let permits = self.permits.clone();
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
        remove_if_same(&self.path, self.id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::client::*;
    use medic_kernel::{Condition, Instant, Record};
    use tokio::io::AsyncWriteExt;

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
