//! Traces (architecture.md §6): what the kernel was fed, so a run can be replayed bit for bit.
//!
//! A trace file is
//!
//! ```text
//! "MEDICTRC"                      8 bytes of magic
//! FORMAT_VERSION                  u32, little endian
//! frame: Header                   the config text and its digest
//! frame: Snapshot(Kernel)         the kernel state where the trace starts
//! frame: Step(Record) …           (now, Input, digest of the Effects that step produced)
//! frame: Snapshot(Kernel) …       later segments of a ring start with a snapshot again
//! ```
//!
//! Every frame is postcard, COBS-encoded and ended by a zero byte, so a file cut short in the
//! middle of a write (a torn tail) is recognised: the bytes after the last zero are skipped
//! and [`Trace::torn_tail`] says so.
//!
//! Everything here is pure: bytes in, bytes out. The daemon keeps a [`TraceRing`] in memory and
//! writes [`TraceRing::to_file_bytes`] on `medic trace save`; the simulator writes the same
//! format for a failing seed; `medic replay` and the simulator read it with [`decode`] and run
//! it with [`replay`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::kernel::Kernel;
use crate::protocol::{Effect, Input};
use crate::time::Instant;

/// The first eight bytes of every trace file.
pub const MAGIC: [u8; 8] = *b"MEDICTRC";

/// The version of the encoding of the header, the kernel snapshot, [`Input`] and [`Effect`].
/// Any change to how those encode bumps it (`sim/tests/golden.rs` fails until it is).
///
/// * 1: first format.
/// * 2: the kernel snapshot gained `stopped_for_needs`, `needs_restarts` and `start_gate`.
/// * 3: `RunCommand` carries the service's `Exec` context and a timeout, `Check` its `reports`
///   and context; `Effect::Sweep`; `Signal` says main process or group; a memory sample may
///   be unknown; a record carries when its outcome was decided; the snapshot keeps the medical
///   record as one sub-state and each instance's own definition; `Input::SpawnDeferred`.
/// * 4: a slot keeps its first job (a removed service's slot is reused); `every`,
///   `restart-every`, `at` and `jitter` in a service's definition, `clock-trusted-after`;
///   `Timer::Periodic` and `Timer::At`; `Input::WallClock`; `Input::Resume` and `Effect::Adopt`
///   (a daemon that survived its own crash), `ExitStatus::Unknown`.
/// * 5: `catch-up` in a service's definition; a saved service keeps its last run (`at_last`);
///   `Kind::Device` (a `device = {…}` service) and `Input::Devices`; the snapshot keeps the
///   present devices and what each device service matches. Outputs and templates (DESIGN §9):
///   `uses` and `template` in a service's definition; `Input::SetOutputs`, `Input::RenderDone`,
///   `Effect::Render`, `Timer::Render`; the snapshot keeps every service's outputs and render
///   state, the state file each service's outputs.
/// * 6: secrets and confirm-or-roll-back (DESIGN §10): `[daemon] secrets-dir`,
///   `TemplateSource::Secret` (a service's `[service.X.secret.NAME]` copies);
///   `Input::SecretSet`, `Input::SecretRemoved`, `Input::ApplyConfig`, `Input::Confirm`;
///   `Effect::Render` names the secrets' generations; `Effect::DropSecret`,
///   `Effect::ConfigRolledBack`; the snapshot keeps the secrets' generations, the change
///   waiting for its confirmation and a render's `waiting_secret`; a template's `secrets`
///   (the secrets its text reads with `secret("NAME")`).
/// * 7: a slot keeps whether it is in a planned restart or run (`planned`), the medical record
///   whether its stop for needs was for such a plan (`needs_planned`); the render state the
///   targets whose `on-change` a thrown-away answer left owed (`owed`).
pub const FORMAT_VERSION: u32 = 7;

/// FNV-1a, 64 bits: small, fast, and the same on every platform.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, its offset basis mixed with `seed`: the one small hash of medic (trace
/// digests, `jitter`, the host number).
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut f = Fnv(FNV_OFFSET ^ seed);
    bytes.iter().for_each(|&b| f.byte(b));
    f.0
}

/// Feeds postcard's output straight into FNV-1a, so digesting allocates nothing.
struct Fnv(u64);

impl Fnv {
    fn byte(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(FNV_PRIME);
    }
}

