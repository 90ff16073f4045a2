//! The one way to call an upstream: [`call`] sends a request to a named upstream through its
//! balancer, pool, outlier detection, breaker, retries and retry budget, and hands back the
//! final response head with the connection its body arrives on ([`UpstreamResponse`]).
//!
//! The caller owns the request and the client it came from; [`call`] reaches it only through
//! the [`Caller`] seam: the bytes held for replay, the rest of a streamed body, the interim
//! responses it may relay and the final head it turns into its own answer. So the proxy phase
//! streams with it, and an aggregator or a cache refresh can use it with a held request and no
//! client at all.
//!
//! Retries follow BEHAVIOR.md: connect failures for any method; timeouts, resets and 502-504
//! only for idempotent requests whose body is still held; never once a response byte (an
//! interim response included) went to the client; never beyond `retries` or the upstream's
//! retry budget. A failure is a free "stale connection" replay (no retry spent, no budget
//! taken, at most [`MAX_STALE_REPLAYS`] per request) only when the upstream cannot have seen
//! the request:
//! - the pooled connection is found closed, or holding bytes, by the peek at reuse
//!   ([`UpstreamState::checkout`]): it is dropped before anything is sent; or
//! - the kernel refused the first byte of the request on a pooled connection (the write failed
//!   with EPIPE/ECONNRESET before any byte was accepted): the connection was already dead.
//!
//! Once a byte of the request was accepted, a close or reset before the response cannot be told
//! apart from an upstream that read the whole request, acted on it and then failed, so it is an
//! attempt like any other. The race this leaves (an upstream closing an idle connection between
//! the peek and the request's arrival) costs one ordinary retry, never a duplicate that
//! `retries` did not allow.
//!
//! Invariant: the outcome reaches outlier detection and the breaker before the client sees the
//! answer ([`UpstreamResponse::settle`] right before the first byte leaves, or the failure
//! path), so a client that sends its next request the moment it has this one's finds both
//! already moved.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::balance::{Key, Tried};
use super::breaker::{Admission, BreakerReplica, FailureKind, Outcome, Permit};
use super::client::UpConn;
use super::retry::{may_retry, retryable_status};
use super::{UpstreamError, UpstreamState};
use crate::config::model::Upstream;
use crate::http::{self, BodyKind, ResponseHead};
use crate::metrics::{UpstreamOutcome, WorkerMetrics};

/// Response heads from upstreams: generous, but within the parser's stack slots (128 headers)
/// so parsing never allocates.
pub const HEAD_LIMITS: http::HeadLimits = http::HeadLimits {
    max_request_line: 8192,
    max_header_bytes: 64 * 1024,
    max_headers: 128,
};

/// Most bytes one read of a response head may bring in (the head limit plus some body).
const HEAD_READ: usize = HEAD_LIMITS.max_header_bytes + 8192;

/// Free replays of one request on fresh connections after a pooled one turned out closed.
pub const MAX_STALE_REPLAYS: u32 = 2;

/// Interim (1xx) responses accepted before the final one. RFC 9110 §15.2 sets no bound, but
/// an upstream that sends them without end would hold the request (and, relayed, the
/// client) forever, each one arriving within the read timeout.
pub const MAX_INTERIM: u32 = 32;

/// The upstream being called: its compiled config and this worker's state for it.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// Index in `Config::upstreams` (the metrics label).
    pub id: usize,
    pub config: &'a Upstream,
    pub state: &'a RefCell<UpstreamState>,
}

/// What [`call`] needs of the worker: its metrics, its index (per-worker in-flight slots) and
/// the coarse clock the retry budget counts in.
#[derive(Clone, Copy)]
pub struct Env<'a, 'c> {
    pub metrics: &'a Rc<WorkerMetrics>,
    pub worker: usize,
    pub now_sec: &'c (dyn Fn() -> u64 + 'c),
}

/// How this request may be sent: the retry rules' inputs and the timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub retries: u32,
    pub idempotent: bool,
    /// The request is HEAD: its response has no body whatever its framing says.
    pub head: bool,
    pub balance_key: Key,
    pub connect_timeout: Duration,
    /// For every read of the response and every write of the request.
    pub read_timeout: Duration,
    /// When the request arrived: endpoint rotation is read as of then.
    pub started: Instant,
    /// A WebSocket upgrade (`pipeline::tunnel`): sent on a fresh connection, never a pooled
    /// one (a connection that becomes a tunnel is the upgrade's alone from its first byte),
    /// a `101` is the final answer, and whatever the answer, the connection never goes back to
    /// the pool.
    pub upgrade: bool,
}

