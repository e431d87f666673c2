//! The daemon's children: which pid is which service's process, check or command, and the
//! bookkeeping of reaping, timeouts and sweeps. The runtime starts processes and their tasks;
//! this type remembers them, turns reaped statuses into what they mean, and kills what must
//! not outlive its leader.
//!
//! * **One reaper**: [`Children::reap`] collects every ended child (`waitpid(-1)`), managed or
//!   orphan, and dispatches it by pid, so no exit status is ever stolen.
//! * **Expiry**: a check or command is killed (with its group) when its timeout passes, only if
//!   the pid is still the child the token names (a pid can be reused).
//! * **Output**: a process's output readers are not aborted when it is reaped; dropping its
//!   [`Alive`] token lets them drain for [`OUTPUT_DRAIN`], then close (services and commands).
//! * **Sweeps**: when the kernel says so ([`medic_kernel::Effect::Sweep`]), the group of an
//!   ended (or abandoned) process gets SIGKILL at once; the `/proc` scan for what left the
//!   group runs later, in [`Children::run_sweeps`], so a restart does not wait for it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use medic_kernel::{ExitStatus, JobId, ServiceId};
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use crate::process;

/// How long the output readers of a process go on after it has been reaped: what it wrote
/// just before it ended (the line that explains a crash) is still read; then the pipes close,
/// even if something it forked still holds them. One policy for services and commands.
pub const OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_millis(200);

/// Held for a process while it lives, dropped when it is reaped: its output readers then
/// drain for [`OUTPUT_DRAIN`] and close (they are not aborted, so no last line is lost).
#[derive(Debug)]
pub struct Alive {
    _tx: watch::Sender<()>,
}

impl Alive {
    /// A new token, and what the output readers watch: its `changed()` fails once the token
    /// is dropped.
    pub fn new() -> (Alive, watch::Receiver<()>) {
        let (tx, rx) = watch::channel(());
        (Alive { _tx: tx }, rx)
    }
}

/// Waits until the process behind `alive` has been reaped, then [`OUTPUT_DRAIN`] more.
pub async fn reaped_and_drained(mut alive: watch::Receiver<()>) {
    while alive.changed().await.is_ok() {}
    tokio::time::sleep(OUTPUT_DRAIN).await;
}

/// A running service process (or oneshot command).
#[derive(Debug)]
pub struct ProcEntry {
    /// Its service.
    pub service: ServiceId,
    /// The service's name, for the log.
    pub name: String,
    /// Its pid, also its process group and session id.
    pub pid: u32,
    /// Its `MEDIC_INSTANCE` tag.
    pub instance: String,
    /// The sd_notify socket bound for it, removed with it.
    pub notify_socket: Option<PathBuf>,
    /// Tasks watching its readiness and its end, aborted with it.
    pub tasks: Vec<AbortHandle>,
    /// Dropped with the entry, when the process is reaped: its output readers drain and close.
    pub alive: Alive,
    /// Adopted from a previous daemon (crate::adopt): not a child, its end comes from its
    /// pidfd, and what it forked does not descend from this daemon.
    pub adopted: bool,
    /// The read ends of its stdout and stderr pipes, as numbers: open while its output
    /// readers run (a reexec checks each against the pipe's inode before handing it on).
    pub output_fds: [Option<std::os::fd::RawFd>; 2],
}

impl Drop for ProcEntry {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(p) = &self.notify_socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What a child process is to the loop.
#[derive(Debug)]
enum Role {
    /// The process (or oneshot command) of a service.
    Service(JobId),
    /// A `run` check, waiting for its exit status.
    Check {
        token: u64,
        tx: oneshot::Sender<ExitStatus>,
    },
    /// A heal, reload or stop command.
    Command {
        service: ServiceId,
        job: JobId,
        token: u64,
        expiry: AbortHandle,
        /// Dropped when the command is reaped: its output readers drain and close.
        alive: Alive,
    },
}

/// What a reaped child meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Reaped {
    /// A service's process ended.
    Service {
        /// The service.
        service: ServiceId,
        /// Its job.
        job: JobId,
        /// How.
        status: ExitStatus,
    },
    /// A heal, reload or stop command ended.
    Command {
        /// The service.
        service: ServiceId,
        /// Its job.
        job: JobId,
        /// How.
        status: ExitStatus,
    },
}

