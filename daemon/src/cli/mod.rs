//! The command line (architecture.md §4): argument parsing, exit statuses, and one module per group
//! of commands.
//!
//! Exit statuses: 0 done, 1 the operation failed, 2 bad usage or bad config, 3 no daemon
//! answering.

pub(crate) mod check;
mod client;
mod clock;
mod format;
mod hook;
mod output;
mod replay;
mod secret;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::daemon;

/// Exit status: the operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: bad usage or bad config (clap uses 2 for usage errors too).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: no daemon answering.
pub const EXIT_NO_DAEMON: u8 = 3;

/// `medic`, parsed.
#[derive(Debug, Parser)]
#[command(
    name = "medic",
    version,
    about = "medic supervises the services of a small Linux device: daemons, one-shot set-up \
             commands and network links.",
    long_about = "medic supervises the services of a small Linux device: daemons, one-shot \
                  set-up commands and network links. `medic daemon` runs the supervisor; the \
                  other commands talk to it over the control socket in its state directory, \
                  except `check` and `replay`, which work alone.\n\n\
                  Exit status: 0 done, 1 the operation failed, 2 bad usage or bad config, \
                  3 no daemon answering."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the config file is.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The config file [default: $MEDIC_CONFIG, else /etc/medic.toml].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Which daemon to talk to.
#[derive(Debug, Args)]
pub struct Target {
    /// The daemon's state directory, which holds control.sock [default: $MEDIC_STATE_DIR, else
    /// the config's `[daemon] state-dir`, else /run/medic for root and $XDG_RUNTIME_DIR/medic
    /// for other users].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The daemon's config file, to find its state directory through `[daemon] state-dir`
    /// [default: $MEDIC_CONFIG, else /etc/medic.toml].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How to show times.
#[derive(Debug, Args)]
pub struct Times {
    /// Show times as the daemon counts them, seconds since it started (`613.247s`), instead
    /// of local wall-clock time.
    #[arg(long)]
    pub relative: bool,
}

/// Service names for the operator commands.
#[derive(Debug, Args)]
pub struct Services {
    /// The services, by their names in the config.
    #[arg(value_name = "SERVICE", required = true)]
    pub services: Vec<String>,
    /// Return only once every SERVICE is ready (`start`, `restart`, `reload`) or stopped
    /// (`stop`); exit 1 if that takes longer than TIMEOUT (default 30s).
    #[arg(
        long,
        value_name = "TIMEOUT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "30s",
        value_parser = parse_duration
    )]
    pub wait: Option<std::time::Duration>,
    #[command(flatten)]
    pub target: Target,
}

/// `--wait=TIMEOUT`: a humantime duration (`30s`, `2m`).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (for example 30s or 2m)"))
}

