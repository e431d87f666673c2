//! The `config_parse` target: see `config_parse` in `tests/src/fuzz.rs`, which the normal test suite runs
//! on every input in `fuzz/regressions/config_parse/` and `fuzz/seeds/config_parse/`.
#![no_main]

#[path = "../../tests/src/fuzz.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::config_parse(data));
