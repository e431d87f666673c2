//! The `control_decode` target: see `control_decode` in `tests/src/fuzz.rs`, which the normal test suite runs
//! on every input in `fuzz/regressions/control_decode/` and `fuzz/seeds/control_decode/`.
#![no_main]

#[path = "../../tests/src/fuzz.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::control_decode(data));
