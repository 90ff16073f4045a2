//! One client connection: keep-alive, head limits and timeouts, pipelining in order.
//!
//! Owns the connection loop [`serve`] over a [`ClientIo`]:
//! wait for a request head (keep-alive timeout while idle, header timeout once the first byte
//! arrives), parse it zero-copy, hand it to the pipeline, repeat. Pipelined requests are read
//! from the same buffer after the previous response is complete, so responses go out in order.
//!
//! Invariant: when the pipeline returns "keep alive", the request's body has been consumed
//! exactly, so the next bytes in the buffer are the next request's.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::io::Stream;

use crate::http;
use crate::io::ReadEnd;
use crate::pipeline;
use crate::pipeline::client::ClientIo;
use crate::state::worker::Worker;

/// What waiting for the next request on a connection produced.
enum Next {
    /// A parsed head, run through the synchronous request phases (its bytes are consumed).
    Request(Parsed),
    /// The head could not be read (malformed, over a limit, too slow): answer and close.
    Refused(pipeline::Response),
    /// The client closed or went idle past the keep-alive timeout, or a drain began.
    Gone,
}

/// A request whose head has been read and handed to the pipeline.
struct Parsed {
    prepared: pipeline::stack::Prepared,
    snap: Rc<crate::state::worker::Snapshot>,
    method: &'static str,
    /// Method and path as received, copied only when the access log or span export is on.
    text: Option<(String, String)>,
}

/// Serves one accepted connection until it closes.
pub async fn serve(worker: Rc<Worker>, stream: Stream, peer: SocketAddr) {
    let mut conn = ClientIo::new(stream, peer);
    let mut first = true;
    loop {
        conn.shrink_idle();
        // What the last request accepted does not carry over (a refused head has none).
        conn.offer = None;
        let (bytes_in, bytes_out) = (conn.io.bytes_in, conn.io.bytes_out);
        // Limits for reading this head; the config that serves the request is taken once the
        // head is complete, so a reload during the idle wait applies to it.
        let limits = worker.snapshot().active.config.server.limits.clone();
        let next = next_request(&mut conn, &worker, &limits, first).await;
        first = false;
        let started = Instant::now();
        let parsed = match next {
            Next::Gone => return,
            Next::Refused(r) => {
                // Refused heads go through the same answer and logging phases as any request.
                let sent = conn.send_response(&r, limits.body_timeout).await.is_ok();
                let snap = worker.snapshot();
                let trace = worker.spans.is_some().then(|| {
                    pipeline::trace::TraceContext::continue_or_start(None, || worker.rand())
                });
                let record = pipeline::log::Record {
                    id: &r.id,
                    trace: trace.as_ref(),
                    method: "",
                    path: "",
                    route: None,
                    upstream: None,
                    attempt: None,
                    status: r.status,
                    started,
                    client: conn.peer.ip(),
                    bytes_in: conn.io.bytes_in - bytes_in,
                    bytes_out: conn.io.bytes_out - bytes_out,
                    cache: None,
                };
                pipeline::log::log(&pipeline::log::Sinks::of(&worker, &snap), &record);
                if sent {
                    // The client may still be sending the rest of what was refused.
                    conn.linger().await;
                }
                return;
            }
            Next::Request(p) => p,
        };
        let Parsed {
            prepared,
            snap,
            method,
            text,
        } = parsed;
        let (id, trace) = match &prepared {
            pipeline::stack::Prepared::Forward(ctx) => (ctx.id, ctx.trace),
            pipeline::stack::Prepared::Answer(r) => (r.id, r.trace),
            pipeline::stack::Prepared::Aggregate(p) => (p.id, p.trace),
        };
        let (keep, route, status, started, upstream, attempt, cache) = match prepared {
            pipeline::stack::Prepared::Forward(ctx) => {
                let (route, started, upstream) = (ctx.route, ctx.started, ctx.upstream);
                let served = pipeline::stack::run(ctx, &mut conn, &worker, &snap).await;
                (
                    served.keep,
                    Some(route),
                    served.status,
                    started,
                    Some(upstream),
                    served.upstream,
                    served.cache,
                )
            }
            pipeline::stack::Prepared::Aggregate(p) => {
                let (route, started) = (p.route, p.started);
                let served = pipeline::aggregate::serve(p, &mut conn, &worker, &snap).await;
                (
                    served.keep,
                    Some(route),
                    served.status,
                    started,
                    None,
                    None,
                    None,
                )
            }
            pipeline::stack::Prepared::Answer(answer) => {
                let sent = conn
                    .send_response(&answer, limits.body_timeout)
                    .await
                    .is_ok();
                (
                    sent && !answer.close,
                    answer.routed.map(|(route, _)| route),
                    answer.status,
                    started,
                    answer.routed.map(|(_, upstream)| upstream),
                    None,
                    answer.cache.map(|m| m.result),
                )
            }
        };
        // A client that left before any response is counted as nginx does: 499.
        let status = if status == 0 { 499 } else { status };
        let (log_method, log_path) = match &text {
            Some((m, p)) => (m.as_str(), p.as_str()),
            None => (method, ""),
        };
        let record = pipeline::log::Record {
            id: &id,
            trace: trace.as_ref(),
            method: log_method,
            path: log_path,
            route,
            upstream,
            attempt,
            status,
            started,
            client: conn.peer.ip(),
            bytes_in: conn.io.bytes_in - bytes_in,
            bytes_out: conn.io.bytes_out - bytes_out,
            cache,
        };
        pipeline::log::log(&pipeline::log::Sinks::of(&worker, &snap), &record);
        if !keep || worker.drain.is_fired() {
            // A tunnel (101) ended on its own terms: both sides finished, or it was closed
            // (idle, drain, a failed side); no answer is left in flight to linger for.
            if status != 499 && status != 101 {
                conn.linger().await;
            }
            return;
        }
    }
}

