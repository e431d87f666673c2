//! # medic-io: the OS adapters of medic
//!
//! Turns OS events into kernel [`medic_kernel::Input`]s and carries out
//! [`medic_kernel::Effect`]s, on a tokio current-thread runtime.
//!
//! * [`runtime`]: the event loop around the kernel; start here.
//! * [`children`]: which child is what; reaping, timeouts and sweeps.
//! * [`process`]: spawning, process groups, `waitpid`, `/proc` scans.
//! * [`checks`]: tcp, unix and file checks.
//! * [`files`]: inotify on parent directories.
//! * [`logs`]: the bounded ring of each service's output.
//! * [`netlink`]: links and the link-up heal.
//! * [`control`]: the control socket.

pub mod checks;
pub mod children;
pub mod control;
pub mod files;
pub mod logs;
pub mod netlink;
pub mod process;
pub mod runtime;
