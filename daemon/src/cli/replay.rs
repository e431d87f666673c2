//! `medic replay FILE [--verbose]`: re-run a trace through the kernel, without a daemon.

use std::path::Path;

use medic_kernel::trace;

use super::Failure;

/// Replays the trace in `file`; prints the report, and with `verbose` the header and every
/// step replayed first. A divergence or an unreadable trace is a failure (exit 1).
pub fn run(file: &Path, verbose: bool) -> Result<(), Failure> {
    let name = file.display();
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::failed(format!("cannot read the trace {name}: {e}")))?;
    let trace = trace::decode(&bytes).map_err(|e| Failure::failed(format!("{name}: {e}")))?;
    let report = trace::replay(&trace);
    if verbose {
        let h = &trace.header;
        println!(
            "{name}: trace format {}, config of {} bytes (digest {:016x}), {} steps{}",
            h.version,
            h.config_text.len(),
            h.config_digest,
            trace.records.len(),
            if trace.torn_tail {
                ", torn last record skipped"
            } else {
                ""
            }
        );
        let replayed = usize::try_from(report.steps()).unwrap_or(usize::MAX);
        for (i, r) in trace.records.iter().take(replayed).enumerate() {
            println!(
                "step {i} at {}: {:?} -> effects {:016x}",
                r.now, r.input, r.effects_digest
            );
        }
    }
    println!("{report}");
    if report.identical() {
        Ok(())
    } else {
        Err(Failure::failed(String::new()))
    }
}
