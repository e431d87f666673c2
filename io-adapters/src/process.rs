//! Processes: spawning in a new session (own process group), signalling whole groups,
//! reaping every child (managed or orphan) in one place, pidfds, and the `/proc` scans that
//! find a service's processes for memory sampling and for the last SIGKILL sweep.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use medic_kernel::config::Signal;
use medic_kernel::ExitStatus;
use nix::sys::signal::{self as nsig, Signal as NixSignal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The command line is empty.
    #[error("empty command line")]
    EmptyArgv,
    /// `user =` names no user.
    #[error("no user called `{0}`")]
    NoSuchUser(String),
    /// `group =` names no group.
    #[error("no group called `{0}`")]
    NoSuchGroup(String),
    /// A pipe or socket for the process could not be made.
    #[error("setting up {what}: {source}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// fork or exec failed.
    #[error("{argv0}: {}", exec_reason(.argv0, .source))]
    Exec {
        /// The program.
        argv0: String,
        /// The OS error (`No such file or directory`, `Permission denied`).
        source: io::Error,
    },
}

impl SpawnError {
    /// The OS error number behind the failure, when there is one: from making the output or
    /// readiness pipes (`Setup`), or from `posix_spawn`/fork/exec (`Exec`).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            SpawnError::Setup { source, .. } | SpawnError::Exec { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    /// Whether the daemon, not the service, ran short of something (descriptors, memory,
    /// processes): EMFILE, ENFILE, ENOMEM or EAGAIN. Such a failure says nothing about the
    /// service.
    pub fn is_resource_shortage(&self) -> bool {
        is_resource_shortage(self.raw_os_error())
    }
}

/// Whether an errno says the daemon, not the service, ran short of something: EMFILE, ENFILE,
/// ENOMEM or EAGAIN.
pub fn is_resource_shortage(errno: Option<i32>) -> bool {
    matches!(
        errno,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN)
    )
}

/// Why `argv0` could not be executed, in words an operator can act on; the OS's own words
/// are kept, so the error can still be searched for.
fn exec_reason(argv0: &str, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) => format!(
            "{e}: not executable (no execute permission, or a directory on the way is not \
             searchable)"
        ),
        Some(libc::ENOEXEC) => format!(
            "{e}: not a program this system can run, nor a script starting with `#!` (medic \
             never hands a file to a shell)"
        ),
        Some(libc::ENOENT) if !argv0.contains('/') => format!("{e}: not found in PATH"),
        _ => e.to_string(),
    }
}

/// Everything needed to start one process.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// The command line; a relative `argv[0]` containing a `/` is taken relative to `base_dir`.
    pub argv: &'a [String],
    /// Extra environment.
    pub env: &'a BTreeMap<String, String>,
    /// Working directory (relative to `base_dir`).
    pub cwd: Option<&'a str>,
    /// User name or numeric uid.
    pub user: Option<&'a str>,
    /// Group name or numeric gid.
    pub group: Option<&'a str>,
    /// The directory of the config file.
    pub base_dir: &'a Path,
    /// `MEDIC_SERVICE`.
    pub service: &'a str,
    /// `MEDIC_INSTANCE`: a tag unique to this process, inherited by what it forks, so that the
    /// final sweep finds descendants that left the process group.
    pub instance: &'a str,
    /// s6-style readiness: the write end of a pipe, to appear in the child as this fd.
    pub notify_fd: Option<(u32, OwnedFd)>,
    /// sd_notify: the socket path for `NOTIFY_SOCKET`.
    pub notify_socket: Option<&'a Path>,
    /// Capture stdout (else /dev/null).
    pub capture_stdout: bool,
    /// Capture stderr (else /dev/null).
    pub capture_stderr: bool,
}

impl<'a> SpawnSpec<'a> {
    /// A spec that runs `argv` in a service's context (its env, cwd, user and group),
    /// capturing stdout and stderr, with no readiness channel.
    pub fn for_service(
        argv: &'a [String],
        exec: &'a medic_kernel::Exec,
        base_dir: &'a Path,
        instance: &'a str,
    ) -> SpawnSpec<'a> {
        SpawnSpec {
            argv,
            env: &exec.env,
            cwd: exec.cwd.as_deref(),
            user: exec.user.as_deref(),
            group: exec.group.as_deref(),
            base_dir,
            service: &exec.service,
            instance,
            notify_fd: None,
            notify_socket: None,
            capture_stdout: true,
            capture_stderr: true,
        }
    }
}

