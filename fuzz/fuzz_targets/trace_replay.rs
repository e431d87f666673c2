//! The `trace_replay` target: see `trace_replay` in `tests/src/fuzz.rs`, which the normal test suite runs
//! on every input in `fuzz/regressions/trace_replay/` and `fuzz/seeds/trace_replay/`.
#![no_main]

#[path = "../../tests/src/fuzz.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::trace_replay(data));
