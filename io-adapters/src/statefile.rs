//! `STATE_DIR/state`: what a daemon leaves for the next one if it crashes (DESIGN §13).
//!
//! ```text
//! "MEDICSTA"                 8 bytes of magic
//! LAYOUT                     u32 LE: this file's own layout
//! trace::FORMAT_VERSION      u32 LE: the encoding of the kernel types inside
//! payload                    postcard of [`StateFile`], COBS-framed (the trace's encoding:
//!                            the binary carries one copy of the code that encodes kernel state)
//! FNV-1a 64 of the payload   u64 LE: a torn or corrupt file is recognised
//! ```
//!
//! * **Written when it changes, never on a timer**: the loop marks it dirty when a step wrote a
//!   history record or a process started or ended, and rewrites it once that round of inputs
//!   is done. Atomically: a temporary file in the state dir, `fsync`, `rename` over `state`,
//!   `fsync` of the directory. A crash mid-write leaves the previous file whole.
//! * **Bounded**: at most [`MAX_STATE_BYTES`]. A state over it is written without the
//!   histories (strikes and processes, which keep services from running twice, are kept);
//!   a file over it is not read at all.
//! * **Read defensively**: missing is a first start; wrong magic, another layout or format
//!   version, a bad checksum or a payload that does not decode is reported and ignored (the
//!   daemon starts as if there were none). Never a crash, never a refusal to supervise.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use medic_kernel::trace::{bytes_digest, FORMAT_VERSION};
use medic_kernel::{JobId, Saved};
use serde::{Deserialize, Serialize};

/// The state file's name in the state dir.
pub const STATE_NAME: &str = "state";
/// Its temporary name while it is written.
const TEMP_NAME: &str = "state.tmp";
/// The most a state file may hold (about 100 services with full 64-record histories take
/// 300 KiB).
pub const MAX_STATE_BYTES: usize = 4 << 20;
const MAGIC: [u8; 8] = *b"MEDICSTA";
/// The layout of this file (the header, the [`StateFile`] fields, the checksum).
const LAYOUT: u32 = 1;
const HEADER_LEN: usize = 16;

/// Everything in a state file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// `/proc/sys/kernel/random/boot_id` when it was written: processes of another boot are
    /// never taken for ours, whatever their pids.
    pub boot_id: String,
    /// `CLOCK_MONOTONIC` nanoseconds at the kernel's time origin: a daemon that takes the state
    /// back keeps the same origin, so every instant in it still means the same moment.
    pub origin_ns: u64,
    /// What the kernel keeps.
    pub kernel: Saved,
    /// What the adapter knows of each live process, to tell it is still the same one.
    pub procs: Vec<ProcRecord>,
}

/// One live process of a service, as the adapter knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// The kernel's job.
    pub job: JobId,
    /// Its pid.
    pub pid: u32,
    /// Its start time, field 22 of `/proc/PID/stat` (clock ticks since boot).
    pub start_ticks: u64,
    /// Its `MEDIC_INSTANCE`.
    pub tag: String,
    /// The inode of the pipe of its stdout and of its stderr, when captured.
    pub pipes: [Option<u64>; 2],
}

/// The bytes of `state`.
pub fn encode(state: &StateFile) -> Vec<u8> {
    let payload = postcard::to_stdvec_cobs(state).expect("postcard into a Vec cannot fail");
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len() + 8);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&LAYOUT.to_le_bytes());
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&payload);
    bytes.extend_from_slice(&bytes_digest(&payload).to_le_bytes());
    bytes
}

