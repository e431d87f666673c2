//! The daemon's event loop: one tokio current-thread runtime around one [`Kernel`].
//!
//! ```text
//! loop {
//!     feed every queued input (Spawned, MemorySampled… produced while carrying out effects);
//!     wait for ONE of: an event from a task (exit, readiness, check, output line, signal),
//!                      a link change, a watched file, a control request,
//!                      the kernel's next deadline (one sleep; none when nothing is due);
//!     turn it into an Input and feed it: snapshot/record in the trace ring, kernel.step,
//!     carry out every Effect in order.
//! }
//! ```
//!
//! * **Time**: `now` is nanoseconds of a monotonic clock since the daemon started.
//! * **One reaper**: every child, managed or orphan, is collected by [`Children::reap`] in
//!   this loop, woken by SIGCHLD or a pidfd, and dispatched by pid; so the orphan reaper can
//!   never steal a managed child's status.
//! * **Processes** run in their own session and process group; signals go to the group; when
//!   the kernel says a process has ended for good ([`Effect::Sweep`]), whatever is left of its
//!   group, and whatever it forked that left the group, is killed.
//! * **Policy is the kernel's**: timeouts of commands and checks come in the effects; the
//!   kernel bounds shutdown (stop timeouts, then SIGKILL, then abandonment).
//! * Nothing here wakes up periodically: no tick, no poll. Timers exist only while the kernel
//!   has a deadline, a command or a check is running.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use medic_kernel::config::{Check, DaemonConfig, Kind, Readiness, Reports, ServiceConfig};
use medic_kernel::trace::TraceRing;
use medic_kernel::{
    CheckResult, CommandPurpose, Config, Effect, Exec, ExitStatus, Input, JobId, Kernel, Operator,
    RenderResult, ServiceId, SignalTarget,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::adopt;
use crate::checks;
use crate::children::{self, Alive, Children, ProcEntry, Reaped};
use crate::clock;
use crate::control::{self, Call, EventRow, ImageInfo, LinkInfo, Request, Response};
use crate::devices;
use crate::files::Watcher;
use crate::logs::{LineSplitter, LogLine, LogRing, Stream};
use crate::logsink::LineLimiter;
use crate::netlink;
use crate::notify::NotifySocket;
use crate::offloop;
use crate::process::{self, SpawnSpec};
use crate::reexec;
use crate::statedir::{self, FileId, StateDir, StateDirError};
use crate::statefile::{self, ProcRecord, StateFile};

thread_local! {
    /// The read buffer of every output reader.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 4096]);
}

/// Bound of the queue of events from tasks to the loop; a task waits when it is full.
const EVENT_QUEUE: usize = 4096;
/// The stack of a render thread: MiniJinja recurses over the template's nesting.
const RENDER_STACK: usize = 512 * 1024;
/// Bound of the queue of link changes from the netlink watcher to the loop; what does not fit
/// is sent later, in its latest state.
const LINK_QUEUE: usize = 1024;
/// Bound of the queue of control calls waiting for the loop.
const CALL_QUEUE: usize = 64;
/// Events sent before following with `medic events --follow` (and all `medic events` shows).
const RECENT_EVENTS: usize = 200;
/// Followers (`events --follow`, `logs --follow`) at most, each bounded by the reply queue of
/// the control socket; a follower that does not keep up is dropped.
const MAX_FOLLOWERS: usize = 32;
/// At exit, how long the connections get to write what is queued for them (the shutdown's
/// events, the followers' last word) before the daemon exits anyway.
const FLUSH_AT_EXIT: Duration = Duration::from_millis(500);
/// The last word to followers when the daemon exits.
const SHUT_DOWN: &str = "the medic daemon shut down";
/// The last word to followers when the daemon re-executes itself.
const REEXECUTES: &str = "the medic daemon re-executes itself (medic reexec); follow again";
/// At most this much of what `BINARY daemon --check-state` prints is kept for the client.
const CHECK_OUTPUT_BYTES: usize = 4096;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The tokio runtime could not be built.
    #[error("starting the event loop: {0}")]
    Tokio(io::Error),
    /// The state directory is refused, or another daemon has it.
    #[error(transparent)]
    Prepare(#[from] StateDirError),
    /// A directory in the state directory could not be made.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(io::Error),
    /// The control socket could not be bound.
    #[error("control socket: {0}")]
    Control(io::Error),
}

/// What the daemon was started with.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The config file (re-read on SIGHUP).
    pub config_path: PathBuf,
    /// Its text as validated at startup.
    pub config_text: String,
    /// The validated config.
    pub config: Config,
    /// The state directory (created 0700 if missing, else checked and never chmod-ed; locked
    /// while the daemon runs): sd_notify sockets, control socket.
    pub state_dir: PathBuf,
    /// What the daemon this one re-executed over handed to it (`medic daemon --take-over`):
    /// taken back instead of the state file.
    pub handover: Option<reexec::Accepted>,
}

/// What tasks tell the loop.
#[derive(Debug)]
enum Event {
    /// An input ready to feed (readiness, check results).
    Input(Input),
    /// SIGCHLD or a pidfd became readable: run the reaper.
    Children,
    /// A line of a service's (or its command's) output.
    Line {
        service: String,
        stream: Stream,
        text: String,
    },
    /// Kill the group of `pid` if it is still the child `token` names (a timeout expired).
    Expire { pid: u32, token: u64 },
    /// SIGTERM or SIGINT.
    Terminate(&'static str),
    /// SIGHUP.
    Reload,
    /// The config file's text, read off the loop after a SIGHUP.
    ConfigRead(io::Result<String>),
    /// The pidfd of an adopted process (not a child: never reaped here) became readable.
    AdoptedEnded(JobId),
    /// `PATH daemon --check-state` has answered: whether it accepts the state, else why not.
    ReexecChecked(Result<(), String>),
    /// A render's templates were rendered off the loop: the candidates to check and commit,
    /// or why it failed.
    RenderStaged {
        service: ServiceId,
        job: JobId,
        staged: Result<Vec<crate::render::Candidate>, String>,
    },
    /// A secret was written into the store off the loop (`medic secret set`).
    SecretStored {
        name: String,
        generation: u64,
        confirm_within: Option<Duration>,
        written: io::Result<crate::secrets::Version>,
        reply: mpsc::Sender<Response>,
    },
    /// The config file of a `medic apply`, read off the loop.
    ApplyRead {
        path: PathBuf,
        confirm_within: Option<Duration>,
        text: io::Result<String>,
        reply: mpsc::Sender<Response>,
    },
}

/// The secret store and the pushes under way (DESIGN §10).
struct Secrets {
    store: crate::secrets::Store,
    /// A `medic secret set`, `secret rm` or `apply` is being written or read off the loop:
    /// one at a time, so that what the kernel is told is what the store holds.
    busy: bool,
    /// While a `medic apply --confirm-within` waits: the config file and text before it,
    /// which a roll-back puts back.
    applied_over: Option<(PathBuf, String)>,
}

/// A read of the config file under way, off the loop.
#[derive(Debug, Default)]
struct ConfigRead {
    /// Another reload was asked for meanwhile: read again once this one is done.
    again: bool,
    /// `medic reload-config` clients this read answers.
    clients: Vec<mpsc::Sender<Response>>,
    /// Those the read after it answers (they asked while this one was under way).
    next_clients: Vec<mpsc::Sender<Response>>,
}

/// The loop's state.
pub struct Runtime {
    kernel: Kernel,
    trace: TraceRing,
    origin: std::time::Instant,
    effects: Vec<Effect>,
    queue: VecDeque<Input>,
    tx: mpsc::Sender<Event>,
    children: Children,
    logs: BTreeMap<String, LogRing>,
    /// Services' lines into the daemon log, rate-limited per service.
    log_limit: LineLimiter,
    event_followers: Vec<mpsc::Sender<Response>>,
    /// `medic logs --follow`: the service, whether it asked for [`Request::LogRecords`], where.
    log_followers: Vec<(String, bool, mpsc::Sender<Response>)>,
    /// The last memory sample of each service's process group (for `status`), by job.
    memory: BTreeMap<ServiceId, (JobId, u64)>,
    /// Services whose process has run under this daemon. Short of descriptors, a restart of
    /// one comes before a first start: its last process freed what it needs (crate::fds).
    ran: BTreeSet<ServiceId>,
    watcher: Option<Watcher>,
    links: Option<netlink::LinkWatcher>,
    /// The uevent socket and its task, while the config has a device service.
    devices: Option<devices::DeviceWatcher>,
    /// Where the link and device watchers send their inputs.
    hardware_tx: Option<mpsc::Sender<Input>>,
    config_path: PathBuf,
    base_dir: PathBuf,
    state_dir: PathBuf,
    /// Holds the state dir's lock while the daemon runs.
    _state: StateDir,
    /// The control socket this daemon bound, removed at exit only if still the same file.
    socket_id: Option<FileId>,
    /// The `[daemon]` settings the daemon runs with: read at startup only.
    daemon: DaemonConfig,
    shutting_down: bool,
    done: bool,
    /// Trace saves writing on threads of their own.
    trace_writers: offloop::TraceWriters,
    /// A config read under way (off the loop), if any.
    config_read: Option<ConfigRead>,
    /// The state file and adoption (DESIGN §13).
    survival: Survival,
    /// The config text the kernel holds: handed over at a reexec.
    config_text: String,
    /// A `medic reexec` whose check is under way.
    reexec: Option<Reexec>,
    /// A `medic reexec` checked and answered: the binary to `execve` once this round is done.
    reexec_go: Option<PathBuf>,
    /// This program image: when it began, and the `execve`s it survived ([`Request::Image`]).
    image: ImageInfo,
    /// Secrets and confirm-or-roll-back.
    secrets: Secrets,
    /// The kernel went back to an earlier config while carrying out effects: follow it once
    /// the round is done ([`Runtime::config_changed`]).
    config_changed_pending: bool,
}

/// A `medic reexec` waiting for `BINARY daemon --check-state` to answer.
struct Reexec {
    binary: PathBuf,
    reply: mpsc::Sender<Response>,
}

/// What the daemon keeps for its successor, and what it took over from its predecessor
/// (crate::statefile, crate::adopt).
struct Survival {
    /// `MEDIC_INSTANCE` of every process is this, then its job.
    tag_prefix: String,
    boot_id: String,
    /// `CLOCK_MONOTONIC` at the kernel's origin, kept across daemons.
    origin_ns: u64,
    /// What the adapter knows of each live service process.
    records: BTreeMap<JobId, ProcRecord>,
    /// Something the state file keeps changed since it was last written.
    dirty: bool,
    /// The state was over its bound and written without histories; said once.
    trimmed_noted: bool,
    /// A write failed; said once until one succeeds.
    failed_noted: bool,
    /// Which services were wanted when shutdown began: shutdown makes every service unwanted,
    /// which the next daemon must not take for the operator's word.
    wanted_at_shutdown: Option<BTreeMap<String, bool>>,
    /// The state file the daemon started beside, until it has been taken back.
    resume: Option<StateFile>,
    /// Processes of the previous daemon found alive and the same, by the job they ran as,
    /// until the kernel adopts them.
    survivors: BTreeMap<JobId, (ProcRecord, OwnedFd)>,
    /// The read ends of their stdout and stderr, by the job they ran as, when the previous
    /// daemon handed them over (a reexec); closed after the takeover if not adopted.
    outputs: BTreeMap<JobId, [Option<OwnedFd>; 2]>,
    /// The state was handed over by a reexec (this process started the recorded ones).
    handed_over: bool,
}

/// Runs the daemon until shutdown completes: builds a current-thread runtime and drives
/// [`Runtime`] on it.
pub fn run(setup: Setup) -> Result<(), RuntimeError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(RuntimeError::Tokio)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let (runtime, rx) = Runtime::new(setup)?;
        runtime.serve(rx).await
    })
}

