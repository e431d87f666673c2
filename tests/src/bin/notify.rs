//! `medic-test-notify [MESSAGE]`: sends MESSAGE (default `READY=1`) to the datagram socket named
//! by `$NOTIFY_SOCKET`, as a service using sd_notify(3) would.

use std::os::unix::net::UnixDatagram;

fn main() {
    let path = std::env::var("NOTIFY_SOCKET").expect("NOTIFY_SOCKET is not set");
    let message = std::env::args().nth(1).unwrap_or_else(|| "READY=1".into());
    let sock = UnixDatagram::unbound().expect("a datagram socket");
    sock.send_to(message.as_bytes(), &path)
        .unwrap_or_else(|e| panic!("sending to {path}: {e}"));
}