/// The state in `bytes`, or why it cannot be used.
pub fn decode(bytes: &[u8]) -> Result<StateFile, String> {
    if bytes.len() < HEADER_LEN + 8 || bytes[..8] != MAGIC {
        return Err("not a medic state file".into());
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let (layout, format) = (word(8), word(12));
    if layout != LAYOUT || format != FORMAT_VERSION {
        return Err(format!(
            "written by another medic version (layout {layout}, format {format}; this one \
             reads layout {LAYOUT}, format {FORMAT_VERSION})"
        ));
    }
    let (payload, sum) = bytes[HEADER_LEN..].split_at(bytes.len() - HEADER_LEN - 8);
    let sum = u64::from_le_bytes(sum.try_into().expect("8 bytes"));
    if bytes_digest(payload) != sum {
        return Err("its checksum does not match (torn or corrupt)".into());
    }
    match postcard::from_bytes_cobs::<StateFile>(&mut payload.to_vec()) {
        Ok(state) => Ok(state),
        Err(e) => Err(format!("it does not decode: {e}")),
    }
}

/// Replaces `dir/state` with `bytes` atomically: a temporary file, `fsync`, `rename`, `fsync`
/// of the directory.
pub fn write(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = dir.join(TEMP_NAME);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, dir.join(STATE_NAME))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The bytes of `dir/state`: `Ok(None)` when there is none, `Err` (in words) when it cannot
/// be read or is over [`MAX_STATE_BYTES`].
pub fn read(dir: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let path = dir.join(STATE_NAME);
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let mut bytes = Vec::new();
    let limit = MAX_STATE_BYTES as u64 + 1;
    if let Err(e) = file.take(limit).read_to_end(&mut bytes) {
        return Err(format!("cannot read it: {e}"));
    }
    if bytes.len() > MAX_STATE_BYTES {
        return Err(format!("it is over {MAX_STATE_BYTES} bytes"));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> StateFile {
        let config =
            medic_kernel::config::parse("[service.a]\nrun = [\"/bin/a\"]\n", "t").expect("valid");
        StateFile {
            boot_id: "b".into(),
            origin_ns: 42,
            kernel: medic_kernel::Kernel::new(config).saved(),
            procs: vec![ProcRecord {
                job: JobId(3),
                pid: 77,
                start_ticks: 9,
                tag: "t.3".into(),
                pipes: [Some(1), None],
            }],
        }
    }

    #[test]
    fn a_state_round_trips_and_damage_is_refused_in_words() {
        let bytes = encode(&state());
        assert_eq!(decode(&bytes), Ok(state()));
        let mut torn = bytes.clone();
        torn.truncate(bytes.len() - 3);
        assert!(decode(&torn).unwrap_err().contains("checksum"));
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 2] ^= 0x55;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
        let mut other = bytes.clone();
        other[12] = other[12].wrapping_add(1);
        assert!(decode(&other)
            .unwrap_err()
            .contains("another medic version"));
        assert!(decode(b"garbage")
            .unwrap_err()
            .contains("not a medic state file"));
        assert!(decode(&[]).is_err());
    }

    /// 100 services, each with a live process: the state file's size at boot and with every
    /// history full (64 records), and both under the bound.
    #[test]
    fn a_hundred_services_fit_with_full_histories() {
        use medic_kernel::{Effect, ExitStatus, Input, Instant};
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!(
                "[service.service-{i}]\nrun = [\"/usr/sbin/daemon-{i}\", \"-f\", \"/etc/d{i}.conf\"]\n\
                 give-up-after = 1000\nmax-backoff = \"1s\"\n\n"
            ));
        }
        let config = medic_kernel::config::parse(&text, "t").expect("valid");
        let mut k = medic_kernel::Kernel::new(config);
        let mut out = Vec::new();
        let state_size = |k: &medic_kernel::Kernel| {
            let procs = k
                .views()
                .filter_map(|v| {
                    Some(ProcRecord {
                        job: v.job()?,
                        pid: v.pid()?,
                        start_ticks: 123_456_789,
                        tag: format!("0123456789abcdef.{}", v.job()?.0),
                        pipes: [Some(1_234_567), Some(1_234_568)],
                    })
                })
                .collect();
            let state = StateFile {
                boot_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
                origin_ns: 1,
                kernel: k.saved(),
                procs,
            };
            encode(&state).len()
        };
        let mut at = 0;
        let mut first = 0;
        for round in 0..60 {
            // Every process crashes, then the restarts are answered.
            let running: Vec<_> = k.views().filter_map(|v| Some((v.id(), v.job()?))).collect();
            for (service, job) in running {
                let status = ExitStatus::Code(1);
                let exited = Input::Exited {
                    service,
                    job,
                    status,
                };
                k.step(Instant::from_millis(at), exited, &mut out);
            }
            at += 2_000;
            k.step(Instant::from_millis(at), Input::Tick, &mut out);
            let spawns: Vec<_> = out
                .drain(..)
                .filter_map(|e| match e {
                    Effect::Spawn { service, job, .. } => Some((service, job)),
                    _ => None,
                })
                .collect();
            for (service, job) in spawns {
                let pid = 10_000 + job.0 as u32;
                k.step(
                    Instant::from_millis(at),
                    Input::Spawned { service, job, pid },
                    &mut out,
                );
            }
            if round == 0 {
                first = state_size(&k);
            }
        }
        let min = k.views().map(|v| v.history().len()).min();
        assert_eq!(
            min,
            Some(64),
            "{:?}",
            k.views().next().map(|v| v.history().lines())
        );
        let full = state_size(&k);
        eprintln!("state file at 100 services: {first} bytes at boot, {full} with full histories");
        assert!(full < MAX_STATE_BYTES / 4, "{full}");
    }

    #[test]
    fn writes_replace_the_file_whole_and_reads_are_bounded() {
        let dir = std::env::temp_dir().join(format!("medic-statefile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read(&dir), Ok(None));
        write(&dir, b"one").unwrap();
        write(&dir, b"two!").unwrap();
        assert_eq!(read(&dir), Ok(Some(b"two!".to_vec())));
        assert!(!dir.join(TEMP_NAME).exists());
        std::fs::write(dir.join(STATE_NAME), vec![0u8; MAX_STATE_BYTES + 1]).unwrap();
        assert!(read(&dir).unwrap_err().contains("over"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