/// Waits for the next request head (keep-alive timeout while idle, header timeout from its
/// first byte), parses it and runs the synchronous request phases on it while it is still
/// borrowed from the read buffer.
async fn next_request(
    conn: &mut ClientIo,
    worker: &Rc<Worker>,
    limits: &crate::config::model::Limits,
    first: bool,
) -> Next {
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
    loop {
        if !conn.data().is_empty() {
            let parsed = {
                let data = conn.io.data();
                match http::parse_request(data, &head_limits) {
                    Ok(Some(head)) => {
                        let snap = worker.snapshot();
                        let method =
                            crate::metrics::METHODS[crate::metrics::method_index(head.method)];
                        let text =
                            pipeline::log::Sinks::of(worker, &snap)
                                .wants_text()
                                .then(|| {
                                    let path = head.target.split('?').next().unwrap_or(head.target);
                                    (head.method.to_string(), path.to_string())
                                });
                        conn.offer = pipeline::compress::offer(
                            &head,
                            snap.active.config.compression.as_ref(),
                        );
                        let prepared = pipeline::stack::prepare(
                            &head,
                            conn.peer,
                            conn.tls,
                            worker,
                            &snap,
                            &mut conn.ubuf,
                        );
                        Some(Ok((
                            head.head_len,
                            Parsed {
                                prepared,
                                snap,
                                method,
                                text,
                            },
                        )))
                    }
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                }
            };
            match parsed {
                Some(Ok((head_len, p))) => {
                    conn.consume(head_len);
                    return Next::Request(p);
                }
                Some(Err(e)) => {
                    let r = pipeline::Response::error(
                        e.status(),
                        e.to_string(),
                        pipeline::ctx::RequestId::new_for(worker),
                    );
                    return Next::Refused(r.closing());
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
                return Next::Gone;
            }
            monoio::select! {
                r = conn.fill(wait, head_max) => Some(r),
                _ = worker.drain.wait() => None,
            }
        } else {
            Some(conn.fill(wait, head_max).await)
        };
        match res {
            None => return Next::Gone,
            Some(Ok(_)) => {
                if deadline.is_none() {
                    deadline = Some(Instant::now() + limits.header_timeout);
                }
            }
            Some(Err(ReadEnd::Timeout)) if !idle => {
                let r = pipeline::Response::error(
                    408,
                    "Request header timeout",
                    pipeline::ctx::RequestId::new_for(worker),
                );
                return Next::Refused(r.closing());
            }
            Some(Err(_)) => return Next::Gone,
        }
    }
}
