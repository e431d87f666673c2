//! # medic-kernel: the pure state machine of the medic supervisor
//!
//! The kernel decides; the adapters (`medic-io`, or the simulator) do. It never reads a clock,
//! a file, a socket or the environment, and it holds no randomness: the same inputs at the same
//! instants give the same effects, bit for bit, which is what lets a trace captured on a router
//! replay on a laptop.
//!
//! ## The protocol between kernel and adapters
//!
//! ```text
//! let mut kernel = Kernel::new(config);               // every service stopped, wanted
//! feed the initial link dump as Input::LinkChanged    // optional, before boot
//! feed the coldplugged devices as Input::Devices      // optional, before boot
//! loop {
//!     let deadline = kernel.next_deadline();          // None: nothing due, sleep until an input
//!     let input = wait for an OS event, or Input::Tick when `deadline` has come;
//!     kernel.step(now, input, &mut effects);          // now: the adapter's monotonic clock
//!     carry out every effect in `effects`, in order;  // spawn, signal, probe, link up, …
//!     effects.clear();
//! }
//! ```
//!
//! * **Time** comes in as [`Instant`] (monotonic nanoseconds). A tick before
//!   [`Kernel::next_deadline`] is a harmless no-op, so an adapter may wake early.
//! * **Boot** happens on the first [`Input::Tick`] (the first deadline is the origin). Inputs
//!   before it only update what the kernel knows, so link states and devices fed first are
//!   seen by boot.
//! * **Devices** come as state, not events: each [`Input::Devices`] is the whole set of present
//!   devices a device service could match; an equal set changes nothing, so an adapter that
//!   lost events repairs by sending what it finds on a re-walk.
//! * **Jobs.** Every spawn, check, memory sample and command carries a [`JobId`]; answers name
//!   it. An answer about a job the kernel has moved on from is ignored, so late or duplicated
//!   answers are harmless.
//! * **Effects** are appended to the caller's `Vec` in the order they must be carried out.
//!   Effects never fail back into the kernel except as inputs ([`Input::SpawnFailed`],
//!   [`CheckResult::Failed`], …).
//! * **Services** are named by [`ServiceId`], stable for the kernel's lifetime across config
//!   replacements; [`Kernel::lookup`] and [`Kernel::name`] translate.
//! * **Shutdown**: [`Operator::Shutdown`] stops everything, dependents first; when all is down
//!   the kernel emits [`Effect::ShutdownComplete`].
//! * **Outputs and templates** (DESIGN §9): [`Input::SetOutputs`] replaces a service's
//!   published map ([`Kernel::outputs`]); a service with templates is rendered before each
//!   start and after a debounce when what it reads changes: [`Effect::Render`] carries the
//!   templates and the outputs they read, [`Input::RenderDone`] says changed, unchanged or
//!   failed. The adapter renders off its loop; the kernel keeps one render per service in
//!   flight.
//! * **Secrets** (DESIGN §10) are `(name, generation)` only: [`Input::SecretSet`],
//!   [`Input::SecretRemoved`]; a service's copies of them are rendered with its templates
//!   ([`Effect::Render`] names the generations, the adapter reads the bytes from its store).
//!   A push or a config applied with `confirm_within` ([`Input::ApplyConfig`]) is rolled back
//!   at its deadline unless [`Input::Confirm`] comes first; one such change waits at a time.
//!   [`Effect::DropSecret`] tells the store when a generation is no longer needed.
//! * **Invariants**: [`Kernel::check_invariants`] may be called after any step.
//!
//! ## Bounds
//! * history: `history-size` records per service (default 64), oldest dropped;
//! * timers: at most one of each kind per service (thirteen kinds);
//! * outputs: [`outputs::limits`] per service; one render in flight per service;
//! * secrets: one generation in force per name, and at most one change waiting for its
//!   confirmation (one deadline);
//! * one process per service, at most one readiness poll and one probe in flight;
//! * effects per step: proportional to the services the input touches (a config replacement
//!   or shutdown touches all).
//!
//! ## Cost
//! Each input touches the services it names and, through health changes, their dependents;
//! timers sit in one ordered set. Nothing iterates the whole graph except boot, shutdown and
//! config replacement.

#![warn(missing_docs)]

mod adopt;
pub mod config;
mod devices;
mod graph;
pub mod health;
pub mod history;
mod intervene;
mod kernel;
mod observe;
pub mod outputs;
pub mod protocol;
mod render;
mod replace;
mod rules;
mod schedule;
pub mod secrets;
mod service;
mod snapshot;
mod stop;
pub mod time;
mod timers;
pub mod trace;
mod view;

pub use adopt::{Saved, SavedProcess, SavedService};
pub use config::{Config, ServiceConfig};
pub use devices::{glob, Device, DeviceMatch};
pub use health::Condition;
pub use history::{History, Outcome, Record};
pub use kernel::Kernel;
pub use outputs::{Outputs, Value};
pub use protocol::{
    CheckPurpose, CheckResult, CommandPurpose, Effect, Exec, ExitStatus, Input, JobId, LinkState,
    Operator, RenderResult, ServiceId, SignalTarget, WallClock,
};
pub use rules::backoff;
pub use time::Instant;
pub use view::ServiceView;
