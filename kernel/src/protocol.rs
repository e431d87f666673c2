//! The two enums between the kernel and the world: [`Input`] in, [`Effect`] out.
//!
//! Both are postcard-encoded in traces, which encode enum variants by index: variants are only
//! ever added at the end, and any change to the encoding bumps [`crate::trace::FORMAT_VERSION`].

use core::time::Duration;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Check, Reports, ServiceConfig, Signal};
use crate::history::Record;

/// A service's slot in the kernel. A config replacement keeps the id of every service whose
/// name survives. The slot of a removed service is freed once it has stopped, and a service
/// added later may take it: the slot table does not grow with renames. An input about a job
/// the slot's previous service asked for is recognised (jobs are numbered in order, and a slot
/// remembers its first) and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceId(pub u32);

impl ServiceId {
    /// The index into the kernel's slot table.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One piece of work the kernel asked for: a spawned process, a readiness poll, a probe, a
/// memory sample or a command. Every input about it names the job, so a late answer about a
/// job the kernel has moved on from is recognised and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
    /// Not known: the process was adopted after a crash of the daemon (DESIGN §13), so it is
    /// not the daemon's child, and only a parent can read an exit status.
    Unknown,
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl core::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
            ExitStatus::Unknown => f.write_str("exit status unknown (not the daemon's child)"),
        }
    }
}

/// The result of a [`Check`] (a readiness poll or a probe).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckResult {
    /// The check succeeded.
    Ok,
    /// The check failed, with a short reason for the history.
    Failed(String),
    /// The check took longer than its timeout.
    TimedOut,
    /// A `reports = "condition"` probe printed this condition name (`ready` means healthy).
    Condition(String),
}

/// What the kernel needs to know of a network link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// Administratively up (`IFF_UP`).
    pub admin_up: bool,
    /// Has carrier (`IFF_LOWER_UP` / operstate up).
    pub carrier: bool,
    /// Has at least one IPv4 address.
    pub ipv4: bool,
    /// Has at least one global-scope IPv6 address.
    pub ipv6_global: bool,
}

/// A command from the operator (`medic start|stop|restart|reload`, SIGTERM).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// Want the service up; clears strikes and `given-up`.
    Start(String),
    /// Stop the service (dependents that must stop with it first).
    Stop(String),
    /// Stop then start at once, whatever the backoff; clears strikes and `given-up`.
    Restart(String),
    /// Reload (or restart when the service has no `reload`).
    Reload(String),
    /// Stop everything in reverse dependency order, then emit [`Effect::ShutdownComplete`].
    Shutdown,
}

