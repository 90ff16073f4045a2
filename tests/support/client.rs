//! A raw-socket HTTP/1.1 client: sends exact bytes, reads responses with correct framing
//! (Content-Length, chunked, until close; no body for HEAD, 1xx, 204, 304), reads pipelined
//! responses in order, and tells whether the server closed the connection. Every read has a
//! deadline (`DEFAULT_TIMEOUT` unless changed), so a test never hangs on a silent gateway.

use super::wire::{self, body_kind, parse_head, preview, BodyKind, Headers, WireError, WireReader};
use serde_json::Value;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Bound on every read and write unless a test sets another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to send, rendered to exact bytes by `to_bytes`. By default `Host: localhost` is
/// added when no Host is given, and `Content-Length` when there is a body (or the method is
/// POST/PUT/PATCH) and no framing header was given.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    auto_host: bool,
    auto_length: bool,
}

impl Req {
    pub fn new(method: &str, target: &str) -> Req {
        Req {
            method: method.to_string(),
            target: target.to_string(),
            version: "HTTP/1.1".to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            auto_host: true,
            auto_length: true,
        }
    }

    pub fn get(target: &str) -> Req {
        Req::new("GET", target)
    }

    pub fn head(target: &str) -> Req {
        Req::new("HEAD", target)
    }

    pub fn post(target: &str, body: &[u8]) -> Req {
        Req::new("POST", target).body(body)
    }

    /// `method target` with `value` as a JSON body (`Content-Type: application/json`).
    pub fn json(method: &str, target: &str, value: &Value) -> Req {
        Req::new(method, target)
            .header("Content-Type", "application/json")
            .body(value.to_string().as_bytes())
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn host(self, host: &str) -> Req {
        self.header("Host", host)
    }

    pub fn body(mut self, body: &[u8]) -> Req {
        self.body = body.to_vec();
        self
    }

    /// Sends `chunks` as a chunked body (adds `Transfer-Encoding: chunked`).
    pub fn chunked(mut self, chunks: &[&[u8]]) -> Req {
        let mut body = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            body.extend_from_slice(c);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        self.body = body;
        self.header("Transfer-Encoding", "chunked")
    }

    pub fn version(mut self, version: &str) -> Req {
        self.version = version.to_string();
        self
    }

    /// Do not add `Host`.
    pub fn no_host(mut self) -> Req {
        self.auto_host = false;
        self
    }

    /// Do not add `Content-Length`.
    pub fn no_length(mut self) -> Req {
        self.auto_length = false;
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} {}\r\n", self.method, self.target, self.version);
        let has = |n: &str| self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if self.auto_host && !has("host") {
            head.push_str("Host: localhost\r\n");
        }
        for (n, v) in &self.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        let needs_length =
            !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH");
        if self.auto_length && needs_length && !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// One response as the client read it.
#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// Interim (1xx) responses received before this one, heads only.
    pub interim: Vec<Response>,
    /// Chunk sizes when the body was chunked, None otherwise.
    pub chunks: Option<Vec<u64>>,
    pub trailers: Headers,
    /// The head exactly as received.
    pub head_raw: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        wire::header_all(&self.headers, name)
    }

    /// Asserts that `Content-Type` starts with `prefix` (parameters such as a charset may follow).
    #[track_caller]
    pub fn assert_content_type(&self, prefix: &str) {
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with(prefix),
            "Content-Type {ct:?}, expected {prefix:?}: {:?}",
            self.headers
        );
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Comma-separated values of `name` over all its fields, trimmed and lower-cased.
    pub fn header_tokens(&self, name: &str) -> Vec<String> {
        wire::header_tokens(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the response if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} headers {:?} body {:?}",
                self.status,
                self.headers,
                preview(&self.body)
            )
        })
    }

    /// Whether this response lets the connection stay open (per its version and Connection).
    pub fn keeps_alive(&self) -> bool {
        let tokens = self.header_tokens("connection");
        if tokens.iter().any(|t| t == "close") {
            return false;
        }
        self.version == "HTTP/1.1" || tokens.iter().any(|t| t == "keep-alive")
    }
}

