//! The ONE place where the order of request stages is declared.
//!
//! A request goes through [`prepare`] (synchronous, while its head is still borrowed from the
//! connection's read buffer) and then [`run`] (asynchronous I/O). The stage order is:
//!
//! 1. identity: the request id first, so every later error carries it;
//! 2. framing: body framing is validated before anything may read the body (RFC 9112 §6.3);
//! 3. target: normalised once, so the path that is routed is the path that is forwarded;
//! 4. route: path, then method, host, headers (BEHAVIOR.md precedence);
//!    trace context is continued or started here, once the request will be forwarded;
//! 5. (later capabilities slot in here, in this order: client/BFF -> auth -> rate limit ->
//!    cache -> aggregate | transform -> breaker; each is rejected at config load until it lands);
//! 6. upstream: body limits, then the upstream request head is written, then [`run`] performs
//!    the exchange (retries, streaming) in [`super::proxy`].

use std::net::SocketAddr;
use std::time::Instant;

use crate::http::{self, BodyKind, Header, RequestHead, Version};
use crate::router::{HeaderLookup, Lookup, RequestView};
use crate::runtime::worker::{Snapshot, Worker};
use crate::server::conn::ClientIo;
use crate::upstream::balance::{hash_key, Key};
use crate::upstream::retry::is_idempotent;

use super::ctx::{MethodInfo, RequestCtx, RequestId};
use super::headers::{write_request_head, ForwardHead};
use super::proxy::Served;
use super::trace::TraceContext;
use super::{target, Rejection};
use crate::config::model::Balance;

struct Headers<'a, 'h>(&'a [Header<'h>]);

impl HeaderLookup for Headers<'_, '_> {
    fn get(&self, lower_name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(lower_name))
            .map(|h| h.value)
    }
}

fn single<'h>(headers: &[Header<'h>], name: &str) -> Result<Option<&'h [u8]>, ()> {
    let mut found = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(());
            }
            found = Some(h.value);
        }
    }
    Ok(found)
}

/// Runs the synchronous stages on a parsed head and writes the upstream request head into
/// `ubuf`. Returns the context for [`run`], or the response that ends the request here.
pub fn prepare(
    head: &RequestHead<'_>,
    peer: SocketAddr,
    worker: &Worker,
    snap: &Snapshot,
    ubuf: &mut Vec<u8>,
) -> Prepared {
    match stages(head, peer, worker, snap, ubuf) {
        Ok(ctx) => Prepared::Forward(ctx),
        Err(mut r) => {
            r.head_only = head.method == "HEAD";
            Prepared::Answer(r)
        }
    }
}

/// What the synchronous stages decided.
pub enum Prepared {
    /// Go on to [`run`] with this context.
    Forward(RequestCtx),
    /// A stage answered the request itself.
    Answer(Rejection),
}

// The rejection is the rare path and about as large as the context; boxing it would only
// add an allocation to every error.
#[allow(clippy::result_large_err)]
fn stages(
    head: &RequestHead<'_>,
    peer: SocketAddr,
    worker: &Worker,
    snap: &Snapshot,
    ubuf: &mut Vec<u8>,
) -> Result<RequestCtx, Rejection> {
    let cfg = &snap.active.config;
    let headers = &head.headers[..];

    // 1. identity
    let id = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
        .and_then(|h| RequestId::from_client(h.value))
        .unwrap_or_else(|| worker.request_id());
    let bad = |status: u16, msg: &str| Rejection::new(status, msg.to_string(), id).closing();

    // 2. framing
    let body =
        http::request_body(headers, head.version).map_err(|e| bad(e.status(), &e.to_string()))?;
    let keep_alive = !http::wants_close(head.version, headers);
    let expect = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("expect"))
        .map(|h| h.value);
    let expect_continue = match expect {
        None => false,
        Some(v) if v.eq_ignore_ascii_case(b"100-continue") => {
            head.version == Version::Http11 && body != BodyKind::None
        }
        // RFC 9110 §10.1.1: an expectation we cannot meet.
        Some(_) => return Err(Rejection::new(417, "Unsupported expectation".into(), id).closing()),
    };
    // Anything after a rejected request's unread body would be misread as the next request.
    let close_if_body = |mut r: Rejection| {
        if body != BodyKind::None || !keep_alive {
            r.close = true;
        }
        r
    };

    // 3. target (and Host, RFC 9112 §3.2: exactly one in HTTP/1.1)
    // The codec owns the Host rules: one Host in HTTP/1.1, an absolute-form authority wins.
    let host = head.host().map_err(|e| bad(400, &e.to_string()))?;
    let target = target::parse(head.target.as_bytes()).map_err(|e| bad(400, &e.to_string()))?;

    // 4. route
    let view = RequestView {
        path: &target.path,
        method: head.method,
        host,
        headers: &Headers(headers),
    };
    let m = match snap.active.router.lookup(&view) {
        Lookup::Found(m) => m,
        Lookup::MethodNotAllowed { allow } => {
            let mut r = close_if_body(Rejection::new(405, "Method not allowed".into(), id));
            r.allow = Some(allow);
            return Err(r);
        }
        Lookup::NotFound => {
            return Err(close_if_body(Rejection::new(
                404,
                "No route matches the request".into(),
                id,
            )))
        }
    };
    let route = &cfg.routes[m.route];
    let upstream = &cfg.upstreams[route.upstream];

    // 6. upstream
    if let BodyKind::Length(n) = body {
        if n > cfg.server.limits.max_body {
            return Err(bad(413, "Request body too large"));
        }
    }
    let balance_key = match &upstream.balance {
        Balance::HashHeader(name) => headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map_or(Key::None, |h| Key::Hash(hash_key(h.value))),
        Balance::HashIp => Key::Hash(match peer.ip() {
            std::net::IpAddr::V4(v4) => hash_key(&v4.octets()),
            std::net::IpAddr::V6(v6) => hash_key(&v6.octets()),
        }),
        _ => Key::None,
    };
    // Trace context: continued (or started) only when propagating; an ambiguous incoming
    // context (two traceparent fields) starts a new trace (W3C trace context §3.2).
    let trace = cfg.tracing.propagate.then(|| {
        let incoming = single(headers, "traceparent").ok().flatten();
        TraceContext::continue_or_start(incoming, || worker.rand())
    });
    ubuf.clear();
    write_request_head(
        ubuf,
        &ForwardHead {
            method: head.method,
            target: &target,
            matched: m.prefix_len,
            strip_prefix: route.strip_prefix,
            rewrite: route.rewrite.as_deref(),
            headers,
            host,
            fallback_host: &upstream.endpoints[0].authority,
            client_ip: peer.ip(),
            request_id: &id,
            body,
            trace: trace.as_ref(),
        },
    );
    Ok(RequestCtx {
        id,
        version: head.version,
        method: MethodInfo {
            is_head: head.method == "HEAD",
            idempotent: is_idempotent(head.method),
        },
        keep_alive,
        body,
        expect_continue,
        route: m.route,
        upstream: route.upstream,
        read_timeout: route.timeout.unwrap_or(upstream.read_timeout),
        connect_timeout: upstream.connect_timeout,
        retries: upstream.retries,
        balance_key,
        trace,
        upstream_head_len: ubuf.len(),
        started: Instant::now(),
    })
}

/// Runs the asynchronous stages; returns whether the client connection may be kept open.
pub async fn run(ctx: RequestCtx, conn: &mut ClientIo, worker: &Worker, snap: &Snapshot) -> Served {
    super::proxy::forward(&ctx, conn, worker, snap).await
}
