//! The commands that talk to a running daemon over its control socket: `status`, `start`,
//! `stop`, `restart`, `reload`, `history`, `logs`, `events`, `trace save`, and the publishing
//! of `hook`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use medic_io::control::{
    self, ClientError, DaemonInfo, Request, Response, ServiceStatus, StatusReport,
};

use super::clock::Clock;
use super::format;
use super::{Command, Failure, JsonShape, Target, TraceCommand, EXIT_FAILED, EXIT_NO_DAEMON};
use crate::daemon;

/// The control socket of the daemon to talk to: in `--state-dir`, else `$MEDIC_STATE_DIR`,
/// else the `[daemon] state-dir` of the config (`-c FILE`, else `$MEDIC_CONFIG` or
/// `/etc/medic.toml`), else the default state dir for this user. A config named with `-c`
/// must read and validate (exit 2 otherwise); the default one is skipped quietly when it
/// does not.
pub fn socket_path(target: &Target) -> Result<PathBuf, Failure> {
    let configured = match (&target.state_dir, &target.config) {
        (None, Some(path)) if std::env::var_os("MEDIC_STATE_DIR").is_none() => {
            let (_, config) = super::check::load(path)?;
            Some(config.daemon.state_dir.map(PathBuf::from))
        }
        _ => None,
    };
    let dir = daemon::state_dir(target.state_dir.clone(), || match configured {
        Some(named) => named,
        None => config_state_dir(),
    });
    Ok(dir.join(control::SOCKET_NAME))
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
            times,
            target,
        } => status(&target, services, json, times.relative).await,
        Command::Start(s) => operator(&s.target, Request::Start(s.services), s.wait).await,
        Command::Stop(s) => operator(&s.target, Request::Stop(s.services), s.wait).await,
        Command::Restart(s) => operator(&s.target, Request::Restart(s.services), s.wait).await,
        Command::Reload(s) => operator(&s.target, Request::Reload(s.services), s.wait).await,
        Command::History {
            service,
            json,
            times,
            target,
        } => {
            let clock = clock(&target, times.relative).await?;
            let rows = match ask(&target, Request::History { service }).await? {
                Response::History(rows) => rows,
                other => return Err(unexpected(other)),
            };
            if json {
                emit(&format::history_json(&rows, &clock));
            } else {
                print!("{}", format::history_table(&rows, &clock));
            }
            Ok(())
        }
        Command::Logs {
            service,
            lines,
            follow,
            json,
            times,
            target,
        } => {
            let clock = clock(&target, times.relative).await?;
            let request = Request::LogRecords {
                service: service.clone(),
                lines,
                follow,
            };
            let each = |answer| match answer {
                Response::LogRecords(rows) => {
                    for row in &rows {
                        match json {
                            true => format::log_record_json(row).iter().for_each(|l| emit(l)),
                            false => emit(&format::log_record(row, &clock)),
                        }
                    }
                    Ok(())
                }
                Response::LogLines(lines) => {
                    lines.iter().for_each(|l| match json {
                        true => emit(&format::log_json(l)),
                        false => emit(&format::log_line(l)),
                    });
                    Ok(())
                }
                other => Err(unexpected(other)),
            };
            let ended = match stream(&target, request, follow, each).await {
                // A daemon older than LogRecords: plain lines.
                Err(f) if is_unknown_request(&f) => {
                    let request = Request::Logs {
                        service,
                        lines,
                        follow,
                    };
                    stream(&target, request, follow, each).await?
                }
                done => done?,
            };
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
            times,
            target,
        } => {
            let clock = clock(&target, times.relative).await?;
            // The first answer is what happened before; what follows happens live, and an
            // outcome decided live is shown at the time it was decided.
            let mut live = false;
            let ended = stream(&target, Request::Events { follow }, follow, |answer| {
                match answer {
                    Response::Events(rows) => rows.iter().for_each(|e| {
                        let update = live && e.record.outcome_at_ms.is_some();
                        match json {
                            true => emit(&format::event_json(e, &clock)),
                            false => emit(&format::event_line(e, &clock, update)),
                        }
                    }),
                    other => return Err(unexpected(other)),
                }
                live = true;
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
        Command::ReloadConfig { target } => match ask(&target, Request::ReloadConfig).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        },
        Command::Reexec { binary, target } => reexec(&target, binary).await,
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
        Command::Output { args, json, target } => {
            match super::output::parse_args(&args, json, &mut std::io::stdin().lock())? {
                super::output::Asked::Show(service) => {
                    match ask(&target, Request::Output { service }).await? {
                        Response::Outputs(outputs) => {
                            match json {
                                true => emit(&super::output::to_json(&outputs).to_string()),
                                false => print!("{}", super::output::table(&outputs)),
                            }
                            Ok(())
                        }
                        other => Err(unexpected(other)),
                    }
                }
                super::output::Asked::Set(service, outputs) => {
                    match ask(&target, Request::OutputSet { service, outputs }).await? {
                        Response::Done => Ok(()),
                        other => Err(unexpected(other)),
                    }
                }
            }
        }
        Command::Secret(command) => super::secret::run(command).await,
        Command::Confirm { target } => match ask(&target, Request::Confirm).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        },
        Command::Apply {
            file,
            confirm_within,
            target,
        } => {
            let path = absolute(&file)?.display().to_string();
            let confirm_within_ms = confirm_within.map(super::secret::millis);
            let request = Request::Apply {
                path,
                confirm_within_ms,
            };
            match ask(&target, request).await? {
                Response::Done => Ok(()),
                other => Err(unexpected(other)),
            }
        }
        Command::Daemon { .. }
        | Command::Check { .. }
        | Command::Replay { .. }
        | Command::Hook(_) => {
            unreachable!("handled without a daemon")
        }
    }
}

