//! `medic replay` on any bytes: a trace that does not decode is an error, one that decodes
//! replays, and nothing panics.
//!
//! Two ways in: a trace file (starts with `MEDICTRC`), or, so that mutations reach the kernel
//! snapshot without first having to keep the COBS framing intact, plain postcard: a kernel
//! snapshot then records, re-framed here as a trace file under a small config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medic_kernel::trace::{self, Record, Trace};
use medic_kernel::Kernel;

const CONFIG: &str = "[service.a]\nrun = [\"/bin/a\"]\n";

/// At most this many records from plain postcard, to keep each run short.
const MAX_RECORDS: usize = 512;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(&trace::MAGIC) {
        replay(data);
        return;
    }
    let Ok((snapshot, mut rest)) = postcard::take_from_bytes::<Kernel>(data) else {
        return;
    };
    let mut trace = Trace::new(CONFIG, snapshot);
    while let Ok((record, tail)) = postcard::take_from_bytes::<Record>(rest) {
        if trace.records.len() == MAX_RECORDS {
            break;
        }
        trace.records.push(record);
        rest = tail;
    }
    replay(&trace.to_file_bytes());
});

fn replay(bytes: &[u8]) {
    if let Ok(trace) = trace::decode(bytes) {
        let report = trace::replay(&trace);
        let _ = report.to_string();
    }
}
