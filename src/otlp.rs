//! Trace export (`tracing.otlp_endpoint`): each request's server span, sent as OTLP/HTTP JSON
//! to a collector from a background thread.
//!
//! Owns the exporter thread ([`Exporter`]) and each worker's batch ([`Local`]). A worker builds a
//! [`Span`] per request and records it in its [`Local`], which hands the batch to the exporter
//! over a bounded queue when it holds [`BATCH`] spans or on the worker's housekeeping tick
//! ([`Local::flush`]). The exporter merges batches into requests of at most [`MAX_EXPORT`] spans
//! (or whatever gathered within [`LINGER`]), encodes them ([`encode`]) and POSTs them over one
//! kept-alive HTTP/1.1 connection, reading each answer with the gateway's own codec (a blocking
//! socket: [`crate::http`] is pure, so it serves a std thread as well as a monoio task). The
//! collector's name is resolved there, never on a worker.
//!
//! The one thing to know: the request path never blocks or makes a system call for tracing.
//! When the queue is full (collector slow or down) a worker's whole batch is dropped, and when
//! an export fails its spans are dropped; both are counted in [`Exporter::dropped_counter`]
//! (`dispatch_tracing_spans_dropped_total`), and failures are logged at most once per 10 s per
//! kind through the `warn` callback.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::http;

/// Where the exporter's warnings go (the gateway's logger).
pub type Warn = Box<dyn Fn(&str) + Send>;

/// Spans a worker gathers before handing a batch to the exporter.
pub const BATCH: usize = 512;
/// Spans in one export request at most.
pub const MAX_EXPORT: usize = 2048;
/// How long the exporter holds spans while waiting for a full export.
pub const LINGER: Duration = Duration::from_secs(1);
/// Batches queued for the exporter before new ones are dropped (32k spans).
const QUEUE: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One request's server span (kind SERVER), as a worker records it.
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// `"{method} {route}"`, e.g. `GET users`; just the method when no route matched
    /// (OpenTelemetry's HTTP span naming).
    pub name: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// `http.request.method`
    pub method: String,
    /// `url.path`
    pub path: String,
    /// `http.route`: the route's name (left out when no route matched).
    pub route: Option<Arc<str>>,
    /// `http.response.status_code`; 500 and above also set the span's status to error.
    pub status: u16,
    /// `client.address`
    pub client: IpAddr,
    /// `dispatch.upstream`, when the request reached one.
    pub upstream: Option<Arc<str>>,
    /// `dispatch.worker`
    pub worker: u32,
}

/// The exporter thread.
pub struct Exporter {
    tx: Sender<Vec<Span>>,
    thread: JoinHandle<()>,
    /// Never sent on; disconnects when the thread ends, so `finish` can wait with a deadline.
    done: Receiver<()>,
    /// Set by `finish`: the thread gives up (and counts) whatever it cannot export by then.
    deadline: Arc<OnceLock<Instant>>,
    dropped: Arc<AtomicU64>,
}

impl Exporter {
    /// Validates `endpoint` (`http://host[:port][/path]`; https is refused: no TLS) and starts
    /// the thread. `version` is the instrumentation scope's version; `warn` gets failure lines.
    pub fn start(
        endpoint: &str,
        version: &str,
        dropped: Arc<AtomicU64>,
        warn: Warn,
    ) -> Result<Exporter, String> {
        let target = Target::parse(endpoint)?;
        let (tx, rx) = bounded::<Vec<Span>>(QUEUE);
        let (done_tx, done) = bounded::<()>(0);
        let deadline = Arc::new(OnceLock::new());
        let mut pump = Pump {
            target,
            conn: None,
            version: version.to_owned(),
            body: Vec::new(),
            count: 0,
            since: None,
            dropped: dropped.clone(),
            deadline: deadline.clone(),
            warn,
            warned: [None; 4],
        };
        let thread = std::thread::Builder::new()
            .name("dispatch-otlp".into())
            .spawn(move || {
                let _done = done_tx;
                pump.run(&rx);
            })
            .map_err(|e| format!("tracing: cannot start the OTLP exporter thread: {e}"))?;
        Ok(Exporter {
            tx,
            thread,
            done,
            deadline,
            dropped,
        })
    }

