//! The upstream stage: the proxy phase's side of [`upstream::call`](crate::upstream::call).
//!
//! Owns the request body on its way up (the part that fits [`REPLAY_LIMIT`] is held so the
//! request can be retried; the rest streams through a bounded buffer) and the response on its
//! way down (streamed in its own framing, re-framed for the client). Which endpoint, which
//! connection, whether and when to retry, and what outlier detection and the breaker learn are
//! `upstream::call`'s; this module answers its [`Caller`] questions from the client connection
//! and streams the body of the response it hands back.
//!
//! A route's transform ([`crate::compose::transform`]) is the exception to streaming: with a
//! request program the body is read whole (up to `max_body`) and the transformed bytes are
//! held as the request; with a response program a 2xx body is collected whole, transformed, and
//! sent under its edited head.
//!
//! Invariant: no byte of the answer leaves before [`UpstreamResponse::settle`]; a body that
//! fails before its first byte left is still answered with the gateway's 502 or 504.

use std::time::Duration;

use super::client::ClientIo;
use crate::cache::Entry;
use crate::compose::transform::{self, Encoding, Refusal};
use crate::config::model::Transform;
use crate::http::{self, BodyKind, ChunkedDecoder, ResponseHead, Version};
use crate::io::ReadEnd;
use crate::metrics::CacheResult;
use crate::state::worker::{Snapshot, Worker};
use crate::upstream::breaker::Outcome;
use crate::upstream::call::{self, CallFailure, Caller, UpstreamResponse};
use crate::upstream::client::UpConn;
use crate::upstream::UpstreamError;
use std::rc::Rc;

use super::phase::cache::{self as cache_phase, Pending, Tee};

use super::compress;
use super::ctx::RequestCtx;
use super::headers::{write_response_head, ConnDirective, OutFraming, ResponseHeadOut};
use super::respond;
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
    /// The cache's result, on a cached route.
    pub cache: Option<CacheResult>,
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

    /// Reads the whole body (decoded from its framing) for a request transform, at most
    /// `max_body` bytes (413 beyond). The body is then complete: nothing is left to pump.
    async fn read_whole(
        &mut self,
        ctx: &RequestCtx,
        conn: &mut ClientIo,
        max_body: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientFail> {
        let too_large = ClientFail {
            status: Some(413),
            message: "Request body too large",
        };
        let mut out = Vec::new();
        match self.kind {
            BodyKind::None | BodyKind::UntilClose => {}
            BodyKind::Length(n) => {
                if n > max_body {
                    return Err(too_large);
                }
                out.reserve(n as usize);
                loop {
                    let take = (self.remaining as usize).min(conn.data().len());
                    out.extend_from_slice(&conn.data()[..take]);
                    conn.consume(take);
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        break;
                    }
                    self.need_more(ctx, conn, timeout).await?;
                }
            }
            BodyKind::Chunked => loop {
                let start = conn.io.rpos;
                let (consumed, data, done) = reframe_chunked(
                    &mut self.decoder,
                    &conn.io.rbuf[start..],
                    &mut out,
                    false,
                    None,
                )
                .map_err(|_| ClientFail {
                    status: Some(400),
                    message: "Invalid chunked request body",
                })?;
                conn.consume(consumed);
                self.total += data;
                if self.total > max_body {
                    return Err(too_large);
                }
                if done {
                    break;
                }
                self.need_more(ctx, conn, timeout).await?;
            },
        }
        self.complete = true;
        Ok(out)
    }

    /// Decodes the chunked bytes in the read buffer, re-encoding them into `ubuf`.
    fn decode_available(&mut self, conn: &mut ClientIo, max_body: u64) -> Result<(), ClientFail> {
        let start = conn.io.rpos;
        let input = &conn.io.rbuf[start..];
        let (consumed, data, done) =
            reframe_chunked(&mut self.decoder, input, &mut conn.ubuf, true, None).map_err(
                |_| ClientFail {
                    status: Some(400),
                    message: "Invalid chunked request body",
                },
            )?;
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
            if up.peer_sent() && call::early_answer(up, ctx.read_timeout).await {
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

enum PumpFail {
    Client(ClientFail),
    Upstream(UpstreamError),
}

/// The client's framing and keep-alive for the response, decided from the upstream's head.
#[derive(Clone, Copy)]
struct ClientHead {
    out: OutFraming,
    keep: bool,
    /// The response is transformed: its body is read whole (in this coding) before the head
    /// written for it leaves.
    collect: Option<Encoding>,
}

/// The client's side of the exchange, as [`call::call`] sees it: the held request in
/// `conn.ubuf`, the rest of the body still on the client connection, interim responses relayed
/// to the client, and the client's response head written into `conn.wbuf`.
struct Downstream<'c> {
    ctx: &'c RequestCtx,
    conn: &'c mut ClientIo,
    worker: &'c Worker,
    body: RequestBody,
    max_body: u64,
    io_timeout: Duration,
    /// Why the client failed, when [`call::call`] ended with `ClientAborted`.
    client_fail: Option<ClientFail>,
    head: ClientHead,
    /// The cache's part of the request (a cached route, or one that may purge).
    cache: Option<&'c mut Pending>,
    /// The request's config generation: the purge generations `invalidate_on` bumps, the
    /// route's transform.
    snap: &'c Snapshot,
    /// The copy of the body the cache stores (boxed: the request's future stays small).
    tee: Option<Box<Tee>>,
    /// The upstream answered 5xx and a stale entry answers instead (`stale_if_error`).
    stale: Option<Rc<Entry>>,
    /// The body is compressed on its way to the client (the compression phase's encoder).
    encode: Option<Box<compress::BodyOut>>,
}

const CLIENT_GONE: ClientFail = ClientFail {
    status: None,
    message: "client closed",
};

impl Downstream<'_> {
    fn client_failed(&mut self, f: ClientFail) -> UpstreamError {
        let aborted = UpstreamError::ClientAborted {
            status: f.status,
            detail: f.message.to_string(),
        };
        self.client_fail = Some(f);
        aborted
    }
}