/// The caller's side of an exchange: the request it sends and the client (if any) that sees
/// interim responses. Implemented by the proxy phase over the client connection.
// The runtime is single-threaded (monoio): these futures are never sent across threads, so
// the missing `Send` bound that this lint warns about is what is wanted.
#[allow(async_fn_in_trait)]
pub trait Caller {
    /// The request head and the part of its body held for replay, sent first on every
    /// attempt. [`call`] takes it for each write and puts it back.
    fn held(&mut self) -> &mut Vec<u8>;
    /// Whether the whole body is in [`Caller::held`].
    fn complete(&self) -> bool;
    /// Whether some of the body already went to an upstream beyond the held bytes (or the held
    /// bytes were lost to a write that timed out): the request can no longer be sent again.
    fn streamed(&self) -> bool;
    /// The held bytes are gone (a write timed out with the kernel holding them).
    fn lose_held(&mut self);
    /// Sends the rest of the body to `up`. `ClientAborted` when the client failed; other
    /// errors are the upstream's.
    async fn send_rest(&mut self, up: &mut UpConn) -> Result<(), UpstreamError>;
    /// The upstream answered before the whole body went up (the rest is not sent): neither
    /// connection can carry another request.
    fn abandoned(&self) -> bool;
    /// An interim (1xx) response arrived; the caller takes what it relays of it now (the head
    /// is borrowed from the connection's buffer). True: it has something to send, which
    /// [`Caller::send_interim`] sends next.
    fn interim(&mut self, head: &ResponseHead<'_>) -> bool;
    /// Sends what [`Caller::interim`] took. `ClientAborted` when it found the client gone.
    async fn send_interim(&mut self) -> Result<(), UpstreamError>;
    /// A response byte (an interim response) reached the client: nothing is retried any more.
    fn interim_relayed(&self) -> bool;
    /// The final response head, once it is the answer (no retry follows). It is still borrowed
    /// from the connection's buffer: the caller builds its own head from it now.
    fn final_head(&mut self, head: &ResponseHead<'_>, body: BodyKind);
}

/// The [`Caller`] of a request held whole with no client behind it (an aggregate's call, the
/// cache's background refresh): nothing streamed, no interim response relayed; `on_head` sees
/// the final head while it is still borrowed from the connection's buffer.
pub struct Held<F: FnMut(&ResponseHead<'_>, BodyKind)> {
    pub request: Vec<u8>,
    pub on_head: F,
}

impl<F: FnMut(&ResponseHead<'_>, BodyKind)> Caller for Held<F> {
    fn held(&mut self) -> &mut Vec<u8> {
        &mut self.request
    }
    fn complete(&self) -> bool {
        true
    }
    fn streamed(&self) -> bool {
        false
    }
    fn lose_held(&mut self) {}
    async fn send_rest(&mut self, _: &mut UpConn) -> Result<(), UpstreamError> {
        Ok(())
    }
    fn abandoned(&self) -> bool {
        false
    }
    fn interim(&mut self, _: &ResponseHead<'_>) -> bool {
        false
    }
    async fn send_interim(&mut self) -> Result<(), UpstreamError> {
        Ok(())
    }
    fn interim_relayed(&self) -> bool {
        false
    }
    fn final_head(&mut self, head: &ResponseHead<'_>, body: BodyKind) {
        (self.on_head)(head, body);
    }
}

/// A call that ended without a response for the caller.
#[derive(Debug)]
pub struct CallFailure {
    pub error: UpstreamError,
    /// The endpoint of the last attempt and how long it took, if one was made (the access
    /// log's `upstream_addr` and `upstream_ms`).
    pub last: Option<(SocketAddr, Duration)>,
}

/// An open breaker's refusal: a probe is admitted in `retry_after_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerOpen {
    pub retry_after_secs: u64,
}

impl From<BreakerOpen> for UpstreamError {
    fn from(o: BreakerOpen) -> Self {
        UpstreamError::BreakerOpen {
            retry_after_secs: o.retry_after_secs,
        }
    }
}

/// Asks an upstream's breaker (this worker's replica; None when the upstream has none)
/// whether a request may go: `Ok(permit)` to carry into [`call`], or the refusal.
pub fn admit(replica: Option<&BreakerReplica>, now_ms: u64) -> Result<Option<Permit>, BreakerOpen> {
    let Some(replica) = replica else {
        return Ok(None);
    };
    match replica.admit(now_ms) {
        Admission::Allowed(p) | Admission::Probe(p) => Ok(Some(p)),
        Admission::Rejected { retry_after_secs } => Err(BreakerOpen { retry_after_secs }),
    }
}

/// A final response head from the upstream, with the connection its body arrives on.
///
/// The caller streams or collects the body from [`UpstreamResponse::conn`], calls
/// [`UpstreamResponse::settle`] right before the first byte leaves for its client, and ends
/// with [`UpstreamResponse::complete`], [`UpstreamResponse::cut`] or
/// [`UpstreamResponse::failed`]. Dropped without one of these, the connection is closed and
/// the attempt counted by its status.
pub struct UpstreamResponse<'a> {
    pub status: u16,
    /// The body's framing on the upstream connection.
    pub body: BodyKind,
    /// The connection; its unconsumed bytes are the start of the body.
    pub conn: UpConn,
    pub addr: SocketAddr,
    /// When this attempt began (connect included).
    pub began: Instant,
    /// The upstream framed the response and did not ask to close.
    reusable: bool,
    /// The attempt's bookkeeping; its [`Attempt::settle`] is for a caller that streams from
    /// `conn` while it settles.
    pub attempt: Attempt<'a>,
}

/// The bookkeeping of the attempt that produced a response: its endpoint stays counted in
/// flight (balancer, least-request, health) until the response ends, and the attempt is
/// counted in the metrics then.
pub struct Attempt<'a> {
    target: Target<'a>,
    metrics: &'a Rc<WorkerMetrics>,
    worker: usize,
    ep: usize,
    status: u16,
    began: Instant,
    permit: Option<Permit>,
    /// Outlier detection and the breaker have learnt the outcome.
    settled: bool,
    /// Set when the body failed before any byte left: the attempt counts as that failure.
    failed: Option<UpstreamOutcome>,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let outcome = self
            .failed
            .unwrap_or_else(|| UpstreamOutcome::from_status(self.status));
        let id = self.target.id as u32;
        self.metrics.upstream(id, outcome, self.began.elapsed());
        let mut s = self.target.state.borrow_mut();
        s.balancer.finish(self.ep);
        s.health[self.ep].inflight_add(self.worker, -1);
    }
}

impl Attempt<'_> {
    /// The first byte of the answer is about to leave: outlier detection and the breaker learn
    /// its status now. Idempotent.
    pub fn settle(&mut self) {
        if !std::mem::replace(&mut self.settled, true) {
            passive(self.target.state, self.ep, self.status >= 500);
            if let Some(permit) = self.permit.take() {
                record(self.target.state, permit, verdict_of_status(self.status));
            }
        }
    }
}

impl<'a> UpstreamResponse<'a> {
    /// See [`Attempt::settle`].
    pub fn settle(&mut self) {
        self.attempt.settle();
    }

    /// The breaker's reading of this response.
    pub fn verdict(&self) -> Outcome {
        verdict_of_status(self.status)
    }

    /// The whole body was read: the connection goes back to the pool when the upstream
    /// allows it and sent nothing past the response.
    pub fn complete(mut self) {
        self.settle();
        let UpstreamResponse {
            mut conn,
            reusable,
            attempt,
            ..
        } = self;
        if reusable && !conn.pending_bytes() {
            conn.reused = true;
            let now = Instant::now();
            attempt
                .target
                .state
                .borrow_mut()
                .checkin(attempt.ep, conn, now);
        }
        drop(attempt);
    }

    /// Reads the whole body into memory, decoded from its framing, and ends the response
    /// ([`UpstreamResponse::complete`] on success, the connection reused when it may be). For
    /// callers that need the body itself (aggregation, transforms, the cache's refresh), not
    /// for streaming to a client. A broken framing is a `BadResponse` and a stall past
    /// `read_timeout` a `ReadTimeout`, both counted against the upstream; a body over `limit`
    /// bytes is a `BadResponse` too, but the limit is the caller's: the upstream answered, and
    /// outlier detection and the breaker learn its status, not a failure.
    pub async fn collect(
        self,
        limit: usize,
        read_timeout: Duration,
    ) -> Result<Vec<u8>, CallFailure> {
        self.collect_within(&mut Limit { left: limit, limit }, read_timeout)
            .await
    }

