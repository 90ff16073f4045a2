//! A programmable HTTP/1.1 upstream server on a real loopback socket, one std thread per
//! connection.
//!
//! `Upstream::start(|req| Reply::...)` binds `127.0.0.1:0` and answers every request with what
//! the handler returns. It keeps what a test needs to prove the gateway's behaviour from the
//! upstream's side: the number of TCP connections it accepted (pool reuse), how many are open,
//! a log of every request it received (raw head, method, target, headers, body), and the total
//! body bytes received so far (streaming). `GET /healthz` is answered without calling the
//! handler and without being logged: `200 ok` by default, or the status set with
//! `set_health` (switchable while the gateway runs, for active health checks); `last_healthz`
//! keeps the most recent one.
//!
//! Replies can be well-formed (Content-Length, chunked, close-delimited, generated bodies of any
//! size, slow bodies, a body paused on a `Gate`, 1xx interim responses first), or deliberately
//! broken (`Reply::raw`), or no reply at all (`Reply::drop_connection`, `Reply::reset`).

use super::wire::{self, body_kind, parse_head, BodyKind, Headers, WireError, WireReader};
use serde_json::{json, Value};
use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// 1-based number of the TCP connection it arrived on (in accept order).
    pub conn: usize,
    pub method: String,
    /// The request-target exactly as received (path and query).
    pub target: String,
    pub version: String,
    pub headers: Headers,
    /// The decoded body (empty when the upstream discards bodies; see `body_len`).
    pub body: Vec<u8>,
    pub body_len: u64,
    /// Whether the body arrived with chunked framing.
    pub chunked: bool,
    pub trailers: Headers,
    /// The head exactly as received, through the empty line.
    pub head_raw: Vec<u8>,
}

impl Request {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query (without '?'), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        wire::header_all(&self.headers, name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo document: what `Reply::echo` sends back.
    pub fn to_json(&self) -> Value {
        json!({
            "method": self.method,
            "target": self.target,
            "path": self.path(),
            "version": self.version,
            "headers": self.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
            "body": self.body_text(),
            "body_len": self.body_len,
            "chunked": self.chunked,
            "conn": self.conn,
        })
    }
}

/// A one-shot latch a test opens to let a paused reply continue.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    pub fn open(&self) {
        let (lock, cv) = &*self.0;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    /// Waits until opened or `timeout` passes; true if opened.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (lock, cv) = &*self.0;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

#[derive(Debug, Clone)]
enum ReplyBody {
    Fixed(Vec<u8>),
    Chunked(Vec<Vec<u8>>),
    UntilClose(Vec<u8>),
    /// `len` bytes of a repeating pattern, written in 64 KiB pieces with Content-Length.
    Generated(u64),
}

#[derive(Clone)]
enum ReplyKind {
    Respond,
    Raw(Vec<u8>),
    Drop,
    Reset,
}

/// What the upstream does with one request. Build with a constructor, adjust with the modifiers.
#[derive(Clone)]
pub struct Reply {
    kind: ReplyKind,
    status: u16,
    reason: Option<String>,
    headers: Headers,
    body: ReplyBody,
    interim: Vec<Vec<u8>>,
    delay: Duration,
    pieces: usize,
    piece_delay: Duration,
    gate: Option<Gate>,
    close: bool,
}

/// The pattern generated bodies repeat (so a reader can check content cheaply).
pub const PATTERN: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";

fn reason_for(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

impl Reply {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            kind: ReplyKind::Respond,
            status,
            reason: None,
            headers: Vec::new(),
            body: ReplyBody::Fixed(Vec::new()),
            interim: Vec::new(),
            delay: Duration::ZERO,
            pieces: 1,
            piece_delay: Duration::ZERO,
            gate: None,
            close: false,
        }
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply::status(status)
            .header("Content-Type", "text/plain")
            .body(body.as_bytes())
    }

    pub fn json(status: u16, value: &Value) -> Reply {
        Reply::status(status)
            .header("Content-Type", "application/json")
            .body(value.to_string().as_bytes())
    }

    /// 200 with the JSON of what was received (see `Request::to_json`).
    pub fn echo(req: &Request) -> Reply {
        Reply::json(200, &req.to_json())
    }

