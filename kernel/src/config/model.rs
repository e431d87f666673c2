//! The validated config model: what a parsed and checked `medic.toml` means.
//!
//! Parsing and validation live in [`super::parse`]; everything here is already known to be
//! consistent (needs exist, no cycles, heals fit the service kind).

use core::time::Duration;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::devices::DeviceMatch;
use crate::health::Condition;

/// A whole validated config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The `[daemon]` table.
    pub daemon: DaemonConfig,
    /// Every `[service.NAME]`, in the order of the file.
    pub services: Vec<Arc<ServiceConfig>>,
}

impl Config {
    /// The service called `name`, if any.
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceConfig>> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// The `[daemon]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonConfig {
    /// `state-dir`: control socket, trace ring, saved history. `None`: the CLI's default.
    pub state_dir: Option<String>,
    /// `trace-size`: bytes of the in-memory ring of recent inputs (default 1 MiB).
    pub trace_size_bytes: u64,
    /// `history-size`: entries in each service's medical history ring (default 64, 1..=4096).
    pub history_len: u32,
    /// The directory relative paths were resolved against when the config was loaded (the
    /// config file's), kept so that a new text of the same file resolves them alike.
    pub base_dir: Option<String>,
    /// `clock-trusted-after`: the service whose readiness means the wall clock is right (an
    /// NTP client). `None`: the clock is trusted once it reads a date after medic was made.
    pub clock_trusted_after: Option<String>,
    /// `secrets-dir`: where pushed secrets are kept (DESIGN §10). `None`: `STATE_DIR/secrets`.
    pub secrets_dir: Option<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            state_dir: None,
            trace_size_bytes: 1 << 20,
            history_len: 64,
            base_dir: None,
            clock_trusted_after: None,
            secrets_dir: None,
        }
    }
}

/// One `[service.NAME]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// The service's name (the TOML key).
    pub name: String,
    /// Process, oneshot or interface, with what that kind needs.
    pub kind: Kind,
    /// `needs`: services that must be healthy before this one starts; while one is unhealthy
    /// this service is `blocked`.
    pub needs: Vec<String>,
    /// `after`: ordering only: start after these have been tried, whatever their health.
    pub after: Vec<String>,
    /// `stop-when-needs-fail`: stop this service while a need is unhealthy.
    pub stop_when_needs_fail: bool,
    /// `ready`: when a started process counts as ready (process services only).
    pub ready: Readiness,
    /// `probe`: a periodic health check once ready.
    pub probe: Option<Probe>,
    /// `memory-max`: limit on the summed RSS of the service's processes.
    pub memory_max: Option<MemoryLimit>,
    /// `memory-every`: sampling period of the memory limit (default 5 s).
    pub memory_every: Duration,
    /// `reload-on`: paths whose change reloads the service.
    pub reload_on: Vec<String>,
    /// `restart-on`: paths whose change restarts the service.
    pub restart_on: Vec<String>,
    /// `debounce`: changes to watched paths closer than this are merged (default 100 ms).
    pub debounce: Duration,
    /// `reload`: how to reload; `None` means a reload is a restart.
    pub reload: Option<Action>,
    /// `env`: extra environment variables for the processes.
    pub env: BTreeMap<String, String>,
    /// `user`: run as this user (name or numeric uid).
    pub user: Option<String>,
    /// `group`: run as this group (name or numeric gid).
    pub group: Option<String>,
    /// `cwd`: working directory.
    pub cwd: Option<String>,
    /// `start-timeout`: not ready within this ⇒ `start-timeout` (default 30 s).
    pub start_timeout: Duration,
    /// `stop-signal`: first signal of a stop (default TERM).
    pub stop_signal: Signal,
    /// `stop-timeout`: after this, SIGKILL to the process group (default 5 s).
    pub stop_timeout: Duration,
    /// `give-up-after`: strikes after which the service is `given-up` (default 10).
    pub give_up_after: u32,
    /// `forgive-after`: healthy this long without a break clears the strikes (default 10 min).
    pub forgive_after: Duration,
    /// `max-backoff`: ceiling of the wait between automatic interventions (default 5 min).
    pub max_backoff: Duration,
    /// `retry-after`: a `given-up` service is tried again after this (default 1 h);
    /// `None` for `"never"`.
    pub retry_after: Option<Duration>,
    /// `[service.NAME.on.CONDITION]`: per-condition overrides of the default verdicts.
    pub on: BTreeMap<Condition, VerdictOverride>,
    /// `every` (oneshots): run again this long after the last run succeeded.
    pub every: Option<Duration>,
    /// `restart-every` (processes): a planned restart this long after each start.
    pub restart_every: Option<Duration>,
    /// `at` (oneshots and processes): wall-clock times of a run (a planned restart for a
    /// process), in the daemon's local time, only while the clock is trusted.
    pub at: Vec<AtTime>,
    /// `jitter`: each `at` time is moved later by a fixed part of this, chosen per service and
    /// host (so a fleet of routers does not call the ISP at the same second).
    pub jitter: Duration,
    /// `catch-up` (with `at`): an `at` time missed while the clock was untrusted or the
    /// daemon was down runs once, as soon as it can.
    pub catch_up: bool,
    /// `uses`: services whose outputs this one's templates read without needing them.
    pub uses: Vec<String>,
    /// `[[service.NAME.template]]`: files rendered before each start and when the outputs
    /// they read change (DESIGN §9).
    pub templates: Vec<Template>,
}