impl Caller for Downstream<'_> {
    fn held(&mut self) -> &mut Vec<u8> {
        &mut self.conn.ubuf
    }

    fn complete(&self) -> bool {
        self.body.complete
    }

    fn streamed(&self) -> bool {
        self.body.streamed
    }

    fn lose_held(&mut self) {
        self.body.streamed = true;
    }

    async fn send_rest(&mut self, up: &mut UpConn) -> Result<(), UpstreamError> {
        let pumped = self
            .body
            .pump(self.ctx, self.conn, up, self.max_body, self.io_timeout)
            .await;
        match pumped {
            Ok(()) => Ok(()),
            Err(PumpFail::Client(f)) => Err(self.client_failed(f)),
            Err(PumpFail::Upstream(e)) => Err(e),
        }
    }

    fn abandoned(&self) -> bool {
        self.body.abandoned
    }

    fn interim(&mut self, head: &ResponseHead<'_>) -> bool {
        if !relays_interim(self.ctx, &self.body, head.status) {
            return false;
        }
        // RFC 9110 §15.2: a proxy forwards interim responses, hop-by-hop headers removed as
        // for the final one; relayed at once, since their point is to arrive early.
        if head.status == 100 {
            self.body.continue_sent = true;
        }
        // The rate-limit and cache fields belong to the final answer only.
        let added = respond::phases(&respond::Answering {
            id: &self.ctx.id,
            rate: None,
            cache: None,
        });
        write_response_head(
            &mut self.conn.wbuf,
            &ResponseHeadOut {
                status: head.status,
                reason: head.reason,
                headers: &head.headers,
                framing: OutFraming::NoBody,
                added: &added,
                connection: ConnDirective::Default,
            },
        );
        true
    }

    async fn send_interim(&mut self) -> Result<(), UpstreamError> {
        // A response byte is on its way to the client from here: nothing is retried any more.
        self.body.interim_relayed = true;
        if self.conn.flush(self.io_timeout).await.is_err() {
            return Err(self.client_failed(CLIENT_GONE));
        }
        Ok(())
    }

    fn interim_relayed(&self) -> bool {
        self.body.interim_relayed
    }

    fn final_head(&mut self, head: &ResponseHead<'_>, body: BodyKind) {
        let ctx = self.ctx;
        if head.status == 101 {
            // `upstream::call` accepts a 101 on an upgrade only; the tunnel relays this head.
            self.head = ClientHead {
                out: OutFraming::NoBody,
                keep: false,
                collect: None,
            };
            super::tunnel::switching_head(&mut self.conn.wbuf, head, ctx);
            return;
        }
        let mut mark = None;
        if let Some(pending) = self.cache.as_deref_mut() {
            let now = crate::clock::unix_now();
            // A successful `invalidate_on` request purges its rules on every worker.
            if (200..300).contains(&head.status) {
                for &rule in &pending.purge {
                    self.snap.active.cache.purge(rule);
                }
            }
            // RFC 5861 §4: a 5xx is answered with the stale entry while its window allows.
            if head.status >= 500 {
                if let Some(stale) = &pending.stale {
                    if cache_phase::usable_on_error(stale, now).is_some() {
                        self.stale = Some(stale.clone());
                        return;
                    }
                }
            }
            if let Some(store) = &pending.store {
                if let Some(entry) = store.admit(head, body, now) {
                    self.tee = Some(Box::new(store.tee(entry, pending.leader.take())));
                }
            }
            // Nothing will be stored: the misses waiting for this fetch go on now.
            pending.leader = None;
            mark = pending.mark();
        }
        let out = match body {
            BodyKind::None => OutFraming::NoBody,
            BodyKind::Length(n) => OutFraming::Length(n),
            BodyKind::Chunked | BodyKind::UntilClose if ctx.version == Version::Http11 => {
                OutFraming::Chunked
            }
            BodyKind::Chunked | BodyKind::UntilClose => OutFraming::UntilClose,
        };
        // An abandoned upload leaves the client's body unread: the connection closes.
        let keep = ctx.keep_alive
            && !self.worker.drain.is_fired()
            && !self.body.abandoned
            && out != OutFraming::UntilClose;
        self.head = ClientHead {
            out,
            keep,
            collect: None,
        };
        self.conn.wbuf.clear();
        let rate = ctx.rate.map(|h| h.text());
        let cache = mark.map(|m| m.text());
        let added = respond::phases(&respond::Answering {
            id: &ctx.id,
            rate: rate.as_ref(),
            cache: cache.as_ref(),
        });
        write_response_head(
            &mut self.conn.wbuf,
            &ResponseHeadOut {
                status: head.status,
                reason: head.reason,
                headers: &head.headers,
                framing: out,
                added: &added,
                connection: if !keep {
                    ConnDirective::Close
                } else if ctx.version == Version::Http10 {
                    ConnDirective::KeepAlive
                } else {
                    ConnDirective::Default
                },
            },
        );
        if let Some(t) = route_transform(self.snap, ctx) {
            let success = (200..300).contains(&head.status);
            if t.response.is_some() && success && body != BodyKind::None && !ctx.method.is_head {
                // The head is edited once the transformed body is known (relay_transformed).
                let codings = head
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("content-encoding"))
                    .map(|h| h.value);
                self.head.collect = Some(Encoding::of(codings));
                return;
            }
            let changed = if t.response.is_some() && success && ctx.method.is_head {
                transform::Body::Unknown
            } else {
                transform::Body::Unchanged
            };
            if changed != transform::Body::Unchanged || !t.response_headers.is_empty() {
                let edited =
                    transform::response_head(&self.conn.wbuf, &t.response_headers, changed);
                self.conn.wbuf.clear();
                self.conn.wbuf.extend_from_slice(&edited);
            }
        }
        // The last response phase, on the head as the client would get it: the body is then
        // compressed as it streams, and re-framed.
        if let (Some(offer), true) = (&self.conn.offer, body != BodyKind::None) {
            let len = match body {
                BodyKind::Length(n) => Some(n),
                _ => None,
            };
            if let Some(encode) = compress::head(&mut self.conn.wbuf, 0, offer, len) {
                if encode.framing() == compress::Framing::UntilClose {
                    self.head.out = OutFraming::UntilClose;
                    self.head.keep = false;
                } else {
                    self.head.out = OutFraming::Chunked;
                }
                self.encode = Some(Box::new(encode));
            }
        }
    }
}