    /// [`UpstreamResponse::collect`] with the bytes it may keep asked of `allowance` before
    /// each piece is kept (the whole of a `Content-Length` body at once, before any is read),
    /// so a limit several bodies share holds at every moment, not only once each is whole.
    /// A refusal ends it as `collect`'s limit does (the caller's limit, not the upstream's
    /// failure), its detail naming [`Allowance::limit`].
    ///
    /// Not an `async fn`: one would move `self` (384 bytes) from its argument slot into a
    /// second one inside its future; the block below reads it where it was captured.
    pub fn collect_within<'s, A: Allowance>(
        self,
        allowance: &'s mut A,
        read_timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, CallFailure>> + use<'a, 's, A> {
        let mut resp = self;
        async move {
            match read_body(&mut resp.conn, resp.body, allowance, read_timeout).await {
                Ok(body) => {
                    resp.complete();
                    Ok(body)
                }
                Err(BodyFail::TooLarge(e)) => {
                    resp.settle();
                    Err(CallFailure {
                        error: e,
                        last: Some((resp.addr, resp.began.elapsed())),
                    })
                }
                Err(BodyFail::Upstream(e)) => Err(resp.failed(e)),
            }
        }
    }

    /// The body was cut after part of it reached the client: the connection is closed.
    pub fn cut(mut self) {
        self.settle();
    }

    /// A `101 Switching Protocols` to an upgrade ([`Policy::upgrade`]), about to be relayed:
    /// outlier detection, the breaker and the metrics count the exchange now (a success; the
    /// upstream's duration is the time to its 101, not the tunnel's life), and the connection
    /// leaves the upstream's bookkeeping for good. The tunnel owns it from here (still counted
    /// in `dispatch_connections_active{side="upstream"}` until it is dropped); it never returns
    /// to the pool.
    pub fn into_tunnel(mut self) -> UpConn {
        self.settle();
        let UpstreamResponse { conn, attempt, .. } = self;
        drop(attempt);
        conn
    }

    /// The body failed before any byte of the answer left: the attempt failed with `e`, which
    /// outlier detection and the breaker learn; the caller answers with it.
    pub fn failed(mut self, e: UpstreamError) -> CallFailure {
        let a = &mut self.attempt;
        a.failed = Some(outcome_of(&e));
        if !std::mem::replace(&mut a.settled, true) {
            let verdict = verdict_of(&e);
            if verdict != Outcome::Ignored {
                passive(a.target.state, a.ep, true);
            }
            if let Some(permit) = a.permit.take() {
                record(a.target.state, permit, verdict);
            }
        }
        CallFailure {
            error: e,
            last: Some((self.addr, self.began.elapsed())),
        }
    }
}

/// What a caller of [`UpstreamResponse::collect_within`] lets it keep of a body.
pub trait Allowance {
    /// Takes `n` more bytes; false, with nothing taken: they are over the limit.
    fn take(&mut self, n: usize) -> bool;
    /// The limit, in bytes, that a refusal's error names.
    fn limit(&self) -> usize;
}

/// One body's own limit: [`UpstreamResponse::collect`]'s.
struct Limit {
    left: usize,
    limit: usize,
}

impl Allowance for Limit {
    fn take(&mut self, n: usize) -> bool {
        match self.left.checked_sub(n) {
            Some(left) => {
                self.left = left;
                true
            }
            None => false,
        }
    }
    fn limit(&self) -> usize {
        self.limit
    }
}

/// Why [`read_body`] stopped.
enum BodyFail {
    /// Over the caller's limit: not the upstream's fault.
    TooLarge(UpstreamError),
    Upstream(UpstreamError),
}

/// The body of a response framed as `body`, decoded, as much as `allowance` takes.
async fn read_body(
    up: &mut UpConn,
    body: BodyKind,
    allowance: &mut impl Allowance,
    timeout: Duration,
) -> Result<Vec<u8>, BodyFail> {
    let addr = up.addr;
    let over = |allowance: &dyn Allowance| {
        BodyFail::TooLarge(UpstreamError::BadResponse {
            addr,
            detail: format!("body over the {}-byte limit", allowance.limit()),
        })
    };
    let mut out = Vec::new();
    match body {
        BodyKind::None => {}
        BodyKind::Length(n) => {
            if usize::try_from(n).ok().is_none_or(|n| !allowance.take(n)) {
                return Err(over(&*allowance));
            }
            let mut remaining = n as usize;
            while remaining > 0 {
                if up.data().is_empty() && fill(up, timeout).await? == 0 {
                    let detail = format!("closed with {remaining} body bytes missing");
                    return Err(BodyFail::Upstream(UpstreamError::BadResponse {
                        addr,
                        detail,
                    }));
                }
                let take = remaining.min(up.data().len());
                out.extend_from_slice(&up.data()[..take]);
                up.consume(take);
                remaining -= take;
            }
        }
        BodyKind::Chunked => {
            let mut dec = http::ChunkedDecoder::new();
            loop {
                let step = dec.decode(up.data()).map_err(|e| {
                    BodyFail::Upstream(UpstreamError::BadResponse {
                        addr,
                        detail: format!("invalid chunked body: {e}"),
                    })
                })?;
                if let Some(r) = step.data {
                    if !allowance.take(r.len()) {
                        return Err(over(&*allowance));
                    }
                    out.extend_from_slice(&up.data()[r]);
                }
                up.consume(step.consumed);
                if step.done {
                    break;
                }
                if (step.consumed == 0 || up.data().is_empty()) && fill(up, timeout).await? == 0 {
                    let detail = "closed in the middle of a chunked body".into();
                    return Err(BodyFail::Upstream(UpstreamError::BadResponse {
                        addr,
                        detail,
                    }));
                }
            }
        }
        BodyKind::UntilClose => loop {
            let n = up.data().len();
            if !allowance.take(n) {
                return Err(over(&*allowance));
            }
            out.extend_from_slice(up.data());
            up.consume(n);
            if fill(up, timeout).await? == 0 {
                break;
            }
        },
    }
    Ok(out)
}

/// One read into `up`'s buffer.
async fn fill(up: &mut UpConn, timeout: Duration) -> Result<usize, BodyFail> {
    up.fill(timeout, HEAD_READ)
        .await
        .map_err(BodyFail::Upstream)
}