/// The versions of `status --json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum JsonShape {
    /// One array, an object per service.
    V1,
    /// `{"daemon": {…}, "services": [… as v1 …]}`.
    V2,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor in the foreground until SIGTERM or SIGINT.
    #[command(
        long_about = "Run the supervisor in the foreground until SIGTERM or SIGINT.\n\n\
        Reads and validates the config first: with any problem it prints every one as \
        file:line:col and exits 2 without starting anything. Then it starts every service as \
        soon as its needs are healthy, watches them, heals them as the config says, and \
        answers the other medic commands on control.sock in the state directory. SIGHUP \
        re-reads the config and applies only the difference. SIGTERM or SIGINT stops every \
        service, dependents first, then exits. Logs go to stderr (MEDIC_LOG=debug|info|warn|\
        error, default info). As PID 1 it reaps orphans; otherwise it makes itself a child \
        subreaper.\n\n\
        The state directory is --state-dir, else $MEDIC_STATE_DIR, else the config's \
        `[daemon] state-dir`, else /run/medic for root and $XDG_RUNTIME_DIR/medic (or \
        /tmp/medic-UID) for other users. A missing one is created with mode 0700; an existing \
        one must be owned by the daemon's user and not writable by group or others (its mode is \
        never changed). The daemon locks it: a second daemon on it exits 1, naming the first.\n\n\
        The log never holds the daemon up: a stderr that is slow, stalled or closed loses log \
        lines (counted), never supervision; each service's output is copied into it at most 20 \
        lines a second after a burst of 200."
    )]
    Daemon {
        #[command(flatten)]
        config: ConfigArg,
        /// The state directory for control.sock [default: see above].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Only check that this binary accepts the state handed over in FD (a descriptor
        /// number) or PATH, as `medic reexec` does before it re-executes: exit 0 and say
        /// `state accepted`, or exit 1 and say why. Starts nothing.
        #[arg(long, value_name = "FD|PATH")]
        check_state: Option<String>,
        /// Take over from the daemon this one re-executed over (set by `medic reexec`).
        #[arg(long, value_name = "FD", hide = true)]
        take_over: Option<String>,
    },
    /// Validate a config and print its services in the order they start.
    #[command(
        long_about = "Validate a config and print its services in the order they start.\n\n\
        Valid: prints one line per service (name, kind, needs, after, what it runs or watches), \
        needs and after before the services that name them, and exits 0. Invalid: prints every \
        problem as file:line:col: message on stderr and exits 2. Starts nothing and needs no \
        daemon.\n\n\
        With --dot, a valid config is printed as a Graphviz graph instead: one node per service \
        (its name and kind), a solid edge from each service to each of its needs, a dashed one \
        to each service it starts after (`medic check --dot | dot -Tsvg > graph.svg`)."
    )]
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the service graph for Graphviz (`dot`) instead of the start order.
        #[arg(long)]
        dot: bool,
    },
    /// Print one line per service (condition, health, why, what next), or all about one.
    #[command(
        long_about = "Print one line per service: condition, health, pid, uptime, memory, \
        strikes, what the daemon will do next and why; or, with one SERVICE, all about it.\n\n\
        Without SERVICE, a line about the daemon (version, pid, uptime, start time, config), \
        then every service in config order; with several, those. Health is coloured (green \
        healthy, yellow on its way, red unhealthy) only when stdout is a terminal and NO_COLOR \
        is unset. UPTIME is how long the process has run, or how long a service without a \
        process has been ready. MEMORY is the last sample against memory-max (`31/32 MiB`), \
        STRIKES the strikes of give-up-after. NEXT is the planned action and when (`restart in \
        2m40s`, `retry in 58m00s`, `nothing until medic restart`), WHY the reason (the last \
        note of the history). On a terminal (or with $COLUMNS) the table is fitted to the width by cutting \
        WHY, then NEXT.\n\n\
        With one SERVICE: its condition and since when, why, what next, pid, last exit, \
        memory, strikes, what it needs and what needs it (with their health), and its last 10 \
        lines of output.\n\n\
        With --json, prints one JSON array, an object per service: name, kind, condition, \
        healthy, pid (null when nothing runs), strikes, since_ms (milliseconds since the daemon \
        started, when the condition began), needs, link (for interfaces: state and addresses, \
        else null), uptime_ms (or null), since (RFC 3339), why, next, next_at_ms, next_at, \
        memory_bytes, memory_max_bytes, give_up_after, dependents, last_exit, last_exit_at_ms, \
        last_exit_at. --json=v2 prints {\"daemon\": {pid, version, config_path, state_dir, \
        now_ms, now_unix_ms, started}, \"services\": [the same objects]}."
    )]
    Status {
        /// Only these services (one: all about it).
        #[arg(value_name = "SERVICE")]
        services: Vec<String>,
        /// Print JSON instead of a table: `--json` one array, `--json=v2` an object with the
        /// daemon too.
        #[arg(
            long,
            value_name = "SHAPE",
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "v1",
            value_enum
        )]
        json: Option<JsonShape>,
        #[command(flatten)]
        times: Times,
        #[command(flatten)]
        target: Target,
    },
    /// Want each SERVICE up: start it now, whatever its backoff, and clear its strikes.
    #[command(
        long_about = "Want each SERVICE up: start it now, whatever its backoff, and \
        clear its strikes and given-up.\n\n\
        A service whose needs are not healthy waits for them. Returns once the daemon has taken \
        the command; with --wait, once the service is ready (exit 1 after the timeout, saying \
        why it is not). An unknown name fails the whole command and nothing is done."
    )]
    Start(Services),
    /// Stop each SERVICE, and what needs it first, and keep it stopped.
    #[command(
        long_about = "Stop each SERVICE, and what needs it first, and keep it stopped \
        until `medic start` or `medic restart`.\n\n\
        A process gets its stop-signal (default TERM) on its process group, then SIGKILL on the \
        group after stop-timeout; a oneshot runs its `stop` command. Returns once the daemon \
        has taken the command; with --wait, once everything named is stopped. An unknown name fails the whole command and nothing is done."
    )]
    Stop(Services),
    /// Stop each SERVICE, then start it again at once; clear its strikes.
    #[command(
        long_about = "Stop each SERVICE, then start it again at once, whatever its \
        backoff; clear its strikes and given-up.\n\n\
        Returns once the daemon has taken the command; with --wait, once a new run is ready. \
        An unknown name fails the whole command \
        and nothing is done."
    )]
    Restart(Services),
    /// Reload each SERVICE as its `reload` says, or restart it when it has none.
    #[command(
        long_about = "Reload each SERVICE as its `reload` says (a signal or a command), \
        or restart it when it has none.\n\n\
        Returns once the daemon has taken the command; with --wait, once the service is \
        ready. An unknown name fails the whole command \
        and nothing is done."
    )]
    Reload(Services),
    /// Print the medical history of SERVICE, oldest first.
    #[command(
        long_about = "Print the medical history of SERVICE, oldest first: when (local time, \
        or seconds since the daemon started with --relative), its condition, the heal tried, \
        its outcome, and why.\n\n\
        The daemon keeps the last `history-size` records (default 64) per service. With \
        --json, prints one JSON array of objects: at_ms, condition, heal (null when nothing \
        was done), outcome (resolved, unresolved, pending or null), note, outcome_at_ms, at \
        and outcome_at (RFC 3339)."
    )]
    History {
        /// The service.
        #[arg(value_name = "SERVICE")]
        service: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        times: Times,
        #[command(flatten)]
        target: Target,
    },
    /// Print the last lines SERVICE wrote to stdout and stderr.
    #[command(
        long_about = "Print the last lines SERVICE wrote to stdout and stderr, as the \
        daemon captured them, oldest first.\n\n\
        Each line starts with when the daemon read it and its stream (`out` or `err`); \
        `-- started TIME, pid N --` marks each new run of the process. An interface has no \
        output: asking for its logs fails and says so.\n\n\
        Control characters and escape sequences the service wrote are shown as escapes \
        (`\\x1b[31m`), so they cannot drive the terminal; --json prints each line raw, as a \
        JSON string. With --follow, keeps printing new lines as they come until interrupted \
        or the daemon stops; then the last line says so and the exit status is 0."
    )]
    Logs {
        /// The service.
        #[arg(value_name = "SERVICE")]
        service: String,
        /// How many of the most recent lines.
        #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 20)]
        lines: u32,
        /// Keep printing new lines as they come.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Print each line as a JSON string, raw (control characters included).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        times: Times,
        #[command(flatten)]
        target: Target,
    },
    /// Print recent transitions and interventions of every service.
    #[command(
        long_about = "Print recent transitions and interventions of every service, \
        oldest first, one per line: when, service, condition, heal, outcome, why.\n\n\
        With --follow, keeps printing them as they happen until interrupted or the daemon \
        stops: its shutdown is shown, then a last line says the daemon is gone (on stderr with \
        --json) and the exit status is 0. The outcome of an intervention, decided at the end \
        of its settle time, is printed then, at that time, so lines stay in time order. With \
        --json, prints one JSON object per line: service, at_ms, condition, heal, outcome, \
        note, outcome_at_ms, at and outcome_at (RFC 3339)."
    )]
    Events {
        /// Keep printing events as they happen.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        times: Times,
        #[command(flatten)]
        target: Target,
    },
    /// Ask the daemon to re-read its config file and apply only the difference (as SIGHUP).
    #[command(
        name = "reload-config",
        long_about = "Ask the daemon to re-read its config file and apply only the \
        difference, as SIGHUP does, without looking up its pid.\n\n\
        The daemon validates the file first: a config with problems is refused, every problem \
        is printed as file:line:col: message, nothing changes, and the command exits 1. \
        Services whose definition changed are restarted; the others are left alone."
    )]
    ReloadConfig {
        #[command(flatten)]
        target: Target,
    },
    /// A DHCP client's script: publish what it got as the service's outputs, normalised.
    #[command(
        long_about = "A DHCP client's script: publish what it got as the service's outputs, \
        normalised, whichever client it was.\n\n\
        Run by the client with its own arguments and environment (dhcpcd -c, udhcpc -s, \
        odhcp6c -s each run a script file: a two-line wrapper `exec medic hook udhcpc \
        --service wan \"$@\"`). The map: state (bound, unbound, or notice for events that \
        change nothing, which are not published), reason (the client's word), client, \
        interface, ipv4 {address, prefix-len, router, dns, domain, lease-s}, ipv6 \
        {addresses, prefixes, dns, domains, delegated} with each address and prefix as \
        {address, length, preferred-s, valid-s} (a prefix with valid lifetime 0 is a \
        withdrawal and left out), raw (every variable the client set) and, when some \
        variable did not parse, errors. Every value is a string.\n\n\
        A section is all or nothing: a variable that does not parse leaves its whole section \
        (ipv4 or ipv6) out, stays in raw, is named in errors and on stderr, and the exit \
        status is 1 after the rest is published.\n\n\
        The service is --service, else $MEDIC_SERVICE (which medic sets for every process it \
        starts; dhcpcd clears it); with neither, exit 2. --print prints the map as JSON and \
        asks no daemon. Otherwise the hook returns within a second whatever happens; with no \
        daemon answering it exits 3."
    )]
    Hook(HookArgs),
    /// Upgrade in place: re-execute the daemon (or PATH) with the same pid; nothing restarts.
    #[command(
        long_about = "Upgrade in place: re-execute the daemon, or the binary PATH, \
        with the same pid, so that it takes over every running service without restarting \
        any.\n\n\
        The daemon first runs `PATH daemon --check-state FD` on its state (history, strikes, \
        each live process): if PATH does not accept it (not medic, another state layout, a \
        config it does not read), or when a service is in a state that could not be taken \
        over (a oneshot running, a service being stopped, one not yet ready whose readiness \
        channel would not survive), the command exits 1 saying why, and nothing changes. \
        Otherwise the daemon execs PATH (default: the binary it runs, /proc/self/exe) with \
        its own arguments; the new binary adopts every process (same pids, still its \
        children), reads on their output (`medic logs` goes on; the lines captured before \
        are not carried over), and its history and strikes go on. The command returns once \
        the new binary answers (exit 1 if that takes over 30s). Works as PID 1."
    )]
    Reexec {
        /// The binary to run (made absolute against the current directory) [default: the
        /// running one].
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Save the daemon's in-memory trace of recent inputs.
    /// Print what SERVICE publishes, or replace it: `output NAME`, `output set NAME key=value…`.
    #[command(
        long_about = "Print the outputs SERVICE publishes (`medic output NAME`), or replace \
        them all (`medic output set NAME key=value…`, `medic output set NAME --json -`).\n\n\
        Outputs are a map of keys (a-z, 0-9, `_`, `-`) to strings, lists and maps; services \
        that need or use SERVICE read them in their templates. Printed as `key = value`, one \
        per line (lists and maps as JSON); with --json as one JSON object.\n\n\
        `set` replaces the whole map in one message: key=value pairs (a key given twice \
        makes a list, in order), or with --json one JSON object read from stdin (`-`); \
        numbers and booleans are kept as their text, null is refused. `set NAME` with no \
        pair clears the map. A change is written in SERVICE's history; the same map again \
        changes nothing. Every process medic starts has MEDIC_SERVICE (its service's name) \
        and MEDIC_STATE_DIR in its environment, so `medic output set \"$MEDIC_SERVICE\" …` \
        finds its daemon. An unknown service, a bad key or a map over a bound (64 keys, \
        4096 values, 32 KiB of text, 8 levels) fails with exit 1 and changes nothing."
    )]
    Output {
        /// `NAME`, or `set NAME [key=value…]`, or `set NAME -` with --json.
        #[arg(value_name = "ARGS", required = true)]
        args: Vec<String>,
        /// Print JSON; with `set`, read one JSON object from stdin (`-`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    #[command(subcommand)]
    Trace(TraceCommand),
    /// Push, remove and list secrets (ssh keys, WireGuard keys): `secret set|rm|list`.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Make final the change waiting for its confirmation (`--confirm-within`).
    #[command(
        long_about = "Make final the change waiting for its confirmation: a secret \
        pushed or a config applied with --confirm-within. Without it, the change is rolled \
        back at its deadline (`medic status` shows it). Exit 1 when nothing waits."
    )]
    Confirm {
        #[command(flatten)]
        target: Target,
    },
    /// Validate a config file and apply the difference, as SIGHUP does.
    #[command(
        long_about = "Validate FILE and apply the difference as SIGHUP does: only \
        services whose definition changed are restarted, removed ones stopped, new ones \
        started. FILE is the daemon's config file from then on (SIGHUP and `medic \
        reload-config` read it; medic does not write your config file: copy FILE there to \
        keep it across a restart of the daemon). A FILE that does not validate changes \
        nothing (exit 1, every problem listed). Relative paths in FILE are taken from the \
        directory of the config in force, as on SIGHUP.\n\n\
        With --confirm-within D the config in force before is kept: unless `medic confirm` \
        comes within D, it is put back (and the file it came from is the config file again), \
        and the history of each service it changes says so. One change waits at a time: \
        while one does, `apply`, `secret set`, `secret rm`, `reload-config` and SIGHUP are \
        refused."
    )]
    Apply {
        /// The config file to apply.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Roll back unless `medic confirm` comes within this (`30s`, `5m`).
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        confirm_within: Option<std::time::Duration>,
        #[command(flatten)]
        target: Target,
    },
    /// Re-run a trace file through the kernel and report the first step that diverges.
    #[command(
        long_about = "Re-run a trace file through the kernel and report the first step \
        that diverges.\n\n\
        Rebuilds the kernel from the trace's snapshot, feeds it every recorded input and \
        compares the digest of what it does with the recorded one. Prints `N steps replayed, \
        identical` and exits 0, or names the first divergent step and exits 1. A file that is \
        not a readable trace exits 1. Needs no daemon."
    )]
    Replay {
        /// The trace file (`medic trace save`, or one the simulator wrote).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Also print the header and every step replayed.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
}

