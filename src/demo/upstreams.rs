//! Sample upstream services for `dispatch demo`: tiny HTTP/1.1 servers on loopback, std only.
//!
//! Owns [`SampleServer`] (one listening service) and [`SampleUpstreams`] (the set the demo
//! starts from [`DemoPorts`]). Each [`Service`] answers a few JSON endpoints (users, accounts,
//! transactions) plus, on every service, `/healthz`, `/echo` (what the gateway sent),
//! `/whoami` (the identity headers the gateway set), `/slow?ms=N` and `/status/CODE`. Every response names the endpoint that produced it, in
//! the `X-Upstream` header and, for JSON objects, an `"upstream"` field, and reflects the
//! forwarding headers it received (`X-Seen-*`), so a curl through the gateway shows routing,
//! load balancing and rewriting at a glance.
//!
//! The one thing to know: this is demo and test scaffolding, not part of the gateway. It is a
//! thread per connection with blocking I/O, which is plenty for curl and for tests and nowhere
//! near the request path's design. Requests are read with the gateway's own codec
//! ([`http::parse_request`], [`http::request_body`], [`http::ChunkedDecoder`]), so these
//! services are exactly as strict as the gateway (a codec error is answered with its status,
//! 400 for conflicting framing, and the connection closed); beyond it they are simple (no
//! percent-decoding, trailers dropped, keep-alive as RFC 9112 §9.3 says).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::http;

use super::DemoPorts;

/// Request heads accepted: the gateway's default limits, with room for the fields it adds on
/// the way (forwarding headers, `Via`, the request id) and within the parser's stack slots.
const HEAD_LIMITS: http::HeadLimits = http::HeadLimits {
    max_request_line: 8 * 1024,
    max_header_bytes: 32 * 1024,
    max_headers: 128,
};
/// Largest request body accepted (either framing).
const MAX_BODY: usize = 10 * 1024 * 1024;
/// A keep-alive connection with no new request for this long is closed. Longer than the idle
/// timeout of any pool in the shipped configs, so the gateway is the side that closes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A request whose head and body do not arrive within this long is abandoned.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a blocked read wakes up to notice a stop request.
const POLL: Duration = Duration::from_millis(200);
/// Upper bound on `/slow?ms=N`.
const MAX_SLOW: Duration = Duration::from_secs(30);

/// Which sample API a server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `GET /users`, `GET /users/{id}`, `GET /products?ids=a,b`.
    Users,
    /// The canary version of users: same paths, a different body shape (`fullName`, `version`).
    UsersV2,
    /// `GET /accounts/{id}/balance`, `GET /orders/{id}`.
    Accounts,
    /// `GET /transactions?userId=..&limit=..`, `GET /shipments/{orderId}`.
    Transactions,
}

/// One running sample service. Dropping it stops the listener; connections already open
/// finish their current request and close within `POLL`.
pub struct SampleServer {
    name: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl SampleServer {
    /// Binds `addr` (port 0 picks a free port) and serves `service` as endpoint `name`
    /// (the name shows in `X-Upstream` and in `"upstream"` fields).
    pub fn start(service: Service, name: &str, addr: SocketAddr) -> io::Result<SampleServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let endpoint = Arc::new(Endpoint {
            service,
            name: name.to_string(),
        });
        let accept = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name(format!("demo-{name}"))
                .spawn(move || accept_loop(&listener, &endpoint, &stop))?
        };
        Ok(SampleServer {
            name: name.to_string(),
            addr,
            stop,
            accept: Some(accept),
        })
    }

    /// The endpoint name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SampleServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept loop is blocked in accept(): one connection wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

/// Every sample service of the demo, started together; dropping it stops them all.
pub struct SampleUpstreams {
    servers: Vec<SampleServer>,
}

impl SampleUpstreams {
    /// Starts the services on `ports` (all on 127.0.0.1; a port of 0 picks a free one):
    /// users-1, users-2, users-v2, accounts-1 and transactions-1. `ports.offline` is left
    /// unbound on purpose. On error, whatever was already started is stopped again.
    pub fn start(ports: &DemoPorts) -> io::Result<SampleUpstreams> {
        let plan = [
            (Service::Users, "users-1", ports.users[0]),
            (Service::Users, "users-2", ports.users[1]),
            (Service::UsersV2, "users-v2", ports.users_v2),
            (Service::Accounts, "accounts-1", ports.accounts),
            (Service::Transactions, "transactions-1", ports.transactions),
        ];
        let mut servers = Vec::with_capacity(plan.len());
        for (service, name, port) in plan {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let server = SampleServer::start(service, name, addr).map_err(|e| {
                io::Error::new(e.kind(), format!("demo upstream {name} on {addr}: {e}"))
            })?;
            servers.push(server);
        }
        Ok(SampleUpstreams { servers })
    }

    /// The running services, in start order.
    pub fn servers(&self) -> &[SampleServer] {
        &self.servers
    }

