//! The control socket (architecture.md §5): how `medic status|start|…` talk to the daemon.
//!
//! ## Wire format
//! A Unix stream socket, `control.sock` in the state dir, mode 0600. On each connection the
//! client sends one [`Request`] and the daemon answers with one [`Response`], or with a stream
//! of them for `follow` requests, then closes. Every message is a *frame*: a `u32`
//! little-endian length, then that many bytes of postcard. A request frame is at most
//! [`MAX_REQUEST_BYTES`]; an answer at most [`MAX_RESPONSE_BYTES`] (a history of 4096 records
//! does not fit in 64 KiB, and answers come from the trusted side).
//!
//! Postcard encodes enum variants and struct fields by position, so every type here only ever
//! grows at the end: new variants after the last one, new fields after the last field. An old
//! daemon asked something new answers with [`Response::Error`].
//!
//! ## Robustness
//! The socket is served by [`Server::run`] on tasks of its own, so no client can stall the
//! daemon's loop: at most [`MAX_CONNECTIONS`] connections at once (more are closed at once),
//! a request must arrive whole within [`READ_TIMEOUT`], every write must finish within
//! [`WRITE_TIMEOUT`]. An oversized, undecodable, truncated or late request gets a
//! [`Response::Error`] (when the client still listens) and the connection is closed. Only
//! root and the daemon's own uid may talk to it (`SO_PEERCRED`).
//!
//! ## For the runtime: answering calls
//! ```text
//! let server = control::bind(&state_dir.join(control::SOCKET_NAME))?;   // at startup
//! let (tx, mut calls) = mpsc::channel(CALL_QUEUE);               // the runtime's bound: 64
//! tokio::spawn(server.run(tx));
//! … in the loop, for each Call { request, reply }:
//!   Status { services } => status_rows(&kernel, &services, now, |ifname| links.view(ifname)…)
//!   Start/Stop/Restart/Reload => request.operators(&kernel): feed each Operator, reply Done
//!   History { service }  => history_rows(&kernel, &service)
//!   Events { follow }    => recent_events(&kernel, n), then keep `reply` and try_send one
//!                           Events(vec![EventRow::new(&kernel, id, &record)]) per Effect::Event
//!   Logs { .. }, TraceSave { .. }: from the runtime's own state;   Ping => Pong
//! ```
//! A reply that is an error is `Response::Error(message)`. Dropping `reply` ends the answer;
//! the server closes the connection then. For a follower, use `try_send` (never block the
//! loop on a slow client) and forget it once `try_send` fails: the client has gone or stopped
//! reading.
//!
//! The code is split by who reads it: [`wire`] is the contract (messages and frames),
//! [`server`] the daemon's side, [`client`] the command line's, and [`views`] the answers built
//! from the kernel's read model.

pub mod client;
pub mod plan;
pub mod server;
pub mod views;
pub mod wire;

pub use client::{request, request_stream, Answers, ClientError};
pub use server::{bind, peer_allowed, Call, Connections, Server};
pub use views::{
    history_rows, logs_of, recent_events, service_id, status_report, status_rows, Observed,
};
pub use wire::*;
