//! The upgrade branch of the proxy phase: WebSocket tunnels (RFC 6455 over RFC 9110 §7.8).
//!
//! [`handshake`] (request phase 12) decides what a request's `Upgrade` is: on a route with
//! `websocket = true`, an HTTP/1.1 request that offers `Upgrade: websocket` with the
//! `upgrade` connection option is a WebSocket handshake (RFC 6455 §4.1: GET, no body, a
//! `Sec-WebSocket-Key` of 16 bytes in base64, a `Sec-WebSocket-Version`; a malformed one is a
//! 400); it is forwarded with `Connection: upgrade` and `Upgrade: websocket`, on a fresh
//! upstream connection (`upstream::call`'s `Policy::upgrade`). Every other `Upgrade` (another
//! route, another protocol such as `h2c`, an HTTP/1.0 request) is removed as hop-by-hop and the
//! request is served as an ordinary one.
//!
//! [`run`]: the upstream answered 101. The head is relayed (with `Via` and the response
//! phases' fields), then bytes are piped both ways, starting with what either side sent right
//! behind its head, until both sides have ended: a FIN from one side is passed on as a
//! shutdown of the other side's write half while the other direction keeps flowing. A read or
//! write error on either side, no byte either way for `server.limits.keepalive_timeout`, or a
//! drain past `drain_timeout` ends it at once; both connections are then closed. Any answer
//! other than 101 is an ordinary response ([`super::proxy`]), and the client's connection
//! goes on as HTTP.
//!
//! A tunnel is one request to the logging phase: logged once, when it ends, with status 101,
//! the bytes of the whole exchange both ways and the tunnel's duration. Its connections count
//! in `dispatch_connections_active` on both sides for its life. A reload does not touch it (it
//! keeps the config generation it started on).
//!
//! The one thing to know: each direction is its own pump, and both run at once, so that a
//! peer that stops reading until its own write completes cannot deadlock the tunnel. A pump
//! reads one connection and writes the other, so each connection is read by one pump and
//! written by the other at the same time: `Half` shares a [`Stream`] that way, which the
//! stream layer's transports allow (monoio's `Split` contract; see its SAFETY note). The pumps
//! use only `read`, `write` and `shutdown`, so a tunnel works over any [`Stream`].

use std::cell::{Cell, UnsafeCell};
use std::ops::Range;
use std::pin::pin;
use std::time::{Duration, Instant};

use base64::Engine;
use monoio::buf::IoBuf;

use super::client::ClientIo;
use super::ctx::{RequestCtx, RequestId};
use super::headers::{connection_tokens, write_response_head, ConnDirective, OutFraming};
use super::phase::framing::Framing;
use super::phase::{Destination, Flow};
use super::proxy::Served;
use super::respond;
use super::Response;
use crate::http::{BodyKind, Header, RequestHead, ResponseHead, Version};
use crate::io::{BufConn, Stream};
use crate::state::latch::Latch;
use crate::state::worker::{Snapshot, Worker};
use crate::upstream::call::UpstreamResponse;

/// Bytes a pump reads at a time (each direction has its own buffer).
const PIPE_BUF: usize = 16 * 1024;