/// What a changed rendered file does to its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OnChange {
    /// Nothing: the service reads the file itself when it needs it.
    None,
    /// The service's `reload` (a restart when it has none).
    Reload,
    /// A restart.
    Restart,
}

impl OnChange {
    /// Every choice with its name in the config.
    pub const ALL: [(&'static str, OnChange); 3] = [
        ("reload", OnChange::Reload),
        ("restart", OnChange::Restart),
        ("none", OnChange::None),
    ];
}

/// Where a template's text comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TemplateSource {
    /// `source`: a file, read at each render.
    File(String),
    /// `text`: written in the config.
    Text(String),
    /// `[service.NAME.secret.SECRET]`: the bytes of a pushed secret (DESIGN §10), copied as
    /// they are (no template language), read by the adapter from its store at the generation
    /// the kernel names. The kernel never sees the bytes.
    Secret(String),
}

/// One `[[service.NAME.template]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// `source` or `text`.
    pub source: TemplateSource,
    /// `target`: the file written (absolute).
    pub target: String,
    /// `mode`: permission bits of the target (default 0644).
    pub mode: u32,
    /// `owner`: user name or numeric uid of the target.
    pub owner: Option<String>,
    /// `group`: group name or numeric gid of the target.
    pub group: Option<String>,
    /// `check`: validates the candidate file; `{file}` is replaced by its path.
    pub check: Option<Vec<String>>,
    /// `on-change`: what a changed file does (default reload).
    pub on_change: OnChange,
    /// `debounce`: outputs that change closer than this are rendered once (default 1 s).
    pub debounce: Duration,
    /// `secrets`: the secrets the template reads with `secret("NAME")` (DESIGN §10); the
    /// service waits for them, and the target's mode defaults to 0600.
    pub secrets: Vec<String>,
}

impl Template {
    /// Every secret this template reads: the one it copies (`[service.X.secret.NAME]`), or
    /// those its text names in `secrets`.
    pub fn secrets_read(&self) -> impl Iterator<Item = &str> + '_ {
        let copied = match &self.source {
            TemplateSource::Secret(name) => Some(name.as_str()),
            _ => None,
        };
        copied
            .into_iter()
            .chain(self.secrets.iter().map(String::as_str))
    }
}

/// One `at` time: `"03:00"` every day, `"Sun 04:30"` once a week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AtTime {
    /// 0 = Monday … 6 = Sunday; `None`: every day.
    pub weekday: Option<u8>,
    /// Minutes after local midnight (0..1440).
    pub minute: u16,
}

