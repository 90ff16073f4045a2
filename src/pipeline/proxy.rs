//! The upstream stage: one request's exchange with its upstream, retries included.
//!
//! Owns the request body on its way up (the part that fits [`REPLAY_LIMIT`] is held so the
//! request can be retried; the rest streams through a bounded buffer) and the response on its
//! way down (streamed in its own framing, re-framed for the client). Retries follow
//! BEHAVIOR.md: connect failures for any method, timeouts/resets/502-504 only for idempotent
//! requests whose body is still held, never once response bytes went to the client, and never
//! beyond the upstream's retry budget.
//!
//! A failure is a free "stale connection" replay (no retry spent, no budget taken, at most
//! [`MAX_STALE_REPLAYS`] per request) only when the upstream cannot have seen the request:
//! - the pooled connection is found closed, or holding bytes, by the peek at reuse
//!   (`UpstreamState::checkout`): it is dropped before anything is sent; or
//! - the kernel refused the first byte of the request on a pooled connection (the write failed
//!   with EPIPE/ECONNRESET before any byte was accepted): the connection was already dead.
//!
//! Once a byte of the request was accepted, a close or reset before the response (EOF with no
//! byte, ECONNRESET) cannot be told apart from an upstream that read the whole request, acted
//! on it and then failed, so it is an attempt like any other: retried only under the rules,
//! `retries` and the budget. The race this leaves (an upstream closing an idle connection
//! between the peek and the request's arrival) costs one ordinary retry, never a duplicate
//! that `retries` did not allow.

use std::time::{Duration, Instant};

use super::client::ClientIo;
use crate::http::{self, BodyKind, ChunkedDecoder, Version};
use crate::io::ReadEnd;
use crate::metrics::UpstreamOutcome;
use crate::state::worker::{Snapshot, Worker};
use crate::upstream::balance::Tried;
use crate::upstream::breaker::{FailureKind, Outcome};
use crate::upstream::client::UpConn;
use crate::upstream::retry::{may_retry, retryable_status};
use crate::upstream::{UpstreamError, UpstreamState};

use super::ctx::RequestCtx;
use super::headers::{write_response_head, ConnDirective, OutFraming, ResponseHeadOut};
use super::Response;

/// How a request ended, for the connection loop and the metrics.
#[derive(Clone, Copy, Debug)]
pub struct Served {
    /// The client connection may stay open.
    pub keep: bool,
    /// The status sent (0 when the client went away before any response).
    pub status: u16,
    /// The endpoint of the last attempt and how long that attempt took, if one was made.
    pub upstream: Option<(std::net::SocketAddr, Duration)>,
    /// What the upstream's breaker learns from this request (after its retries).
    pub verdict: Outcome,
}

/// Request bodies up to this size are held whole before the upstream is contacted, so the
/// request stays replayable for retries; larger ones stream through.
pub const REPLAY_LIMIT: usize = 64 * 1024;
/// Response bytes gathered before a write to the client when re-framing chunked bodies.
const FLUSH_AT: usize = 32 * 1024;
/// Small bodies are copied behind the head so head and body leave in one write.
const COALESCE_BODY: usize = 16 * 1024;

/// The request body on its way to the upstream.
struct RequestBody {
    kind: BodyKind,
    /// Content-Length bytes not yet taken from the client.
    remaining: u64,
    decoder: ChunkedDecoder,
    /// Body bytes seen so far (the max_body check for chunked bodies).
    total: u64,
    /// The whole body is in `ubuf` behind the head.
    complete: bool,
    /// Part of the body went upstream beyond `ubuf`: the request can no longer be replayed.
    streamed: bool,
    /// The upstream answered before the whole body went up: the rest is not sent, and neither
    /// connection can carry another request.
    abandoned: bool,
    /// A `100 Continue` went to the client (the gateway's own, or one relayed): never two.
    continue_sent: bool,
    /// An interim response was relayed to the client: response bytes have left the gateway,
    /// so nothing is retried any more (BEHAVIOR.md "Retries").
    interim_relayed: bool,
}

/// A client-side failure while reading the request body.
struct ClientFail {
    status: Option<u16>,
    message: &'static str,
}

impl From<ReadEnd> for ClientFail {
    fn from(e: ReadEnd) -> Self {
        match e {
            ReadEnd::Timeout => ClientFail {
                status: Some(408),
                message: "Request body timeout",
            },
            ReadEnd::Closed | ReadEnd::Io(_) => ClientFail {
                status: None,
                message: "client closed",
            },
        }
    }
}