/// Every child of the daemon the loop cares about.
#[derive(Debug, Default)]
pub struct Children {
    roles: HashMap<u32, Role>,
    procs: BTreeMap<JobId, ProcEntry>,
    /// Service processes reaped but whose groups the kernel has not decided about yet: kept
    /// until the input about their end has been fed.
    ended: BTreeMap<JobId, ProcEntry>,
    /// Groups to scan `/proc` for, after this round of inputs: (name, pgid, instance, and
    /// whether to look beyond this daemon's descendants).
    sweeps: Vec<(String, u32, String, bool)>,
    next_token: u64,
}

impl Children {
    /// Remembers a service process just spawned.
    pub fn add_service(&mut self, job: JobId, entry: ProcEntry) {
        self.roles.insert(entry.pid, Role::Service(job));
        self.procs.insert(job, entry);
    }

    /// Remembers a process adopted from a previous daemon: not a child, so never reaped here;
    /// [`Children::adopted_ended`] reports its end.
    pub fn add_adopted(&mut self, job: JobId, entry: ProcEntry) {
        self.procs.insert(job, entry);
    }

    /// The pidfd of the adopted process of `job` says it has ended: its service, once (it is
    /// kept until its end has been told, like a reaped process).
    pub fn adopted_ended(&mut self, job: JobId) -> Option<ServiceId> {
        if !self.procs.get(&job)?.adopted {
            return None;
        }
        let entry = self.procs.remove(&job)?;
        let service = entry.service;
        self.ended.insert(job, entry);
        Some(service)
    }

    /// Remembers a `run` check; its status goes to `tx`. Returns the token for [`Children::expire`].
    pub fn add_check(&mut self, pid: u32, tx: oneshot::Sender<ExitStatus>) -> u64 {
        let token = self.token();
        self.roles.insert(pid, Role::Check { token, tx });
        token
    }