/// How long `medic hook` waits for the daemon: DESIGN.md §9 has a hook return within a second
/// whatever happens, and a DHCP client waits for its script.
pub const HOOK_TIMEOUT: Duration = Duration::from_millis(900);

/// Publishes `outputs` as the whole output map of `service` (`medic hook`, as `medic output
/// set` does), asking the daemon for at most [`HOOK_TIMEOUT`]: no daemon answering in time is
/// exit 3. A map over the outputs' bounds loses its `raw` part first (said in `errors`): the
/// lease itself is what consumers read.
pub fn publish_outputs(
    target: &Target,
    service: &str,
    outputs: serde_json::Value,
) -> Result<(), Failure> {
    let mut outputs = super::output::from_json_value(outputs)?;
    if let Err(e) = medic_kernel::outputs::validate(&outputs) {
        if outputs.remove("raw").is_some() {
            let why = format!("raw: left out, the whole map was over a bound ({e})");
            eprintln!("medic hook: {why}");
            let errors = outputs
                .entry("errors".to_string())
                .or_insert_with(|| medic_kernel::Value::List(Vec::new()));
            if let medic_kernel::Value::List(list) = errors {
                list.push(medic_kernel::Value::String(why));
            }
        }
        medic_kernel::outputs::validate(&outputs).map_err(|e| {
            Failure::failed(format!("the outputs of {service} are not published: {e}"))
        })?;
    }
    let socket = socket_path(target)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the client's runtime: {e}")))?;
    let request = Request::OutputSet {
        service: service.to_string(),
        outputs,
    };
    let asked = runtime.block_on(async {
        tokio::time::timeout(HOOK_TIMEOUT, control::request(&socket, request)).await
    });
    match asked {
        Ok(Ok(Response::Done)) => Ok(()),
        Ok(Ok(Response::Error(e))) => Err(Failure::failed(format!(
            "the outputs of {service} are not published: {e}"
        ))),
        Ok(Ok(other)) => Err(unexpected(other)),
        Ok(Err(e)) => Err(client_failure(e)),
        Err(_) => Err(Failure {
            status: EXIT_NO_DAEMON,
            message: format!(
                "no medic daemon answered on {} within {} ms; the outputs of {service} are not \
                 published",
                socket.display(),
                HOOK_TIMEOUT.as_millis()
            ),
        }),
    }
}

/// How long `medic reexec` waits for the new binary to answer.
const REEXEC_WAIT: Duration = Duration::from_secs(30);

/// `medic reexec`: asks the daemon to check and execve `binary`; once it has said yes, no
/// answer comes from the old binary any more, so the next one that answers is the new one —
/// unless the `execve` failed and the old image went on: the image it had before (asked first)
/// tells the two apart.
async fn reexec(target: &Target, binary: Option<PathBuf>) -> Result<(), Failure> {
    let binary = binary.as_deref().map(absolute).transpose()?;
    let shown = binary
        .as_ref()
        .map_or("the running binary".to_string(), |b| {
            b.display().to_string()
        });
    // `None`: a daemon too old to say (it is then taken at its word, as before).
    let before = match ask(target, Request::Image).await {
        Ok(Response::Image(image)) => Some(image),
        Ok(other) => return Err(unexpected(other)),
        Err(f) if is_unknown_request(&f) => None,
        Err(f) => return Err(f),
    };
    let request = Request::Reexec {
        binary: binary.map(|b| b.display().to_string()),
    };
    match ask(target, request).await? {
        Response::Done => emit(&format!("re-executing {shown}")),
        other => return Err(unexpected(other)),
    }
    let socket = socket_path(target)?;
    let deadline = std::time::Instant::now() + REEXEC_WAIT;
    loop {
        if let Some(before) = &before {
            match control::request(&socket, Request::Image).await {
                Ok(Response::Image(now)) if now.started_ns == before.started_ns => {
                    if now.failed_execs > before.failed_execs {
                        let why = now.last_failure.as_deref().unwrap_or("unknown");
                        return Err(Failure::failed(format!(
                            "the daemon could not re-execute {shown} ({why}); it goes on with                              the binary it had, every service as it was"
                        )));
                    }
                    // The old image, before its execve: not yet.
                    if std::time::Instant::now() >= deadline {
                        return Err(no_answer(&socket, &shown));
                    }
                    sleep_until_next_try().await;
                    continue;
                }
                // A new image (or one too old to know `Image`): the reexec happened.
                Ok(_) => {}
                Err(_) => {
                    sleep_until_next_try().await;
                    if std::time::Instant::now() >= deadline {
                        return Err(no_answer(&socket, &shown));
                    }
                    continue;
                }
            }
        }
        if let Ok(Response::Info(info)) = control::request(&socket, Request::Info).await {
            emit(&format!(
                "medic {} answers again, pid {}",
                info.version, info.pid
            ));
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(no_answer(&socket, &shown));
        }
        sleep_until_next_try().await;
    }
}