    /// A worker's batch, feeding this exporter.
    pub fn local(&self) -> Local {
        Local {
            buf: Vec::new(),
            tx: self.tx.clone(),
            dropped: self.dropped.clone(),
        }
    }

    /// Spans dropped so far (queue full, export failed, or cut off at shutdown).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Exports what is queued and stops the thread, returning within `within` even when the
    /// collector is unreachable (what cannot be sent by then is counted as dropped). Call after
    /// the workers flushed (or dropped) their [`Local`]s: the end marker queues behind their last
    /// batches. A thread still busy at the deadline is left to end on its own once its current
    /// attempt times out (at most 2 s), counting what it gives up.
    pub fn finish(self, within: Duration) {
        let now = Instant::now();
        let deadline = now
            .checked_add(within)
            .unwrap_or(now + Duration::from_secs(86_400));
        let _ = self.deadline.set(deadline);
        // An empty batch is the end marker (workers never send one).
        let _ = self.tx.send_deadline(Vec::new(), deadline);
        drop(self.tx);
        if let Err(RecvTimeoutError::Disconnected) = self.done.recv_deadline(deadline) {
            let _ = self.thread.join();
        }
    }
}

/// One worker's pending spans.
pub struct Local {
    buf: Vec<Span>,
    tx: Sender<Vec<Span>>,
    dropped: Arc<AtomicU64>,
}

impl Local {
    /// Adds a span; hands the batch over once it holds [`BATCH`] spans.
    pub fn record(&mut self, span: Span) {
        self.buf.push(span);
        if self.buf.len() >= BATCH {
            self.flush();
        }
    }

    /// Hands the pending spans to the exporter without waiting; a full queue drops them and
    /// counts them. Call on the housekeeping tick and before shutdown (dropping a `Local` does).
    pub fn flush(&mut self) {
        let n = self.buf.len();
        if n == 0 {
            return;
        }
        let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(n));
        if let Err(e) = self.tx.try_send(batch) {
            self.dropped.fetch_add(n as u64, Ordering::Relaxed);
            // Keep the refused batch's memory for the next one.
            let mut batch = e.into_inner();
            batch.clear();
            self.buf = batch;
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Encodes `spans` as one OTLP/HTTP JSON `ExportTraceServiceRequest` into `out`.
pub fn encode(spans: &[Span], version: &str, out: &mut Vec<u8>) {
    begin(out, version);
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_span(out, span);
    }
    end(out);
}

fn begin(out: &mut Vec<u8>, version: &str) {
    out.extend_from_slice(
        br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"dispatch"}}]},"scopeSpans":[{"scope":{"name":"dispatch","version":"#,
    );
    json_str(out, version);
    out.extend_from_slice(br#"},"spans":["#);
}

fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"]}]}]}");
}

fn write_span(out: &mut Vec<u8>, s: &Span) {
    out.extend_from_slice(b"{\"traceId\":\"");
    hex(out, &s.trace_id);
    out.extend_from_slice(b"\",\"spanId\":\"");
    hex(out, &s.span_id);
    if let Some(parent) = &s.parent_span_id {
        out.extend_from_slice(b"\",\"parentSpanId\":\"");
        hex(out, parent);
    }
    out.extend_from_slice(b"\",\"name\":");
    json_str(out, &s.name);
    // kind 2 = SPAN_KIND_SERVER; 64-bit integers are decimal strings in OTLP JSON.
    out.extend_from_slice(b",\"kind\":2,\"startTimeUnixNano\":\"");
    let _ = write!(out, "{}", s.start_unix_nanos);
    out.extend_from_slice(b"\",\"endTimeUnixNano\":\"");
    let _ = write!(out, "{}", s.end_unix_nanos);
    out.extend_from_slice(b"\",\"attributes\":[");
    str_attr(out, "http.request.method", &s.method);
    str_attr(out, "url.path", &s.path);
    if let Some(route) = &s.route {
        str_attr(out, "http.route", route);
    }
    int_attr(out, "http.response.status_code", u64::from(s.status));
    attr_key(out, "client.address", "stringValue");
    let _ = write!(out, "\"{}\"}}}},", s.client);
    if let Some(upstream) = &s.upstream {
        str_attr(out, "dispatch.upstream", upstream);
    }
    int_attr(out, "dispatch.worker", u64::from(s.worker));
    out.pop(); // the last attribute's comma
    out.push(b']');
    if s.status >= 500 {
        out.extend_from_slice(b",\"status\":{\"code\":2}"); // STATUS_CODE_ERROR
    }
    out.push(b'}');
}

