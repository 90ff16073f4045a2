//! Test support for Dispatch's integration tests: real loopback sockets, real upstream servers
//! started by the test, a raw-socket client and the real gateway binary.
//!
//! - `ports`: free loopback ports for the gateway's own listeners.
//! - `upstream`: programmable HTTP/1.1 upstream servers (`Upstream::start(|req| Reply::...)`).
//! - `client`: raw-socket HTTP/1.1 client with bounded reads (`Client`, `Req`, `Response`).
//! - `gateway`: spawns `dispatch run` on a config (`Gateway::start`), `dispatch check` (`check`).
//! - `wire`: the HTTP/1.1 framing both of the above read with.
//! - `conformance`: helpers for the protocol conformance tests.
//! - `demo`: runs `dispatch demo` on the shipped demo config moved to free ports (`DemoRun`).
//!
//! Each test binary uses only part of this module.
#![allow(dead_code, unused_imports)]

pub mod aggregate;
pub mod auth;
pub mod cache;
pub mod client;
pub mod compression;
pub mod conformance;
pub mod demo;
pub mod gateway;
pub mod ports;
pub mod ratelimit;
pub mod tls;
pub mod tls_client;
pub mod tls_upstream;
pub mod upstream;
pub mod upstream_misbehave;
pub mod waits;
pub mod websocket;
pub mod wire;

pub use client::{get, send_request, Client, Req, Response};
pub use gateway::{check, run_expecting_exit, Gateway, TempDir};
pub use ports::{free_addr, free_port};
pub use upstream::{Gate, Reply, Request, Upstream};

use std::time::Duration;

/// A TOML array of the upstreams' URLs: `["http://127.0.0.1:1", "http://127.0.0.1:2"]`.
pub fn endpoints(ups: &[&Upstream]) -> String {
    let urls: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.url())).collect();
    format!("[{}]", urls.join(", "))
}

/// A URL nothing listens on (connections are refused).
pub fn dead_url() -> String {
    format!("http://{}", free_addr())
}

/// Asserts `resp` is a gateway error with `status` in the contract's shape:
/// `Content-Type: application/json` and exactly
/// `{"error":{"code":<status>,"message":"<text>","request_id":"<id>"}}`, with `request_id`
/// equal to the response's `X-Request-Id` header, which every gateway error carries. Returns
/// the request id.
pub fn assert_error(resp: &Response, status: u16) -> String {
    let v = check_error(resp, status, &[]);
    v["error"]["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Like `assert_error`, for errors that say when to come back (breaker open, rate limited):
/// the `error` object also has `"retryAfter": N` (whole seconds, at least 1) and the response
/// carries `Retry-After: N`, the same N. Returns the request id and N.
pub fn assert_error_retry_after(resp: &Response, status: u16) -> (String, u64) {
    let v = check_error(resp, status, &["retryAfter"]);
    let secs = v["error"]["retryAfter"]
        .as_u64()
        .unwrap_or_else(|| panic!("error.retryAfter is not a whole number of seconds: {v}"));
    assert!(secs >= 1, "error.retryAfter must be at least 1: {v}");
    assert_eq!(
        resp.header("retry-after"),
        Some(secs.to_string().as_str()),
        "Retry-After must equal error.retryAfter: {v}"
    );
    (
        v["error"]["request_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        secs,
    )
}

/// The checks behind `assert_error`: the `error` object has exactly `code`, `message`,
/// `request_id` and `extra` keys. Returns the body.
fn check_error(resp: &Response, status: u16, extra: &[&str]) -> serde_json::Value {
    assert_eq!(
        resp.status,
        status,
        "expected a {status} error, got {} {:?} body {:?}",
        resp.status,
        resp.headers,
        resp.text()
    );
    let ct = resp.header("content-type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase().starts_with("application/json"),
        "error Content-Type must be application/json, got {ct:?}"
    );
    let v = resp.json();
    let obj = v.as_object().expect("error body is a JSON object");
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        vec!["error"],
        "error body must have exactly the key \"error\": {v}"
    );
    let err = v["error"].as_object().expect("\"error\" is an object");
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = vec!["code", "message", "request_id"];
    want.extend_from_slice(extra);
    want.sort_unstable();
    assert_eq!(keys, want, "error object keys: {v}");
    assert_eq!(
        err["code"].as_u64(),
        Some(u64::from(status)),
        "error.code: {v}"
    );
    let message = err["message"].as_str().expect("error.message is a string");
    assert!(!message.is_empty(), "error.message is empty: {v}");
    let id = err["request_id"]
        .as_str()
        .expect("error.request_id is a string")
        .to_string();
    assert!(!id.is_empty(), "error.request_id is empty: {v}");
    assert_eq!(
        resp.header("x-request-id"),
        Some(id.as_str()),
        "a gateway error must carry X-Request-Id equal to error.request_id"
    );
    v
}

/// A gateway with one catch-all route to `up` (`retries = 0`), plus `extra` top-level TOML
/// (e.g. a `[server.limits]` table).
pub fn catch_all_gateway(up: &Upstream, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\nretries = 0\n\n[routes.all]\npaths = [\"/\"]\nupstream = \"app\"\n\n{extra}\n",
        up.url()
    ))
}

/// Sleeps briefly; for the few places a test must let time pass (always small).
pub fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Polls `cond` every 10 ms until it holds or `within` has passed; returns whether it held
/// (checked once more at the deadline). For "happens within N" assertions without fixed sleeps.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The value of the Prometheus sample line that starts with `series` (name and labels
/// exactly as rendered, e.g. `dispatch_breaker_state{upstream="users"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().expect("sample value is a number"))
}

/// `s` percent-encoded for a query value (everything but RFC 3986 unreserved characters).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC timestamp such as
/// `2026-11-22T09:14:03.120Z` (fraction optional; `Z` or `+00:00`); None if it is not one.
pub fn rfc3339_utc_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = ms.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    if !matches!(rest, "Z" | "z" | "+00:00") {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + millis)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A loopback address where TCP connects hang (for connect timeouts): a listener with a full
/// accept queue that never accepts, so the kernel drops further SYNs. Keep the returned guard
/// alive while it is used.
pub struct Blackhole {
    pub addr: std::net::SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<std::net::TcpStream>,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        listener.bind(&any.into()).expect("bind");
        listener.listen(0).expect("listen");
        let addr = listener
            .local_addr()
            .expect("local_addr")
            .as_socket()
            .expect("inet");
        // Fill the accept queue (backlog 0 holds one connection; take a few to be sure).
        let mut fillers = Vec::new();
        for _ in 0..4 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
        }
        Blackhole {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Default for Blackhole {
    fn default() -> Self {
        Blackhole::new()
    }
}
pub mod ops;