    /// The address of the endpoint called `name` (e.g. "users-2"), if it runs.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.servers.iter().find(|s| s.name == name).map(|s| s.addr)
    }

    /// One line per service, `name  http://addr`, for the demo's banner.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for s in &self.servers {
            let _ = writeln!(out, "  {:<15} http://{}", s.name, s.addr);
        }
        out
    }
}

struct Endpoint {
    service: Service,
    name: String,
}

fn accept_loop(listener: &TcpListener, endpoint: &Arc<Endpoint>, stop: &Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let endpoint = Arc::clone(endpoint);
        let stop = Arc::clone(stop);
        let spawned = thread::Builder::new()
            .name(format!("demo-{}-conn", endpoint.name))
            .spawn(move || serve_connection(stream, &endpoint, &stop));
        // Out of threads: the stream was moved into the closure and is dropped, i.e. closed.
        drop(spawned);
    }
}

// ---------------------------------------------------------------------------------------------
// Reading requests
// ---------------------------------------------------------------------------------------------

/// A parsed request, owned (the handlers outlive the read buffer). Header names are
/// lower-cased; values are kept as sent (trimmed by the codec, obs-text bytes made lossy).
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    version_minor: u8,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// The owned form of a head the codec accepted, after the checks it leaves to servers.
    fn from_head(head: &http::RequestHead<'_>) -> Result<Request, ReadError> {
        // RFC 9112 §3.2: a missing, repeated or invalid Host is a 400.
        head.host().map_err(|e| ReadError::bad(e.status(), e))?;
        // These services only serve origin-form targets (and `OPTIONS *`).
        if !(head.target.starts_with('/') || head.target == "*") {
            return Err(ReadError::bad(400, "invalid request target"));
        }
        Ok(Request {
            method: head.method.to_string(),
            target: head.target.to_string(),
            version_minor: match head.version {
                http::Version::Http10 => 0,
                http::Version::Http11 => 1,
            },
            headers: head
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_ascii_lowercase(), value)
                })
                .collect(),
            body: Vec::new(),
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    fn query(&self, key: &str) -> Option<&str> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }

    /// RFC 9112 §9.3: HTTP/1.1 stays open unless "close"; HTTP/1.0 only with "keep-alive".
    fn keep_alive(&self) -> bool {
        let tokens = |v: &str| {
            v.split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let connection = self.header("connection").map(tokens).unwrap_or_default();
        if self.version_minor >= 1 {
            !connection.iter().any(|t| t == "close")
        } else {
            connection.iter().any(|t| t == "keep-alive")
        }
    }
}

enum ReadError {
    /// The peer closed, timed out or we are stopping: close without answering.
    Gone,
    /// The bytes are not a request we accept: answer `status` and close.
    Bad { status: u16, why: String },
}

impl ReadError {
    fn bad(status: u16, why: impl std::fmt::Display) -> ReadError {
        ReadError::Bad {
            status,
            why: why.to_string(),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Gone
    }
}

/// A connection with its own read buffer, so pipelined requests are never lost between reads.
struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    stop: &'a AtomicBool,
}

