//! The request pipeline: what happens to a request between its parsed head and its response.
//!
//! [`stack`] declares the order of the request phases in one place; [`phase`] holds the
//! phases, one module each, and [`phase::Flow`], their decision; [`ctx`] is the per-request
//! context handed to the exchange; [`client`] is the client side of an exchange (the buffered
//! connection and the two head buffers); [`target`] normalises the request target; [`trace`]
//! continues W3C trace context; [`headers`] rewrites heads both ways; [`proxy`] is the proxy
//! phase's side of [`crate::upstream::call`] (the request body up, the response body down);
//! [`aggregate`] runs an aggregate's calls and answers with the composite; [`tunnel`] is the
//! upgrade branch of the proxy phase (a WebSocket handshake checked, then, after the
//! upstream's 101, bytes piped both ways);
//! [`respond`] holds the response phases every answer passes, the gateway's and the
//! upstream's alike, and [`compress`] the last of them (compression); [`log`] is the logging
//! phase every answered request passes once.
//!
//! A phase that answers the request itself returns a [`Response`] (the JSON error of
//! BEHAVIOR.md is one kind of it) in [`phase::Flow::Respond`]; it never sets a flag for a
//! later phase to check.

pub mod aggregate;
pub mod client;
pub mod compress;
pub mod ctx;
pub mod headers;
pub mod log;
pub mod phase;
pub mod proxy;
pub mod refresh;
pub mod respond;
pub mod response;
pub mod stack;
pub mod target;
pub mod trace;
pub mod tunnel;

use ctx::RequestId;
pub use response::{Body, Response};

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
