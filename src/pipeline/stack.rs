//! The ONE place where the order of request stages is declared.
//!
//! A request goes through [`prepare`] (synchronous, while its head is still borrowed from the
//! connection's read buffer) and then [`run`] (asynchronous I/O). The stage order is:
//!
//! 0. header fields whose name holds `_` are dropped, before any stage can read them (as
//!    nginx's default `underscores_in_headers off`: CGI-style upstreams read `X_Forwarded_For`
//!    as `X-Forwarded-For`, so forwarding it would let a client forge gateway headers);
//! 1. identity: the request id first, so every later error carries it;
//! 2. framing: body framing is validated before anything may read the body (RFC 9112 §6.3);
//! 3. target: Host and the target form are checked (CONNECT is never tunnelled, `OPTIONS *`
//!    is answered here), then the path normalised once, so the path that is routed is the
//!    path that is forwarded;
//! 4. route: path, then method, host, headers (BEHAVIOR.md precedence); `Max-Forwards: 0` on
//!    OPTIONS / TRACE is answered here, once the resource is known (RFC 9110 §7.6.2);
//!    trace context is continued or started here, once the request will be forwarded;
//!    then the split picks the upstream (canary / A-B) when the route has one;
//! 5. (later capabilities slot in here, in this order: client/BFF -> auth -> rate limit ->
//!    cache -> aggregate | transform; each is rejected at config load until it lands), then
//!    the breaker, last, so that requests answered by an earlier stage take no permit (a
//!    permit dropped unused, as by a later 413, frees its probe slot);
//! 6. upstream: body limits, then the upstream request head is written, then [`run`] performs
//!    the exchange (retries, streaming) in [`super::proxy`].

use std::net::SocketAddr;
use std::time::Instant;

use super::client::ClientIo;
use crate::http::{self, BodyKind, Header, RequestHead, Version};
use crate::router::{HeaderLookup, Lookup, RequestView};
use crate::state::worker::{Snapshot, Worker};
use crate::upstream::balance::{hash_key, Key};
use crate::upstream::retry::is_idempotent;

use super::ctx::{MethodInfo, RequestCtx, RequestId};
use super::headers::{write_request_head, ForwardHead};
use super::proxy::Served;
use super::trace::TraceContext;
use super::{target, Response};
use crate::clock;
use crate::config::model::{Balance, Route, Sticky, Upstream};
use crate::upstream::breaker::Admission;

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
    let mut trace = None;
    match stages(head, peer, worker, snap, ubuf, &mut trace) {
        Ok(ctx) => Prepared::Forward(ctx),
        Err(mut r) => {
            r.head_only = head.method == "HEAD";
            r.trace = trace;
            Prepared::Answer(r)
        }
    }
}