impl postcard::ser_flavors::Flavor for &mut Fnv {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.byte(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        for &b in data {
            self.byte(b);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn digest_of<T: Serialize + ?Sized>(fnv: &mut Fnv, value: &T) {
    // Serialising into a hasher cannot fail: the flavor never reports a full buffer.
    postcard::serialize_with_flavor::<T, &mut Fnv, ()>(value, fnv)
        .expect("postcard into a hasher cannot fail");
}

/// A deterministic digest of the effects of one step: FNV-1a 64 over their postcard encoding,
/// in order. The empty list has a digest too.
pub fn effects_digest(effects: &[Effect]) -> u64 {
    let mut fnv = Fnv(FNV_OFFSET);
    for effect in effects {
        digest_of(&mut fnv, effect);
    }
    fnv.0
}

/// FNV-1a 64 of a byte string (the config digest of the header).
pub fn bytes_digest(bytes: &[u8]) -> u64 {
    let mut fnv = Fnv(FNV_OFFSET);
    for &b in bytes {
        fnv.byte(b);
    }
    fnv.0
}

/// The header of a trace file, after the magic and the version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The format version the file was written with ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The config text in force when the trace began.
    pub config_text: String,
    /// [`bytes_digest`] of `config_text`.
    pub config_digest: u64,
}

impl Header {
    /// A header for `config_text` in the current format.
    pub fn new(config_text: &str) -> Header {
        Header {
            version: FORMAT_VERSION,
            config_text: config_text.to_string(),
            config_digest: bytes_digest(config_text.as_bytes()),
        }
    }
}

/// One step of the kernel: the input it was fed at `now` and the digest of what it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The `now` passed to [`Kernel::step`].
    pub now: Instant,
    /// The input.
    pub input: Input,
    /// [`effects_digest`] of the effects the step produced.
    pub effects_digest: u64,
}

/// A frame after the header.
#[derive(Serialize, Deserialize)]
enum Frame<K, R> {
    Snapshot(K),
    Step(R),
}

/// Encodes a frame, borrowing its contents.
fn frame_bytes(frame: &Frame<&Kernel, &Record>) -> Vec<u8> {
    postcard::to_stdvec_cobs(frame).expect("postcard into a Vec cannot fail")
}

fn step_bytes(now: Instant, input: &Input, effects: &[Effect]) -> Vec<u8> {
    #[derive(Serialize)]
    struct RecordRef<'a> {
        now: Instant,
        input: &'a Input,
        effects_digest: u64,
    }
    let record = RecordRef {
        now,
        input,
        effects_digest: effects_digest(effects),
    };
    postcard::to_stdvec_cobs(&Frame::<(), _>::Step(record)).expect("postcard into a Vec")
}

fn file_prefix(header: &Header) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + header.config_text.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&header.version.to_le_bytes());
    bytes.extend(postcard::to_stdvec_cobs(header).expect("postcard into a Vec"));
    bytes
}

/// The daemon's in-memory trace: the last `max_bytes` (roughly) of records, kept as segments
/// that each start with a kernel snapshot, so the oldest segment can be dropped whole and the
/// rest still replays.
///
/// Calling order, around every [`Kernel::step`]:
///
/// ```text
/// if ring.wants_snapshot() { ring.snapshot(&kernel); }   // before the step
/// kernel.step(now, input.clone(), &mut effects);
/// ring.record(now, &input, &effects);                    // after the step
/// ```
#[derive(Clone, Debug)]
pub struct TraceRing {
    header: Header,
    max_bytes: u64,
    /// Encoded frames, each segment a snapshot then steps; oldest first.
    segments: VecDeque<Segment>,
    bytes: u64,
}

#[derive(Clone, Debug)]
struct Segment {
    bytes: Vec<u8>,
    snapshot_len: usize,
}