/// Forwards the prepared request through [`call::call`] and relays the answer; returns how
/// the request ended.
pub async fn forward(
    ctx: &RequestCtx,
    cache: Option<&mut Pending>,
    conn: &mut ClientIo,
    worker: &Worker,
    snap: &Snapshot,
) -> Served {
    let cfg = &snap.active.config;
    let limits = &cfg.server.limits;
    let io_timeout = limits.body_timeout;

    let mut body = RequestBody::new(ctx);
    // A request program reads the body whole (boxed: the rare path must not grow every
    // request's future); otherwise the part that fits REPLAY_LIMIT is held.
    let read = match route_transform(snap, ctx).filter(|t| t.request.is_some()) {
        Some(t) => {
            Box::pin(transform_request(
                &mut body,
                t,
                ctx,
                conn,
                limits.max_body,
                io_timeout,
            ))
            .await
        }
        None => body
            .buffer(ctx, conn, limits.max_body, io_timeout)
            .await
            .map_err(Refused::Client),
    };
    if let Err(refused) = read {
        let mark = cache.as_deref().and_then(Pending::mark);
        return Box::pin(refused.send(conn, ctx, mark, worker, io_timeout)).await;
    }
    let target = call::Target {
        id: ctx.upstream,
        config: &cfg.upstreams[ctx.upstream],
        state: &snap.upstreams.list[ctx.upstream],
    };
    let now_sec = || worker.shared.now_sec();
    let env = call::Env {
        metrics: &snap.metrics,
        worker: worker.id,
        now_sec: &now_sec,
    };
    let policy = call::Policy {
        retries: ctx.retries,
        idempotent: ctx.method.idempotent,
        head: ctx.method.is_head,
        balance_key: ctx.balance_key,
        connect_timeout: ctx.connect_timeout,
        read_timeout: ctx.read_timeout,
        started: ctx.started,
        upgrade: ctx.upgrade,
    };
    let mut cache = cache;
    if let Some(store) = cache.as_deref_mut().and_then(|p| p.store.as_deref_mut()) {
        store.sent_at(crate::clock::unix_now());
    }
    let mut down = Downstream {
        ctx,
        conn,
        worker,
        body,
        max_body: limits.max_body,
        io_timeout,
        client_fail: None,
        head: ClientHead {
            out: OutFraming::NoBody,
            keep: false,
            collect: None,
        },
        cache,
        snap,
        tee: None,
        stale: None,
        encode: None,
    };
    match call::call(target, env, &policy, ctx.permit.take(), &mut down).await {
        // The upgrade's 101: the connection becomes a tunnel (boxed: the rare path must not
        // grow every request's future).
        Ok(resp) if resp.status == 101 => {
            Box::pin(super::tunnel::run(resp, down.conn, worker, snap)).await
        }
        Ok(resp) if down.stale.is_some() => {
            // The breaker and outlier detection learn the 5xx; the client gets the stale entry.
            resp.cut();
            let stale = down.stale.take();
            Box::pin(answer_stale(down.conn, ctx, stale, worker, io_timeout)).await
        }
        Ok(resp) if down.head.collect.is_some() => {
            let t = route_transform(snap, ctx).expect("collect is set on transform routes only");
            let encoding = down.head.collect.unwrap_or(Encoding::Identity);
            let head = down.head;
            // Built inside the box: a future bound to a local first would keep its storage in
            // this one.
            Box::pin(relay_transformed(
                resp,
                head,
                ctx,
                down.conn,
                t,
                encoding,
                limits.max_body,
                worker,
                io_timeout,
            ))
            .await
        }
        Ok(resp) => {
            let mut tee = down.tee.take();
            let result = down
                .cache
                .as_deref()
                .and_then(Pending::mark)
                .map(|m| m.result);
            let encode = down.encode.take();
            let mut served = relay(
                resp, down.head, ctx, down.conn, &mut tee, encode, result, io_timeout, worker,
            )
            .await;
            served.cache = result;
            // The tee is left only when the whole body went to the client.
            if let (Some(tee), Some(pending)) = (tee, down.cache.as_deref()) {
                keep(tee, pending, worker, snap);
            }
            served
        }
        Err(CallFailure {
            error: UpstreamError::ClientAborted { .. },
            ..
        }) => {
            let f = down.client_fail.take().unwrap_or(CLIENT_GONE);
            let mark = down.cache.as_deref().and_then(Pending::mark);
            Box::pin(client_failed(down.conn, ctx, f, mark, io_timeout)).await
        }
        Err(failure) => {
            let stale = down.cache.as_deref().and_then(|p| p.stale.clone());
            let now = crate::clock::unix_now();
            if stale
                .as_ref()
                .is_some_and(|e| cache_phase::usable_on_error(e, now).is_some())
            {
                // RFC 5861 §4: refused, reset, timed out: the stale entry answers. The
                // breaker and outlier detection learnt the failure already.
                return Box::pin(answer_stale(down.conn, ctx, stale, worker, io_timeout)).await;
            }
            let mark = down.cache.as_deref().and_then(Pending::mark);
            Box::pin(upstream_failed(
                down.conn, ctx, failure, mark, worker, io_timeout,
            ))
            .await
        }
    }
}