/// A started process.
#[derive(Debug)]
pub struct Child {
    /// Its pid, also its process group and session id.
    pub pid: u32,
    /// The read end of its stdout, when captured.
    pub stdout: Option<OwnedFd>,
    /// The read end of its stderr, when captured.
    pub stderr: Option<OwnedFd>,
}

/// Resolves `path` against `base` when it is relative.
pub fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn lookup_user(user: &str) -> Result<crate::users::UserIds, SpawnError> {
    crate::users::user(user).ok_or_else(|| SpawnError::NoSuchUser(user.to_string()))
}

fn lookup_group(group: &str) -> Result<u32, SpawnError> {
    crate::users::group(group).ok_or_else(|| SpawnError::NoSuchGroup(group.to_string()))
}

/// Starts a process in a new session (so its own process group, pgid = pid), stdin from
/// /dev/null, never through a shell.
///
/// The common case (no `user`, `group` or `cwd`, and no `PATH` of its own when the program is
/// looked up in `PATH`) uses `posix_spawn` with `POSIX_SPAWN_SETSID`: a vfork-style clone that
/// copies no page tables and whose child execs at once. The rest forks through
/// [`std::process::Command`], whose child makes the `execve` itself ([`ExecPlan`]) rather than
/// letting `execvp` hand a file it cannot execute to `/bin/sh`. Both report a failed exec as an
/// error (a file without the execute bit, or one that is neither a binary nor a `#!` script,
/// never "starts"), both leave the child with the same environment, descriptors, signal mask
/// and dispositions.
pub fn spawn(spec: SpawnSpec<'_>) -> Result<Child, SpawnError> {
    let argv0 = spec.argv.first().ok_or(SpawnError::EmptyArgv)?;
    let program = if argv0.contains('/') {
        resolve(spec.base_dir, argv0)
    } else {
        PathBuf::from(argv0)
    };
    let own_path = !argv0.contains('/') && spec.env.contains_key("PATH");
    if spec.user.is_none() && spec.group.is_none() && spec.cwd.is_none() && !own_path {
        // `spec` (with the parent's copy of the readiness pipe) is dropped on return.
        return spawn_fast(&spec, &program);
    }
    let mut env = child_env(&spec);
    let mut cmd = Command::new(&program);
    cmd.arg0(argv0).args(&spec.argv[1..]);
    if let Some(cwd) = spec.cwd {
        cmd.current_dir(resolve(spec.base_dir, cwd));
    }
    if let Some(user) = spec.user {
        let ids = lookup_user(user)?;
        cmd.uid(ids.uid).gid(ids.gid);
        if let Some((name, home)) = ids.entry {
            env.insert("USER".into(), name.clone().into());
            env.insert("LOGNAME".into(), name.into());
            env.insert("HOME".into(), home);
        }
    }
    if let Some(group) = spec.group {
        cmd.gid(lookup_group(group)?);
    }
    cmd.stdin(Stdio::null());
    cmd.stdout(if spec.capture_stdout {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stderr(if spec.capture_stderr {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let plan = ExecPlan::new(&program, spec.argv, &env)?;
    let notify: Option<(RawFd, OwnedFd)> = spec.notify_fd.map(|(n, fd)| (n as RawFd, fd));
    let notify_raw = notify.as_ref().map(|(n, fd)| (*n, fd.as_raw_fd()));
    // SAFETY: the closure only makes async-signal-safe system calls (setsid, dup2, fcntl,
    // execve) and allocates nothing: the plan was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some((target, fd)) = notify_raw {
                if fd == target {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Returns only if no candidate could be executed; std reports the error to the
            // parent as the spawn's.
            Err(plan.exec())
        });
    }
    let mut child = cmd.spawn().map_err(|source| SpawnError::Exec {
        argv0: argv0.clone(),
        source,
    })?;
    drop(notify); // the parent's copy of the write end: EOF once the child is gone
    Ok(Child {
        pid: child.id(),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
    // `child` is dropped without waiting: the one reaper ([`reap`]) collects every exit.
}

/// Everything the forked child needs to `execve` its program, prepared before the fork (the
/// child may not allocate): the candidate paths (the program, or each `PATH` entry joined with
/// a bare name, `PATH` being the service's own when it sets one), the argument vector and the
/// environment, with the null-terminated pointer arrays into them.
struct ExecPlan {
    candidates: Vec<CString>,
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into the heap buffers of `_strings`, owned by the plan and never
// changed; the plan is only read, by the one child it is moved into.
unsafe impl Send for ExecPlan {}
// SAFETY: as above: nothing is ever written through the pointers.
unsafe impl Sync for ExecPlan {}

impl ExecPlan {
    fn new(
        program: &Path,
        argv: &[String],
        env: &BTreeMap<OsString, OsString>,
    ) -> Result<ExecPlan, SpawnError> {
        let argv0 = &argv[0];
        let bytes = program.as_os_str().as_bytes();
        let candidates = if bytes.contains(&b'/') {
            vec![cstring(bytes, argv0)?]
        } else {
            // As execvp searches: every entry of PATH, an empty one meaning the current
            // directory; without PATH, the system's default.
            let path = env
                .get(OsStr::new("PATH"))
                .map_or(&b"/bin:/usr/bin"[..], |p| p.as_bytes());
            let mut candidates = Vec::new();
            for dir in path.split(|&b| b == b':') {
                let mut full = if dir.is_empty() {
                    b".".to_vec()
                } else {
                    dir.to_vec()
                };
                full.push(b'/');
                full.extend_from_slice(bytes);
                candidates.push(cstring(&full, argv0)?);
            }
            candidates
        };
        let mut strings = Vec::with_capacity(argv.len() + env.len());
        for a in argv {
            strings.push(cstring(a.as_bytes(), argv0)?);
        }
        for (k, v) in env {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            strings.push(cstring(&kv, argv0)?);
        }
        let pointers = |s: &[CString]| -> Vec<*const libc::c_char> {
            s.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let argv_p = pointers(&strings[..argv.len()]);
        let envp_p = pointers(&strings[argv.len()..]);
        Ok(ExecPlan {
            candidates,
            _strings: strings,
            argv: argv_p,
            envp: envp_p,
        })
    }

    /// `execve` of each candidate in turn, in the child; returns the error that explains the
    /// failure when none could be executed (`EACCES` seen on the way wins over `ENOENT`, as
    /// with execvp). Never runs a shell on `ENOEXEC`.
    fn exec(&self) -> io::Error {
        let mut denied = false;
        let mut last = libc::ENOENT;
        for candidate in &self.candidates {
            // SAFETY: null-terminated arrays of pointers to live C strings.
            unsafe { libc::execve(candidate.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOENT);
            match errno {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                other => return io::Error::from_raw_os_error(other),
            }
            last = errno;
        }
        io::Error::from_raw_os_error(if denied { libc::EACCES } else { last })
    }
}

/// The state directory of this daemon, set once at its start: every child gets it as
/// `MEDIC_STATE_DIR`, so `medic output set` (or a DHCP hook) run by a service finds this daemon.
static STATE_DIR: std::sync::OnceLock<OsString> = std::sync::OnceLock::new();

/// Says which state directory children are to be given as `MEDIC_STATE_DIR` (the first call
/// counts: one daemon per process).
pub fn export_state_dir(dir: &std::path::Path) {
    let _ = STATE_DIR.set(dir.as_os_str().to_owned());
}

/// The environment a child gets: the daemon's, without `NOTIFY_SOCKET`, with the service's
/// `env` and medic's own variables on top (`MEDIC_SERVICE`, `MEDIC_INSTANCE`,
/// `MEDIC_STATE_DIR`).
fn child_env(spec: &SpawnSpec<'_>) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    env.remove(OsStr::new("NOTIFY_SOCKET"));
    for (k, v) in spec.env {
        env.insert(k.into(), v.into());
    }
    env.insert("MEDIC_SERVICE".into(), spec.service.into());
    env.insert("MEDIC_INSTANCE".into(), spec.instance.into());
    if let Some(dir) = STATE_DIR.get() {
        env.insert("MEDIC_STATE_DIR".into(), dir.clone());
    }
    if let Some(path) = spec.notify_socket {
        env.insert("NOTIFY_SOCKET".into(), path.into());
    }
    env
}

fn cstring(bytes: &[u8], argv0: &str) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::Exec {
        argv0: argv0.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "nul byte in an argument"),
    })
}

/// `fd` moved to a number above 2 and other than `avoid`, so that no `dup2` of the spawn can
/// overwrite a descriptor another one still needs.
fn high_fd(fd: OwnedFd, avoid: RawFd) -> io::Result<OwnedFd> {
    let raw = fd.as_raw_fd();
    if raw > 2 && raw != avoid {
        return Ok(fd);
    }
    // SAFETY: fcntl on a descriptor we own; the new one is owned by the returned value.
    let new = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 3.max(avoid + 1)) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Owns the `posix_spawn` attribute and file-action objects (each destroyed if initialised).
struct SpawnAttrs {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
    attr_init: bool,
    actions_init: bool,
}

impl SpawnAttrs {
    /// Both objects, initialised in place (boxed, so they never move once initialised).
    fn new() -> Result<Box<SpawnAttrs>, SpawnError> {
        // SAFETY: both are plain C structs for which all-zero is a valid "not yet initialised".
        let mut attrs = Box::new(unsafe {
            SpawnAttrs {
                attr: std::mem::zeroed(),
                actions: std::mem::zeroed(),
                attr_init: false,
                actions_init: false,
            }
        });
        // SAFETY: initialising the objects in place.
        check("spawn attributes", unsafe {
            libc::posix_spawnattr_init(&mut attrs.attr)
        })?;
        attrs.attr_init = true;
        // SAFETY: as above.
        check("spawn file actions", unsafe {
            libc::posix_spawn_file_actions_init(&mut attrs.actions)
        })?;
        attrs.actions_init = true;
        Ok(attrs)
    }
}

impl Drop for SpawnAttrs {
    fn drop(&mut self) {
        // SAFETY: each is destroyed only if its init succeeded.
        unsafe {
            if self.actions_init {
                libc::posix_spawn_file_actions_destroy(&mut self.actions);
            }
            if self.attr_init {
                libc::posix_spawnattr_destroy(&mut self.attr);
            }
        }
    }
}

fn check(what: &'static str, ret: libc::c_int) -> Result<(), SpawnError> {
    if ret == 0 {
        Ok(())
    } else {
        Err(SpawnError::Setup {
            what,
            source: io::Error::from_raw_os_error(ret),
        })
    }
}

fn spawn_fast(spec: &SpawnSpec<'_>, program: &Path) -> Result<Child, SpawnError> {
    let argv0 = &spec.argv[0];
    let notify_target = spec.notify_fd.as_ref().map_or(-1, |(n, _)| *n as RawFd);
    let setup = |what: &'static str| move |source: io::Error| SpawnError::Setup { what, source };
    let pipe_high = || -> Result<(OwnedFd, OwnedFd), SpawnError> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| setup("an output pipe")(e.into()))?;
        Ok((
            r,
            high_fd(w, notify_target).map_err(setup("an output pipe"))?,
        ))
    };
    let stdout = spec.capture_stdout.then(pipe_high).transpose()?;
    let stderr = spec.capture_stderr.then(pipe_high).transpose()?;
    // The readiness pipe stays `spec`'s; a copy is made only when its number is in the way.
    let mut moved_notify = None;
    let notify: Option<(RawFd, RawFd)> = match &spec.notify_fd {
        Some((n, fd)) if fd.as_raw_fd() > 2 && fd.as_raw_fd() != *n as RawFd => {
            Some((*n as RawFd, fd.as_raw_fd()))
        }
        Some((n, fd)) => {
            let copy = fd.try_clone().map_err(setup("the readiness pipe"))?;
            let copy = high_fd(copy, notify_target).map_err(setup("the readiness pipe"))?;
            let raw = copy.as_raw_fd();
            moved_notify = Some(copy);
            Some((*n as RawFd, raw))
        }
        None => None,
    };

    let program_c = cstring(program.as_os_str().as_bytes(), argv0)?;
    let mut args = Vec::with_capacity(spec.argv.len());
    for a in spec.argv {
        args.push(cstring(a.as_bytes(), argv0)?);
    }
    let mut envs = Vec::new();
    for (k, v) in child_env(spec) {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envs.push(cstring(&kv, argv0)?);
    }
    let mut argv_p: Vec<*mut libc::c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_p.push(std::ptr::null_mut());
    let mut envp_p: Vec<*mut libc::c_char> = envs.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_p.push(std::ptr::null_mut());

    let dev_null = c"/dev/null";
    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // by `SpawnAttrs`; every pointer handed to posix_spawn outlives the call.
    let ret = unsafe {
        let mut attrs = SpawnAttrs::new()?;
        let a = &mut attrs.attr;
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        check(
            "spawn attributes",
            libc::posix_spawnattr_setsigmask(a, &empty),
        )?;
        let mut default: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut default);
        libc::sigaddset(&mut default, libc::SIGPIPE);
        check(
            "spawn attributes",
            libc::posix_spawnattr_setsigdefault(a, &default),
        )?;
        let flags = libc::POSIX_SPAWN_SETSID
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
        check("spawn attributes", libc::posix_spawnattr_setflags(a, flags))?;
        let fa = &mut attrs.actions;
        check(
            "stdin",
            libc::posix_spawn_file_actions_addopen(fa, 0, dev_null.as_ptr(), libc::O_RDONLY, 0),
        )?;
        for (target, pipe) in [(1, &stdout), (2, &stderr)] {
            let ret = match pipe {
                Some((_, w)) => libc::posix_spawn_file_actions_adddup2(fa, w.as_raw_fd(), target),
                None => libc::posix_spawn_file_actions_addopen(
                    fa,
                    target,
                    dev_null.as_ptr(),
                    libc::O_WRONLY,
                    0,
                ),
            };
            check("an output descriptor", ret)?;
        }
        if let Some((target, fd)) = notify {
            let ret = libc::posix_spawn_file_actions_adddup2(fa, fd, target);
            check("the readiness pipe", ret)?;
        }
        let spawn = if argv0.contains('/') {
            libc::posix_spawn
        } else {
            libc::posix_spawnp
        };
        spawn(
            &mut pid,
            program_c.as_ptr(),
            &attrs.actions,
            &attrs.attr,
            argv_p.as_ptr(),
            envp_p.as_ptr(),
        )
    };
    if ret != 0 {
        return Err(SpawnError::Exec {
            argv0: argv0.clone(),
            source: io::Error::from_raw_os_error(ret),
        });
    }
    // The parent's copies of the write ends close here (the readiness pipe's with `spec`):
    // EOF once the child is gone.
    drop(moved_notify);
    Ok(Child {
        pid: pid as u32,
        stdout: stdout.map(|(r, _)| r),
        stderr: stderr.map(|(r, _)| r),
    })
}

/// A pipe whose both ends are close-on-exec (the child's copy is made by `dup2`).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Setup {
        what: "the readiness pipe",
        source: e.into(),
    })
}

