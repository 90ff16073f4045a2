//! The request pipeline: what happens to a request between its parsed head and its response.
//!
//! [`stack`] declares the order of stages in one place; [`ctx`] is the per-request context;
//! [`client`] is the client side of an exchange (the buffered connection and the two head
//! buffers); [`target`] normalises the request target; [`trace`] continues W3C trace context;
//! [`headers`] rewrites heads both ways; [`proxy`] is the upstream stage (the exchange,
//! retries, body streaming); [`log`] is the logging phase every answered request passes once.
//!
//! A stage that answers the request itself returns a [`Rejection`] (or, later, a response); it
//! never sets a flag for a later stage to check.

pub mod client;
pub mod ctx;
pub mod headers;
pub mod log;
pub mod proxy;
pub mod stack;
pub mod target;
pub mod trace;

use ctx::RequestId;

/// An error the gateway answers itself, with the JSON body of BEHAVIOR.md.
#[derive(Debug)]
pub struct Rejection {
    pub status: u16,
    pub message: String,
    pub id: RequestId,
    /// `Allow` for 405.
    pub allow: Option<String>,
    /// `Retry-After` (and `retryAfter` in the body), seconds.
    pub retry_after: Option<u64>,
    /// Close the connection after the response (framing errors, unread bodies).
    pub close: bool,
    /// The request was HEAD: the response carries the head only (RFC 9110 §9.3.2).
    pub head_only: bool,
    /// The request's trace context (for its span), when tracing propagates.
    pub trace: Option<trace::TraceContext>,
    /// A JSON body to send instead of the standard error body (a breaker's fallback).
    pub body: Option<String>,
    /// Not an error: a 204 the gateway answers itself (`OPTIONS *`, `Max-Forwards: 0`),
    /// sent without content.
    pub no_content: bool,
    /// The route and upstream the request had reached (metrics and the access log name
    /// them), when a stage after routing answered it.
    pub routed: Option<(
        crate::config::model::RouteId,
        crate::config::model::UpstreamId,
    )>,
}

impl Rejection {
    pub fn new(status: u16, message: String, id: RequestId) -> Self {
        Rejection {
            status,
            message,
            id,
            allow: None,
            retry_after: None,
            close: false,
            head_only: false,
            body: None,
            trace: None,
            no_content: false,
            routed: None,
        }
    }

    /// 204 No Content with `Allow`: the gateway's answer to an OPTIONS it does not forward.
    pub fn options(allow: String, id: RequestId) -> Self {
        let mut r = Rejection::new(204, String::new(), id);
        r.allow = Some(allow);
        r.no_content = true;
        r
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