/// Stores a response whose body went to the client whole (the tee kept it within
/// `max_object`), then releases the misses waiting for it.
fn keep(tee: Box<Tee>, pending: &Pending, worker: &Worker, snap: &Snapshot) {
    let (Some(store), Some(config)) = (&pending.store, &snap.active.config.cache) else {
        return;
    };
    let Some((head, body, leader)) = tee.finish() else {
        return;
    };
    let shard = worker.cache_shard(config.max_bytes_per_worker);
    {
        let mut shard = shard.borrow_mut();
        store.keep(&mut shard, &snap.active.cache, head, body);
        worker.publish_cache_size(&shard);
    }
    drop(leader);
}

/// Answers with a stale entry in place of a failed upstream's answer (`X-Cache: STALE`).
async fn answer_stale(
    conn: &mut ClientIo,
    ctx: &RequestCtx,
    stale: Option<Rc<Entry>>,
    worker: &Worker,
    timeout: Duration,
) -> Served {
    conn.wbuf.clear();
    let now = crate::clock::unix_now();
    let answer = stale.and_then(|e| cache_phase::stale_answer(&e, now, &[], ctx.id));
    let Some(mut r) = answer else {
        // Checked by the caller: the window cannot close between the check and here by
        // more than a second; answered as the failure it stands for.
        let r = Response::error(502, "Bad Gateway", ctx.id).closing();
        let _ = conn.send_response(&r, timeout).await;
        return Served {
            keep: false,
            status: 502,
            upstream: None,
            verdict: Outcome::Ignored,
            cache: Some(CacheResult::Miss),
        };
    };
    r.head_only = ctx.method.is_head;
    r.rate = ctx.rate;
    r.http10 = ctx.version == Version::Http10;
    r.close = !ctx.keep_alive || worker.drain.is_fired() || ctx.body != BodyKind::None;
    let sent = conn.send_response(&r, timeout).await.is_ok();
    Served {
        keep: sent && !r.close,
        status: r.status,
        upstream: None,
        verdict: Outcome::Ignored,
        cache: Some(CacheResult::Stale),
    }
}

