//! Readiness polls and probes that need no process: TCP connect, Unix connect, file exists.
//! (`run` checks spawn a process; the runtime does those, since it owns the reaper.)

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use medic_kernel::CheckResult;

/// Whether a TCP connection to `addr` (`host:port`) can be made.
pub async fn tcp(addr: &str) -> CheckResult {
    let result = match addr.parse::<SocketAddr>() {
        Ok(sa) => tokio::net::TcpStream::connect(sa).await,
        Err(_) => tokio::net::TcpStream::connect(addr).await,
    };
    match result {
        Ok(_) => CheckResult::Ok,
        Err(e) => CheckResult::Failed(format!("tcp {addr}: {e}")),
    }
}

/// Whether a connection to the Unix stream socket at `path` can be made.
pub async fn unix(path: &Path) -> CheckResult {
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => CheckResult::Ok,
        Err(e) => CheckResult::Failed(format!("unix {}: {e}", path.display())),
    }
}

/// Whether `path` exists.
pub fn file(path: &Path) -> CheckResult {
    if path.exists() {
        CheckResult::Ok
    } else {
        CheckResult::Failed(format!("{} does not exist", path.display()))
    }
}

/// Runs `check` within `timeout`, answering [`CheckResult::TimedOut`] when it takes longer.
pub async fn within<F: std::future::Future<Output = CheckResult>>(
    timeout: Duration,
    check: F,
) -> CheckResult {
    tokio::time::timeout(timeout, check)
        .await
        .unwrap_or(CheckResult::TimedOut)
}
