//! seqload: a closed-loop HTTP/1.1 load generator for composite requests.
//!
//! `SCENARIO=aggregate perf/compare.sh` compares one aggregate request through Dispatch (three
//! upstream calls made by the gateway) with a client that makes the same three calls itself, one
//! after another, through nginx. wrk times single requests; this tool times the whole sequence.
//!
//! Each of C connections (one thread each, HTTP/1.1 keep-alive, TCP_NODELAY) loops: it sends the
//! first GET, reads its response in full (Content-Length, chunked, or up to the close when the
//! response has neither: RFC 9112 §6.3), then the second on the same connection, and so on; the
//! time from the first request's write to the last response's last byte is one composite's
//! latency. The loop is closed: a connection sends its next composite only when the previous one
//! is done, so C bounds the composites in flight.
//!
//! A run is a warm-up (composites started in it are not counted) and then the measured
//! duration. No composite starts after the end; one in flight then is finished and counted, so
//! the counts cover all the work the server did for this run (perf/compare.sh divides the
//! server's CPU time over the run by them).
//!
//! Output, on stdout, one line of `key=value` fields (see `Totals::summary`), then one line per
//! step and status code. Any answer other than 200, any failed body check and any connection
//! error is counted there: the caller decides that such a run is invalid. Exit status: 0 when
//! the run finished (whatever it counted), 1 when no composite completed, 2 on a usage error.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: seqload [-c CONNECTIONS] [-d DURATION] [-w WARMUP] [-t TIMEOUT] [--expect STEP:TEXT]...
               http://HOST:PORT/PATH [PATH | http://HOST:PORT/PATH]...

Each connection sends the GETs in the order given, one after another on the same keep-alive
connection, and times the sequence as one composite.

  -c, --connections N   connections, one thread each (default 64)
  -d, --duration D      measured duration: 10s, 500ms, 2m (default 10s)
  -w, --warmup W        run this long first, uncounted (default 0s)
  -t, --timeout T       longest wait for any one read or write (default 5s)
  --expect STEP:TEXT    each response of step STEP (1 = the first GET) must contain TEXT in its
                        body; repeatable
Every GET goes to the first URL's host and port; later ones may be given as paths.";

/// Largest response head accepted; a bigger one is a protocol error here.
const MAX_HEAD: usize = 64 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match Options::parse(&args) {
        Ok(opts) => opts,
        Err(message) => {
            eprintln!("seqload: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut totals = run(&opts);
    println!("{}", totals.summary(&opts));
    for ((step, status), n) in &totals.statuses {
        println!(
            "seqload: step={} path={} status={} count={}",
            step + 1,
            opts.paths[*step],
            status,
            n
        );
    }
    if totals.composites == 0 {
        eprintln!("seqload: no composite completed");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[derive(Debug)]
struct Options {
    connections: usize,
    duration: Duration,
    warmup: Duration,
    timeout: Duration,
    /// `host:port` as given, sent as the Host header.
    authority: String,
    addr: SocketAddr,
    paths: Vec<String>,
    /// Per step: the substrings each of its response bodies must contain.
    expect: Vec<Vec<Vec<u8>>>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut connections = 64;
        let mut duration = Duration::from_secs(10);
        let mut warmup = Duration::ZERO;
        let mut timeout = Duration::from_secs(5);
        let mut expects: Vec<(usize, String)> = Vec::new();
        let mut urls: Vec<&str> = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .map(String::as_str)
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "-c" | "--connections" => {
                    let v = value(arg)?;
                    connections =
                        v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            format!("--connections: {v:?} is not a positive number")
                        })?;
                }
                "-d" | "--duration" => {
                    duration =
                        parse_duration(value(arg)?).map_err(|m| format!("--duration: {m}"))?;
                    if duration.is_zero() {
                        return Err("--duration must be more than 0".into());
                    }
                }
                "-w" | "--warmup" => {
                    warmup = parse_duration(value(arg)?).map_err(|m| format!("--warmup: {m}"))?;
                }
                "-t" | "--timeout" => {
                    timeout = parse_duration(value(arg)?).map_err(|m| format!("--timeout: {m}"))?;
                    if timeout.is_zero() {
                        return Err("--timeout must be more than 0".into());
                    }
                }
                "--expect" => {
                    let v = value(arg)?;
                    let (step, text) = v
                        .split_once(':')
                        .ok_or_else(|| format!("--expect: {v:?} is not STEP:TEXT"))?;
                    let step: usize =
                        step.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            format!("--expect: step {step:?} is not a number from 1")
                        })?;
                    if text.is_empty() {
                        return Err(format!("--expect: {v:?} has no text to look for"));
                    }
                    expects.push((step, text.to_string()));
                }
                s if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
                url => urls.push(url),
            }
        }
        let (first, rest) = urls.split_first().ok_or("no URL given")?;
        let (authority, first_path) = split_url(first)?;
        let mut paths = vec![first_path.to_string()];
        for url in rest {
            if url.starts_with('/') {
                paths.push(url.to_string());
            } else {
                let (other, path) = split_url(url)?;
                if other != authority {
                    return Err(format!(
                        "{url:?} is not on {authority}: every GET of a composite goes over one connection"
                    ));
                }
                paths.push(path.to_string());
            }
        }
        for path in &paths {
            if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(format!(
                    "{path:?}: spaces and control characters must be percent-encoded"
                ));
            }
        }
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| format!("{authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority}: no address"))?;
        let mut expect = vec![Vec::new(); paths.len()];
        for (step, text) in expects {
            let slot = expect.get_mut(step - 1).ok_or_else(|| {
                format!("--expect: step {step} but there are {} GETs", paths.len())
            })?;
            slot.push(text.into_bytes());
        }
        Ok(Options {
            connections,
            duration,
            warmup,
            timeout,
            authority: authority.to_string(),
            addr,
            paths,
            expect,
        })
    }
}