/// The transform of the request's route, in the request's config generation.
fn route_transform<'s>(snap: &'s Snapshot, ctx: &RequestCtx) -> Option<&'s Transform> {
    let cfg = &snap.active.config;
    cfg.routes[ctx.route].transform.map(|t| &cfg.transforms[t])
}

/// What ends a request the transform refused (or whose body failed while being read whole).
enum Refused {
    Client(ClientFail),
    Transform(Refusal),
}

impl Refused {
    async fn send(
        self,
        conn: &mut ClientIo,
        ctx: &RequestCtx,
        mark: Option<super::respond::CacheMark>,
        worker: &Worker,
        timeout: Duration,
    ) -> Served {
        match self {
            Refused::Client(f) => client_failed(conn, ctx, f, mark, timeout).await,
            Refused::Transform(refusal) => {
                // The whole body was read: the connection can carry the next request.
                let keep = ctx.keep_alive && !worker.drain.is_fired();
                let served = answer_refusal(conn, ctx, refusal, keep, timeout).await;
                Served {
                    upstream: None,
                    verdict: Outcome::Ignored,
                    cache: mark.map(|m| m.result),
                    ..served
                }
            }
        }
    }
}

/// The request side of a transform: the body read whole, run through the `request` program,
/// and held behind the edited upstream head (in `conn.ubuf`), replayable for retries.
async fn transform_request(
    body: &mut RequestBody,
    t: &Transform,
    ctx: &RequestCtx,
    conn: &mut ClientIo,
    max_body: u64,
    timeout: Duration,
) -> Result<(), Refused> {
    let Some(program) = &t.request else {
        return Ok(());
    };
    let raw = body
        .read_whole(ctx, conn, max_body, timeout)
        .await
        .map_err(Refused::Client)?;
    let out = transform::request_body(program, &raw).map_err(Refused::Transform)?;
    let head = transform::request_head(
        &conn.ubuf[..ctx.upstream_head_len],
        &t.request_headers,
        transform::Body::Json(out.len()),
        t.response.is_some(),
    );
    conn.ubuf.clear();
    conn.ubuf.extend_from_slice(&head);
    conn.ubuf.extend_from_slice(&out);
    Ok(())
}

/// The gateway's JSON error for a refused body; `keep`: the connection stays open after it.
async fn answer_refusal(
    conn: &mut ClientIo,
    ctx: &RequestCtx,
    refusal: Refusal,
    keep: bool,
    timeout: Duration,
) -> Served {
    conn.wbuf.clear();
    let mut r = Response::error(refusal.status, refusal.message, ctx.id);
    r.head_only = ctx.method.is_head;
    r.rate = ctx.rate;
    r.close = !keep;
    let sent = conn.send_response(&r, timeout).await.is_ok();
    Served {
        keep: keep && sent,
        status: r.status,
        upstream: None,
        verdict: Outcome::Ignored,
        cache: None,
    }
}

/// A transformed response: the body read whole (up to `max_body`), decoded, run through the
/// `response` program, and sent under the head written for it (`conn.wbuf`), edited. A failure
/// before a byte left is the gateway's 502; the upstream's exchange itself went well (its
/// status is what the breaker learns), so its connection is reused.
#[allow(clippy::too_many_arguments)]
async fn relay_transformed(
    resp: UpstreamResponse<'_>,
    head: ClientHead,
    ctx: &RequestCtx,
    conn: &mut ClientIo,
    t: &Transform,
    encoding: Encoding,
    max_body: u64,
    worker: &Worker,
    timeout: Duration,
) -> Served {
    static FAILED: crate::logging::Limiter = crate::logging::Limiter::new();
    let (status, verdict, addr, began) = (resp.status, resp.verdict(), resp.addr, resp.began);
    let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
    let raw = match resp.collect(limit, ctx.read_timeout).await {
        Ok(raw) => raw,
        Err(failure) => {
            let over = matches!(&failure.error, UpstreamError::BadResponse { detail, .. } if detail.starts_with("body over"));
            if !over {
                return upstream_failed(conn, ctx, failure, None, worker, timeout).await;
            }
            // Over the limit: the rest of the body is unread, so the upstream connection
            // closed (collect), and the client's is fine.
            let refusal = Refusal {
                status: 502,
                message: "Upstream response too large to transform".into(),
            };
            let served = answer_refusal(conn, ctx, refusal, head.keep, timeout).await;
            return Served {
                upstream: Some((addr, began.elapsed())),
                verdict,
                ..served
            };
        }
    };
    let upstream = Some((addr, began.elapsed()));
    let program = t
        .response
        .as_ref()
        .expect("collect is set with a response program only");
    let out = transform::decode(&encoding, raw, limit).and_then(|decoded| {
        transform::response_body(program, &decoded).map_err(|(refusal, detail)| {
            crate::warn_limited!(
                FAILED,
                "transform {:?}: response of upstream {addr} refused ({}): {detail}",
                t.name,
                refusal.message
            );
            refusal
        })
    });
    match out {
        Ok(body) => {
            let edited = transform::response_head(
                &conn.wbuf,
                &t.response_headers,
                transform::Body::Json(body.len()),
            );
            conn.wbuf.clear();
            conn.wbuf.extend_from_slice(&edited);
            conn.wbuf.extend_from_slice(&body);
            // The last response phase, after the transform.
            compress::whole(&mut conn.wbuf, 0, conn.offer.as_ref());
            let sent = conn.flush(timeout).await.is_ok();
            Served {
                keep: head.keep && sent,
                status,
                upstream,
                verdict,
                cache: None,
            }
        }
        Err(refusal) => {
            let served = answer_refusal(conn, ctx, refusal, head.keep, timeout).await;
            Served {
                upstream,
                verdict,
                ..served
            }
        }
    }
}