/// What the synchronous stages decided.
pub enum Prepared {
    /// Go on to [`run`] with this context.
    Forward(RequestCtx),
    /// A stage answered the request itself.
    Answer(Response),
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
    trace_out: &mut Option<TraceContext>,
) -> Result<RequestCtx, Response> {
    let cfg = &snap.active.config;

    // 0. underscores: dropped, never used for any decision (nginx's ignore_invalid_headers).
    let kept: http::Headers<'_>;
    let headers: &[Header<'_>] = if head.headers.iter().any(|h| h.name.contains('_')) {
        kept = head
            .headers
            .iter()
            .filter(|h| !h.name.contains('_'))
            .copied()
            .collect();
        &kept
    } else {
        &head.headers
    };

    // 1. identity
    let id = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
        .and_then(|h| RequestId::from_client(h.value))
        .unwrap_or_else(|| RequestId::new_for(worker));
    // Trace context, with the identity: every answered request gets a span, those the
    // gateway answers itself included. Continued (or started) only when propagating; an
    // ambiguous incoming context (two traceparent fields) starts a new trace (W3C trace
    // context §3.2).
    let trace = cfg.tracing.propagate.then(|| {
        let incoming = single(headers, "traceparent").ok().flatten();
        TraceContext::continue_or_start(incoming, || worker.rand())
    });
    *trace_out = trace;
    let bad = |status: u16, msg: &str| Response::error(status, msg, id).closing();

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
        Some(_) => return Err(Response::error(417, "Unsupported expectation", id).closing()),
    };
    // Anything after a rejected request's unread body would be misread as the next request.
    let close_if_body = |mut r: Response| {
        if body != BodyKind::None || !keep_alive {
            r.close = true;
        }
        r
    };

    // 3. target (and Host, RFC 9112 §3.2: exactly one in HTTP/1.1, a valid authority)
    // The codec owns the Host rules: one valid Host, an absolute-form authority wins.
    let host = head.host().map_err(|e| bad(400, &e.to_string()))?;
    if head.method == "CONNECT" {
        // RFC 9110 §9.3.6: CONNECT asks for a tunnel, which the gateway never opens; its
        // target must be authority-form (RFC 9112 §3.2.3), and no route serves it.
        if !target::is_authority_form(head.target) {
            return Err(bad(400, "CONNECT needs an authority-form target"));
        }
        let mut r = close_if_body(Response::error(
            405,
            "CONNECT is not served: the gateway does not tunnel",
            id,
        ));
        // RFC 9110 §10.2.1: an empty Allow, the resource allows no method.
        r.allow = Some(String::new());
        return Err(r);
    }
    let max_forwards = match head.method {
        "OPTIONS" | "TRACE" => max_forwards(headers).map_err(|msg| bad(400, msg))?,
        _ => None,
    };
    if head.target == "*" {
        // RFC 9112 §3.2.4: asterisk-form is for a server-wide OPTIONS only, answered here.
        if head.method != "OPTIONS" {
            return Err(bad(400, "asterisk-form target is only for OPTIONS"));
        }
        let allow = snap.active.router.allow_all().to_string();
        return Err(close_if_body(Response::options(allow, id)));
    }
    let target = target::parse(head.target).map_err(|e| bad(400, &e.to_string()))?;

    // 4. route
    let view = RequestView {
        path: &target.path,
        method: head.method,
        host,
        headers: &Headers(headers),
    };
    if max_forwards == Some(0) {
        return Err(close_if_body(last_hop(head.method, &view, snap, id)));
    }
    let m = match snap.active.router.lookup(&view) {
        Lookup::Found(m) => m,
        Lookup::MethodNotAllowed { allow } => {
            let mut r = close_if_body(Response::error(405, "Method not allowed", id));
            r.allow = Some(allow);
            return Err(r);
        }
        Lookup::NotFound => {
            return Err(close_if_body(Response::error(
                404,
                "No route matches the request",
                id,
            )))
        }
    };
    let route = &cfg.routes[m.route];

    // 4b. split: the side decides the upstream; a sticky caller always lands on the same side.
    let upstream_id = if route.split.is_empty() {
        route.upstream
    } else {
        split_side(route, headers, peer, worker)
    };
    let upstream = &cfg.upstreams[upstream_id];
    let started = Instant::now();

    // 5. breaker (last before the upstream): an open breaker answers before the body is read
    //    or an upstream contacted; a half-open one admits a bounded number of probes.
    let permit = match &snap.upstreams.list[upstream_id].borrow().breaker {
        None => None,
        Some(replica) => match replica.admit(clock::ms_at(started)) {
            Admission::Allowed(p) | Admission::Probe(p) => Some(p),
            Admission::Rejected { retry_after_secs } => {
                let mut r = close_if_body(breaker_open(upstream, retry_after_secs, id));
                r.routed = Some((m.route, upstream_id));
                return Err(r);
            }
        },
    };

    // 6. upstream
    if let BodyKind::Length(n) = body {
        if n > cfg.server.limits.max_body {
            let mut r = bad(413, "Request body too large");
            r.routed = Some((m.route, upstream_id));
            return Err(r);
        }
    }
    let balance_key = match &upstream.balance {
        Balance::HashHeader(name) => headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map_or(Key::None, |h| Key::Hash(hash_key(h.value))),
        Balance::HashIp => Key::Hash(hash_ip(peer.ip())),
        _ => Key::None,
    };
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
            max_forwards: max_forwards.map(|n| n - 1),
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
        upstream: upstream_id,
        permit: std::cell::Cell::new(permit),
        read_timeout: route.timeout.unwrap_or(upstream.read_timeout),
        connect_timeout: upstream.connect_timeout,
        retries: upstream.retries,
        balance_key,
        trace,
        upstream_head_len: ubuf.len(),
        started,
    })
}