/// Collects every child that has ended, managed or orphan: `waitpid(-1, WNOHANG)` until none
/// is left. The single place that reaps, so no exit status is ever stolen.
pub fn reap() -> Vec<(u32, ExitStatus)> {
    let mut ended = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                ended.push((pid.as_raw() as u32, ExitStatus::Code(code)))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                ended.push((pid.as_raw() as u32, ExitStatus::Signal(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    ended
}

/// `pidfd_open(pid)`: a descriptor that becomes readable when the process ends (Linux ≥ 5.3).
/// `None` on older kernels; SIGCHLD still triggers the reaper there.
pub fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain system call; the returned descriptor is owned by us alone.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fresh descriptor.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether orphans of services are re-parented to the daemon (it is a child subreaper or PID 1),
/// so that everything a service ever forked is a descendant of the daemon.
static ADOPTS_ORPHANS: AtomicBool = AtomicBool::new(false);

/// Makes the daemon a child subreaper, so orphans of services are re-parented to it (and reaped)
/// instead of to PID 1. Not needed when the daemon is PID 1.
pub fn become_subreaper() -> io::Result<()> {
    if std::process::id() == 1 {
        ADOPTS_ORPHANS.store(true, Ordering::Relaxed);
        return Ok(());
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    ADOPTS_ORPHANS.store(true, Ordering::Relaxed);
    Ok(())
}

/// The platform signal for a config signal name.
pub fn nix_signal(signal: Signal) -> NixSignal {
    match signal {
        Signal::Hup => NixSignal::SIGHUP,
        Signal::Int => NixSignal::SIGINT,
        Signal::Quit => NixSignal::SIGQUIT,
        Signal::Kill => NixSignal::SIGKILL,
        Signal::Usr1 => NixSignal::SIGUSR1,
        Signal::Usr2 => NixSignal::SIGUSR2,
        Signal::Alrm => NixSignal::SIGALRM,
        Signal::Term => NixSignal::SIGTERM,
        Signal::Cont => NixSignal::SIGCONT,
        Signal::Stop => NixSignal::SIGSTOP,
        Signal::Tstp => NixSignal::SIGTSTP,
        Signal::Winch => NixSignal::SIGWINCH,
        Signal::Pwr => NixSignal::SIGPWR,
    }
}

/// Sends `signal` to the process group `pgid`. A group that is already gone is not an error.
pub fn signal_group(pgid: u32, signal: NixSignal) -> io::Result<()> {
    if pgid <= 1 {
        return Ok(()); // never kill(-1) or kill(0)
    }
    match nsig::killpg(Pid::from_raw(pgid as i32), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `signal` to the one process `pid` (a service's main process: reload, a signal heal).
pub fn signal_main(pid: u32, signal: NixSignal) -> io::Result<()> {
    if pid <= 1 {
        return Ok(()); // never kill(-1), kill(0) or init
    }
    match nsig::kill(Pid::from_raw(pid as i32), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One process as `/proc/PID/stat` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// Session id.
    pub session: u32,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

/// Parses the text of `/proc/PID/stat` (the command name may hold spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (head, tail) = text.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    let fields: Vec<&str> = tail.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5).
    Some(ProcStat {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        rss_pages: fields.get(21)?.parse().ok()?,
    })
}

fn proc_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// Reads a small `/proc` file into `buf` (cleared first) with one `read` per 4 KiB and no
/// `stat` of the file, which `/proc` could not answer anyway.
fn read_proc(path: &str, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn read_stat_into(pid: u32, path: &mut String, buf: &mut Vec<u8>) -> Option<ProcStat> {
    use std::fmt::Write as _;
    path.clear();
    let _ = write!(path, "/proc/{pid}/stat");
    if !read_proc(path, buf) {
        return None;
    }
    parse_stat(std::str::from_utf8(buf).ok()?)
}

/// What `/proc/PID/stat` says of `pid`; `None` when it is gone (or there is no `/proc`).
pub fn read_stat(pid: u32) -> Option<ProcStat> {
    read_stat_into(pid, &mut String::new(), &mut Vec::new())
}

/// Whether `pid`'s environment holds the entry `want` (`MEDIC_INSTANCE=…`).
fn has_instance(pid: u32, want: &[u8], path: &mut String, buf: &mut Vec<u8>) -> bool {
    use std::fmt::Write as _;
    path.clear();
    let _ = write!(path, "/proc/{pid}/environ");
    read_proc(path, buf) && buf.split(|&b| b == 0).any(|kv| kv == want)
}

/// Every process `/proc` lists now.
fn proc_stats() -> Vec<ProcStat> {
    let mut path = String::new();
    let mut buf = Vec::with_capacity(4096);
    proc_pids()
        .filter_map(|pid| read_stat_into(pid, &mut path, &mut buf))
        .collect()
}

/// Summed RSS in bytes of every process in the process group or session `pgid` (the service's
/// leader made both with `setsid`); `None` when no such process can be read (no `/proc`, or
/// the group is gone): unknown, never 0.
///
/// Only the service's own processes are read, not all of `/proc`: the leader and its
/// descendants (from `/proc/PID/task/TID/children`), and the daemon's children that are in the
/// group or session but not below the leader (orphans re-parented to the daemon). Without
/// `children` files (a kernel without `CONFIG_PROC_CHILDREN`), every process is read.
pub fn group_rss_bytes(pgid: u32) -> Option<u64> {
    let page = page_size();
    let members = group_members(pgid).0?;
    (!members.is_empty()).then(|| members.iter().map(|s| s.rss_pages * page).sum())
}

/// At most this many processes are read for one group (a fork bomb's tree is not walked for
/// ever; what is beyond is not counted).
const MAX_GROUP_WALK: usize = 4096;

/// The processes of group or session `pgid`, and how many `/proc/PID/stat` files were read to
/// find them.
fn group_members(pgid: u32) -> (Option<Vec<ProcStat>>, usize) {
    let mut path = String::new();
    let mut buf = Vec::with_capacity(4096);
    let member = |s: &ProcStat| s.pgrp == pgid || s.session == pgid;
    let Some(mut queue) = children_of(pgid, &mut path, &mut buf) else {
        // No children files: every process.
        let stats = proc_stats();
        let reads = stats.len();
        let members: Vec<ProcStat> = stats.into_iter().filter(member).collect();
        return (Some(members), reads);
    };
    queue.push(pgid);
    // Orphans of the group, adopted by the daemon (a subreaper or PID 1).
    let me = std::process::id();
    queue.extend(children_of(me, &mut path, &mut buf).unwrap_or_default());
    let mut seen = std::collections::HashSet::new();
    let mut members = Vec::new();
    let mut reads = 0;
    while let Some(pid) = queue.pop() {
        if pid == me || !seen.insert(pid) || seen.len() > MAX_GROUP_WALK {
            continue;
        }
        reads += 1;
        let Some(stat) = read_stat_into(pid, &mut path, &mut buf) else {
            continue;
        };
        // The daemon's other children (other services' leaders) are not walked into.
        if stat.ppid == me && pid != pgid && !member(&stat) {
            continue;
        }
        if member(&stat) || pid == pgid {
            members.push(stat);
        }
        queue.extend(children_of(pid, &mut path, &mut buf).unwrap_or_default());
    }
    (Some(members), reads)
}

/// The children of `pid` from `/proc/PID/task/*/children`; `None` when there is no such file
/// (the kernel does not provide them, or `pid` is gone).
fn children_of(pid: u32, path: &mut String, buf: &mut Vec<u8>) -> Option<Vec<u32>> {
    use std::fmt::Write as _;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut children = Vec::new();
    let mut any = false;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        path.clear();
        let _ = write!(path, "/proc/{pid}/task/{tid}/children");
        if !read_proc(path, buf) {
            continue;
        }
        any = true;
        children.extend(
            std::str::from_utf8(buf)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    any.then_some(children)
}

/// SIGKILL to every process of a service: its process group, its session, and whatever carries
/// its `MEDIC_INSTANCE` tag (a double-forking daemon that left both). Returns how many were hit.
///
/// Reading every process's environment is the expensive part, so it is read only for processes
/// that can be a service's: when orphans are re-parented to the daemon (subreaper or PID 1),
/// whatever a service forked descends from the daemon, so only the daemon's descendants, and any
/// process whose ancestry the scan could not follow, are read. Otherwise, and for a process
/// adopted from a previous daemon (`anywhere`), every process is.
pub fn sweep(pgid: u32, instance: &str, anywhere: bool) -> usize {
    let _ = signal_group(pgid, NixSignal::SIGKILL);
    let me = std::process::id();
    let want = format!("MEDIC_INSTANCE={instance}");
    let stats = proc_stats();
    let adopts = ADOPTS_ORPHANS.load(Ordering::Relaxed) && !anywhere;
    let parent: HashMap<u32, u32> = if adopts {
        stats.iter().map(|s| (s.pid, s.ppid)).collect()
    } else {
        HashMap::new()
    };
    let may_be_ours = |pid: u32| -> bool {
        if !adopts {
            return true;
        }
        let mut p = pid;
        for _ in 0..parent.len() + 1 {
            match parent.get(&p) {
                Some(&pp) if pp == me => return true,
                Some(&0) => return false, // reached init or kthreadd
                Some(&pp) => p = pp,
                None => return true, // an ancestor vanished meanwhile: cannot tell, so look
            }
        }
        true
    };
    let mut path = String::new();
    let mut buf = Vec::with_capacity(4096);
    let mut hit = 0;
    for stat in &stats {
        let pid = stat.pid;
        if pid == me || pid <= 1 {
            continue;
        }
        let member = stat.pgrp == pgid
            || stat.session == pgid
            || (may_be_ours(pid) && has_instance(pid, want.as_bytes(), &mut path, &mut buf));
        if member && nsig::kill(Pid::from_raw(pid as i32), NixSignal::SIGKILL).is_ok() {
            hit += 1;
        }
    }
    hit
}

fn page_size() -> u64 {
    // SAFETY: sysconf with a constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Total RAM in bytes (`sysinfo`); `None` when the system will not say.
pub fn total_ram_bytes() -> Option<u64> {
    // SAFETY: sysinfo fills the zeroed struct.
    let total = unsafe {
        let mut info: libc::sysinfo = std::mem::zeroed();
        if libc::sysinfo(&mut info) != 0 {
            return None;
        }
        (info.totalram as u64).saturating_mul(info.mem_unit.max(1) as u64)
    };
    (total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_handles_odd_names() {
        let text = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 100 1000000 250 18446744073709551615 0 0";
        let s = parse_stat(text).expect("parses");
        assert_eq!(
            (s.pid, s.pgrp, s.session, s.rss_pages),
            (1234, 1234, 1234, 250)
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_stat_is_readable() {
        let me = read_stat(std::process::id()).expect("own stat");
        assert!(me.rss_pages > 0);
        assert!(total_ram_bytes().is_some_and(|t| t > 0));
        let me = std::process::id();
        let own_group = read_stat(me).expect("own stat").pgrp;
        assert!(group_rss_bytes(own_group).is_some_and(|b| b > 0));
        // No process has pgid 0 in /proc's view of groups we may read: unknown, not 0.
        assert_eq!(group_rss_bytes(u32::MAX), None);
    }

    /// Spawns `argv` (with `cwd` to take the forking path) and returns the exec error, or the
    /// exit code of the process that did start.
    fn try_spawn(
        argv: &[&str],
        cwd: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<i32, SpawnError> {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn(SpawnSpec {
            argv: &argv,
            env: &env,
            cwd,
            user: None,
            group: None,
            base_dir: Path::new("/"),
            service: "test",
            instance: "test.0",
            notify_fd: None,
            notify_socket: None,
            capture_stdout: false,
            capture_stderr: false,
        })?;
        match waitpid(Pid::from_raw(child.pid as i32), None) {
            Ok(WaitStatus::Exited(_, code)) => Ok(code),
            other => panic!("{other:?}"),
        }
    }

    fn errno(result: Result<i32, SpawnError>) -> (i32, String) {
        match result {
            Err(e @ SpawnError::Exec { .. }) => {
                let SpawnError::Exec { source, .. } = &e else {
                    unreachable!()
                };
                (source.raw_os_error().unwrap_or(0), e.to_string())
            }
            other => panic!("expected an exec error, got {other:?}"),
        }
    }

    #[test]
    fn a_file_that_is_no_program_is_an_exec_error_on_both_paths_never_a_shell() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("medic-spawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("text");
        // Run by a shell, this would exit 0: it must not be.
        std::fs::write(&text, "true\n").unwrap();
        std::fs::set_permissions(&text, std::fs::Permissions::from_mode(0o755)).unwrap();
        let noexec = dir.join("noexec");
        std::fs::write(&noexec, "true\n").unwrap();
        std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (text, noexec) = (text.to_str().unwrap(), noexec.to_str().unwrap());
        for cwd in [None, Some("/")] {
            let (code, message) = errno(try_spawn(&[text], cwd, &[]));
            assert_eq!(code, libc::ENOEXEC, "{message}");
            assert!(message.contains("Exec format error"), "{message}");
            let (code, message) = errno(try_spawn(&[noexec], cwd, &[]));
            assert_eq!(code, libc::EACCES, "{message}");
            assert!(message.contains("Permission denied"), "{message}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bare_name_is_looked_up_in_the_services_own_path() {
        // The forking path (an own PATH): skips missing directories, finds `true`.
        let path = [("PATH", "/nonexistent:/usr/bin:/bin")];
        assert_eq!(try_spawn(&["true"], None, &path).unwrap(), 0);
        assert_eq!(try_spawn(&["false"], Some("/"), &[]).unwrap(), 1);
        let (code, message) = errno(try_spawn(&["true"], None, &[("PATH", "/nonexistent")]));
        assert_eq!(code, libc::ENOENT, "{message}");
        assert!(message.contains("not found in PATH"), "{message}");
    }

    #[test]
    fn a_groups_memory_is_read_from_its_own_processes_only() {
        // A leader in its own group with two children.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .expect("sh");
        let pgid = leader.id();
        let start = std::time::Instant::now();
        let mut path = String::new();
        let mut buf = Vec::new();
        while children_of(pgid, &mut path, &mut buf)
            .unwrap_or_default()
            .len()
            < 2
        {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "no children"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (members, reads) = group_members(pgid);
        let members = members.expect("known");
        let everything = proc_stats();
        let mut want: Vec<u32> = everything
            .iter()
            .filter(|s| s.pgrp == pgid || s.session == pgid)
            .map(|s| s.pid)
            .collect();
        let mut got: Vec<u32> = members.iter().map(|s| s.pid).collect();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "the same members as a scan of all of /proc");
        assert_eq!(got.len(), 3, "the leader and its children");
        // The leader, its two children, and the test process's own children at most.
        let own_children = children_of(std::process::id(), &mut path, &mut buf)
            .unwrap_or_default()
            .len();
        assert!(
            reads <= 3 + own_children,
            "{reads} processes read for a group of 2 ({} in /proc)",
            everything.len()
        );
        assert!(group_rss_bytes(pgid).is_some_and(|b| b > 0));
        let _ = signal_group(pgid, NixSignal::SIGKILL);
        let _ = leader.wait();
    }

    #[test]
    fn shortages_are_told_apart_from_a_bad_program() {
        let emfile = SpawnError::Setup {
            what: "an output pipe",
            source: io::Error::from_raw_os_error(libc::EMFILE),
        };
        assert_eq!(emfile.raw_os_error(), Some(libc::EMFILE));
        assert!(emfile.is_resource_shortage());
        let enoent = SpawnError::Exec {
            argv0: "/nope".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert!(!enoent.is_resource_shortage());
        assert_eq!(SpawnError::EmptyArgv.raw_os_error(), None);
        // A real spawn failure keeps its errno.
        let argv = ["/nonexistent/medic-test".to_string()];
        let env = BTreeMap::new();
        let spec = SpawnSpec {
            argv: &argv,
            env: &env,
            cwd: None,
            user: None,
            group: None,
            base_dir: Path::new("/"),
            service: "t",
            instance: "t.1",
            notify_fd: None,
            notify_socket: None,
            capture_stdout: false,
            capture_stderr: false,
        };
        let err = spawn(spec).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    }

    #[test]
    fn resolve_keeps_absolute_paths() {
        assert_eq!(
            resolve(Path::new("/etc"), "/bin/sh"),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            resolve(Path::new("/etc"), "x/y.sh"),
            PathBuf::from("/etc/x/y.sh")
        );
    }
}