/// Everything that can happen to the kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// Time passed; the kernel fires whatever is due. A tick before
    /// [`crate::Kernel::next_deadline`] is a harmless no-op.
    Tick,
    /// The process of `job` is running with this pid (its process group id too).
    Spawned {
        /// The service.
        service: ServiceId,
        /// The job of the [`Effect::Spawn`].
        job: JobId,
        /// The process id (also its process group id).
        pid: u32,
    },
    /// The process of `job` could not be started.
    SpawnFailed {
        /// The service.
        service: ServiceId,
        /// The job of the [`Effect::Spawn`].
        job: JobId,
        /// Why, for the history (`No such file or directory`).
        error: String,
    },
    /// The process of `job` ended.
    Exited {
        /// The service.
        service: ServiceId,
        /// The job of the [`Effect::Spawn`].
        job: JobId,
        /// How it ended.
        status: ExitStatus,
    },
    /// The process of `job` said it is ready (notify-fd or sd_notify `READY=1`).
    ReadyNotified {
        /// The service.
        service: ServiceId,
        /// The job of the [`Effect::Spawn`].
        job: JobId,
    },
    /// A readiness poll or probe finished.
    CheckDone {
        /// The service.
        service: ServiceId,
        /// The job of the [`Effect::Check`].
        job: JobId,
        /// What it found.
        result: CheckResult,
    },
    /// The summed RSS of the process group of `job`.
    MemorySampled {
        /// The service.
        service: ServiceId,
        /// The process job that was sampled.
        job: JobId,
        /// Summed resident set size in bytes; `None` when it could not be read (no `/proc`).
        rss_bytes: Option<u64>,
        /// Total RAM of the machine in bytes (for `memory-max = "90%"`); `None` when unknown.
        total_bytes: Option<u64>,
    },
    /// A heal, reload or stop command finished.
    CommandDone {
        /// The service.
        service: ServiceId,
        /// The job of the [`Effect::RunCommand`].
        job: JobId,
        /// How it ended.
        status: ExitStatus,
    },
    /// A watched path changed (written, created, renamed over, removed).
    FileChanged {
        /// The path exactly as the config names it.
        path: String,
    },
    /// A link appeared, changed or (with `None`) disappeared.
    LinkChanged {
        /// The link's name.
        ifname: String,
        /// Its state, `None` when no such link exists.
        link: Option<LinkState>,
    },
    /// An operator command.
    Operator(Operator),
    /// A new config file text (SIGHUP). Only services whose definition changed are touched; a
    /// text that does not validate is refused with a [`Effect::Notice`] and changes nothing.
    ReplaceConfig {
        /// The whole TOML text.
        text: String,
    },
    /// The process of `job` could not be started because the daemon ran short of something
    /// (descriptors, memory, processes: EMFILE, ENFILE, ENOMEM, EAGAIN). Not the service's
    /// fault: no strike; the start is tried again after a short wait.
    SpawnDeferred {
        /// The service.
        service: ServiceId,
        /// The job of the [`Effect::Spawn`].
        job: JobId,
        /// Why, for the history (`Too many open files`).
        error: String,
    },
    /// The wall clock, at start and whenever it is stepped (settimeofday, NTP's first sync):
    /// what `at` times are measured against. The kernel never reads a clock itself.
    WallClock(WallClock),
    /// What a previous daemon saved of its kernel, with each recorded process marked as
    /// survived or not (DESIGN §13; see [`crate::Saved`]). Honoured once, before the first
    /// tick: surviving processes are adopted ([`Effect::Adopt`]), history and strikes go on.
    Resume(Box<crate::adopt::Saved>),
    /// The whole set of present devices that a device service could match (DESIGN §12): after
    /// coldplug, after each uevent that changes it, and after a re-walk of sysfs when events
    /// were lost. A device missing from the set is gone.
    Devices(Vec<crate::devices::Device>),
    /// A service's outputs, the whole map (`medic output set`, a DHCP hook): it replaces the
    /// previous one. Refused with a [`Effect::Notice`] when the service is unknown or the map
    /// breaks a bound ([`crate::outputs::validate`]).
    SetOutputs {
        /// The publishing service's name.
        service: String,
        /// Its outputs.
        outputs: crate::outputs::Outputs,
    },
    /// A [`Effect::Render`] finished.
    RenderDone {
        /// The service.
        service: ServiceId,
        /// The job of the [`Effect::Render`].
        job: JobId,
        /// What it did.
        result: RenderResult,
    },
    /// A secret was stored (`medic secret set`, DESIGN §10): `name` is at `generation` now.
    /// Only the name and the number: the bytes stay in the adapter's store. With
    /// `confirm_within`, the previous generation is kept and comes back unless
    /// [`Input::Confirm`] arrives within that time. Refused with a [`Effect::Notice`] while
    /// another change waits for its confirmation.
    SecretSet {
        /// The secret's name (`[a-z0-9_-]`, at most 64 bytes).
        name: String,
        /// Its new generation (1 for the first value; one more for each push).
        generation: u64,
        /// Roll back unless confirmed within this.
        confirm_within: Option<Duration>,
    },
    /// A secret was removed (`medic secret rm`): services that copy it do not start until it
    /// is pushed again; running ones go on with the copy they have.
    SecretRemoved {
        /// The secret's name.
        name: String,
    },
    /// A new config text to apply (`medic apply`): as [`Input::ReplaceConfig`], and with
    /// `confirm_within` the config in force before is restored unless [`Input::Confirm`]
    /// arrives within that time.
    ApplyConfig {
        /// The whole TOML text.
        text: String,
        /// Roll back unless confirmed within this.
        confirm_within: Option<Duration>,
    },
    /// `medic confirm`: the change waiting for its confirmation is final.
    Confirm,
}

