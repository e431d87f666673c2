//! The config parser on any text: problems are errors with a place, never a panic; a config
//! that parses builds a kernel that boots.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medic_kernel::{config, Input, Instant, Kernel};

fuzz_target!(|data: &[u8]| {
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
});
