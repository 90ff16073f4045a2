//! The stream layer: how bytes move on a connection, whichever side it faces.
//!
//! [`Stream`] is the transport: plain TCP, or TLS ([`tls`]: rustls over the same sockets,
//! one variant per side, so nothing above this layer depends on which). The server side's
//! rustls pieces live beside it: [`sni`] (which certificate a handshake presents) and
//! [`tickets`] (session-ticket keys every worker derives alike, for resumption). [`BufConn`] is the one buffered connection type that the
//! client side (`server::conn`) and the upstream side (`upstream::client`) are built on: its
//! read buffer (parsed zero-copy by the codec), reads and writes bounded by a timeout, byte
//! counts, the lingering close, and the non-blocking liveness peek that the upstream pool asks
//! before it reuses a connection (and, after a readiness poll, a queued request asks of its
//! client).
//!
//! Every timed read and write goes through [`timeout`], whose timer is boxed out of line:
//! monoio's is 640 bytes inline, and would be carried by every future that awaits I/O.
//!
//! The one thing to know: every read and write takes its buffer by value (io_uring owns it
//! while the operation is in flight). A read or write that times out is cancelled, and its
//! buffer may still be held by the kernel: such a connection is never used again.

mod conn;
pub mod sni;
mod stream;
pub mod tickets;
pub mod timeout;
pub mod tls;

pub use conn::{BufConn, ReadEnd};
pub use stream::{Peek, Stream};
