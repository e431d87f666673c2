//! Conditions and verdicts: for every condition a service can be in, *is it healthy?* and
//! *which heal, if any?*

use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Heal, Kind, ServiceConfig};

/// The condition a service is in at one moment (architecture.md §2).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Condition {
    /// Not wanted (operator stop, or not yet started).
    Stopped,
    /// Wanted, but a need is not healthy yet.
    Waiting,
    /// Spawned, not ready yet.
    Starting,
    /// Healthy.
    Ready,
    /// Was running; a need has become unhealthy. Never healed: the cure is upstream.
    Blocked,
    /// The process ended.
    Exited,
    /// The oneshot's command exited non-zero (or could not be spawned).
    Failed,
    /// Not ready within `start-timeout`.
    StartTimeout,
    /// The probe failed `failures` times in a row.
    Unresponsive,
    /// The service's processes together use more than `memory-max`.
    MemoryHigh,
    /// Asked to stop; `stop-timeout`, then SIGKILL.
    Stopping,
    /// No such link, or no device that matches.
    Absent,
    /// The link exists but is administratively down.
    AdminDown,
    /// The link is up but has no carrier.
    NoCarrier,
    /// Up, but the address `ready-when` asks for is missing.
    NoAddress,
    /// The medical history says stop trying until a new fact.
    GivenUp,
    /// A condition named by a `reports = "condition"` probe.
    Custom(String),
}

/// Every built-in condition, in the order of the design's table.
pub const BUILT_IN: [Condition; 16] = [
    Condition::Stopped,
    Condition::Waiting,
    Condition::Starting,
    Condition::Ready,
    Condition::Blocked,
    Condition::Exited,
    Condition::Failed,
    Condition::StartTimeout,
    Condition::Unresponsive,
    Condition::MemoryHigh,
    Condition::Stopping,
    Condition::Absent,
    Condition::AdminDown,
    Condition::NoCarrier,
    Condition::NoAddress,
    Condition::GivenUp,
];

impl Condition {
    /// The kebab-case name used in the config, CLI and JSON.
    pub fn name(&self) -> &str {
        match self {
            Condition::Stopped => "stopped",
            Condition::Waiting => "waiting",
            Condition::Starting => "starting",
            Condition::Ready => "ready",
            Condition::Blocked => "blocked",
            Condition::Exited => "exited",
            Condition::Failed => "failed",
            Condition::StartTimeout => "start-timeout",
            Condition::Unresponsive => "unresponsive",
            Condition::MemoryHigh => "memory-high",
            Condition::Stopping => "stopping",
            Condition::Absent => "absent",
            Condition::AdminDown => "admin-down",
            Condition::NoCarrier => "no-carrier",
            Condition::NoAddress => "no-address",
            Condition::GivenUp => "given-up",
            Condition::Custom(name) => name,
        }
    }

    /// A built-in condition by name, or a custom one.
    pub fn from_name(name: &str) -> Condition {
        BUILT_IN
            .iter()
            .find(|c| c.name() == name)
            .cloned()
            .unwrap_or_else(|| Condition::Custom(name.to_string()))
    }

    /// Whether this built-in condition can happen to a service of `kind`. Custom conditions
    /// apply to processes (they come from probes).
    pub fn applies_to(&self, kind: &Kind) -> bool {
        use Condition::*;
        let (process, oneshot, interface, device) = match kind {
            Kind::Process { .. } => (true, false, false, false),
            Kind::Oneshot { .. } => (false, true, false, false),
            Kind::Interface { .. } => (false, false, true, false),
            Kind::Device { .. } => (false, false, false, true),
        };
        match self {
            Stopped | Waiting | Ready | Blocked | GivenUp => true,
            Starting | StartTimeout => process || oneshot,
            Exited | Unresponsive | MemoryHigh | Stopping | Custom(_) => process,
            Failed => oneshot,
            Absent => interface || device,
            AdminDown | NoCarrier | NoAddress => interface,
        }
    }

    /// `blocked` and `given-up` can never be given a heal (architecture.md §2).
    pub fn heal_forbidden(&self) -> bool {
        matches!(self, Condition::Blocked | Condition::GivenUp)
    }

    /// Conditions that say nothing about health because nobody wants the service, or that are
    /// transitions the medical history does not need a line for.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Condition::Waiting | Condition::Starting | Condition::Stopping
        )
    }
}

impl core::fmt::Display for Condition {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The answer to the two questions about a condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// Is the service healthy in this condition?
    pub healthy: bool,
    /// The escalation ladder (empty: no intervention).
    pub heal: &'a [Heal],
    /// Settle time override for every rung; `None`: each heal's default.
    pub settle: Option<Duration>,
}

const RESTART: &[Heal] = &[Heal::Restart];
const KILL: &[Heal] = &[Heal::Kill];
const LINK_UP: &[Heal] = &[Heal::LinkUp];

/// The default verdict of a condition (architecture.md §2, the conditions table). `stopped` counts
/// as unhealthy for dependents: a need that is not running cannot serve them.
pub fn default_verdict(condition: &Condition) -> Verdict<'static> {
    use Condition::*;
    let (healthy, heal): (bool, &'static [Heal]) = match condition {
        Ready => (true, &[]),
        Exited | Failed | StartTimeout | Unresponsive => (false, RESTART),
        MemoryHigh => (false, KILL),
        AdminDown => (false, LINK_UP),
        Stopped | Waiting | Starting | Blocked | Stopping | Absent | NoCarrier | NoAddress
        | GivenUp | Custom(_) => (false, &[]),
    };
    Verdict {
        healthy,
        heal,
        settle: None,
    }
}

/// The verdict of `condition` for `service`: its `[on.CONDITION]` override, else the default.
/// `blocked` and `given-up` never carry a heal, whatever the config says.
pub fn verdict<'a>(service: &'a ServiceConfig, condition: &Condition) -> Verdict<'a> {
    let mut v = default_verdict(condition);
    if let Some(o) = service.on.get(condition) {
        if let Some(h) = o.healthy {
            v.healthy = h;
        }
        if let Some(heal) = &o.heal {
            v.heal = heal;
        }
        v.settle = o.settle;
    }
    if condition.heal_forbidden() {
        v.heal = &[];
    }
    v
}

/// The settle time of `heal` under verdict `v`.
pub fn settle_of(v: &Verdict<'_>, heal: &Heal) -> Duration {
    v.settle.unwrap_or_else(|| heal.default_settle())
}