/// Request phase 12's check: whether the request is a WebSocket upgrade to forward as one.
/// Continue(true): forward `Upgrade: websocket`; Continue(false): an ordinary request (any
/// `Upgrade` is dropped as hop-by-hop); Respond: a 400 for a malformed handshake.
pub fn handshake(
    head: &RequestHead<'_>,
    headers: &[Header<'_>],
    to: &Destination<'_>,
    framing: &Framing,
    id: &RequestId,
) -> Flow<bool> {
    // RFC 9110 §7.8: a server ignores `Upgrade` in an HTTP/1.0 request, and one that is not
    // named in `Connection`.
    if !to.route.websocket || head.version != Version::Http11 {
        return Flow::Continue(false);
    }
    let offers_websocket = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        // A protocol is `name[/version]` (RFC 9110 §7.8).
        .map(|p| {
            p.trim_ascii()
                .split(|&b| b == b'/')
                .next()
                .unwrap_or_default()
        })
        .any(|name| name.eq_ignore_ascii_case(b"websocket"));
    let listed = connection_tokens(headers)
        .iter()
        .any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    if !offers_websocket || !listed {
        return Flow::Continue(false);
    }
    match malformed(head, headers, framing) {
        None => Flow::Continue(true),
        Some(why) => {
            let mut r = Response::error(400, format!("Invalid WebSocket handshake: {why}"), *id);
            r.routed = Some(to.ids());
            Flow::Respond(framing.close_if_body(r))
        }
    }
}

/// What makes a WebSocket opening handshake invalid (RFC 6455 §4.1, §4.2.1), if anything.
/// The version itself is the upstream's to accept or refuse (426 with the versions it speaks).
fn malformed(
    head: &RequestHead<'_>,
    headers: &[Header<'_>],
    framing: &Framing,
) -> Option<&'static str> {
    if head.method != "GET" {
        return Some("the method must be GET (RFC 6455 §4.1)");
    }
    if framing.body != BodyKind::None {
        return Some("an upgrade request has no body");
    }
    let key = match only(headers, "sec-websocket-key") {
        Ok(Some(key)) => key,
        Ok(None) => return Some("Sec-WebSocket-Key is missing"),
        Err(()) => return Some("Sec-WebSocket-Key appears more than once"),
    };
    // RFC 6455 §4.1: a nonce of 16 random bytes, base64-encoded.
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.trim_ascii());
    if decoded.map_or(true, |nonce| nonce.len() != 16) {
        return Some("Sec-WebSocket-Key must be 16 bytes in base64");
    }
    match only(headers, "sec-websocket-version") {
        // RFC 6455 §4.1: 1*DIGIT, "0".."255".
        Ok(Some(v)) if version(v.trim_ascii()).is_some() => None,
        Ok(Some(_)) => Some("Sec-WebSocket-Version must be a number from 0 to 255"),
        Ok(None) => Some("Sec-WebSocket-Version is missing"),
        Err(()) => Some("Sec-WebSocket-Version appears more than once"),
    }
}

/// The value of `name` when it appears once; Err when it appears more than once.
fn only<'h>(headers: &[Header<'h>], name: &str) -> Result<Option<&'h [u8]>, ()> {
    let mut found = None;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        if found.replace(h.value).is_some() {
            return Err(());
        }
    }
    Ok(found)
}

fn version(v: &[u8]) -> Option<u8> {
    if v.is_empty() || v.len() > 3 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Writes the client's `101 Switching Protocols` head for the upstream's: its end-to-end
/// fields (`Sec-WebSocket-Accept`, `Sec-WebSocket-Protocol`, ...), `Via`, the response
/// phases' fields, and the upgrade's own `Connection` and `Upgrade`.
pub fn switching_head(wbuf: &mut Vec<u8>, head: &ResponseHead<'_>, ctx: &RequestCtx) {
    let rate = ctx.rate.map(|h| h.text());
    let added = respond::phases(&respond::Answering {
        id: &ctx.id,
        rate: rate.as_ref(),
        cache: None,
    });
    wbuf.clear();
    write_response_head(
        wbuf,
        &super::headers::ResponseHeadOut {
            status: 101,
            reason: head.reason,
            headers: &head.headers,
            framing: OutFraming::NoBody,
            added: &added,
            connection: ConnDirective::Upgrade,
        },
    );
}

/// Relays the upstream's 101 (its head is in `conn.wbuf`, written by [`switching_head`]) and
/// pipes the two connections into each other until the tunnel ends. The client connection
/// is closed after it (`keep` is false).
pub async fn run(
    resp: UpstreamResponse<'_>,
    conn: &mut ClientIo,
    worker: &Worker,
    snap: &Snapshot,
) -> Served {
    let limits = &snap.active.config.server.limits;
    let (addr, began, verdict) = (resp.addr, resp.began, resp.verdict());
    let mut up = resp.into_tunnel();
    let upstream = Some((addr, began.elapsed()));
    let ended = |status| Served {
        keep: false,
        status,
        upstream,
        verdict,
        cache: None,
    };
    if conn.flush(limits.body_timeout).await.is_err() {
        // The client left before the switch: nothing was tunnelled (counted as 499).
        return ended(0);
    }
    let end = pipe(
        &mut conn.io,
        &mut up.io,
        limits.keepalive_timeout,
        &worker.drain_expired,
    )
    .await;
    crate::debug!("tunnel {} to {addr}: {end}", conn.peer);
    ended(101)
}

/// Why a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Both sides ended their sending (each FIN passed on to the other).
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// The drain's `drain_timeout` passed.
    Drained,
    /// A read or write on the client's side failed.
    Client(std::io::ErrorKind),
    /// A read or write on the upstream's side failed.
    Upstream(std::io::ErrorKind),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => f.write_str("closed by both sides"),
            End::Idle => f.write_str("idle timeout"),
            End::Drained => f.write_str("closed by the drain"),
            End::Client(e) => write!(f, "client side failed ({e:?})"),
            End::Upstream(e) => write!(f, "upstream side failed ({e:?})"),
        }
    }
}