/// How one attempt ended, when it did not produce the answer.
enum Miss {
    /// A pooled connection refused the request's first byte: it was closed before the request,
    /// which the upstream cannot have seen.
    Stale(UpstreamError),
    /// Failed before any response byte reached the client.
    Failed(UpstreamError),
    /// A 502/503/504 the request is retried on (the budget was taken when it was decided).
    RetryStatus(UpstreamError),
    /// The caller's client failed.
    Client(UpstreamError),
}

/// The upstream's side of a final response head.
struct Facts {
    status: u16,
    body: BodyKind,
    reusable: bool,
}

/// Sends the caller's request to `target` and returns the final response head, retrying by the
/// rules in the module doc. `permit` is the breaker's admission (see [`admit`]), settled here
/// on failure or by the returned response.
pub async fn call<'a, C: Caller>(
    target: Target<'a>,
    env: Env<'a, '_>,
    policy: &Policy,
    permit: Option<Permit>,
    caller: &mut C,
) -> Result<UpstreamResponse<'a>, CallFailure> {
    let Target { id, config, state } = target;
    {
        let s = state.borrow();
        s.pending_requests.set(s.pending_requests.get() + 1);
    }
    let mut permit = permit;
    let metrics = env.metrics;
    let mut tried = Tried::default();
    let mut attempts: u32 = 0;
    let mut stale: u32 = 0;
    let retry =
        |e: &UpstreamError, caller: &C, n: u32| may_try_again(e, caller, n, policy, state, env);
    let fail = |permit: &mut Option<Permit>, error: UpstreamError, last| {
        if let Some(p) = permit.take() {
            record(state, p, verdict_of(&error));
        }
        CallFailure { error, last }
    };
    // The rotation is read as of the request's start (an ejection ending meanwhile is seen by
    // the next request); results are recorded at the time they happen (see `passive`).
    let now_ms = crate::clock::ms_at(policy.started);
    loop {
        let (ep, pooled) = pick(state, tried, policy.balance_key, now_ms, !policy.upgrade);
        let addr = config.endpoints[ep].addr;
        // The attempt's duration, connect included: what the access log's `upstream_ms` and
        // the upstream duration histogram show, failures included.
        let began = Instant::now();
        let mut up = match pooled {
            Some(c) => c,
            None => {
                let tls = state.borrow().tls_connect(ep);
                match UpConn::connect(addr, tls, policy.connect_timeout).await {
                    Ok(mut c) => {
                        c.count_in(metrics);
                        c
                    }
                    Err(e) => {
                        let took = began.elapsed();
                        metrics.upstream(id as u32, outcome_of(&e), took);
                        passive(state, ep, true);
                        tried.add(ep);
                        attempts += 1;
                        if retry(&e, caller, attempts) {
                            crate::debug!("retrying after: {e}");
                            continue;
                        }
                        return Err(fail(&mut permit, e, Some((addr, took))));
                    }
                }
            }
        };
        metrics.pool(id as u32, up.reused);
        // Undone when the attempt ends, and when this future is dropped mid-exchange (an
        // aggregate's deadline, a client that left): else the endpoint stays "in flight".
        let flight = InFlight::start(state, ep, env.worker);
        let retry_status = |e: &UpstreamError, caller: &C| retry(e, caller, attempts + 1);
        let miss = match exchange(&mut up, caller, policy, &retry_status).await {
            Ok(facts) => {
                // The attempt undoes it from here (its drop).
                flight.hand_over();
                return Ok(UpstreamResponse {
                    status: facts.status,
                    body: facts.body,
                    conn: up,
                    addr,
                    began,
                    reusable: facts.reusable,
                    attempt: Attempt {
                        target,
                        metrics,
                        worker: env.worker,
                        ep,
                        status: facts.status,
                        began,
                        permit,
                        settled: false,
                        failed: None,
                    },
                });
            }
            Err(miss) => miss,
        };
        drop(flight);
        let last = Some((addr, began.elapsed()));
        match miss {
            Miss::Client(e) => {
                return Err(CallFailure {
                    error: e,
                    last: None,
                })
            }
            Miss::Stale(e) if !caller.streamed() && stale < MAX_STALE_REPLAYS => {
                // The upstream closed this pooled connection before taking the request: not a
                // failure of the request and not a retry. Its siblings are likely closed too.
                crate::debug!("pooled connection to {addr} was closed ({e}); reconnecting");
                stale += 1;
                state.borrow_mut().clear(ep);
            }
            Miss::Stale(e) => {
                tried.add(ep);
                attempts += 1;
                if !retry(&e, caller, attempts) {
                    return Err(fail(&mut permit, e, last));
                }
            }
            Miss::RetryStatus(e) => {
                metrics.upstream(id as u32, outcome_of(&e), began.elapsed());
                passive(state, ep, true);
                crate::debug!("retrying after: {e}");
                tried.add(ep);
                attempts += 1;
            }
            Miss::Failed(e) => {
                metrics.upstream(id as u32, outcome_of(&e), began.elapsed());
                if verdict_of(&e) != Outcome::Ignored {
                    passive(state, ep, true);
                }
                tried.add(ep);
                attempts += 1;
                if !retry(&e, caller, attempts) {
                    return Err(fail(&mut permit, e, last));
                }
                crate::debug!("retrying after: {e}");
            }
        }
    }
}

/// An attempt counted in flight on its endpoint (balancer, least-request, health) until it
/// drops, or until [`InFlight::hand_over`] gives the count to the [`Attempt`].
struct InFlight<'a> {
    state: &'a RefCell<UpstreamState>,
    ep: usize,
    worker: usize,
}

impl<'a> InFlight<'a> {
    fn start(state: &'a RefCell<UpstreamState>, ep: usize, worker: usize) -> Self {
        let mut s = state.borrow_mut();
        s.balancer.start(ep);
        s.health[ep].inflight_add(worker, 1);
        InFlight { state, ep, worker }
    }

    /// The response's [`Attempt`] ends the count (its drop).
    fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut s = self.state.borrow_mut();
        s.balancer.finish(self.ep);
        s.health[self.ep].inflight_add(self.worker, -1);
    }
}

/// Whether a retry may follow the failure `e` of attempt number `n`: the retry rules, then
/// the budget (taken when it allows one).
fn may_try_again<C: Caller>(
    e: &UpstreamError,
    caller: &C,
    n: u32,
    policy: &Policy,
    state: &RefCell<UpstreamState>,
    env: Env<'_, '_>,
) -> bool {
    let untouched = !caller.streamed();
    if n > policy.retries
        || caller.interim_relayed()
        || !may_retry(
            e,
            policy.idempotent,
            untouched,
            untouched && caller.complete(),
        )
    {
        return false;
    }
    let s = state.borrow();
    let now = (env.now_sec)();
    s.budget.add_requests(now, s.pending_requests.replace(0));
    s.budget.try_retry(now)
}

