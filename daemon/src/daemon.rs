//! `medic daemon`: validate the config, then run the supervisor until SIGTERM/SIGINT.
//!
//! Where things are:
//! * config: `-c FILE`, else `$MEDIC_CONFIG`, else `/etc/medic.toml`;
//! * state dir: `--state-dir DIR`, else `$MEDIC_STATE_DIR`, else the config's
//!   `[daemon] state-dir`, else `/run/medic` for root and `$XDG_RUNTIME_DIR/medic` for others.
//!
//! A relative `argv[0]` with a `/` in it (`run = ["demo/dnsmasq.sh"]`), a relative `cwd` and
//! relative watched or checked paths are taken relative to the config file's directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use medic_io::reexec::{self, Handover};
use medic_io::runtime::{self, RuntimeError, Setup};
use medic_io::{fds, logsink};

/// The config file to use: `explicit`, else `$MEDIC_CONFIG`, else `/etc/medic.toml`.
pub fn config_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("MEDIC_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/medic.toml"))
}

/// The state directory: `explicit` (`--state-dir`), else `$MEDIC_STATE_DIR`, else what the
/// config names (`configured`, asked only when needed), else [`default_state_dir`].
pub fn state_dir(
    explicit: Option<PathBuf>,
    configured: impl FnOnce() -> Option<PathBuf>,
) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("MEDIC_STATE_DIR").map(PathBuf::from))
        .or_else(configured)
        .unwrap_or_else(default_state_dir)
}

/// The state directory when nothing names one: `/run/medic` for root, else
/// `$XDG_RUNTIME_DIR/medic` (`/tmp/medic-UID` when that is unset).
pub fn default_state_dir() -> PathBuf {
    let uid = nix_uid();
    if uid == 0 {
        return PathBuf::from("/run/medic");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Path::new(&dir).join("medic"),
        _ => PathBuf::from(format!("/tmp/medic-{uid}")),
    }
}

fn nix_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// How long the daemon waits at exit for its log to be written (a reader that stalls must
/// not keep it from exiting).
const LOG_FLUSH: Duration = Duration::from_secs(2);

/// How `medic daemon` was asked to start.
#[derive(Debug, Default)]
pub struct Start {
    /// `-c FILE`.
    pub config: Option<PathBuf>,
    /// `--state-dir DIR`.
    pub state_dir: Option<PathBuf>,
    /// `--check-state FD|PATH`: only check a handover, start nothing.
    pub check_state: Option<String>,
    /// `--take-over FD`: take over from the daemon this one re-executed over.
    pub take_over: Option<String>,
}

/// `medic daemon --check-state FD|PATH`: whether this binary accepts the handover there (its
/// layout, the state file in it, the config text in it); 0 and [`reexec::ACCEPTED`] on
/// stdout if so, else 1 and why on stderr. Starts nothing, touches no state dir.
pub fn check_state(config: Option<PathBuf>, source: &str) -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    let name = config_path(config).display().to_string();
    match reexec::read(source).and_then(|bytes| Handover::accept(&bytes, &name)) {
        Ok(accepted) => {
            println!(
                "medic {version}: {}: {} services, {} live processes",
                reexec::ACCEPTED,
                accepted.state.kernel.services.len(),
                accepted.state.procs.len()
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("medic {version}: cannot take over this state: {why}");
            ExitCode::from(crate::cli::EXIT_FAILED)
        }
    }
}

