//! `medic replay`: a trace re-run through the kernel is identical (exit 0), a tampered one names
//! the first divergent step (exit 1), and a file that is no trace is refused (exit 1). No daemon.

use std::path::{Path, PathBuf};

use medic_kernel::trace::Trace;
use medic_kernel::{Effect, ExitStatus, Input, Instant, Kernel};
use medic_tests::medic;

const CONFIG: &str = r#"
[service.flaky]
run = ["/bin/false"]

[service.after]
run = ["/bin/sleep", "1000"]
needs = ["flaky"]
"#;

/// A trace of a short run: boot, spawns answered, `flaky` crashing twice, time passing.
fn recorded_run() -> Trace {
    let config = medic_kernel::config::parse(CONFIG, "replay.toml").unwrap();
    let mut kernel = Kernel::new(config);
    let mut trace = Trace::new(CONFIG, kernel.clone());
    let mut effects = Vec::new();
    let mut now = Instant::ZERO;
    let mut inputs = vec![Input::Tick];
    let mut pid = 100;
    for _ in 0..40 {
        let input = inputs.pop().unwrap_or(Input::Tick);
        effects.clear();
        kernel.step(now, input.clone(), &mut effects);
        trace.push(now, input, &effects);
        for effect in &effects {
            if let Effect::Spawn { service, job, .. } = effect {
                pid += 1;
                let (service, job) = (*service, *job);
                if kernel.name(service) == "flaky" {
                    inputs.push(Input::Exited {
                        service,
                        job,
                        status: ExitStatus::Code(1),
                    });
                }
                inputs.push(Input::Spawned { service, job, pid });
            }
        }
        now = now + std::time::Duration::from_millis(250);
    }
    trace
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn replay(args: &[&str]) -> (Option<i32>, String, String) {
    let out = medic(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_recorded_run_replays_identically() {
    let dir = tempfile::tempdir().unwrap();
    let trace = recorded_run();
    let file = write(dir.path(), "run.trace", &trace.to_file_bytes());
    let (code, stdout, stderr) = replay(&["replay", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("{} steps replayed, identical", trace.records.len())
    );

    let (code, stdout, _) = replay(&["replay", "--verbose", file.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("trace format"), "{stdout}");
    assert!(stdout.contains("step 0 at 0.000s: Tick"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("step ")).count(),
        trace.records.len()
    );
}

#[test]
fn a_tampered_step_is_named_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut trace = recorded_run();
    trace.records[7].effects_digest ^= 1;
    let file = write(dir.path(), "tampered.trace", &trace.to_file_bytes());
    let (code, stdout, stderr) = replay(&["replay", file.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.starts_with("step 7 diverges"), "{stdout}");
}

#[test]
fn a_file_that_is_no_trace_is_refused_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let junk = write(dir.path(), "junk.trace", b"not a trace at all");
    let (code, _, stderr) = replay(&["replay", junk.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("junk.trace") && stderr.contains("MEDICTRC"),
        "{stderr}"
    );
    let missing = dir.path().join("missing.trace");
    let (code, _, stderr) = replay(&["replay", missing.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot read the trace"), "{stderr}");
}

#[test]
fn a_torn_tail_is_skipped_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = recorded_run().to_file_bytes();
    bytes.truncate(bytes.len() - 3);
    let file = write(dir.path(), "torn.trace", &bytes);
    let (code, stdout, stderr) = replay(&["replay", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("identical") && stdout.contains("torn"),
        "{stdout}"
    );
}

#[test]
fn the_golden_traces_replay_identically() {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden");
    let entries = std::fs::read_dir(&golden)
        .unwrap_or_else(|e| panic!("the golden traces in {}: {e}", golden.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("trace") {
            continue;
        }
        let (code, stdout, stderr) = replay(&["replay", path.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{}: {stdout}{stderr}", path.display());
        assert!(stdout.contains("identical"), "{stdout}");
        replayed += 1;
    }
    assert!(
        replayed > 0,
        "no *.trace in {}: the golden traces are missing",
        golden.display()
    );
}

#[test]
fn a_corrupt_snapshot_is_refused_with_exit_1_not_a_panic() {
    // Issue 9: the decoded snapshot was never checked, and replaying one that names a service
    // it does not have panicked (an index out of bounds in the kernel). Find the first
    // single-byte change of the snapshot that still decodes but is inconsistent.
    let good = recorded_run();
    let bytes = postcard::to_stdvec(&good.snapshot).unwrap();
    let corrupt = (0..bytes.len())
        .flat_map(|i| [1u8, 2, 7, 0x7f].map(|v| (i, v)))
        .find_map(|(i, v)| {
            let mut bad = bytes.clone();
            bad[i] = v;
            let snapshot: Kernel = postcard::from_bytes(&bad).ok()?;
            let mut trace = Trace::new(CONFIG, snapshot);
            trace.records = good.records.clone();
            let file = trace.to_file_bytes();
            matches!(
                medic_kernel::trace::decode(&file),
                Err(medic_kernel::trace::TraceError::BadSnapshot { .. })
            )
            .then_some(file)
        })
        .expect("some single-byte change makes the snapshot inconsistent");
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "corrupt.trace", &corrupt);
    let (code, stdout, stderr) = replay(&["replay", file.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("corrupt.trace")
            && stderr.contains("kernel snapshot")
            && stderr.contains("inconsistent"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