/// `http://host:port/path?query` -> (`host:port`, `/path?query`).
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    if !authority.contains(':') {
        return Err(format!("{url:?}: name the port (host:port)"));
    }
    Ok((authority, path))
}

/// `10s`, `500ms`, `2m`, `1.5s`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a duration like 10s, 500ms or 2m"))?;
    Ok(Duration::from_secs_f64(value * scale))
}

// ---------------------------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------------------------

/// What one connection (and then all of them, merged) counted in the measured part of a run.
#[derive(Default)]
struct Totals {
    /// Composites started after the warm-up and completed (every step answered).
    composites: u64,
    /// Their latencies in microseconds.
    latencies_us: Vec<u64>,
    /// Responses read in composites started after the warm-up.
    requests: u64,
    /// Responses whose status was not 200.
    non200: u64,
    /// Responses without an expected substring.
    check_failures: u64,
    /// Connect, read, write and protocol errors; the composite they hit is not counted.
    errors: u64,
    /// Bytes read (heads and bodies as they came over the wire).
    bytes: u64,
    /// (step, status) -> responses.
    statuses: BTreeMap<(usize, u16), u64>,
    /// The last error seen, for the summary.
    last_error: Option<String>,
    /// From the end of the warm-up to the last connection's last composite.
    elapsed: Duration,
}

impl Totals {
    fn merge(&mut self, other: Totals) {
        self.composites += other.composites;
        self.latencies_us.extend(other.latencies_us);
        self.requests += other.requests;
        self.non200 += other.non200;
        self.check_failures += other.check_failures;
        self.errors += other.errors;
        self.bytes += other.bytes;
        for (key, n) in other.statuses {
            *self.statuses.entry(key).or_default() += n;
        }
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
    }

    /// The one-line summary perf/compare.sh reads: fixed keys, in this order.
    fn summary(&mut self, opts: &Options) -> String {
        self.latencies_us.sort_unstable();
        let elapsed = self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let mut line = format!(
            "seqload: connections={} steps={} duration_s={:.3} composites={} composites_per_s={:.1} \
             p50_us={} p99_us={} max_us={} requests={} non200={} check_failures={} errors={} bytes={}",
            opts.connections,
            opts.paths.len(),
            elapsed,
            self.composites,
            self.composites as f64 / elapsed,
            percentile(&self.latencies_us, 50.0),
            percentile(&self.latencies_us, 99.0),
            self.latencies_us.last().copied().unwrap_or(0),
            self.requests,
            self.non200,
            self.check_failures,
            self.errors,
            self.bytes,
        );
        if let Some(error) = &self.last_error {
            line.push_str(&format!(" last_error={error:?}"));
        }
        line
    }
}