/// Runs `medic daemon` and returns its exit status: 2 after printing every problem when the
/// config does not validate (nothing is started then), 1 when it could not run (its message
/// is logged).
///
/// Everything the daemon writes to stderr goes through [`logsink`]: a log reader that stalls,
/// is slow or has gone can neither block nor kill it.
pub fn run(start: Start) -> ExitCode {
    if let Some(source) = &start.check_state {
        return check_state(start.config, source);
    }
    // Before anything is opened or started: nothing the daemon inherited reaches a service.
    let inherited = fds::cloexec_inherited();
    let limit = fds::raise_nofile_limit();
    init_logging();
    if let Err(e) = inherited {
        tracing::warn!("cannot mark inherited descriptors close-on-exec: {e}");
    }
    match limit {
        Ok((old, new)) if old != new => tracing::debug!("descriptor limit raised {old} -> {new}"),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the descriptor limit: {e}"),
    }
    let status = supervise(start);
    logsink::flush(LOG_FLUSH);
    status
}

fn supervise(start: Start) -> ExitCode {
    let Start {
        config,
        state_dir,
        take_over,
        ..
    } = start;
    let config_path = config_path(config);
    let name = config_path.display().to_string();
    // After a reexec: the state and the config text the old binary handed over. Should that
    // fail, the state file it wrote just before is taken back, as after a crash.
    let handover = take_over.and_then(|fd| {
        let name = std::path::absolute(&config_path).unwrap_or_else(|_| config_path.clone());
        match reexec::read(&fd).and_then(|b| Handover::accept(&b, &name.display().to_string())) {
            Ok(accepted) => Some(accepted),
            Err(why) => {
                tracing::error!("--take-over {fd}: {why}; taking back the state file instead");
                None
            }
        }
    });
    let loaded = match &handover {
        Some(handed) => {
            let name = std::path::absolute(&config_path).unwrap_or_else(|_| config_path.clone());
            match medic_kernel::config::parse(&handed.config_text, &name.display().to_string()) {
                Ok(config) => Ok((handed.config_text.clone(), config)),
                Err(errors) => Err(crate::cli::Failure::usage(errors.to_string())),
            }
        }
        None => crate::cli::check::load_with(&config_path, |errors| {
            logsink::line(errors);
        }),
    };
    let (config_text, config) = match loaded {
        Ok(loaded) => loaded,
        Err(failure) => {
            logsink::line(&format!("medic: {}; nothing was started", failure.message));
            return ExitCode::from(failure.status);
        }
    };
    for warning in crate::cli::check::warnings(&config, &crate::cli::check::base_dir(&config_path))
    {
        tracing::warn!("{name}: {warning}");
    }
    // A broken template does not stop the daemon (its service waits, its history says why),
    // but the log says so at once, as `medic check` does.
    for problem in crate::cli::check::template_problems(&config, &config_path) {
        tracing::warn!("{problem}");
    }
    let state_dir = self::state_dir(state_dir, || {
        config.daemon.state_dir.as_ref().map(PathBuf::from)
    });
    let n = config.services.len();
    let taken = match handover {
        Some(_) => " (taking over after medic reexec)",
        None => "",
    };
    tracing::info!(
        "medic {}{taken} supervising {n} {} from {name}, state in {}",
        env!("CARGO_PKG_VERSION"),
        if n == 1 { "service" } else { "services" },
        state_dir.display()
    );
    let result = runtime::run(Setup {
        config_path,
        config_text,
        config,
        state_dir: state_dir.clone(),
        handover,
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Another daemon has the state dir: bad usage, like a bad config (2).
            let status = match &e {
                RuntimeError::Prepare(medic_io::statedir::StateDirError::Locked { .. }) => {
                    crate::cli::EXIT_USAGE
                }
                _ => crate::cli::EXIT_FAILED,
            };
            let message = match e {
                // These name the state dir already.
                RuntimeError::Prepare(e) => e.to_string(),
                e => format!("medic daemon (state dir {}): {e}", state_dir.display()),
            };
            logsink::line(&format!("medic: {message}"));
            ExitCode::from(status)
        }
    }
}

/// Logs to stderr; `MEDIC_LOG=debug|info|warn|error` sets the level (default info).
fn init_logging() {
    let level = std::env::var("MEDIC_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    crate::log::init(level, std::io::IsTerminal::is_terminal(&std::io::stderr()));
}
