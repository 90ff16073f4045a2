//! Test support for Dispatch's integration tests: real loopback sockets, real upstream servers
//! started by the test, a raw-socket client and the real gateway binary.
//!
//! - `ports`: free loopback ports for the gateway's own listeners.
//! - `upstream`: programmable HTTP/1.1 upstream servers (`Upstream::start(|req| Reply::...)`).
//! - `client`: raw-socket HTTP/1.1 client with bounded reads (`Client`, `Req`, `Response`).
//! - `gateway`: spawns `dispatch run` on a config (`Gateway::start`), `dispatch check` (`check`).
//! - `wire`: the HTTP/1.1 framing both of the above read with.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod gateway;
pub mod ports;
pub mod upstream;
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
    let mut keys: Vec<&String> = err.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        vec!["code", "message", "request_id"],
        "error object keys: {v}"
    );
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
    id
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