impl Runtime {
    fn new(setup: Setup) -> Result<(Runtime, mpsc::Receiver<Event>), RuntimeError> {
        let state = statedir::prepare(&setup.state_dir)?;
        let absolute = std::path::absolute(&setup.state_dir);
        process::export_state_dir(absolute.as_deref().unwrap_or(&setup.state_dir));
        if let Err(e) = process::become_subreaper() {
            tracing::warn!(
                "cannot become a child subreaper ({e}); orphans of services go to PID 1"
            );
        }
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let base_dir = setup
            .config_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let watcher = match Watcher::new(&base_dir) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("inotify unavailable ({e}): reload-on and restart-on will not work");
                None
            }
        };
        let trace = TraceRing::new(&setup.config_text, setup.config.daemon.trace_size_bytes);
        let daemon = setup.config.daemon.clone();
        let (survival, origin) = Survival::read(&setup.state_dir, setup.handover);
        let secrets_dir = match &setup.config.daemon.secrets_dir {
            Some(dir) => PathBuf::from(dir),
            None => setup.state_dir.join("secrets"),
        };
        let (store, said) = crate::secrets::Store::open(&secrets_dir);
        for line in said {
            tracing::warn!("{line}");
        }
        if let Some(why) = store.refused() {
            tracing::error!(
                "secrets-dir refused: {why}; `medic secret` commands fail and services that \
                 copy a secret wait"
            );
        }
        let runtime = Runtime {
            kernel: Kernel::new(setup.config),
            trace,
            origin,
            effects: Vec::new(),
            queue: VecDeque::new(),
            tx,
            children: Children::default(),
            logs: BTreeMap::new(),
            log_limit: LineLimiter::default(),
            event_followers: Vec::new(),
            log_followers: Vec::new(),
            memory: BTreeMap::new(),
            ran: BTreeSet::new(),
            watcher,
            links: None,
            devices: None,
            hardware_tx: None,
            config_path: setup.config_path,
            base_dir,
            state_dir: setup.state_dir,
            _state: state,
            socket_id: None,
            daemon,
            shutting_down: false,
            done: false,
            trace_writers: offloop::TraceWriters::default(),
            config_read: None,
            survival,
            config_text: setup.config_text,
            reexec: None,
            reexec_go: None,
            image: ImageInfo {
                pid: std::process::id(),
                started_ns: adopt::monotonic_ns(),
                failed_execs: 0,
                last_failure: None,
            },
            secrets: Secrets {
                store,
                busy: false,
                applied_over: None,
            },
            config_changed_pending: false,
        };
        Ok((runtime, rx))
    }

    /// The kernel's `now`: nanoseconds since the daemon started.
    fn now(&self) -> medic_kernel::Instant {
        medic_kernel::Instant(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn tokio_instant(&self, at: medic_kernel::Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.origin + Duration::from_nanos(at.0))
    }

    async fn serve(mut self, mut rx: mpsc::Receiver<Event>) -> Result<(), RuntimeError> {
        // The control socket first (the state dir's lock keeps any other daemon away from it).
        let (mut calls, mut connections, mut server_task) =
            self.bind_control().map_err(RuntimeError::Control)?;
        let notify_dir = self.state_dir.join("notify");
        let _ = std::fs::remove_dir_all(&notify_dir);
        std::fs::create_dir_all(&notify_dir).map_err(|source| RuntimeError::StateDir {
            path: notify_dir.clone(),
            source,
        })?;
        self.install_signals().map_err(RuntimeError::Signals)?;
        // Links first, so the boot (the first Tick) already sees them.
        let (link_tx, mut link_rx) = mpsc::channel(LINK_QUEUE);
        self.hardware_tx = Some(link_tx.clone());
        // Devices too (coldplug), when a service asks for one.
        self.follow_devices();
        match netlink::watch(link_tx).await {
            Ok(w) => self.links = Some(w),
            Err(e) => tracing::warn!("netlink unavailable ({e}): interface services stay absent"),
        }
        let mut link_facts = self.links.as_ref().map(|w| w.table().facts());
        while let Ok(input) = link_rx.try_recv() {
            self.feed(input);
        }
        self.publish_interfaces();
        // Before the first tick boots anything: what a crashed predecessor left running is
        // adopted or stopped.
        self.take_over();
        // The secrets in the store, before the first tick (so services that copy one start).
        let stored: Vec<(String, u64)> = (self.secrets.store.entries().iter())
            .map(|(name, e)| (name.clone(), e.current.generation))
            .collect();
        for (name, generation) in stored {
            self.feed(Input::SecretSet {
                name,
                generation,
                confirm_within: None,
            });
        }
        // The wall clock too, for `at` times; then every step of it.
        let host = clock::host_number();
        self.feed(Input::WallClock(clock::read(host)));
        let mut steps = match clock::Steps::new() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("clock steps cannot be followed ({e}): `at` times follow the clock as read at start");
                None
            }
        };
        let pending = std::future::pending::<()>;
        loop {
            while let Some(input) = self.queue.pop_front() {
                self.feed(input);
            }
            if self.config_changed_pending {
                self.config_changed();
            }
            self.children.run_sweeps();
            if self.survival.dirty {
                self.save_state();
            }
            if let Some(binary) = self.reexec_go.take().filter(|_| !self.done) {
                // No answer comes from this process any more: the server stops accepting (and
                // removes the socket), followers hear why, and what is queued for the
                // connections (the client's "re-executing") is written.
                drop(std::mem::replace(&mut calls, mpsc::channel(1).1));
                self.end_followers(REEXECUTES);
                let _ = tokio::time::timeout(FLUSH_AT_EXIT, async {
                    connections.finished().await;
                    if let Some(task) = server_task.take() {
                        let _ = task.await;
                    }
                })
                .await;
                self.exec(&binary);
                // Only when the execve failed: the daemon goes on, and answers again.
                match self.bind_control() {
                    Ok((c, n, t)) => (calls, connections, server_task) = (c, n, t),
                    Err(e) => tracing::error!(
                        "cannot bind the control socket again after the failed reexec ({e}): \
                         medic commands cannot reach this daemon; it goes on supervising"
                    ),
                }
            }
            if self.done {
                break;
            }
            let deadline = self.kernel.next_deadline().map(|d| self.tokio_instant(d));
            let woke = tokio::select! {
                ev = rx.recv() => Woke::Event(ev.expect("the loop holds a sender")),
                Some(input) = link_rx.recv() => Woke::Input(input),
                Some(call) = calls.recv() => Woke::Call(call),
                stepped = async {
                    match steps.as_mut() {
                        Some(s) => s.stepped().await,
                        None => { pending().await; unreachable!() }
                    }
                } => Woke::ClockStepped(stepped),
                Ok(()) = async {
                    match link_facts.as_mut() {
                        Some(f) => f.changed().await,
                        None => { pending().await; unreachable!() }
                    }
                } => Woke::LinkFacts,
                paths = async {
                    match self.watcher.as_mut() {
                        Some(w) => w.changed().await,
                        None => { pending().await; unreachable!() }
                    }
                } => Woke::Files(paths),
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => pending().await,
                    }
                } => Woke::Deadline,
            };
            match woke {
                Woke::Event(ev) => self.on_event(ev),
                Woke::Input(input) => self.feed(input),
                Woke::Call(call) => self.answer(call),
                Woke::Files(Ok(paths)) => {
                    for path in paths {
                        self.feed(Input::FileChanged { path });
                    }
                }
                Woke::Files(Err(e)) => {
                    tracing::error!("inotify failed ({e}); file watches stop");
                    self.watcher = None;
                }
                Woke::Deadline => self.feed(Input::Tick),
                Woke::ClockStepped(Ok(())) => self.feed(Input::WallClock(clock::read(host))),
                Woke::ClockStepped(Err(e)) => {
                    tracing::warn!("clock steps cannot be followed any more ({e})");
                    steps = None;
                }
                Woke::LinkFacts => {}
            }
            // After any wake: a link's facts, an operator's start, a new config.
            self.publish_interfaces();
        }
        self.cleanup();
        self.save_state();
        // Followers hear the last word after the shutdown's events; the connections then get a
        // moment to write what is queued (a pending request is answered that the daemon is
        // gone), and the daemon exits whether or not they are done.
        self.end_followers(SHUT_DOWN);
        drop(calls);
        let _ = tokio::time::timeout(FLUSH_AT_EXIT, connections.finished()).await;
        tracing::info!("shutdown complete");
        Ok(())
    }

    /// Interface services publish their link's facts as outputs (DESIGN §9: `ifname`,
    /// `ifindex`, `mtu`, `mac`, `ipv4`, `ipv6`; netlink::LinkTable::outputs), fed to the
    /// kernel as [`Input::SetOutputs`] — traced like any input, so a replay renders the same —
    /// whenever they differ from what the kernel holds. A service the operator stopped is left
    /// without (stopping clears a service's outputs) until it is started again; nothing is
    /// published once the daemon shuts down.
    fn publish_interfaces(&mut self) {
        let Some(links) = self.links.as_ref().map(|w| w.table()) else {
            return;
        };
        if self.shutting_down || self.done {
            return;
        }
        let mut changed = Vec::new();
        for view in self.kernel.views() {
            let medic_kernel::config::Kind::Interface { ifname, .. } = &view.config().kind else {
                continue;
            };
            if !view.wanted() {
                continue;
            }
            let outputs = links.outputs(ifname);
            let held = self.kernel.outputs(view.name());
            if held.map_or(outputs.is_empty(), |h| *h == outputs) {
                continue;
            }
            changed.push((view.name().to_string(), outputs));
        }
        for (service, outputs) in changed {
            self.feed(Input::SetOutputs { service, outputs });
        }
    }

    /// Binds the control socket and serves it on a task of its own: the calls it hands over,
    /// its connections (to wait for at exit) and the task.
    #[allow(clippy::type_complexity)]
    fn bind_control(
        &mut self,
    ) -> io::Result<(
        mpsc::Receiver<Call>,
        control::Connections,
        Option<tokio::task::JoinHandle<()>>,
    )> {
        let (call_tx, calls) = mpsc::channel(CALL_QUEUE);
        let socket = self.state_dir.join(control::SOCKET_NAME);
        let server = control::bind(&socket)?;
        self.socket_id = Some(server.id());
        let connections = server.connections();
        let task = tokio::spawn(server.run(call_tx));
        tracing::info!("control socket {}", socket.display());
        Ok((calls, connections, Some(task)))
    }

    /// Opens the uevent socket when the config has its first device service, gives the watcher
    /// the new matchers when it changed, closes it when no device service is left.
    fn follow_devices(&mut self) {
        let matchers = devices::matchers(self.kernel.config());
        if matchers.is_empty() {
            self.devices = None;
            return;
        }
        if let Some(w) = &self.devices {
            w.set_matchers(matchers);
            return;
        }
        let Some(tx) = self.hardware_tx.clone() else {
            return;
        };
        // Coldplug reads sysfs on the loop: a few hundred small in-memory files, once.
        match devices::watch(PathBuf::from("/sys"), matchers, tx) {
            Ok((w, first)) => {
                self.devices = Some(w);
                self.feed(first);
            }
            Err(e) => tracing::warn!("uevents unavailable ({e}): device services stay absent"),
        }
    }

    /// Ends every followed stream with `why` as its last answer.
    fn end_followers(&mut self, why: &str) {
        let followers = std::mem::take(&mut self.event_followers).into_iter().chain(
            std::mem::take(&mut self.log_followers)
                .into_iter()
                .map(|(_, _, f)| f),
        );
        for reply in followers {
            let _ = reply.try_send(Response::Ended(why.to_string()));
        }
    }

    fn cleanup(&mut self) {
        self.children.clear();
        let _ = std::fs::remove_dir_all(self.state_dir.join("notify"));
        if let Some(id) = self.socket_id {
            statedir::remove_if_same(&self.state_dir.join(control::SOCKET_NAME), id);
        }
    }

    fn install_signals(&mut self) -> io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds: [(SignalKind, fn() -> Event); 4] = [
            (SignalKind::child(), || Event::Children),
            (SignalKind::terminate(), || Event::Terminate("SIGTERM")),
            (SignalKind::interrupt(), || Event::Terminate("SIGINT")),
            (SignalKind::hangup(), || Event::Reload),
        ];
        for (kind, make) in kinds {
            let mut stream = signal(kind)?;
            let tx = self.tx.clone();
            tokio::task::spawn_local(async move {
                while stream.recv().await.is_some() {
                    if tx.send(make()).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(())
    }

    // ----- inputs ------------------------------------------------------------------------------

    /// One kernel step: trace it, step, carry out every effect in order.
    fn feed(&mut self, input: Input) {
        let now = self.now();
        if self.trace.wants_snapshot() {
            self.trace.snapshot(&self.kernel);
        }
        let mut effects = std::mem::take(&mut self.effects);
        effects.clear();
        self.kernel.step(now, input.clone(), &mut effects);
        self.trace.record(now, &input, &effects);
        // An intervention is a strike: written before it is carried out, so a crash in between
        // cannot make the next daemon forget it (bounded healing holds across crashes).
        if effects.iter().any(|e| {
            matches!(e, Effect::Event { record, .. }
                if record.heal.is_some() && record.outcome == Some(medic_kernel::Outcome::Pending))
        }) {
            self.save_state();
        }
        for effect in &effects {
            self.carry_out(effect);
        }
        // A clock read may start `catch-up`'s count of missed times (the last run it keeps).
        if matches!(
            input,
            Input::Spawned { .. } | Input::Exited { .. } | Input::WallClock(_)
        ) || effects
            .iter()
            .any(|e| matches!(e, Effect::Event { .. } | Effect::Adopt { .. }))
        {
            self.survival.dirty = true;
        }
        self.effects = effects;
        match input {
            Input::Exited { job, .. } => {
                self.children.forget_ended(job);
                self.survival.records.remove(&job);
            }
            Input::Spawned { service, pid, .. } => {
                let name = self.kernel.name(service).to_string();
                self.log_line(name, Stream::Start(pid), String::new());
            }
            Input::MemorySampled {
                service,
                job,
                rss_bytes: Some(rss),
                ..
            } => {
                self.memory.insert(service, (job, rss));
            }
            _ => {}
        }
    }

    /// Keeps one line of a service's output (or the mark of a new run) and sends it to whoever
    /// follows that service's log.
    fn log_line(&mut self, service: String, stream: Stream, text: String) {
        let line = LogLine {
            at: self.now(),
            stream,
            text,
        };
        self.log_followers.retain(|(name, records, reply)| {
            let answer = match records {
                true => Response::LogRecords(vec![control::LogRow::from_line(&line)]),
                false if matches!(stream, Stream::Start(_)) => return true,
                false => Response::LogLines(vec![line.text.clone()]),
            };
            *name != service || reply.try_send(answer).is_ok()
        });
        // A removed service's last lines are not kept (its log has been dropped).
        if self.logs.contains_key(&service) || self.kernel.lookup(&service).is_some() {
            self.logs.entry(service).or_default().push(line);
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Input(input) => self.feed(input),
            Event::Children => self.reap(),
            Event::Line {
                service,
                stream,
                text,
            } => {
                let suffix = if stream == Stream::Stderr {
                    " (stderr)"
                } else {
                    ""
                };
                let now = self.now().0;
                self.log_limit.log(&service, suffix, &text, now);
                self.log_line(service, stream, text);
            }
            Event::Expire { pid, token } => self.children.expire(pid, token),
            Event::Terminate(name) => {
                if !self.shutting_down {
                    tracing::info!("{name}: stopping every service, dependents first");
                    self.shutting_down = true;
                    let wanted = self.kernel.views().map(|v| (v.name().into(), v.wanted()));
                    self.survival.wanted_at_shutdown = Some(wanted.collect());
                    self.feed(Input::Operator(Operator::Shutdown));
                }
            }
            Event::Reload => self.reload_config(None),
            Event::ConfigRead(text) => self.config_read(text),
            Event::ReexecChecked(result) => self.reexec_checked(result),
            Event::RenderStaged {
                service,
                job,
                staged,
            } => self.render_staged(service, job, staged),
            Event::SecretStored {
                name,
                generation,
                confirm_within,
                written,
                reply,
            } => self.secret_stored(name, generation, confirm_within, written, reply),
            Event::ApplyRead {
                path,
                confirm_within,
                text,
                reply,
            } => self.apply_read(path, confirm_within, text, reply),
            Event::AdoptedEnded(job) => {
                if let Some(service) = self.children.adopted_ended(job) {
                    let status = ExitStatus::Unknown;
                    self.feed(Input::Exited {
                        service,
                        job,
                        status,
                    });
                }
            }
        }
    }

    /// SIGHUP or `medic reload-config` (whose `reply` hears whether the config was taken): the
    /// config file is read on a thread of its own (a FIFO or a hung mount must not stall the
    /// loop); its text is fed when it arrives ([`Runtime::config_read`]). One read at a time:
    /// reloads asked for during a read make one more read after it (and their clients are
    /// answered by that one).
    fn reload_config(&mut self, reply: Option<mpsc::Sender<Response>>) {
        let who = match reply {
            Some(_) => "medic reload-config",
            None => "SIGHUP",
        };
        if let Some(pending) = self.kernel.pending() {
            let why = format!(
                "{who} ignored: {} waits for `medic confirm`; confirm it or let it roll back first",
                pending.describe()
            );
            tracing::warn!("{why}");
            if let Some(reply) = reply {
                let _ = reply.try_send(Response::Error(why));
            }
            return;
        }
        if let Some(read) = self.config_read.as_mut() {
            if !read.again {
                tracing::warn!(
                    "{who}: still reading {} for the previous reload; will read it again after",
                    self.config_path.display()
                );
            }
            read.again = true;
            read.next_clients.extend(reply);
            return;
        }
        self.start_config_read(who, reply.into_iter().collect());
    }

    /// Starts reading the config file off the loop; `clients` are answered when it is done.
    fn start_config_read(&mut self, who: &str, clients: Vec<mpsc::Sender<Response>>) {
        let path = self.config_path.display().to_string();
        tracing::info!("{who}: re-reading {path}");
        match offloop::read_config(self.config_path.clone()) {
            Ok(rx) => {
                self.config_read = Some(ConfigRead {
                    clients,
                    ..ConfigRead::default()
                });
                let tx = self.tx.clone();
                tokio::task::spawn_local(async move {
                    let text = rx.await.unwrap_or_else(|_| {
                        Err(io::Error::other(
                            "the reading thread ended without a result",
                        ))
                    });
                    let _ = tx.send(Event::ConfigRead(text)).await;
                });
            }
            Err(e) => {
                tracing::error!(
                    "{who}: cannot start a thread to read {path}: {e}; keeping the running config"
                );
                let answer = Response::Error(format!(
                    "cannot start a thread to read {path}: {e}; nothing changed"
                ));
                for client in clients {
                    let _ = client.try_send(answer.clone());
                }
            }
        }
    }

    /// The text of the config file, read after a SIGHUP or `medic reload-config`. The kernel
    /// validates it: a config that does not validate is refused with a notice and changes
    /// nothing. (It is parsed once more here: a client may wait to hear why, and the text the
    /// kernel took is kept for a reexec.)
    fn config_read(&mut self, text: io::Result<String>) {
        let read = self.config_read.take().unwrap_or_default();
        let path = self.config_path.display().to_string();
        // Users and groups are looked up afresh after a reload.
        crate::users::forget();
        let answer = match text {
            Ok(text) => {
                let answer = match medic_kernel::config::parse(&text, &path) {
                    Ok(_) => {
                        // What the kernel takes, and a reexec hands over.
                        self.config_text.clone_from(&text);
                        Response::Done
                    }
                    Err(errors) => Response::Error(format!(
                        "{errors}\n{path} does not validate; nothing changed"
                    )),
                };
                self.feed(Input::ReplaceConfig { text });
                self.config_changed();
                answer
            }
            Err(e) => {
                tracing::error!("reload: cannot read {path}: {e}; keeping the running config");
                Response::Error(format!("cannot read {path}: {e}; nothing changed"))
            }
        };
        for client in read.clients {
            let _ = client.try_send(answer.clone());
        }
        if read.again {
            let who = match read.next_clients.is_empty() {
                true => "SIGHUP",
                false => "medic reload-config",
            };
            self.start_config_read(who, read.next_clients);
        }
    }

    /// After the kernel took a new config: devices are followed as it says, `[daemon]` keys
    /// it changes are named, the captured output of services no longer in it goes.
    fn config_changed(&mut self) {
        self.config_changed_pending = false;
        self.follow_devices();
        self.warn_daemon_keys();
        let kernel = &self.kernel;
        self.logs.retain(|name, _| kernel.lookup(name).is_some());
    }

    /// `[daemon]` keys take effect at startup only: after a reload, says which ones the
    /// config the kernel now holds sets otherwise than the daemon runs with.
    fn warn_daemon_keys(&self) {
        let (runs, config) = (&self.daemon, &self.kernel.config().daemon);
        // The state dir in use may come from --state-dir or MEDIC_STATE_DIR; it is the key
        // that is compared, the directory in use that is named.
        let state_dir = match (&config.state_dir, runs.state_dir == config.state_dir) {
            (_, true) => (String::new(), String::new()),
            (Some(dir), false) => (self.state_dir.display().to_string(), dir.clone()),
            (None, false) => (self.state_dir.display().to_string(), "unset".into()),
        };
        let keys = [
            ("state-dir", state_dir.0, state_dir.1),
            (
                "trace-size",
                format!("{} bytes", runs.trace_size_bytes),
                format!("{} bytes", config.trace_size_bytes),
            ),
            (
                "history-size",
                runs.history_len.to_string(),
                config.history_len.to_string(),
            ),
        ];
        for (key, runs, config) in keys {
            if runs != config {
                tracing::warn!(
                    "SIGHUP: [daemon] {key} is {config} in the config, but the daemon runs with \
                     {runs} and reads it only at startup: restart needed"
                );
            }
        }
    }

    /// Who this daemon is, and its clocks now.
    fn info(&self) -> control::DaemonInfo {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        control::DaemonInfo {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_path: self.config_path.display().to_string(),
            state_dir: self.state_dir.display().to_string(),
            now_ms: self.now().as_millis(),
            now_unix_ms: u64::try_from(unix.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn reap(&mut self) {
        for reaped in self.children.reap() {
            let input = match reaped {
                Reaped::Service {
                    service,
                    job,
                    status,
                } => Input::Exited {
                    service,
                    job,
                    status,
                },
                Reaped::Command {
                    service,
                    job,
                    status,
                } => Input::CommandDone {
                    service,
                    job,
                    status,
                },
            };
            self.queue.push_back(input);
        }
    }

    // ----- effects -----------------------------------------------------------------------------

    fn carry_out(&mut self, effect: &Effect) {
        match effect {
            Effect::Spawn {
                service,
                job,
                config,
            } => self.spawn_service(*service, *job, config),
            Effect::Signal {
                job, signal, to, ..
            } => {
                if let Some(entry) = self.children.service(*job) {
                    let sig = process::nix_signal(*signal);
                    let (sent, whom) = match to {
                        SignalTarget::Group => (process::signal_group(entry.pid, sig), "group"),
                        SignalTarget::Main => (process::signal_main(entry.pid, sig), "process"),
                    };
                    if let Err(e) = sent {
                        let (name, pid) = (&entry.name, entry.pid);
                        tracing::warn!(service = %name, "SIG{} to {whom} {pid}: {e}", signal.name());
                    }
                }
            }
            // SIGKILL to the group; whatever left it is swept when the kernel says the process
            // has ended ([`Effect::Sweep`]).
            Effect::Kill { job, .. } => {
                if let Some(entry) = self.children.service(*job) {
                    if let Err(e) = process::signal_group(entry.pid, nix::sys::signal::SIGKILL) {
                        tracing::warn!(service = %entry.name, "SIGKILL to group {}: {e}", entry.pid);
                    }
                }
            }
            Effect::Check {
                service,
                job,
                check,
                timeout,
                reports,
                exec,
                ..
            } => self.start_check(*service, *job, check, *timeout, *reports, exec.as_ref()),
            Effect::SampleMemory { service, job } => {
                if let Some(entry) = self.children.service(*job) {
                    self.queue.push_back(Input::MemorySampled {
                        service: *service,
                        job: *job,
                        rss_bytes: process::group_rss_bytes(entry.pid),
                        total_bytes: process::total_ram_bytes(),
                    });
                }
            }
            Effect::RunCommand {
                service,
                job,
                argv,
                purpose,
                exec,
                timeout,
            } => self.run_command(*service, *job, argv, *purpose, exec, *timeout),
            Effect::LinkUp { ifname, .. } => {
                let ifname = ifname.clone();
                tokio::task::spawn_local(async move {
                    match netlink::link_up(&ifname).await {
                        Ok(()) => tracing::info!("link {ifname} set up"),
                        Err(e) => tracing::warn!("link-up {ifname}: {e}"),
                    }
                });
            }
            Effect::Watch { path } => match self.watcher.as_mut().map(|w| w.watch(path)) {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::warn!("cannot watch {path}: {e}"),
                None => tracing::warn!("cannot watch {path}: inotify unavailable"),
            },
            Effect::Unwatch { path } => {
                if let Some(w) = self.watcher.as_mut() {
                    w.unwatch(path);
                }
            }
            Effect::Event { service, record } => {
                let name = self.kernel.name(*service);
                let record_text = record.to_string();
                let shown = crate::terminal::sanitize(&record_text);
                tracing::info!(target: "medic::event", "{name}: {shown}");
                if !self.event_followers.is_empty() {
                    let row = EventRow::new(&self.kernel, *service, record);
                    self.event_followers.retain(|reply| {
                        reply.try_send(Response::Events(vec![row.clone()])).is_ok()
                    });
                }
            }
            Effect::Notice { message } => tracing::warn!("{message}"),
            Effect::ShutdownComplete => self.done = true,
            Effect::Sweep { job, .. } => self.children.sweep(*job),
            Effect::Adopt {
                service,
                job,
                pid,
                was,
            } => self.adopt(*service, *job, *pid, *was),
            Effect::Render {
                service,
                job,
                templates,
                outputs,
                secrets,
            } => self.render(*service, *job, templates, outputs, secrets),
            Effect::DropSecret { name, generation } => self.drop_secret(name, *generation),
            Effect::ConfigRolledBack => self.config_rolled_back(),
        }
    }

    /// [`Effect::Render`]: the templates are rendered and their candidates written on a thread
    /// of its own (a template `source` on a hung mount stalls only that thread); the checks
    /// and the commit follow in [`Runtime::render_staged`].
    fn render(
        &mut self,
        service: ServiceId,
        job: JobId,
        templates: &[medic_kernel::config::Template],
        outputs: &BTreeMap<String, medic_kernel::Outputs>,
        secrets: &BTreeMap<String, u64>,
    ) {
        let tx = self.tx.clone();
        let (templates, outputs) = (templates.to_vec(), outputs.clone());
        let secrets = crate::render::SecretFiles {
            dir: self.secrets.store.dir().to_path_buf(),
            generations: secrets.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("medic-render".into())
            .stack_size(RENDER_STACK)
            .spawn(move || {
                let staged = crate::render::stage_with(&templates, &outputs, &secrets, job.0);
                let _ = tx.blocking_send(Event::RenderStaged {
                    service,
                    job,
                    staged,
                });
            });
        if let Err(e) = spawned {
            let why = format!("cannot start a thread to render: {e}");
            self.render_done(service, job, RenderResult::Failed(why));
        }
    }

    fn render_done(&mut self, service: ServiceId, job: JobId, result: RenderResult) {
        self.queue.push_back(Input::RenderDone {
            service,
            job,
            result,
        });
    }

    /// The candidates of a render are written: run their checks (children of the loop, so the
    /// one reaper sees them; killed after [`crate::render::CHECK_TIMEOUT`]), then commit or
    /// discard them on a thread, and answer the kernel.
    fn render_staged(
        &mut self,
        service: ServiceId,
        job: JobId,
        staged: Result<Vec<crate::render::Candidate>, String>,
    ) {
        let candidates = match staged {
            Ok(c) if c.is_empty() => {
                return self.render_done(service, job, RenderResult::Unchanged)
            }
            Ok(c) => c,
            Err(why) => return self.render_done(service, job, RenderResult::Failed(why)),
        };
        let name = self.kernel.name(service).to_string();
        let Some(exec) = self.kernel.config().service(&name).map(|c| Exec::of(c)) else {
            crate::render::discard(&candidates);
            let why = "the service left the config".to_string();
            return self.render_done(service, job, RenderResult::Failed(why));
        };
        let instance = self.instance_tag(job);
        let mut waits = Vec::new();
        for c in &candidates {
            let Some(argv) = &c.check else { continue };
            // Its output is read as it comes (a chatty check never blocks on a full pipe) and
            // its end goes into the reason a render fails, so the operator sees why.
            let spec = SpawnSpec::for_service(argv, &exec, &self.base_dir, &instance);
            match process::spawn(spec) {
                Ok(child) => {
                    let (status_tx, status_rx) = oneshot::channel();
                    let token = self.children.add_check(child.pid, status_tx);
                    let what = format!("check of {} ({})", c.target, argv[0]);
                    let (alive, watch) = Alive::new();
                    let output = read_check_output(child.stdout, child.stderr, watch);
                    waits.push((what, child.pid, token, status_rx, alive, output));
                }
                Err(e) => {
                    crate::render::discard(&candidates);
                    let why = format!("check of {}: {e}", c.target);
                    return self.render_done(service, job, RenderResult::Failed(why));
                }
            }
        }
        let tx = self.tx.clone();
        tokio::task::spawn_local(async move {
            let deadline = tokio::time::Instant::now() + crate::render::CHECK_TIMEOUT;
            let mut failed = None;
            for (what, pid, token, status, alive, output) in waits {
                let ended = match tokio::time::timeout_at(deadline, status).await {
                    Ok(Ok(status)) if status.success() => None,
                    Ok(Ok(status)) => Some(status.to_string()),
                    Ok(Err(_)) => Some("its end was not seen".to_string()),
                    Err(_) => {
                        let _ = tx.send(Event::Expire { pid, token }).await;
                        let limit = crate::render::CHECK_TIMEOUT.as_secs();
                        Some(format!("still running after {limit}s, killed"))
                    }
                };
                // Reaped (or given up on): its output reader drains and closes.
                drop(alive);
                if let Some(ended) = ended {
                    let output = output.await.unwrap_or_default();
                    failed.get_or_insert(crate::render::check_failed(&what, &ended, &output));
                }
            }
            // Renames and fsyncs off the loop too.
            let candidates = std::sync::Arc::new(candidates);
            let (kept, sender) = (candidates.clone(), tx.clone());
            let spawned = std::thread::Builder::new()
                .name("medic-render".into())
                .stack_size(RENDER_STACK)
                .spawn(move || {
                    let result = match failed {
                        Some(why) => {
                            crate::render::discard(&candidates);
                            RenderResult::Failed(why)
                        }
                        None => match crate::render::commit(&candidates) {
                            Ok(targets) => RenderResult::Changed(targets),
                            Err(e) => RenderResult::Failed(e.to_string()),
                        },
                    };
                    let done = Input::RenderDone {
                        service,
                        job,
                        result,
                    };
                    let _ = tx.blocking_send(Event::Input(done));
                });
            if let Err(e) = spawned {
                crate::render::discard(&kept);
                let why = format!("cannot start a thread to write the files: {e}");
                let result = RenderResult::Failed(why);
                let done = Input::RenderDone {
                    service,
                    job,
                    result,
                };
                let _ = sender.send(Event::Input(done)).await;
            }
        });
    }

    fn spawn_service(&mut self, service: ServiceId, job: JobId, config: &ServiceConfig) {
        let (argv, is_process) = match &config.kind {
            Kind::Process { argv } => (argv, true),
            Kind::Oneshot { argv, .. } => (argv, false),
            Kind::Interface { .. } | Kind::Device { .. } => return,
        };
        let exec = Exec::of(config);
        let instance = self.instance_tag(job);
        let mut tasks: Vec<AbortHandle> = Vec::new();
        let mut notify_fd = None;
        let mut notify_read = None;
        let mut notify_socket: Option<NotifySocket> = None;
        // The daemon short of descriptors, memory or processes is not the service's fault:
        // the kernel tries again later, without a strike.
        let failed = |error: String, shortage: bool| match shortage {
            true => Input::SpawnDeferred {
                service,
                job,
                error,
            },
            false => Input::SpawnFailed {
                service,
                job,
                error,
            },
        };
        // Not the last descriptors: the control socket must still answer.
        if let Some(why) = crate::fds::short_of_descriptors(self.ran.contains(&service)) {
            tracing::warn!(service = %config.name, "not started: {why}");
            return self.queue.push_back(failed(why, true));
        }
        if is_process {
            match &config.ready {
                Readiness::NotifyFd(n) => match process::pipe() {
                    Ok((r, w)) => {
                        notify_fd = Some((*n, w));
                        notify_read = Some(r);
                    }
                    Err(e) => {
                        let shortage = e.is_resource_shortage();
                        return self.queue.push_back(failed(e.to_string(), shortage));
                    }
                },
                // A service of another user cannot reach the state dir: its socket is in the
                // abstract namespace; whoever sends, only its own processes' READY=1 counts.
                Readiness::SdNotify => {
                    let path = self
                        .state_dir
                        .join("notify")
                        .join(format!("{}.{}.sock", config.name, job.0));
                    let bound = match &config.user {
                        Some(_) => NotifySocket::bind_abstract(&config.name),
                        None => NotifySocket::bind_file(&path),
                    };
                    match bound {
                        Ok(sock) => notify_socket = Some(sock),
                        Err(e) => {
                            let shortage = process::is_resource_shortage(e.raw_os_error());
                            let why = format!("NOTIFY_SOCKET {}: {e}", path.display());
                            return self.queue.push_back(failed(why, shortage));
                        }
                    }
                }
                _ => {}
            }
        }
        let spec = SpawnSpec {
            notify_fd,
            notify_socket: notify_socket.as_ref().map(NotifySocket::address),
            ..SpawnSpec::for_service(argv, &exec, &self.base_dir, &instance)
        };
        let child = match process::spawn(spec) {
            Ok(c) => c,
            Err(e) => {
                for t in tasks {
                    t.abort();
                }
                if let Some(p) = notify_socket.and_then(|s| s.file) {
                    let _ = std::fs::remove_file(p);
                }
                tracing::warn!(service = %config.name, "spawn failed: {e}");
                let shortage = e.is_resource_shortage();
                return self.queue.push_back(failed(e.to_string(), shortage));
            }
        };
        let pid = child.pid;
        self.ran.insert(service);
        tracing::info!(service = %config.name, pid, "started {}", argv.join(" "));
        let record = ProcRecord {
            job,
            pid,
            start_ticks: adopt::start_ticks(pid).unwrap_or(0),
            tag: instance.clone(),
            pipes: [
                child.stdout.as_ref().and_then(adopt::inode),
                child.stderr.as_ref().and_then(adopt::inode),
            ],
        };
        self.survival.records.insert(job, record);
        if let Some(r) = notify_read {
            tasks.push(self.read_notify_fd(r, service, job));
        }
        let mut notify_file = None;
        if let Some(sock) = notify_socket {
            notify_file = sock.file.clone();
            let uid = match &config.user {
                Some(user) => crate::users::user(user).map_or(u32::MAX, |ids| ids.uid),
                None => nix::unistd::geteuid().as_raw(),
            };
            tasks.push(self.read_sd_notify(sock, service, job, pid, uid, &config.name));
        }
        let output_fds =
            [child.stdout.as_ref(), child.stderr.as_ref()].map(|f| f.map(|f| f.as_raw_fd()));
        let alive = self.read_output(&config.name, child.stdout, child.stderr);
        if let Some(fd) = process::pidfd_open(pid) {
            tasks.push(self.watch_pidfd(fd));
        }
        self.children.add_service(
            job,
            ProcEntry {
                service,
                name: config.name.clone(),
                pid,
                instance,
                notify_socket: notify_file,
                tasks,
                alive,
                adopted: false,
                output_fds,
            },
        );
        self.queue.push_back(Input::Spawned { service, job, pid });
    }

    fn start_check(
        &mut self,
        service: ServiceId,
        job: JobId,
        check: &Check,
        timeout: Duration,
        reports: Reports,
        exec: Option<&Exec>,
    ) {
        let tx = self.tx.clone();
        let done = move |result: CheckResult| {
            Event::Input(Input::CheckDone {
                service,
                job,
                result,
            })
        };
        match check {
            Check::Tcp(addr) => {
                let addr = addr.clone();
                tokio::task::spawn_local(async move {
                    let result = checks::within(timeout, checks::tcp(&addr)).await;
                    let _ = tx.send(done(result)).await;
                });
            }
            Check::Unix(path) => {
                let path = process::resolve(&self.base_dir, path);
                tokio::task::spawn_local(async move {
                    let result = checks::within(timeout, checks::unix(&path)).await;
                    let _ = tx.send(done(result)).await;
                });
            }
            Check::File(path) => {
                let result = checks::file(&process::resolve(&self.base_dir, path));
                self.queue.push_back(Input::CheckDone {
                    service,
                    job,
                    result,
                });
            }
            Check::Run(argv) => {
                let Some(exec) = exec else {
                    let result = CheckResult::Failed("no context for a run check".into());
                    return self.queue.push_back(Input::CheckDone {
                        service,
                        job,
                        result,
                    });
                };
                let condition = reports == Reports::Condition;
                let instance = self.instance_tag(job);
                let spec = SpawnSpec {
                    capture_stdout: condition,
                    capture_stderr: false,
                    ..SpawnSpec::for_service(argv, exec, &self.base_dir, &instance)
                };
                let child = match process::spawn(spec) {
                    Ok(c) => c,
                    Err(e) => {
                        let result = CheckResult::Failed(e.to_string());
                        return self.queue.push_back(Input::CheckDone {
                            service,
                            job,
                            result,
                        });
                    }
                };
                let pid = child.pid;
                let (status_tx, status_rx) = oneshot::channel();
                let token = self.children.add_check(pid, status_tx);
                let stdout = child.stdout;
                tokio::task::spawn_local(async move {
                    let run = async move {
                        let line = match stdout {
                            Some(fd) => first_line(fd).await,
                            None => None,
                        };
                        let status = status_rx.await.unwrap_or(ExitStatus::Signal(9));
                        match (line, status) {
                            (Some(line), _) if condition => CheckResult::Condition(line),
                            (_, s) if s.success() => CheckResult::Ok,
                            (_, s) => CheckResult::Failed(s.to_string()),
                        }
                    };
                    let result = match tokio::time::timeout(timeout, run).await {
                        Ok(r) => r,
                        Err(_) => {
                            let _ = tx.send(Event::Expire { pid, token }).await;
                            CheckResult::TimedOut
                        }
                    };
                    let _ = tx.send(done(result)).await;
                });
            }
        }
    }

    fn run_command(
        &mut self,
        service: ServiceId,
        job: JobId,
        argv: &[String],
        purpose: CommandPurpose,
        exec: &Exec,
        timeout: Duration,
    ) {
        let instance = self.instance_tag(job);
        let spec = SpawnSpec::for_service(argv, exec, &self.base_dir, &instance);
        let name = &exec.service;
        let child = match process::spawn(spec) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(service = %name, "{purpose:?} command: {e}");
                // 127: what a shell answers for a command it cannot run.
                let status = ExitStatus::Code(127);
                return self.queue.push_back(Input::CommandDone {
                    service,
                    job,
                    status,
                });
            }
        };
        let pid = child.pid;
        tracing::info!(service = %name, pid, "{purpose:?} command: {}", argv.join(" "));
        let alive = self.read_output(name, child.stdout, child.stderr);
        let tx = self.tx.clone();
        self.children
            .add_command(pid, service, job, alive, |token| {
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(timeout).await;
                    let _ = tx.send(Event::Expire { pid, token }).await;
                })
                .abort_handle()
            });
    }

    // ----- tasks -------------------------------------------------------------------------------

    /// Reads a process's stdout and stderr into lines for the loop, each on its own task, until
    /// the end of the stream, or until [`children::OUTPUT_DRAIN`] after the returned token is
    /// dropped (when the process is reaped). The tasks are never aborted: the deadline runs on
    /// them, so the loop never waits for a drain.
    fn read_output(
        &self,
        service: &str,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    ) -> Alive {
        let (alive, watch) = Alive::new();
        for (fd, stream) in [(stdout, Stream::Stdout), (stderr, Stream::Stderr)] {
            let Some(fd) = fd else { continue };
            let tx = self.tx.clone();
            let service = service.to_string();
            let drained = children::reaped_and_drained(watch.clone());
            tokio::task::spawn_local(async move {
                let Ok(pipe) = pipe::Receiver::from_owned_fd(fd) else {
                    return;
                };
                let mut splitter = LineSplitter::default();
                let read = async {
                    loop {
                        // One scratch buffer for every reader (they all run on this thread), so
                        // an idle service costs no buffer.
                        if pipe.readable().await.is_err() {
                            return;
                        }
                        let mut lines = Vec::new();
                        let read = SCRATCH.with_borrow_mut(|buf| {
                            let n = pipe.try_read(buf)?;
                            splitter.feed(&buf[..n], |l| lines.push(l));
                            Ok::<usize, io::Error>(n)
                        });
                        match read {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                            Err(_) => return,
                        }
                        for text in lines {
                            let ev = Event::Line {
                                service: service.clone(),
                                stream,
                                text,
                            };
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                tokio::select! {
                    () = read => {}
                    () = drained => {}
                }
                if let Some(text) = splitter.finish() {
                    let _ = tx
                        .send(Event::Line {
                            service,
                            stream,
                            text,
                        })
                        .await;
                }
            });
        }
        alive
    }

    fn read_notify_fd(&self, fd: OwnedFd, service: ServiceId, job: JobId) -> AbortHandle {
        let tx = self.tx.clone();
        tokio::task::spawn_local(async move {
            let Ok(mut pipe) = pipe::Receiver::from_owned_fd(fd) else {
                return;
            };
            let mut buf = [0u8; 256];
            loop {
                match pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) if buf[..n].contains(&b'\n') => {
                        let _ = tx
                            .send(Event::Input(Input::ReadyNotified { service, job }))
                            .await;
                        return;
                    }
                    Ok(_) => {}
                }
            }
        })
        .abort_handle()
    }

    /// Waits for the process `pid` (running as `uid`) or one of its group to send `READY=1`
    /// on `sock` (see [`crate::notify`]).
    fn read_sd_notify(
        &self,
        sock: NotifySocket,
        service: ServiceId,
        job: JobId,
        pid: u32,
        uid: u32,
        name: &str,
    ) -> AbortHandle {
        let tx = self.tx.clone();
        let name = name.to_string();
        tokio::task::spawn_local(async move {
            sock.ready(pid, uid, name).await;
            let _ = tx
                .send(Event::Input(Input::ReadyNotified { service, job }))
                .await;
        })
        .abort_handle()
    }

    fn watch_pidfd(&self, fd: OwnedFd) -> AbortHandle {
        let tx = self.tx.clone();
        tokio::task::spawn_local(async move {
            // SAFETY: the pidfd is owned by the `AsyncFd` and stays open as long as it.
            let Ok(afd) = (unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) })
            else {
                return;
            };
            if afd.readable().await.is_ok() {
                let _ = tx.send(Event::Children).await;
            }
        })
        .abort_handle()
    }

    // ----- the control socket ------------------------------------------------------------------

    /// Answers one control request from the kernel's and the loop's state.
    fn answer(&mut self, call: Call) {
        let Call { request, reply } = call;
        let response = match &request {
            Request::Status { services } | Request::StatusReport { services } => {
                let links = self.links.as_ref().map(|l| l.table());
                let view = |ifname: &str| {
                    let v = links.as_ref()?.view(ifname)?;
                    Some(LinkInfo {
                        state: v.state,
                        addresses: v.addresses,
                    })
                };
                if let Request::Status { .. } = request {
                    control::status_rows(&self.kernel, services, self.now(), view)
                        .map_or_else(Response::Error, Response::Status)
                } else {
                    let observed = control::Observed {
                        links: view,
                        memory: |id, job| self.memory.get(&id).filter(|m| m.0 == job).map(|m| m.1),
                        total_ram: process::total_ram_bytes(),
                    };
                    let (kernel, now, info) = (&self.kernel, self.now(), self.info());
                    control::status_report(kernel, services, now, observed, info)
                        .map_or_else(Response::Error, Response::StatusReport)
                }
            }
            Request::Start(_) | Request::Stop(_) | Request::Restart(_) | Request::Reload(_) => {
                match request.operators(&self.kernel) {
                    Some(Ok(ops)) => {
                        for op in ops {
                            self.queue.push_back(Input::Operator(op));
                        }
                        Response::Done
                    }
                    Some(Err(e)) => Response::Error(e),
                    None => Response::Error("not an operator command".into()),
                }
            }
            Request::History { service } => control::history_rows(&self.kernel, service)
                .map_or_else(Response::Error, Response::History),
            Request::Logs {
                service,
                lines,
                follow,
            }
            | Request::LogRecords {
                service,
                lines,
                follow,
            } => {
                let records = matches!(request, Request::LogRecords { .. });
                if let Err(e) = control::logs_of(&self.kernel, service) {
                    Response::Error(e)
                } else {
                    let ring = self.logs.get(service);
                    let tail = ring.into_iter().flat_map(|r| r.tail(*lines as usize));
                    let tail = match records {
                        true => {
                            Response::LogRecords(tail.map(control::LogRow::from_line).collect())
                        }
                        false => Response::LogLines(
                            tail.filter(|l| !matches!(l.stream, Stream::Start(_)))
                                .map(|l| l.text.clone())
                                .collect(),
                        ),
                    };
                    if !*follow {
                        tail
                    } else {
                        let who = Follower::Logs(service.clone(), records);
                        return self.follow(reply, tail, who);
                    }
                }
            }
            Request::Events { follow } => {
                let recent = Response::Events(control::recent_events(&self.kernel, RECENT_EVENTS));
                if !*follow {
                    recent
                } else {
                    return self.follow(reply, recent, Follower::Events);
                }
            }
            // Written on a thread of its own, which answers: a FIFO nobody reads or a hung
            // mount stalls only that thread.
            Request::TraceSave { path } => {
                let bytes = self.trace.to_file_bytes();
                return self.trace_writers.save(path.clone(), bytes, reply);
            }
            Request::Ping => Response::Pong,
            Request::Info => Response::Info(self.info()),
            // Read off the loop, like a SIGHUP's; answered once the text has been fed.
            Request::ReloadConfig => return self.reload_config(Some(reply)),
            Request::Reexec { binary } => return self.start_reexec(binary.clone(), reply),
            Request::Image => Response::Image(self.image.clone()),
            Request::SecretSet {
                name,
                bytes,
                confirm_within_ms,
            } => {
                let within = confirm_within_ms.map(Duration::from_millis);
                return self.secret_set(name, &bytes.0, within, reply);
            }
            Request::SecretRemove { name } => self.secret_remove(name),
            Request::SecretList => Response::Secrets(
                (self.secrets.store.entries().iter())
                    .map(|(name, e)| control::SecretRow {
                        name: name.clone(),
                        size: e.current.size,
                        generation: e.current.generation,
                        set_at_unix_ms: e.current.set_at_unix_ms,
                        unconfirmed: e.current.unconfirmed,
                    })
                    .collect(),
            ),
            Request::Apply {
                path,
                confirm_within_ms,
            } => {
                let within = confirm_within_ms.map(Duration::from_millis);
                return self.apply(PathBuf::from(path), within, reply);
            }
            Request::Confirm => self.confirm(),
            Request::Pending => {
                Response::Pending(self.kernel.pending().map(|p| control::PendingRow {
                    what: p.describe(),
                    deadline_ms: p.deadline.as_millis(),
                }))
            }
            Request::Output { service } => match self.kernel.lookup(service) {
                Some(_) => {
                    Response::Outputs(self.kernel.outputs(service).cloned().unwrap_or_default())
                }
                None => Response::Error(format!("no service called `{service}`")),
            },
            // Checked here so that the client hears why; the kernel checks again (a trace
            // replays without this loop).
            Request::OutputSet { service, outputs } => {
                match (
                    self.kernel.lookup(service),
                    medic_kernel::outputs::validate(outputs),
                ) {
                    (None, _) => Response::Error(format!("no service called `{service}`")),
                    (_, Err(e)) => Response::Error(format!("{e}; nothing changed")),
                    (Some(_), Ok(())) => {
                        self.queue.push_back(Input::SetOutputs {
                            service: service.clone(),
                            outputs: outputs.clone(),
                        });
                        Response::Done
                    }
                }
            }
        };
        let _ = reply.try_send(response);
    }

    /// Sends a new follower its first answer and keeps it, or refuses it when there are
    /// [`MAX_FOLLOWERS`] already.
    fn follow(&mut self, reply: mpsc::Sender<Response>, first: Response, who: Follower) {
        if self.followers() >= MAX_FOLLOWERS {
            let refusal = format!("more than {MAX_FOLLOWERS} followers; try again later");
            let _ = reply.try_send(Response::Error(refusal));
            return;
        }
        if reply.try_send(first).is_ok() {
            match who {
                Follower::Events => self.event_followers.push(reply),
                Follower::Logs(service, records) => {
                    self.log_followers.push((service, records, reply))
                }
            }
        }
    }

    fn followers(&mut self) -> usize {
        self.event_followers.retain(|r| !r.is_closed());
        self.log_followers.retain(|(_, _, r)| !r.is_closed());
        self.event_followers.len() + self.log_followers.len()
    }
}

// ----- surviving a crash (DESIGN §13) -----------------------------------------------------------

impl Survival {
    /// Reads the state file of `dir` (a missing, foreign or damaged one is said and ignored),
    /// or takes the state `handed` over by a reexec, and returns the kernel's time origin:
    /// the predecessor's, when its state is taken back.
    fn read(dir: &Path, handed: Option<reexec::Accepted>) -> (Survival, std::time::Instant) {
        let boot_id = adopt::boot_id();
        let now_ns = adopt::monotonic_ns();
        let mut path = dir.join(statefile::STATE_NAME);
        let handed_over = handed.is_some();
        let (read, outputs) = match handed {
            Some(handed) => {
                path = PathBuf::from("the handed-over state");
                let outputs = reexec::take_outputs(&handed.outputs, &handed.state.procs);
                (Ok(Some(handed.state)), outputs)
            }
            None => {
                let read =
                    statefile::read(dir).and_then(|b| b.map(|b| statefile::decode(&b)).transpose());
                (read, BTreeMap::new())
            }
        };
        let state = match read {
            Ok(None) => None,
            Ok(Some(state)) if state.boot_id != boot_id || state.origin_ns > now_ns => {
                tracing::info!("{}: from before a reboot; ignored", path.display());
                None
            }
            Ok(Some(state)) => Some(state),
            Err(why) => {
                tracing::warn!(
                    "{}: {why}; ignored: no history, nothing adopted",
                    path.display()
                );
                None
            }
        };
        let now = std::time::Instant::now();
        let (origin_ns, origin) = match &state {
            Some(s) => match now.checked_sub(Duration::from_nanos(now_ns - s.origin_ns)) {
                Some(origin) => (s.origin_ns, origin),
                None => (now_ns, now),
            },
            None => (now_ns, now),
        };
        let survival = Survival {
            tag_prefix: format!("{}.", adopt::dir_tag(dir)),
            boot_id,
            origin_ns,
            records: BTreeMap::new(),
            dirty: true,
            trimmed_noted: false,
            failed_noted: false,
            wanted_at_shutdown: None,
            resume: state,
            survivors: BTreeMap::new(),
            outputs,
            handed_over,
        };
        (survival, origin)
    }

    /// Marks every recorded process of `state` that is gone or no longer the same as not
    /// survived, and keeps a pidfd of each that is; returns the pids that must be stopped
    /// although they are not (or no longer) tagged as ours.
    fn check(&mut self, state: &mut StateFile) -> Vec<u32> {
        let mut stop = Vec::new();
        let records: BTreeMap<JobId, ProcRecord> =
            state.procs.drain(..).map(|r| (r.job, r)).collect();
        for service in &mut state.kernel.services {
            let Some(p) = service.process.as_mut() else {
                continue;
            };
            let record = records.get(&p.job).filter(|r| r.pid == p.pid);
            // After a reexec, a recorded pid that is still this daemon's child is the same
            // process (a child's pid is not freed until it is reaped), even one that ended
            // during the reexec: a zombie, whose end is then reaped with its exit status.
            let child = self.handed_over
                && record.is_some()
                && process::read_stat(p.pid).is_some_and(|s| s.ppid == std::process::id());
            let started =
                child || record.is_some_and(|r| adopt::start_ticks(p.pid) == Some(r.start_ticks));
            let tagged =
                child || record.is_some_and(|r| adopt::instance_of(p.pid).as_ref() == Some(&r.tag));
            let pidfd = (started && tagged)
                .then(|| process::pidfd_open(p.pid))
                .flatten();
            match (record, pidfd) {
                (Some(record), Some(fd)) => {
                    self.survivors.insert(p.job, (record.clone(), fd));
                }
                _ if started => {
                    // Alive, and ours by its start time, but not to be adopted: without a
                    // pidfd its end could not be seen; without its tag it is not the same.
                    let why = match tagged {
                        true => "no pidfd to watch it with (Linux < 5.3)",
                        false => "its MEDIC_INSTANCE is not the one recorded",
                    };
                    tracing::warn!(service = %service.name, pid = p.pid, "not adopted: {why}");
                    stop.push(p.pid);
                    service.process = None;
                }
                _ => p.survived = false,
            }
        }
        stop
    }
}

impl Runtime {
    /// `MEDIC_INSTANCE` of the process of `job`: this state dir's tag and the job (never
    /// reused, also across daemons), inherited by what the process forks, so a sweep finds
    /// descendants that left the group and a successor finds what nobody accounts for.
    fn instance_tag(&self, job: JobId) -> String {
        format!("{}{}", self.survival.tag_prefix, job.0)
    }

    /// Takes back the predecessor's state (the kernel adopts what survived), then stops every
    /// process tagged with this state dir that was not adopted. Before the first tick.
    fn take_over(&mut self) {
        let mut stop = Vec::new();
        if let Some(mut state) = self.survival.resume.take() {
            stop = self.survival.check(&mut state);
            self.feed(Input::Resume(Box::new(state.kernel)));
            // Alive and the same, but not adopted by the kernel (a changed definition…).
            let left = std::mem::take(&mut self.survival.survivors);
            stop.extend(left.values().map(|(r, _)| r.pid));
        }
        // The handed-over pipes of what was not adopted are closed.
        self.survival.outputs.clear();
        let adopted: std::collections::BTreeSet<String> = self
            .survival
            .records
            .values()
            .map(|r| r.tag.clone())
            .collect();
        stop.extend(adopt::tagged(&self.survival.tag_prefix, &adopted));
        stop.sort_unstable();
        stop.dedup();
        if !stop.is_empty() {
            tracing::warn!(
                "stopping {} process(es) left by a previous daemon that nobody accounts for: \
                 pids {stop:?}",
                stop.len()
            );
            adopt::stop(&stop, adopt::STRAY_GRACE);
        }
    }

    /// [`Effect::Adopt`]: watches the end of a process of the previous daemon through its
    /// pidfd, and reads its output again when its pipes are still there.
    fn adopt(&mut self, service: ServiceId, job: JobId, pid: u32, was: JobId) {
        let name = self.kernel.name(service).to_string();
        let Some((record, pidfd)) = self.survival.survivors.remove(&was) else {
            // Cannot happen: the kernel adopts only what the check found. Never wait for ever.
            tracing::error!(service = %name, pid, "adopt: no such survivor; taken as ended");
            let status = ExitStatus::Unknown;
            return self.queue.push_back(Input::Exited {
                service,
                job,
                status,
            });
        };
        // Handed over by a reexec, else opened again through /proc after a crash.
        let [stdout, stderr] = match self.survival.outputs.remove(&was) {
            Some(handed) if handed.iter().any(Option::is_some) => handed,
            _ => adopt::reattach(pid, record.pipes),
        };
        let output = match (&stdout, &stderr) {
            (Some(_), Some(_)) => "its output is read on",
            (None, None) => "its output is lost (its pipes are gone)",
            _ => "part of its output is read on",
        };
        let output_fds = [stdout.as_ref(), stderr.as_ref()].map(|f| f.map(|f| f.as_raw_fd()));
        let alive = self.read_output(&name, stdout, stderr);
        self.log_line(name.clone(), Stream::Start(pid), String::new());
        self.survival.records.insert(
            job,
            ProcRecord {
                job,
                ..record.clone()
            },
        );
        // After a reexec the process is still this daemon's child (the pid is the same): its
        // end is reaped with its exit status, like any child's.
        if process::read_stat(pid).is_some_and(|s| s.ppid == std::process::id()) {
            tracing::info!(service = %name, pid, "taken over, still a child of this daemon; {output}");
            let watch = self.watch_pidfd(pidfd);
            let entry = ProcEntry {
                service,
                name,
                pid,
                instance: record.tag,
                notify_socket: None,
                tasks: vec![watch],
                alive,
                adopted: false,
                output_fds,
            };
            return self.children.add_service(job, entry);
        }
        tracing::info!(service = %name, pid, "adopted, left running by the previous daemon; {output}");
        let tx = self.tx.clone();
        let watch = tokio::task::spawn_local(async move {
            // SAFETY: the pidfd is owned by the `AsyncFd` and stays open as long as it.
            let ended = match unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
            {
                Ok(afd) => afd.readable().await.map(|_| ()),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = ended {
                tracing::warn!(pid, "cannot watch an adopted process ({e}): taken as ended");
            }
            let _ = tx.send(Event::AdoptedEnded(job)).await;
        })
        .abort_handle();
        self.children.add_adopted(
            job,
            ProcEntry {
                service,
                name,
                pid,
                instance: record.tag,
                notify_socket: None,
                tasks: vec![watch],
                alive,
                adopted: true,
                output_fds,
            },
        );
    }

    /// Rewrites the state file (crate::statefile) with what the kernel keeps and what is known
    /// of each live process.
    fn save_state(&mut self) {
        self.survival.dirty = false;
        let bytes = self.state_bytes();
        let survival = &mut self.survival;
        match statefile::write(&self.state_dir, &bytes) {
            Ok(()) => survival.failed_noted = false,
            Err(e) if !survival.failed_noted => {
                survival.failed_noted = true;
                tracing::warn!(
                    "cannot write {}: {e}; a crash of the daemon now would lose the latest \
                     history and start services twice",
                    self.state_dir.join(statefile::STATE_NAME).display()
                );
            }
            Err(_) => {}
        }
    }

    /// The state file's bytes now: what the kernel keeps and what is known of each live
    /// process; without the histories if it would be over its bound.
    fn state_bytes(&mut self) -> Vec<u8> {
        let survival = &mut self.survival;
        let mut kernel = self.kernel.saved();
        if let Some(wanted) = &survival.wanted_at_shutdown {
            for s in &mut kernel.services {
                s.wanted = wanted.get(&s.name).copied().unwrap_or(s.wanted);
            }
        }
        let live: std::collections::BTreeSet<JobId> = kernel
            .services
            .iter()
            .filter_map(|s| s.process.map(|p| p.job))
            .collect();
        survival.records.retain(|job, _| live.contains(job));
        let mut state = StateFile {
            boot_id: survival.boot_id.clone(),
            origin_ns: survival.origin_ns,
            kernel,
            procs: survival.records.values().cloned().collect(),
        };
        let mut bytes = statefile::encode(&state);
        if bytes.len() > statefile::MAX_STATE_BYTES {
            for s in &mut state.kernel.services {
                s.history = medic_kernel::History::new(1);
            }
            bytes = statefile::encode(&state);
            if !survival.trimmed_noted {
                survival.trimmed_noted = true;
                tracing::warn!(
                    "the state file would be over {} bytes: written without the histories \
                     (a crash of the daemon loses them; strikes and processes are kept)",
                    statefile::MAX_STATE_BYTES
                );
            }
        }
        bytes
    }
}

// ----- secrets and confirm-or-roll-back (DESIGN §10) ------------------------------------------

impl Runtime {
    /// Why a push (`secret set`, `secret rm`, `apply`) cannot be taken now, if it cannot.
    fn push_refusal(&self) -> Option<String> {
        if let Some(pending) = self.kernel.pending() {
            return Some(format!(
                "{} waits for `medic confirm`; one change at a time: confirm it, or let it roll \
                 back, then push again; nothing changed",
                pending.describe()
            ));
        }
        if self.secrets.busy {
            return Some(
                "another `medic secret set`, `secret rm` or `apply` is under way; try again; \
                 nothing changed"
                    .into(),
            );
        }
        if self.shutting_down {
            return Some("the daemon is shutting down; nothing changed".into());
        }
        None
    }

    /// `medic secret set`: checked here (the client hears why), written off the loop, then
    /// told to the kernel ([`Runtime::secret_stored`]).
    fn secret_set(
        &mut self,
        name: &str,
        bytes: &[u8],
        confirm_within: Option<Duration>,
        reply: mpsc::Sender<Response>,
    ) {
        let refuse = |why: String| {
            let _ = reply.try_send(Response::Error(why));
        };
        if !crate::secrets::valid_name(name) {
            return refuse(format!(
                "`{name}` is not a secret name: 1 to 64 of a-z, 0-9, `_` and `-`; nothing changed"
            ));
        }
        if bytes.len() > crate::secrets::MAX_SECRET_BYTES {
            return refuse(format!(
                "the secret is {} bytes; at most {} are taken; nothing changed",
                bytes.len(),
                crate::secrets::MAX_SECRET_BYTES
            ));
        }
        if let Some(why) = self.secrets.store.refused() {
            return refuse(format!("the secrets directory is refused: {why}"));
        }
        let fresh = !self.secrets.store.entries().contains_key(name);
        if fresh && self.secrets.store.entries().len() >= crate::secrets::MAX_SECRETS {
            return refuse(format!(
                "the store holds {} secrets already; remove one first",
                crate::secrets::MAX_SECRETS
            ));
        }
        if let Some(why) = self.push_refusal() {
            return refuse(why);
        }
        let generation = self.secrets.store.next_generation(name);
        let dir = self.secrets.store.dir().to_path_buf();
        let (tx, name, bytes) = (self.tx.clone(), name.to_string(), bytes.to_vec());
        let error_reply = reply.clone();
        let spawned = std::thread::Builder::new()
            .name("medic-secret".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let unconfirmed = confirm_within.is_some();
                let written = crate::secrets::write(&dir, &name, generation, &bytes, unconfirmed);
                let _ = tx.blocking_send(Event::SecretStored {
                    name,
                    generation,
                    confirm_within,
                    written,
                    reply,
                });
            });
        match spawned {
            Ok(_) => self.secrets.busy = true,
            Err(e) => {
                let _ = error_reply.try_send(Response::Error(format!(
                    "cannot start a thread to write the secret: {e}; nothing changed"
                )));
            }
        }
    }

    /// A secret is in the store: the kernel hears its new generation.
    fn secret_stored(
        &mut self,
        name: String,
        generation: u64,
        confirm_within: Option<Duration>,
        written: io::Result<crate::secrets::Version>,
        reply: mpsc::Sender<Response>,
    ) {
        self.secrets.busy = false;
        let answer = match written {
            Ok(version) => {
                self.secrets.store.stored(&name, version);
                tracing::info!(
                    "secret {name}: generation {generation} stored ({} bytes){}",
                    version.size,
                    match confirm_within {
                        Some(d) =>
                            format!(", rolled back unless confirmed within {} ms", d.as_millis()),
                        None => String::new(),
                    }
                );
                self.feed(Input::SecretSet {
                    name,
                    generation,
                    confirm_within,
                });
                Response::Done
            }
            Err(e) => Response::Error(format!(
                "cannot write secret {name} into {}: {e}; nothing changed",
                self.secrets.store.dir().display()
            )),
        };
        let _ = reply.try_send(answer);
    }

    /// `medic secret rm`.
    fn secret_remove(&mut self, name: &str) -> Response {
        if !self.secrets.store.entries().contains_key(name) {
            return Response::Error(format!("no secret called `{name}`"));
        }
        if let Some(why) = self.push_refusal() {
            return Response::Error(why);
        }
        self.feed(Input::SecretRemoved {
            name: name.to_string(),
        });
        // The kernel dropped it (Effect::DropSecret); one it never knew goes too.
        if let Some(e) = self.secrets.store.entries().get(name).copied() {
            self.drop_secret(name, e.current.generation);
        }
        tracing::info!("secret {name}: removed");
        Response::Done
    }

    /// [`Effect::DropSecret`]: the store forgets that generation; its files go off the loop.
    fn drop_secret(&mut self, name: &str, generation: u64) {
        self.secrets.store.dropped(name, generation);
        let (dir, name) = (self.secrets.store.dir().to_path_buf(), name.to_string());
        let spawned = std::thread::Builder::new()
            .name("medic-secret".into())
            .stack_size(64 * 1024)
            .spawn(move || crate::secrets::remove_files(&dir, &name, generation));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread to remove an old secret file: {e}");
        }
    }

    /// `medic confirm`.
    fn confirm(&mut self) -> Response {
        let Some(pending) = self.kernel.pending().cloned() else {
            return Response::Error("nothing waits for a confirmation".into());
        };
        self.feed(Input::Confirm);
        tracing::info!("medic confirm: {} is final", pending.describe());
        match pending.change {
            medic_kernel::secrets::Change::Secret {
                name, generation, ..
            } => {
                self.secrets.store.confirmed(&name, generation);
                let dir = self.secrets.store.dir().to_path_buf();
                let spawned = std::thread::Builder::new()
                    .name("medic-secret".into())
                    .stack_size(64 * 1024)
                    .spawn(move || crate::secrets::remove_marker(&dir, &name, generation));
                if let Err(e) = spawned {
                    tracing::warn!("cannot start a thread to mark the secret confirmed: {e}");
                }
            }
            medic_kernel::secrets::Change::Config { .. } => self.secrets.applied_over = None,
        }
        Response::Done
    }

    /// `medic apply FILE`: the file is read off the loop ([`Runtime::apply_read`]).
    fn apply(
        &mut self,
        path: PathBuf,
        confirm_within: Option<Duration>,
        reply: mpsc::Sender<Response>,
    ) {
        if !path.is_absolute() {
            let why = format!("{} is not an absolute path", path.display());
            let _ = reply.try_send(Response::Error(why));
            return;
        }
        if let Some(why) = self.push_refusal() {
            let _ = reply.try_send(Response::Error(why));
            return;
        }
        if self.config_read.is_some() {
            let why = "a config read (SIGHUP) is under way; try again".to_string();
            let _ = reply.try_send(Response::Error(why));
            return;
        }
        match offloop::read_config(path.clone()) {
            Ok(rx) => {
                self.secrets.busy = true;
                let tx = self.tx.clone();
                tokio::task::spawn_local(async move {
                    let text = rx.await.unwrap_or_else(|_| {
                        Err(io::Error::other(
                            "the reading thread ended without a result",
                        ))
                    });
                    let _ = tx
                        .send(Event::ApplyRead {
                            path,
                            confirm_within,
                            text,
                            reply,
                        })
                        .await;
                });
            }
            Err(e) => {
                let why = format!("cannot start a thread to read {}: {e}", path.display());
                let _ = reply.try_send(Response::Error(why));
            }
        }
    }

    /// The text of a `medic apply`: validated here (the client hears every problem), then
    /// fed; it is the daemon's config file from now on, and with `confirm_within` the file
    /// and text before it are kept for a roll-back.
    fn apply_read(
        &mut self,
        path: PathBuf,
        confirm_within: Option<Duration>,
        text: io::Result<String>,
        reply: mpsc::Sender<Response>,
    ) {
        self.secrets.busy = false;
        let shown = path.display().to_string();
        let text = match text {
            Ok(text) => text,
            Err(e) => {
                let why = format!("cannot read {shown}: {e}; nothing changed");
                let _ = reply.try_send(Response::Error(why));
                return;
            }
        };
        let base = self.kernel.config().daemon.base_dir.clone();
        if let Err(errors) = medic_kernel::config::parse_in(&text, &shown, base.as_deref()) {
            let why = format!("{errors}\n{shown} does not validate; nothing changed");
            let _ = reply.try_send(Response::Error(why));
            return;
        }
        if let Some(why) = self.push_refusal() {
            let _ = reply.try_send(Response::Error(why));
            return;
        }
        crate::users::forget();
        let before = (
            std::mem::replace(&mut self.config_path, path),
            std::mem::replace(&mut self.config_text, text.clone()),
        );
        if confirm_within.is_some() {
            self.secrets.applied_over = Some(before);
        }
        tracing::info!("medic apply: {shown} is the config now");
        self.feed(Input::ApplyConfig {
            text,
            confirm_within,
        });
        self.config_changed();
        let _ = reply.try_send(Response::Done);
    }

    /// [`Effect::ConfigRolledBack`]: the config file and text before `medic apply` are the
    /// daemon's again.
    fn config_rolled_back(&mut self) {
        if let Some((path, text)) = self.secrets.applied_over.take() {
            tracing::warn!(
                "medic apply was not confirmed in time: {} is the config again",
                path.display()
            );
            self.config_path = path;
            self.config_text = text;
        }
        // After this round of effects: devices and logs follow the config now in force.
        self.config_changed_pending = true;
    }
}

