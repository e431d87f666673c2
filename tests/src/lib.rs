//! End-to-end test helpers: start the real `medic` binary on a config in a temporary directory,
//! talk to it with the real command line, and wait for conditions by polling with generous
//! timeouts (these tests assert what happens, never how fast).
//!
//! The binary under test is `medic-e2e`, built by this package from the daemon's library
//! (see `tests/Cargo.toml`), so `cargo test` always tests the current code.

pub mod fuzz;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any awaited condition may take before the test fails. Generous: CI machines are
/// slow and busy; nothing here measures speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The `medic` binary under test: `target/<profile>/medic-e2e`, beside the directory of the
/// running test executable (`target/<profile>/deps/`).
pub fn medic_bin() -> PathBuf {
    sibling_bin("medic-e2e")
}

/// The `medic-test-notify` helper (sends `READY=1` to `$NOTIFY_SOCKET`).
pub fn notify_bin() -> PathBuf {
    sibling_bin("medic-test-notify")
}

/// The `medic-test-upgrade` helper (an upgraded medic whose first act is to make a service
/// end during the reexec).
pub fn upgrade_bin() -> PathBuf {
    sibling_bin("medic-test-upgrade")
}

/// The `medic-test-hold` helper (holds connections that send nothing).
pub fn hold_bin() -> PathBuf {
    sibling_bin("medic-test-hold")
}

fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test -p medic-tests`, which builds it",
        bin.display()
    );
    bin
}

/// Whether the tests run in CI (the `CI` environment variable is set): there nothing may skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// A test that cannot run on this machine (`why`: no root, no `ip`): prints `SKIP: …` and
/// returns, so the caller returns too; under `CI` it fails the test instead, with `why`.
pub fn skip(test: &str, why: &str) {
    if in_ci() {
        panic!("{test} must run in CI (the CI environment variable is set), but it cannot: {why}");
    }
    eprintln!("SKIP: {test}: {why} (under CI this fails)");
}

/// Whether the test runs as root; if not, [`skip`]s it (a failure under `CI`) saying what
/// root is needed for.
pub fn root_or_skip(test: &str, needed_for: &str) -> bool {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        return true;
    }
    skip(
        test,
        &format!("needs root {needed_for}, but runs as uid {euid}"),
    );
    false
}

/// Polls `check` every 50 ms until it returns `Some`, or fails the test after [`PATIENCE`]
/// saying what was awaited and `describe()` of the last state.
pub fn wait_for<T>(
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > PATIENCE {
            panic!(
                "timed out after {PATIENCE:?} waiting for {what}\n{}",
                describe()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running daemon with its own temporary directory (config, state dir, scratch files).
pub struct Daemon {
    child: Option<Child>,
    /// The temporary directory; removed when the daemon is dropped.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The state directory.
    pub state: PathBuf,
    log: PathBuf,
    /// More environment for the daemon.
    env: Vec<(String, String)>,
    /// A command the daemon runs under (`unshare --pid --fork …`), or none.
    wrap: Vec<String>,
}

impl Daemon {
    /// Writes `config` (where `@DIR@` stands for the scratch directory and `@NOTIFY@` for the
    /// notify helper) and starts `medic daemon` on it; returns once it answers `status`.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_full(config, &[], &[])
    }

    /// As [`Daemon::start`], with more environment for the daemon (`@DIR@` in a value stands
    /// for the scratch directory).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_full(config, env, &[])
    }

    /// [`Daemon::start`] under `wrap` (a command that runs the rest of its arguments in a
    /// child, `unshare --pid --fork --kill-child=SIGTERM`): [`Daemon::daemon_pid`] is then
    /// the wrapper's child, which signals go to.
    pub fn start_wrapped(config: &str, wrap: &[&str]) -> Daemon {
        Daemon::start_full(config, &[], wrap)
    }

    /// A daemon for `config`, its scratch and state directories known, not started yet: the
    /// test writes files that name them (a DHCP client's script that finds the daemon through
    /// [`Daemon::state`]), then calls [`Daemon::launch`].
    pub fn prepare(config: &str) -> Daemon {
        Daemon::prepare_full(config, &[], &[])
    }

    /// Starts a [`Daemon::prepare`]d daemon (or one [`Daemon::crash`]ed or [`Daemon::stop`]ped);
    /// returns once it answers `status`.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "the daemon still runs");
        self.spawn();
    }

    fn start_full(config: &str, env: &[(&str, &str)], wrap: &[&str]) -> Daemon {
        let mut d = Daemon::prepare_full(config, env, wrap);
        d.spawn();
        d
    }

    fn prepare_full(config: &str, env: &[(&str, &str)], wrap: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("medic-e2e")
            .tempdir()
            .expect("a temp dir");
        let d = Daemon {
            config: dir.path().join("medic.toml"),
            state: dir.path().join("state"),
            log: dir.path().join("daemon.log"),
            child: None,
            env: env
                .iter()
                .map(|(k, v)| {
                    let v = v.replace("@DIR@", &dir.path().display().to_string());
                    (k.to_string(), v)
                })
                .collect(),
            dir,
            wrap: wrap.iter().map(|s| s.to_string()).collect(),
        };
        d.write_config(config);
        std::fs::File::create(&d.log).expect("the daemon's log file");
        d
    }

    /// Starts `medic daemon` on this config and state dir, its output appended to the log;
    /// returns once it answers `status`.
    fn spawn(&mut self) {
        let d = self;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&d.log)
            .expect("the daemon's log file");
        let mut cmd = match d.wrap.split_first() {
            Some((wrapper, args)) => {
                let mut cmd = Command::new(wrapper);
                cmd.args(args).arg(medic_bin());
                cmd
            }
            None => Command::new(medic_bin()),
        };
        let child = cmd
            .arg("daemon")
            .arg("-c")
            .arg(&d.config)
            .arg("--state-dir")
            .arg(&d.state)
            .env("MEDIC_LOG", "debug")
            .envs(d.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawning medic daemon");
        d.child = Some(child);
        let log = d.log.clone();
        wait_for(
            "the daemon to answer `status`",
            || {
                if let Some(status) = d.try_exited() {
                    panic!(
                        "the daemon exited early with {status}\n{}",
                        read_log(&d.log)
                    );
                }
                d.try_status()
            },
            || read_log(&log),
        );
    }

    /// SIGKILL to the daemon (a crash: nothing of it runs its exit path); waits until it is
    /// gone. Its services go on running.
    pub fn crash(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let log = self.log.clone();
        wait_for(
            "the daemon to die of SIGKILL",
            || self.try_exited(),
            || read_log(&log),
        );
        self.child = None;
    }

    /// Starts the daemon again after [`Daemon::crash`] or [`Daemon::stop`], on the same
    /// config and state dir; returns once it answers `status`.
    pub fn restart(&mut self) {
        self.launch();
    }

    /// Replaces `@DIR@` and `@NOTIFY@` in `text` and writes it as the config file.
    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, self.expand(text)).expect("writing the config");
    }

    /// `text` with `@DIR@` replaced by the scratch directory and `@NOTIFY@` by the notify helper.
    pub fn expand(&self, text: &str) -> String {
        text.replace("@DIR@", &self.dir.path().display().to_string())
            .replace("@NOTIFY@", &notify_bin().display().to_string())
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The scratch file `name`, or an empty string.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Runs `medic ARGS…` against this daemon.
    pub fn medic(&self, args: &[&str]) -> Output {
        Command::new(medic_bin())
            .args(args)
            .env("MEDIC_STATE_DIR", &self.state)
            .stdin(Stdio::null())
            .output()
            .expect("running medic")
    }

    /// Runs `medic ARGS…` and fails the test unless it succeeds; returns its stdout.
    pub fn medic_ok(&self, args: &[&str]) -> String {
        let out = self.medic(args);
        assert!(
            out.status.success(),
            "medic {args:?} failed with {}:\n{}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn try_status(&self) -> Option<Vec<Value>> {
        let out = self.medic(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()?
            .as_array()
            .cloned()
    }

    /// `medic status --json`.
    pub fn status(&self) -> Vec<Value> {
        self.try_status()
            .unwrap_or_else(|| panic!("medic status --json failed\n{}", self.log()))
    }

    /// The status object of one service.
    pub fn service(&self, name: &str) -> Value {
        self.status()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name} in status\n{}", self.log()))
    }

    /// The condition of one service.
    pub fn condition(&self, name: &str) -> String {
        self.service(name)["condition"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The pid of one service's process, if it runs.
    pub fn service_pid(&self, name: &str) -> Option<u32> {
        self.service(name)["pid"].as_u64().map(|p| p as u32)
    }

    /// `medic history NAME --json`.
    pub fn history(&self, name: &str) -> Vec<Value> {
        let out = self.medic_ok(&["history", name, "--json"]);
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_else(|| panic!("bad history json: {out}"))
    }

    /// Waits until service `name` is in `condition`.
    pub fn wait_condition(&self, name: &str, condition: &str) -> Value {
        wait_for(
            &format!("{name} to be {condition}"),
            || {
                // Absent is "not yet": a SIGHUP's new services appear once the
                // config, read off the loop, is applied.
                let s = self.try_status()?.into_iter().find(|s| s["name"] == name)?;
                (s["condition"] == condition).then_some(s)
            },
            || self.describe(name),
        )
    }

    /// Waits until service `name` runs a process other than `old`; returns the new pid.
    pub fn wait_new_pid(&self, name: &str, old: Option<u32>) -> u32 {
        wait_for(
            &format!("{name} to run a new process (old pid {old:?})"),
            || self.service_pid(name).filter(|&p| Some(p) != old),
            || self.describe(name),
        )
    }

    /// The status, history and log of a service, for failure messages.
    pub fn describe(&self, name: &str) -> String {
        let status = self
            .try_status()
            .map(|s| format!("{s:#?}"))
            .unwrap_or_default();
        let history = self.medic(&["history", name]);
        format!(
            "--- status ---\n{status}\n--- history {name} ---\n{}\n{}",
            String::from_utf8_lossy(&history.stdout),
            self.log()
        )
    }

    /// The daemon's pid as this test sees it: [`Daemon::pid`], or the wrapper's child.
    pub fn daemon_pid(&self) -> u32 {
        if self.wrap.is_empty() {
            return self.pid();
        }
        wait_for(
            "the wrapper to start the daemon",
            || self.wrapped_child(),
            || self.log(),
        )
    }

    fn wrapped_child(&self) -> Option<u32> {
        let pid = self.child.as_ref()?.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
        children.ok()?.split_whitespace().next()?.parse().ok()
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.daemon_pid() as i32), signal)
            .expect("signalling the daemon");
    }

    fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGTERM, then waits for the daemon to exit; returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let log = self.log.clone();
        let status = wait_for(
            "the daemon to exit after SIGTERM",
            || self.try_exited(),
            || read_log(&log),
        );
        self.child = None;
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The wrapper does not pass SIGTERM on.
        if let Some(pid) = self.wrapped_child().filter(|_| !self.wrap.is_empty()) {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        if let Some(child) = self.child.as_mut() {
            end(child);
        }
    }
}

/// SIGTERM to a daemon that still runs (its pipes still open, so it can stop its services),
/// then SIGKILL if it takes more than 15 s: no test leaves a daemon behind, even one that fails.
pub fn end(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_log(path: &Path) -> String {
    format!(
        "--- daemon log ---\n{}",
        std::fs::read_to_string(path).unwrap_or_default()
    )
}

/// Whether process `pid` is gone (no such process, or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The pids written one per line in a file.
pub fn pids_in(path: &Path) -> Vec<u32> {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Runs `medic ARGS…` without a daemon (e.g. `check`, `daemon` on a bad config).
pub fn medic(args: &[&str]) -> Output {
    Command::new(medic_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running medic")
}