impl RequestBody {
    fn new(ctx: &RequestCtx) -> Self {
        RequestBody {
            kind: ctx.body,
            remaining: match ctx.body {
                BodyKind::Length(n) => n,
                _ => 0,
            },
            decoder: ChunkedDecoder::new(),
            total: 0,
            complete: ctx.body == BodyKind::None,
            streamed: false,
            abandoned: false,
            continue_sent: false,
            interim_relayed: false,
        }
    }

    fn replayable(&self) -> bool {
        self.complete && !self.streamed
    }

    async fn need_more(
        &mut self,
        ctx: &RequestCtx,
        conn: &mut ClientIo,
        timeout: Duration,
    ) -> Result<(), ClientFail> {
        if ctx.expect_continue && !self.continue_sent {
            // RFC 9110 §10.1.1: the gateway itself invites the body once it will read it.
            self.continue_sent = true;
            conn.wbuf
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            conn.flush(timeout).await.map_err(|_| ClientFail {
                status: None,
                message: "client closed",
            })?;
        }
        conn.fill(timeout, REPLAY_LIMIT).await?;
        Ok(())
    }

    /// Moves the already received body bytes into `ubuf`, reading more from the client while
    /// the whole body still fits [`REPLAY_LIMIT`].
    async fn buffer(
        &mut self,
        ctx: &RequestCtx,
        conn: &mut ClientIo,
        max_body: u64,
        timeout: Duration,
    ) -> Result<(), ClientFail> {
        match self.kind {
            BodyKind::None | BodyKind::UntilClose => self.complete = true,
            BodyKind::Length(n) => loop {
                let take = (self.remaining as usize).min(conn.data().len());
                let start = conn.io.rpos;
                conn.ubuf
                    .extend_from_slice(&conn.io.rbuf[start..start + take]);
                conn.consume(take);
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.complete = true;
                    return Ok(());
                }
                if n as usize > REPLAY_LIMIT {
                    return Ok(());
                }
                self.need_more(ctx, conn, timeout).await?;
            },
            BodyKind::Chunked => loop {
                self.decode_available(conn, max_body)?;
                if self.complete || conn.ubuf.len() - ctx.upstream_head_len >= REPLAY_LIMIT {
                    return Ok(());
                }
                self.need_more(ctx, conn, timeout).await?;
            },
        }
        Ok(())
    }

    /// Decodes the chunked bytes in the read buffer, re-encoding them into `ubuf`.
    fn decode_available(&mut self, conn: &mut ClientIo, max_body: u64) -> Result<(), ClientFail> {
        let start = conn.io.rpos;
        let input = &conn.io.rbuf[start..];
        let (consumed, data, done) =
            reframe_chunked(&mut self.decoder, input, &mut conn.ubuf, true).map_err(|_| {
                ClientFail {
                    status: Some(400),
                    message: "Invalid chunked request body",
                }
            })?;
        conn.consume(consumed);
        self.total += data;
        if self.total > max_body {
            return Err(ClientFail {
                status: Some(413),
                message: "Request body too large",
            });
        }
        if done {
            self.complete = true;
        }
        Ok(())
    }

    /// Streams the rest of the body from the client to `up`.
    async fn pump(
        &mut self,
        ctx: &RequestCtx,
        conn: &mut ClientIo,
        up: &mut UpConn,
        max_body: u64,
        timeout: Duration,
    ) -> Result<(), PumpFail> {
        while !self.complete {
            // An upstream that answers mid-upload (413, 401, ...) may stop reading: its answer
            // is relayed rather than waited out until the write times out.
            if up.peer_sent() && early_answer(up, ctx.read_timeout).await {
                self.abandoned = true;
                return Ok(());
            }
            if conn.data().is_empty() {
                self.need_more(ctx, conn, timeout)
                    .await
                    .map_err(PumpFail::Client)?;
            }
            self.streamed = true;
            match self.kind {
                BodyKind::Length(_) => {
                    let take = (self.remaining as usize).min(conn.data().len());
                    let (start, rbuf) = (conn.io.rpos, std::mem::take(&mut conn.io.rbuf));
                    let (res, rbuf) = up.write(rbuf, start, start + take, ctx.read_timeout).await;
                    match rbuf {
                        Some(rbuf) => conn.io.rbuf = rbuf,
                        // Held by the kernel after a timeout: what was buffered is gone, and
                        // the failed exchange closes this connection.
                        None => conn.io.rpos = 0,
                    }
                    res.map_err(PumpFail::Upstream)?;
                    conn.consume(take);
                    self.remaining -= take as u64;
                    self.complete = self.remaining == 0;
                }
                _ => {
                    conn.ubuf.clear();
                    self.decode_available(conn, max_body)
                        .map_err(PumpFail::Client)?;
                    if !conn.ubuf.is_empty() {
                        let ubuf = std::mem::take(&mut conn.ubuf);
                        let len = ubuf.len();
                        let (res, ubuf) = up.write(ubuf, 0, len, ctx.read_timeout).await;
                        conn.ubuf = ubuf.unwrap_or_default();
                        res.map_err(PumpFail::Upstream)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Reads what the upstream sent mid-upload: interim 1xx responses are skipped (the upload goes
/// on); anything else (a final response head, or the start of one, or a close) is the answer.
async fn early_answer(up: &mut UpConn, timeout: Duration) -> bool {
    if up.data().is_empty() {
        match up.fill(timeout, 64 * 1024 + 8192).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
    loop {
        let interim = match http::parse_response(up.data(), &UPSTREAM_HEAD_LIMITS) {
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
}

enum PumpFail {
    Client(ClientFail),
    Upstream(UpstreamError),
}

/// Decodes chunked `input`, appending the payload to `out` (as chunks when `chunked_out`, raw
/// otherwise, and the last chunk once done). Returns (bytes consumed, payload bytes, done).
fn reframe_chunked(
    dec: &mut ChunkedDecoder,
    input: &[u8],
    out: &mut Vec<u8>,
    chunked_out: bool,
) -> Result<(usize, u64, bool), http::ChunkError> {
    let mut pos = 0;
    let mut data = 0u64;
    loop {
        let step = dec.decode(&input[pos..])?;
        if let Some(r) = step.data {
            let bytes = &input[pos + r.start..pos + r.end];
            if chunked_out {
                http::write_chunk_header(out, bytes.len());
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(bytes);
            }
            data += bytes.len() as u64;
        }
        pos += step.consumed;
        if step.done {
            if chunked_out {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            return Ok((pos, data, true));
        }
        if step.consumed == 0 || pos == input.len() {
            return Ok((pos, data, false));
        }
    }
}

/// What the response head told us, once it has been turned into the client's head.
struct ResponseInfo {
    status: u16,
    body: BodyKind,
    out: OutFraming,
    upstream_reusable: bool,
    client_keep: bool,
}

/// Response heads from upstreams: generous, but within the parser's stack slots (128 headers)
/// so parsing never allocates.
const UPSTREAM_HEAD_LIMITS: http::HeadLimits = http::HeadLimits {
    max_request_line: 8192,
    max_header_bytes: 64 * 1024,
    max_headers: 128,
};

/// Free replays of one request on fresh connections after a pooled one turned out closed.
const MAX_STALE_REPLAYS: u32 = 2;

enum Attempt {
    /// A pooled connection refused the request's first byte: it was closed before the request,
    /// which the upstream cannot have seen. Replay on a fresh connection without spending a
    /// retry.
    Stale(UpstreamError),
    /// The response went to the client; `keep` tells whether the client connection stays.
    Done { keep: bool, status: u16 },
    /// Failed before any response byte reached the client.
    Failed(UpstreamError),
    /// A 502/503/504 the request may be retried on.
    RetryStatus(UpstreamError),
    /// The client's side failed while sending its body; answer with this and close.
    Client(ClientFail),
}

/// Forwards the prepared request; returns whether the client connection may be kept open.
pub async fn forward(
    ctx: &RequestCtx,
    conn: &mut ClientIo,
    worker: &Worker,
    snap: &Snapshot,
) -> Served {
    let cfg = &snap.active.config;
    let limits = &cfg.server.limits;
    let upstream = &cfg.upstreams[ctx.upstream];
    let state = &snap.upstreams.list[ctx.upstream];
    let io_timeout = limits.body_timeout;

    let mut body = RequestBody::new(ctx);
    if let Err(f) = body.buffer(ctx, conn, limits.max_body, io_timeout).await {
        return client_failed(conn, ctx, f, io_timeout).await;
    }
    {
        let s = state.borrow();
        s.pending_requests.set(s.pending_requests.get() + 1);
    }

    let metrics = &snap.metrics;
    let upstream_id = ctx.upstream as u32;
    let mut tried = Tried::default();
    let mut attempts: u32 = 0;
    let mut stale: u32 = 0;
    // The rotation is read as of the request's start (an ejection ending meanwhile is seen by
    // the next request); results are recorded at the time they happen (see `passive`).
    let now_ms = crate::clock::ms_at(ctx.started);
    loop {
        let (ep, pooled) = {
            let mut s = state.borrow_mut();
            // Endpoints out of rotation (unhealthy, ejected) count as tried; when every
            // endpoint is out the rotation is empty and all are used (panic mode).
            let out = s.rotation.out_mask(now_ms);
            let mut avoid = tried.with_mask(out);
            if avoid != Tried::default() && (0..s.balancer.len()).all(|i| avoid.contains(i)) {
                // Retries went through every endpoint in rotation: an untried one out of
                // rotation beats one that just failed.
                avoid = tried;
            }
            let ep = s.balancer.pick(ctx.balance_key, avoid);
            (ep, s.checkout(ep, Instant::now()))
        };
        let addr = upstream.endpoints[ep].addr;
        // The attempt's duration, connect included: what the access log's `upstream_ms` and
        // the upstream duration histogram show, failures included.
        let began = Instant::now();
        let mut up = match pooled {
            Some(c) => c,
            None => match UpConn::connect(addr, ctx.connect_timeout).await {
                Ok(mut c) => {
                    c.count_in(metrics);
                    c
                }
                Err(e) => {
                    let took = began.elapsed();
                    metrics.upstream(upstream_id, outcome_of(&e), took);
                    passive(state, ep, true);
                    tried.add(ep);
                    attempts += 1;
                    if retry_allowed(&e, ctx, &body, attempts, state, worker) {
                        crate::debug!("retrying after: {e}");
                        continue;
                    }
                    let last = Some((addr, took));
                    return upstream_failed(conn, ctx, e, last, worker, state, io_timeout).await;
                }
            },
        };
        metrics.pool(upstream_id, up.reused);
        {
            let mut s = state.borrow_mut();
            s.balancer.start(ep);
            s.health[ep].inflight_add(worker.id, 1);
        }
        let retry_status = |e: &UpstreamError, body: &RequestBody| {
            retry_allowed(e, ctx, body, attempts + 1, state, worker)
        };
        // The final answer's status, before any of it goes to the client: outlier detection
        // and the breaker learn it first.
        let answering = |status: u16| {
            passive(state, ep, status >= 500);
            settle(ctx, state, verdict_of_status(status));
        };
        let outcome = attempt(
            ctx,
            conn,
            &mut up,
            &mut body,
            worker,
            limits.max_body,
            io_timeout,
            &retry_status,
            &answering,
        )
        .await;
        {
            let mut s = state.borrow_mut();
            s.balancer.finish(ep);
            s.health[ep].inflight_add(worker.id, -1);
        }
        match &outcome.0 {
            Attempt::Failed(e) | Attempt::RetryStatus(e) => {
                metrics.upstream(upstream_id, outcome_of(e), began.elapsed());
                if verdict_of(e) != Outcome::Ignored {
                    passive(state, ep, true);
                }
            }
            Attempt::Done { .. } | Attempt::Stale(_) | Attempt::Client(_) => {}
        }
        match outcome {
            (Attempt::Done { keep, status }, reusable) => {
                metrics.upstream(
                    upstream_id,
                    UpstreamOutcome::from_status(status),
                    began.elapsed(),
                );
                if reusable {
                    up.reused = true;
                    state.borrow_mut().checkin(ep, up, Instant::now());
                }
                return Served {
                    keep,
                    status,
                    upstream: Some((addr, began.elapsed())),
                    verdict: verdict_of_status(status),
                };
            }
            (Attempt::Client(f), _) => return client_failed(conn, ctx, f, io_timeout).await,
            (Attempt::Stale(e), _) if !body.streamed && stale < MAX_STALE_REPLAYS => {
                // The upstream closed this pooled connection before taking the request: not a
                // failure of the request and not a retry. Its siblings are likely closed too.
                crate::debug!("pooled connection to {addr} was closed ({e}); reconnecting");
                stale += 1;
                state.borrow_mut().clear(ep);
                conn.wbuf.clear();
                continue;
            }
            (Attempt::Stale(e), _) => {
                tried.add(ep);
                attempts += 1;
                if retry_allowed(&e, ctx, &body, attempts, state, worker) {
                    conn.wbuf.clear();
                    continue;
                }
                let last = Some((addr, began.elapsed()));
                return upstream_failed(conn, ctx, e, last, worker, state, io_timeout).await;
            }
            (Attempt::RetryStatus(e), _) => {
                // The budget was already taken when the attempt chose to retry.
                crate::debug!("retrying after: {e}");
                tried.add(ep);
                attempts += 1;
                conn.wbuf.clear();
            }
            (Attempt::Failed(e), _) => {
                tried.add(ep);
                attempts += 1;
                if retry_allowed(&e, ctx, &body, attempts, state, worker) {
                    crate::debug!("retrying after: {e}");
                    conn.wbuf.clear();
                    continue;
                }
                let last = Some((addr, began.elapsed()));
                return upstream_failed(conn, ctx, e, last, worker, state, io_timeout).await;
            }
        }
    }
}

fn retry_allowed(
    e: &UpstreamError,
    ctx: &RequestCtx,
    body: &RequestBody,
    attempts: u32,
    state: &std::cell::RefCell<UpstreamState>,
    worker: &Worker,
) -> bool {
    if attempts > ctx.retries
        || body.interim_relayed
        || !may_retry(e, ctx.method.idempotent, !body.streamed, body.replayable())
    {
        return false;
    }
    let s = state.borrow();
    let now = worker.shared.now_sec();
    s.budget.add_requests(now, s.pending_requests.replace(0));
    s.budget.try_retry(now)
}

/// One attempt on one connection: send, receive the head, stream the response.
/// Returns the outcome and whether the connection may go back to the pool.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    ctx: &RequestCtx,
    conn: &mut ClientIo,
    up: &mut UpConn,
    body: &mut RequestBody,
    worker: &Worker,
    max_body: u64,
    io_timeout: Duration,
    retry_status: &dyn Fn(&UpstreamError, &RequestBody) -> bool,
    answering: &dyn Fn(u16),
) -> (Attempt, bool) {
    let addr = up.addr;
    // Send the head and the held body in one write.
    if !body.streamed {
        let ubuf = std::mem::take(&mut conn.ubuf);
        let len = ubuf.len();
        let (res, ubuf) = up.write(ubuf, 0, len, ctx.read_timeout).await;
        // The head and held body come back for a retry; a write that timed out may leave
        // them with the kernel, and then the request can no longer be replayed.
        match ubuf {
            Some(ubuf) => conn.ubuf = ubuf,
            None => body.streamed = true,
        }
        match res {
            Ok(()) => {}
            // The kernel refused the very first byte (EPIPE, ECONNRESET): the pooled connection
            // was dead before this request, which the upstream cannot have seen. Replayable
            // for any method, without spending a retry.
            Err(e @ UpstreamError::Reset { .. }) if up.reused && !up.request_accepted() => {
                return (Attempt::Stale(e), false)
            }
            Err(e) => return (Attempt::Failed(e), false),
        }
    }
    if !body.complete {
        match body.pump(ctx, conn, up, max_body, io_timeout).await {
            Ok(()) => {}
            Err(PumpFail::Client(f)) => return (Attempt::Client(f), false),
            Err(PumpFail::Upstream(e)) => return (Attempt::Failed(e), false),
        }
    }

    // Response head, skipping interim 1xx responses.
    let draining = worker.drain.is_fired();
    let head_limits = UPSTREAM_HEAD_LIMITS;
    let info = loop {
        let parsed = match http::parse_response(up.data(), &head_limits) {
            Ok(Some(head)) => Some(
                response_info(&head, ctx, draining || body.abandoned, addr).map(|mut info| {
                    if body.abandoned {
                        // The rest of the body was never sent: the upstream connection is out of
                        // step, and the client's body is still unread.
                        if let Some(info) = info.as_mut() {
                            info.upstream_reusable = false;
                        }
                    }
                    if info.is_none() && relays_interim(ctx, body, head.status) {
                        // RFC 9110 §15.2: a proxy forwards interim responses, hop-by-hop
                        // headers removed as for the final one.
                        if head.status == 100 {
                            body.continue_sent = true;
                        }
                        write_response_head(
                            &mut conn.wbuf,
                            &ResponseHeadOut {
                                status: head.status,
                                reason: head.reason,
                                headers: &head.headers,
                                framing: OutFraming::NoBody,
                                request_id: &ctx.id,
                                connection: ConnDirective::Default,
                            },
                        );
                    }
                    if let Some(info) = &info {
                        conn.wbuf.clear();
                        write_response_head(
                            &mut conn.wbuf,
                            &ResponseHeadOut {
                                status: info.status,
                                reason: head.reason,
                                headers: &head.headers,
                                framing: info.out,
                                request_id: &ctx.id,
                                connection: if !info.client_keep {
                                    ConnDirective::Close
                                } else if ctx.version == Version::Http10 {
                                    ConnDirective::KeepAlive
                                } else {
                                    ConnDirective::Default
                                },
                            },
                        );
                    }
                    (head.head_len, info)
                }),
            ),
            Ok(None) => None,
            Err(e) => Some(Err(UpstreamError::BadResponse {
                addr,
                detail: e.to_string(),
            })),
        };
        match parsed {
            Some(Ok((head_len, Some(info)))) => {
                up.consume(head_len);
                break info;
            }
            Some(Ok((head_len, None))) => {
                // 1xx: relayed at once (its point is to arrive early) or dropped.
                up.consume(head_len);
                if !conn.wbuf.is_empty() {
                    body.interim_relayed = true;
                    if conn.flush(io_timeout).await.is_err() {
                        let gone = ClientFail {
                            status: None,
                            message: "client closed",
                        };
                        return (Attempt::Client(gone), false);
                    }
                }
            }
            Some(Err(e)) => return (Attempt::Failed(e), false),
            None => {
                let seen = !up.data().is_empty();
                match up.fill(ctx.read_timeout, 64 * 1024 + 8192).await {
                    Ok(0) | Err(UpstreamError::Reset { .. }) if seen => {
                        let detail = "closed in the middle of the response head".into();
                        return (
                            Attempt::Failed(UpstreamError::BadResponse { addr, detail }),
                            false,
                        );
                    }
                    // A close or reset after the request went out, even on a pooled connection
                    // that passed its reuse check: the upstream may have read the request and
                    // acted on it, so this is an attempt like any other (see the module doc).
                    Ok(0) => {
                        let detail = "closed before a response".into();
                        return (
                            Attempt::Failed(UpstreamError::Reset { addr, detail }),
                            false,
                        );
                    }
                    Ok(_) => {}
                    Err(e) => return (Attempt::Failed(e), false),
                }
            }
        }
    };

    if retryable_status(info.status) {
        // A 502/503/504 is retried when the rules and the budget allow; otherwise it is the
        // answer, passed on as the upstream sent it.
        let e = UpstreamError::Status {
            addr,
            status: info.status,
        };
        if ctx.method.idempotent && body.replayable() && retry_status(&e, body) {
            return (Attempt::RetryStatus(e), false);
        }
    }

    match stream_response(&info, ctx, conn, up, io_timeout, answering).await {
        Ok(()) => (
            Attempt::Done {
                keep: info.client_keep,
                status: info.status,
            },
            info.upstream_reusable && !up.pending_bytes(),
        ),
        // The client gets a 502 (or 504) instead of a response that was never started.
        Err(Cut::Unsent(e)) => (Attempt::Failed(e), false),
        Err(Cut::Sent) => (
            Attempt::Done {
                keep: false,
                status: info.status,
            },
            false,
        ),
    }
}

/// Whether an interim (1xx) response from the upstream goes on to the client: only to
/// HTTP/1.1 clients (RFC 9110 §15.2: a server must not send 1xx to an HTTP/1.0 client), and a
/// `100 Continue` only when the client has not had one already.
fn relays_interim(ctx: &RequestCtx, body: &RequestBody, status: u16) -> bool {
    ctx.version == Version::Http11 && !(status == 100 && body.continue_sent)
}

/// How a response body stream ended early.
enum Cut {
    /// No byte of the response left the gateway (its head is still held): the client can
    /// still be answered with this error.
    Unsent(UpstreamError),
    /// Part of the response reached the client: both connections must close.
    Sent,
}

fn response_info(
    head: &http::ResponseHead<'_>,
    ctx: &RequestCtx,
    draining: bool,
    addr: std::net::SocketAddr,
) -> Result<Option<ResponseInfo>, UpstreamError> {
    let status = head.status;
    if status == 101 {
        return Err(UpstreamError::BadResponse {
            addr,
            detail: "101 Switching Protocols on a non-websocket route".into(),
        });
    }
    if (100..200).contains(&status) {
        return Ok(None);
    }
    let method = if ctx.method.is_head { "HEAD" } else { "GET" };
    let body = http::response_body(method, status, &head.headers, head.version).map_err(|e| {
        UpstreamError::BadResponse {
            addr,
            detail: e.to_string(),
        }
    })?;
    let upstream_keep = !http::wants_close(head.version, &head.headers);
    let out = match body {
        BodyKind::None => OutFraming::NoBody,
        BodyKind::Length(n) => OutFraming::Length(n),
        BodyKind::Chunked | BodyKind::UntilClose if ctx.version == Version::Http11 => {
            OutFraming::Chunked
        }
        BodyKind::Chunked | BodyKind::UntilClose => OutFraming::UntilClose,
    };
    Ok(Some(ResponseInfo {
        status,
        body,
        out,
        upstream_reusable: upstream_keep && body != BodyKind::UntilClose,
        client_keep: ctx.keep_alive && !draining && out != OutFraming::UntilClose,
    }))
}

/// Streams the response (its head is in `conn.wbuf`) and its body. `answering` learns the
/// status right before the first byte leaves for the client (outlier detection and the
/// breaker learn the outcome first).
async fn stream_response(
    info: &ResponseInfo,
    ctx: &RequestCtx,
    conn: &mut ClientIo,
    up: &mut UpConn,
    io_timeout: Duration,
    answering: &dyn Fn(u16),
) -> Result<(), Cut> {
    if info.body != BodyKind::Chunked {
        answering(info.status);
    }
    stream_body(info, ctx, conn, up, io_timeout, answering)
        .await
        .map_err(|cut| cut.unwrap_or(Cut::Sent))
}

/// The body part of [`stream_response`]. `Err(None)`: cut short after bytes went out.
async fn stream_body(
    info: &ResponseInfo,
    ctx: &RequestCtx,
    conn: &mut ClientIo,
    up: &mut UpConn,
    io_timeout: Duration,
    answering: &dyn Fn(u16),
) -> Result<(), Option<Cut>> {
    match info.body {
        BodyKind::None => conn.flush(io_timeout).await.map_err(|_| None),
        BodyKind::Length(n) => {
            let mut remaining = n;
            let avail = (remaining as usize).min(up.data().len());
            if avail <= COALESCE_BODY {
                conn.wbuf.extend_from_slice(&up.data()[..avail]);
                up.consume(avail);
                remaining -= avail as u64;
            }
            conn.flush(io_timeout).await.map_err(|_| None)?;
            while remaining > 0 {
                if up.data().is_empty() {
                    match up.fill(ctx.read_timeout, 64 * 1024).await {
                        Ok(0) | Err(_) => return Err(None),
                        Ok(_) => {}
                    }
                }
                let take = (remaining as usize).min(up.data().len());
                let (start, buf) = (up.io.rpos, std::mem::take(&mut up.io.rbuf));
                let (res, buf) = conn.write_from(buf, start, start + take, io_timeout).await;
                up.io.rbuf = buf.ok_or(None)?;
                res.map_err(|_| None)?;
                up.consume(take);
                remaining -= take as u64;
            }
            Ok(())
        }
        BodyKind::Chunked => {
            let chunked_out = info.out == OutFraming::Chunked;
            let mut dec = ChunkedDecoder::new();
            let addr = up.addr;
            // The head is held while the first chunk's size line, received with it, is checked
            // (payload decoded, or the last chunk): until a byte has left, a broken body is
            // still answered 502. It is not held waiting for more: a stream (server-sent
            // events, long polling) gets its head as soon as it arrives.
            let mut started = false;
            let mut sent = false;
            loop {
                let (consumed, data, done) =
                    match reframe_chunked(&mut dec, up.data(), &mut conn.wbuf, chunked_out) {
                        Ok(step) => step,
                        Err(e) if !sent => {
                            let detail = format!("invalid chunked body: {e}");
                            return Err(Some(Cut::Unsent(UpstreamError::BadResponse {
                                addr,
                                detail,
                            })));
                        }
                        Err(_) => return Err(None),
                    };
                up.consume(consumed);
                started |= data > 0 || done;
                if started && (done || conn.wbuf.len() >= FLUSH_AT || up.data().is_empty()) {
                    if !sent {
                        // The first byte is about to leave: the outcome is settled.
                        answering(info.status);
                        sent = true;
                    }
                    conn.flush(io_timeout).await.map_err(|_| None)?;
                }
                if done {
                    return Ok(());
                }
                if !sent && up.data().is_empty() {
                    // Nothing of the body has arrived with the head: relay the head now.
                    answering(info.status);
                    sent = true;
                    conn.flush(io_timeout).await.map_err(|_| None)?;
                }
                if up.data().is_empty() || consumed == 0 {
                    match up.fill(ctx.read_timeout, 64 * 1024).await {
                        Ok(0) | Err(UpstreamError::Reset { .. }) if !sent => {
                            let detail = "closed before the first chunk".into();
                            return Err(Some(Cut::Unsent(UpstreamError::BadResponse {
                                addr,
                                detail,
                            })));
                        }
                        Err(e @ UpstreamError::ReadTimeout { .. }) if !sent => {
                            return Err(Some(Cut::Unsent(e)))
                        }
                        Ok(0) | Err(_) => return Err(None),
                        Ok(_) => {}
                    }
                }
            }
        }
        BodyKind::UntilClose => {
            let chunked_out = info.out == OutFraming::Chunked;
            loop {
                let data = up.data();
                if !data.is_empty() {
                    if chunked_out {
                        http::write_chunk_header(&mut conn.wbuf, data.len());
                        conn.wbuf.extend_from_slice(data);
                        conn.wbuf.extend_from_slice(b"\r\n");
                    } else {
                        conn.wbuf.extend_from_slice(data);
                    }
                    let n = data.len();
                    up.consume(n);
                }
                conn.flush(io_timeout).await.map_err(|_| None)?;
                match up.fill(ctx.read_timeout, 64 * 1024).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => return Err(None),
                }
            }
            if chunked_out {
                conn.wbuf.extend_from_slice(b"0\r\n\r\n");
            }
            conn.flush(io_timeout).await.map_err(|_| None)
        }
    }
}

async fn client_failed(
    conn: &mut ClientIo,
    ctx: &RequestCtx,
    f: ClientFail,
    timeout: Duration,
) -> Served {
    if let Some(status) = f.status {
        conn.wbuf.clear();
        let mut r = Response::error(status, f.message, ctx.id).closing();
        r.head_only = ctx.method.is_head;
        let _ = conn.send_response(&r, timeout).await;
    }
    Served {
        keep: false,
        status: f.status.unwrap_or(0),
        upstream: None,
        verdict: Outcome::Ignored,
    }
}

/// The metrics outcome of a failed attempt.
fn outcome_of(e: &UpstreamError) -> UpstreamOutcome {
    match e {
        UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. } => {
            UpstreamOutcome::ConnectError
        }
        UpstreamError::ReadTimeout { .. } => UpstreamOutcome::Timeout,
        UpstreamError::Reset { .. } => UpstreamOutcome::Reset,
        UpstreamError::Status { status, .. } => UpstreamOutcome::from_status(*status),
        UpstreamError::BadResponse { .. } | UpstreamError::ClientAborted { .. } => {
            UpstreamOutcome::ProtocolError
        }
    }
}

/// Answers a request whose last attempt failed with `e`; `last` is that attempt's endpoint
/// and duration, for the access log.
async fn upstream_failed(
    conn: &mut ClientIo,
    ctx: &RequestCtx,
    e: UpstreamError,
    last: Option<(std::net::SocketAddr, Duration)>,
    worker: &Worker,
    state: &std::cell::RefCell<UpstreamState>,
    timeout: Duration,
) -> Served {
    crate::debug!("request {} failed: {e}", ctx.id.as_str());
    settle(ctx, state, verdict_of(&e));
    conn.wbuf.clear();
    let mut r = Response::error(e.status(), e.client_message().to_string(), ctx.id);
    r.head_only = ctx.method.is_head;
    // The request body may be partly unread, and a failed upstream says nothing about the
    // client connection otherwise.
    r.close = !ctx.keep_alive || worker.drain.is_fired() || ctx.body != BodyKind::None;
    let _ = conn.send_response(&r, timeout).await;
    Served {
        keep: !r.close,
        status: r.status,
        upstream: last,
        verdict: verdict_of(&e),
    }
}

/// What a failed exchange tells the breaker (`failure_on` kinds; the example config: "failing
/// to connect in time counts as a connect failure").
fn verdict_of(e: &UpstreamError) -> Outcome {
    match e {
        UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. } => {
            Outcome::Failure(FailureKind::Connect)
        }
        UpstreamError::ReadTimeout { .. } => Outcome::Failure(FailureKind::Timeout),
        // Answered 502 by the gateway: the upstream failed the exchange.
        UpstreamError::Reset { .. }
        | UpstreamError::BadResponse { .. }
        | UpstreamError::Status { .. } => Outcome::Failure(FailureKind::Status5xx),
        UpstreamError::ClientAborted { .. } => Outcome::Ignored,
    }
}

/// Hands the breaker its permit with the request's outcome, as soon as the outcome is known
/// and before the client sees the answer: a client that sends its next request the moment
/// it has this one's must find the breaker already moved.
fn settle(ctx: &RequestCtx, state: &std::cell::RefCell<UpstreamState>, verdict: Outcome) {
    let Some(permit) = ctx.permit.take() else {
        return;
    };
    let s = state.borrow();
    if let Some(replica) = &s.breaker {
        if let Some(to) = replica.record(permit, verdict, crate::clock::now_ms()) {
            crate::warn!("upstream {}: breaker {}", s.name, to.as_str());
        }
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

/// Passive outlier detection: feeds one attempt's result to its endpoint's shared counters.
fn passive(state: &std::cell::RefCell<UpstreamState>, ep: usize, failed: bool) {
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
