//! Per-request context: what the exchange with the upstream needs to know about a request once
//! its head has been parsed and the parse buffer may move on.
//!
//! Each phase ([`super::phase`]) owns its fields: identity the id and trace context, framing
//! the keep-alive and body framing, route and split the route and upstream, the breaker the
//! permit, the upstream phase the balance key and the upstream head's length; [`super::stack`]
//! assembles them once, and the exchange ([`super::proxy`]) reads them. Nothing here borrows
//! the connection's buffers.

use std::time::{Duration, Instant};

use crate::config::model::{RouteId, UpstreamId};
use crate::http::{BodyKind, Version};
use crate::upstream::balance::Key;

/// `X-Request-Id`: the client's when it is sane (1..=64 visible ASCII bytes without quotes or
/// backslashes), else a new random 128-bit id in hex. Stored inline: no allocation per request.
#[derive(Clone, Copy)]
pub struct RequestId {
    buf: [u8; 64],
    len: u8,
}

impl RequestId {
    pub fn from_client(value: &[u8]) -> Option<RequestId> {
        if value.is_empty() || value.len() > 64 {
            return None;
        }
        if !value
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return None;
        }
        let mut buf = [0u8; 64];
        buf[..value.len()].copy_from_slice(value);
        Some(RequestId {
            buf,
            len: value.len() as u8,
        })
    }

    /// A new random id from `worker`'s random source.
    pub fn new_for(worker: &crate::state::worker::Worker) -> RequestId {
        RequestId::generate([worker.rand(), worker.rand()])
    }

    pub fn generate(random: [u64; 2]) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 64];
        let mut i = 0;
        for word in random {
            for shift in (0..16).rev() {
                buf[i] = HEX[((word >> (shift * 4)) & 0xf) as usize];
                i += 1;
            }
        }
        RequestId { buf, len: 32 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    pub fn as_str(&self) -> &str {
        // Both constructors only store ASCII.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

/// The method facts the upstream stage needs, without keeping the method string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    pub is_head: bool,
    pub idempotent: bool,
}

pub struct RequestCtx {
    pub id: RequestId,
    pub version: Version,
    pub method: MethodInfo,
    /// The client allows the connection to stay open after this response.
    pub keep_alive: bool,
    /// Request body framing (RFC 9112 §6.3).
    pub body: BodyKind,
    /// The client sent `Expect: 100-continue` (HTTP/1.1 with a body).
    pub expect_continue: bool,
    /// A WebSocket upgrade on a websocket route (`pipeline::tunnel`): a 101 turns the
    /// connection into a tunnel.
    pub upgrade: bool,
    pub route: RouteId,
    pub upstream: UpstreamId,
    /// The breaker's permit, handed back with the outcome as soon as it is known (taken from
    /// the cell then; what is left when the request ends goes back with its final verdict).
    pub permit: std::cell::Cell<Option<crate::upstream::breaker::Permit>>,
    pub read_timeout: Duration,
    pub connect_timeout: Duration,
    pub retries: u32,
    pub balance_key: Key,
    /// The trace context sent upstream (tracing.propagate), for the access log.
    pub trace: Option<super::trace::TraceContext>,
    /// Length of the upstream request head at the start of the connection's upstream buffer.
    pub upstream_head_len: usize,
    /// The route's `RateLimit-*` values (the rate-limit phase's), for every answer.
    pub rate: Option<super::respond::RateHeaders>,
    /// A leaky bucket's wait, done first by `stack::run` (its places go back if dropped).
    pub delay: Option<Box<super::phase::ratelimit::Delay>>,
    /// The cache's part (a cached route, or a request that may purge), taken by `stack::run`.
    pub cache: Option<Box<super::phase::cache::Pending>>,
    pub started: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_keeps_sane_client_ids_only() {
        assert_eq!(
            RequestId::from_client(b"abc-123").unwrap().as_str(),
            "abc-123"
        );
        assert!(RequestId::from_client(b"").is_none());
        assert!(RequestId::from_client(b"has space").is_none());
        assert!(RequestId::from_client(b"quote\"").is_none());
        assert!(RequestId::from_client(&[b'a'; 65]).is_none());
        let g = RequestId::generate([0x0123_4567_89ab_cdef, 1]);
        assert_eq!(g.as_str(), "0123456789abcdef0000000000000001");
    }

    #[test]
    fn request_ctx_stays_small() {
        assert!(
            std::mem::size_of::<RequestCtx>() <= 352,
            "{}",
            std::mem::size_of::<RequestCtx>()
        );
    }
}
