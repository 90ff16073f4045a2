//! One client connection: keep-alive, head limits and timeouts, pipelining in order.
//!
//! Owns [`ClientIo`] (the socket and its three buffers) and the connection loop [`serve`]:
//! wait for a request head (keep-alive timeout while idle, header timeout once the first byte
//! arrives), parse it zero-copy, hand it to the pipeline, repeat. Pipelined requests are read
//! from the same buffer after the previous response is complete, so responses go out in order.
//!
//! Invariant: when the pipeline returns "keep alive", the request's body has been consumed
//! exactly, so the next bytes in the buffer are the next request's.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::config::model::AccessLog;
use crate::http;
use crate::pipeline;
use crate::runtime::worker::Worker;

/// Initial capacity of a connection's read buffer; it grows to the head limits when needed.
const READ_BUF: usize = 8 * 1024;
/// Lingering close: how long a closing connection keeps reading (and discarding) what the
/// client still sends, as nginx's lingering_time does. Not capped by bytes: stopping early
/// while the client still sends would reset the connection under the response.
const LINGER: Duration = Duration::from_secs(2);

pub struct ClientIo {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Read buffer; `rbuf[rpos..]` is received and not yet consumed.
    pub rbuf: Vec<u8>,
    pub rpos: usize,
    /// Client-bound bytes (response heads, small bodies).
    pub wbuf: Vec<u8>,
    /// Upstream-bound bytes (request head and the replayable part of the body).
    pub ubuf: Vec<u8>,
    /// Bytes of requests consumed and of responses written on this connection (access log).
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Why a client read ended without data.
#[derive(Debug)]
pub enum ReadEnd {
    Closed,
    Timeout,
    Io(std::io::Error),
}

impl ClientIo {
    pub fn data(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.bytes_in += n as u64;
        self.rpos += n;
        if self.rpos >= self.rbuf.len() {
            self.rpos = 0;
            self.rbuf.clear();
        }
    }

    /// Reads at least one more byte within `timeout`, keeping unconsumed bytes; `max` bounds
    /// how large the buffer may grow (the head limits while reading a head).
    pub async fn fill(&mut self, timeout: Duration, max: usize) -> Result<usize, ReadEnd> {
        if self.rpos > 0 && self.rbuf.capacity() - self.rbuf.len() < 2048 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < 2048 {
            let want = (self.rbuf.capacity() * 2).clamp(READ_BUF, max.max(READ_BUF));
            if want > self.rbuf.len() {
                self.rbuf.reserve(want - self.rbuf.len());
            }
        }
        let buf = std::mem::take(&mut self.rbuf);
        let (len, cap) = (buf.len(), buf.capacity());
        match monoio::time::timeout(timeout, self.stream.read(buf.slice_mut(len..cap))).await {
            Ok((res, slice)) => {
                self.rbuf = slice.into_inner();
                match res {
                    Ok(0) => Err(ReadEnd::Closed),
                    Ok(n) => Ok(n),
                    Err(e) => Err(ReadEnd::Io(e)),
                }
            }
            Err(_) => Err(ReadEnd::Timeout),
        }
    }

    /// Closes gracefully: stops sending (the client sees the end of the response), then reads
    /// and discards what the client still sends, such as the unread rest of a request body,
    /// until it closes or [`LINGER`] runs out. Closing a socket with unread input resets the
    /// connection, and the reset throws away the part of the response still in the send
    /// buffer (RFC 9112 §9.6).
    async fn linger(&mut self) {
        use monoio::io::AsyncWriteRent;
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.rbuf.clear();
            self.rpos = 0;
            if self.fill(left, READ_BUF).await.is_err() {
                return;
            }
        }
    }

    /// Between requests, gives back buffer space a large request or response needed, so an
    /// idle keep-alive connection holds a few KiB, not the peak of its last exchange.
    fn shrink_idle(&mut self) {
        const KEEP: usize = 16 * 1024;
        if self.rbuf.capacity() > KEEP && self.data().len() <= READ_BUF {
            let mut fresh = Vec::with_capacity(READ_BUF);
            fresh.extend_from_slice(&self.rbuf[self.rpos..]);
            self.rbuf = fresh;
            self.rpos = 0;
        }
        if self.wbuf.capacity() > KEEP {
            self.wbuf = Vec::new();
        }
        if self.ubuf.capacity() > KEEP {
            self.ubuf = Vec::new();
        }
    }