    /// Remembers a command; `expiry` is the task that will call [`Children::expire`] with the
    /// token it is given, aborted when the command ends first; `alive` is dropped when it is
    /// reaped.
    pub fn add_command(
        &mut self,
        pid: u32,
        service: ServiceId,
        job: JobId,
        alive: Alive,
        expiry: impl FnOnce(u64) -> AbortHandle,
    ) {
        let token = self.token();
        let expiry = expiry(token);
        self.roles.insert(
            pid,
            Role::Command {
                service,
                job,
                token,
                expiry,
                alive,
            },
        );
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// The live process of `job`.
    pub fn service(&self, job: JobId) -> Option<&ProcEntry> {
        self.procs.get(&job)
    }

    /// Reaps every ended child and says what each meant (checks are answered on their own
    /// channel; orphans are only logged).
    pub fn reap(&mut self) -> Vec<Reaped> {
        self.dispatch(process::reap())
    }

    fn dispatch(&mut self, statuses: Vec<(u32, ExitStatus)>) -> Vec<Reaped> {
        let mut out = Vec::new();
        for (pid, status) in statuses {
            match self.roles.remove(&pid) {
                Some(Role::Service(job)) => {
                    let Some(entry) = self.procs.remove(&job) else {
                        continue;
                    };
                    tracing::debug!(service = %entry.name, pid, "{status}");
                    let service = entry.service;
                    self.ended.insert(job, entry);
                    out.push(Reaped::Service {
                        service,
                        job,
                        status,
                    });
                }
                Some(Role::Check { tx, .. }) => {
                    let _ = tx.send(status);
                }
                Some(Role::Command {
                    service,
                    job,
                    expiry,
                    alive,
                    ..
                }) => {
                    expiry.abort();
                    drop(alive); // its output drains and closes
                    out.push(Reaped::Command {
                        service,
                        job,
                        status,
                    });
                }
                None => tracing::debug!(pid, "reaped an orphan: {status}"),
            }
        }
        out
    }

    /// The end of `job` has been told to the kernel: forget it (its group was swept if the
    /// kernel said so).
    pub fn forget_ended(&mut self, job: JobId) {
        self.ended.remove(&job);
    }

    /// Kills the group of a check or command whose timeout passed, if `pid` is still the child
    /// `token` names.
    pub fn expire(&mut self, pid: u32, token: u64) {
        let live = match self.roles.get(&pid) {
            Some(Role::Check { token: t, .. }) | Some(Role::Command { token: t, .. }) => {
                *t == token
            }
            _ => false,
        };
        if live {
            tracing::warn!(
                pid,
                "command or check still running after its timeout: SIGKILL to its group"
            );
            let _ = process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// SIGKILL to the group of `job` now, and its `/proc` sweep after this round of inputs.
    pub fn sweep(&mut self, job: JobId) {
        let Some(entry) = self.procs.get(&job).or_else(|| self.ended.get(&job)) else {
            return;
        };
        let _ = process::signal_group(entry.pid, nix::sys::signal::Signal::SIGKILL);
        self.sweeps.push((
            entry.name.clone(),
            entry.pid,
            entry.instance.clone(),
            entry.adopted,
        ));
    }

    /// Runs the sweeps asked for: whatever left a swept group, found by its instance tag.
    pub fn run_sweeps(&mut self) {
        for (name, pgid, instance, anywhere) in std::mem::take(&mut self.sweeps) {
            let killed = process::sweep(pgid, &instance, anywhere);
            match killed {
                0 => {}
                1 => tracing::info!("{name}: killed 1 leftover process of its group"),
                n => tracing::info!("{name}: killed {n} leftover processes of its group"),
            }
        }
    }

    /// Every live service process, for a last sweep when the daemon gives up.
    pub fn clear(&mut self) {
        self.procs.clear();
        self.ended.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    fn entry(pid: u32) -> ProcEntry {
        ProcEntry {
            service: ServiceId(7),
            name: "svc".into(),
            pid,
            instance: format!("test.{pid}"),
            notify_socket: None,
            tasks: Vec::new(),
            alive: Alive::new().0,
            adopted: false,
            output_fds: [None, None],
        }
    }

    #[test]
    fn a_reaped_service_is_kept_until_its_end_is_told_then_forgotten() {
        let mut c = Children::default();
        c.add_service(JobId(3), entry(4_000_001));
        let reaped = c.dispatch(vec![(4_000_001, ExitStatus::Code(1))]);
        assert_eq!(
            reaped,
            [Reaped::Service {
                service: ServiceId(7),
                job: JobId(3),
                status: ExitStatus::Code(1)
            }]
        );
        assert!(c.service(JobId(3)).is_none(), "no longer live");
        assert!(
            c.ended.contains_key(&JobId(3)),
            "kept for the kernel's sweep"
        );
        c.forget_ended(JobId(3));
        assert!(c.ended.is_empty());
        // The same pid again is an orphan now: nothing to report.
        assert!(c
            .dispatch(vec![(4_000_001, ExitStatus::Code(0))])
            .is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn checks_get_their_status_and_commands_are_reported() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut c = Children::default();
                let (tx, rx) = oneshot::channel();
                c.add_check(4_000_002, tx);
                let mut expiry_token = 0;
                c.add_command(4_000_003, ServiceId(1), JobId(9), Alive::new().0, |t| {
                    expiry_token = t;
                    tokio::task::spawn_local(std::future::pending::<()>()).abort_handle()
                });
                assert_ne!(expiry_token, 0);
                let reaped = c.dispatch(vec![
                    (4_000_002, ExitStatus::Code(0)),
                    (4_000_003, ExitStatus::Signal(9)),
                ]);
                assert_eq!(rx.await, Ok(ExitStatus::Code(0)));
                assert_eq!(
                    reaped,
                    [Reaped::Command {
                        service: ServiceId(1),
                        job: JobId(9),
                        status: ExitStatus::Signal(9)
                    }]
                );
                assert!(c.roles.is_empty());
            })
            .await;
    }

    #[test]
    fn expiry_kills_only_the_child_its_token_names() {
        // A real process in its own group, so the SIGKILL can be seen.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let mut c = Children::default();
        let (tx, _rx) = oneshot::channel();
        let token = c.add_check(pid, tx);
        c.expire(pid, token + 1);
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "a stale token kills nothing"
        );
        c.expire(pid, token);
        assert_eq!(child.wait().expect("wait").signal(), Some(9));
    }

    #[test]
    fn a_sweep_kills_the_group_of_an_ended_leader() {
        let mut leader = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pgid = leader.id();
        // A second member of the leader's group, left behind when the leader "ends".
        let mut member = std::process::Command::new("sleep")
            .arg("30")
            .process_group(pgid as i32)
            .spawn()
            .expect("sleep");
        let mut c = Children::default();
        c.add_service(JobId(1), entry(pgid));
        // The leader is reaped by the loop; the kernel then asks for the sweep.
        c.dispatch(vec![(pgid, ExitStatus::Code(0))]);
        c.sweep(JobId(1));
        assert_eq!(member.wait().expect("wait").signal(), Some(9));
        assert_eq!(leader.wait().expect("wait").signal(), Some(9));
        assert_eq!(c.sweeps.len(), 1, "the /proc scan is queued for later");
        c.sweeps.clear();
    }
}
