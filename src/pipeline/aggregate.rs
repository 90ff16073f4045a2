//! The aggregate stage: answers a request that phase 8 ([`super::phase::aggregate`]) took off
//! the phase list, by running its aggregate ([`crate::compose::aggregate::run::execute`])
//! over [`Upstreams`], the executor's transport through [`upstream::call`](crate::upstream::call)
//! (balancer, pool, retries and retry budget, breaker, outlier detection, the upstream
//! metrics), and sending the composite (or the 503/504/502) through the one response path.
//!
//! The one thing to know: the calls are futures inside this request's future, on this
//! worker; once they have run for `WATCH_AFTER` (50 ms) the client connection is watched, and a
//! client that closes it ends the request (499) and drops every call in flight, whose
//! connections close. Watching costs the kernel a poll and its cancellation per request; a
//! composite that ends sooner (nearly all) is answered without either, and one whose client
//! left that soon is written to a closed connection, as a proxied answer is. The transport
//! is per request and holds the aggregate's `max_body` budget: each call body takes its bytes
//! from it as they arrive, so the bodies one request holds never pass it.

use std::cell::Cell;
use std::net::IpAddr;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};

use super::client::ClientIo;
use super::phase::aggregate::Pending;
use super::phase::ratelimit;
use super::proxy::Served;
use super::trace::TraceContext;
use super::Response;
use crate::clock;
use crate::compose::aggregate::run::{self, CallError, CallInfo, Reply, Transport};
use crate::http::{BodyKind, ResponseHead};
use crate::state::worker::{Snapshot, Worker};
use crate::upstream::balance::Key;
use crate::upstream::breaker::Outcome;
use crate::upstream::call::{self, Allowance};
use crate::upstream::UpstreamError;

/// How long an aggregate's calls run before its client is watched (module doc): far above a
/// composite's usual time, far below what calls left running for no one should cost.
const WATCH_AFTER: Duration = Duration::from_millis(50);

/// Runs `p`'s aggregate and sends its answer.
pub async fn serve(
    p: Box<Pending>,
    conn: &mut ClientIo,
    worker: &Worker,
    snap: &Snapshot,
) -> Served {
    let mut p = p;
    // A leaky bucket's delay: the calls leave at its place's time, unless the client leaves
    // first (its place goes back with the `Delay`, as in `stack::shaped`).
    if let Some(delay) = p.delay.take() {
        if let Some(left) = Box::pin(shaped(delay, conn)).await {
            return left;
        }
    }
    let cfg = &*snap.active.config;
    let aggregate = &cfg.aggregates[p.aggregate];
    let transport = Upstreams {
        snap,
        worker,
        trace: p.trace,
        route: &aggregate.name,
        client_ip: p.client_ip,
        balance: &p.balance,
        started: p.started,
        limit: aggregate.compiled.max_body,
        budget: aggregate.compiled.budget,
        left: Cell::new(aggregate.compiled.budget),
    };
    let request = run::Request {
        params: &p.params,
        host: p.host.as_deref(),
        fields: &p.fields,
    };
    let answer = {
        let execute = pin!(run::execute(&aggregate.compiled, &request, &transport));
        let watched = pin!(async {
            crate::io::timeout::sleep(WATCH_AFTER).await;
            super::stack::watch(&mut conn.io.stream).await
        });
        match select(execute, watched).await {
            Either::Left((answer, _)) => answer,
            Either::Right((super::stack::Client::Stays, execute)) => execute.await,
            // The client left: its calls are dropped with this future.
            Either::Right((super::stack::Client::Left, _)) => {
                return Served {
                    keep: false,
                    status: 0,
                    upstream: None,
                    verdict: Outcome::Ignored,
                    cache: None,
                }
            }
        }
    };
    let mut r = match answer {
        run::Answer::Composite(body) => Response::json(200, body, p.id),
        run::Answer::Error { status, message } => Response::error(status, message, p.id),
    };
    r.head_only = p.is_head;
    r.trace = p.trace;
    r.rate = p.rate;
    r.http10 = p.version == crate::http::Version::Http10;
    r.close = !p.keep_alive || worker.drain.is_fired();
    let sent = conn
        .send_response(&r, cfg.server.limits.body_timeout)
        .await
        .is_ok();
    Served {
        keep: sent && !r.close,
        status: r.status,
        upstream: None,
        verdict: Outcome::Ignored,
        cache: None,
    }
}

