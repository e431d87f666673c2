//! The `netlink_parse` target: see `netlink_parse` in `tests/src/fuzz.rs`, which the normal test suite runs
//! on every input in `fuzz/regressions/netlink_parse/` and `fuzz/seeds/netlink_parse/`.
#![no_main]

#[path = "../../tests/src/fuzz.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::netlink_parse(data));
