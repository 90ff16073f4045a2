//! A minimal RFC 6455 client and echo upstream for the WebSocket tunnel tests.
//!
//! - [`WsClient`]: sends the opening handshake over a plain socket, reads the answer's head,
//!   then sends masked frames (text, binary, close; no fragmentation) and reads the server's
//!   unmasked ones.
//! - [`WsUpstream`]: a server that answers the handshake (`Sec-WebSocket-Accept` =
//!   base64(SHA-1(key + GUID)), RFC 6455 §4.2.2), echoes each data frame, and records what it
//!   saw (`head`, each frame, the end of its input) as [`Seen`] events. A text frame `close`
//!   makes it start the closing handshake itself: a close frame, then a shutdown of its write
//!   half, reading on until the client's input ends. A client's close frame is echoed. When
//!   its input ends (the client's FIN) with no close frame exchanged, it says so in a last
//!   text frame, `eof seen`, before closing: the proof that the other direction still flowed
//!   after the half-close.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

/// RFC 6455 §1.3: appended to the key before hashing.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The opcodes used here (RFC 6455 §5.2).
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A fresh `Sec-WebSocket-Key`: 16 bytes (from the clock and a counter: unique, not secret).
pub fn new_key() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&t.to_le_bytes());
    nonce[8..].copy_from_slice(&n.to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// One frame as written on the wire: FIN set, `mask` applied when given (client frames).
pub fn encode(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xffff => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame's payload: the status code (RFC 6455 §5.5.1).
pub fn close_payload(code: u16) -> Vec<u8> {
    code.to_be_bytes().to_vec()
}

/// Reads one frame (unmasking it when masked): Ok(None) when the input ended cleanly before
/// a frame began.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut first = [0u8; 2];
    match r.read(&mut first[..1])? {
        0 => return Ok(None),
        _ => r.read_exact(&mut first[1..])?,
    }
    let opcode = first[0] & 0x0f;
    let masked = first[1] & 0x80 != 0;
    let len = match first[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask)?;
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some((opcode, payload)))
}

/// Reads an HTTP head (through the blank line) byte by byte, so nothing after it is taken.
pub fn read_head(r: &mut impl Read) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if r.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed inside a head: {:?}", String::from_utf8_lossy(&head)),
            ));
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The value of header `name` in a head read by [`read_head`].
pub fn head_header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The status code of a head read by [`read_head`].
pub fn head_status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The opening handshake for `path`: GET, `Upgrade: websocket`, `Connection: Upgrade`, the
/// key, version 13.
pub fn handshake_request(path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A WebSocket client over a plain socket (through the gateway).
pub struct WsClient {
    pub stream: TcpStream,
    /// The head of the handshake's answer.
    pub head: String,
    pub key: String,
}

impl WsClient {
    /// Connects to `addr` and sends the handshake for `path` (and `early`, bytes sent right
    /// behind the head in the same write, as a client may send a first frame); reads the
    /// answer's head. Reads time out after 10 s.
    pub fn open_with(addr: SocketAddr, path: &str, early: &[u8]) -> WsClient {
        let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let key = new_key();
        let mut first = handshake_request(path, &key).into_bytes();
        first.extend_from_slice(early);
        stream.write_all(&first).expect("send the handshake");
        let head = read_head(&mut stream).expect("the handshake's answer");
        WsClient { stream, head, key }
    }

    /// [`WsClient::open_with`] with nothing behind the head; asserts the switch: 101 with the
    /// right `Sec-WebSocket-Accept` and the upgrade's `Connection` and `Upgrade`.
    pub fn open(addr: SocketAddr, path: &str) -> WsClient {
        let c = WsClient::open_with(addr, path, b"");
        c.assert_switched();
        c
    }

    pub fn assert_switched(&self) {
        let head = &self.head;
        assert_eq!(head_status(head), 101, "{head}");
        assert_eq!(
            head_header(head, "sec-websocket-accept"),
            Some(accept_key(&self.key).as_str()),
            "{head}"
        );
        assert!(
            head_header(head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
            "{head}"
        );
        assert!(
            head_header(head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
            "{head}"
        );
    }

    pub fn send(&mut self, opcode: u8, payload: &[u8]) {
        let frame = encode(opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]));
        self.stream.write_all(&frame).expect("send a frame");
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(TEXT, text.as_bytes());
    }

    pub fn send_close(&mut self, code: u16) {
        self.send(CLOSE, &close_payload(code));
    }

    /// The next frame; panics on a timeout, a close of the connection or a broken frame.
    pub fn recv(&mut self) -> (u8, Vec<u8>) {
        match read_frame(&mut self.stream) {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("the connection closed before a frame"),
            Err(e) => panic!("no frame: {e}"),
        }
    }

    /// The next frame, which must be a text frame; its text.
    pub fn recv_text(&mut self) -> String {
        let (opcode, payload) = self.recv();
        assert_eq!(opcode, TEXT, "{:?}", String::from_utf8_lossy(&payload));
        String::from_utf8(payload).expect("UTF-8 text")
    }

    /// Stops sending (FIN); reading goes on.
    pub fn shutdown_write(&mut self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
    }

    /// Waits (at most `within`) for the connection's end; true when it ended (EOF or reset)
    /// with no byte left unread.
    pub fn ends_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("a byte arrived where the end was awaited"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(_) => true,
        }
    }
}