/// What a render did (DESIGN §9).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderResult {
    /// These targets were replaced (their bytes changed); the others were left as they were.
    Changed(Vec<String>),
    /// Every target already held exactly the rendered bytes: nothing was written.
    Unchanged,
    /// A template failed (a variable missing, a filter out of range, a `check` that exited
    /// non-zero): no target was replaced. The words are for the history.
    Failed(String),
}

/// The wall-clock time as the adapter read it in the step's `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallClock {
    /// Milliseconds since 1970-01-01 UTC (before 1970 on a clock gone wrong: negative).
    pub unix_ms: i64,
    /// The local time's offset from UTC, in seconds (`TZ`), for `at` times.
    pub utc_offset_s: i32,
    /// A number fixed for this host (from its machine id or name), for `jitter`.
    pub host: u64,
}

impl Input {
    /// The service and job an input answers, if it answers one.
    pub fn job(&self) -> Option<(ServiceId, JobId)> {
        match *self {
            Input::Spawned { service, job, .. }
            | Input::SpawnFailed { service, job, .. }
            | Input::Exited { service, job, .. }
            | Input::ReadyNotified { service, job }
            | Input::CheckDone { service, job, .. }
            | Input::MemorySampled { service, job, .. }
            | Input::CommandDone { service, job, .. }
            | Input::SpawnDeferred { service, job, .. }
            | Input::RenderDone { service, job, .. } => Some((service, job)),
            Input::Tick
            | Input::FileChanged { .. }
            | Input::LinkChanged { .. }
            | Input::Operator(_)
            | Input::ReplaceConfig { .. }
            | Input::WallClock(_)
            | Input::Resume(_)
            | Input::Devices(_)
            | Input::SetOutputs { .. }
            | Input::SecretSet { .. }
            | Input::SecretRemoved { .. }
            | Input::ApplyConfig { .. }
            | Input::Confirm => None,
        }
    }
}

/// How a service runs its commands (heal, reload and stop commands, `run` checks): what the
/// adapter needs besides the command line, so it never looks the service up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// The service's name (`MEDIC_SERVICE`).
    pub service: String,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// User name or numeric uid.
    pub user: Option<String>,
    /// Group name or numeric gid.
    pub group: Option<String>,
}

impl Exec {
    /// The context `config`'s commands run in.
    pub fn of(config: &ServiceConfig) -> Exec {
        Exec {
            service: config.name.clone(),
            env: config.env.clone(),
            cwd: config.cwd.clone(),
            user: config.user.clone(),
            group: config.group.clone(),
        }
    }
}

/// Who a signal is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalTarget {
    /// The service's main process only (`s6-svc -h`, systemd's `$MAINPID`): a reload or a
    /// `{ signal = … }` heal.
    Main,
    /// Every process of its group: the stop signal.
    Group,
}

/// Why a [`Check`] is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckPurpose {
    /// A readiness poll of a starting process.
    Ready,
    /// A periodic probe of a ready process.
    Probe,
}

/// Why a command is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandPurpose {
    /// A `{ run = [...] }` heal.
    Heal,
    /// A `reload = { run = [...] }`.
    Reload,
    /// A oneshot's `stop = [...]`.
    Stop,
}

