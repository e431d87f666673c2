//! The command line's side of the control socket: connect, send one request, read the
//! answers, and tell "no daemon" apart from other failures.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use super::wire::*;
use crate::statedir::{check_peer, check_socket};

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
    /// The socket, or the process serving it, belongs to another user: not to be trusted.
    #[error("refusing the control socket {}: {why}", path.display())]
    Untrusted {
        /// The socket.
        path: PathBuf,
        /// Whose it is.
        why: String,
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
    let untrusted = |why| ClientError::Untrusted {
        path: path.to_path_buf(),
        why,
    };
    check_socket(path).map_err(untrusted)?;
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
    let peer = stream
        .peer_cred()
        .map_err(|e| untrusted(format!("SO_PEERCRED: {e}")))?;
    check_peer(peer.uid()).map_err(untrusted)?;
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