/// The DHCP clients `medic hook` speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookClient {
    /// dhcpcd (`dhcpcd -c SCRIPT`): `$reason` and `new_*` variables.
    Dhcpcd,
    /// busybox udhcpc (`udhcpc -s SCRIPT`): `$1` the event, `ip`, `subnet`, `router`, `dns`….
    Udhcpc,
    /// OpenWrt's odhcp6c (`odhcp6c -s SCRIPT`): `$1` interface, `$2` state, `PREFIXES`….
    Odhcp6c,
}

/// `medic hook CLIENT …`.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// The DHCP client running this as its script.
    #[arg(value_enum, value_name = "CLIENT")]
    pub client: HookClient,
    /// The service whose outputs these are [default: $MEDIC_SERVICE].
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Print the normalised map as JSON instead of publishing it; needs no daemon.
    #[arg(long)]
    pub print: bool,
    #[command(flatten)]
    pub target: Target,
    /// The arguments the client gave its script (udhcpc: the event; odhcp6c: the interface
    /// and the state).
    #[arg(
        value_name = "ARG",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

/// `medic trace …`.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Write the daemon's in-memory trace ring to FILE.
    #[command(long_about = "Write the daemon's in-memory trace ring to FILE.\n\n\
        The daemon writes the file itself, as its own user: FILE is made absolute against the \
        current directory first. The trace holds the config, a snapshot of the kernel and the \
        inputs since, up to `trace-size` bytes; `medic replay FILE` re-runs it.")]
    Save {
        /// Where to write it.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
}

