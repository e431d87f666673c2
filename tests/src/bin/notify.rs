//! `medic-test-notify [MESSAGE]`: sends MESSAGE (default `READY=1`) to the datagram socket named
//! by `$NOTIFY_SOCKET`, as a service using sd_notify(3) would: a path, or `@name` in the
//! abstract namespace.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

fn main() {
    let path = std::env::var("NOTIFY_SOCKET").expect("NOTIFY_SOCKET is not set");
    let message = std::env::args().nth(1).unwrap_or_else(|| "READY=1".into());
    let sock = UnixDatagram::unbound().expect("a datagram socket");
    let sent = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|addr| sock.send_to_addr(message.as_bytes(), &addr)),
        None => sock.send_to(message.as_bytes(), &path),
    };
    sent.unwrap_or_else(|e| panic!("sending to {path}: {e}"));
}