/// Pipes `client` and `upstream` into each other, each connection's buffered bytes first,
/// until both directions have ended, either side fails, nothing moves for `idle`, or
/// `expired` fires. Bytes read from and written to each side are added to its counts.
pub async fn pipe(
    client: &mut BufConn,
    upstream: &mut BufConn,
    idle: Duration,
    expired: &Latch,
) -> End {
    let last = Cell::new(Instant::now());
    let (c_stream, c_buf, c_pending, c_in, c_out) = parts(client);
    let (u_stream, u_buf, u_pending, u_in, u_out) = parts(upstream);
    let (c, u) = (
        Half(UnsafeCell::from_mut(c_stream)),
        Half(UnsafeCell::from_mut(u_stream)),
    );
    let mut up = pin!(pump(c, u, c_buf, c_pending, c_in, u_out, &last));
    let mut down = pin!(pump(u, c, u_buf, u_pending, u_in, c_out, &last));
    let mut quiet = pin!(quiet_for(&last, idle));
    let mut expired = pin!(expired.wait());
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        monoio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(Failed::Read(e)) => return End::Client(e),
                Err(Failed::Write(e)) => return End::Upstream(e),
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(Failed::Read(e)) => return End::Upstream(e),
                Err(Failed::Write(e)) => return End::Client(e),
            },
            _ = &mut quiet => return End::Idle,
            _ = &mut expired => return End::Drained,
        }
    }
    End::Closed
}

/// A connection's stream, its read buffer with the received bytes not yet consumed (taken:
/// counted as read now), and its byte counts.
fn parts(c: &mut BufConn) -> (&mut Stream, Vec<u8>, Range<usize>, &mut u64, &mut u64) {
    let mut buf = std::mem::take(&mut c.rbuf);
    let pending = c.rpos..buf.len();
    c.bytes_in += pending.len() as u64;
    c.rpos = 0;
    if pending.is_empty() {
        buf.clear();
    }
    if buf.capacity() < PIPE_BUF {
        buf.reserve(PIPE_BUF - buf.len());
    }
    (
        &mut c.stream,
        buf,
        pending,
        &mut c.bytes_in,
        &mut c.bytes_out,
    )
}

/// Resolves once no byte has moved (`last`) for `idle`.
async fn quiet_for(last: &Cell<Instant>, idle: Duration) {
    loop {
        let due = last.get() + idle;
        let now = Instant::now();
        if now >= due {
            return;
        }
        monoio::time::sleep(due - now).await;
    }
}

/// Why a pump stopped early: the failed side's error.
enum Failed {
    Read(std::io::ErrorKind),
    Write(std::io::ErrorKind),
}

/// One direction: writes `buf[pending]` to `to`, then reads from `from` and writes what came
/// until `from` ends its sending, which is passed on as a shutdown of `to`'s write half.
async fn pump(
    from: Half<'_>,
    to: Half<'_>,
    mut buf: Vec<u8>,
    mut pending: Range<usize>,
    read: &mut u64,
    written: &mut u64,
    last: &Cell<Instant>,
) -> Result<(), Failed> {
    loop {
        while !pending.is_empty() {
            let (res, slice) = to.write(buf.slice(pending.clone())).await;
            buf = slice.into_inner();
            match res {
                Ok(0) => return Err(Failed::Write(std::io::ErrorKind::WriteZero)),
                Ok(n) => {
                    pending.start += n;
                    *written += n as u64;
                    last.set(Instant::now());
                }
                Err(e) => return Err(Failed::Write(e.kind())),
            }
        }
        buf.clear();
        let (res, back) = from.read(buf).await;
        buf = back;
        match res {
            Ok(0) => {
                // RFC 9112 §9.6 half-close: the other side sees the end of this one's bytes
                // and may still answer.
                return to.shutdown().await.map_err(|e| Failed::Write(e.kind()));
            }
            Ok(n) => {
                pending = 0..n;
                *read += n as u64;
                last.set(Instant::now());
            }
            Err(e) => return Err(Failed::Read(e.kind())),
        }
    }
}