/// `medic secret …`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a new value of secret NAME, read from stdin or FILE.
    #[command(
        long_about = "Store a new value of secret NAME (a-z, 0-9, `_`, `-`; at most \
        64 bytes), read from stdin, or from FILE with --from; at most 60 KiB (61440 bytes), \
        any bytes. The daemon keeps it in its secrets-dir (mode 0600) as the next generation \
        and copies it to every service that declares [service.X.secret.NAME], which then \
        gets its on-change. The bytes never appear in a trace, a history, an event or a log.\n\n\
        With --confirm-within D the previous value is kept: unless `medic confirm` comes \
        within D, it is put back and its consumers get their on-change again. One change \
        waits at a time: while one does, another push is refused (exit 1)."
    )]
    Set {
        /// The secret's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Read the value from FILE instead of stdin.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// Roll back unless `medic confirm` comes within this (`30s`, `5m`).
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        confirm_within: Option<std::time::Duration>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove secret NAME from the store (copies already made stay).
    #[command(
        long_about = "Remove secret NAME from the store. Copies already made stay where \
        they are (removing a key must not lock anyone out); a service that copies it does not \
        start again until it is pushed again. Exit 1 for an unknown name."
    )]
    Rm {
        /// The secret's name.
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// List the secrets: name, size, generation, when set. Never their bytes.
    List {
        /// One JSON array of {name, size, generation, set_at, set_at_unix_ms, unconfirmed}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// A command that did not succeed: the exit status and what to print on stderr (nothing when
/// empty: the command has said it already).
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub status: u8,
    /// The message, without the `medic: ` prefix.
    pub message: String,
}

impl Failure {
    /// The operation failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure {
            status: EXIT_FAILED,
            message: message.into(),
        }
    }

    /// Bad usage or bad config (exit 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            status: EXIT_USAGE,
            message: message.into(),
        }
    }
}