/// The endpoint for the next attempt and, when `pooled` allows one, a pooled connection to it
/// if one is idle and alive. Endpoints out of rotation (unhealthy, ejected, as of `now_ms`)
/// count as tried; when every endpoint is out the rotation is empty and all are used (panic
/// mode).
fn pick(
    state: &RefCell<UpstreamState>,
    tried: Tried,
    key: Key,
    now_ms: u64,
    pooled: bool,
) -> (usize, Option<UpConn>) {
    let mut s = state.borrow_mut();
    let out = s.rotation.out_mask(now_ms);
    let mut avoid = tried.with_mask(out);
    if avoid != Tried::default() && (0..s.balancer.len()).all(|i| avoid.contains(i)) {
        // Retries went through every endpoint in rotation: an untried one out of rotation
        // beats one that just failed.
        avoid = tried;
    }
    let ep = s.balancer.pick(key, avoid);
    if !pooled {
        return (ep, None);
    }
    (ep, s.checkout(ep, Instant::now()))
}

/// One attempt on one connection: send the request, read past interim responses to the final
/// head. On success the head has been handed to the caller and consumed from `up`.
async fn exchange<C: Caller>(
    up: &mut UpConn,
    caller: &mut C,
    policy: &Policy,
    retry_status: &dyn Fn(&UpstreamError, &C) -> bool,
) -> Result<Facts, Miss> {
    let addr = up.addr;
    // The head and the held body leave in one write.
    if !caller.streamed() {
        let held = std::mem::take(caller.held());
        let len = held.len();
        let (res, held) = up.write(held, 0, len, policy.read_timeout).await;
        // The held bytes come back for a retry; a write that timed out may leave them with the
        // kernel, and then the request can no longer be replayed.
        match held {
            Some(held) => *caller.held() = held,
            None => caller.lose_held(),
        }
        match res {
            Ok(()) => {}
            // The kernel refused the very first byte (EPIPE, ECONNRESET): the pooled connection
            // was dead before this request, which the upstream cannot have seen. Replayable
            // for any method, without spending a retry.
            Err(e @ UpstreamError::Reset { .. }) if up.reused && !up.request_accepted() => {
                return Err(Miss::Stale(e))
            }
            Err(e) => return Err(Miss::Failed(e)),
        }
    }
    if !caller.complete() {
        // Boxed: a streamed upload is the rare path, and its future would otherwise grow every
        // call's state (moved whole at each await boundary it is built in).
        match Box::pin(caller.send_rest(up)).await {
            Ok(()) => {}
            Err(e @ UpstreamError::ClientAborted { .. }) => return Err(Miss::Client(e)),
            Err(e) => return Err(Miss::Failed(e)),
        }
    }
    let mut interims = 0u32;
    loop {
        match judge(up, caller, policy, retry_status, interims)? {
            Next::Final(facts) => return Ok(facts),
            Next::Read => {
                let seen = !up.data().is_empty();
                match up.fill(policy.read_timeout, HEAD_READ).await {
                    Ok(0) | Err(UpstreamError::Reset { .. }) if seen => {
                        let detail = "closed in the middle of the response head".into();
                        return Err(Miss::Failed(UpstreamError::BadResponse { addr, detail }));
                    }
                    // A close or reset after the request went out, even on a pooled connection
                    // that passed its reuse check: the upstream may have read the request and
                    // acted on it, so this is an attempt like any other (see the module doc).
                    Ok(0) => {
                        let detail = "closed before a response".into();
                        return Err(Miss::Failed(UpstreamError::Reset { addr, detail }));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(Miss::Failed(e)),
                }
            }
            Next::Interim { relay } => {
                interims += 1;
                // Boxed: relaying an interim response is the rare path.
                if relay {
                    if let Err(e) = Box::pin(caller.send_interim()).await {
                        return Err(Miss::Client(e));
                    }
                }
            }
        }
    }
}

/// What [`judge`] made of the bytes read so far.
enum Next {
    /// No complete head yet (or a chunked head whose first size line is cut): read more.
    Read,
    /// An interim (1xx) head, consumed; `relay`: the caller has something to send for it.
    Interim { relay: bool },
    /// The final head, handed to the caller and consumed.
    Final(Facts),
}

/// Reads the response head at the start of `up`'s buffer, if it is all there, and hands it to
/// the caller (`interims`: the interim heads handed so far). Never awaits: the parsed head
/// borrows the buffer and is over a kilobyte, and only here is it alive, so no future of an
/// exchange carries it.
fn judge<C: Caller>(
    up: &mut UpConn,
    caller: &mut C,
    policy: &Policy,
    retry_status: &dyn Fn(&UpstreamError, &C) -> bool,
    interims: u32,
) -> Result<Next, Miss> {
    let addr = up.addr;
    let head = match http::parse_response(up.data(), &HEAD_LIMITS) {
        Ok(Some(head)) if !awaits_first_chunk(&head, up.data(), policy.head) => head,
        Ok(_) => return Ok(Next::Read),
        Err(e) => {
            let detail = e.to_string();
            return Err(Miss::Failed(UpstreamError::BadResponse { addr, detail }));
        }
    };
    let status = head.status;
    let head_len = head.head_len;
    if status == 101 {
        if !policy.upgrade {
            // RFC 9110 §15.2.2: a 101 answers an `Upgrade` only, which this request did
            // not carry (the gateway removes it from all but websocket upgrades).
            let detail = "101 Switching Protocols to a request without Upgrade".into();
            return Err(Miss::Failed(UpstreamError::BadResponse { addr, detail }));
        }
        // RFC 9110 §7.8: the server switches to a protocol the client offered, which is
        // websocket alone (the gateway forwards no other).
        let websocket = head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
            .any(|h| h.value.trim_ascii().eq_ignore_ascii_case(b"websocket"));
        if !websocket {
            let detail = "101 Switching Protocols to a protocol other than websocket".into();
            return Err(Miss::Failed(UpstreamError::BadResponse { addr, detail }));
        }
        // The upgrade's answer: what follows the head is the new protocol's, the tunnel's.
        caller.final_head(&head, BodyKind::None);
        drop(head);
        up.consume(head_len);
        return Ok(Next::Final(Facts {
            status,
            body: BodyKind::None,
            reusable: false,
        }));
    }
    if (100..200).contains(&status) {
        if interims >= MAX_INTERIM {
            let detail = format!("more than {MAX_INTERIM} interim responses");
            return Err(Miss::Failed(UpstreamError::BadResponse { addr, detail }));
        }
        // RFC 9110 §15.2: interim responses go on (the caller decides), the final one
        // follows on the same connection.
        let relay = caller.interim(&head);
        drop(head);
        up.consume(head_len);
        return Ok(Next::Interim { relay });
    }
    let method = if policy.head { "HEAD" } else { "GET" };
    let body = match http::response_body(method, status, &head.headers, head.version) {
        Ok(body) => body,
        Err(e) => {
            let detail = e.to_string();
            return Err(Miss::Failed(UpstreamError::BadResponse { addr, detail }));
        }
    };
    if body == BodyKind::Chunked {
        // A first size line that came with the head must be valid (one that came cut was
        // read whole above, in `awaits_first_chunk`).
        if let Err(detail) = first_chunk(&up.data()[head_len..]) {
            return Err(Miss::Failed(UpstreamError::BadResponse { addr, detail }));
        }
    }
    if retryable_status(status) && policy.idempotent && caller.complete() && !caller.streamed() {
        // A 502/503/504 is retried when the rules and the budget allow; otherwise it is
        // the answer, passed on as the upstream sent it.
        let e = UpstreamError::Status { addr, status };
        if retry_status(&e, caller) {
            return Err(Miss::RetryStatus(e));
        }
    }
    let upstream_keep = !http::wants_close(head.version, &head.headers);
    caller.final_head(&head, body);
    drop(head);
    up.consume(head_len);
    Ok(Next::Final(Facts {
        status,
        body,
        // An abandoned upload leaves the connection out of step with its requests.
        // A refused upgrade's connection was opened for it alone (`Policy::upgrade`).
        reusable: upstream_keep
            && body != BodyKind::UntilClose
            && !caller.abandoned()
            && !policy.upgrade,
    }))
}

/// Whether `head` is a final chunked head followed, in `data`, by part of its first size line:
/// then the line is read whole before the head is final, so that a stalled or broken one is
/// still the attempt's failure under the retry rules (a body that arrives later streams as it
/// comes). Read on the same path as the rest of a head.
fn awaits_first_chunk(head: &http::ResponseHead<'_>, data: &[u8], is_head: bool) -> bool {
    if head.status < 200 {
        return false;
    }
    // The cheap test first, on every final head: what follows a Content-Length body (or
    // nothing at all) is no partial size line, so the framing is read again only when it is.
    if first_chunk(&data[head.head_len..]) != Ok(false) {
        return false;
    }
    let method = if is_head { "HEAD" } else { "GET" };
    matches!(
        http::response_body(method, head.status, &head.headers, head.version),
        Ok(BodyKind::Chunked)
    )
}

/// Whether what follows a chunked head holds its first size line whole (or nothing at all:
/// then the body streams as it comes). `Ok(false)`: part of it, read on. Err: it is invalid.
fn first_chunk(after_head: &[u8]) -> Result<bool, String> {
    if after_head.is_empty() {
        return Ok(true);
    }
    let mut dec = http::ChunkedDecoder::new();
    match dec.decode(after_head) {
        Ok(_) => Ok(!dec.in_size_line()),
        Err(e) => Err(format!("invalid chunked body: {e}")),
    }
}

/// Reads what the upstream sent mid-upload: interim 1xx responses are skipped (the upload goes
/// on); anything else (a final response head, or the start of one, or a close) is the answer.
/// True when the upload should stop.
pub async fn early_answer(up: &mut UpConn, timeout: Duration) -> bool {
    if up.data().is_empty() {
        match up.fill(timeout, HEAD_READ).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
    // At most MAX_INTERIM interim responses are skipped per look: past that the upload stops,
    // and the exchange reads what follows as its answer (under its own bound).
    for _ in 0..MAX_INTERIM {
        let interim = match http::parse_response(up.data(), &HEAD_LIMITS) {
            Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                head.head_len
            }
            _ => return true,
        };
        up.consume(interim);
        if up.data().is_empty() {
            return false;
        }
    }
    true
}

/// The metrics outcome of a failed attempt.
pub fn outcome_of(e: &UpstreamError) -> UpstreamOutcome {
    match e {
        UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. } => {
            UpstreamOutcome::ConnectError
        }
        UpstreamError::ReadTimeout { .. } => UpstreamOutcome::Timeout,
        UpstreamError::Reset { .. } => UpstreamOutcome::Reset,
        UpstreamError::Status { status, .. } => UpstreamOutcome::from_status(*status),
        UpstreamError::BadResponse { .. }
        | UpstreamError::ClientAborted { .. }
        | UpstreamError::BreakerOpen { .. } => UpstreamOutcome::ProtocolError,
    }
}

