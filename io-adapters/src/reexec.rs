//! Upgrade in place (DESIGN §13): `medic reexec [--binary PATH]` hands the running daemon's
//! state to a new binary, which `execve`s over it with the same pid, and takes over through
//! the adoption path of a crash (crate::adopt), less the crash: its processes stay its
//! children, and their output pipes are handed over instead of lost.
//!
//! ## The handover, in a memfd
//! ```text
//! "MEDICHND"        8 bytes of magic
//! HANDOVER_LAYOUT   u32 LE
//! payload           postcard of [`Handover`]: the state file's bytes (crate::statefile,
//!                   the same encoding a crashed daemon leaves), the config text the kernel
//!                   holds, and which inherited descriptor is which process's stdout/stderr
//! ```
//! A memfd passed by number, rather than the state file with descriptor numbers in it: the
//! numbers mean something only to the one process the exec starts, so they must not be where
//! a daemon restarted after a crash would read them and take a stranger's descriptors for
//! pipes. The memfd dies with that process; nothing of it touches the flash.
//!
//! The config is handed over as text, not re-read from its file: the new binary takes over
//! what runs, as it runs; an edited file not yet reloaded stays not reloaded.
//!
//! ## The steps, in the old daemon (crate::runtime)
//! 1. Refuse what adoption could not carry: a oneshot running, a service being stopped, a
//!    process not yet ready whose readiness channel would not survive (nothing changes).
//! 2. Write the handover into a memfd and run `PATH daemon --check-state FD` as a child (off
//!    the loop, bounded by [`CHECK_TIMEOUT`]); a non-zero exit refuses the reexec with what
//!    the child printed.
//! 3. Answer the client, stop the control socket, then write the handover afresh (the loop
//!    went on meanwhile), clear `FD_CLOEXEC` on the memfd and on every output pipe's read
//!    end, and `execve(PATH, original args + --take-over FD)`. Should the `execve` itself
//!    fail, close-on-exec is set back, the socket bound again, and the daemon goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use medic_kernel::JobId;
use serde::{Deserialize, Serialize};

use crate::statefile::{self, StateFile};

const MAGIC: [u8; 8] = *b"MEDICHND";
/// The layout of the handover (its header and the [`Handover`] fields).
const HANDOVER_LAYOUT: u32 = 1;
/// The most a handover may hold: a state file at its bound, and a config.
const MAX_HANDOVER_BYTES: usize = statefile::MAX_STATE_BYTES + (1 << 20);
/// How long `PATH daemon --check-state` may take before it is killed and the reexec refused.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// What `medic daemon --check-state` prints when it accepts a state: a check must exit 0
/// and say this (a binary that exits 0 whatever it is asked is not taken for medic).
pub const ACCEPTED: &str = "state accepted";
/// The flag that tells a `medic daemon` it takes over from the process it replaces.
pub const TAKE_OVER_FLAG: &str = "--take-over";

/// What a daemon hands to the binary it re-executes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    /// A state file's bytes (crate::statefile::encode).
    pub state: Vec<u8>,
    /// The config text the kernel holds.
    pub config_text: String,
    /// The inherited read ends of each process's stdout and stderr.
    pub outputs: Vec<Outputs>,
}

/// The output pipes of one process, as descriptor numbers inherited across the `execve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    /// The process's job in the state.
    pub job: JobId,
    /// Read end of its stdout, of its stderr.
    pub fds: [Option<i32>; 2],
}

/// A handover read and checked: the state, and the config text.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The state, decoded.
    pub state: StateFile,
    /// The config text.
    pub config_text: String,
    /// The output descriptors as listed (not yet checked against the state's pipes).
    pub outputs: Vec<Outputs>,
}

impl Handover {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let payload = postcard::to_stdvec(self).expect("postcard into a Vec cannot fail");
        let mut bytes = Vec::with_capacity(12 + payload.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&HANDOVER_LAYOUT.to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes
    }

    /// What `bytes` hand over, if this binary accepts all of it: the layout, the state file
    /// inside (its own layout and format version), and the config text (it must validate).
    pub fn accept(bytes: &[u8], config_name: &str) -> Result<Accepted, String> {
        if bytes.len() < 12 || bytes[..8] != MAGIC {
            return Err("not a medic handover".into());
        }
        let layout = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if layout != HANDOVER_LAYOUT {
            return Err(format!(
                "handover layout {layout}; this medic reads layout {HANDOVER_LAYOUT}"
            ));
        }
        let handover: Handover = postcard::from_bytes(&bytes[12..])
            .map_err(|e| format!("the handover does not decode: {e}"))?;
        let state = statefile::decode(&handover.state).map_err(|e| format!("its state: {e}"))?;
        if let Err(errors) = medic_kernel::config::parse(&handover.config_text, config_name) {
            return Err(format!("its config does not validate here:\n{errors}"));
        }
        Ok(Accepted {
            state,
            config_text: handover.config_text,
            outputs: handover.outputs,
        })
    }
}