fn attr_key(out: &mut Vec<u8>, key: &str, kind: &str) {
    out.extend_from_slice(b"{\"key\":\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\",\"value\":{\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\":");
}

fn str_attr(out: &mut Vec<u8>, key: &str, value: &str) {
    attr_key(out, key, "stringValue");
    json_str(out, value);
    out.extend_from_slice(b"}},");
}

fn int_attr(out: &mut Vec<u8>, key: &str, value: u64) {
    attr_key(out, key, "intValue");
    out.push(b'"');
    let _ = write!(out, "{value}");
    out.extend_from_slice(b"\"}},");
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                hex(out, &[b]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// The collector, from `http://host[:port][/path]`.
/// Checks an endpoint URL the way [`Exporter::start`] will (for the config loader).
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    Target::parse(endpoint).map(drop)
}

struct Target {
    url: String,
    /// For resolving: a name or an IP literal (IPv6 without brackets).
    host: String,
    port: u16,
    /// The `Host` header, as written in the URL.
    authority: String,
    /// Path and query, as written; `/v1/traces` when the URL has none.
    path: String,
}

impl Target {
    fn parse(endpoint: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("invalid URL {endpoint:?}: {why}");
        let starts = |p: &str| {
            endpoint
                .get(..p.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(p))
        };
        if starts("https://") {
            return Err(bad("https is not supported (no TLS): use http://"));
        }
        if !starts("http://") {
            return Err(bad("expected http://host[:port][/path]"));
        }
        if endpoint.contains(|c: char| c <= ' ' || c == '\x7f' || c == '#') {
            return Err(bad("whitespace, control characters or a #fragment"));
        }
        let rest = &endpoint[7..];
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, Some(port)),
            _ => (authority, None),
        };
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').unwrap_or(""),
            None if host.contains([':', ']']) => "",
            None => host,
        };
        if host.is_empty() {
            return Err(bad("bad host (IPv6 goes in brackets: http://[::1]:4318)"));
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse::<NonZeroU16>().map_err(|_| bad("bad port"))?.get(),
        };
        Ok(Target {
            url: endpoint.to_owned(),
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path: match path.starts_with('/') {
                true => path.to_owned(),
                false => format!("/v1/traces{path}"),
            },
        })
    }
}

/// What went wrong with an export, for rate-limiting warnings per kind.
#[derive(Clone, Copy)]
enum Fail {
    Resolve,
    Connect,
    Io,
    Status,
}

/// The exporter thread's state.
struct Pump {
    target: Target,
    /// The kept-alive connection, if any.
    conn: Option<TcpStream>,
    version: String,
    /// The export being built: `begin` and `count` encoded spans.
    body: Vec<u8>,
    count: usize,
    /// When the first span of `body` arrived.
    since: Option<Instant>,
    dropped: Arc<AtomicU64>,
    deadline: Arc<OnceLock<Instant>>,
    warn: Warn,
    warned: [Option<Instant>; 4],
}

