//! The state directory and the control socket in it: who may be trusted with them.
//!
//! * **The daemon's side** ([`prepare`]): a missing state dir is created with mode 0700; an
//!   existing one is used only if it is owned by the daemon's uid and not writable by group or
//!   others, and its mode is never changed (`--state-dir /tmp` is refused, not chmod-ed; a
//!   `/tmp/medic-UID` made by another user is refused). Then an exclusive `flock` on the file
//!   `lock` in it keeps a second daemon out: it exits with
//!   `another medic daemon (pid N) runs with state dir X`. The lock goes with the process (also
//!   on SIGKILL), so a crashed daemon never leaves it held.
//! * **The socket** is removed at exit only if it is still the one this daemon bound
//!   ([`FileId`]): a daemon never deletes another one's socket.
//! * **The client's side** ([`check_socket`], [`check_peer`]): a client talks only to a socket
//!   owned by root or by its own uid, served by a process of root or its own uid; a socket that
//!   another user planted is refused before a byte is sent.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The lock file's name in the state dir; it holds the pid of the daemon that has it.
pub const LOCK_NAME: &str = "lock";
/// How long a daemon that lost the race waits for the winner to write its pid.
const PID_WAIT: Duration = Duration::from_millis(500);

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Another daemon holds the lock.
    #[error(
        "another medic daemon (pid {pid}) runs with state dir {}; stop it first or choose \
         another --state-dir",
        dir.display()
    )]
    Locked {
        /// Its pid as the lock file says (`unknown` when it says nothing).
        pid: String,
        /// The state directory.
        dir: PathBuf,
    },
    /// The directory exists but may be changed by someone else.
    #[error("state dir {}: {why}", dir.display())]
    Untrusted {
        /// The state directory.
        dir: PathBuf,
        /// Who else could change it, and what to do.
        why: String,
    },
    /// A system call failed.
    #[error("state dir {}: {what}: {source}", dir.display())]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// A state directory checked and locked for this daemon; the lock is held while this lives.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates the state dir `dir` (mode 0700) or checks the existing one, then takes its lock;
/// see the module docs.
pub fn prepare(dir: &Path) -> Result<StateDir, StateDirError> {
    let io_err = |what: &'static str| {
        move |source: io::Error| StateDirError::Io {
            dir: dir.to_path_buf(),
            what,
            source,
        }
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err("creating its parent"))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        // Ours: the umask may have taken bits away, never added any; make it exactly 0700.
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("setting mode 0700"))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("creating it")(e)),
    }
    check_dir(dir)?;
    let lock = lock(dir)?;
    Ok(StateDir {
        path: dir.to_path_buf(),
        _lock: lock,
    })
}

/// Refuses a directory that someone other than the daemon's uid (or root, for a symlink to it)
/// could change.
fn check_dir(dir: &Path) -> Result<(), StateDirError> {
    let me = euid();
    let untrusted = |why: String| StateDirError::Untrusted {
        dir: dir.to_path_buf(),
        why,
    };
    let link = std::fs::symlink_metadata(dir).map_err(|source| StateDirError::Io {
        dir: dir.to_path_buf(),
        what: "inspecting it",
        source,
    })?;
    // Whoever owns a symlink can point it elsewhere at any time.
    if link.file_type().is_symlink() && link.uid() != me && link.uid() != 0 {
        return Err(untrusted(format!(
            "is a symlink owned by uid {}, who could point it elsewhere; medic runs as uid {me}",
            link.uid()
        )));
    }
    let meta = std::fs::metadata(dir).map_err(|source| StateDirError::Io {
        dir: dir.to_path_buf(),
        what: "inspecting it",
        source,
    })?;
    if !meta.is_dir() {
        return Err(untrusted("is not a directory".into()));
    }
    if meta.uid() != me {
        return Err(untrusted(format!(
            "is owned by uid {}, not by uid {me} that the daemon runs as; another user could \
             plant a fake control socket there. Remove it, or choose a directory of your own \
             with --state-dir",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(untrusted(format!(
            "is writable by group or others (mode {mode:04o}); medic does not change the mode \
             of a directory it did not create: `chmod go-w` it, or choose another --state-dir"
        )));
    }
    Ok(())
}

/// Takes the exclusive lock of the state dir, or says who has it.
fn lock(dir: &Path) -> Result<File, StateDirError> {
    let path = dir.join(LOCK_NAME);
    let io_err = |what: &'static str| {
        move |source: io::Error| StateDirError::Io {
            dir: dir.to_path_buf(),
            what,
            source,
        }
    };
    // Close-on-exec (std always asks for it): no service may inherit, and so keep, the lock.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io_err("opening its lock file"))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(io_err("locking it")(e));
        }
        return Err(StateDirError::Locked {
            pid: holder_pid(&mut file),
            dir: dir.to_path_buf(),
        });
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(pid.as_bytes()))
        .map_err(io_err("writing its lock file"))?;
    Ok(file)
}

