//! [`Response`]: an answer the gateway makes itself, whoever makes it (a phase such as routing
//! or the breaker, the upstream stage on a failure, the connection loop on a framing error).
//!
//! The JSON error of BEHAVIOR.md is one kind of body ([`Body::Error`]); a breaker's configured
//! fallback is another ([`Body::Json`]), and the gateway's own `204` answers (`OPTIONS *`,
//! `Max-Forwards: 0`) carry none; a cached response ([`Body::Stored`]) is the cache's. One writer, [`super::client::ClientIo::send_response`],
//! puts every one of them on the wire, and the logging phase records it like any other answer.

use super::ctx::RequestId;
use super::respond::{CacheMark, RateHeaders};
use super::trace::TraceContext;
use crate::config::model::{RouteId, UpstreamId};

/// What a gateway answer carries after its head.
#[derive(Debug)]
pub enum Body {
    /// The standard error body: `{"error": {"code", "message", "request_id"[, "retryAfter"]}}`.
    Error(String),
    /// A JSON document given whole (a breaker's fallback).
    Json(String),
    /// No content (`204`).
    Empty,
    /// A stored response (the cache's), whole or as a `304 Not Modified`.
    Stored(Stored),
}

/// A stored response as the cache phase answers with it.
#[derive(Debug)]
pub struct Stored {
    pub entry: std::rc::Rc<crate::cache::Entry>,
    /// The client's conditional request is met: `304` with the stored validators.
    pub not_modified: bool,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Body,
    pub id: RequestId,
    /// `Allow` (405, and the gateway's OPTIONS answers).
    pub allow: Option<String>,
    /// `Retry-After` (and `retryAfter` in an error body), seconds.
    pub retry_after: Option<u64>,
    /// Close the connection after the response (framing errors, unread bodies).
    pub close: bool,
    /// The request was HEAD: the response carries the head only (RFC 9110 §9.3.2).
    pub head_only: bool,
    /// The request's trace context (for its span), when tracing propagates.
    pub trace: Option<TraceContext>,
    /// The route and upstream the request had reached (metrics and the access log name
    /// them), when a phase after routing answered it.
    pub routed: Option<(RouteId, UpstreamId)>,
    /// `WWW-Authenticate` (401, RFC 6750 §3).
    pub challenge: Option<&'static str>,
    /// The rate limits' headers, when the route is rate-limited and its limits were checked.
    pub rate: Option<RateHeaders>,
    /// `X-Cache` (and `Age`), when the route is cached and the cache phase ran.
    pub cache: Option<CacheMark>,
    /// The client speaks HTTP/1.0: a stored answer on a kept-alive connection says
    /// `Connection: keep-alive` (RFC 9112 §9.3).
    pub http10: bool,
}

impl Response {
    /// The standard JSON error with `message`.
    pub fn error(status: u16, message: impl Into<String>, id: RequestId) -> Self {
        Response::with_body(status, Body::Error(message.into()), id)
    }

    /// `status` with a JSON document as its body.
    pub fn json(status: u16, json: String, id: RequestId) -> Self {
        Response::with_body(status, Body::Json(json), id)
    }

    /// 204 No Content with `Allow`: the gateway's answer to an OPTIONS it does not forward.
    pub fn options(allow: String, id: RequestId) -> Self {
        let mut r = Response::with_body(204, Body::Empty, id);
        r.allow = Some(allow);
        r
    }

    fn with_body(status: u16, body: Body, id: RequestId) -> Self {
        Response {
            status,
            body,
            id,
            allow: None,
            retry_after: None,
            close: false,
            head_only: false,
            trace: None,
            routed: None,
            challenge: None,
            rate: None,
            cache: None,
            http10: false,
        }
    }

    /// A stored response: `200` (or whatever was stored), or `304` when `not_modified`.
    pub fn stored(stored: Stored, mark: CacheMark, id: RequestId) -> Self {
        let status = if stored.not_modified {
            304
        } else {
            stored.entry.status
        };
        let mut r = Response::with_body(status, Body::Stored(stored), id);
        r.cache = Some(mark);
        r
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}
