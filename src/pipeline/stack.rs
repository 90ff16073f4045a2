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
use std::rc::Rc;
use std::time::Instant;

use super::client::ClientIo;
use super::ctx::{MethodInfo, RequestCtx};
use super::phase::{
    aggregate, auth, breaker, cache, framing, identity, ratelimit, route, split, target, untrusted,
    upstream, Destination, Fields, Flow,
};
use super::proxy::Served;
use super::Response;
use crate::clock;
use crate::compose::bff;
use crate::http::RequestHead;
use crate::io::{Peek, Stream};
use crate::state::worker::{Snapshot, Worker};
use crate::upstream::retry::is_idempotent;

/// What the synchronous phases decided.
pub enum Prepared {
    /// Go on to [`run`] with this context.
    Forward(RequestCtx),
    /// A phase answered the request itself.
    Answer(Response),
    /// An aggregate answers it: [`super::aggregate::serve`] runs its calls.
    Aggregate(Box<aggregate::Pending>),
}

/// Runs the synchronous phases on a parsed head and writes the upstream request head into
/// `ubuf`. Returns the context for [`run`], or the response that ends the request here.
pub fn prepare(
    head: &RequestHead<'_>,
    peer: SocketAddr,
    https: bool,
    worker: &Worker,
    snap: &Rc<Snapshot>,
    ubuf: &mut Vec<u8>,
) -> Prepared {
    let (cfg, router) = (&*snap.active.config, &snap.active.router);
    let policies = &*snap.active.policies;

    // 0. Fields no phase may read go first: names with `_` (nginx's default: a CGI upstream
    //    reads `X_Forwarded_For` as `X-Forwarded-For`, a header the gateway sets), and the
    //    identity headers auth policies set, on every route (only phase 5 says who a client is).
    let mut kept = None;
    let headers = untrusted::strip(&head.headers, &policies.identity_headers, &mut kept);
    // 1. Identity (request id, trace context) first, so every later answer carries it.
    let who = identity::run(headers, cfg.tracing.propagate, || worker.rand());
    let id = &who.id;
    // The route's rate-limit values, once phase 5 or 7 has them: every later answer carries
    // them.
    let rate = std::cell::Cell::new(None);
    // `X-Cache`, once phase 9 has looked: every later answer carries it.
    let cache_mark = std::cell::Cell::new(None);
    // A phase's answer ends the list here, with the request's id and trace context.
    let answer = |mut r: Response| {
        r.head_only = head.method == "HEAD";
        r.trace = who.trace;
        r.rate = r.rate.or(rate.get());
        r.cache = r.cache.or(cache_mark.get());
        r.http10 = head.version == crate::http::Version::Http10;
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
    let mut resource = next!(target::run(head, headers, router, &framing, id));
    // 3b. The BFF client on the normalised path, before routing: its prefix is removed, so
    //    routes match (and the upstream gets) the path under it. The BFF header is read as
    //    sent: phase 0 removed it, as it is set again below to the client decided here (a
    //    prefix wins over it, and a value naming no client is dropped).
    let client = next!(bff::run(
        cfg.bff.as_ref(),
        &head.headers,
        &mut resource,
        &framing,
        id
    ));
    // 4. Route: path, then method, host, headers, client (BEHAVIOR.md precedence);
    //    `Max-Forwards: 0` is answered once the resource is known (RFC 9110 §7.6.2).
    let m = next!(route::run(
        head, headers, &resource, client, router, &framing, id
    ));
    // Answers before the split name the route's own upstream.
    let routed = split::routed(cfg, &m);
    let started = Instant::now();
    let now = clock::ms_at(started);
    // A client's auth and limits stand in for the route's missing ones (phases 5 to 7).
    let limits = routed.route.effective_rate_limits(cfg.bff.as_ref(), client);
    let rejected = |limit: usize| snap.metrics.ratelimit_rejected(limit as u32);
    // 5. Rate limits keyed on the client's address before auth: a flood of bad credentials
    //    from one address is throttled before each costs a signature check.
    let anonymous = auth::Subject::Anonymous;
    let before = next!(ratelimit::run(
        ratelimit::Stage::BeforeAuth,
        limits,
        policies,
        &ratelimit::Request {
            fields: Fields::plain(headers),
            client_ip: peer.ip(),
            subject: &anonymous,
        },
        now,
        rejected,
        &framing,
        &routed,
        id,
    ));
    rate.set(before.headers);
    // 6. Auth, once the route is known (it names the policy); a refused request takes no
    //    subject-keyed unit and no breaker permit.
    let subject = match routed.route.effective_auth(cfg.bff.as_ref(), client) {
        None => auth::Subject::Anonymous,
        Some(policy) => next!(auth::run(
            &policies.auth[policy],
            &auth::Credentials {
                headers,
                target: head.target,
                now_unix: clock::unix_now(),
            },
            || worker.token_cache(policy),
            &framing,
            &routed,
            id,
        )),
    };
    // From here on, the identity headers read are the verified ones, and the BFF header names
    // the client the gateway decided (none: absent), whatever the request said.
    let mut identity = subject.forwarded();
    if let Some((name, c)) = bff::forwarded(cfg.bff.as_ref(), client) {
        identity.push((name, c));
    }
    let fields = Fields {
        headers,
        identity: &identity,
    };
    // 7. Every other rate limit after auth: those keyed on who the client is need the
    //    subject, and an unauthenticated flood must not spend a shared (route, global,
    //    header) quota the authenticated depend on.
    let after = next!(ratelimit::run(
        ratelimit::Stage::AfterAuth,
        limits,
        policies,
        &ratelimit::Request {
            fields,
            client_ip: peer.ip(),
            subject: &subject,
        },
        now,
        rejected,
        &framing,
        &routed,
        id,
    ));
    let limited = before.and(after);
    rate.set(limited.headers);
    // 8. An aggregate leaves here, after auth and its rate limits, before the split, the
    //    cache and the breaker: it has no side, no cache rule and no upstream of its own
    //    (each of its calls goes through its upstream's breaker, pool and retries).
    let agg = aggregate::Request {
        headers,
        resource: &resource,
        framing: &framing,
        subject: &subject,
        forwarded: &identity,
        client_ip: peer.ip(),
        https,
        id: who.id,
        trace: who.trace,
        version: head.version,
        is_head: head.method == "HEAD",
    };
    if let Some(pending) = aggregate::run(
        cfg,
        routed.route,
        m.route,
        &m,
        &agg,
        limited.headers,
        started,
    ) {
        // A leaky bucket shapes an aggregate like any request: it waits for its place in
        // `aggregate::serve` (holding it until then).
        let mut pending = pending;
        pending.delay = limited.delay;
        return Prepared::Aggregate(pending);
    }
    // 9. The split side after auth, so a sticky key on an identity header is the verified one.
    let to = split::run(cfg, &m, &fields, peer.ip(), || worker.rand());
    // 10. The cache after auth and the rate limits (a hit is authenticated and counted like
    //    any request) and after the split (a refresh goes where the request would go), before
    //    the breaker: a hit touches neither the upstream nor its breaker.
    // What the upstream phase reads of the request (and a background refresh, phase 10).
    let req = upstream::Request {
        head,
        headers,
        client_ip: peer.ip(),
        https,
        identity: &who,
        framing: &framing,
        resource: &resource,
        subject: &subject,
        forwarded: &identity,
    };
    let mut cached = None;
    let cache_phase = cfg.cache.as_ref().filter(|c| {
        to.route.cache.is_some() || c.rules.iter().any(|r| !r.invalidate_on.is_empty())
    });
    if let Some(config) = cache_phase {
        let shard = worker.cache_shard(config.max_bytes_per_worker);
        let mut scope: smallvec::SmallVec<[u8; 64]> = smallvec::SmallVec::new();
        scope.extend_from_slice(to.route.name.as_bytes());
        scope.push(0);
        scope.extend_from_slice(to.upstream.name.as_bytes());
        let lookup = cache::lookup(
            cache::Cache {
                config,
                rules: &snap.active.cache,
                shard: &shard,
            },
            to.route,
            &cache::Request {
                method: head.method,
                headers,
                identity: &identity,
                scope: &scope,
                body: framing.body,
                host: resource.host.unwrap_or_default(),
                path: &resource.target.path,
                query: resource.target.query,
                subject: &subject,
                now: clock::unix_now(),
            },
            who.id,
        );
        match lookup {
            cache::Lookup::Skip => {}
            cache::Lookup::Go(pending) => {
                cache_mark.set(pending.mark());
                cached = Some(pending);
            }
            cache::Lookup::Answer(mut r) => {
                r.routed = Some(to.ids());
                return answer(framing.close_if_body(r));
            }
            cache::Lookup::Revalidate(mut r, leader, store) => {
                super::refresh::start(&req, &to, leader, store, worker, snap, &shard);
                r.routed = Some(to.ids());
                return answer(framing.close_if_body(r));
            }
        }
    }
    // 11. The breaker, last before the upstream, so a request answered earlier takes no
    //    permit (a permit dropped unused, as by a later 413, frees its probe slot). A request a
    //    leaky bucket delays is answered now if the breaker is open (its place goes back),
    //    else takes its permit after the wait (`run`): no probe slot is held while it waits;
    //    likewise a cache miss waiting for another request's fetch of its key. An open
    //    breaker is answered with a stale entry when `stale_if_error` allows.
    let permit = {
        let state = snap.upstreams.list[to.upstream_id].borrow();
        // No borrow of the upstream's worker state outlives the phase that reads it.
        match breaker::run(state.breaker.as_ref(), &to, now, &framing, id) {
            Flow::Continue(permit) => permit,
            Flow::Respond(r) => {
                let stale = cached
                    .as_ref()
                    .and_then(|p| p.stale.as_ref())
                    .and_then(|e| cache::stale_answer(e, clock::unix_now(), headers, who.id));
                return answer(match stale {
                    Some(mut stale) => {
                        stale.routed = Some(to.ids());
                        framing.close_if_body(stale)
                    }
                    None => r,
                });
            }
        }
    };
    let waits = limited.delay.is_some() || cached.as_ref().is_some_and(|p| p.wait.is_some());
    let permit = if waits { None } else { permit };
    // 12. A WebSocket upgrade on a websocket route keeps its `Upgrade` (RFC 6455 §4.1; a
    //    malformed handshake is a 400 here); anywhere else `Upgrade` is dropped as hop-by-hop
    //    and the request is an ordinary one. After the phases that apply to every request
    //    (auth, limits, breaker): the upgrade is a request like any other until its 101.
    let upgrade = next!(super::tunnel::handshake(head, headers, &to, &framing, id));
    // 12. Upstream: body limit, balance key, the upstream request head with the identity
    //    headers; `run` does the rest (a leaky bucket's wait first).
    let balance_key = next!(upstream::run(
        &req,
        &to,
        cfg.server.limits.max_body,
        upgrade,
        ubuf
    ));
    // 12. The transform's request-side header edits, on the head the gateway wrote (the
    //    fields it owns cannot be edited: refused at load). With a request program the body
    //    decides the framing, so the proxy stage edits the head once it has run.
    if let Some(t) = to.route.transform.map(|t| &cfg.transforms[t]) {
        crate::compose::transform::edit_upstream_head(t, ubuf);
    }

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
        upgrade,
        route: to.route_id,
        upstream: to.upstream_id,
        permit: std::cell::Cell::new(permit),
        read_timeout: to.route.timeout.unwrap_or(to.upstream.read_timeout),
        connect_timeout: to.upstream.connect_timeout,
        retries: to.upstream.retries,
        balance_key,
        trace: who.trace,
        upstream_head_len: ubuf.len(),
        rate: limited.headers,
        delay: limited.delay,
        cache: cached,
        started,
    })
}