/// Streams the upstream's answer (its head already in `conn.wbuf`) to the client.
#[allow(clippy::too_many_arguments)]
async fn relay(
    mut resp: UpstreamResponse<'_>,
    head: ClientHead,
    ctx: &RequestCtx,
    conn: &mut ClientIo,
    tee: &mut Option<Box<Tee>>,
    encode: Option<Box<compress::BodyOut>>,
    cache: Option<CacheResult>,
    io_timeout: Duration,
    worker: &Worker,
) -> Served {
    let streamed = stream_response(&head, ctx, conn, &mut resp, tee, encode, io_timeout).await;
    let status = resp.status;
    let verdict = resp.verdict();
    let upstream = Some((resp.addr, resp.began.elapsed()));
    match streamed {
        Ok(()) => {
            resp.complete();
            Served {
                keep: head.keep,
                status,
                upstream,
                verdict,
                cache: None,
            }
        }
        // The client gets a 502 (or 504) instead of a response that was never started.
        Err(Cut::Unsent(e)) => {
            *tee = None;
            let failure = resp.failed(e);
            let mark = cache.map(|result| super::respond::CacheMark { result, age: None });
            Box::pin(upstream_failed(
                conn, ctx, failure, mark, worker, io_timeout,
            ))
            .await
        }
        Err(Cut::Sent) => {
            *tee = None;
            resp.cut();
            Served {
                keep: false,
                status,
                upstream,
                verdict,
                cache: None,
            }
        }
    }
}