/// Parses the command line, runs the command, and returns its exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Daemon { .. }) {
        // A client piped into `head` should end quietly, as Unix tools do; the daemon keeps
        // SIGPIPE ignored so that a client hanging up never kills it.
        // SAFETY: restoring a default signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Daemon {
            config,
            state_dir,
            check_state,
            take_over,
        } => {
            return daemon::run(daemon::Start {
                config: config.config,
                state_dir,
                check_state,
                take_over,
            })
        }
        Command::Check { config, dot } => check::run(config.config, dot),
        Command::Replay { file, verbose } => replay::run(&file, verbose),
        Command::Hook(args) => hook::run(args),
        remote => client::run(remote),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("medic: {}", failure.message);
            }
            ExitCode::from(failure.status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_help() {
        for sub in Cli::command().get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
        }
    }

    #[test]
    fn usage_errors_are_exit_status_2() {
        let err = Cli::try_parse_from(["medic", "start"]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "start needs a service");
        let err = Cli::try_parse_from(["medic", "frobnicate"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let ok = Cli::try_parse_from(["medic", "logs", "ntpd", "-n", "5", "--follow"]).unwrap();
        assert!(matches!(
            ok.command,
            Command::Logs {
                lines: 5,
                follow: true,
                ..
            }
        ));
    }
}