/// The pid the lock holder wrote; it may have won the race a moment ago and not written it
/// yet, so this waits a little for it. Until it has, the file still holds what the previous
/// daemon wrote (its pid stays when it exits): a pid that no process has is not the holder's.
fn holder_pid(file: &mut File) -> String {
    let start = std::time::Instant::now();
    loop {
        let mut text = String::new();
        let read = file
            .rewind()
            .and_then(|()| file.take(32).read_to_string(&mut text));
        let pid = text.trim();
        if read.is_ok() && pid.parse::<i32>().is_ok_and(|p| p > 0 && alive(p)) {
            return pid.to_string();
        }
        if start.elapsed() > PID_WAIT {
            return "unknown".into();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process `pid` exists (one of another uid too: `EPERM`).
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 checks only that the process exists and may be signalled.
    let signalled = unsafe { libc::kill(pid, 0) } == 0;
    signalled || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Which file a path named when it was looked at: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The file at `path` now (not following a symlink).
    pub fn of(path: &Path) -> io::Result<FileId> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// Removes `path` only if it is still the file `id` (the socket this daemon bound, not one a
/// later daemon bound at the same path). Whether it was removed.
pub fn remove_if_same(path: &Path, id: FileId) -> bool {
    FileId::of(path).is_ok_and(|now| now == id) && std::fs::remove_file(path).is_ok()
}

/// Whether a client may trust a daemon run by uid `owner`: root, or the client's own uid.
pub fn trusted_uid(owner: u32) -> bool {
    owner == 0 || owner == euid()
}

/// Before connecting: refuses a control socket owned by anyone but root or the client's own
/// uid, or that is not a socket. A missing one is fine here (connecting says no daemon runs).
pub fn check_socket(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot inspect it: {e}")),
    };
    if !meta.file_type().is_socket() {
        return Err("it is not a socket".into());
    }
    if !trusted_uid(meta.uid()) {
        return Err(format!(
            "it is owned by uid {}, neither root nor you (uid {}): another user may have planted \
             it; not talking to it",
            meta.uid(),
            euid()
        ));
    }
    Ok(())
}

/// After connecting: refuses a daemon whose process runs as anyone but root or the client's
/// own uid (`SO_PEERCRED` of the listening socket).
pub fn check_peer(peer_uid: u32) -> Result<(), String> {
    if trusted_uid(peer_uid) {
        Ok(())
    } else {
        Err(format!(
            "the process serving it runs as uid {peer_uid}, neither root nor you (uid {}); not \
             talking to it",
            euid()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "medic-statedir-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_new_dir_is_0700_and_locked_once() {
        let base = scratch("new");
        let dir = base.join("state");
        let held = prepare(&dir).expect("a fresh dir");
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        let pid = std::fs::read_to_string(dir.join(LOCK_NAME)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // flock locks belong to the open file: a second open in this process conflicts too.
        match prepare(&dir) {
            Err(StateDirError::Locked { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        let again = prepare(&dir).expect("free once the holder is gone");
        drop(again);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_pid_left_by_a_dead_daemon_is_not_named_as_the_holder() {
        let base = scratch("stale");
        let dir = base.join("state");
        let held = prepare(&dir).expect("a fresh dir");
        // The winner of a race has the lock but has not written its pid yet: the file still
        // says the previous daemon's, which has exited.
        // No process has a pid of pid_max or more (and a spawned child would share this
        // test process's descriptors with the tests beside it while it runs).
        let dead: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(4_194_304);
        std::fs::write(dir.join(LOCK_NAME), format!("{dead}\n")).unwrap();
        match prepare(&dir) {
            Err(StateDirError::Locked { pid, .. }) => assert_eq!(pid, "unknown"),
            other => panic!("{other:?}"),
        }
        drop(held);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_shared_dir_is_refused_and_left_alone() {
        let dir = scratch("shared");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = prepare(&dir).unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o7777;
        assert_eq!(
            mode, 0o1777,
            "the mode of a dir medic did not create is never changed"
        );
        assert!(
            !dir.join(LOCK_NAME).exists(),
            "nothing is written in a refused dir"
        );
        // An existing dir of our own with a looser but safe mode is used as it is.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        drop(prepare(&dir).expect("0755 and ours"));
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o755);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_socket_is_removed_only_if_it_is_the_same() {
        let dir = scratch("sock");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let first = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let id = FileId::of(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let _second = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(!remove_if_same(&path, id), "another daemon's socket stays");
        assert!(path.exists());
        let id2 = FileId::of(&path).unwrap();
        assert!(remove_if_same(&path, id2));
        assert!(!path.exists());
        drop(first);
        assert_eq!(
            check_socket(&path),
            Ok(()),
            "a missing socket is for connect to report"
        );
        std::fs::write(&path, "x").unwrap();
        assert!(check_socket(&path).unwrap_err().contains("not a socket"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