impl Pump {
    fn run(&mut self, rx: &Receiver<Vec<Span>>) {
        loop {
            let got = match self.since {
                Some(t) => rx.recv_deadline(t + LINGER),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(batch) if batch.is_empty() => {
                    // The end marker; take what a straggler queued behind it, then stop.
                    while let Ok(batch) = rx.try_recv() {
                        self.add(&batch);
                    }
                    break;
                }
                Ok(batch) => self.add(&batch),
                Err(RecvTimeoutError::Timeout) => self.export(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.export();
    }

    fn add(&mut self, batch: &[Span]) {
        for span in batch {
            if self.count == 0 {
                self.body.clear();
                begin(&mut self.body, &self.version);
                self.since = Some(Instant::now());
            } else {
                self.body.push(b',');
            }
            write_span(&mut self.body, span);
            self.count += 1;
            if self.count == MAX_EXPORT {
                self.export();
            }
        }
    }

    fn export(&mut self) {
        if self.count == 0 {
            return;
        }
        end(&mut self.body);
        let spans = self.count as u64;
        self.count = 0;
        self.since = None;
        let Err((kind, why)) = self.post() else {
            return;
        };
        let total = self.dropped.fetch_add(spans, Ordering::Relaxed) + spans;
        let now = Instant::now();
        let last = &mut self.warned[kind as usize];
        if last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            *last = Some(now);
            (self.warn)(&format!(
                "tracing: OTLP export to {} failed: {why}; {spans} spans dropped ({total} so far)",
                self.target.url
            ));
        }
    }

    /// POSTs `body`, reusing the kept-alive connection; keeps it only after a 2xx answer.
    fn post(&mut self) -> Result<(), (Fail, String)> {
        let deadline = self.deadline.get().copied();
        clamp(IO_TIMEOUT, deadline).map_err(|e| (Fail::Io, e.to_string()))?;
        loop {
            let reused = self.conn.is_some();
            let conn = match self.conn.take() {
                Some(conn) => conn,
                None => connect(&self.target, deadline)?,
            };
            let mut answered = false;
            match exchange(&conn, &self.target, &self.body, deadline, &mut answered) {
                Ok((status, keep)) if (200..300).contains(&status) => {
                    if keep {
                        self.conn = Some(conn);
                    }
                    return Ok(());
                }
                Ok((status, _)) => {
                    return Err((Fail::Status, format!("the collector answered {status}")))
                }
                Err(e) => {
                    // A kept-alive connection the collector closed while idle fails before any
                    // answer: try once more on a fresh one.
                    let closed = matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    );
                    if !(reused && !answered && closed) {
                        return Err((Fail::Io, e.to_string()));
                    }
                }
            }
        }
    }
}

/// `limit`, shortened to what is left before `deadline`; an error once it has passed.
fn clamp(limit: Duration, deadline: Option<Instant>) -> io::Result<Duration> {
    let Some(deadline) = deadline else {
        return Ok(limit);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "shutdown deadline passed",
        ));
    }
    Ok(left.min(limit))
}

fn connect(t: &Target, deadline: Option<Instant>) -> Result<TcpStream, (Fail, String)> {
    let addrs = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| (Fail::Resolve, format!("cannot resolve {}: {e}", t.host)))?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match clamp(CONNECT_TIMEOUT, deadline).and_then(|d| TcpStream::connect_timeout(&addr, d)) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err((
        Fail::Connect,
        format!("cannot connect to {}: {last}", t.authority),
    ))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad answer: {what}"))
}

/// Response heads from the collector: the same generous bounds the proxy gives upstreams,
/// enforced on incomplete input too, so a collector cannot make the exporter buffer more.
const ANSWER_LIMITS: http::HeadLimits = http::HeadLimits {
    max_request_line: 8 * 1024,
    max_header_bytes: 64 * 1024,
    max_headers: 128,
};
/// Bytes asked of the kernel per read of the answer.
const READ_CHUNK: usize = 16 * 1024;