impl AtTime {
    /// The day names, Monday first.
    pub const DAYS: [&'static str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

    /// Reads `"HH:MM"` or `"Day HH:MM"`.
    pub fn parse(text: &str) -> Option<AtTime> {
        let (weekday, time) = match text.split_once(' ') {
            Some((day, time)) => (
                Some(
                    Self::DAYS
                        .iter()
                        .position(|d| d.eq_ignore_ascii_case(day))? as u8,
                ),
                time,
            ),
            None => (None, text),
        };
        let (h, m) = time.split_once(':')?;
        let digits = |s: &str| (1..=2).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(h) || m.len() != 2 || !digits(m) {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(AtTime {
            weekday,
            minute: h * 60 + m,
        })
    }
}

impl core::fmt::Display for AtTime {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if let Some(d) = self.weekday {
            write!(f, "{} ", Self::DAYS[usize::from(d) % 7])?;
        }
        write!(f, "{:02}:{:02}", self.minute / 60, self.minute % 60)
    }
}

/// What kind of service, with what that kind needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// `run = [argv…]`: a long-running daemon that medic starts and is the parent of.
    Process {
        /// The command line, never passed through a shell.
        argv: Vec<String>,
    },
    /// `oneshot = [argv…]`: ready when the command exits 0.
    Oneshot {
        /// The command line.
        argv: Vec<String>,
        /// `stop = [argv…]`: run when the oneshot is stopped.
        stop: Option<Vec<String>>,
    },
    /// `interface = "eth0"`: a network link, watched through netlink.
    Interface {
        /// The link's name.
        ifname: String,
        /// `ready-when`: which link state counts as ready (default `carrier`).
        ready_when: LinkReady,
    },
    /// `device = { subsystem = "tty", name = "ttyUSB*", … }`: a piece of hardware, present
    /// or not (DESIGN §12).
    Device {
        /// What it matches.
        matcher: DeviceMatch,
    },
}

impl Kind {
    /// `"process"`, `"oneshot"`, `"interface"` or `"device"`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Process { .. } => "process",
            Kind::Oneshot { .. } => "oneshot",
            Kind::Interface { .. } => "interface",
            Kind::Device { .. } => "device",
        }
    }
}

/// `ready-when` of an interface service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LinkReady {
    /// The link exists.
    Present,
    /// The link is administratively up.
    Up,
    /// The link is up and has carrier (default).
    Carrier,
    /// Carrier and an IPv4 address.
    Ipv4,
    /// Carrier and a global IPv6 address.
    Ipv6Global,
}

impl LinkReady {
    /// Every value, in the order of the design.
    pub const ALL: [LinkReady; 5] = [
        LinkReady::Present,
        LinkReady::Up,
        LinkReady::Carrier,
        LinkReady::Ipv4,
        LinkReady::Ipv6Global,
    ];

    /// The name in the config: `present`, `up`, `carrier`, `ipv4`, `ipv6-global`.
    pub fn name(self) -> &'static str {
        match self {
            LinkReady::Present => "present",
            LinkReady::Up => "up",
            LinkReady::Carrier => "carrier",
            LinkReady::Ipv4 => "ipv4",
            LinkReady::Ipv6Global => "ipv6-global",
        }
    }
}

/// `ready =`: when a started process counts as ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Readiness {
    /// `"spawned"` (default): as soon as it is running.
    Spawned,
    /// `{ notify-fd = N }`: s6 style, the service writes a newline to fd N.
    NotifyFd(u32),
    /// `"sd-notify"`: `READY=1` on `NOTIFY_SOCKET`.
    SdNotify,
    /// `{ tcp = "host:port" }`, `{ unix = "/path" }`, `{ file = "/path" }`,
    /// `{ run = [argv…] }`: polled from 10 ms after the spawn, backing off to 1 s.
    Poll(Check),
}

/// A check the adapters carry out for readiness polls and probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Check {
    /// Run a command; exit 0 is success (for probes with `reports = "condition"`, the first
    /// line of stdout names the condition).
    Run(Vec<String>),
    /// A TCP connect to `host:port` succeeds.
    Tcp(String),
    /// A connect to a Unix stream socket succeeds.
    Unix(String),
    /// The file exists.
    File(String),
}

/// `[service.NAME.probe]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// What to check.
    pub check: Check,
    /// `every`: period (default 10 s).
    pub every: Duration,
    /// `timeout`: a probe taking longer has failed (default 2 s).
    pub timeout: Duration,
    /// `failures`: consecutive failures that make the service `unresponsive` (default 3).
    pub failures: u32,
    /// `reports`: how to read the result.
    pub reports: Reports,
}

/// `reports =` of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reports {
    /// `"exit"` (default): non-zero exit ⇒ failure.
    Exit,
    /// `"condition"`: the first line of stdout names the condition; `ready` means healthy.
    Condition,
}

/// `memory-max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryLimit {
    /// `"48MiB"`.
    Bytes(u64),
    /// `"90%"`: per mille of total RAM (so `"12.5%"` is 125).
    PerMille(u32),
}

impl MemoryLimit {
    /// The limit in bytes on a machine with `total_bytes` of RAM; `None` for a percentage when
    /// the total is unknown.
    pub fn bytes(self, total_bytes: Option<u64>) -> Option<u64> {
        match self {
            MemoryLimit::Bytes(b) => Some(b),
            MemoryLimit::PerMille(pm) => {
                let total = u128::from(total_bytes?);
                Some(((total * u128::from(pm)) / 1000).min(u128::from(u64::MAX)) as u64)
            }
        }
    }
}