/// Between two tries of `medic reexec` to reach the daemon.
async fn sleep_until_next_try() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn no_answer(socket: &std::path::Path, shown: &str) -> Failure {
    Failure::failed(format!(
        "no daemon has answered on {} for {}s since it began re-executing {shown}; see its log",
        socket.display(),
        REEXEC_WAIT.as_secs()
    ))
}

/// Whether a failure is an older daemon's answer to a request it does not know.
pub(super) fn is_unknown_request(f: &Failure) -> bool {
    f.status == EXIT_FAILED && f.message.starts_with("bad request: undecodable")
}

/// The daemon's clocks, for showing its times; an older daemon that cannot tell them gives a
/// clock that shows times relative to its start.
async fn clock(target: &Target, relative: bool) -> Result<Clock, Failure> {
    match ask(target, Request::Info).await {
        Ok(Response::Info(info)) => Ok(Clock::new(Some(&info), relative)),
        Ok(other) => Err(unexpected(other)),
        Err(f) if is_unknown_request(&f) => Ok(Clock::new(None, relative)),
        Err(f) => Err(f),
    }
}

/// The status report of `services` (all when empty); from an older daemon, its status rows
/// without the rest.
async fn report(target: &Target, services: Vec<String>) -> Result<StatusReport, Failure> {
    let request = Request::StatusReport {
        services: services.clone(),
    };
    match ask(target, request).await {
        Ok(Response::StatusReport(report)) => return Ok(report),
        Ok(other) => return Err(unexpected(other)),
        Err(f) if is_unknown_request(&f) => {}
        Err(f) => return Err(f),
    }
    let rows = match ask(target, Request::Status { services }).await? {
        Response::Status(rows) => rows,
        other => return Err(unexpected(other)),
    };
    let services = rows
        .into_iter()
        .map(|row| ServiceStatus::from_row(row, 0))
        .collect();
    let daemon = DaemonInfo {
        pid: 0,
        version: "(older)".into(),
        config_path: String::new(),
        state_dir: String::new(),
        now_ms: 0,
        now_unix_ms: 0,
    };
    Ok(StatusReport {
        daemon,
        services,
        devices: Vec::new(),
    })
}

/// Lines of output shown by `status NAME`.
const DETAIL_LOG_LINES: u32 = 10;

/// `medic status`.
async fn status(
    target: &Target,
    services: Vec<String>,
    json: Option<JsonShape>,
    relative: bool,
) -> Result<(), Failure> {
    let one = (services.len() == 1 && json.is_none()).then(|| services[0].clone());
    let StatusReport {
        daemon,
        services,
        devices,
    } = report(target, services).await?;
    let info = (daemon.pid != 0).then_some(&daemon);
    let clock = Clock::new(info, relative);
    if let Some(name) = one {
        let Some(s) = services.iter().find(|s| s.row.name == name) else {
            return Err(unexpected(Response::Error(format!("no status for {name}"))));
        };
        // The health of what it needs and what needs it.
        let all = report(target, Vec::new()).await?.services;
        let logs = match s.row.kind.as_str() {
            "interface" | "device" => None,
            _ => {
                let request = Request::LogRecords {
                    service: name.clone(),
                    lines: DETAIL_LOG_LINES,
                    follow: false,
                };
                match ask(target, request).await {
                    Ok(Response::LogRecords(rows)) => Some(rows),
                    _ => None,
                }
            }
        };
        let colour = format::colour_stdout();
        print!(
            "{}",
            format::status_detail(s, &devices, &all, logs.as_deref(), &clock, colour)
        );
        return Ok(());
    }
    // A daemon older than confirm-or-roll-back has nothing pending.
    let pending = match ask(target, Request::Pending).await {
        Ok(Response::Pending(pending)) => pending,
        _ => None,
    };
    match json {
        Some(JsonShape::V1) => emit(&format::status_json(&services, &devices, &clock)),
        Some(JsonShape::V2) => emit(&format::status_json_v2(
            info,
            &services,
            &devices,
            &clock,
            pending.as_ref(),
        )),
        None => {
            let (colour, fit) = (format::colour_stdout(), format::terminal_width());
            print!(
                "{}",
                format::status_table(info, &services, &clock, colour, fit)
            );
            if let Some(p) = &pending {
                let what = medic_io::terminal::sanitize(&p.what);
                emit(&super::secret::pending_line(&what, p.deadline_ms, &clock));
            }
        }
    }
    Ok(())
}