// ----- upgrading in place (DESIGN §13, crate::reexec) ------------------------------------------

impl Runtime {
    /// `medic reexec`: refuses what adoption could not carry, then runs
    /// `BINARY daemon --check-state FD` as a child on a handover of the state now; its answer
    /// comes as [`Event::ReexecChecked`]. Nothing changes until it has accepted.
    fn start_reexec(&mut self, binary: Option<String>, reply: mpsc::Sender<Response>) {
        let refuse = |why: String| {
            let _ = reply.try_send(Response::Error(format!(
                "reexec refused: {why}; nothing changed, the daemon goes on"
            )));
        };
        if self.reexec.is_some() || self.reexec_go.is_some() {
            return refuse("another reexec is under way".into());
        }
        if let Some(why) = self.reexec_refusal() {
            return refuse(why);
        }
        if let Some(pending) = self.kernel.pending() {
            // The new binary would take the applied config as final, or roll a pushed secret
            // back at once: confirm first, or let it roll back.
            return refuse(format!("{} waits for `medic confirm`", pending.describe()));
        }
        let binary = match binary {
            Some(b) if Path::new(&b).is_absolute() => PathBuf::from(b),
            Some(b) => return refuse(format!("{b} is not an absolute path")),
            None => reexec::own_binary(),
        };
        let (bytes, _) = self.handover();
        let check = reexec::memfd(&bytes).and_then(|memfd| self.spawn_check(&binary, &memfd));
        match check {
            Ok(()) => {
                tracing::info!(
                    "medic reexec: asking {} to check the state",
                    binary.display()
                );
                self.reexec = Some(Reexec { binary, reply });
            }
            Err(e) => refuse(format!(
                "cannot run {} daemon --check-state: {e}",
                binary.display()
            )),
        }
    }