/// `reload = …`: a signal or a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// `{ signal = "HUP" }`.
    Signal(Signal),
    /// `{ run = [argv…] }`.
    Run(Vec<String>),
}

/// A healing intervention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Heal {
    /// `"restart"`: stop, then start.
    Restart,
    /// `"reload"`: the service's `reload`, or restart if it has none.
    Reload,
    /// `"kill"`: SIGKILL to the whole process group, then start.
    Kill,
    /// `{ signal = "USR1" }`.
    Signal(Signal),
    /// `{ run = [argv…] }`: a heal command.
    Run(Vec<String>),
    /// `"link-up"`: set the interface administratively up.
    LinkUp,
}

impl Heal {
    /// The default settle time of this heal (architecture.md §2).
    pub fn default_settle(&self) -> Duration {
        match self {
            Heal::Restart | Heal::Kill => Duration::from_secs(1),
            Heal::Reload | Heal::Signal(_) | Heal::LinkUp => Duration::from_secs(5),
            Heal::Run(_) => Duration::from_secs(10),
        }
    }

    /// Short name for logs and `--json`: `restart`, `reload`, `kill`, `signal USR1`,
    /// `run modprobe`, `link-up`.
    pub fn describe(&self) -> String {
        match self {
            Heal::Restart => "restart".into(),
            Heal::Reload => "reload".into(),
            Heal::Kill => "kill".into(),
            Heal::Signal(s) => format!("signal {}", s.name()),
            Heal::Run(argv) => format!("run {}", argv.first().map(String::as_str).unwrap_or("")),
            Heal::LinkUp => "link-up".into(),
        }
    }
}

/// `[service.NAME.on.CONDITION]`: what the config says about one condition. Unset fields keep
/// the default verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictOverride {
    /// `healthy = bool`.
    pub healthy: Option<bool>,
    /// `heal = …` (a list is an escalation ladder; an empty list means no heal).
    pub heal: Option<Vec<Heal>>,
    /// `settle = "…"`: overrides the settle time of every rung.
    pub settle: Option<Duration>,
}

/// Signals the config can name. Kept as names so the kernel stays free of platform numbers;
/// the adapters map them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Signal {
    /// SIGHUP
    Hup,
    /// SIGINT
    Int,
    /// SIGQUIT
    Quit,
    /// SIGKILL
    Kill,
    /// SIGUSR1
    Usr1,
    /// SIGUSR2
    Usr2,
    /// SIGALRM
    Alrm,
    /// SIGTERM
    Term,
    /// SIGCONT
    Cont,
    /// SIGSTOP
    Stop,
    /// SIGTSTP
    Tstp,
    /// SIGWINCH
    Winch,
    /// SIGPWR
    Pwr,
}

impl Signal {
    /// Every signal, for parsing and error messages.
    pub const ALL: [Signal; 13] = [
        Signal::Hup,
        Signal::Int,
        Signal::Quit,
        Signal::Kill,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Alrm,
        Signal::Term,
        Signal::Cont,
        Signal::Stop,
        Signal::Tstp,
        Signal::Winch,
        Signal::Pwr,
    ];

    /// The name without `SIG`: `"HUP"`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "HUP",
            Signal::Int => "INT",
            Signal::Quit => "QUIT",
            Signal::Kill => "KILL",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
            Signal::Alrm => "ALRM",
            Signal::Term => "TERM",
            Signal::Cont => "CONT",
            Signal::Stop => "STOP",
            Signal::Tstp => "TSTP",
            Signal::Winch => "WINCH",
            Signal::Pwr => "PWR",
        }
    }

    /// Parses `"HUP"`, `"SIGHUP"` or `"hup"`.
    pub fn from_name(s: &str) -> Option<Signal> {
        let upper = s.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL.into_iter().find(|sig| sig.name() == bare)
    }
}

/// The floor and ceiling of every value (architecture.md §3): a value outside is a config error.
pub mod limits {
    use core::time::Duration;