/// One connection's stream as a tunnel shares it: the pump that reads it and the pump that
/// writes it each hold a `Half`, and each has at most one operation in flight on it.
#[derive(Clone, Copy)]
struct Half<'s>(&'s UnsafeCell<Stream>);

// Every transport of the stream layer must allow a read and a write in flight at once (monoio's
// `Split`): a new `Stream` variant's type goes here too.
const _: fn() = || {
    fn split<T: monoio::io::Split>() {}
    split::<monoio::net::TcpStream>();
    split::<crate::io::tls::ServerTls>();
    split::<crate::io::tls::ClientTls>();
};

impl Half<'_> {
    // SAFETY (the three methods): the `&mut Stream` each one makes lives while its one
    // operation is in flight; the other pump may hold one for the other direction meanwhile.
    // The stream is owned by the tunnel's caller for longer than both pumps, and the runtime is
    // single-threaded (`Half` is not `Send`). Overlapping a read and a write is what monoio's
    // `Split` contract allows for every transport of `Stream` (asserted above): a read and a
    // write are independent operations that touch disjoint state (a TCP socket's two
    // directions; a TLS stream's read and write buffers), exactly as monoio's own split halves
    // use them. No two reads, or two writes, ever overlap: each pump awaits its operation
    // before it starts the next.
    async fn read(self, buf: Vec<u8>) -> monoio::BufResult<usize, Vec<u8>> {
        let stream = unsafe { &mut *self.0.get() };
        stream.read(buf).await
    }

    async fn write<B: IoBuf>(self, buf: B) -> monoio::BufResult<usize, B> {
        let stream = unsafe { &mut *self.0.get() };
        stream.write(buf).await
    }

    async fn shutdown(self) -> std::io::Result<()> {
        let stream = unsafe { &mut *self.0.get() };
        stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::phase::testing::{config, head, id, message};
    use crate::pipeline::phase::{framing, Flow};
    use std::io::{Read, Write};

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// The handshake phase on `raw` for route 0 of a config whose route has `websocket`.
    fn decide(websocket: bool, raw: &str) -> Flow<bool> {
        let cfg = config(&format!(
            "[upstreams.u]\nendpoints = [\"http://127.0.0.1:9\"]\n\n[routes.r]\npaths = [\"/\"]\nupstream = \"u\"\nwebsocket = {websocket}\n"
        ));
        let h = head(raw.as_bytes());
        let Flow::Continue(framing) = framing::run(h.version, &h.headers, &id()) else {
            panic!("framing answered");
        };
        let to = Destination {
            route_id: 0,
            route: &cfg.routes[0],
            matched: 1,
            upstream_id: 0,
            upstream: &cfg.upstreams[0],
        };
        handshake(&h, &h.headers, &to, &framing, &id())
    }

    fn upgrade(extra: &str) -> String {
        format!(
            "GET /chat HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n{extra}\r\n"
        )
    }

    fn valid() -> String {
        upgrade(&format!(
            "Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
        ))
    }

    #[test]
    fn a_websocket_handshake_on_a_websocket_route_is_an_upgrade() {
        assert!(matches!(decide(true, &valid()), Flow::Continue(true)));
        // Protocol names are case-insensitive, and a version suffix is allowed.
        let mixed = valid().replace("Upgrade: websocket", "Upgrade: h2c, WebSocket/13");
        assert!(matches!(decide(true, &mixed), Flow::Continue(true)));
    }

    #[test]
    fn other_upgrades_are_ordinary_requests() {
        // Not a websocket route.
        assert!(matches!(decide(false, &valid()), Flow::Continue(false)));
        // Another protocol.
        let h2c = valid().replace("Upgrade: websocket", "Upgrade: h2c");
        assert!(matches!(decide(true, &h2c), Flow::Continue(false)));
        // `upgrade` not listed in Connection (RFC 9110 §7.8).
        let unlisted = valid().replace("Connection: keep-alive, Upgrade", "Connection: keep-alive");
        assert!(matches!(decide(true, &unlisted), Flow::Continue(false)));
        // HTTP/1.0.
        let old = valid().replace("HTTP/1.1", "HTTP/1.0");
        assert!(matches!(decide(true, &old), Flow::Continue(false)));
    }

    #[test]
    fn a_malformed_handshake_is_a_400_that_names_the_fault() {
        let cases = [
            (
                valid().replace("GET", "POST"),
                "Invalid WebSocket handshake: the method must be GET (RFC 6455 §4.1)",
            ),
            (
                upgrade("Sec-WebSocket-Version: 13\r\n"),
                "Invalid WebSocket handshake: Sec-WebSocket-Key is missing",
            ),
            (
                upgrade("Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n"),
                "Invalid WebSocket handshake: Sec-WebSocket-Key must be 16 bytes in base64",
            ),
            (
                upgrade(&format!(
                    "Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
                )),
                "Invalid WebSocket handshake: Sec-WebSocket-Key appears more than once",
            ),
            (
                upgrade(&format!("Sec-WebSocket-Key: {KEY}\r\n")),
                "Invalid WebSocket handshake: Sec-WebSocket-Version is missing",
            ),
            (
                upgrade(&format!(
                    "Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 1000\r\n"
                )),
                "Invalid WebSocket handshake: Sec-WebSocket-Version must be a number from 0 to 255",
            ),
            (
                upgrade(&format!(
                    "Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nContent-Length: 2\r\n"
                )),
                "Invalid WebSocket handshake: an upgrade request has no body",
            ),
        ];
        for (raw, want) in cases {
            match decide(true, &raw) {
                Flow::Respond(r) => {
                    assert_eq!((r.status, message(&r)), (400, want), "{raw}");
                    assert_eq!(r.routed, Some((0, 0)));
                }
                Flow::Continue(up) => panic!("continued ({up}) for {raw}"),
            }
        }
    }

    /// Runs `pipe` between two loopback connections whose far ends are blocking sockets handed
    /// to `client` and `upstream` on their own threads; returns how the tunnel ended and the
    /// counts of the gateway's client-side connection (in, out).
    fn tunnel<C, U>(idle: Duration, buffered: &[u8], client: C, upstream: U) -> (End, u64, u64)
    where
        C: FnOnce(std::net::TcpStream) + Send + 'static,
        U: FnOnce(std::net::TcpStream) + Send + 'static,
    {
        let listen = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (cl, ul) = (listen(), listen());
        let (caddr, uaddr) = (cl.local_addr().unwrap(), ul.local_addr().unwrap());
        let ct = std::thread::spawn(move || client(std::net::TcpStream::connect(caddr).unwrap()));
        let ut = std::thread::spawn(move || upstream(ul.accept().unwrap().0));
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let buffered = buffered.to_vec();
        let out = rt.block_on(async move {
            let (accepted, _) = monoio::net::TcpListener::from_std(cl)
                .unwrap()
                .accept()
                .await
                .unwrap();
            let mut c = BufConn::new(Stream::accepted(accepted), 1024);
            let mut u = BufConn::new(Stream::connect(uaddr).await.unwrap(), 1024);
            c.rbuf.extend_from_slice(&buffered);
            let latch = Latch::default();
            let end = pipe(&mut c, &mut u, idle, &latch).await;
            (end, c.bytes_in, c.bytes_out)
        });
        ct.join().unwrap();
        ut.join().unwrap();
        out
    }

    /// Bytes flow both ways (the client's buffered ones first); a FIN from one side reaches
    /// the other as the end of its input while the other direction keeps flowing.
    #[test]
    fn pipe_carries_both_ways_and_passes_half_closes_on() {
        let (end, bytes_in, bytes_out) = tunnel(
            Duration::from_secs(10),
            b"early",
            |mut s| {
                s.write_all(b"-ping").unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                // The upstream answers after the client's FIN.
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                assert_eq!(got, b"pong after your end");
            },
            |mut s| {
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                assert_eq!(got, b"early-ping");
                s.write_all(b"pong after your end").unwrap();
            },
        );
        assert_eq!(end, End::Closed);
        assert_eq!((bytes_in, bytes_out), (10, 19));
    }

    /// Nothing moving for the idle time ends the tunnel, and both far ends see it closed.
    #[test]
    fn pipe_ends_an_idle_tunnel() {
        let closed = |mut s: std::net::TcpStream| {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::new();
            assert!(s.read_to_end(&mut got).is_ok(), "closed, not timed out");
        };
        let (end, _, _) = tunnel(Duration::from_millis(100), b"", closed, closed);
        assert_eq!(end, End::Idle);
    }
}
