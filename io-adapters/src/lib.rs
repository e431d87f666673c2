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
//! * [`devices`]: uevents and sysfs: which devices are present.
//! * [`control`]: the control socket.
//! * [`statedir`]: the state directory's checks and lock; whom a client trusts.
//! * [`logsink`]: the daemon's own log, which can neither block nor kill the loop.
//! * [`fds`]: descriptor limit and inherited descriptors at start.
//! * [`hooks`]: the DHCP clients' script interface, normalised to one output map.
//! * [`offloop`]: file I/O the loop must never wait for (trace saves, config reads).
//! * [`terminal`]: service text made safe to print on a terminal.
//! * [`users`]: `user =` and `group =` looked up once per name.
//! * [`notify`]: sd_notify sockets, and whose `READY=1` counts.
//! * [`statefile`], [`adopt`], [`reexec`]: surviving the daemon's own crash, and upgrading in
//!   place.

pub mod adopt;
pub mod checks;
pub mod children;
pub mod clock;
pub mod control;
pub mod devices;
pub mod fds;
pub mod files;
pub mod hooks;
pub mod logs;
pub mod logsink;
pub mod netlink;
pub mod notify;
pub mod offloop;
pub mod process;
pub mod reexec;
pub mod render;
pub mod runtime;
pub mod secrets;
pub mod statedir;
pub mod statefile;
pub mod terminal;
pub mod users;