/// Nearest-rank percentile of sorted values (0 when there are none).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn run(opts: &Options) -> Totals {
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        opts.paths
            .iter()
            .map(|path| {
                format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", opts.authority).into_bytes()
            })
            .collect(),
    );
    let expect = Arc::new(opts.expect.clone());
    // Every thread connects, then all start from one instant: the first wait is "connected",
    // the second "the start instant is set".
    let barrier = Arc::new(Barrier::new(opts.connections + 1));
    let start = Arc::new(OnceLock::new());
    let mut handles = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        let (requests, expect, barrier, start) = (
            requests.clone(),
            expect.clone(),
            barrier.clone(),
            start.clone(),
        );
        let (addr, timeout, warmup, duration) =
            (opts.addr, opts.timeout, opts.warmup, opts.duration);
        handles.push(thread::spawn(move || {
            let first = connect(addr, timeout);
            barrier.wait();
            barrier.wait();
            let start: Instant = *start.get().expect("set between the two waits");
            let window = Window {
                counted_from: start + warmup,
                end: start + warmup + duration,
            };
            connection_loop(first, addr, timeout, &requests, &expect, window)
        }));
    }
    barrier.wait();
    let counted_from = *start.get_or_init(Instant::now) + opts.warmup;
    barrier.wait();
    let mut totals = Totals::default();
    for handle in handles {
        match handle.join() {
            Ok(t) => totals.merge(t),
            Err(_) => {
                totals.errors += 1;
                totals.last_error = Some("a connection thread panicked".into());
            }
        }
    }
    totals.elapsed = counted_from.elapsed();
    totals
}

#[derive(Clone, Copy)]
struct Window {
    /// Composites that start at or after this are counted.
    counted_from: Instant,
    /// No composite starts at or after this.
    end: Instant,
}

fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