impl TraceRing {
    /// An empty ring for a daemon started with `config_text`, holding about `max_bytes`
    /// (the config's `trace-size`). It wants a snapshot before the first step.
    pub fn new(config_text: &str, max_bytes: u64) -> TraceRing {
        TraceRing {
            header: Header::new(config_text),
            max_bytes: max_bytes.max(1),
            segments: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Whether [`TraceRing::snapshot`] should be called before the next step: at the start,
    /// and when the current segment is full. A segment is full at a quarter of the ring, or at
    /// twice its snapshot when snapshots are large, so snapshots never take most of the ring
    /// and a big kernel is not snapshotted on every step.
    pub fn wants_snapshot(&self) -> bool {
        match self.segments.back() {
            None => true,
            Some(seg) => {
                let limit = (self.max_bytes / 4).max(2 * seg.snapshot_len as u64);
                seg.bytes.len() as u64 >= limit
            }
        }
    }

    /// Starts a new segment with a snapshot of `kernel`, taken before the step about to be
    /// recorded. Drops the oldest segments while the ring is over its size (the newest
    /// segment is always kept).
    pub fn snapshot(&mut self, kernel: &Kernel) {
        let bytes = frame_bytes(&Frame::Snapshot(kernel));
        self.bytes += bytes.len() as u64;
        self.segments.push_back(Segment {
            snapshot_len: bytes.len(),
            bytes,
        });
        while self.bytes > self.max_bytes && self.segments.len() > 1 {
            let dropped = self.segments.pop_front().expect("more than one segment");
            self.bytes -= dropped.bytes.len() as u64;
        }
    }

    /// Records one step: the input fed at `now` and the effects it produced. A record before
    /// any snapshot is dropped, since it could never be replayed.
    pub fn record(&mut self, now: Instant, input: &Input, effects: &[Effect]) {
        let Some(seg) = self.segments.back_mut() else {
            return;
        };
        let bytes = step_bytes(now, input, effects);
        self.bytes += bytes.len() as u64;
        seg.bytes.extend_from_slice(&bytes);
    }

    /// A valid trace file: the header, then every kept segment from the oldest.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = file_prefix(&self.header);
        for seg in &self.segments {
            out.extend_from_slice(&seg.bytes);
        }
        out
    }

    /// Bytes held by the segments (the header is not counted).
    pub fn len_bytes(&self) -> u64 {
        self.bytes
    }
}

/// A decoded trace: where it starts and every step after.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The header.
    pub header: Header,
    /// The kernel state before the first record.
    pub snapshot: Kernel,
    /// Every complete record, in order. Later segments' snapshots are skipped: replay runs on
    /// from the first one.
    pub records: Vec<Record>,
    /// The file ended in the middle of a frame; that frame was skipped.
    pub torn_tail: bool,
}

impl Trace {
    /// A trace of a run that starts from `snapshot` under `config_text`, with no records yet
    /// (the simulator builds its traces this way).
    pub fn new(config_text: &str, snapshot: Kernel) -> Trace {
        Trace {
            header: Header::new(config_text),
            snapshot,
            records: Vec::new(),
            torn_tail: false,
        }
    }

    /// Appends a step.
    pub fn push(&mut self, now: Instant, input: Input, effects: &[Effect]) {
        self.records.push(Record {
            now,
            input,
            effects_digest: effects_digest(effects),
        });
    }

    /// The trace as a file, readable by [`decode`].
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = file_prefix(&self.header);
        out.extend(frame_bytes(&Frame::Snapshot(&self.snapshot)));
        for record in &self.records {
            out.extend(frame_bytes(&Frame::Step(record)));
        }
        out
    }

    /// A digest of the whole run: every record's time, input and effects digest.
    pub fn digest(&self) -> u64 {
        let mut fnv = Fnv(FNV_OFFSET);
        for record in &self.records {
            digest_of(&mut fnv, record);
        }
        fnv.0
    }
}

/// Why a trace file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceError {
    /// The file does not start with `MEDICTRC`.
    #[error("not a medic trace: the file does not start with MEDICTRC")]
    BadMagic,
    /// Written by another version of medic.
    #[error(
        "trace format version {found} is not supported (this medic reads version {supported}); \
         replay it with the medic that wrote it"
    )]
    Version {
        /// The file's version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file ends before the header and the first snapshot are complete.
    #[error("trace is truncated: it ends inside the {what}")]
    Truncated {
        /// `header` or `snapshot`.
        what: &'static str,
    },
    /// A frame that is complete but does not decode.
    #[error("trace is corrupt: frame {frame} at byte {offset} does not decode ({what})")]
    CorruptFrame {
        /// Index of the frame, the header being 0.
        frame: usize,
        /// Byte offset of the frame in the file.
        offset: usize,
        /// What was expected there and what postcard said.
        what: String,
    },
    /// The first snapshot decodes but is no state a kernel can be in ([`crate::snapshot::check`]).
    #[error(
        "trace is corrupt: the kernel snapshot at byte {offset} is inconsistent ({what}); \
         nothing was replayed"
    )]
    BadSnapshot {
        /// Byte offset of the snapshot's frame in the file.
        offset: usize,
        /// What is wrong with it.
        what: String,
    },
}