/// A client connection.
pub struct Client {
    reader: WireReader,
    writer: TcpStream,
    timeout: Duration,
}

impl Client {
    /// Connects to `addr`; panics on failure.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT)?;
        Client::from_stream(stream)
    }

    /// Connects from a chosen loopback source address (any of 127.0.0.0/8 works on Linux), so
    /// a test can be several client IPs.
    pub fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::from((source, 0)).into())
            .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        socket
            .connect_timeout(&addr.into(), DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr} from {source}: {e}"));
        Client::from_stream(socket.into()).expect("client from socket")
    }

    fn from_stream(stream: TcpStream) -> io::Result<Client> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
        let writer = stream.try_clone()?;
        Ok(Client {
            reader: WireReader::new(stream),
            writer,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Changes the bound on each read and write.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        let _ = self.writer.set_write_timeout(Some(timeout));
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.writer.local_addr().expect("local_addr")
    }

    fn deadline(&self) -> Option<Instant> {
        Some(Instant::now() + self.timeout)
    }

    /// Sends exact bytes; panics if the connection is gone.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("sending {:?}: {e}", preview(bytes)));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        wire::write_all(&mut self.writer, bytes)
    }

    /// A second handle on the socket, for writing from another thread while this one reads.
    pub fn writer_clone(&self) -> TcpStream {
        self.writer.try_clone().expect("clone client socket")
    }

    /// Half-closes the connection (FIN) after what was sent.
    pub fn shutdown_write(&mut self) {
        let _ = self.writer.shutdown(Shutdown::Write);
    }

    /// Sends `req` and reads its response (no body expected for HEAD).
    pub fn request(&mut self, req: &Req) -> Response {
        self.send(&req.to_bytes());
        self.read_response_for(&req.method)
    }

    /// Reads one final response to a non-HEAD request; panics on any error.
    pub fn read_response(&mut self) -> Response {
        self.read_response_for("GET")
    }

    /// Reads one final response to a request with `method`; panics on any error.
    pub fn read_response_for(&mut self, method: &str) -> Response {
        self.try_read_response_for(method)
            .unwrap_or_else(|e| panic!("reading response: {e}"))
    }

    pub fn try_read_response(&mut self) -> Result<Response, WireError> {
        self.try_read_response_for("GET")
    }

    /// Reads interim responses and then one final response to a request with `method`.
    pub fn try_read_response_for(&mut self, method: &str) -> Result<Response, WireError> {
        let mut interim = Vec::new();
        loop {
            let mut head = self.read_head()?;
            if (100..200).contains(&head.status) && head.status != 101 {
                interim.push(head);
                continue;
            }
            head.interim = interim;
            self.read_body(&mut head, method)?;
            return Ok(head);
        }
    }

    /// Reads `n` pipelined responses to GET requests, in order.
    pub fn read_responses(&mut self, n: usize) -> Vec<Response> {
        (0..n)
            .map(|i| {
                self.try_read_response()
                    .unwrap_or_else(|e| panic!("reading pipelined response {}: {e}", i + 1))
            })
            .collect()
    }

    /// Reads one head (interim or final) without its body.
    pub fn read_head(&mut self) -> Result<Response, WireError> {
        let raw = self.reader.read_head(self.deadline(), 1 << 20)?;
        let (start, headers) = parse_head(&raw)?;
        let mut parts = start.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let code = parts.next().unwrap_or("");
        let reason = parts.next().unwrap_or("").to_string();
        if !version.starts_with("HTTP/1.") || code.len() != 3 {
            return Err(WireError::Malformed(format!("status line {start:?}")));
        }
        let status = code
            .parse()
            .map_err(|_| WireError::Malformed(format!("status line {start:?}")))?;
        Ok(Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            interim: Vec::new(),
            chunks: None,
            trailers: Vec::new(),
            head_raw: raw,
        })
    }

    /// Reads the body that belongs to `head` (a response to `method`) into `head.body`.
    pub fn read_body(&mut self, head: &mut Response, method: &str) -> Result<(), WireError> {
        let mut body = Vec::new();
        self.read_body_into(head, method, &mut |b| body.extend_from_slice(b))?;
        head.body = body;
        Ok(())
    }

    /// Reads the body that belongs to `head` without keeping it; returns its length. Like every
    /// read, the whole body must arrive within the timeout (raise it for large bodies).
    pub fn read_body_counting(
        &mut self,
        head: &mut Response,
        method: &str,
    ) -> Result<u64, WireError> {
        let mut n = 0u64;
        self.read_body_into(head, method, &mut |b| n += b.len() as u64)?;
        Ok(n)
    }

    fn read_body_into(
        &mut self,
        head: &mut Response,
        method: &str,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), WireError> {
        let deadline = self.deadline();
        if method.eq_ignore_ascii_case("HEAD") || matches!(head.status, 204 | 304) {
            return Ok(());
        }
        let mut body = Vec::new();
        let mut sink = |b: &[u8]| {
            if body.len() < 4096 {
                body.extend_from_slice(&b[..b.len().min(4096 - body.len())]);
            }
            sink(b)
        };
        let result = match body_kind(&head.headers, true)? {
            BodyKind::None => Ok(()),
            BodyKind::Length(n) => self.reader.read_exact_into(n, deadline, &mut sink),
            BodyKind::Chunked => match self.reader.read_chunked_into(deadline, &mut sink) {
                Ok((sizes, trailers)) => {
                    head.chunks = Some(sizes);
                    head.trailers = trailers;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            BodyKind::UntilClose => self.reader.read_to_close_into(deadline, &mut sink),
        };
        match result {
            Ok(()) => Ok(()),
            // Report the head and (the start of) the body bytes that did arrive.
            Err(WireError::Closed { reset, .. }) => {
                let mut partial = head.head_raw.clone();
                partial.extend_from_slice(&body);
                Err(WireError::Closed { partial, reset })
            }
            Err(WireError::Timeout { .. }) => {
                let mut got = head.head_raw.clone();
                got.extend_from_slice(&body);
                Err(WireError::Timeout { got })
            }
            Err(e) => Err(e),
        }
    }

    /// Reads whatever arrives next (at least one byte), up to the timeout. Ok(empty) is EOF.
    pub fn read_some(&mut self) -> Result<Vec<u8>, WireError> {
        if !self.reader.buffered().is_empty() {
            return Ok(self.reader.take_buffered());
        }
        self.reader.fill(self.deadline())?;
        Ok(self.reader.take_buffered())
    }

    /// Reads until the peer closes or `within` passes. Ok(bytes received before the close)
    /// when it closed (FIN or RST); Err(Timeout) when it is still open.
    pub fn wait_closed(&mut self, within: Duration) -> Result<Vec<u8>, WireError> {
        let end = Instant::now() + within;
        let mut got = self.reader.take_buffered();
        loop {
            match self.reader.fill(Some(end)) {
                Ok(0) => return Ok(got),
                Ok(_) => got.extend(self.reader.take_buffered()),
                Err(WireError::Closed { .. }) => return Ok(got),
                Err(WireError::Timeout { .. }) => return Err(WireError::Timeout { got }),
                Err(e) => return Err(e),
            }
        }
    }

    /// Panics unless the server closes the connection within `within` without sending
    /// anything more.
    pub fn assert_closed(&mut self, within: Duration) {
        match self.wait_closed(within) {
            Ok(bytes) if bytes.is_empty() => {}
            Ok(bytes) => panic!(
                "connection closed, but only after sending more bytes: {:?}",
                preview(&bytes)
            ),
            Err(WireError::Timeout { got }) => panic!(
                "connection still open after {within:?} (it should have been closed); received meanwhile: {:?}",
                preview(&got)
            ),
            Err(e) => panic!("waiting for close: {e}"),
        }
    }
}

/// Sends `req` on a new connection to `addr` and reads the response.
pub fn send_request(addr: SocketAddr, req: &Req) -> Response {
    Client::connect(addr).request(req)
}

/// `GET target` on a new connection.
pub fn get(addr: SocketAddr, target: &str) -> Response {
    send_request(addr, &Req::get(target))
}