    /// These exact bytes, then close: for broken framing and hand-made responses.
    pub fn raw(bytes: &[u8]) -> Reply {
        Reply {
            kind: ReplyKind::Raw(bytes.to_vec()),
            close: true,
            ..Reply::status(200)
        }
    }

    /// Close the connection (FIN) without sending anything.
    pub fn drop_connection() -> Reply {
        Reply {
            kind: ReplyKind::Drop,
            ..Reply::status(200)
        }
    }

    /// Reset the connection (RST, via SO_LINGER 0) without sending anything.
    pub fn reset() -> Reply {
        Reply {
            kind: ReplyKind::Reset,
            ..Reply::status(200)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn reason(mut self, reason: &str) -> Reply {
        self.reason = Some(reason.to_string());
        self
    }

    /// Content-Length body.
    pub fn body(mut self, body: &[u8]) -> Reply {
        self.body = ReplyBody::Fixed(body.to_vec());
        self
    }

    /// Chunked body, one chunk per element.
    pub fn chunked(mut self, chunks: &[&[u8]]) -> Reply {
        self.body = ReplyBody::Chunked(chunks.iter().map(|c| c.to_vec()).collect());
        self
    }

    /// Body without Content-Length or Transfer-Encoding, delimited by closing the connection.
    pub fn until_close(mut self, body: &[u8]) -> Reply {
        self.body = ReplyBody::UntilClose(body.to_vec());
        self.close = true;
        self
    }

    /// A Content-Length body of `len` bytes of `PATTERN`, streamed.
    pub fn generated(mut self, len: u64) -> Reply {
        self.body = ReplyBody::Generated(len);
        self
    }

    /// Wait this long before sending anything.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Send a Content-Length or close-delimited body in `pieces` writes with `pause` between
    /// them (chunked bodies pause between chunks).
    pub fn slow_body(mut self, pieces: usize, pause: Duration) -> Reply {
        self.pieces = pieces.max(1);
        self.piece_delay = pause;
        self
    }

    /// After the head and the first body piece (or chunk), wait for `gate` (at most 10 s).
    pub fn gate(mut self, gate: &Gate) -> Reply {
        self.gate = Some(gate.clone());
        self
    }

    /// Send this raw interim (1xx) head first, e.g. `"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"`.
    pub fn interim(mut self, raw: &str) -> Reply {
        self.interim.push(raw.as_bytes().to_vec());
        self
    }

    /// Close the connection after the response (without adding `Connection: close`).
    pub fn close(mut self) -> Reply {
        self.close = true;
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync + 'static;

struct Slot {
    stream: TcpStream,
    idle: AtomicBool,
    /// Shut down by `close_idle_connections` (its thread may not have noticed yet).
    closed: AtomicBool,
}

struct Inner {
    handler: Box<Handler>,
    discard_bodies: bool,
    stop: AtomicBool,
    accepted: AtomicUsize,
    open: AtomicUsize,
    healthz: AtomicUsize,
    /// The status `GET /healthz` answers.
    health: AtomicU16,
    last_healthz: Mutex<Option<Request>>,
    body_bytes: AtomicU64,
    requests: Mutex<Vec<Request>>,
    errors: Mutex<Vec<String>>,
    slots: Mutex<Vec<Arc<Slot>>>,
}

/// Options for `Upstream`; `Upstream::start` uses the defaults.
#[derive(Default)]
pub struct UpstreamBuilder {
    discard_bodies: bool,
    addr: Option<SocketAddr>,
}

impl UpstreamBuilder {
    /// Count request body bytes but do not keep them (for very large uploads).
    pub fn discard_bodies(mut self) -> UpstreamBuilder {
        self.discard_bodies = true;
        self
    }

    /// Bind this address instead of 127.0.0.1:0 (e.g. to restart an upstream on a known port).
    pub fn bind(mut self, addr: SocketAddr) -> UpstreamBuilder {
        self.addr = Some(addr);
        self
    }

    pub fn start<F>(self, handler: F) -> Upstream
    where
        F: Fn(&Request) -> Reply + Send + Sync + 'static,
    {
        let bind = self
            .addr
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener =
            TcpListener::bind(bind).unwrap_or_else(|e| panic!("upstream bind {bind}: {e}"));
        let addr = listener.local_addr().expect("upstream local_addr");
        let inner = Arc::new(Inner {
            handler: Box::new(handler),
            discard_bodies: self.discard_bodies,
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            healthz: AtomicUsize::new(0),
            health: AtomicU16::new(200),
            last_healthz: Mutex::new(None),
            body_bytes: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            slots: Mutex::new(Vec::new()),
        });
        let acc_inner = Arc::clone(&inner);
        let accept = thread::Builder::new()
            .name(format!("upstream-{}", addr.port()))
            .spawn(move || accept_loop(listener, acc_inner))
            .expect("spawn upstream accept thread");
        Upstream {
            addr,
            inner,
            accept: Some(accept),
        }
    }
}

/// A running test upstream; stops (and closes its connections) on drop.
pub struct Upstream {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Upstream {
    pub fn builder() -> UpstreamBuilder {
        UpstreamBuilder::default()
    }

    /// Starts an upstream that answers every request with `handler(&request)`.
    pub fn start<F>(handler: F) -> Upstream
    where
        F: Fn(&Request) -> Reply + Send + Sync + 'static,
    {
        UpstreamBuilder::default().start(handler)
    }

    /// An upstream answering every request with its echo (`Reply::echo`).
    pub fn echo() -> Upstream {
        Upstream::start(Reply::echo)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for `endpoints`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections currently open (closed by either side are not counted).
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// Every request received so far (not `/healthz`), in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.inner.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.inner.requests).len()
    }

    /// The most recent request; panics if there is none.
    pub fn last_request(&self) -> Request {
        lock(&self.inner.requests)
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("upstream {} received no request", self.addr))
    }

    /// Request body bytes received so far, over all requests, counted as they arrive.
    pub fn body_bytes(&self) -> u64 {
        self.inner.body_bytes.load(Ordering::SeqCst)
    }

    /// `GET /healthz` requests answered.
    pub fn healthz_count(&self) -> usize {
        self.inner.healthz.load(Ordering::SeqCst)
    }

    /// Makes `GET /healthz` answer `status` from now on (200 until called). A check counted by
    /// `healthz_count` after this returns got the new status.
    pub fn set_health(&self, status: u16) {
        self.inner.health.store(status, Ordering::SeqCst);
    }

    /// The most recent `GET /healthz` request, if any.
    pub fn last_healthz(&self) -> Option<Request> {
        lock(&self.inner.last_healthz).clone()
    }

    /// Protocol errors the upstream saw in what the gateway sent (malformed heads, bad bodies).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.inner.errors).clone()
    }

    /// Closes (FIN both ways) every connection that is idle between requests, as an upstream
    /// with a short keep-alive timeout would. Returns how many it closed. A connection that
    /// just wrote a response becomes idle a moment after the client has read it, so this first
    /// waits (at most 1 s) for every open connection to be idle.
    pub fn close_idle_connections(&self) -> usize {
        let open = |s: &Arc<Slot>| !s.closed.load(Ordering::SeqCst);
        self.wait_until(Duration::from_secs(1), |u| {
            lock(&u.inner.slots)
                .iter()
                .filter(|s| open(s))
                .all(|s| s.idle.load(Ordering::SeqCst))
        });
        let slots = lock(&self.inner.slots);
        let mut n = 0;
        for slot in slots.iter().filter(|s| open(s)) {
            if slot.idle.load(Ordering::SeqCst) {
                slot.closed.store(true, Ordering::SeqCst);
                let _ = slot.stream.shutdown(Shutdown::Both);
                n += 1;
            }
        }
        n
    }

    /// Polls until `cond(self)` holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, cond: impl Fn(&Upstream) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
        for slot in lock(&self.inner.slots).iter() {
            let _ = slot.stream.shutdown(Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    for stream in listener.incoming() {
        if inner.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let conn = inner.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        inner.open.fetch_add(1, Ordering::SeqCst);
        let Ok(clone) = stream.try_clone() else {
            inner.open.fetch_sub(1, Ordering::SeqCst);
            continue;
        };
        let slot = Arc::new(Slot {
            stream: clone,
            idle: AtomicBool::new(true),
            closed: AtomicBool::new(false),
        });
        lock(&inner.slots).push(Arc::clone(&slot));
        let inner2 = Arc::clone(&inner);
        let spawned = thread::Builder::new()
            .name(format!("upstream-conn-{conn}"))
            .spawn(move || {
                if serve_conn(stream, conn, &inner2, &slot) == End::Close {
                    let _ = slot.stream.shutdown(Shutdown::Both);
                }
                inner2.open.fetch_sub(1, Ordering::SeqCst);
                lock(&inner2.slots).retain(|s| !Arc::ptr_eq(s, &slot));
            });
        if spawned.is_err() {
            inner.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// How a connection ends: `Reset` leaves the socket to be closed with SO_LINGER 0 (RST).
#[derive(PartialEq, Eq)]
enum End {
    Close,
    Reset,
}

fn serve_conn(stream: TcpStream, conn: usize, inner: &Inner, slot: &Slot) -> End {
    let _ = stream.set_nodelay(true);
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return End::Close,
    };
    let mut reader = WireReader::new(stream);
    loop {
        slot.idle.store(true, Ordering::SeqCst);
        let head = match reader.read_head(None, 1 << 20) {
            Ok(h) => h,
            Err(WireError::Closed { partial, .. }) if partial.is_empty() => return End::Close,
            Err(e) => {
                if !inner.stop.load(Ordering::SeqCst) {
                    lock(&inner.errors).push(format!("conn {conn}: reading head: {e}"));
                }
                return End::Close;
            }
        };
        slot.idle.store(false, Ordering::SeqCst);
        let req = match read_request(&mut reader, &mut out, head, conn, inner) {
            Ok(r) => r,
            Err(e) => {
                lock(&inner.errors).push(format!("conn {conn}: {e}"));
                let _ = out.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return End::Close;
            }
        };
        let wants_close = {
            let tokens = wire::header_tokens(&req.headers, "connection");
            tokens.iter().any(|t| t == "close")
                || (req.version == "HTTP/1.0" && !tokens.iter().any(|t| t == "keep-alive"))
        };
        let reply = if req.method == "GET" && req.target == "/healthz" {
            // Count first, then read the status: a check counted after `set_health` returned
            // sees the new status (what `set_health`'s doc promises).
            inner.healthz.fetch_add(1, Ordering::SeqCst);
            *lock(&inner.last_healthz) = Some(req.clone());
            let status = inner.health.load(Ordering::SeqCst);
            Reply::text(status, if status < 400 { "ok" } else { "unhealthy" })
        } else {
            lock(&inner.requests).push(req.clone());
            (inner.handler)(&req)
        };
        match write_reply(&mut out, &req, &reply) {
            Ok(true) => {}
            Ok(false) | Err(_) if matches!(reply.kind, ReplyKind::Reset) => return End::Reset,
            Ok(false) | Err(_) => return End::Close,
        }
        if reply.close || wants_close {
            return End::Close;
        }
    }
}

fn read_request(
    reader: &mut WireReader,
    out: &mut TcpStream,
    head: Vec<u8>,
    conn: usize,
    inner: &Inner,
) -> Result<Request, WireError> {
    let (start, headers) = parse_head(&head)?;
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(WireError::Malformed(format!("request line {start:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(WireError::Malformed(format!("request line {start:?}")));
    }
    let kind = body_kind(&headers, false)?;
    let expects =
        wire::header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects && kind != BodyKind::None {
        wire::write_all(out, b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = Vec::new();
    let mut body_len = 0u64;
    let discard = inner.discard_bodies;
    let mut sink = |bytes: &[u8]| {
        inner
            .body_bytes
            .fetch_add(bytes.len() as u64, Ordering::SeqCst);
        body_len += bytes.len() as u64;
        if !discard {
            body.extend_from_slice(bytes);
        }
    };
    // A body stalled for this long means the gateway lost it: give up rather than hang.
    let deadline = Some(Instant::now() + Duration::from_secs(60));
    let mut trailers = Vec::new();
    match kind {
        BodyKind::None | BodyKind::UntilClose => {}
        BodyKind::Length(n) => reader.read_exact_into(n, deadline, &mut sink)?,
        BodyKind::Chunked => {
            let (_, t) = reader.read_chunked_into(deadline, &mut sink)?;
            trailers = t;
        }
    }
    Ok(Request {
        conn,
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
        body,
        body_len,
        chunked: kind == BodyKind::Chunked,
        trailers,
        head_raw: head,
    })
}

/// Writes the reply. Ok(false): the connection must end now (drop/reset/raw).
fn write_reply(out: &mut TcpStream, req: &Request, reply: &Reply) -> Result<bool, WireError> {
    if !reply.delay.is_zero() {
        thread::sleep(reply.delay);
    }
    match &reply.kind {
        ReplyKind::Drop => {
            let _ = out.shutdown(Shutdown::Both);
            return Ok(false);
        }
        ReplyKind::Reset => {
            // SO_LINGER 0: closing the last descriptor sends RST instead of FIN.
            let _ = socket2::SockRef::from(&*out).set_linger(Some(Duration::ZERO));
            return Ok(false);
        }
        ReplyKind::Raw(bytes) => {
            wire::write_all(out, bytes)?;
            let _ = out.flush();
            if reply.close {
                let _ = out.shutdown(Shutdown::Write);
                // Let the peer read everything before the socket goes away.
                thread::sleep(Duration::from_millis(50));
                return Ok(false);
            }
            return Ok(true);
        }
        ReplyKind::Respond => {}
    }
    for interim in &reply.interim {
        wire::write_all(out, interim)?;
    }
    let status = reply.status;
    let no_body = req.method == "HEAD" || status == 204 || status == 304 || status < 200;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status,
        reply.reason.as_deref().unwrap_or(reason_for(status))
    );
    let explicit_framing = reply.headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !explicit_framing {
        match &reply.body {
            ReplyBody::Fixed(b) if !(status == 204 || status == 304 || status < 200) => {
                head.push_str(&format!("Content-Length: {}\r\n", b.len()))
            }
            ReplyBody::Generated(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
            ReplyBody::Chunked(_) if !no_body => head.push_str("Transfer-Encoding: chunked\r\n"),
            _ => {}
        }
    }
    head.push_str("\r\n");
    wire::write_all(out, head.as_bytes())?;
    // Between body pieces: after the first one, wait for the gate if there is one; otherwise
    // pause for the slow-body interval.
    let gate = |first: bool| match &reply.gate {
        Some(g) if first => {
            g.wait(Duration::from_secs(10));
        }
        _ => {
            if !reply.piece_delay.is_zero() {
                thread::sleep(reply.piece_delay);
            }
        }
    };
    if !no_body {
        match &reply.body {
            ReplyBody::Fixed(b) | ReplyBody::UntilClose(b) => {
                let piece = b.len().div_ceil(reply.pieces).max(1);
                for (i, part) in b.chunks(piece).enumerate() {
                    if i > 0 {
                        gate(i == 1);
                    }
                    wire::write_all(out, part)?;
                }
                if b.len() <= piece && reply.gate.is_some() {
                    gate(true);
                }
            }
            ReplyBody::Chunked(chunks) => {
                for (i, c) in chunks.iter().enumerate() {
                    if i > 0 {
                        gate(i == 1);
                    }
                    let mut bytes = format!("{:x}\r\n", c.len()).into_bytes();
                    bytes.extend_from_slice(c);
                    bytes.extend_from_slice(b"\r\n");
                    wire::write_all(out, &bytes)?;
                }
                if chunks.len() <= 1 && reply.gate.is_some() {
                    gate(true);
                }
                wire::write_all(out, b"0\r\n\r\n")?;
            }
            ReplyBody::Generated(len) => {
                let mut block = Vec::with_capacity(64 * 1024);
                while block.len() < 64 * 1024 {
                    block.extend_from_slice(PATTERN);
                }
                let mut left = *len;
                let mut first = true;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    wire::write_all(out, &block[..n])?;
                    left -= n as u64;
                    if first {
                        if reply.gate.is_some() {
                            gate(true);
                        }
                        first = false;
                    }
                }
            }
        }
    }
    let _ = out.flush();
    if reply.close {
        let _ = out.shutdown(Shutdown::Write);
        return Ok(false);
    }
    Ok(true)
}