/// Reads a trace file. A torn last frame is skipped ([`Trace::torn_tail`]); a damaged frame
/// before the end is an error, and so is a snapshot that decodes to an inconsistent kernel
/// ([`TraceError::BadSnapshot`]): what [`decode`] returns, [`replay`] can run.
pub fn decode(bytes: &[u8]) -> Result<Trace, TraceError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(TraceError::BadMagic);
    }
    let rest = &bytes[MAGIC.len()..];
    let Some(version) = rest.get(..4) else {
        return Err(TraceError::Truncated { what: "header" });
    };
    let version = u32::from_le_bytes(version.try_into().expect("four bytes"));
    if version != FORMAT_VERSION {
        return Err(TraceError::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let mut offset = MAGIC.len() + 4;
    let mut frame_index = 0usize;
    let mut header: Option<Header> = None;
    let mut snapshot: Option<Kernel> = None;
    let mut snapshot_offset = 0;
    let mut records = Vec::new();
    let mut torn_tail = false;
    let mut scratch = Vec::new();
    while offset < bytes.len() {
        let tail = &bytes[offset..];
        let Some(len) = tail.iter().position(|&b| b == 0) else {
            // No terminating zero: the write was cut short.
            torn_tail = true;
            break;
        };
        scratch.clear();
        scratch.extend_from_slice(&tail[..len]);
        let corrupt = |what: String| TraceError::CorruptFrame {
            frame: frame_index,
            offset,
            what,
        };
        let is_last = offset + len + 1 == bytes.len();
        if header.is_none() {
            let h: Header = postcard::from_bytes_cobs(&mut scratch)
                .map_err(|e| corrupt(format!("header: {e}")))?;
            header = Some(h);
        } else {
            match postcard::from_bytes_cobs::<Frame<Kernel, Record>>(&mut scratch) {
                Ok(Frame::Snapshot(k)) => {
                    if snapshot.is_none() {
                        snapshot = Some(k);
                        snapshot_offset = offset;
                    }
                }
                Ok(Frame::Step(r)) => {
                    if snapshot.is_none() {
                        return Err(corrupt("a step before any snapshot".into()));
                    }
                    records.push(r);
                }
                // A frame whose zero byte landed but whose start was lost is as torn as one
                // without its zero; only the last frame may be torn.
                Err(_) if is_last && snapshot.is_some() => {
                    torn_tail = true;
                }
                Err(e) => {
                    let what = if snapshot.is_none() {
                        "snapshot"
                    } else {
                        "step"
                    };
                    return Err(corrupt(format!("{what}: {e}")));
                }
            }
        }
        offset += len + 1;
        frame_index += 1;
    }
    let Some(header) = header else {
        return Err(TraceError::Truncated { what: "header" });
    };
    let Some(snapshot) = snapshot else {
        return Err(TraceError::Truncated { what: "snapshot" });
    };
    // Replay starts from this state: it must be one the kernel can step from without panicking.
    crate::snapshot::check(&snapshot).map_err(|what| TraceError::BadSnapshot {
        offset: snapshot_offset,
        what,
    })?;
    Ok(Trace {
        header,
        snapshot,
        records,
        torn_tail,
    })
}

/// The first step whose effects differ from the recorded ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// Index of the step, from 0.
    pub step: u64,
    /// Its `now`.
    pub now: Instant,
    /// Its input.
    pub input: Input,
    /// The digest in the trace.
    pub recorded: u64,
    /// The digest this kernel produced.
    pub replayed: u64,
}

/// What [`replay`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayReport {
    steps: u64,
    divergence: Option<Divergence>,
    torn_tail: bool,
}

impl ReplayReport {
    /// Every step reproduced its recorded effects digest.
    pub fn identical(&self) -> bool {
        self.divergence.is_none()
    }

