//! The ONE place where the order of the request phases is declared: [`prepare`] calls them
//! in order, one line each, with one comment per ordering constraint. Each phase is a module
//! of [`super::phase`] with a narrow context and its own part of the per-request state, so a
//! new capability is one module and one line here.
//!
//! A request goes through [`prepare`] (synchronous, while its head is still borrowed from the
//! connection's read buffer) and then [`run`] (asynchronous I/O: the exchange with the
//! upstream, [`super::proxy`]). A phase that answers returns [`Flow::Respond`]: the list ends
//! there, and the answer carries the request's id and trace context whichever phase made it.

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

    // 0. Fields named with `_` go before any phase can read them (nginx's default): a CGI
    //    upstream reads `X_Forwarded_For` as `X-Forwarded-For`, a header the gateway sets.
    let mut kept = None;
    let headers = underscores::strip(&head.headers, &mut kept);
    // 1. Identity (request id, trace context) first, so every later answer carries it.
    let who = identity::run(headers, cfg.tracing.propagate, || worker.rand());
    let id = &who.id;
    // A phase's answer ends the list here, with the request's id and trace context.
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
    // 2. Framing is validated before anything may read the body (RFC 9112 §6.3).
    let framing = next!(framing::run(head.version, headers, id));
    // 3. Host and the target form before routing; the path is normalised once, so the path
    //    that is routed is the path that is forwarded.
    let resource = next!(target::run(head, headers, router, &framing, id));
    // 4. Route: path, then method, host, headers (BEHAVIOR.md precedence); `Max-Forwards: 0`
    //    is answered once the resource is known (RFC 9110 §7.6.2). Then the route's split.
    let m = next!(route::run(head, headers, &resource, router, &framing, id));
    let to = split::run(cfg, &m, headers, peer.ip(), || worker.rand());
    // 5. Later capabilities slot in here, in this order: client/BFF -> auth -> rate limit ->
    //    cache -> aggregate | transform (each is rejected at config load until it lands).
    // 6. The breaker, last before the upstream, so a request answered earlier takes no permit
    //    (a permit dropped unused, as by a later 413, frees its probe slot).
    let started = Instant::now();
    let now = clock::ms_at(started);
    let state = snap.upstreams.list[to.upstream_id].borrow();
    let permit = next!(breaker::run(state.breaker.as_ref(), &to, now, &framing, id));
    // No borrow of the upstream's worker state outlives the phase that reads it.
    drop(state);
    // 7. Upstream: body limit, balance key, the upstream request head; `run` does the rest.
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
    // The breaker learns the request's final outcome, after its retries, from
    // `upstream::call` before the client gets the answer. A permit still here never reached
    // the call (the client failed while its body was being read): settled here.
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