    /// Why the processes running now could not all be taken over as they are, if they could
    /// not (the kernel would stop and start them afresh: `not_adoptable` in the kernel).
    fn reexec_refusal(&self) -> Option<String> {
        if self.shutting_down {
            return Some("the daemon is shutting down".into());
        }
        if self.config_read.is_some() {
            return Some("a config reload is under way; try again when it is done".into());
        }
        for s in self.kernel.saved().services {
            let Some(p) = s.process else { continue };
            let name = &s.name;
            if !matches!(s.instance.kind, Kind::Process { .. }) {
                return Some(format!(
                    "{name}: its oneshot command is running (its exit status must be waited \
                     for); try again when it is done"
                ));
            }
            if p.stopping || !s.wanted {
                return Some(format!(
                    "{name} is being stopped; try again when it has stopped"
                ));
            }
            let notified = matches!(
                s.instance.ready,
                Readiness::NotifyFd(_) | Readiness::SdNotify
            );
            if !p.ready && notified {
                return Some(format!(
                    "{name} has not notified its readiness yet (its readiness channel would \
                     not survive); try again when it is ready"
                ));
            }
        }
        None
    }

    /// Runs `binary daemon -c CONFIG --check-state FD` with the memfd as FD, in a group of its
    /// own, its stdout and stderr on one pipe; waits for it off the loop, for at most
    /// [`reexec::CHECK_TIMEOUT`] (then SIGKILL to its group).
    fn spawn_check(&mut self, binary: &Path, memfd: &OwnedFd) -> io::Result<()> {
        use std::os::unix::process::CommandExt;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let fd = memfd.as_raw_fd();
        let mut cmd = std::process::Command::new(binary);
        cmd.arg("daemon")
            .arg("-c")
            .arg(&self.config_path)
            .arg("--check-state")
            .arg(fd.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(write.try_clone()?)
            .stderr(write)
            .process_group(0);
        // SAFETY: only fcntl, which is async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || match libc::fcntl(fd, libc::F_SETFD, 0) {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            })
        };
        let pid = cmd.spawn()?.id();
        // The parent's copies of the write end go with `cmd`: the pipe ends with the child.
        drop(cmd);
        let (status_tx, status_rx) = oneshot::channel();
        let token = self.children.add_check(pid, status_tx);
        let tx = self.tx.clone();
        let shown = binary.display().to_string();
        tokio::task::spawn_local(async move {
            let run = async move {
                let mut output = Vec::new();
                if let Ok(mut pipe) = pipe::Receiver::from_owned_fd(read) {
                    let mut buf = [0u8; 512];
                    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                        let room = CHECK_OUTPUT_BYTES.saturating_sub(output.len());
                        output.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
                let status = status_rx.await.unwrap_or(ExitStatus::Signal(9));
                (status, String::from_utf8_lossy(&output).trim().to_string())
            };
            let result = match tokio::time::timeout(reexec::CHECK_TIMEOUT, run).await {
                // A binary that exits 0 whatever it is asked (`/bin/true`) is not taken for
                // one that read the state.
                Ok((status, said)) if status.success() && said.contains(reexec::ACCEPTED) => Ok(()),
                Ok((status, said)) => {
                    let said = match said.is_empty() {
                        true => "and said nothing".to_string(),
                        false => format!("saying:\n{said}"),
                    };
                    Err(format!(
                        "{shown} daemon --check-state does not accept this daemon's state: \
                         it ended with {status} {said}"
                    ))
                }
                Err(_) => {
                    let _ = tx.send(Event::Expire { pid, token }).await;
                    Err(format!(
                        "{shown} daemon --check-state did not answer within {}s",
                        reexec::CHECK_TIMEOUT.as_secs()
                    ))
                }
            };
            let _ = tx.send(Event::ReexecChecked(result)).await;
        });
        Ok(())
    }

    /// The check has answered: refuse, or answer the client and `execve` once this round of
    /// inputs is done (in [`Runtime::serve`]).
    fn reexec_checked(&mut self, result: Result<(), String>) {
        let Some(Reexec { binary, reply }) = self.reexec.take() else {
            return;
        };
        // The loop went on during the check: what runs now must still be taken over whole.
        match result.and_then(|()| self.reexec_refusal().map_or(Ok(()), Err)) {
            Ok(()) => {
                let _ = reply.try_send(Response::Done);
                self.reexec_go = Some(binary);
            }
            Err(why) => {
                tracing::warn!("medic reexec refused: {why}");
                let _ = reply.try_send(Response::Error(format!(
                    "reexec refused: {why}\nnothing changed, the daemon goes on"
                )));
            }
        }
    }

    /// The handover now, and the output pipes it names (each checked against the inode the
    /// state records for it: a reader that has ended may have let its number be reused).
    fn handover(&mut self) -> (Vec<u8>, Vec<std::os::fd::RawFd>) {
        let state = self.state_bytes();
        let mut outputs = Vec::new();
        let mut fds = Vec::new();
        for (job, record) in &self.survival.records {
            let Some(entry) = self.children.service(*job) else {
                continue;
            };
            let mut pipes = [None, None];
            for (i, pipe) in pipes.iter_mut().enumerate() {
                if let (Some(fd), Some(inode)) = (entry.output_fds[i], record.pipes[i]) {
                    if reexec::is_pipe(fd, inode) {
                        *pipe = Some(fd);
                        fds.push(fd);
                    }
                }
            }
            outputs.push(reexec::Outputs {
                job: *job,
                fds: pipes,
            });
        }
        let handover = reexec::Handover {
            state,
            config_text: self.config_text.clone(),
            outputs,
        };
        (handover.encode(), fds)
    }

    /// Writes the state file, hands the state over in a memfd, makes it and the output pipes
    /// inheritable, and `execve`s `binary` with this process's arguments and `--take-over`.
    /// Returns only if that failed: then close-on-exec is set back and the daemon goes on.
    fn exec(&mut self, binary: &Path) {
        // Should the new binary fail after all, what it left is adopted as after a crash.
        self.save_state();
        let (bytes, pipes) = self.handover();
        let memfd = match reexec::memfd(&bytes) {
            Ok(fd) => fd,
            Err(e) => {
                return tracing::error!(
                    "reexec: cannot create the handover ({e}); the daemon goes on"
                )
            }
        };
        let mut inheritable = vec![memfd.as_raw_fd()];
        inheritable.extend(pipes);
        let cleared = inheritable
            .iter()
            .try_for_each(|&fd| reexec::set_cloexec(fd, false));
        let error = match cleared {
            Ok(()) => {
                let args = reexec::exec_args(memfd.as_raw_fd());
                tracing::info!(
                    "re-executing {} with pid {}: {} process(es) and {} output pipe(s) handed over",
                    binary.display(),
                    std::process::id(),
                    self.survival.records.len(),
                    inheritable.len() - 1
                );
                crate::logsink::flush(Duration::from_millis(200));
                reexec::exec(binary, &args)
            }
            Err(e) => e,
        };
        for fd in inheritable {
            let _ = reexec::set_cloexec(fd, true);
        }
        tracing::error!(
            "reexec: execve {}: {error}; the daemon goes on as it was",
            binary.display()
        );
        // For the client, which asks `Image` until an answer comes (crate::control::wire).
        self.image.failed_execs = self.image.failed_execs.saturating_add(1);
        self.image.last_failure = Some(format!("execve {}: {error}", binary.display()));
    }
}

/// Who follows: `medic events --follow`, or `medic logs SERVICE --follow` (and whether it asked
/// for [`Request::LogRecords`]).
enum Follower {
    Events,
    Logs(String, bool),
}

enum Woke {
    Event(Event),
    Call(Call),
    Input(Input),
    Files(io::Result<Vec<String>>),
    Deadline,
    ClockStepped(io::Result<()>),
    /// A link's facts (addresses, MTU, MAC) may have changed: see `publish_interfaces`.
    LinkFacts,
}

/// Reads a template check's stdout and stderr as they come into one [`render::CheckOutput`]
/// (its last bytes); done at the end of both streams, or [`children::OUTPUT_DRAIN`] after the
/// check was reaped (something it forked may hold the pipes open).
///
/// [`render::CheckOutput`]: crate::render::CheckOutput
fn read_check_output(
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    alive: tokio::sync::watch::Receiver<()>,
) -> tokio::task::JoinHandle<crate::render::CheckOutput> {
    tokio::task::spawn_local(async move {
        let output = std::cell::RefCell::new(crate::render::CheckOutput::default());
        let read = |fd: Option<OwnedFd>| {
            let output = &output;
            async move {
                let Some(mut pipe) = fd.and_then(|fd| pipe::Receiver::from_owned_fd(fd).ok())
                else {
                    return;
                };
                let mut buf = [0u8; 512];
                while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                    output.borrow_mut().push(&buf[..n]);
                }
            }
        };
        tokio::select! {
            _ = async { tokio::join!(read(stdout), read(stderr)) } => {}
            () = children::reaped_and_drained(alive) => {}
        }
        output.into_inner()
    })
}

/// The first line a check printed (at most 256 bytes), or `None` when it printed nothing.
async fn first_line(fd: OwnedFd) -> Option<String> {
    let mut pipe = pipe::Receiver::from_owned_fd(fd).ok()?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
        if bytes.contains(&b'\n') || bytes.len() >= 256 {
            break;
        }
    }
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line).trim().to_string();
    (!line.is_empty()).then_some(line)
}