/// A memfd holding `bytes`, close-on-exec until [`inheritable`] says otherwise.
pub fn memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor is ours alone.
    let raw = unsafe { libc::memfd_create(c"medic-handover".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    file.write_all_at(bytes, 0)?;
    Ok(file.into())
}

/// Reads a handover from `source`: a descriptor number (inherited) or a path. At most
/// [`MAX_HANDOVER_BYTES`]; read from offset 0 whatever the descriptor's offset (the
/// descriptor may be shared with the daemon that wrote it).
pub fn read(source: &str) -> Result<Vec<u8>, String> {
    let file = match source.parse::<RawFd>() {
        Ok(fd) if fd > 2 => {
            // SAFETY: fcntl on a descriptor number: fails with EBADF if it is not open.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(format!("descriptor {fd} is not open"));
            }
            // SAFETY: an open descriptor this process was handed to read, and no one else in
            // it uses.
            std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        Ok(fd) => return Err(format!("descriptor {fd} is stdin, stdout or stderr")),
        Err(_) => std::fs::File::open(Path::new(source)).map_err(|e| format!("{source}: {e}"))?,
    };
    let mut bytes = vec![0u8; 64 * 1024];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            if len > MAX_HANDOVER_BYTES {
                return Err(format!("{source}: over {MAX_HANDOVER_BYTES} bytes"));
            }
            bytes.resize(len * 2, 0);
        }
        match file.read_at(&mut bytes[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{source}: {e}")),
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// Sets or clears `FD_CLOEXEC` on `fd`.
pub fn set_cloexec(fd: RawFd, cloexec: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = match cloexec {
        true => flags | libc::FD_CLOEXEC,
        false => flags & !libc::FD_CLOEXEC,
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `fd` is open and is the pipe of inode `inode`.
pub fn is_pipe(fd: RawFd, inode: u64) -> bool {
    // SAFETY: fstat through a borrowed descriptor number that is checked to be open first.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return false;
    }
    // SAFETY: open, checked just above, and not closed while borrowed here.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    // `st_ino` is narrower than 64 bits on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::stat::fstat(fd)
        .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFIFO && s.st_ino as u64 == inode)
}

/// The inherited output descriptors, by job: each taken only if it is the pipe the state
/// names for that process (by inode) and listed once; a number that is not is left alone,
/// never owned twice.
pub fn take_outputs(
    outputs: &[Outputs],
    procs: &[statefile::ProcRecord],
) -> BTreeMap<JobId, [Option<OwnedFd>; 2]> {
    let mut seen = BTreeSet::new();
    let mut taken = BTreeMap::new();
    for o in outputs {
        let Some(record) = procs.iter().find(|r| r.job == o.job) else {
            continue;
        };
        let mut take = |i: usize| {
            let (fd, inode) = (o.fds[i]?, record.pipes[i]?);
            // SAFETY: an inherited descriptor, checked to be the pipe the state names, and
            // taken once.
            (is_pipe(fd, inode) && seen.insert(fd)).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let fds = [take(0), take(1)];
        taken.insert(o.job, fds);
    }
    taken
}

/// The arguments to re-execute with: this process's own, less a `--take-over N` it was given,
/// plus `--take-over FD`.
pub fn exec_args(fd: RawFd) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut skip = false;
    for arg in std::env::args_os() {
        if std::mem::take(&mut skip) {
            continue;
        }
        if arg == TAKE_OVER_FLAG {
            skip = true;
            continue;
        }
        if arg.as_encoded_bytes().starts_with(b"--take-over=") {
            continue;
        }
        args.push(arg);
    }
    args.push(TAKE_OVER_FLAG.into());
    args.push(fd.to_string().into());
    args
}

/// `execve(binary, args)` with this process's environment; returns only on failure.
pub fn exec(binary: &Path, args: &[std::ffi::OsString]) -> io::Error {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |b: &[u8]| std::ffi::CString::new(b).map_err(|_| io::ErrorKind::InvalidInput);
    let path = match cstr(binary.as_os_str().as_bytes()) {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    let Ok(argv) = args
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return io::ErrorKind::InvalidInput.into();
    };
    let Ok(envp) = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(&kv)
        })
        .collect::<Result<Vec<_>, _>>()
    else {
        return io::ErrorKind::InvalidInput.into();
    };
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated strings and NULL-terminated arrays that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// The binary to re-execute when none is named: the one running, as `/proc/self/exe` names
/// it now (a binary replaced on disk since reads `… (deleted)`: then `/proc/self/exe` itself,
/// which still opens the running one).
pub fn own_binary() -> std::path::PathBuf {
    match std::fs::read_link("/proc/self/exe") {
        Ok(p) if !p.as_os_str().as_encoded_bytes().ends_with(b" (deleted)") => p,
        _ => "/proc/self/exe".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn handover() -> Handover {
        let text = "[service.a]\nrun = [\"/bin/a\"]\n";
        let config = medic_kernel::config::parse(text, "t").expect("valid");
        let state = StateFile {
            boot_id: "b".into(),
            origin_ns: 1,
            kernel: medic_kernel::Kernel::new(config).saved(),
            procs: Vec::new(),
        };
        Handover {
            state: statefile::encode(&state),
            config_text: text.into(),
            outputs: vec![Outputs {
                job: JobId(1),
                fds: [Some(7), None],
            }],
        }
    }

    #[test]
    fn a_handover_round_trips_through_a_memfd_and_damage_is_refused_in_words() {
        let bytes = handover().encode();
        let fd = memfd(&bytes).expect("memfd");
        let read_back = read(&fd.as_raw_fd().to_string()).expect("read");
        std::mem::forget(fd); // `read` took it
        let accepted = Handover::accept(&read_back, "t").expect("accepted");
        assert_eq!(accepted.config_text, handover().config_text);
        assert_eq!(accepted.outputs, handover().outputs);
        assert!(Handover::accept(b"garbage!", "t")
            .unwrap_err()
            .contains("not a medic handover"));
        let mut other = bytes.clone();
        other[8] = 9;
        assert!(Handover::accept(&other, "t")
            .unwrap_err()
            .contains("layout 9"));
        let mut bad = handover();
        bad.config_text = "[service.a]\nrun = 3\n".into();
        assert!(Handover::accept(&bad.encode(), "t")
            .unwrap_err()
            .contains("does not validate"));
        bad = handover();
        bad.state[12] ^= 1;
        assert!(Handover::accept(&bad.encode(), "t")
            .unwrap_err()
            .contains("another medic version"));
        assert!(read("2").unwrap_err().contains("stdin, stdout or stderr"));
        assert!(read("/nonexistent/handover").is_err());
    }

    #[test]
    fn only_the_pipe_the_state_names_is_taken() {
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        let inode = crate::adopt::inode(&r).expect("inode");
        let raw = r.as_raw_fd();
        let record = |job: u64, pipes| statefile::ProcRecord {
            job: JobId(job),
            pid: 1,
            start_ticks: 1,
            tag: "t".into(),
            pipes,
        };
        let listed = |job: u64| Outputs {
            job: JobId(job),
            fds: [Some(raw), Some(raw)],
        };
        let other = take_outputs(&[listed(4)], &[record(4, [Some(inode + 1), None])]);
        assert!(other[&JobId(4)][0].is_none(), "another inode is not taken");
        assert!(take_outputs(&[listed(5)], &[record(4, [Some(inode), None])]).is_empty());
        let twice = [record(4, [Some(inode), Some(inode)])];
        let mut taken = take_outputs(&[listed(4)], &twice);
        let [out, err] = taken.remove(&JobId(4)).expect("listed");
        assert_eq!(out.as_ref().map(|f| f.as_raw_fd()), Some(raw));
        assert!(err.is_none(), "one number is owned once");
        std::mem::forget(r); // `out` owns it now
    }

    #[test]
    fn the_take_over_flag_is_replaced_not_repeated() {
        let args = exec_args(9);
        let n = args.len();
        assert_eq!(args[n - 2], TAKE_OVER_FLAG);
        assert_eq!(args[n - 1], "9");
        assert_eq!(args.iter().filter(|a| *a == TAKE_OVER_FLAG).count(), 1);
        set_cloexec(0, false).expect("fd 0 is open");
        assert!(set_cloexec(-1, true).is_err());
    }
}
