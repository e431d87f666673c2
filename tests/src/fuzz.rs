//! What each fuzz target does with its input (`fuzz/fuzz_targets/` include this file), shared
//! with the normal test suite, which runs every input in `fuzz/regressions/` and
//! `fuzz/seeds/` through the same code (`tests/tests/fuzz_regressions.rs`): each input a fuzzer
//! once crashed on stays a test.

use medic_io::control::{self, Request, Response, MAX_REQUEST_BYTES};
use medic_io::netlink::codec;
use medic_kernel::trace::{self, Record, Trace};
use medic_kernel::{config, Input, Instant, Kernel};

/// `config_parse`: any text to the config parser. Problems are errors with a place, never a
/// panic; a config that parses builds a kernel that boots with its invariants.
pub fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(text, "fuzz.toml") {
        Ok(config) => {
            let mut kernel = Kernel::new(config);
            let mut effects = Vec::new();
            kernel.step(Instant::ZERO, Input::Tick, &mut effects);
            assert_eq!(kernel.check_invariants(), Ok(()));
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty());
            assert!(errors.errors.len() <= config::MAX_REPORTED_ERRORS);
            assert!(errors.total >= errors.errors.len());
            let _ = errors.to_string();
        }
    }
}

/// The config of traces made from plain postcard.
const TRACE_CONFIG: &str = "[service.a]\nrun = [\"/bin/a\"]\n";

/// At most this many records from plain postcard, to keep each run short.
const MAX_RECORDS: usize = 512;

/// `trace_replay`: `medic replay` on any bytes. A trace file (`MEDICTRC…`) is decoded and, if
/// it decodes, replayed. Anything else is read as plain postcard, a kernel snapshot then
/// records, and framed into a trace file first, so that a fuzzer's changes reach the snapshot
/// without having to keep the COBS framing intact.
pub fn trace_replay(data: &[u8]) {
    if data.starts_with(&trace::MAGIC) {
        replay(data);
        return;
    }
    let Ok((snapshot, mut rest)) = postcard::take_from_bytes::<Kernel>(data) else {
        return;
    };
    let mut trace = Trace::new(TRACE_CONFIG, snapshot);
    while let Ok((record, tail)) = postcard::take_from_bytes::<Record>(rest) {
        if trace.records.len() == MAX_RECORDS {
            break;
        }
        trace.records.push(record);
        rest = tail;
    }
    replay(&trace.to_file_bytes());
}

fn replay(bytes: &[u8]) {
    if let Ok(trace) = trace::decode(bytes) {
        let _ = trace::replay(&trace).to_string();
    }
}

/// `control_decode`: the body of a control-socket frame, decoded as the daemon decodes a
/// request (and a client an answer). An error or a value; a decoded request re-encodes to
/// itself.
pub fn control_decode(data: &[u8]) {
    if let Ok(request) = control::decode_body::<Request>(data) {
        if let Ok(frame) = control::encode_frame(&request, MAX_REQUEST_BYTES) {
            let again: Request = control::decode_body(&frame[4..]).expect("re-encoded decodes");
            assert_eq!(again, request);
        }
    }
    let _ = control::decode_body::<Response>(data);
}

/// `netlink_parse`: a route-netlink datagram, as the link watcher receives it, to the codec.
/// Every item is a message or what was wrong with it, never a panic, and each takes at least
/// a message header of the datagram (the last may be the header that did not fit).
pub fn netlink_parse(data: &[u8]) {
    let items = codec::messages(data).count();
    assert!(items <= data.len() / codec::HEADER_LEN + 1);
}
