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

use anyhow::Context;
use medic_io::runtime::{self, Setup};

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

/// Runs `medic daemon`. Returns exit status 2 after printing every problem when the config does
/// not validate; nothing is started then.
pub fn run(config: Option<PathBuf>, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    init_logging();
    let config_path = config_path(config);
    let name = config_path.display().to_string();
    let (config_text, config) = match crate::cli::check::load(&config_path) {
        Ok(loaded) => loaded,
        Err(failure) => {
            eprintln!("medic: {}; nothing was started", failure.message);
            return Ok(ExitCode::from(failure.status));
        }
    };
    let state_dir = self::state_dir(state_dir, || {
        config.daemon.state_dir.as_ref().map(PathBuf::from)
    });
    tracing::info!(
        "medic {} supervising {} services from {name}, state in {}",
        env!("CARGO_PKG_VERSION"),
        config.services.len(),
        state_dir.display()
    );
    runtime::run(Setup {
        config_path,
        config_text,
        config,
        state_dir: state_dir.clone(),
    })
    .with_context(|| format!("medic daemon (state dir {})", state_dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr; `MEDIC_LOG=debug|info|warn|error` sets the level (default info).
fn init_logging() {
    let level = std::env::var("MEDIC_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