/// Runs the asynchronous stages; the result says how the request ended (and whether the
/// client connection may stay open).
pub async fn run(
    mut ctx: RequestCtx,
    conn: &mut ClientIo,
    worker: &Worker,
    snap: &Snapshot,
) -> Served {
    // The cache's part lives as long as the request: dropped at its end, a fetch's leadership
    // releases the misses waiting for it.
    let mut cached = ctx.cache.take();
    let delayed = ctx.delay.is_some();
    // A leaky bucket shapes the request: it leaves at its place's time (unless its client
    // leaves first), then takes its breaker permit. Boxed: the rare path must not grow every
    // request's future.
    if let Some(delay) = ctx.delay.take() {
        let cache = cached.as_deref();
        let stale = cache.and_then(|p| p.stale.clone());
        let mark = cache.and_then(cache::Pending::mark);
        let shaped = shaped(&ctx, delay, stale, mark, conn, snap);
        if let Some(answered) = Box::pin(shaped).await {
            return answered;
        }
    }
    // A miss whose key another request is fetching waits for it, then looks again.
    if let Some(pending) = cached.as_deref_mut().filter(|p| p.wait.is_some()) {
        let coalesced = coalesced(&ctx, pending, !delayed, conn, worker, snap);
        if let Some(answered) = Box::pin(coalesced).await {
            return answered;
        }
    }
    let served = super::proxy::forward(&ctx, cached.as_deref_mut(), conn, worker, snap).await;
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

/// Waits until a leaky bucket's `until_ms` (on the clock the limiter was asked with) while
/// watching the client, then runs the breaker phase the request skipped. Some: the request
/// ends here: its client closed (or reset) its connection while it waited (the places go back,
/// `Delay`'s drop, so the turn goes to a later request, and nothing is sent upstream for an
/// answer no one will read: nginx's `limit_req` delay stops likewise; counted as 499), or the
/// breaker answered (sent). A client that sends more bytes meanwhile (the rest of its body, a
/// pipelined request) is there: those bytes stay unread for later, and the rest of the wait is
/// not watched. Dropped before then (the connection's task ends), the request gives its places
/// back too.
async fn shaped(
    ctx: &RequestCtx,
    mut delay: Box<ratelimit::Delay>,
    stale: Option<Rc<crate::cache::Entry>>,
    mark: Option<crate::pipeline::respond::CacheMark>,
    conn: &mut ClientIo,
    snap: &Snapshot,
) -> Option<Served> {
    let left = |d: &ratelimit::Delay| {
        std::time::Duration::from_millis(d.until_ms.saturating_sub(clock::now_ms()))
    };
    if let Ok(Client::Left) =
        crate::io::timeout::timeout(left(&delay), watch(&mut conn.io.stream)).await
    {
        return Some(Served {
            keep: false,
            status: 0,
            upstream: None,
            verdict: crate::upstream::breaker::Outcome::Ignored,
            cache: None,
        });
    }
    let rest = left(&delay);
    if !rest.is_zero() {
        monoio::time::sleep(rest).await;
    }
    delay.admit();
    late_breaker(ctx, stale.as_ref(), mark, conn, snap).await
}

/// Waits (at most the request's read timeout) for the fetch of its key that another request
/// is making, then looks the key up again: found, it is answered from the cache (`HIT`);
/// otherwise (the response was not storable, too large, failed, or the wait timed out) it
/// goes upstream itself, taking the breaker permit it skipped (`breaker_due`).
async fn coalesced(
    ctx: &RequestCtx,
    pending: &mut cache::Pending,
    breaker_due: bool,
    conn: &mut ClientIo,
    worker: &Worker,
    snap: &Snapshot,
) -> Option<Served> {
    if let Some(flight) = pending.wait.take() {
        // A timeout is not an error: the request goes upstream itself.
        let _ = crate::io::timeout::timeout(ctx.read_timeout, flight.done()).await;
    }
    if let (Some(store), Some(config)) = (&pending.store, &snap.active.config.cache) {
        let shard = worker.cache_shard(config.max_bytes_per_worker);
        let found = store.find(&mut shard.borrow_mut(), clock::unix_now());
        if let Some(found) = found {
            let result = match found.state {
                crate::cache::rules::State::Fresh => Some(crate::metrics::CacheResult::Hit),
                crate::cache::rules::State::StaleWhileRevalidate => {
                    Some(crate::metrics::CacheResult::Stale)
                }
                _ => None,
            };
            if let Some(result) = result {
                let r = cache::answer(&found, result, &[], ctx.id);
                return Some(send(ctx, r, None, conn, snap, worker.drain.is_fired()).await);
            }
        }
    }
    if breaker_due {
        let mark = pending.mark();
        return late_breaker(ctx, pending.stale.as_ref(), mark, conn, snap).await;
    }
    None
}

/// Runs the breaker phase for a request that skipped it while it waited. Some: the breaker
/// answered (or a stale entry did, for an open breaker), and the answer was sent.
async fn late_breaker(
    ctx: &RequestCtx,
    stale: Option<&Rc<crate::cache::Entry>>,
    mark: Option<crate::pipeline::respond::CacheMark>,
    conn: &mut ClientIo,
    snap: &Snapshot,
) -> Option<Served> {
    let cfg = &*snap.active.config;
    let to = Destination {
        route_id: ctx.route,
        route: &cfg.routes[ctx.route],
        matched: 0,
        upstream_id: ctx.upstream,
        upstream: &cfg.upstreams[ctx.upstream],
    };
    let framing = framing::Framing {
        body: ctx.body,
        keep_alive: ctx.keep_alive,
        expect_continue: ctx.expect_continue,
    };
    let flow = {
        // No borrow of the upstream's worker state is held across the await below.
        let state = snap.upstreams.list[ctx.upstream].borrow();
        breaker::run(
            state.breaker.as_ref(),
            &to,
            clock::now_ms(),
            &framing,
            &ctx.id,
        )
    };
    let r = match flow {
        Flow::Continue(permit) => {
            ctx.permit.set(permit);
            return None;
        }
        Flow::Respond(r) => r,
    };
    let r = stale
        .and_then(|e| cache::stale_answer(e, clock::unix_now(), &[], ctx.id))
        .map_or(r, |stale| framing.close_if_body(stale));
    Some(send(ctx, r, mark, conn, snap, false).await)
}

/// Sends an answer made after the synchronous phases (the breaker's, or a stored response),
/// with what the phases gave the request (`mark`: the cache's, for an answer that has none).
async fn send(
    ctx: &RequestCtx,
    mut r: Response,
    mark: Option<crate::pipeline::respond::CacheMark>,
    conn: &mut ClientIo,
    snap: &Snapshot,
    draining: bool,
) -> Served {
    r.head_only = ctx.method.is_head;
    r.trace = ctx.trace;
    r.rate = ctx.rate;
    r.cache = r.cache.or(mark);
    r.http10 = ctx.version == crate::http::Version::Http10;
    if !ctx.keep_alive || ctx.body != crate::http::BodyKind::None || draining {
        r.close = true;
    }
    let sent = conn
        .send_response(&r, snap.active.config.server.limits.body_timeout)
        .await
        .is_ok();
    Served {
        keep: sent && !r.close,
        status: r.status,
        upstream: None,
        verdict: crate::upstream::breaker::Outcome::Ignored,
        cache: r.cache.map(|m| m.result),
    }
}

/// What watching a waiting request's client found.
pub(super) enum Client {
    /// It closed its side, or the connection failed.
    Left,
    /// It sent more bytes, or the stream cannot be watched: it is taken to be there.
    Stays,
}

/// Resolves once the client closes or sends more bytes. A poll and a peek: no byte is taken.
pub(super) async fn watch(client: &mut Stream) -> Client {
    loop {
        if client.readable().await.is_err() {
            return Client::Stays;
        }
        match client.peek() {
            Peek::Closed | Peek::Error => return Client::Left,
            Peek::Data => return Client::Stays,
            // A wake-up with nothing to read: watch again.
            Peek::Nothing => {}
        }
    }
}