impl Conn<'_> {
    /// Reads more bytes into `buf`; `Ok(false)` at EOF. Wakes every [`POLL`] to check the stop
    /// flag and `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<bool, ReadError> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                        return Err(ReadError::Gone);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next request, or `Ok(None)` when the peer closed cleanly between requests.
    fn read_request(&mut self) -> Result<Option<Request>, ReadError> {
        // Wait for the first byte under the idle timeout, then for the rest under the request one.
        let idle_deadline = Instant::now() + IDLE_TIMEOUT;
        while self.buf.is_empty() {
            if !self.fill(idle_deadline)? {
                return Ok(None);
            }
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;

        // The gateway's own codec: empty lines before the request line are skipped (RFC 9112
        // §2.2) and the limits hold on incomplete heads too, so the buffer stays bounded.
        let (mut request, framing, head_len) = loop {
            let parsed = match http::parse_request(&self.buf, &HEAD_LIMITS) {
                Ok(Some(head)) => {
                    // RFC 9112 §6.3: CL with TE, two Content-Length values, a final coding
                    // other than chunked: 400 (an unknown coding before chunked: 501).
                    let framing = http::request_body(&head.headers, head.version)
                        .map_err(|e| ReadError::bad(e.status(), e))?;
                    Some((Request::from_head(&head)?, framing, head.head_len))
                }
                Ok(None) => None,
                Err(e) => return Err(ReadError::bad(e.status(), e)),
            };
            if let Some(parsed) = parsed {
                break parsed;
            }
            if !self.fill(deadline)? {
                return Err(ReadError::Gone);
            }
        };
        self.buf.drain(..head_len);
        request.body = match framing {
            http::BodyKind::None => Vec::new(),
            http::BodyKind::Length(n) => {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= MAX_BODY)
                    .ok_or_else(|| ReadError::bad(413, "body too large"))?;
                if n > 0 {
                    self.expect_continue(&request)?;
                }
                self.take_exact(n, deadline)?
            }
            http::BodyKind::Chunked => {
                self.expect_continue(&request)?;
                self.read_chunked(deadline)?
            }
            // Only responses run until the close; request_body never says so.
            http::BodyKind::UntilClose => return Err(ReadError::bad(400, "unframed body")),
        };
        Ok(Some(request))
    }

    fn expect_continue(&mut self, request: &Request) -> Result<(), ReadError> {
        let expects = request
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects && request.version_minor >= 1 && self.buf.is_empty() {
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        Ok(())
    }

    fn take_exact(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, ReadError> {
        while self.buf.len() < n {
            if !self.fill(deadline)? {
                return Err(ReadError::Gone);
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// A chunked body through the gateway's [`http::ChunkedDecoder`] (RFC 9112 §7.1: sizes,
    /// extensions skipped, CRLF after each chunk, trailer fields read and dropped).
    fn read_chunked(&mut self, deadline: Instant) -> Result<Vec<u8>, ReadError> {
        let mut decoder = http::ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let step = decoder
                .decode(&self.buf[pos..])
                .map_err(|e| ReadError::bad(e.status(), e))?;
            if let Some(data) = step.data {
                if body.len() + data.len() > MAX_BODY {
                    return Err(ReadError::bad(413, "body too large"));
                }
                body.extend_from_slice(&self.buf[pos + data.start..pos + data.end]);
            }
            pos += step.consumed;
            if step.done {
                // What follows belongs to the next (pipelined) request.
                self.buf.drain(..pos);
                return Ok(body);
            }
            if step.consumed == 0 {
                self.buf.drain(..pos);
                pos = 0;
                if !self.fill(deadline)? {
                    return Err(ReadError::Gone);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

fn serve_connection(stream: TcpStream, endpoint: &Endpoint, stop: &AtomicBool) {
    if stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        stop,
    };
    loop {
        let request = match conn.read_request() {
            Ok(Some(request)) => request,
            Ok(None) | Err(ReadError::Gone) => break,
            Err(ReadError::Bad { status, why }) => {
                let body = format!(
                    r#"{{"error":{},"upstream":{}}}"#,
                    json_str(&format!("bad request: {why}")),
                    json_str(&endpoint.name)
                );
                let response = Response::json(status, body);
                let _ = conn
                    .stream
                    .write_all(&response.encode(endpoint, None, false, false));
                break;
            }
        };
        let response = respond(endpoint, &request);
        let keep_alive = request.keep_alive() && !stop.load(Ordering::SeqCst);
        let bytes = response.encode(
            endpoint,
            Some(&request),
            request.method == "HEAD",
            keep_alive,
        );
        if conn.stream.write_all(&bytes).is_err() || !keep_alive {
            break;
        }
    }
    let _ = conn.stream.shutdown(Shutdown::Write);
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn json(status: u16, body: String) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "application/json".to_string())],
            body,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    fn encode(
        &self,
        endpoint: &Endpoint,
        request: Option<&Request>,
        head: bool,
        keep_alive: bool,
    ) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        let _ = write!(out, "X-Upstream: {}\r\n", endpoint.name);
        if let Some(request) = request {
            let _ = write!(
                out,
                "X-Seen-Method: {}\r\nX-Seen-Path: {}\r\n",
                request.method, request.target
            );
            // What the gateway added on the way in, reflected so curl -i shows it.
            for (header, seen) in [
                ("host", "X-Seen-Host"),
                ("x-forwarded-for", "X-Seen-Forwarded-For"),
                ("x-forwarded-proto", "X-Seen-Forwarded-Proto"),
                ("x-request-id", "X-Seen-Request-Id"),
                ("via", "X-Seen-Via"),
            ] {
                if let Some(value) = request.header(header) {
                    let _ = write!(out, "{seen}: {value}\r\n");
                }
            }
        }
        if !keep_alive {
            out.push_str("Connection: close\r\n");
        }
        // HEAD: the Content-Length of the GET answer, and no body (RFC 9110 §9.3.2).
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut bytes = out.into_bytes();
        if !head && !matches!(self.status, 204 | 304) {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        501 => "Not Implemented",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// Escapes `s` for use inside a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct User {
    id: &'static str,
    name: &'static str,
    email: &'static str,
    plan: &'static str,
}

const USERS: [User; 3] = [
    User {
        id: "u_1",
        name: "Ada Lovelace",
        email: "ada@example.com",
        plan: "business",
    },
    User {
        id: "u_2",
        name: "Grace Hopper",
        email: "grace@example.com",
        plan: "enterprise",
    },
    User {
        id: "u_3",
        name: "Alan Turing",
        email: "alan@example.com",
        plan: "free",
    },
];

/// (id, amount, merchantName, createdAt)
const TRANSACTIONS: [(&str, &str, &str, &str); 5] = [
    ("t_1", "42.5", "Coffee Lab", "2026-11-20T09:15:00Z"),
    ("t_2", "12.99", "Book Nook", "2026-11-19T18:40:00Z"),
    ("t_3", "1250", "Acme Rent", "2026-11-18T08:00:00Z"),
    ("t_4", "8.75", "City Metro", "2026-11-17T07:55:00Z"),
    ("t_5", "64", "Corner Market", "2026-11-16T17:20:00Z"),
];

/// "1" and "`u_1`" both name user `u_1`.
fn find_user(id: &str) -> Option<&'static User> {
    USERS
        .iter()
        .find(|u| u.id == id || u.id.strip_prefix("u_") == Some(id))
}

fn user_json(user: &User, endpoint: &Endpoint) -> String {
    match endpoint.service {
        Service::UsersV2 => format!(
            r#"{{"id":"{}","fullName":"{}","contact":{{"email":"{}"}},"plan":"{}","version":"v2","upstream":{}}}"#,
            user.id,
            user.name,
            user.email,
            user.plan,
            json_str(&endpoint.name)
        ),
        _ => format!(
            r#"{{"id":"{}","name":"{}","email":"{}","plan":"{}","upstream":{}}}"#,
            user.id,
            user.name,
            user.email,
            user.plan,
            json_str(&endpoint.name)
        ),
    }
}

fn not_found(endpoint: &Endpoint, what: &str) -> Response {
    Response::json(
        404,
        format!(
            r#"{{"error":{},"upstream":{}}}"#,
            json_str(what),
            json_str(&endpoint.name)
        ),
    )
}

fn method_not_allowed(endpoint: &Endpoint, allow: &str) -> Response {
    Response::json(
        405,
        format!(
            r#"{{"error":"method not allowed","upstream":{}}}"#,
            json_str(&endpoint.name)
        ),
    )
    .header("Allow", allow)
}

/// Routes one request to its handler. Endpoints shared by every service come first.
fn respond(endpoint: &Endpoint, request: &Request) -> Response {
    let path = request.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let up = json_str(&endpoint.name);

    match segments.as_slice() {
        ["healthz"] => return Response::json(200, format!(r#"{{"status":"ok","upstream":{up}}}"#)),
        ["echo", ..] => return echo(endpoint, request),
        ["whoami"] => return whoami(endpoint, request),
        ["slow"] => {
            let ms: u64 = request
                .query("ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            let wait = Duration::from_millis(ms).min(MAX_SLOW);
            thread::sleep(wait);
            return Response::json(
                200,
                format!(r#"{{"slept_ms":{},"upstream":{up}}}"#, wait.as_millis()),
            );
        }
        ["status", code] => {
            let status = code
                .parse::<u16>()
                .ok()
                .filter(|s| (200..=599).contains(s))
                .unwrap_or(400);
            return Response::json(status, format!(r#"{{"status":{status},"upstream":{up}}}"#));
        }
        _ => {}
    }
    if let (Service::Accounts, ["v2", "transfers"]) = (endpoint.service, segments.as_slice()) {
        return transfer_v2(endpoint, request);
    }
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return method_not_allowed(endpoint, "GET, HEAD");
    }

    match (endpoint.service, segments.as_slice()) {
        (Service::Users | Service::UsersV2, ["users"]) => {
            let list: Vec<String> = USERS.iter().map(|u| user_json(u, endpoint)).collect();
            Response::json(
                200,
                format!(r#"{{"users":[{}],"upstream":{up}}}"#, list.join(",")),
            )
        }
        (Service::Users | Service::UsersV2, ["users", id]) => match find_user(id) {
            Some(user) => Response::json(200, user_json(user, endpoint)),
            None => not_found(endpoint, &format!("no user {id}")),
        },
        (Service::Users | Service::UsersV2, ["products"]) => {
            let ids = request.query("ids").unwrap_or("p_1,p_2");
            let items: Vec<String> = ids
                .split(',')
                .filter(|id| !id.is_empty())
                .enumerate()
                .map(|(i, id)| {
                    format!(
                        r#"{{"id":{},"name":"Product {}","price":{}}}"#,
                        json_str(id),
                        i + 1,
                        10 * (i + 1)
                    )
                })
                .collect();
            Response::json(200, format!("[{}]", items.join(",")))
        }
        (Service::Accounts, ["accounts", id, "balance"]) => Response::json(
            200,
            format!(
                r#"{{"accountId":{},"currency":"USD","available":1250.5,"pending":20,"upstream":{up}}}"#,
                json_str(id)
            ),
        ),
        (Service::Users | Service::UsersV2, ["reviews", product]) => Response::json(
            200,
            format!(
                r#"{{"productId":{},"rating":{},"count":{},"upstream":{up}}}"#,
                json_str(product),
                // A stable, product-dependent rating between 3.0 and 4.9.
                3.0 + f64::from(product.bytes().map(u32::from).sum::<u32>() % 20) / 10.0,
                product.len() * 7
            ),
        ),
        (Service::Accounts, ["loyalty", id]) => Response::json(
            200,
            format!(
                r#"{{"userId":{},"tier":"gold","points":1200,"upstream":{up}}}"#,
                json_str(id)
            ),
        ),
        (Service::Accounts, ["orders", id]) => Response::json(
            200,
            format!(
                r#"{{"id":{},"userId":"u_1","productIds":["p_1","p_2"],"total":64.5,"status":"shipped","upstream":{up}}}"#,
                json_str(id)
            ),
        ),
        (Service::Transactions, ["transactions"]) => {
            let user = request.query("userId").unwrap_or("u_1");
            let limit: usize = request
                .query("limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(TRANSACTIONS.len());
            let items: Vec<String> = TRANSACTIONS
                .iter()
                .take(limit)
                .map(|(id, amount, merchant, at)| {
                    format!(r#"{{"id":"{id}","amount":{amount},"merchantName":"{merchant}","createdAt":"{at}"}}"#)
                })
                .collect();
            Response::json(
                200,
                format!(
                    r#"{{"transactions":[{}],"userId":{},"upstream":{up}}}"#,
                    items.join(","),
                    json_str(user)
                ),
            )
            // A header a later milestone's response transform removes; harmless today.
            .header("X-Internal-Trace", format!("demo-{}", endpoint.name))
        }
        (Service::Transactions, ["shipments", id]) => Response::json(
            200,
            format!(
                r#"{{"orderId":{},"carrier":"DHL","status":"in_transit","upstream":{up}}}"#,
                json_str(id)
            ),
        ),
        _ => not_found(endpoint, &format!("no such path {path}")),
    }
}

/// `POST /v2/transfers` (accounts): the v2 transfer API a v1 route's transform talks to. Takes
/// `{sourceAccountId, destinationAccountId, transferAmount: {value, currency}, initiatedAt}`
/// (all required) and answers 201 with the transfer as v2 names it; a body that is not such
/// JSON is a 400.
fn transfer_v2(endpoint: &Endpoint, request: &Request) -> Response {
    if request.method != "POST" {
        return method_not_allowed(endpoint, "POST");
    }
    let bad = |why: &str| {
        Response::json(
            400,
            format!(
                r#"{{"error":{},"upstream":{}}}"#,
                json_str(why),
                json_str(&endpoint.name)
            ),
        )
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&request.body) else {
        return bad("body is not JSON");
    };
    let text = |key: &str| body.get(key).and_then(|v| v.as_str());
    let (Some(from), Some(to)) = (text("sourceAccountId"), text("destinationAccountId")) else {
        return bad("sourceAccountId and destinationAccountId are required");
    };
    let Some(amount) = body
        .get("transferAmount")
        .filter(|a| a["value"].is_number())
    else {
        return bad("transferAmount.value must be a number");
    };
    // The v2 API stamps each transfer with when the client initiated it; a v1 body passed on
    // untransformed lacks it, so a 201 through the gateway shows the request transform ran.
    if !body.get("initiatedAt").is_some_and(|v| v.is_string()) {
        return bad("initiatedAt is required");
    }
    let answer = serde_json::json!({
        "transferId": format!("tr_{}", from.len() * 1000 + to.len()),
        "sourceAccountId": from,
        "destinationAccountId": to,
        "transferAmount": amount,
        "status": "completed",
        "initiatedAt": body.get("initiatedAt"),
        "completedAt": "2026-12-06T12:00:00Z",
        "apiVersion": request.header("x-api-version"),
        "upstream": endpoint.name,
    });
    Response::json(201, answer.to_string())
}

/// The identity headers a gateway in front may set (the demo config's `forward` tables).
const IDENTITY_HEADERS: [&str; 6] = [
    "x-user-id",
    "x-user-plan",
    "x-user-roles",
    "x-user-email",
    "x-consumer-id",
    "x-consumer-plan",
];

/// `/whoami`: who the gateway said the caller is, as a service behind an authenticating
/// gateway sees it: the identity headers it received (`caller`), the profile of a known
/// `x-user-id` (`user`), and whether the credential itself came along.
fn whoami(endpoint: &Endpoint, request: &Request) -> Response {
    let caller: Vec<String> = IDENTITY_HEADERS
        .iter()
        .filter_map(|name| {
            let value = request.header(name)?;
            Some(format!("{}:{}", json_str(name), json_str(value)))
        })
        .collect();
    let user = request
        .header("x-user-id")
        .and_then(find_user)
        .map(|u| format!(r#","user":{}"#, user_json(u, endpoint)))
        .unwrap_or_default();
    Response::json(
        200,
        format!(
            r#"{{"caller":{{{}}}{user},"authorizationReceived":{},"upstream":{}}}"#,
            caller.join(","),
            request.header("authorization").is_some(),
            json_str(&endpoint.name)
        ),
    )
}

/// `/echo`: the request as this upstream received it, so the demo can show what the gateway
/// changed (path rewrite, X-Forwarded-*, removed hop-by-hop headers, the body).
fn echo(endpoint: &Endpoint, request: &Request) -> Response {
    let headers: Vec<String> = request
        .headers
        .iter()
        .map(|(n, v)| format!("[{},{}]", json_str(n), json_str(v)))
        .collect();
    let body = String::from_utf8_lossy(&request.body);
    Response::json(
        200,
        format!(
            r#"{{"upstream":{},"method":{},"target":{},"version":"HTTP/1.{}","headers":[{}],"body":{}}}"#,
            json_str(&endpoint.name),
            json_str(&request.method),
            json_str(&request.target),
            request.version_minor,
            headers.join(","),
            json_str(&body)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed response read off a raw socket: status, lower-cased headers, body.
    struct Got {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Got {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// Reads one response from `stream` with the gateway's codec (these services always frame
    /// with Content-Length), leaving anything after it in `buf`.
    fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Got {
        let mut chunk = [0u8; 4096];
        let (status, headers, framing, head_len) = loop {
            if let Some(head) = http::parse_response(buf, &http::HeadLimits::default()).unwrap() {
                let method = if head_request { "HEAD" } else { "GET" };
                let framing =
                    http::response_body(method, head.status, &head.headers, head.version).unwrap();
                let headers: Vec<(String, String)> = head
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8(h.value.to_vec()).unwrap();
                        (h.name.to_ascii_lowercase(), value)
                    })
                    .collect();
                break (head.status, headers, framing, head.head_len);
            }
            let n = stream.read(&mut chunk).expect("read head");
            assert!(n > 0, "connection closed before a full response head");
            buf.extend_from_slice(&chunk[..n]);
        };
        buf.drain(..head_len);
        let length = match framing {
            http::BodyKind::None => 0,
            http::BodyKind::Length(n) => usize::try_from(n).unwrap(),
            other => panic!("a sample service framed its answer as {other:?}"),
        };
        while buf.len() < length {
            let n = stream.read(&mut chunk).expect("read body");
            assert!(n > 0, "connection closed inside a body");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8(buf.drain(..length).collect()).unwrap();
        Got {
            status,
            headers,
            body,
        }
    }

    fn connect(server: &SampleServer) -> TcpStream {
        let stream = TcpStream::connect(server.local_addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    fn start(service: Service, name: &str) -> SampleServer {
        SampleServer::start(service, name, "127.0.0.1:0".parse().unwrap()).unwrap()
    }

    #[test]
    fn users_keep_alive_and_pipelining_over_a_real_socket() {
        let server = start(Service::Users, "users-1");
        let mut stream = connect(&server);
        let mut buf = Vec::new();

        stream
            .write_all(
                b"GET /users/u_1 HTTP/1.1\r\nHost: demo\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n",
            )
            .unwrap();
        let got = read_response(&mut stream, &mut buf, false);
        assert_eq!(got.status, 200);
        assert_eq!(
            got.body,
            r#"{"id":"u_1","name":"Ada Lovelace","email":"ada@example.com","plan":"business","upstream":"users-1"}"#
        );
        assert_eq!(got.header("content-type"), Some("application/json"));
        assert_eq!(got.header("x-upstream"), Some("users-1"));
        assert_eq!(got.header("x-seen-forwarded-for"), Some("10.1.2.3"));
        assert_eq!(got.header("x-seen-path"), Some("/users/u_1"));
        assert_eq!(
            got.header("connection"),
            None,
            "HTTP/1.1 stays open by default"
        );

        // Two pipelined requests in one write, the second with a Content-Length body: both are
        // answered, in order, on the same connection.
        stream
            .write_all(
                b"GET /users HTTP/1.1\r\nHost: demo\r\n\r\n\
                  POST /echo/x?a=1 HTTP/1.1\r\nHost: demo\r\nContent-Length: 11\r\n\r\nhello world",
            )
            .unwrap();
        let list = read_response(&mut stream, &mut buf, false);
        assert_eq!(list.status, 200);
        assert!(
            list.body.starts_with(r#"{"users":[{"id":"u_1""#),
            "{}",
            list.body
        );
        assert!(list.body.contains("Grace Hopper"));
        let echo = read_response(&mut stream, &mut buf, false);
        assert_eq!(echo.status, 200);
        assert!(
            echo.body
                .contains(r#""method":"POST","target":"/echo/x?a=1""#),
            "{}",
            echo.body
        );
        assert!(
            echo.body.contains(r#""body":"hello world""#),
            "{}",
            echo.body
        );

        // Connection: close is honoured: the answer says so and the server closes.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
            .unwrap();
        let health = read_response(&mut stream, &mut buf, false);
        assert_eq!(health.status, 200);
        assert_eq!(health.header("connection"), Some("close"));
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty() && buf.is_empty());
    }

    #[test]
    fn chunked_body_head_404_and_405() {
        let server = start(Service::Accounts, "accounts-1");
        let mut stream = connect(&server);
        let mut buf = Vec::new();

        stream
            .write_all(
                b"POST /echo HTTP/1.1\r\nHost: demo\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer-Field: x\r\n\r\n",
            )
            .unwrap();
        let echo = read_response(&mut stream, &mut buf, false);
        assert!(
            echo.body.contains(r#""body":"hello world""#),
            "{}",
            echo.body
        );

        stream
            .write_all(b"HEAD /accounts/a_7/balance HTTP/1.1\r\nHost: demo\r\n\r\n")
            .unwrap();
        let head = read_response(&mut stream, &mut buf, true);
        assert_eq!(head.status, 200);
        let get_len = r#"{"accountId":"a_7","currency":"USD","available":1250.5,"pending":20,"upstream":"accounts-1"}"#.len();
        assert_eq!(
            head.header("content-length"),
            Some(get_len.to_string().as_str())
        );

        stream
            .write_all(b"GET /orders/o_9 HTTP/1.1\r\nHost: demo\r\n\r\n")
            .unwrap();
        let order = read_response(&mut stream, &mut buf, false);
        assert!(
            order.body.contains(r#""id":"o_9","userId":"u_1""#),
            "{}",
            order.body
        );

        stream
            .write_all(b"GET /users/u_1 HTTP/1.1\r\nHost: demo\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut stream, &mut buf, false).status, 404);

        stream
            .write_all(b"DELETE /orders/o_1 HTTP/1.1\r\nHost: demo\r\n\r\n")
            .unwrap();
        let refused = read_response(&mut stream, &mut buf, false);
        assert_eq!(refused.status, 405);
        assert_eq!(refused.header("allow"), Some("GET, HEAD"));
    }

    #[test]
    fn conflicting_framing_is_a_400_and_closes() {
        let server = start(Service::Users, "users-1");
        for bad in [
            &b"POST /echo HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST /echo HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            b"GET /users HTTP/1.1\r\nHost: d\r\nX-Folded: a\r\n b\r\n\r\n",
            b"GET /users HTTP/1.1\r\n\r\n",
        ] {
            let mut stream = connect(&server);
            stream.write_all(bad).unwrap();
            let mut buf = Vec::new();
            let got = read_response(&mut stream, &mut buf, false);
            assert_eq!(got.status, 400, "{}", String::from_utf8_lossy(bad));
            assert_eq!(got.header("connection"), Some("close"));
        }
    }

    /// The services' own parser answered every bad head 400 and took `Content-Length: 3, 3`
    /// as one value; they now read requests with the gateway's codec, so each error gets the
    /// status the gateway itself would answer, and the connection closes.
    #[test]
    fn codec_errors_answer_with_the_gateways_status_and_close() {
        let server = start(Service::Users, "users-1");
        let many_fields: String = (0..HEAD_LIMITS.max_headers + 1)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect();
        let many_fields = format!("GET /users HTTP/1.1\r\nHost: d\r\n{many_fields}\r\n");
        let cases: [(&[u8], u16); 7] = [
            (b"GET /users HTTP/2.0\r\nHost: d\r\n\r\n", 505),
            (
                b"POST /echo HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                b"POST /echo HTTP/1.1\r\nHost: d\r\nContent-Length: 3, 3\r\n\r\nabc",
                400,
            ),
            (
                b"POST /echo HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
            ),
            (b"GET /users HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            (
                b"POST /echo HTTP/1.1\r\nHost: d\r\nContent-Length: 20000000\r\n\r\n",
                413,
            ),
            (many_fields.as_bytes(), 431),
        ];
        for (bad, status) in cases {
            let mut stream = connect(&server);
            stream.write_all(bad).unwrap();
            let mut buf = Vec::new();
            let got = read_response(&mut stream, &mut buf, false);
            assert_eq!(got.status, status, "{}", String::from_utf8_lossy(bad));
            assert_eq!(got.header("connection"), Some("close"));
            assert!(got.body.contains("bad request: "), "{}", got.body);
        }
    }

    /// A chunked body ends where the decoder says: the request pipelined behind it (in the
    /// same write, after trailers) is answered next, on the same connection.
    #[test]
    fn a_request_pipelined_after_a_chunked_body_is_answered() {
        let server = start(Service::Users, "users-1");
        let mut stream = connect(&server);
        stream
            .write_all(
                b"\r\nPOST /echo HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n\
                  3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n\
                  GET /users/2 HTTP/1.1\r\nHost: d\r\n\r\n",
            )
            .unwrap();
        let mut buf = Vec::new();
        let echo = read_response(&mut stream, &mut buf, false);
        assert!(echo.body.contains(r#""body":"abc""#), "{}", echo.body);
        let user = read_response(&mut stream, &mut buf, false);
        assert!(user.body.contains("Grace Hopper"), "{}", user.body);
    }

    /// `/whoami` answers the identity headers it received, the profile of a known user, and
    /// whether an Authorization field came along; nothing else of the request.
    #[test]
    fn whoami_reflects_the_identity_headers() {
        let server = start(Service::Accounts, "accounts-1");
        let mut stream = connect(&server);
        let mut buf = Vec::new();
        stream
            .write_all(
                b"GET /whoami HTTP/1.1\r\nHost: d\r\nX-User-Id: u_2\r\nx-user-roles: a,b\r\n\
                  X-Other: 1\r\n\r\n\
                  GET /whoami HTTP/1.1\r\nHost: d\r\nx-consumer-id: acme\r\nAuthorization: x\r\n\r\n",
            )
            .unwrap();
        let user = read_response(&mut stream, &mut buf, false);
        assert_eq!(
            user.body,
            r#"{"caller":{"x-user-id":"u_2","x-user-roles":"a,b"},"user":{"id":"u_2","name":"Grace Hopper","email":"grace@example.com","plan":"enterprise","upstream":"accounts-1"},"authorizationReceived":false,"upstream":"accounts-1"}"#
        );
        let consumer = read_response(&mut stream, &mut buf, false);
        assert_eq!(
            consumer.body,
            r#"{"caller":{"x-consumer-id":"acme"},"authorizationReceived":true,"upstream":"accounts-1"}"#
        );
    }

    #[test]
    fn transactions_honour_limit_and_http10_closes() {
        let server = start(Service::Transactions, "transactions-1");
        let mut stream = connect(&server);
        stream
            .write_all(b"GET /transactions?userId=u_2&limit=2 HTTP/1.0\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let got = read_response(&mut stream, &mut buf, false);
        assert_eq!(got.status, 200);
        assert!(got.body.starts_with(
            r#"{"transactions":[{"id":"t_1","amount":42.5,"merchantName":"Coffee Lab","createdAt":"2026-11-20T09:15:00Z"},{"id":"t_2""#
        ));
        assert!(!got.body.contains("t_3"));
        assert!(got.body.contains(r#""userId":"u_2""#));
        assert_eq!(
            got.header("connection"),
            Some("close"),
            "HTTP/1.0 without keep-alive closes"
        );
    }

    #[test]
    fn composition_endpoints_answer_reviews_loyalty_and_v2_transfers() {
        let users = start(Service::Users, "users-1");
        let mut stream = connect(&users);
        let mut buf = Vec::new();
        stream
            .write_all(b"GET /reviews/p_1 HTTP/1.1\r\nHost: demo\r\n\r\n")
            .unwrap();
        let review = read_response(&mut stream, &mut buf, false);
        assert_eq!(review.status, 200);
        assert!(
            review.body.starts_with(r#"{"productId":"p_1","rating":"#),
            "{}",
            review.body
        );

        let accounts = start(Service::Accounts, "accounts-1");
        let mut stream = connect(&accounts);
        let mut buf = Vec::new();
        stream
            .write_all(b"GET /loyalty/u_1 HTTP/1.1\r\nHost: demo\r\n\r\n")
            .unwrap();
        let loyalty = read_response(&mut stream, &mut buf, false);
        assert!(
            loyalty.body.starts_with(r#"{"userId":"u_1","tier":"gold""#),
            "{}",
            loyalty.body
        );

        let body = r#"{"sourceAccountId":"a_1","destinationAccountId":"a_2","transferAmount":{"value":25,"currency":"USD"},"initiatedAt":"2026-12-06T10:00:00Z"}"#;
        let request = format!(
            "POST /v2/transfers HTTP/1.1\r\nHost: demo\r\nX-Api-Version: 2\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let created = read_response(&mut stream, &mut buf, false);
        assert_eq!(created.status, 201, "{}", created.body);
        let v: serde_json::Value = serde_json::from_str(&created.body).unwrap();
        assert_eq!(v["sourceAccountId"], "a_1");
        assert_eq!(v["transferAmount"]["value"], 25);
        assert_eq!(v["status"], "completed");
        assert_eq!(v["apiVersion"], "2");

        stream
            .write_all(b"POST /v2/transfers HTTP/1.1\r\nHost: demo\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap();
        assert_eq!(read_response(&mut stream, &mut buf, false).status, 400);
        stream
            .write_all(b"GET /v2/transfers HTTP/1.1\r\nHost: demo\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut stream, &mut buf, false).status, 405);
    }

    #[test]
    fn sample_upstreams_start_on_free_ports_and_stop_on_drop() {
        let ports = DemoPorts {
            users: [0, 0],
            users_v2: 0,
            accounts: 0,
            transactions: 0,
            ..DemoPorts::default()
        };
        let upstreams = SampleUpstreams::start(&ports).unwrap();
        assert_eq!(upstreams.servers().len(), 5);
        let v2 = upstreams.addr("users-v2").unwrap();
        let mut stream = TcpStream::connect(v2).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /users/1 HTTP/1.1\r\nHost: demo\r\n\r\n")
            .unwrap();
        let got = read_response(&mut stream, &mut Vec::new(), false);
        assert!(
            got.body.contains(r#""fullName":"Ada Lovelace""#),
            "{}",
            got.body
        );
        assert!(upstreams.describe().contains("users-2"));
        drop(stream);

        drop(upstreams);
        assert!(
            TcpStream::connect(v2).is_err(),
            "listener closed after drop"
        );
    }
}
