//! The commands that talk to a running daemon over its control socket: `status`, `start`,
//! `stop`, `restart`, `reload`, `history`, `logs`, `events`, `trace save`.

use std::io::Write;
use std::path::{Path, PathBuf};

use medic_io::control::{self, ClientError, Request, Response};

use super::format;
use super::{Command, Failure, Target, TraceCommand, EXIT_FAILED, EXIT_NO_DAEMON};
use crate::daemon;

/// The control socket of the daemon to talk to: in `--state-dir`, else `$MEDIC_STATE_DIR`,
/// else the `[daemon] state-dir` of the config (`$MEDIC_CONFIG` or `/etc/medic.toml`, when it
/// reads and validates), else the default state dir for this user.
pub fn socket_path(target: &Target) -> PathBuf {
    daemon::state_dir(target.state_dir.clone(), config_state_dir).join(control::SOCKET_NAME)
}

/// The `[daemon] state-dir` of the default config, if it names one.
fn config_state_dir() -> Option<PathBuf> {
    let path = daemon::config_path(None);
    let text = std::fs::read_to_string(&path).ok()?;
    let config = medic_kernel::config::parse(&text, &path.display().to_string()).ok()?;
    config.daemon.state_dir.map(PathBuf::from)
}

/// Runs one of the client commands.
pub fn run(command: Command) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the client's runtime: {e}")))?;
    runtime.block_on(dispatch(command))
}

async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Status {
            services,
            json,
            target,
        } => {
            let rows = match ask(&target, Request::Status { services }).await? {
                Response::Status(rows) => rows,
                other => return Err(unexpected(other)),
            };
            if json {
                emit(&format::status_json(&rows));
            } else {
                print!("{}", format::status_table(&rows, format::colour_stdout()));
            }
            Ok(())
        }
        Command::Start(s) => operator(&s.target, Request::Start(s.services)).await,
        Command::Stop(s) => operator(&s.target, Request::Stop(s.services)).await,
        Command::Restart(s) => operator(&s.target, Request::Restart(s.services)).await,
        Command::Reload(s) => operator(&s.target, Request::Reload(s.services)).await,
        Command::History {
            service,
            json,
            target,
        } => {
            let rows = match ask(&target, Request::History { service }).await? {
                Response::History(rows) => rows,
                other => return Err(unexpected(other)),
            };
            if json {
                emit(&format::history_json(&rows));
            } else {
                print!("{}", format::history_table(&rows));
            }
            Ok(())
        }
        Command::Logs {
            service,
            lines,
            follow,
            json,
            target,
        } => {
            let request = Request::Logs {
                service,
                lines,
                follow,
            };
            let ended = stream(&target, request, follow, |answer| match answer {
                Response::LogLines(lines) => {
                    lines.iter().for_each(|l| match json {
                        true => emit(&format::log_json(l)),
                        false => emit(&format::log_line(l)),
                    });
                    Ok(())
                }
                other => Err(unexpected(other)),
            })
            .await?;
            match ended {
                // stdout stays one JSON string per line.
                Some(why) if json => eprintln!("{}", last_word(&why, "output")),
                Some(why) => emit(&last_word(&why, "output")),
                None => {}
            }
            Ok(())
        }
        Command::Events {
            follow,
            json,
            target,
        } => {
            let ended = stream(&target, Request::Events { follow }, follow, |answer| {
                match answer {
                    Response::Events(rows) => rows.iter().for_each(|e| match json {
                        true => emit(&format::event_json(e)),
                        false => emit(&format::event_line(e)),
                    }),
                    other => return Err(unexpected(other)),
                }
                Ok(())
            })
            .await?;
            match ended {
                // stdout stays one JSON object per line.
                Some(why) if json => eprintln!("{}", last_word(&why, "events")),
                Some(why) => emit(&last_word(&why, "events")),
                None => {}
            }
            Ok(())
        }
        Command::Trace(TraceCommand::Save { file, target }) => {
            let file = absolute(&file)?;
            let path = file.display().to_string();
            match ask(&target, Request::TraceSave { path }).await? {
                Response::TraceSaved { bytes } => {
                    println!("wrote {bytes} bytes of trace to {}", file.display());
                    Ok(())
                }
                other => Err(unexpected(other)),
            }
        }
        Command::Daemon { .. } | Command::Check { .. } | Command::Replay { .. } => {
            unreachable!("handled without a daemon")
        }
    }
}

/// The last line of a followed stream that the daemon ended: `-- the medic daemon shut down:
/// no more events --`.
fn last_word(why: &str, what: &str) -> String {
    // The daemon's words, shown on a terminal: escaped like everything else it sends.
    let why = medic_io::terminal::sanitize(why);
    format!("-- {why}: no more {what} --")
}

/// Prints one line and flushes, so a follower sees it at once.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // SIGPIPE is at its default for the client: a closed pipe ends the process quietly.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `path` made absolute against the current directory (the daemon has its own).
fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path)
        .map_err(|e| Failure::failed(format!("cannot make {} absolute: {e}", path.display())))
}

/// A failure for a client error: exit 3 when no daemon answers, else 1.
fn client_failure(e: ClientError) -> Failure {
    Failure {
        status: if e.no_daemon() {
            EXIT_NO_DAEMON
        } else {
            EXIT_FAILED
        },
        message: e.to_string(),
    }
}

/// Sends one request and returns its answer; an error answer is a failure (exit 1).
async fn ask(target: &Target, request: Request) -> Result<Response, Failure> {
    let socket = socket_path(target);
    match control::request(&socket, request).await {
        Ok(Response::Error(message)) => Err(Failure::failed(message)),
        Ok(response) => Ok(response),
        Err(e) => Err(client_failure(e)),
    }
}

/// `start|stop|restart|reload`: silent on success.
async fn operator(target: &Target, request: Request) -> Result<(), Failure> {
    match ask(target, request).await? {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Sends a request whose answer may be a stream (`follow`), handing each answer to `each`
/// until the daemon closes the connection. A followed stream ends with the daemon's last word
/// ([`Response::Ended`]), returned; one that just stops is a failure.
async fn stream(
    target: &Target,
    request: Request,
    follow: bool,
    mut each: impl FnMut(Response) -> Result<(), Failure>,
) -> Result<Option<String>, Failure> {
    let socket = socket_path(target);
    let timeout = (!follow).then_some(control::ANSWER_TIMEOUT);
    let mut answers = control::request_stream(&socket, request, timeout)
        .await
        .map_err(client_failure)?;
    let mut any = false;
    while let Some(answer) = answers.next().await.map_err(client_failure)? {
        any = true;
        match answer {
            Response::Error(message) => return Err(Failure::failed(message)),
            Response::Ended(why) => return Ok(Some(why)),
            answer => each(answer)?,
        }
    }
    if !any {
        return Err(Failure::failed(format!(
            "the daemon on {} closed the connection without an answer",
            socket.display()
        )));
    }
    if follow {
        return Err(Failure::failed(format!(
            "the daemon on {} ended the stream without a last word: it was killed, or this \
             follower fell too far behind",
            socket.display()
        )));
    }
    Ok(None)
}

/// An answer that does not fit the request: a daemon of another version, most likely.
fn unexpected(response: Response) -> Failure {
    Failure::failed(format!(
        "the daemon answered {response:?}, which does not fit the request; is it running the \
         same version of medic?"
    ))
}