/// Decodes chunked `input`, appending the payload to `out` (as chunks when `chunked_out`, raw
/// otherwise, and the last chunk once done). Returns (bytes consumed, payload bytes, done).
fn reframe_chunked(
    dec: &mut ChunkedDecoder,
    input: &[u8],
    out: &mut Vec<u8>,
    chunked_out: bool,
    mut tee: Option<&mut Tee>,
) -> Result<(usize, u64, bool), http::ChunkError> {
    let mut pos = 0;
    let mut data = 0u64;
    loop {
        let step = dec.decode(&input[pos..])?;
        if let Some(r) = step.data {
            let bytes = &input[pos + r.start..pos + r.end];
            if let Some(tee) = tee.as_deref_mut() {
                tee.push(bytes);
            }
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
/// Streams the response (its head is in `conn.wbuf`) and its body. The attempt is settled
/// right before the first byte leaves for the client (outlier detection and the breaker learn
/// the outcome first).
async fn stream_response(
    head: &ClientHead,
    ctx: &RequestCtx,
    conn: &mut ClientIo,
    resp: &mut UpstreamResponse<'_>,
    tee: &mut Option<Box<Tee>>,
    encode: Option<Box<compress::BodyOut>>,
    io_timeout: Duration,
) -> Result<(), Cut> {
    if resp.body != BodyKind::Chunked {
        resp.settle();
    }
    let body = resp.body;
    if let Some(encode) = encode {
        // Boxed: the rare path must not grow every request's future.
        return Box::pin(stream_encoded(
            *encode,
            body,
            ctx,
            conn,
            &mut resp.conn,
            &mut resp.attempt,
            tee,
            io_timeout,
        ))
        .await
        .map_err(|cut| cut.unwrap_or(Cut::Sent));
    }
    stream_body(
        head,
        body,
        ctx,
        conn,
        &mut resp.conn,
        &mut resp.attempt,
        tee,
        io_timeout,
    )
    .await
    .map_err(|cut| cut.unwrap_or(Cut::Sent))
}

/// The body part of [`stream_response`]. `Err(None)`: cut short after bytes went out. The
/// decoded body also goes to `tee` (the cache's copy), when there is one.
#[allow(clippy::too_many_arguments)]
async fn stream_body(
    head: &ClientHead,
    body: BodyKind,
    ctx: &RequestCtx,
    conn: &mut ClientIo,
    up: &mut UpConn,
    attempt: &mut call::Attempt<'_>,
    tee: &mut Option<Box<Tee>>,
    io_timeout: Duration,
) -> Result<(), Option<Cut>> {
    match body {
        BodyKind::None => conn.flush(io_timeout).await.map_err(|_| None),
        BodyKind::Length(n) => {
            let mut remaining = n;
            let avail = (remaining as usize).min(up.data().len());
            if avail <= COALESCE_BODY {
                if let Some(tee) = tee {
                    tee.push(&up.data()[..avail]);
                }
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
                if let Some(tee) = tee {
                    tee.push(&up.data()[..take]);
                }
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
            let chunked_out = head.out == OutFraming::Chunked;
            let mut dec = ChunkedDecoder::new();
            let addr = up.addr;
            // The head is held while the first chunk's size line, received with it, is checked
            // (payload decoded, or the last chunk): until a byte has left, a broken body is
            // still answered 502. It is not held waiting for more: a stream (server-sent
            // events, long polling) gets its head as soon as it arrives.
            let mut started = false;
            let mut sent = false;
            loop {
                let step = reframe_chunked(
                    &mut dec,
                    up.data(),
                    &mut conn.wbuf,
                    chunked_out,
                    tee.as_deref_mut(),
                );
                let (consumed, data, done) = chunk_step(step, sent, addr)?;
                up.consume(consumed);
                started |= data > 0 || done;
                if started && (done || conn.wbuf.len() >= FLUSH_AT || up.data().is_empty()) {
                    if !sent {
                        // The first byte is about to leave: the outcome is settled.
                        attempt.settle();
                        sent = true;
                    }
                    conn.flush(io_timeout).await.map_err(|_| None)?;
                }
                if done {
                    return Ok(());
                }
                if !sent && up.data().is_empty() {
                    // Nothing of the body has arrived with the head: relay the head now.
                    attempt.settle();
                    sent = true;
                    conn.flush(io_timeout).await.map_err(|_| None)?;
                }
                if up.data().is_empty() || consumed == 0 {
                    body_read(up.fill(ctx.read_timeout, 64 * 1024).await, sent, addr)?;
                }
            }
        }
        BodyKind::UntilClose => {
            let chunked_out = head.out == OutFraming::Chunked;
            loop {
                let data = up.data();
                if !data.is_empty() {
                    if let Some(tee) = tee {
                        tee.push(data);
                    }
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

/// [`stream_body`] for a compressed body (its head, rewritten by the compression phase, in
/// `conn.wbuf`): each part of the upstream's body, decoded from its framing, goes to the cache's
/// copy as sent and through the encoder to the client, framed as `encode` says. Before each
/// wait for the upstream the encoder is flushed, so what arrived is decodable by the client
/// without waiting for what has not. A chunked body keeps [`stream_body`]'s rule: until its
/// first byte leaves, a broken body is still answered 502.
#[allow(clippy::too_many_arguments)]
async fn stream_encoded(
    mut encode: compress::BodyOut,
    body: BodyKind,
    ctx: &RequestCtx,
    conn: &mut ClientIo,
    up: &mut UpConn,
    attempt: &mut call::Attempt<'_>,
    tee: &mut Option<Box<Tee>>,
    io_timeout: Duration,
) -> Result<(), Option<Cut>> {
    let addr = up.addr;
    let mut remaining = match body {
        BodyKind::Length(n) => n,
        _ => 0,
    };
    let mut dec = ChunkedDecoder::new();
    let mut decoded = Vec::new();
    // Only a chunked body's outcome is still open here (`stream_response` settled the rest).
    let mut sent = body != BodyKind::Chunked;
    let encode_failed = |_| None;
    loop {
        let (done, started) = match body {
            BodyKind::None => (true, true),
            BodyKind::Length(_) => {
                let take = (remaining as usize).min(up.data().len());
                remaining -= take as u64;
                let piece = &up.data()[..take];
                if let Some(tee) = tee {
                    tee.push(piece);
                }
                encode
                    .push(piece, remaining > 0, &mut conn.wbuf)
                    .map_err(encode_failed)?;
                up.consume(take);
                (remaining == 0, true)
            }
            BodyKind::Chunked => {
                decoded.clear();
                let step =
                    reframe_chunked(&mut dec, up.data(), &mut decoded, false, tee.as_deref_mut());
                let (consumed, data, done) = chunk_step(step, sent, addr)?;
                up.consume(consumed);
                encode
                    .push(&decoded, !done, &mut conn.wbuf)
                    .map_err(encode_failed)?;
                (done, data > 0 || done)
            }
            BodyKind::UntilClose => {
                let n = up.data().len();
                if let Some(tee) = tee {
                    tee.push(up.data());
                }
                encode
                    .push(up.data(), true, &mut conn.wbuf)
                    .map_err(encode_failed)?;
                up.consume(n);
                (false, true)
            }
        };
        if done {
            encode.finish(&mut conn.wbuf).map_err(encode_failed)?;
            if !sent {
                attempt.settle();
            }
            return conn.flush(io_timeout).await.map_err(|_| None);
        }
        // As in `stream_body`: the head leaves once the body's first part is known good, or
        // at once when nothing of the body came with it (a stream gets its head early).
        if started || up.data().is_empty() {
            if !sent {
                // The first byte is about to leave: the outcome is settled.
                attempt.settle();
                sent = true;
            }
            conn.flush(io_timeout).await.map_err(|_| None)?;
        }
        let read = up.fill(ctx.read_timeout, 64 * 1024).await;
        if matches!(read, Ok(0)) && body == BodyKind::UntilClose {
            // The end of a close-delimited body.
            encode.finish(&mut conn.wbuf).map_err(encode_failed)?;
            return conn.flush(io_timeout).await.map_err(|_| None);
        }
        body_read(read, sent, addr)?;
    }
}

/// What one upstream read in the middle of a chunked or compressed body means: bytes arrived
/// (`Ok`); or, while nothing of the answer has left (`!sent`), a failure still answered as one
/// (`Cut::Unsent`: 502, or 504 for a read timeout); after that, a cut connection (`None`).
fn body_read(
    read: Result<usize, UpstreamError>,
    sent: bool,
    addr: std::net::SocketAddr,
) -> Result<(), Option<Cut>> {
    match read {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) | Err(UpstreamError::Reset { .. }) if !sent => {
            Err(Some(Cut::Unsent(UpstreamError::BadResponse {
                addr,
                detail: "closed before the first chunk".into(),
            })))
        }
        Err(e @ UpstreamError::ReadTimeout { .. }) if !sent => Err(Some(Cut::Unsent(e))),
        _ => Err(None),
    }
}

/// What one step of decoding a chunked body means, as [`body_read`] says for a read: a broken
/// chunk is a 502 while nothing has left (`Cut::Unsent`), a cut connection after (`None`).
fn chunk_step(
    step: Result<(usize, u64, bool), http::ChunkError>,
    sent: bool,
    addr: std::net::SocketAddr,
) -> Result<(usize, u64, bool), Option<Cut>> {
    step.map_err(|e| {
        (!sent).then(|| {
            Cut::Unsent(UpstreamError::BadResponse {
                addr,
                detail: format!("invalid chunked body: {e}"),
            })
        })
    })
}

/// Boxed where it is awaited (as [`upstream_failed`]): a failure is the rare path, and its
/// future (a whole gateway answer) would otherwise double the state of every request.
async fn client_failed(
    conn: &mut ClientIo,
    ctx: &RequestCtx,
    f: ClientFail,
    mark: Option<super::respond::CacheMark>,
    timeout: Duration,
) -> Served {
    if let Some(status) = f.status {
        conn.wbuf.clear();
        let mut r = Response::error(status, f.message, ctx.id).closing();
        r.head_only = ctx.method.is_head;
        r.rate = ctx.rate;
        r.cache = mark;
        let _ = conn.send_response(&r, timeout).await;
    }
    Served {
        keep: false,
        status: f.status.unwrap_or(0),
        upstream: None,
        verdict: Outcome::Ignored,
        cache: mark.map(|m| m.result),
    }
}

/// Answers a request whose call failed; `failure.last` is its last attempt's endpoint and
/// duration, for the access log. Outlier detection and the breaker have learnt it already.
async fn upstream_failed(
    conn: &mut ClientIo,
    ctx: &RequestCtx,
    failure: CallFailure,
    mark: Option<super::respond::CacheMark>,
    worker: &Worker,
    timeout: Duration,
) -> Served {
    let e = failure.error;
    crate::debug!("request {} failed: {e}", ctx.id.as_str());
    conn.wbuf.clear();
    let mut r = Response::error(e.status(), e.client_message().to_string(), ctx.id);
    r.head_only = ctx.method.is_head;
    r.rate = ctx.rate;
    r.cache = mark;
    // The request body may be partly unread, and a failed upstream says nothing about the
    // client connection otherwise.
    r.close = !ctx.keep_alive || worker.drain.is_fired() || ctx.body != BodyKind::None;
    let _ = conn.send_response(&r, timeout).await;
    Served {
        keep: !r.close,
        status: r.status,
        upstream: failure.last,
        verdict: call::verdict_of(&e),
        cache: mark.map(|m| m.result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A request's future is built and moved whole at each async call it passes (a memcpy per
    /// level, per request): the rare paths (a streamed upload, an interim response, a failure
    /// answer, a coalesced wait, a stale answer) are boxed where they are awaited so that
    /// they do not grow it, and so is the cache's copy of a body. 4,864 bytes before they
    /// were; 4,224 before the cache's state (the pending lookup, the tee) joined it; 4,480
    /// before compression's encoder slot (the boxed encoder handed from the head to the relay,
    /// and the boxed compressed stream) joined it; 4,608 before timers moved out of line
    /// (`io::timeout`) and the parsed upstream head out of the exchange's state (`judge`).
    #[test]
    fn the_request_future_stays_small() {
        let run = future_size::<
            RequestCtx,
            &'static mut ClientIo,
            &'static Worker,
            &'static Snapshot,
            _,
        >(super::super::stack::run);
        assert!(run <= 3328, "stack::run's future is {run} bytes");
    }
}