/// What the echo upstream saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The handshake's request head.
    Head(String),
    Text(String),
    Binary(usize),
    Close(u16),
    /// A data or close frame that came after the upstream shut its write half down.
    AfterOwnEnd(u8),
    /// Its input ended (the client's FIN, passed on).
    Eof,
}

/// The echo upstream (see the module doc).
pub struct WsUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<Mutex<usize>>,
}

impl WsUpstream {
    pub fn start() -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (s, n) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                *n.lock().unwrap() += 1;
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        WsUpstream {
            addr,
            seen,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// Waits (at most `within`) until `what` was seen.
    pub fn wait_seen(&self, within: Duration, what: &Seen) -> bool {
        let end = Instant::now() + within;
        loop {
            if self.seen().contains(what) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The handshake head the upstream received (the first one).
    pub fn head(&self) -> String {
        self.seen()
            .into_iter()
            .find_map(|s| match s {
                Seen::Head(h) => Some(h),
                _ => None,
            })
            .expect("a handshake reached the upstream")
    }
}

fn serve(mut stream: TcpStream, seen: &Mutex<Vec<Seen>>) {
    let note = |s: Seen| seen.lock().unwrap().push(s);
    let Ok(head) = read_head(&mut stream) else {
        return;
    };
    note(Seen::Head(head.clone()));
    let Some(key) = head_header(&head, "sec-websocket-key") else {
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    );
    if stream.write_all(answer.as_bytes()).is_err() {
        return;
    }
    let mut closed_own = false;
    let mut close_received = false;
    loop {
        let frame = match read_frame(&mut stream) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                note(Seen::Eof);
                if !closed_own && !close_received {
                    let _ = stream.write_all(&encode(TEXT, b"eof seen", None));
                }
                return;
            }
            Err(_) => return,
        };
        let (opcode, payload) = frame;
        if closed_own {
            note(Seen::AfterOwnEnd(opcode));
            continue;
        }
        match opcode {
            TEXT => {
                let text = String::from_utf8_lossy(&payload).into_owned();
                note(Seen::Text(text.clone()));
                if text == "close" {
                    // The upstream starts the closing handshake and ends its sending.
                    let _ = stream.write_all(&encode(CLOSE, &close_payload(1000), None));
                    let _ = stream.shutdown(Shutdown::Write);
                    closed_own = true;
                    continue;
                }
                let _ = stream.write_all(&encode(TEXT, &payload, None));
            }
            BINARY => {
                note(Seen::Binary(payload.len()));
                let _ = stream.write_all(&encode(BINARY, &payload, None));
            }
            CLOSE => {
                let code = payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                note(Seen::Close(code));
                close_received = true;
                let _ = stream.write_all(&encode(CLOSE, &payload, None));
            }
            _ => {}
        }
    }
}