/// Everything the kernel asks the world to do. The caller carries out the effects of one step
/// in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// Start the service's process (`run`, or the oneshot's command) in a new process group,
    /// with the service's env, cwd, user, group and readiness channel. Answer with
    /// [`Input::Spawned`] or [`Input::SpawnFailed`], later [`Input::Exited`].
    Spawn {
        /// The service.
        service: ServiceId,
        /// Names the process in later inputs and effects.
        job: JobId,
        /// The definition to start it from.
        config: Arc<ServiceConfig>,
    },
    /// Send `signal` to the process of `job`, or to its whole process group.
    Signal {
        /// The service.
        service: ServiceId,
        /// The process job.
        job: JobId,
        /// Which signal.
        signal: Signal,
        /// The main process (reload, a `{ signal = … }` heal) or its whole group (stop).
        to: SignalTarget,
    },
    /// SIGKILL to the whole process group of `job`.
    Kill {
        /// The service.
        service: ServiceId,
        /// The process job.
        job: JobId,
    },
    /// Carry out `check` within `timeout`; answer with [`Input::CheckDone`].
    Check {
        /// The service.
        service: ServiceId,
        /// Names this check.
        job: JobId,
        /// What to check.
        check: Check,
        /// Give up (and answer [`CheckResult::TimedOut`]) after this.
        timeout: Duration,
        /// A readiness poll or a probe.
        purpose: CheckPurpose,
        /// How to read a `run` check: its exit status, or the condition its first line names.
        reports: Reports,
        /// The service's context, for a `run` check.
        exec: Option<Exec>,
    },
    /// Sum the RSS of the process group of `job`; answer with [`Input::MemorySampled`].
    SampleMemory {
        /// The service.
        service: ServiceId,
        /// The process job.
        job: JobId,
    },
    /// Run a command (never through a shell) in the service's context; kill it (with its
    /// group) if it still runs after `timeout`; answer with [`Input::CommandDone`].
    RunCommand {
        /// The service.
        service: ServiceId,
        /// Names this command.
        job: JobId,
        /// The command line.
        argv: Vec<String>,
        /// A heal, a reload or a oneshot's stop.
        purpose: CommandPurpose,
        /// The service's env, cwd, user and group.
        exec: Exec,
        /// How long it may run.
        timeout: Duration,
    },
    /// Set the link administratively up.
    LinkUp {
        /// The interface service.
        service: ServiceId,
        /// The link's name.
        ifname: String,
    },
    /// Start watching a path (its parent directory, so rename-over and late creation are seen).
    Watch {
        /// The path exactly as the config names it.
        path: String,
    },
    /// Stop watching a path.
    Unwatch {
        /// The path.
        path: String,
    },
    /// A transition, intervention or outcome, for the log and `medic events`. The same record
    /// is in the service's medical history.
    Event {
        /// The service.
        service: ServiceId,
        /// What happened.
        record: Record,
    },
    /// A message about the kernel as a whole (a refused config, an unknown service name).
    Notice {
        /// The message.
        message: String,
    },
    /// After [`Operator::Shutdown`], everything is stopped: the daemon may exit.
    ShutdownComplete,
    /// The process of `job` has ended (or was abandoned): SIGKILL whatever is left of its
    /// process group, and whatever it forked that left the group, so nothing outlives it.
    Sweep {
        /// The service.
        service: ServiceId,
        /// The process job.
        job: JobId,
    },
    /// After [`Input::Resume`]: watch the process `pid`, left running by a previous daemon,
    /// as the process of `job` (its end comes as [`Input::Exited`] with
    /// [`ExitStatus::Unknown`]). `was` is the job it ran as, which its instance tag names.
    /// Every process of the previous daemon that no `Adopt` names is to be stopped before
    /// the first tick.
    Adopt {
        /// The service.
        service: ServiceId,
        /// Names the process from now on.
        job: JobId,
        /// Its pid (also its process group id).
        pid: u32,
        /// The job it ran as under the previous daemon.
        was: JobId,
    },
    /// Render the service's templates with `outputs` as variables, each to a candidate file
    /// beside its target; run its `check`; replace the targets whose bytes changed (atomically,
    /// all checks first). Never on the caller's loop: a render reads files and runs commands.
    /// Answer with [`Input::RenderDone`].
    Render {
        /// The service.
        service: ServiceId,
        /// Names this render.
        job: JobId,
        /// Its templates.
        templates: Vec<crate::config::Template>,
        /// The outputs of the services it reads (`needs` and `uses`), by service name; a
        /// service that publishes nothing is absent.
        outputs: BTreeMap<String, crate::outputs::Outputs>,
        /// The generation of each secret its templates copy (DESIGN §10): the adapter reads
        /// those bytes from its store. Never the bytes themselves.
        secrets: BTreeMap<String, u64>,
    },
    /// The store may forget this generation of a secret: superseded by a confirmed one, or
    /// an unconfirmed one rolled back. Nothing reads it any more.
    DropSecret {
        /// The secret's name.
        name: String,
        /// The generation to forget.
        generation: u64,
    },
    /// A config applied with `confirm_within` was not confirmed: the kernel is back on the
    /// config it had before (the adapter, which kept that config's file and text, makes them
    /// its own again: SIGHUP reads that file, a reexec hands over that text).
    ConfigRolledBack,
}