/// The last line of a followed stream the daemon ended: `-- the medic daemon shut down: no more
/// events --`.
fn last_word(why: &str, what: &str) -> String {
    // The daemon's words, shown on a terminal: escaped like everything else it sends.
    let why = medic_io::terminal::sanitize(why);
    format!("-- {why}: no more {what} --")
}

/// Prints one line and flushes, so a follower sees it at once.
pub(super) fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // SIGPIPE is at its default for the client: a closed pipe ends the process quietly.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `path` made absolute against the current directory (the daemon has its own).
pub(super) fn absolute(path: &Path) -> Result<PathBuf, Failure> {
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
pub(super) async fn ask(target: &Target, request: Request) -> Result<Response, Failure> {
    let socket = socket_path(target)?;
    match control::request(&socket, request).await {
        Ok(Response::Error(message)) => Err(Failure::failed(message)),
        Ok(response) => Ok(response),
        Err(e) => Err(client_failure(e)),
    }
}

/// `start|stop|restart|reload`: silent on success. With `wait`, returns once every service
/// named is where the command takes it (ready; stopped for `stop`; a run newer than the
/// command for `restart`), or fails after `wait`, saying where each one is and why.
async fn operator(
    target: &Target,
    request: Request,
    wait: Option<Duration>,
) -> Result<(), Failure> {
    let names = match &request {
        Request::Start(n) | Request::Stop(n) | Request::Restart(n) | Request::Reload(n) => {
            n.clone()
        }
        _ => Vec::new(),
    };
    let stop = matches!(request, Request::Stop(_));
    let restart = matches!(request, Request::Restart(_));
    let taken_at = match wait {
        Some(_) => clock(target, false).await?.now_ms(),
        None => None,
    };
    match ask(target, request).await? {
        Response::Done => {}
        other => return Err(unexpected(other)),
    }
    let Some(timeout) = wait else { return Ok(()) };
    let there = |s: &ServiceStatus| match stop {
        true => s.row.condition == "stopped",
        false => s.row.healthy && (!restart || taken_at.iter().all(|&t| s.row.since_ms >= t)),
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let report = report(target, names.clone()).await?;
        let missing: Vec<&ServiceStatus> = report.services.iter().filter(|s| !there(s)).collect();
        // A service that went given-up after the command will not get there by waiting.
        let hopeless = missing.iter().any(|s| s.row.condition == "given-up");
        if missing.is_empty() {
            return Ok(());
        }
        if hopeless || std::time::Instant::now() >= deadline {
            let clock = Clock::new(Some(&report.daemon).filter(|d| d.pid != 0), false);
            let each: Vec<String> = missing
                .iter()
                .map(|s| {
                    let mut line = format!("{} is {}", s.row.name, s.row.condition);
                    if !s.why.is_empty() {
                        line.push_str(&format!(" ({})", clock.note(&s.why)));
                    }
                    if !s.next.is_empty() {
                        line.push_str(&format!("; next: {}", format::next(s, &clock)));
                    }
                    line
                })
                .collect();
            let goal = if stop { "stopped" } else { "ready" };
            let waited = humantime::format_duration(timeout);
            let after = match hopeless {
                true => "gave up waiting".to_string(),
                false => format!("not {goal} after {waited}"),
            };
            return Err(Failure::failed(format!("{after}: {}", each.join("; "))));
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// How often `--wait` asks the daemon for the status.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Sends a request whose answer may be a stream (`follow`), handing each answer to `each`
/// until the daemon closes the connection; returns the daemon's last word when it ended a
/// followed stream ([`Response::Ended`]). A followed stream closed without one is a failure.
async fn stream(
    target: &Target,
    request: Request,
    follow: bool,
    mut each: impl FnMut(Response) -> Result<(), Failure>,
) -> Result<Option<String>, Failure> {
    let socket = socket_path(target)?;
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
pub(super) fn unexpected(response: Response) -> Failure {
    Failure::failed(format!(
        "the daemon answered {response:?}, which does not fit the request; is it running the \
         same version of medic?"
    ))
}