    /// The longest duration anywhere in a config: 100 years (humantime's `"100y"`, a year being
    /// 365.25 days). Longer ones overflow clocks and sums, and mean "never" anyway.
    pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);
    /// The largest size: 1 EiB.
    pub const MAX_SIZE: u64 = 1 << 60;
    /// Templates of one service.
    pub const MAX_TEMPLATES: usize = 16;
    /// Bytes of one template's `text`.
    pub const MAX_TEMPLATE_TEXT: usize = 64 * 1024;
    /// The shortest `memory-every` and probe `every`: a shorter period only burns the CPU.
    pub const MIN_POLL_PERIOD: Duration = Duration::from_millis(100);
    /// The shortest `every` and `restart-every`: a timed job is a chore, not a poll.
    pub const MIN_TIMER_PERIOD: Duration = Duration::from_secs(1);
}

/// Defaults of architecture.md §2–§3, in one place.
pub mod defaults {
    use core::time::Duration;

    /// `start-timeout`.
    pub const START_TIMEOUT: Duration = Duration::from_secs(30);
    /// `stop-timeout`.
    pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
    /// `give-up-after`.
    pub const GIVE_UP_AFTER: u32 = 10;
    /// `forgive-after`.
    pub const FORGIVE_AFTER: Duration = Duration::from_secs(600);
    /// `max-backoff`.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
    /// `retry-after`.
    pub const RETRY_AFTER: Duration = Duration::from_secs(3600);
    /// `memory-every`.
    pub const MEMORY_EVERY: Duration = Duration::from_secs(5);
    /// `debounce`.
    pub const DEBOUNCE: Duration = Duration::from_millis(100);
    /// A template's `debounce`: DHCP clients publish in bursts.
    pub const RENDER_DEBOUNCE: Duration = Duration::from_secs(1);
    /// A template's `mode`.
    pub const TEMPLATE_MODE: u32 = 0o644;
    /// A secret's copy's `mode`: only its owner reads it.
    pub const SECRET_MODE: u32 = 0o600;
    /// probe `every`.
    pub const PROBE_EVERY: Duration = Duration::from_secs(10);
    /// probe `timeout`.
    pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
    /// probe `failures`.
    pub const PROBE_FAILURES: u32 = 3;
    /// First readiness poll after a spawn.
    pub const READY_POLL_FIRST: Duration = Duration::from_millis(10);
    /// Readiness polls back off to this period.
    pub const READY_POLL_MAX: Duration = Duration::from_secs(1);
    /// The first wait before starting again a process the daemon could not spawn for want
    /// of resources (EMFILE, ENOMEM…); doubling up to [`SPAWN_RETRY_MAX`].
    pub const SPAWN_RETRY_FIRST: Duration = Duration::from_millis(100);
    /// The longest such wait.
    pub const SPAWN_RETRY_MAX: Duration = Duration::from_secs(10);
    /// A heal or reload command still running after this is killed, with its group.
    pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
    /// A process still alive this long after SIGKILL to its group (stuck in the kernel, say
    /// on a dead NFS mount) is abandoned: what waited for it to stop goes on.
    pub const KILL_GRACE: Duration = Duration::from_secs(5);
}

impl ServiceConfig {
    /// A service of `kind` named `name` with every other key at its default. Handy for tests
    /// and the simulator's random graphs.
    pub fn new(name: impl Into<String>, kind: Kind) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            kind,
            needs: Vec::new(),
            after: Vec::new(),
            stop_when_needs_fail: false,
            ready: Readiness::Spawned,
            probe: None,
            memory_max: None,
            memory_every: defaults::MEMORY_EVERY,
            reload_on: Vec::new(),
            restart_on: Vec::new(),
            debounce: defaults::DEBOUNCE,
            reload: None,
            env: BTreeMap::new(),
            user: None,
            group: None,
            cwd: None,
            start_timeout: defaults::START_TIMEOUT,
            stop_signal: Signal::Term,
            stop_timeout: defaults::STOP_TIMEOUT,
            give_up_after: defaults::GIVE_UP_AFTER,
            forgive_after: defaults::FORGIVE_AFTER,
            max_backoff: defaults::MAX_BACKOFF,
            retry_after: Some(defaults::RETRY_AFTER),
            on: BTreeMap::new(),
            every: None,
            restart_every: None,
            at: Vec::new(),
            jitter: Duration::ZERO,
            catch_up: false,
            uses: Vec::new(),
            templates: Vec::new(),
        }
    }

    /// How long outputs must be still before this service renders again: the shortest
    /// `debounce` of its templates.
    pub fn render_debounce(&self) -> Duration {
        self.templates
            .iter()
            .map(|t| t.debounce)
            .min()
            .unwrap_or(defaults::RENDER_DEBOUNCE)
    }
}