fn connection_loop(
    first: io::Result<TcpStream>,
    addr: SocketAddr,
    timeout: Duration,
    requests: &[Vec<u8>],
    expect: &[Vec<Vec<u8>>],
    window: Window,
) -> Totals {
    let mut t = Totals::default();
    let mut conn = match first {
        Ok(stream) => Some(Conn::new(stream)),
        Err(e) => {
            t.errors += 1;
            t.last_error = Some(format!("connect: {e}"));
            None
        }
    };
    let want_body: Vec<bool> = expect.iter().map(|e| !e.is_empty()).collect();
    loop {
        let begin = Instant::now();
        if begin >= window.end {
            break;
        }
        let counted = begin >= window.counted_from;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(addr, timeout) {
                Ok(stream) => conn.insert(Conn::new(stream)),
                Err(e) => {
                    t.errors += 1;
                    t.last_error = Some(format!("connect: {e}"));
                    // Do not spin on a refusing server; the error already marks the run.
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let before = c.bytes;
        let outcome = composite(c, requests, &want_body, |step, response| {
            if !counted {
                return;
            }
            t.requests += 1;
            *t.statuses.entry((step, response.status)).or_default() += 1;
            if response.status != 200 {
                t.non200 += 1;
            }
            if !expect[step]
                .iter()
                .all(|text| contains(&response.body, text))
            {
                t.check_failures += 1;
            }
        });
        if counted {
            t.bytes += c.bytes - before;
        }
        match outcome {
            Ok(keep_alive) => {
                if counted {
                    t.composites += 1;
                    t.latencies_us.push(begin.elapsed().as_micros() as u64);
                }
                if !keep_alive {
                    conn = None;
                }
            }
            Err(e) => {
                t.errors += 1;
                t.last_error = Some(e.to_string());
                conn = None;
            }
        }
    }
    t
}

/// One composite: every request in turn on one connection. Ok(false) when the server closes
/// the connection after the last response (or before a later step could be sent).
fn composite<S: Read + Write>(
    c: &mut Conn<S>,
    requests: &[Vec<u8>],
    want_body: &[bool],
    mut seen: impl FnMut(usize, &Response),
) -> io::Result<bool> {
    for (step, request) in requests.iter().enumerate() {
        c.stream.write_all(request)?;
        let response = c.read_response(want_body[step])?;
        seen(step, &response);
        if response.close && step + 1 < requests.len() {
            return Err(io::Error::other(format!(
                "the server closed the connection after step {} of {}",
                step + 1,
                requests.len()
            )));
        }
        if response.close {
            return Ok(false);
        }
    }
    Ok(true)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 responses (RFC 9112)
// ---------------------------------------------------------------------------------------------

struct Response {
    status: u16,
    /// The body (decoded from chunks), when the caller asked for it; else empty.
    body: Vec<u8>,
    /// The connection cannot carry another request.
    close: bool,
}

/// A connection with its read buffer: bytes past one response stay for the next.
struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes read from the stream so far.
    bytes: u64,
}

fn protocol(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl<S: Read> Conn<S> {
    fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
            bytes: 0,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more into the buffer; Ok(false) at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        self.bytes += n as u64;
        Ok(n > 0)
    }

    fn fill_or_eof(&mut self, what: &str) -> io::Result<()> {
        if self.fill()? {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the server closed the connection in {what}"),
            ))
        }
    }

    /// One line ending in CRLF, without it (for chunk sizes and trailers).
    fn line(&mut self, what: &str) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(self.buffered(), b"\r\n") {
                let line = self.buffered()[..i].to_vec();
                self.start += i + 2;
                return Ok(line);
            }
            if self.end - self.start > MAX_HEAD {
                return Err(protocol(format!(
                    "{what}: line longer than {MAX_HEAD} bytes"
                )));
            }
            self.fill_or_eof(what)?;
        }
    }

    /// Exactly `n` body bytes, kept in `body` when `keep`.
    fn take(&mut self, mut n: u64, keep: bool, body: &mut Vec<u8>) -> io::Result<()> {
        while n > 0 {
            if self.start == self.end {
                self.fill_or_eof("a response body")?;
            }
            let here = (self.end - self.start).min(usize::try_from(n).unwrap_or(usize::MAX));
            if keep {
                body.extend_from_slice(&self.buf[self.start..self.start + here]);
            }
            self.start += here;
            n -= here as u64;
        }
        Ok(())
    }

    fn read_response(&mut self, keep: bool) -> io::Result<Response> {
        loop {
            let head_len = loop {
                if let Some(i) = find(self.buffered(), b"\r\n\r\n") {
                    break i + 4;
                }
                if self.end - self.start > MAX_HEAD {
                    return Err(protocol(format!("response head over {MAX_HEAD} bytes")));
                }
                self.fill_or_eof("a response head")?;
            };
            let head = Head::parse(&self.buffered()[..head_len])?;
            self.start += head_len;
            // 1xx answers are interim (RFC 9110 §15.2): the final one follows.
            if (100..200).contains(&head.status) {
                if head.status == 101 {
                    return Err(protocol("101 Switching Protocols to a plain GET"));
                }
                continue;
            }
            let mut body = Vec::new();
            let mut close = head.close;
            // RFC 9112 §6.3: no body for 204 and 304 (and 1xx, handled above); chunked wins
            // over Content-Length; with neither, the body runs to the close.
            if head.status == 204 || head.status == 304 {
            } else if head.chunked {
                self.chunked(keep, &mut body)?;
            } else if let Some(n) = head.content_length {
                self.take(n, keep, &mut body)?;
            } else {
                loop {
                    let n = self.end - self.start;
                    if keep {
                        body.extend_from_slice(&self.buf[self.start..self.end]);
                    }
                    self.start += n;
                    if !self.fill()? {
                        break;
                    }
                }
                close = true;
            }
            return Ok(Response {
                status: head.status,
                body,
                close,
            });
        }
    }

    /// A chunked body (RFC 9112 §7.1): sizes in hex, extensions ignored, trailers skipped.
    fn chunked(&mut self, keep: bool, body: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let line = self.line("a chunk size")?;
            let size = line.split(|b| *b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= 15)
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    protocol(format!(
                        "bad chunk size {:?}",
                        String::from_utf8_lossy(&line)
                    ))
                })?;
            if size == 0 {
                // Trailer fields, then the empty line.
                while !self.line("the chunked trailer")?.is_empty() {}
                return Ok(());
            }
            self.take(size, keep, body)?;
            if !self.line("a chunk's end")?.is_empty() {
                return Err(protocol("chunk data longer than its size"));
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the response head says about framing.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
}

impl Head {
    fn parse(head: &[u8]) -> io::Result<Head> {
        let text = std::str::from_utf8(head).map_err(|_| protocol("response head is not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status = parts
            .next()
            .filter(|s| s.len() == 3)
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| protocol(format!("bad status line {status_line:?}")))?;
        let mut h = Head {
            status,
            content_length: None,
            chunked: false,
            // HTTP/1.0 closes unless it says keep-alive (RFC 9112 §9.3).
            close: version == "HTTP/1.0",
        };
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| protocol(format!("bad header line {line:?}")))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| protocol(format!("bad Content-Length {value:?}")))?;
                if h.content_length.is_some_and(|old| old != n) {
                    return Err(protocol("two different Content-Length values"));
                }
                h.content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Chunked is the last coding when present (RFC 9112 §6.1).
                h.chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for option in value.split(',').map(str::trim) {
                    if option.eq_ignore_ascii_case("close") {
                        h.close = true;
                    } else if option.eq_ignore_ascii_case("keep-alive") && version == "HTTP/1.0" {
                        h.close = false;
                    }
                }
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted server: fixed bytes to read, writes kept.
    struct Script {
        input: io::Cursor<Vec<u8>>,
        /// At most this many bytes per read, to cross every buffer boundary.
        step: usize,
        written: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step);
            self.input.read(&mut buf[..n])
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn conn(input: &str, step: usize) -> Conn<Script> {
        Conn::new(Script {
            input: io::Cursor::new(input.as_bytes().to_vec()),
            step,
            written: Vec::new(),
        })
    }