/// Sends the POST and reads the answer through: its status and whether to keep the connection.
/// `answered` tells whether any byte of an answer arrived (after that, a retry could post the
/// spans twice). The answer is read with the gateway's own codec: [`http::parse_response`]
/// for each head, [`http::response_body`] for its framing, and the body skipped exactly, so a
/// kept-alive connection stays in step; one that cannot (a body that runs to the close, bytes
/// past the answer) is not kept.
fn exchange(
    s: &TcpStream,
    t: &Target,
    body: &[u8],
    deadline: Option<Instant>,
    answered: &mut bool,
) -> io::Result<(u16, bool)> {
    let timeout = clamp(IO_TIMEOUT, deadline)?;
    s.set_write_timeout(Some(timeout))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: dispatch\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
        t.path,
        t.authority,
        body.len()
    );
    let mut w = s;
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    // The whole answer, not each read, is bounded: a collector that drips bytes cannot hold
    // the exporter (and a shutdown waiting on it) past the timeout.
    let mut r = Answer {
        s,
        buf: Vec::with_capacity(READ_CHUNK),
        pos: 0,
        until: Instant::now() + clamp(IO_TIMEOUT, deadline)?,
    };
    loop {
        let parsed = match http::parse_response(r.data(), &ANSWER_LIMITS) {
            Ok(Some(head)) => {
                // RFC 9112 §6.3: the framing of a response depends on the request's method.
                let framing = http::response_body("POST", head.status, &head.headers, head.version)
                    .map_err(|e| invalid(&e.to_string()))?;
                let close = http::wants_close(head.version, &head.headers);
                Some((head.status, head.head_len, framing, close))
            }
            Ok(None) => None,
            Err(e) => return Err(invalid(&e.to_string())),
        };
        let Some((status, head_len, framing, mut close)) = parsed else {
            if r.fill()? == 0 {
                return Err(eof());
            }
            *answered = true;
            continue;
        };
        r.consume(head_len);
        if status == 101 {
            // Nothing asked to switch protocols: what follows is not HTTP/1.1.
            return Err(invalid("unrequested 101 Switching Protocols"));
        }
        if (100..200).contains(&status) {
            continue; // an interim answer (RFC 9110 §15.2); the final one follows
        }
        match framing {
            http::BodyKind::None => {}
            http::BodyKind::Length(n) => r.skip(n)?,
            http::BodyKind::Chunked => r.skip_chunked()?,
            http::BodyKind::UntilClose => {
                r.skip_to_close()?;
                close = true;
            }
        }
        // Bytes past the answer mean the collector frames its messages differently from us:
        // the next answer on this connection could not be trusted.
        let in_step = r.data().is_empty();
        return Ok((status, !close && in_step));
    }
}

fn eof() -> io::Error {
    let why = "the collector closed the connection";
    io::Error::new(io::ErrorKind::UnexpectedEof, why)
}

/// The collector's answer as read so far: `buf[pos..]` is received and not yet consumed.
struct Answer<'a> {
    s: &'a TcpStream,
    buf: Vec<u8>,
    pos: usize,
    /// When the whole answer must have arrived.
    until: Instant,
}