/// What a failed exchange tells the breaker (`failure_on` kinds; the example config: "failing
/// to connect in time counts as a connect failure").
pub fn verdict_of(e: &UpstreamError) -> Outcome {
    match e {
        UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. } => {
            Outcome::Failure(FailureKind::Connect)
        }
        UpstreamError::ReadTimeout { .. } => Outcome::Failure(FailureKind::Timeout),
        // Answered 502 by the gateway: the upstream failed the exchange.
        UpstreamError::Reset { .. }
        | UpstreamError::BadResponse { .. }
        | UpstreamError::Status { .. } => Outcome::Failure(FailureKind::Status5xx),
        UpstreamError::ClientAborted { .. } | UpstreamError::BreakerOpen { .. } => Outcome::Ignored,
    }
}

/// The breaker's reading of a response the client is about to get.
fn verdict_of_status(status: u16) -> Outcome {
    if status >= 500 {
        Outcome::Failure(FailureKind::Status5xx)
    } else {
        Outcome::Success
    }
}

/// Hands the breaker its permit with the request's outcome.
fn record(state: &RefCell<UpstreamState>, permit: Permit, verdict: Outcome) {
    let s = state.borrow();
    if let Some(replica) = &s.breaker {
        if let Some(to) = replica.record(permit, verdict, crate::clock::now_ms()) {
            crate::warn!("upstream {}: breaker {}", s.name, to.as_str());
        }
    }
}