    /// Responses framed by Content-Length, by chunks (with an extension and a trailer) and by
    /// the close come back whole, one after another on one connection, at any read size.
    #[test]
    fn reads_each_framing_in_turn() {
        let input = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
                     HTTP/1.1 100 Continue\r\n\r\n\
                     HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n\
                     HTTP/1.1 204 No Content\r\n\r\n\
                     HTTP/1.1 200 OK\r\n\r\nto the end";
        for step in [1, 2, 7, 4096] {
            let mut c = conn(input, step);
            let r = c.read_response(true).unwrap();
            assert_eq!(
                (r.status, &r.body[..], r.close),
                (200, &b"hello"[..], false)
            );
            let r = c.read_response(true).unwrap();
            assert_eq!(
                (r.status, &r.body[..], r.close),
                (404, &b"abc0123456789"[..], false)
            );
            let r = c.read_response(true).unwrap();
            assert_eq!((r.status, r.body.len(), r.close), (204, 0, false));
            let r = c.read_response(true).unwrap();
            assert_eq!(
                (r.status, &r.body[..], r.close),
                (200, &b"to the end"[..], true)
            );
            assert_eq!(c.bytes, input.len() as u64, "read size {step}");
        }
    }

    /// A body that ends before its Content-Length is an error, not a short success.
    #[test]
    fn truncated_body_is_an_error() {
        let mut c = conn("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 4096);
        let e = c.read_response(false).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// Malformed heads and chunk sizes are protocol errors.
    #[test]
    fn malformed_responses_are_errors() {
        for input in [
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            "SPDY/3 200 OK\r\n\r\n",
        ] {
            let e = conn(input, 4096).read_response(false).err();
            assert_eq!(
                e.map(|e| e.kind()),
                Some(io::ErrorKind::InvalidData),
                "{input:?}"
            );
        }
    }

    /// Connection: close on a response before the last step ends the composite as an error; on
    /// the last one, the composite counts and the connection is not reused.
    #[test]
    fn close_ends_the_composite() {
        let requests = vec![
            b"GET /a HTTP/1.1\r\n\r\n".to_vec(),
            b"GET /b HTTP/1.1\r\n\r\n".to_vec(),
        ];
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let close = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let mut c = conn(&format!("{ok}{close}"), 4096);
        assert!(!composite(&mut c, &requests, &[false, false], |_, _| {}).unwrap());
        assert_eq!(c.stream.written, requests.concat());
        let mut c = conn(&format!("{close}{ok}"), 4096);
        assert!(composite(&mut c, &requests, &[false, false], |_, _| {}).is_err());
        let mut c = conn(&format!("{ok}{ok}"), 4096);
        let mut statuses = Vec::new();
        assert!(
            composite(&mut c, &requests, &[false, false], |step, r| statuses
                .push((step, r.status)))
            .unwrap()
        );
        assert_eq!(statuses, [(0, 200), (1, 200)]);
    }

    /// Options: paths after the first URL share its host; another host, a bad step or a bad
    /// duration is refused.
    #[test]
    fn options() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let o = Options::parse(&args(
            "-c 3 -d 500ms -w 1 --expect 2:\"x\" http://127.0.0.1:9/a?b=1 /c http://127.0.0.1:9/d",
        ))
        .unwrap();
        assert_eq!(
            (o.connections, o.duration, o.warmup),
            (3, Duration::from_millis(500), Duration::from_secs(1))
        );
        assert_eq!(o.paths, ["/a?b=1", "/c", "/d"]);
        assert_eq!(o.expect, vec![vec![], vec![b"\"x\"".to_vec()], vec![]]);
        for bad in [
            "http://127.0.0.1:9/a http://127.0.0.1:10/b",
            "--expect 2:x http://127.0.0.1:9/a",
            "-d 0 http://127.0.0.1:9/a",
            "-d 1h http://127.0.0.1:9/a",
            "-c 0 http://127.0.0.1:9/a",
            "https://127.0.0.1:9/a",
            "http://127.0.0.1/a",
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=200).collect();
        assert_eq!((percentile(&v, 50.0), percentile(&v, 99.0)), (100, 198));
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
