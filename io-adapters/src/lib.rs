//! # medic-io: the OS adapters of medic
//!
//! Turns OS events into kernel [`medic_kernel::Input`]s and carries out
//! [`medic_kernel::Effect`]s, on a tokio current-thread runtime.

pub mod control;
pub mod netlink;
pub mod runtime;