    /// Writes and clears `wbuf`.
    pub async fn flush(&mut self, timeout: Duration) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        match monoio::time::timeout(timeout, self.stream.write_all(buf)).await {
            Ok((res, mut buf)) => {
                if res.is_ok() {
                    self.bytes_out += buf.len() as u64;
                }
                buf.clear();
                self.wbuf = buf;
                res.map(|_| ())
            }
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// Writes `buf[start..end]` from a buffer the caller owns (an upstream read buffer), so
    /// large bodies are not copied; the buffer comes back whatever happened.
    pub async fn write_from(
        &mut self,
        buf: Vec<u8>,
        start: usize,
        end: usize,
        timeout: Duration,
    ) -> (std::io::Result<()>, Option<Vec<u8>>) {
        match monoio::time::timeout(timeout, self.stream.write_all(buf.slice(start..end))).await {
            Ok((res, slice)) => {
                if res.is_ok() {
                    self.bytes_out += (end - start) as u64;
                }
                (res.map(|_| ()), Some(slice.into_inner()))
            }
            Err(_) => (Err(std::io::ErrorKind::TimedOut.into()), None),
        }
    }

    /// Writes a gateway error response (BEHAVIOR.md JSON body), or the gateway's own 204.
    pub async fn send_error(
        &mut self,
        e: &pipeline::Rejection,
        timeout: Duration,
    ) -> std::io::Result<()> {
        let mut extra: smallvec::SmallVec<[(&str, &str); 2]> = smallvec::SmallVec::new();
        extra.push(("X-Request-Id", e.id.as_str()));
        if let Some(allow) = &e.allow {
            extra.push(("Allow", allow.as_str()));
        }
        let start = self.wbuf.len();
        if e.no_content {
            http::write::empty_response(&mut self.wbuf, e.status, &extra, e.close);
            return self.flush(timeout).await;
        }
        let head_len = match &e.body {
            Some(body) => http::write::json_response(
                &mut self.wbuf,
                e.status,
                body,
                e.retry_after,
                &extra,
                e.close,
            ),
            None => http::write::error_response(
                &mut self.wbuf,
                e.status,
                &e.message,
                e.id.as_str(),
                e.retry_after,
                &extra,
                e.close,
            ),
        };
        if e.head_only {
            // RFC 9110 §9.3.2: the head a GET would get, without its body.
            self.wbuf.truncate(start + head_len);
        }
        self.flush(timeout).await
    }
}

/// Serves one accepted connection until it closes.
pub async fn serve(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut conn = ClientIo {
        stream,
        peer,
        rbuf: Vec::with_capacity(READ_BUF),
        rpos: 0,
        wbuf: Vec::new(),
        ubuf: Vec::new(),
        bytes_in: 0,
        bytes_out: 0,
    };
    let mut first = true;
    loop {
        conn.shrink_idle();
        let (bytes_in, bytes_out) = (conn.bytes_in, conn.bytes_out);
        // Limits for reading this head; the config that serves the request is taken once the
        // head is complete, so a reload during the idle wait applies to it.
        let limits = worker.snapshot().active.config.server.limits.clone();
        let head_limits = http::HeadLimits {
            max_request_line: limits.max_request_line,
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
        };
        let head_max = limits.max_request_line + limits.max_header_bytes + 4;
        // Deadline for the whole head, from its first byte (or from accept for the first one).
        let mut deadline = if first || !conn.data().is_empty() {
            Some(Instant::now() + limits.header_timeout)
        } else {
            None
        };

        let prepared = loop {
            if !conn.data().is_empty() {
                let parsed = {
                    let data = &conn.rbuf[conn.rpos..];
                    match http::parse_request(data, &head_limits) {
                        Ok(Some(head)) => {
                            let snap = worker.snapshot();
                            let method =
                                crate::metrics::METHODS[crate::metrics::method_index(head.method)];
                            // Access-log and span fields that the head owns; copied only when
                            // logging or exporting spans.
                            let logged = (snap.active.config.log.access == AccessLog::Json
                                || worker.spans.is_some())
                            .then(|| {
                                let path = head.target.split('?').next().unwrap_or(head.target);
                                (head.method.to_string(), path.to_string())
                            });
                            let p = pipeline::stack::prepare(
                                &head,
                                conn.peer,
                                &worker,
                                &snap,
                                &mut conn.ubuf,
                            );
                            Some(Ok((head.head_len, (p, snap, method, logged))))
                        }
                        Ok(None) => None,
                        Err(e) => Some(Err(e)),
                    }
                };
                match parsed {
                    Some(Ok((head_len, p))) => {
                        conn.consume(head_len);
                        break p;
                    }
                    Some(Err(e)) => {
                        let r = pipeline::Rejection::new(
                            e.status(),
                            e.to_string(),
                            worker.request_id(),
                        )
                        .closing();
                        if conn.send_error(&r, limits.body_timeout).await.is_ok() {
                            // The client may still be sending the rest of what was refused.
                            conn.linger().await;
                        }
                        return;
                    }
                    None => {}
                }
            }
            // Need more bytes.
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => limits.keepalive_timeout,
            };
            let idle = deadline.is_none();
            let res = if idle {
                // Between requests: a drain closes idle connections at once.
                if worker.drain.is_fired() {
                    return;
                }
                monoio::select! {
                    r = conn.fill(wait, head_max) => Some(r),
                    _ = worker.drain.wait() => None,
                }
            } else {
                Some(conn.fill(wait, head_max).await)
            };
            match res {
                None => return,
                Some(Ok(_)) => {
                    if deadline.is_none() {
                        deadline = Some(Instant::now() + limits.header_timeout);
                    }
                }
                Some(Err(ReadEnd::Timeout)) if !idle => {
                    let r = pipeline::Rejection::new(
                        408,
                        "Request header timeout".into(),
                        worker.request_id(),
                    )
                    .closing();
                    let _ = conn.send_error(&r, limits.body_timeout).await;
                    return;
                }
                Some(Err(_)) => return,
            }
        };
        first = false;

        let (prepared, snap, method, logged) = prepared;
        let (id, trace) = match &prepared {
            pipeline::stack::Prepared::Forward(ctx) => (ctx.id, ctx.trace),
            pipeline::stack::Prepared::Answer(r) => (r.id, None),
        };
        let (keep, route, status, started, upstream) = match prepared {
            pipeline::stack::Prepared::Forward(ctx) => {
                let (route, started) = (ctx.route as u32, ctx.started);
                let upstream_id = ctx.upstream;
                let served = pipeline::stack::run(ctx, &mut conn, &worker, &snap).await;
                (
                    served.keep,
                    Some(route),
                    served.status,
                    started,
                    Some((upstream_id, served.upstream)),
                )
            }
            pipeline::stack::Prepared::Answer(rejection) => {
                let started = Instant::now();
                let sent = conn
                    .send_error(&rejection, limits.body_timeout)
                    .await
                    .is_ok();
                (
                    sent && !rejection.close,
                    rejection.routed.map(|(route, _)| route as u32),
                    rejection.status,
                    started,
                    rejection.routed.map(|(_, upstream)| (upstream, None)),
                )
            }
        };
        // A client that left before any response is counted as nginx does: 499.
        let status = if status == 0 { 499 } else { status };
        let elapsed = started.elapsed();
        snap.metrics.request(route, method, status, elapsed);
        if let Some((method, path)) = logged {
            let cfg = &snap.active.config;
            let route = route.map(|r| &cfg.routes[r as usize]);
            // The upstream the request went to (a split's side), and its last attempt.
            let (upstream_name, attempt) = match upstream {
                Some((id, attempt)) => (Some(cfg.upstreams[id].name.as_str()), attempt),
                None => (None, None),
            };
            if let (Some(spans), Some(trace)) = (&worker.spans, &trace) {
                let route_name = route.map(|r| r.name.as_str());
                spans.borrow_mut().record(crate::otlp::Span {
                    trace_id: trace.trace_id_bytes(),
                    span_id: trace.span_id_bytes(),
                    parent_span_id: trace.parent_span_id_bytes(),
                    name: match route_name {
                        Some(r) => format!("{method} {r}"),
                        None => method.clone(),
                    },
                    start_unix_nanos: crate::runtime::clock::unix_nanos(started),
                    end_unix_nanos: crate::runtime::clock::unix_nanos(started + elapsed),
                    method: method.clone(),
                    path: path.clone(),
                    route: route_name.map(Into::into),
                    status,
                    client: conn.peer.ip(),
                    upstream: upstream_name.map(Into::into),
                    worker: worker.id as u32,
                });
            }
            if cfg.log.access == AccessLog::Json {
                worker.access.record(&crate::access_log::Entry {
                    ts: std::time::SystemTime::now(),
                    request_id: id.as_str(),
                    trace_id: trace.as_ref().map(|t| t.trace_id()),
                    client_ip: conn.peer.ip(),
                    method: &method,
                    path: &path,
                    route: route.map(|r| r.name.as_str()),
                    status,
                    upstream: upstream_name,
                    upstream_addr: attempt.map(|(a, _)| a),
                    duration: elapsed,
                    upstream_time: attempt.map(|(_, t)| t),
                    bytes_in: conn.bytes_in - bytes_in,
                    bytes_out: conn.bytes_out - bytes_out,
                    cache: None,
                    worker: worker.id,
                });
            }
        }
        if !keep || worker.drain.is_fired() {
            if status != 499 {
                conn.linger().await;
            }
            return;
        }
    }
}
