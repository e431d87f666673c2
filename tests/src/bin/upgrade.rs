//! `medic-test-upgrade ARGS…`: stands in for an upgraded medic in `medic reexec --binary`. It
//! runs `medic-e2e ARGS…` (beside it) in its own process; when ARGS hold `--take-over`, it first
//! makes the service whose pid is in `quitter.pid` (beside the `-c` config) end, by creating
//! `quit` there, and waits until that process is a zombie: the new binary then finds a process
//! that ended during the reexec, not yet reaped. It reaps nothing itself.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let exe = std::env::current_exe().expect("own path");
    let medic = exe.with_file_name("medic-e2e");
    if args.iter().any(|a| a == "--take-over") {
        let at = args.iter().position(|a| a == "-c").expect("-c CONFIG");
        let config = PathBuf::from(&args[at + 1]);
        let dir = config.parent().expect("the config's directory");
        let pid = std::fs::read_to_string(dir.join("quitter.pid")).expect("quitter.pid");
        let stat = format!("/proc/{}/stat", pid.trim());
        std::fs::write(dir.join("quit"), "").expect("quit");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            if text
                .rsplit_once(')')
                .is_some_and(|(_, t)| t.trim_start().starts_with('Z'))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let error = std::process::Command::new(&medic).args(&args).exec();
    panic!("exec {}: {error}", medic.display());
}
