//! The ONE place where the order of the request phases is declared: [`prepare`] calls them
//! in order, one line each; every phase is a module of [`super::phase`] with a narrow context
//! and its own part of the per-request state. A new capability is one module and one line.
//!
//! A request goes through [`prepare`] (synchronous, while its head is still borrowed from the
//! connection's read buffer) and then [`run`] (asynchronous I/O). A phase that answers returns
//! [`Flow::Respond`]; the list ends there and the answer carries the request's id and trace.
//! The order, one line per constraint:
//!
//! 0. underscores: fields whose name holds `_` are dropped before any phase can read them;
//! 1. identity: the request id (and trace context) first, so every later answer carries it;
//! 2. framing: body framing is validated before anything may read the body (RFC 9112 §6.3);
//! 3. target: Host and the target form before routing (CONNECT refused, `OPTIONS *` answered);
//!    the path is normalised once, so the path that is routed is the path that is forwarded;
//! 4. route: path, then method, host, headers (BEHAVIOR.md precedence); `Max-Forwards: 0` is
//!    answered here, once the resource is known (RFC 9110 §7.6.2);
//!    split: after the route, whose split (canary / A-B) picks the upstream;
//! 5. later capabilities slot in here, in this order: client/BFF -> auth -> rate limit ->
//!    cache -> aggregate | transform (each is rejected at config load until it lands);
//!    breaker: last before the upstream, so a request answered earlier takes no permit (a
//!    permit dropped unused, as by a later 413, frees its probe slot);
//! 6. upstream: body limit, balance key, the upstream request head; then [`run`] performs the
//!    exchange (retries, streaming) in [`super::proxy`].

use std::net::SocketAddr;
use std::time::Instant;

use super::client::ClientIo;
use super::ctx::{MethodInfo, RequestCtx};
use super::phase::{breaker, framing, identity, route, split, target, underscores, upstream, Flow};
use super::proxy::Served;
use super::Response;
use crate::clock;
use crate::http::RequestHead;
use crate::state::worker::{Snapshot, Worker};
use crate::upstream::retry::is_idempotent;

/// What the synchronous phases decided.
pub enum Prepared {
    /// Go on to [`run`] with this context.
    Forward(RequestCtx),
    /// A phase answered the request itself.
    Answer(Response),
}

/// Runs the synchronous phases on a parsed head and writes the upstream request head into
/// `ubuf`. Returns the context for [`run`], or the response that ends the request here.
pub fn prepare(
    head: &RequestHead<'_>,
    peer: SocketAddr,
    worker: &Worker,
    snap: &Snapshot,
    ubuf: &mut Vec<u8>,
) -> Prepared {
    let (cfg, router) = (&*snap.active.config, &snap.active.router);

    let mut kept = None;
    let headers = underscores::strip(&head.headers, &mut kept);
    let who = identity::run(headers, cfg.tracing.propagate, || worker.rand());
    let id = &who.id;
    // Every answer, whichever phase makes it, carries the request's id and trace context.
    let answer = |mut r: Response| {
        r.head_only = head.method == "HEAD";
        r.trace = who.trace;
        Prepared::Answer(r)
    };
    macro_rules! next {
        ($phase:expr) => {
            match $phase {
                Flow::Continue(out) => out,
                Flow::Respond(r) => return answer(r),
            }
        };
    }
    let framing = next!(framing::run(head.version, headers, id));
    let resource = next!(target::run(head, headers, router, &framing, id));
    let m = next!(route::run(
        head.method,
        headers,
        &resource,
        router,
        &framing,
        id
    ));
    let to = split::run(cfg, &m, headers, peer.ip(), || worker.rand());
    let started = Instant::now();
    let breaker = &snap.upstreams.list[to.upstream_id];
    let now_ms = clock::ms_at(started);
    let permit = next!(breaker::run(
        breaker.borrow().breaker.as_ref(),
        &to,
        now_ms,
        &framing,
        id
    ));
    let req = upstream::Request {
        head,
        headers,
        client_ip: peer.ip(),
        identity: &who,
        framing: &framing,
        resource: &resource,
    };
    let balance_key = next!(upstream::run(&req, &to, cfg.server.limits.max_body, ubuf));

    Prepared::Forward(RequestCtx {
        id: who.id,
        version: head.version,
        method: MethodInfo {
            is_head: head.method == "HEAD",
            idempotent: is_idempotent(head.method),
        },
        keep_alive: framing.keep_alive,
        body: framing.body,
        expect_continue: framing.expect_continue,
        route: to.route_id,
        upstream: to.upstream_id,
        permit: std::cell::Cell::new(permit),
        read_timeout: to.route.timeout.unwrap_or(to.upstream.read_timeout),
        connect_timeout: to.upstream.connect_timeout,
        retries: to.upstream.retries,
        balance_key,
        trace: who.trace,
        upstream_head_len: ubuf.len(),
        started,
    })
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