/// Passive outlier detection: feeds one attempt's result to its endpoint's shared counters.
fn passive(state: &RefCell<UpstreamState>, ep: usize, failed: bool) {
    let s = state.borrow();
    let Some(health) = s.health.get(ep) else {
        return;
    };
    // Only a failure needs the time (an ejection runs from now); a success just clears the
    // streak, so the common path reads no clock.
    let now_ms = if failed { crate::clock::now_ms() } else { 0 };
    if let Some(ejected_for) = health.record(failed, &s.outlier, now_ms) {
        // An outage ejects many endpoints at once: one line a second, with the count.
        static EJECTED: crate::logging::Limiter = crate::logging::Limiter::new();
        crate::warn_limited!(
            &EJECTED,
            "upstream {}: endpoint {} ejected for {}s after {} consecutive failures",
            s.name,
            s.pools[ep].addr,
            ejected_for.as_secs(),
            s.outlier.consecutive_failures
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Layout, Registry};
    use crate::upstream::shared::UpstreamShared;
    use crate::upstream::WorkerUpstreams;
    use std::io::{Read, Write};
    use std::sync::mpsc;
    use std::sync::Arc;

    /// A caller with the whole request held and no client: what an aggregator or a cache
    /// refresh is. Interim responses are only counted.
    struct Held {
        request: Vec<u8>,
        interims: u32,
        final_status: Option<u16>,
    }

    impl Held {
        fn get() -> Held {
            Held {
                request: GET.to_vec(),
                interims: 0,
                final_status: None,
            }
        }
    }

    impl Caller for Held {
        fn held(&mut self) -> &mut Vec<u8> {
            &mut self.request
        }
        fn complete(&self) -> bool {
            true
        }
        fn streamed(&self) -> bool {
            false
        }
        fn lose_held(&mut self) {}
        async fn send_rest(&mut self, _: &mut UpConn) -> Result<(), UpstreamError> {
            Ok(())
        }
        fn abandoned(&self) -> bool {
            false
        }
        fn interim(&mut self, _: &ResponseHead<'_>) -> bool {
            self.interims += 1;
            false
        }
        async fn send_interim(&mut self) -> Result<(), UpstreamError> {
            Ok(())
        }
        fn interim_relayed(&self) -> bool {
            false
        }
        fn final_head(&mut self, head: &ResponseHead<'_>, _: BodyKind) {
            self.final_status = Some(head.status);
        }
    }

    /// An upstream that answers each request it reads with the next of `answers`, on one
    /// kept-alive connection per accept; it reports every request head it read.
    fn upstream(answers: Vec<&'static [u8]>) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut answers = answers.into_iter();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut req = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&chunk[..n]),
                        }
                    }
                    if req.is_empty() {
                        break;
                    }
                    let _ = tx.send(std::mem::take(&mut req));
                    let Some(answer) = answers.next() else { return };
                    if conn.write_all(answer).is_err() {
                        break;
                    }
                }
            }
        });
        (addr, rx)
    }

    struct Fixture {
        config: crate::config::model::Config,
        upstreams: WorkerUpstreams,
        registry: Arc<Registry>,
        metrics: Rc<WorkerMetrics>,
    }

    fn no_clock() -> u64 {
        0
    }

    impl Fixture {
        fn target(&self) -> Target<'_> {
            Target {
                id: 0,
                config: &self.config.upstreams[0],
                state: &self.upstreams.list[0],
            }
        }

        fn env(&self) -> Env<'_, 'static> {
            Env {
                metrics: &self.metrics,
                worker: 0,
                now_sec: &no_clock,
            }
        }

        /// The upstream request counter of `outcome`, as `/metrics` shows it.
        fn upstream_requests(&self, outcome: &str) -> String {
            let mut text = String::new();
            self.registry.render(&mut text, &|_| {});
            let key = format!(
                "dispatch_upstream_requests_total{{upstream=\"app\",outcome=\"{outcome}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .unwrap_or("absent")
                .to_string()
        }
    }

    fn fixture(addr: SocketAddr, retries: u32) -> Fixture {
        let src = format!(
            "[upstreams.app]\nendpoints = [\"http://{addr}\"]\nretries = {retries}\n\n\
             [routes.r]\npaths = [\"/\"]\nupstream = \"app\"\n"
        );
        let config = crate::config::load_str(&src, std::path::Path::new("t.toml")).unwrap();
        let shared: Vec<UpstreamShared> = config
            .upstreams
            .iter()
            .map(|u| UpstreamShared::new(u, None, None, 1))
            .collect();
        let upstreams = WorkerUpstreams::build(&config, &shared, None, 7);
        let layout = Layout::new().with_upstreams(["app".to_string()]);
        let registry = Registry::new("t");
        let metrics = Rc::new(registry.add_worker(Arc::new(layout)));
        Fixture {
            config,
            upstreams,
            registry,
            metrics,
        }
    }

    fn policy() -> Policy {
        Policy {
            retries: 1,
            idempotent: true,
            head: false,
            balance_key: Key::None,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
            started: Instant::now(),
            upgrade: false,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: app\r\n\r\n";

    /// A held request with no client: the interim response is offered to the caller, the body
    /// is collected decoded from its chunks, and the connection goes back to the pool.
    #[test]
    fn a_held_request_collects_a_chunked_body_and_pools_the_connection() {
        let (addr, requests) = upstream(vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]);
        let f = fixture(addr, 1);
        let (target, env) = (f.target(), f.env());
        block_on(async {
            let mut caller = Held::get();
            let resp = call(target, env, &policy(), None, &mut caller)
                .await
                .unwrap();
            assert_eq!((resp.status, resp.body), (200, BodyKind::Chunked));
            assert_eq!((caller.interims, caller.final_status), (1, Some(200)));
            let body = resp.collect(1024, Duration::from_secs(2)).await.unwrap();
            assert_eq!(body, b"hello world");
            assert_eq!(
                f.upstreams.idle_count(),
                1,
                "the connection went back to the pool"
            );

            let resp = call(target, env, &policy(), None, &mut caller)
                .await
                .unwrap();
            assert!(
                resp.conn.reused,
                "the second call reuses the pooled connection"
            );
            let body = resp.collect(1024, Duration::from_secs(2)).await.unwrap();
            assert_eq!(body, b"ok");
        });
        assert_eq!(requests.recv().unwrap(), GET);
        assert_eq!(requests.recv().unwrap(), GET);
    }

    /// A 503 is retried once (`retries = 1`), then passed on as the answer with its body.
    #[test]
    fn a_retried_503_is_status_503_and_the_last_one_is_the_answer() {
        let (addr, requests) = upstream(vec![
            b"HTTP/1.1 503 Busy\r\nContent-Length: 1\r\n\r\na",
            b"HTTP/1.1 503 Busy\r\nContent-Length: 1\r\n\r\nb",
        ]);
        let f = fixture(addr, 1);
        let (target, env) = (f.target(), f.env());
        block_on(async {
            let mut caller = Held::get();
            let resp = call(target, env, &policy(), None, &mut caller)
                .await
                .unwrap();
            assert_eq!(resp.status, 503);
            let body = resp.collect(1024, Duration::from_secs(2)).await.unwrap();
            assert_eq!(body, b"b", "the second answer is the one passed on");
        });
        assert_eq!(requests.try_iter().count(), 2);
        // Both attempts count as 5xx answers, not as resets.
        assert_eq!(f.upstream_requests("error_5xx"), "2");
        assert_eq!(f.upstream_requests("reset"), "0");
    }

    /// A body over the collect limit is an error and the connection is not pooled, but the
    /// limit is the caller's: the attempt counts as the upstream's 200, not as its failure.
    #[test]
    fn collect_refuses_a_body_over_its_limit() {
        let (addr, _requests) = upstream(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
        ]);
        let f = fixture(addr, 0);
        let (target, env) = (f.target(), f.env());
        block_on(async {
            let mut caller = Held::get();
            let resp = call(target, env, &policy(), None, &mut caller)
                .await
                .unwrap();
            let err = resp.collect(4, Duration::from_secs(2)).await.unwrap_err();
            assert!(
                matches!(err.error, UpstreamError::BadResponse { .. }),
                "{:?}",
                err.error
            );
            assert_eq!(f.upstreams.idle_count(), 0);
        });
        assert_eq!(f.upstream_requests("success"), "1");
        assert_eq!(f.upstream_requests("protocol_error"), "0");
    }

    /// An upstream sending interim responses without end used to hold the request forever:
    /// past MAX_INTERIM of them the exchange fails (502, not retried: the upstream answered).
    #[test]
    fn endless_interim_responses_are_a_bad_response() {
        let flood: &'static [u8] = "HTTP/1.1 100 Continue\r\n\r\n"
            .repeat(MAX_INTERIM as usize + 1)
            .leak()
            .as_bytes();
        let (addr, _requests) = upstream(vec![flood]);
        let f = fixture(addr, 0);
        let (target, env) = (f.target(), f.env());
        block_on(async {
            let mut caller = Held::get();
            let mut p = policy();
            p.retries = 0;
            let err = call(target, env, &p, None, &mut caller)
                .await
                .err()
                .unwrap();
            assert!(
                matches!(err.error, UpstreamError::BadResponse { .. }),
                "{:?}",
                err.error
            );
            assert_eq!(caller.interims, MAX_INTERIM);
            assert_eq!(err.error.status(), 502);
        });
    }

    /// A chunked head whose first size line came cut and then stalled used to be final: the
    /// stall was a 504 with no retry. It is now the attempt's timeout, retried by the rules.
    #[test]
    fn a_first_chunk_line_that_stalls_is_retried() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut held = Vec::new();
            for (i, conn) in listener.incoming().take(2).enumerate() {
                let mut conn = conn.unwrap();
                let mut req = Vec::new();
                let mut chunk = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut chunk).unwrap();
                    assert!(n > 0, "closed before its request");
                    req.extend_from_slice(&chunk[..n]);
                }
                if i == 0 {
                    // Part of the first size line, then nothing: held open, not closed.
                    conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2")
                        .unwrap();
                    held.push(conn);
                } else {
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .unwrap();
                }
            }
            held.len() + 1
        });
        let f = fixture(addr, 1);
        let (target, env) = (f.target(), f.env());
        block_on(async {
            let mut caller = Held::get();
            let mut p = policy();
            p.read_timeout = Duration::from_millis(300);
            let resp = call(target, env, &p, None, &mut caller).await.unwrap();
            let body = resp.collect(1024, Duration::from_secs(2)).await.unwrap();
            assert_eq!(body, b"ok", "the second attempt's answer");
        });
        assert_eq!(server.join().unwrap(), 2, "two connections");
        assert_eq!(f.upstream_requests("timeout"), "1");
    }

    /// The first size line of a chunked body is judged whole, partial or invalid.
    #[test]
    fn first_chunk_lines() {
        for (input, whole) in [
            (&b""[..], true),
            (b"5\r\n", true),
            (b"5\r\nhe", true),
            (b"0\r\n\r\n", true),
            (b"1", false),
            (b"1\r", false),
            (b"5;name=val", false),
        ] {
            assert_eq!(
                first_chunk(input),
                Ok(whole),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert!(first_chunk(b"zz\r\n").is_err());
        assert!(first_chunk(b"5\rx").is_err());
    }

    /// Nothing listens: a connect failure, with the attempt's endpoint for the access log.
    #[test]
    fn a_refused_connect_is_a_connect_error_with_the_last_attempt() {
        let refusing =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        refusing
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let addr = refusing.local_addr().unwrap().as_socket().unwrap();
        let f = fixture(addr, 0);
        let (target, env) = (f.target(), f.env());
        block_on(async {
            let mut caller = Held::get();
            let mut p = policy();
            p.retries = 0;
            let err = call(target, env, &p, None, &mut caller)
                .await
                .err()
                .unwrap();
            assert!(
                matches!(err.error, UpstreamError::Connect { .. }),
                "{:?}",
                err.error
            );
            assert_eq!(err.last.map(|(a, _)| a), Some(addr));
            assert_eq!(err.error.status(), 502);
        });
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    fn future_size<A, F>(_: &impl Fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A timed read or write is awaited at every level of every exchange, and an async call
    /// moves its callee's future whole: with monoio's inline timer (640 bytes, aligned to 128)
    /// these were 1,152 bytes each (`io::timeout` boxes the timer).
    #[test]
    fn timed_reads_and_writes_stay_small() {
        let fill = |up: &'static mut UpConn| up.fill(Duration::ZERO, 1);
        let write = |up: &'static mut UpConn| up.write(Vec::new(), 0, 0, Duration::ZERO);
        let body = |r: UpstreamResponse<'static>| {
            r.collect_within(
                Box::leak(Box::new(Limit { left: 0, limit: 0 })),
                Duration::ZERO,
            )
        };
        assert!(future_size(&fill) <= 384, "fill: {}", future_size(&fill));
        assert!(future_size(&write) <= 512, "write: {}", future_size(&write));
        // The response (384 bytes) held once, not twice (`collect_within`'s doc).
        assert!(
            future_size(&body) <= 1024,
            "collect_within: {}",
            future_size(&body)
        );
    }
}