impl Answer<'_> {
    fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more of the answer, keeping what is unconsumed; `Ok(0)` when the collector
    /// closed. Heads are bounded by [`ANSWER_LIMITS`] and bodies are consumed as they come,
    /// so the buffer stays within a head plus one read.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the collector did not answer in time",
            ));
        }
        self.s.set_read_timeout(Some(left))?;
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let mut s = self.s;
        let got = loop {
            match s.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                got => break got,
            }
        };
        self.buf.truncate(len + got.as_ref().map_or(0, |n| *n));
        got
    }

    /// Skips a Content-Length body of `n` bytes, exactly.
    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        loop {
            let take = n.min(self.data().len() as u64);
            self.consume(take as usize);
            n -= take;
            if n == 0 {
                return Ok(());
            }
            if self.fill()? == 0 {
                return Err(eof());
            }
        }
    }

    /// Skips a chunked body, trailers included, with the gateway's decoder (RFC 9112 §7.1).
    fn skip_chunked(&mut self) -> io::Result<()> {
        let mut decoder = http::ChunkedDecoder::new();
        loop {
            let step = decoder
                .decode(self.data())
                .map_err(|e| invalid(&e.to_string()))?;
            self.consume(step.consumed);
            if step.done {
                return Ok(());
            }
            if step.consumed == 0 && self.fill()? == 0 {
                return Err(eof());
            }
        }
    }

    /// Skips a body that runs until the collector closes the connection.
    fn skip_to_close(&mut self) -> io::Result<()> {
        loop {
            let n = self.data().len();
            self.consume(n);
            if self.fill()? == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::Mutex;

    fn span(i: u64) -> Span {
        Span {
            trace_id: [0xab; 16],
            span_id: i.to_be_bytes(),
            parent_span_id: None,
            name: "GET users".into(),
            start_unix_nanos: 1_700_000_000_000_000_000,
            end_unix_nanos: 1_700_000_000_000_500_000,
            method: "GET".into(),
            path: "/users/1".into(),
            route: Some("users".into()),
            status: 200,
            client: "127.0.0.1".parse().unwrap(),
            upstream: None,
            worker: 0,
        }
    }

    fn wait_until(what: impl Fn() -> bool) {
        let t = Instant::now();
        while !what() {
            assert!(t.elapsed() < Duration::from_secs(10), "timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn warnings() -> (Arc<Mutex<Vec<String>>>, Warn) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        (
            seen,
            Box::new(move |w| into.lock().unwrap().push(w.to_owned())),
        )
    }

    #[test]
    fn encodes_otlp_json() {
        let mut a = span(0x0001_0203_fcfd_feff);
        a.parent_span_id = Some([0x0a; 8]);
        (a.status, a.worker, a.client) = (503, 3, "::1".parse().unwrap());
        (a.path, a.upstream) = ("/q\"\\\n\u{1}é".into(), Some("backend".into()));
        let mut out = Vec::new();
        encode(&[a, span(2)], "1.2\"3", &mut out);
        let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let s = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
        let i = |k: &str, v: &str| json!({"key": k, "value": {"intValue": v}});
        let (start, end) = ("1700000000000000000", "1700000000000500000");
        let trace = "abababababababababababababababab";
        let want = json!({"resourceSpans": [{
            "resource": {"attributes": [s("service.name", "dispatch")]},
            "scopeSpans": [{"scope": {"name": "dispatch", "version": "1.2\"3"}, "spans": [
                {"traceId": trace, "spanId": "00010203fcfdfeff", "parentSpanId": "0a0a0a0a0a0a0a0a",
                 "name": "GET users", "kind": 2, "startTimeUnixNano": start, "endTimeUnixNano": end,
                 "attributes": [s("http.request.method", "GET"), s("url.path", "/q\"\\\n\u{1}é"),
                    s("http.route", "users"), i("http.response.status_code", "503"),
                    s("client.address", "::1"), s("dispatch.upstream", "backend"),
                    i("dispatch.worker", "3")],
                 "status": {"code": 2}},
                {"traceId": trace, "spanId": "0000000000000002",
                 "name": "GET users", "kind": 2, "startTimeUnixNano": start, "endTimeUnixNano": end,
                 "attributes": [s("http.request.method", "GET"), s("url.path", "/users/1"),
                    s("http.route", "users"), i("http.response.status_code", "200"),
                    s("client.address", "127.0.0.1"), i("dispatch.worker", "0")]}
            ]}]
        }]});
        assert_eq!(got, want);
        out.clear();
        encode(&[], "1", &mut out);
        let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(got["resourceSpans"][0]["scopeSpans"][0]["spans"], json!([]));
    }

    #[test]
    fn endpoints() {
        let parts = |url: &str| {
            let t = Target::parse(url).unwrap();
            format!("{} {} {} {}", t.host, t.port, t.authority, t.path)
        };
        let want = "collector 4318 collector:4318 /v1/traces";
        assert_eq!(parts("http://collector:4318"), want);
        assert_eq!(
            parts("HTTP://10.0.0.1/t?x=1"),
            "10.0.0.1 80 10.0.0.1 /t?x=1"
        );
        let want = "::1 9000 [::1]:9000 /v1/traces";
        assert_eq!(parts("http://[::1]:9000/v1/traces"), want);
        let bad = "ftp://x collector:4318 http:// http://:80 http://h:0 http://h:99999 http://h:x \
            http://u:p@h http://::1/ http://[::1/ http://[::1]x/ http://h/a\u{1}b http://h/#f";
        for bad in bad.split_whitespace().chain(["http://h/a b"]) {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        let (_, warn) = warnings();
        let err = Exporter::start(
            "https://collector:4318/v1/traces",
            "1",
            Default::default(),
            warn,
        )
        .err();
        assert!(err.unwrap().contains("https is not supported"));
    }

    /// A collector that parses each POST and answers 200, alternating a sized and a chunked
    /// body, closing a connection after `per_conn` requests; returns (connection number, span
    /// count) per request.
    fn collector(listener: TcpListener, per_conn: usize) -> Arc<Mutex<Vec<(usize, usize)>>> {
        collector_answering(listener, per_conn, |_, i| {
            match i % 2 {
            0 => b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            _ => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n1;x=y\r\n}\r\n0\r\n\r\n",
        }
        })
    }

    /// Like [`collector`], answering request `i` on connection `n` with `answer(n, i)`.
    fn collector_answering(
        listener: TcpListener,
        per_conn: usize,
        answer: fn(usize, usize) -> &'static [u8],
    ) -> Arc<Mutex<Vec<(usize, usize)>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let all = seen.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let (conn, seen) = (conn.unwrap(), all.clone());
                std::thread::spawn(move || serve(&conn, n, per_conn, answer, &seen));
            }
        });
        seen
    }

    fn serve(
        conn: &TcpStream,
        n: usize,
        per_conn: usize,
        answer: fn(usize, usize) -> &'static [u8],
        seen: &Mutex<Vec<(usize, usize)>>,
    ) {
        let mut r = BufReader::new(conn);
        for i in 0..per_conn {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            assert_eq!(line, "POST /v1/traces HTTP/1.1\r\n");
            let (mut len, mut json) = (0, false);
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap();
                match (k.to_ascii_lowercase().as_str(), v.trim()) {
                    ("content-length", v) => len = v.parse().unwrap(),
                    ("content-type", v) => json = v == "application/json",
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let spans = v["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array();
            assert!(json);
            seen.lock().unwrap().push((n, spans.unwrap().len()));
            let mut w = conn;
            w.write_all(answer(n, i)).unwrap();
        }
    }

    /// A full export, then what is left at shutdown: (connection, spans) per request.
    fn two_exports(per_conn: usize) -> Vec<(usize, usize)> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let seen = collector(listener, per_conn);
        let (seen, dropped, warned) = two_exports_to(&url, &seen);
        assert_eq!(dropped, 0);
        assert!(warned.is_empty(), "{warned:?}");
        seen
    }

    /// Runs [`two_exports`]'s exports against `url`: what the collector saw, the spans
    /// dropped and the warnings.
    fn two_exports_to(
        url: &str,
        seen: &Mutex<Vec<(usize, usize)>>,
    ) -> (Vec<(usize, usize)>, u64, Vec<String>) {
        let (warned, warn) = warnings();
        let exporter = Exporter::start(url, "1.0.0", Default::default(), warn).unwrap();
        let dropped = exporter.dropped_counter();
        let mut local = exporter.local();
        // A full export goes at once (four worker batches merged)...
        for i in 0..MAX_EXPORT + 2 {
            local.record(span(i as u64));
        }
        wait_until(|| seen.lock().unwrap().len() == 1);
        // ...and what is left goes at shutdown.
        local.flush();
        local.record(span(0));
        drop(local);
        exporter.finish(Duration::from_secs(5));
        let seen = seen.lock().unwrap().clone();
        let warned = warned.lock().unwrap().clone();
        (seen, dropped.load(Ordering::Relaxed), warned)
    }

    #[test]
    fn exports_everything_over_one_kept_alive_connection() {
        assert_eq!(two_exports(usize::MAX), [(0, MAX_EXPORT), (0, 3)]);
    }

    #[test]
    fn a_connection_the_collector_closed_is_replaced_without_loss() {
        assert_eq!(two_exports(1), [(0, MAX_EXPORT), (1, 3)]);
    }

    /// The line reader dropped whatever its buffer held past an answer and kept the
    /// connection, out of step with the collector: bytes past the framed answer now retire it
    /// (interim answers before the final one are still read through).
    #[test]
    fn bytes_past_the_answer_used_to_keep_the_connection_out_of_step() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let seen = collector_answering(listener, usize::MAX, |_, _| {
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra"
        });
        let (seen, dropped, warned) = two_exports_to(&url, &seen);
        assert_eq!((dropped, warned), (0, vec![]));
        assert_eq!(seen, [(0, MAX_EXPORT), (1, 3)]);
    }

    /// What [`exchange`] made of an answer: (status, keep) or the error, and whether any
    /// answer byte arrived.
    type Outcome = (Result<(u16, bool), String>, bool);

    /// One POST answered with `answer` (then the collector's end of the stream).
    fn answer_to(answer: &'static [u8]) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.write_all(answer).unwrap();
            conn.shutdown(std::net::Shutdown::Write).unwrap();
            // Read the request through, so closing cannot reset the answer away.
            let _ = io::copy(&mut conn, &mut io::sink());
        });
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        let conn = TcpStream::connect(addr).unwrap();
        let mut answered = false;
        let got = exchange(&conn, &target, b"{}", None, &mut answered).map_err(|e| e.to_string());
        drop(conn);
        peer.join().unwrap();
        (got, answered)
    }

    /// The line reader guessed at framing the codec refuses (it took the last of two
    /// Content-Length values, read TE with CL as chunked, and kept a connection whose answer
    /// ran past its framing); every answer is now read by the gateway's own codec: (status,
    /// keep the connection) or the error.
    #[test]
    fn answers_are_read_with_the_codec() {
        let ok = |status, keep| (Ok((status, keep)), true);
        let bad = |why: &str| (Err(format!("bad answer: {why}")), true);
        let cases: &[(&[u8], Outcome)] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", ok(200, true)),
            (b"HTTP/1.1 200 OK\r\ncontent-length:0\r\n\r\n", ok(200, true)),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;x=y\r\n{\r\n0\r\nT: 1\r\n\r\n",
                ok(200, true),
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
                ok(202, true),
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", ok(204, true)),
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", ok(200, false)),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", ok(200, false)),
            (b"HTTP/1.1 200 OK\r\n\r\nbody until the close", ok(200, false)),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra", ok(200, false)),
            (b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy", ok(503, true)),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
                bad("more than one Content-Length value"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                bad("both Transfer-Encoding and Content-Length"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                bad("invalid chunk size"),
            ),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", bad("unrequested 101 Switching Protocols")),
            (b"NOT HTTP\r\n\r\n", bad("malformed head: invalid HTTP version")),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
                (Err("the collector closed the connection".into()), true),
            ),
            (b"", (Err("the collector closed the connection".into()), false)),
        ];
        for (answer, want) in cases {
            let got = answer_to(answer);
            assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(answer));
        }
    }

    /// A head that never ends is refused once it passes the limits, not buffered.
    #[test]
    fn an_endless_answer_head_is_refused_at_the_limit() {
        let mut huge = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        huge.resize(ANSWER_LIMITS.max_header_bytes + 4096, b'a');
        let (got, answered) = answer_to(Box::leak(huge.into_boxed_slice()));
        assert!(answered);
        let why = got.unwrap_err();
        assert!(why.contains("header block larger than"), "{why}");
    }

    #[test]
    fn a_collector_that_is_down_costs_counted_drops_not_time() {
        let port = {
            let closed = TcpListener::bind("127.0.0.1:0").unwrap();
            closed.local_addr().unwrap().port()
        };
        let (warned, warn) = warnings();
        let exporter = Exporter::start(
            &format!("http://127.0.0.1:{port}"),
            "1",
            Default::default(),
            warn,
        )
        .unwrap();
        let dropped = exporter.dropped_counter();
        let mut local = exporter.local();
        for i in 0..MAX_EXPORT {
            local.record(span(i as u64));
        }
        wait_until(|| dropped.load(Ordering::Relaxed) == MAX_EXPORT as u64);
        for i in 0..10 {
            local.record(span(i as u64));
        }
        local.flush();
        let t = Instant::now();
        exporter.finish(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(dropped.load(Ordering::Relaxed), MAX_EXPORT as u64 + 10);
        let warned = warned.lock().unwrap();
        assert_eq!(warned.len(), 1, "{warned:?}"); // the second failure within 10 s is quiet
        assert!(warned[0].contains("cannot connect"), "{warned:?}");
    }

    #[test]
    fn a_stuck_collector_never_blocks_workers_or_shutdown() {
        // Connections complete in the backlog, but nothing ever reads or answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let exporter = Exporter::start(&url, "1", Default::default(), Box::new(|_| {})).unwrap();
        let dropped = exporter.dropped_counter();
        let mut local = exporter.local();
        let total = 2 * QUEUE * BATCH;
        let mut slowest = Duration::ZERO;
        for i in 0..total {
            let t = Instant::now();
            local.record(span(i as u64));
            slowest = slowest.max(t.elapsed());
        }
        assert!(slowest < Duration::from_secs(1), "{slowest:?}");
        assert!(dropped.load(Ordering::Relaxed) >= (QUEUE * BATCH) as u64 / 2);
        drop(local);
        let t = Instant::now();
        exporter.finish(Duration::from_millis(300));
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        // Once its attempt times out the exporter gives up the rest: every span is accounted for.
        wait_until(|| dropped.load(Ordering::Relaxed) == total as u64);
        drop(listener);
    }
}