/// The value of `Max-Forwards` (RFC 9110 §7.6.2: `1*DIGIT`), saturating at u64::MAX. Err: the
/// 400's message, for an invalid value or more than one field.
fn max_forwards(headers: &[Header<'_>]) -> Result<Option<u64>, &'static str> {
    let value = single(headers, "max-forwards").map_err(|()| "more than one Max-Forwards field")?;
    let Some(value) = value else {
        return Ok(None);
    };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err("invalid Max-Forwards value");
    }
    Ok(Some(value.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    })))
}

/// The answer to an OPTIONS or TRACE with `Max-Forwards: 0`: the gateway is the last hop
/// (RFC 9110 §7.6.2). OPTIONS gets 204 with the resource's `Allow`. TRACE gets 405: the
/// gateway never reflects a request, since the echo would hand a page's cookies and
/// credentials to a script (cross-site tracing), which is why nginx refuses TRACE outright.
fn last_hop(
    method: &str,
    view: &RequestView<'_, Headers<'_, '_>>,
    snap: &Snapshot,
    id: RequestId,
) -> Response {
    let Some(allow) = snap.active.router.allowed(view) else {
        return Response::error(404, "No route matches the request", id);
    };
    if method == "OPTIONS" {
        return Response::options(allow, id);
    }
    let mut r = Response::error(
        405,
        "TRACE with Max-Forwards: 0 is not answered: the gateway does not reflect requests",
        id,
    );
    let without_trace: Vec<&str> = allow.split(", ").filter(|m| *m != "TRACE").collect();
    r.allow = Some(without_trace.join(", "));
    r
}

/// The response of an open breaker: the configured fallback, or 503 with the standard body.
fn breaker_open(upstream: &Upstream, retry_after: u64, id: RequestId) -> Response {
    let fallback = upstream.breaker.as_ref().and_then(|b| b.fallback.as_ref());
    let mut r = Response::error(
        fallback.map_or(503, |f| f.status),
        format!("Circuit breaker open for upstream {}", upstream.name),
        id,
    );
    r.retry_after = Some(retry_after);
    if let Some(json) = fallback.and_then(|f| f.json.clone()) {
        r.body = super::Body::Json(json);
    }
    r
}

/// Picks the side of a split: by the sticky key's hash when the request has one (the same
/// key lands on the same side on every worker and across restarts, and changing the weights
/// only moves the keys between the old and new boundaries), else at random by weight.
fn split_side(route: &Route, headers: &[Header<'_>], peer: SocketAddr, worker: &Worker) -> usize {
    let total: u64 = route.split.iter().map(|s| u64::from(s.weight)).sum();
    let key = route.sticky.as_ref().and_then(|sticky| match sticky {
        Sticky::Header(name) => Headers(headers).get(name).map(hash_key),
        Sticky::Cookie(name) => cookie(headers, name).map(hash_key),
        Sticky::Ip => Some(hash_ip(peer.ip())),
    });
    let draw = key.unwrap_or_else(|| worker.rand());
    // Multiply-shift maps the 64-bit draw onto [0, total) preserving order.
    let mut point = ((u128::from(draw) * u128::from(total)) >> 64) as u64;
    for side in &route.split {
        if point < u64::from(side.weight) {
            return side.upstream;
        }
        point -= u64::from(side.weight);
    }
    route.upstream
}

/// The value of cookie `name` (RFC 6265 §5.4: `Cookie: a=1; b=2`, possibly several fields).
fn cookie<'h>(headers: &[Header<'h>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .flat_map(|h| h.value.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

fn hash_ip(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => hash_key(&v4.octets()),
        std::net::IpAddr::V6(v6) => hash_key(&v6.octets()),
    }
}

/// Runs the asynchronous stages; the result says how the request ended (and whether the
/// client connection may stay open).
pub async fn run(ctx: RequestCtx, conn: &mut ClientIo, worker: &Worker, snap: &Snapshot) -> Served {
    let served = super::proxy::forward(&ctx, conn, worker, snap).await;
    // The breaker learns the request's final outcome, after its retries: the upstream stage
    // hands it over before the client gets the answer; what it did not (a client that failed
    // or left) is settled here.
    if let Some(permit) = ctx.permit.take() {
        let state = snap.upstreams.list[ctx.upstream].borrow();
        if let Some(replica) = &state.breaker {
            if let Some(to) = replica.record(permit, served.verdict, clock::now_ms()) {
                crate::warn!("upstream {}: breaker {}", state.name, to.as_str());
            }
        }
    }
    served
}