    /// Steps replayed (up to and including the divergent one).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The first divergent step, if any.
    pub fn divergence(&self) -> Option<&Divergence> {
        self.divergence.as_ref()
    }
}

impl core::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.divergence {
            None => write!(f, "{} steps replayed, identical", self.steps)?,
            Some(d) => write!(
                f,
                "step {} diverges: at {} input {:?}: recorded effects digest {:016x}, \
                 replayed {:016x}",
                d.step, d.now, d.input, d.recorded, d.replayed
            )?,
        }
        if self.torn_tail {
            write!(f, " (a torn last record was skipped)")?;
        }
        Ok(())
    }
}

/// Rebuilds the kernel from the trace's snapshot, feeds every input and compares every effects
/// digest; stops at the first divergence.
pub fn replay(trace: &Trace) -> ReplayReport {
    let mut kernel = trace.snapshot.clone();
    let mut effects = Vec::new();
    let mut steps = 0;
    for record in &trace.records {
        effects.clear();
        kernel.step(record.now, record.input.clone(), &mut effects);
        steps += 1;
        let replayed = effects_digest(&effects);
        if replayed != record.effects_digest {
            return ReplayReport {
                steps,
                divergence: Some(Divergence {
                    step: steps - 1,
                    now: record.now,
                    input: record.input.clone(),
                    recorded: record.effects_digest,
                    replayed,
                }),
                torn_tail: trace.torn_tail,
            };
        }
    }
    ReplayReport {
        steps,
        divergence: None,
        torn_tail: trace.torn_tail,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fnv1a_is_the_standard_one_with_a_seed_mixed_in() {
        assert_eq!(super::fnv1a(0, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(0, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(super::fnv1a(1, b"a"), super::fnv1a(0, b"a"));
    }

    use super::*;
    use crate::config;

    const TEXT: &str =
        "[service.a]\nrun = [\"/bin/a\"]\n\n[service.b]\nrun = [\"/bin/b\"]\nneeds = [\"a\"]\n";

    fn kernel() -> Kernel {
        Kernel::new(config::parse(TEXT, "t").expect("valid"))
    }

    /// Boots, then lets `a` crash once: a handful of steps with effects.
    fn run(ring: &mut TraceRing, trace: &mut Trace) {
        run_long(ring, trace, 0)
    }

    /// [`run`], then `extra` ticks.
    fn run_long(ring: &mut TraceRing, trace: &mut Trace, extra: u64) {
        let mut k = kernel();
        let a = k.lookup("a").expect("a");
        let mut effects = Vec::new();
        let inputs = [
            (0, Input::Tick),
            (
                1,
                Input::Spawned {
                    service: a,
                    job: crate::JobId(1),
                    pid: 10,
                },
            ),
            (
                5,
                Input::Exited {
                    service: a,
                    job: crate::JobId(1),
                    status: crate::ExitStatus::Code(1),
                },
            ),
            (1_000, Input::Tick),
            (2_000, Input::Tick),
        ];
        let ticks = (0..extra).map(|i| (3_000 + i, Input::Tick));
        for (ms, input) in inputs.into_iter().chain(ticks) {
            if ring.wants_snapshot() {
                ring.snapshot(&k);
            }
            effects.clear();
            let now = Instant::from_millis(ms);
            k.step(now, input.clone(), &mut effects);
            ring.record(now, &input, &effects);
            trace.push(now, input, &effects);
        }
    }

    #[test]
    fn ring_file_replays_identically() {
        let mut ring = TraceRing::new(TEXT, 1 << 20);
        let mut trace = Trace::new(TEXT, kernel());
        run(&mut ring, &mut trace);
        let decoded = decode(&ring.to_file_bytes()).expect("decodes");
        assert_eq!(decoded.records.len(), 5);
        assert!(!decoded.torn_tail);
        assert_eq!(decoded.header.config_text, TEXT);
        let report = replay(&decoded);
        assert!(report.identical(), "{report}");
        assert_eq!(report.to_string(), "5 steps replayed, identical");
        let again = decode(&trace.to_file_bytes()).expect("decodes");
        assert_eq!(again.digest(), trace.digest());
    }

    #[test]
    fn torn_tail_is_skipped_and_corruption_reported() {
        let mut ring = TraceRing::new(TEXT, 1 << 20);
        let mut trace = Trace::new(TEXT, kernel());
        run(&mut ring, &mut trace);
        let bytes = ring.to_file_bytes();
        let torn = decode(&bytes[..bytes.len() - 3]).expect("torn tail is fine");
        assert!(torn.torn_tail);
        assert_eq!(torn.records.len(), 4);
        assert!(replay(&torn).identical());

        assert_eq!(decode(b"NOTATRACE").unwrap_err(), TraceError::BadMagic);
        let mut v2 = bytes.clone();
        v2[8] = 9;
        assert!(matches!(
            decode(&v2),
            Err(TraceError::Version { found: 9, .. })
        ));
    }

    #[test]
    fn a_changed_digest_is_the_reported_divergence() {
        let mut ring = TraceRing::new(TEXT, 1 << 20);
        let mut trace = Trace::new(TEXT, kernel());
        run(&mut ring, &mut trace);
        trace.records[2].effects_digest ^= 1;
        let report = replay(&trace);
        assert!(!report.identical());
        assert_eq!(report.steps(), 3);
        assert_eq!(report.divergence().expect("diverges").step, 2);
        assert!(
            report.to_string().starts_with("step 2 diverges"),
            "{report}"
        );
    }

    /// The digests a replay compares are FNV-1a 64 over the effects' postcard encoding, so a
    /// trace from one build replays against another; a digest that ignored its input would
    /// let every changed kernel replay as "identical".
    #[test]
    fn digests_are_fnv1a_of_the_postcard_encoding() {
        assert_eq!(bytes_digest(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(bytes_digest(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(bytes_digest(b"a"), fnv1a(0, b"a"));
        assert_eq!(effects_digest(&[]), bytes_digest(b""));
        let notice = Effect::Notice {
            message: "wall clock trusted".into(),
        };
        let sweep = Effect::Sweep {
            service: crate::ServiceId(1),
            job: crate::JobId(7),
        };
        let mut bytes = postcard::to_allocvec(&notice).expect("encodes");
        assert_eq!(
            effects_digest(std::slice::from_ref(&notice)),
            bytes_digest(&bytes)
        );
        bytes.extend(postcard::to_allocvec(&sweep).expect("encodes"));
        assert_eq!(
            effects_digest(&[notice.clone(), sweep.clone()]),
            bytes_digest(&bytes)
        );
        assert_ne!(
            effects_digest(&[notice.clone(), sweep.clone()]),
            effects_digest(&[sweep, notice])
        );
    }

    /// A segment is full at a quarter of the ring, or at twice its snapshot: not before,
    /// and not long after.
    #[test]
    fn a_snapshot_is_wanted_when_the_segment_is_full_and_not_before() {
        let mut k = kernel();
        for max in [40_000, 1_000] {
            let mut ring = TraceRing::new(TEXT, max);
            assert!(ring.wants_snapshot(), "before the first step");
            ring.snapshot(&k);
            let snapshot = ring.segments.back().unwrap().snapshot_len as u64;
            let limit = (max / 4).max(2 * snapshot);
            let mut effects = Vec::new();
            let mut ms = 0;
            while !ring.wants_snapshot() {
                let before = ring.segments.back().unwrap().bytes.len() as u64;
                assert!(before < limit, "{before} bytes, limit {limit}");
                effects.clear();
                let now = Instant::from_millis(ms);
                k.step(now, Input::Tick, &mut effects);
                ring.record(now, &Input::Tick, &effects);
                ms += 1_000;
            }
            let full = ring.segments.back().unwrap().bytes.len() as u64;
            assert!(
                full >= limit && full < limit + 64,
                "{full} bytes, limit {limit}"
            );
            assert!(ms > 1_000, "more than one step fits: {ms}");
        }
    }

    /// The ring keeps about its size of the newest steps: never much more (a router's memory),
    /// never much less (what `medic trace save` has before a failure), and its count of bytes
    /// is what it holds. A ring smaller than one snapshot keeps the newest segment.
    #[test]
    fn the_ring_keeps_about_its_size_and_counts_what_it_holds() {
        for max in [4_096u64, 16_384] {
            let mut ring = TraceRing::new(TEXT, max);
            let mut trace = Trace::new(TEXT, kernel());
            run_long(&mut ring, &mut trace, 4_000);
            let held: u64 = ring.segments.iter().map(|s| s.bytes.len() as u64).sum();
            assert_eq!(ring.len_bytes(), held, "the count is what it holds");
            let prefix = file_prefix(&ring.header).len() as u64;
            let file = ring.to_file_bytes().len() as u64 - prefix;
            assert_eq!(file, held);
            assert!(held <= max, "{held} bytes in a ring of {max}");
            assert!(held >= max / 2, "only {held} bytes kept of {max}");
            assert!(ring.segments.len() > 1, "more than the newest segment");
        }
        let mut tiny = TraceRing::new(TEXT, 16);
        let mut trace = Trace::new(TEXT, kernel());
        run_long(&mut tiny, &mut trace, 20);
        let decoded = decode(&tiny.to_file_bytes()).expect("the newest segment is kept");
        assert!(replay(&decoded).identical());
    }

    /// A damaged frame in the middle is an error; a damaged last frame (its zero written) is a
    /// torn tail; a file that is only the magic lacks its header.
    #[test]
    fn a_damaged_middle_frame_is_an_error_and_a_damaged_last_one_a_torn_tail() {
        let mut ring = TraceRing::new(TEXT, 1 << 20);
        let mut trace = Trace::new(TEXT, kernel());
        run(&mut ring, &mut trace);
        let bytes = ring.to_file_bytes();
        let garbage = [0xff, 0xff, 0x00];
        // After the snapshot (the second frame): the frame boundaries are the zero bytes.
        let zeros: Vec<usize> = (MAGIC.len() + 4..bytes.len())
            .filter(|&i| bytes[i] == 0)
            .collect();
        let mut middle = bytes[..=zeros[1]].to_vec();
        middle.extend_from_slice(&garbage);
        middle.extend_from_slice(&bytes[zeros[1] + 1..]);
        assert!(
            matches!(
                decode(&middle),
                Err(TraceError::CorruptFrame { frame: 2, .. })
            ),
            "{:?}",
            decode(&middle).map(|t| t.records.len())
        );
        let mut last = bytes.clone();
        last.extend_from_slice(&garbage);
        let torn = decode(&last).expect("a torn tail is fine");
        assert!(torn.torn_tail);
        assert_eq!(torn.records.len(), 5);
        assert!(replay(&torn).identical());
        assert_eq!(
            decode(&MAGIC).unwrap_err(),
            TraceError::Truncated { what: "header" }
        );
        assert_eq!(decode(&MAGIC[..3]).unwrap_err(), TraceError::BadMagic);
    }

    #[test]
    fn small_ring_drops_old_segments_and_still_replays() {
        let mut ring = TraceRing::new(TEXT, 4096);
        let mut trace = Trace::new(TEXT, kernel());
        run_long(&mut ring, &mut trace, 2_000);
        assert!(
            ring.len_bytes() <= 4096 + 4096 / 4 + 64,
            "{} bytes",
            ring.len_bytes()
        );
        let decoded = decode(&ring.to_file_bytes()).expect("decodes");
        assert!(decoded.records.len() < 2_005, "old segments dropped");
        assert!(!decoded.records.is_empty());
        assert!(replay(&decoded).identical());
    }
}

/// Issue 9: `medic replay` of a trace with a corrupt snapshot panicked (an index out of bounds
/// in the kernel): every single-byte change of a snapshot must give an error or a replay.
#[cfg(test)]
mod corrupt_snapshots {
    use super::*;
    use crate::config;
    use crate::protocol::{ExitStatus, LinkState};

    const TEXT: &str = "[service.wan]\ninterface = \"eth0\"\n\n[service.a]\nrun = [\"/bin/a\"]\n\
                        needs = [\"wan\"]\nreload-on = [\"/etc/a\"]\nprobe = { file = \"/f\" }\n\n\
                        [service.b]\noneshot = [\"/bin/b\"]\nafter = [\"a\"]\n";

    /// A run with links, spawns, a crash, timers and history: a snapshot after some of it, and
    /// the records of the rest.
    fn trace() -> Trace {
        let mut k = Kernel::new(config::parse(TEXT, "t").expect("valid"));
        let mut out = Vec::new();
        let mut trace = None;
        let mut inputs = vec![
            Input::Tick,
            Input::LinkChanged {
                ifname: "eth0".into(),
                link: Some(LinkState {
                    admin_up: true,
                    carrier: true,
                    ..LinkState::default()
                }),
            },
        ];
        for ms in 0..30u64 {
            if ms == 6 {
                trace = Some(Trace::new(TEXT, k.clone()));
            }
            let input = inputs.pop().unwrap_or(Input::Tick);
            let now = Instant::from_millis(ms * 700);
            out.clear();
            k.step(now, input.clone(), &mut out);
            if let Some(t) = trace.as_mut() {
                t.push(now, input, &out);
            }
            for effect in &out {
                if let Effect::Spawn { service, job, .. } = *effect {
                    inputs.push(Input::Spawned {
                        service,
                        job,
                        pid: 9,
                    });
                    if ms < 10 {
                        let status = ExitStatus::Code(2);
                        inputs.insert(
                            0,
                            Input::Exited {
                                service,
                                job,
                                status,
                            },
                        );
                    }
                }
            }
        }
        trace.expect("snapshot taken")
    }

    #[test]
    fn every_single_byte_change_of_a_snapshot_is_refused_or_replays() {
        let good = trace();
        assert!(replay(&good).identical());
        let bytes = postcard::to_stdvec(&good.snapshot).expect("encodes");
        let (mut decoded, mut refused) = (0, 0);
        for i in 0..bytes.len() {
            let b = bytes[i];
            for v in [
                0,
                1,
                2,
                3,
                0x7f,
                0x80,
                0xff,
                b ^ 1,
                b.wrapping_add(1),
                b.wrapping_sub(1),
            ] {
                let mut bad = bytes.clone();
                bad[i] = v;
                let Ok(snapshot) = postcard::from_bytes::<Kernel>(&bad) else {
                    continue;
                };
                decoded += 1;
                let mut t = Trace::new(TEXT, snapshot);
                t.records = good.records.clone();
                match decode(&t.to_file_bytes()) {
                    Ok(t) => {
                        let _ = replay(&t).to_string(); // must not panic
                    }
                    Err(TraceError::BadSnapshot { .. }) => refused += 1,
                    Err(e) => panic!("byte {i} = {v}: unexpected {e}"),
                }
            }
        }
        // The test reaches the kernel: many changes decode, and some are refused.
        assert!(
            decoded > 1000 && refused > 100,
            "{decoded} decoded, {refused} refused"
        );
    }

    #[test]
    fn a_snapshot_naming_a_service_it_does_not_have_is_named_in_the_error() {
        let good = trace();
        let mut bytes = postcard::to_stdvec(&good.snapshot).expect("encodes");
        // The last fields are next_job, now (varints), three bools, the wall clock (`None`: one
        // byte) and a bool; before them the timer queue, whose last entry is
        // (Instant, ServiceId, Timer): make that id 99.
        let mut k: Kernel = postcard::from_bytes(&bytes).expect("decodes");
        let mut file = Trace::new(TEXT, k.clone()).to_file_bytes();
        assert!(decode(&file).is_ok());
        assert!(k.wall.is_none());
        let tail = 5 + varint_len(k.now().as_nanos()) + varint_len(next_job(&bytes, &k));
        let at = bytes.len() - tail - 2; // the id, just before the timer kind
        assert_eq!(
            bytes[at] as usize, 1,
            "the last timer belongs to service #1"
        );
        bytes[at] = 99;
        k = postcard::from_bytes(&bytes).expect("still decodes");
        file = Trace::new(TEXT, k).to_file_bytes();
        let err = decode(&file).expect_err("refused");
        assert!(matches!(err, TraceError::BadSnapshot { .. }), "{err}");
        assert!(err.to_string().contains("nothing was replayed"), "{err}");
    }

    fn varint_len(mut n: u64) -> usize {
        let mut len = 1;
        while n >= 0x80 {
            n >>= 7;
            len += 1;
        }
        len
    }

    /// The snapshot's `next_job`, read back from its encoding's tail.
    fn next_job(bytes: &[u8], k: &Kernel) -> u64 {
        let end = bytes.len() - 5 - varint_len(k.now().as_nanos());
        let mut start = end - 1;
        while start > 0 && bytes[start - 1] & 0x80 != 0 {
            start -= 1;
        }
        let mut n = 0u64;
        for (shift, b) in bytes[start..end].iter().enumerate() {
            n |= u64::from(b & 0x7f) << (7 * shift);
        }
        n
    }
}
