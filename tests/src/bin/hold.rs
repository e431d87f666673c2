//! `medic-test-hold SOCKET N`: keeps N connections to the Unix socket SOCKET that never send a
//! byte, reconnecting each as soon as the other end closes it (a reconnecting slowloris
//! client). Prints `held` once N connections have been made; runs until killed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: medic-test-hold SOCKET N");
    let n: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("usage: medic-test-hold SOCKET N");
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..n {
        let path = path.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match UnixStream::connect(&path) {
                    Ok(mut s) => {
                        let _ = tx.send(());
                        // Until the daemon closes it (it may say why first).
                        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                    }
                    // Refused (another user, say): try again, as an attacker would.
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
    }
    for _ in 0..n {
        rx.recv().expect("a connection");
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "held");
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}