/// Waits until a leaky bucket's `until_ms` while watching the client (the wait of
/// `stack::shaped`, without a breaker phase: each call takes its own permit). Some: the client
/// left while it waited (499; the places go back when `delay` drops).
async fn shaped(mut delay: Box<ratelimit::Delay>, conn: &mut ClientIo) -> Option<Served> {
    let left =
        |d: &ratelimit::Delay| Duration::from_millis(d.until_ms.saturating_sub(clock::now_ms()));
    let watched = super::stack::watch(&mut conn.io.stream);
    if let Ok(super::stack::Client::Left) = crate::io::timeout::timeout(left(&delay), watched).await
    {
        return Some(Served {
            keep: false,
            status: 0,
            upstream: None,
            verdict: Outcome::Ignored,
            cache: None,
        });
    }
    let rest = left(&delay);
    if !rest.is_zero() {
        monoio::time::sleep(rest).await;
    }
    delay.admit();
    None
}

/// The executor's transport on a worker: each call through `upstream::call`, with a child span
/// of the request's (sent as `traceparent`, exported when OTLP export is on).
pub struct Upstreams<'a> {
    snap: &'a Snapshot,
    worker: &'a Worker,
    trace: Option<TraceContext>,
    /// The aggregate's name (the spans' route).
    route: &'a str,
    client_ip: IpAddr,
    /// Per call (plan index): its upstream's balance key for this request.
    balance: &'a [Key],
    /// When the request arrived: endpoint rotation is read as of then.
    started: Instant,
    /// The largest body a call's answer may have.
    limit: usize,
    /// The aggregate's `max_body`, and what is left of it: every call body of this request
    /// takes its bytes from it as they arrive (`Budget`).
    budget: usize,
    left: Cell<usize>,
}

/// One call body's allowance: its own limit, and the bytes left of the request's budget,
/// which it shares with the calls reading at the same time.
struct Budget<'a> {
    own: usize,
    limit: usize,
    left: &'a Cell<usize>,
    budget: usize,
    /// The budget refused: the call fails `OverBudget`, not `TooLarge`.
    spent: bool,
}

impl Allowance for Budget<'_> {
    fn take(&mut self, n: usize) -> bool {
        if n > self.own {
            return false;
        }
        match self.left.get().checked_sub(n) {
            Some(left) => {
                self.left.set(left);
                self.own -= n;
                true
            }
            None => {
                self.spent = true;
                false
            }
        }
    }
    fn limit(&self) -> usize {
        if self.spent {
            self.budget
        } else {
            self.limit
        }
    }
}

impl Transport for Upstreams<'_> {
    async fn call(
        &self,
        call: CallInfo<'_>,
        mut head: Vec<u8>,
        deadline: Instant,
    ) -> Result<Reply, CallError> {
        let span = self.trace.map(|t| t.child(self.worker.rand()));
        if let Some(span) = &span {
            span.write_header(&mut head);
        }
        head.extend_from_slice(b"\r\n");
        // Read for the span alone.
        let begun = span.map(|_| Instant::now());
        let result = self.exchange(&call, head, deadline).await;
        if let (Some(spans), Some(span), Some(begun)) = (&self.worker.spans, span, begun) {
            let status = match &result {
                Ok(reply) => reply.status,
                Err(CallError::Timeout) => 504,
                Err(CallError::BreakerOpen) => 503,
                Err(CallError::Status(status)) => *status,
                Err(_) => 502,
            };
            let cfg = &self.snap.active.config;
            spans.borrow_mut().record(crate::otlp::Span {
                trace_id: span.trace_id_bytes(),
                span_id: span.span_id_bytes(),
                parent_span_id: span.parent_span_id_bytes(),
                name: format!("GET {}", call.name),
                start_unix_nanos: clock::unix_nanos(begun),
                end_unix_nanos: clock::unix_nanos(Instant::now()),
                method: "GET".into(),
                path: String::new(),
                route: Some(self.route.into()),
                status,
                client: self.client_ip,
                upstream: Some(cfg.upstreams[call.upstream].name.as_str().into()),
                worker: self.worker.id as u32,
            });
        }
        result
    }
}

