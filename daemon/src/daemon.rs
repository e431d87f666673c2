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

/// Runs `medic daemon` and returns its exit status: 2 after printing every problem when the
/// config does not validate (nothing is started then), 1 when it could not run (its message
/// is logged).
///
/// Everything the daemon writes to stderr goes through [`logsink`]: a log reader that stalls,
/// is slow or has gone can neither block nor kill it.
pub fn run(config: Option<PathBuf>, state_dir: Option<PathBuf>) -> ExitCode {
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
    let status = supervise(config, state_dir);
    logsink::flush(LOG_FLUSH);
    status
}

fn supervise(config: Option<PathBuf>, state_dir: Option<PathBuf>) -> ExitCode {
    let config_path = config_path(config);
    let name = config_path.display().to_string();
    let loaded = crate::cli::check::load_with(&config_path, |errors| {
        logsink::line(errors);
    });
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
    tracing::info!(
        "medic {} supervising {n} {} from {name}, state in {}",
        env!("CARGO_PKG_VERSION"),
        if n == 1 { "service" } else { "services" },
        state_dir.display()
    );
    let result = runtime::run(Setup {
        config_path,
        config_text,
        config,
        state_dir: state_dir.clone(),
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