impl Upstreams<'_> {
    async fn exchange(
        &self,
        call: &CallInfo<'_>,
        head: Vec<u8>,
        deadline: Instant,
    ) -> Result<Reply, CallError> {
        let snap = self.snap;
        let config = &snap.active.config.upstreams[call.upstream];
        let state = &snap.upstreams.list[call.upstream];
        let permit = {
            let s = state.borrow();
            call::admit(s.breaker.as_ref(), clock::now_ms())
        }
        .map_err(|_| CallError::BreakerOpen)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CallError::Timeout);
        }
        // The call's deadline bounds every attempt; the executor holds the whole call to it.
        let policy = call::Policy {
            retries: config.retries,
            idempotent: true,
            head: false,
            balance_key: self.balance.get(call.index).copied().unwrap_or(Key::None),
            connect_timeout: config.connect_timeout.min(left),
            read_timeout: config.read_timeout.min(left),
            started: self.started,
            upgrade: false,
        };
        let now_sec = || self.worker.shared.now_sec();
        let env = call::Env {
            metrics: &snap.metrics,
            worker: self.worker.id,
            now_sec: &now_sec,
        };
        let target = call::Target {
            id: call.upstream,
            config,
            state,
        };
        let mut held = call::Held {
            request: head,
            on_head: |_: &ResponseHead<'_>, _: BodyKind| {},
        };
        let resp = call::call(target, env, &policy, permit, &mut held)
            .await
            .map_err(|f| error_of(&f.error))?;
        let status = resp.status;
        let left = deadline.saturating_duration_since(Instant::now());
        let mut allowance = Budget {
            own: self.limit,
            limit: self.limit,
            left: &self.left,
            budget: self.budget,
            spent: false,
        };
        // Over either limit, the upstream still answered: the breaker learns its status, and
        // the connection closes.
        let body = resp
            .collect_within(
                &mut allowance,
                policy.read_timeout.min(left.max(Duration::from_millis(1))),
            )
            .await
            .map_err(|f| {
                if allowance.spent {
                    CallError::OverBudget(self.budget)
                } else {
                    error_of(&f.error)
                }
            })?;
        Ok(Reply { status, body })
    }
}

/// The executor's reading of an upstream failure.
fn error_of(e: &UpstreamError) -> CallError {
    match e {
        UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. } => CallError::Connect,
        UpstreamError::ReadTimeout { .. } => CallError::Timeout,
        UpstreamError::Reset { .. } | UpstreamError::ClientAborted { .. } => CallError::Reset,
        // `collect`'s limit is the caller's: its failure names the limit.
        UpstreamError::BadResponse { detail, .. } if detail.contains("-byte limit") => {
            CallError::TooLarge
        }
        UpstreamError::BadResponse { .. } => CallError::BadResponse,
        UpstreamError::Status { status, .. } => CallError::Status(*status),
        UpstreamError::BreakerOpen { .. } => CallError::BreakerOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, D, E, G, F>(_: fn(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Each call's future is moved whole into the set that runs it: the transport's call
    /// (kilobytes) is boxed inside it, so what moves is the executor's own state. 3,840 bytes
    /// when a call's future held its transport call and every timer inline.
    #[test]
    fn a_call_future_stays_small() {
        let size = future_size::<
            &'static Upstreams<'static>,
            CallInfo<'static>,
            (usize, Instant),
            run::Work,
            Instant,
            Instant,
            _,
        >(run::run_call::<Upstreams<'static>>);
        assert!(size <= 640, "run_call's future is {size} bytes");
    }
}
