//! HTTP/1.1 message framing shared by the test client and the test upstream: a buffered reader
//! over a `TcpStream` that reads heads, Content-Length bodies, chunked bodies and bodies that
//! end at close, every read bounded by a deadline (or blocking, for an upstream waiting on an
//! idle keep-alive connection that its owner can shut down).
//!
//! It is deliberately strict (CRLF line ends, token header names, no obs-fold, no bad bytes):
//! what the gateway sends must be well-formed, and a lax reader would hide its bugs.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Why a read did not produce what was asked.
#[derive(Debug)]
pub enum WireError {
    /// The deadline passed; `got` holds what had arrived for the current message.
    Timeout { got: Vec<u8> },
    /// The peer closed (FIN) or reset the connection. `partial` holds bytes of an unfinished
    /// message (empty when it closed cleanly between messages).
    Closed { partial: Vec<u8>, reset: bool },
    /// The bytes are not valid HTTP/1.1 framing.
    Malformed(String),
    /// Any other socket error.
    Io(io::Error),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Timeout { got } => {
                write!(f, "timed out; received so far: {:?}", preview(got))
            }
            WireError::Closed { partial, reset } => write!(
                f,
                "connection {} by peer; unfinished message bytes: {:?}",
                if *reset { "reset" } else { "closed" },
                preview(partial)
            ),
            WireError::Malformed(m) => write!(f, "malformed HTTP: {m}"),
            WireError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Printable view of (the start of) some bytes, for failure messages.
pub fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 600;
    let shown = &bytes[..bytes.len().min(MAX)];
    let mut s = String::from_utf8_lossy(shown).into_owned();
    if bytes.len() > MAX {
        s.push_str(&format!("... ({} bytes in all)", bytes.len()));
    }
    s
}

/// Header fields in arrival order, names as sent.
pub type Headers = Vec<(String, String)>;

/// First value of `name` (case-insensitive).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of `name` (case-insensitive), in order.
pub fn header_all<'a>(headers: &'a Headers, name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// All values of `name` split on commas, trimmed, lower-cased (for list headers such as
/// `Connection` and `Transfer-Encoding`).
pub fn header_tokens(headers: &Headers, name: &str) -> Vec<String> {
    header_all(headers, name)
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits a head (start line + fields, with or without the final empty line) into the start
/// line and the header fields.
pub fn parse_head(head: &[u8]) -> Result<(String, Headers), WireError> {
    let text = if let Some(t) = head.strip_suffix(b"\r\n\r\n") {
        t
    } else if let Some(t) = head.strip_suffix(b"\r\n") {
        t
    } else {
        head
    };
    let mut lines = Vec::new();
    let mut rest = text;
    loop {
        match find(rest, b"\r\n") {
            Some(i) => {
                lines.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }
    let start = lines[0];
    if start.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Err(WireError::Malformed(format!(
            "bare CR or LF in start line {:?}",
            preview(start)
        )));
    }
    let start = String::from_utf8(start.to_vec())
        .map_err(|_| WireError::Malformed(format!("non-UTF-8 start line {:?}", preview(start))))?;
    let mut headers = Vec::new();
    for line in &lines[1..] {
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(WireError::Malformed(format!(
                "obs-fold line {:?}",
                preview(line)
            )));
        }
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
            WireError::Malformed(format!("header without colon {:?}", preview(line)))
        })?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(WireError::Malformed(format!(
                "bad header name {:?}",
                preview(name)
            )));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(WireError::Malformed(format!(
                "bad header value bytes {:?}",
                preview(line)
            )));
        }
        let value = String::from_utf8_lossy(value)
            .trim_matches([' ', '\t'])
            .to_string();
        headers.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    Ok((start, headers))
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The message-body length rule of RFC 9112 §6.3 for one message, as decided by its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Framing from headers, rejecting what an intermediary must never send: Content-Length with
/// Transfer-Encoding, conflicting Content-Length values, a transfer coding other than chunked.
/// `until_close_allowed`: responses may be delimited by close; requests may not.
pub fn body_kind(headers: &Headers, until_close_allowed: bool) -> Result<BodyKind, WireError> {
    let te = header_tokens(headers, "transfer-encoding");
    let cls = header_all(headers, "content-length");
    if !te.is_empty() && !cls.is_empty() {
        return Err(WireError::Malformed(
            "both Content-Length and Transfer-Encoding".into(),
        ));
    }
    if !te.is_empty() {
        if te != ["chunked"] {
            return Err(WireError::Malformed(format!(
                "unexpected Transfer-Encoding {te:?}"
            )));
        }
        return Ok(BodyKind::Chunked);
    }
    if !cls.is_empty() {
        let mut value: Option<u64> = None;
        for v in cls.iter().flat_map(|v| v.split(',')) {
            let v = v.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(WireError::Malformed(format!("bad Content-Length {v:?}")));
            }
            let n: u64 = v
                .parse()
                .map_err(|_| WireError::Malformed(format!("bad Content-Length {v:?}")))?;
            if value.is_some_and(|old| old != n) {
                return Err(WireError::Malformed(
                    "conflicting Content-Length values".into(),
                ));
            }
            value = Some(n);
        }
        return Ok(BodyKind::Length(value.unwrap_or(0)));
    }
    Ok(if until_close_allowed {
        BodyKind::UntilClose
    } else {
        BodyKind::None
    })
}

/// Buffered, deadline-bounded reading of HTTP/1.1 messages from one connection.
pub struct WireReader {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

/// Read buffer size; reads never buffer more than this beyond what the caller consumes.
const READ_CHUNK: usize = 64 * 1024;

impl WireReader {
    pub fn new(stream: TcpStream) -> WireReader {
        WireReader {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Takes all buffered bytes.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let out = self.buf[self.pos..].to_vec();
        self.buf.clear();
        self.pos = 0;
        out
    }

    fn consume(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        out
    }

    /// Reads more bytes into the buffer. Ok(0) is EOF. `deadline` None blocks.
    pub fn fill(&mut self, deadline: Option<Instant>) -> Result<usize, WireError> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let timeout = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(WireError::Timeout { got: Vec::new() });
                }
                Some((d - now).max(Duration::from_millis(1)))
            }
            None => None,
        };
        self.stream
            .set_read_timeout(timeout)
            .map_err(WireError::Io)?;
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(WireError::Timeout { got: Vec::new() })
                }
                Err(e)
                    if e.kind() == io::ErrorKind::ConnectionReset
                        || e.kind() == io::ErrorKind::ConnectionAborted
                        || e.kind() == io::ErrorKind::BrokenPipe =>
                {
                    return Err(WireError::Closed {
                        partial: Vec::new(),
                        reset: true,
                    })
                }
                Err(e) => return Err(WireError::Io(e)),
            }
        }
    }

    /// Like `fill`, but EOF becomes `Closed` carrying `partial`, and a timeout carries it too.
    fn fill_more(&mut self, deadline: Option<Instant>, partial: &[u8]) -> Result<(), WireError> {
        match self.fill(deadline) {
            Ok(0) => Err(WireError::Closed {
                partial: partial.to_vec(),
                reset: false,
            }),
            Ok(_) => Ok(()),
            Err(WireError::Timeout { .. }) => Err(WireError::Timeout {
                got: partial.to_vec(),
            }),
            Err(WireError::Closed { reset, .. }) => Err(WireError::Closed {
                partial: partial.to_vec(),
                reset,
            }),
            Err(e) => Err(e),
        }
    }

    /// Reads one head, through the empty line. Returns the raw bytes, terminator included.
    /// A clean EOF before any byte is `Closed { partial: [] }`.
    pub fn read_head(
        &mut self,
        deadline: Option<Instant>,
        max: usize,
    ) -> Result<Vec<u8>, WireError> {
        let mut scanned: usize = 0;
        loop {
            let avail = &self.buf[self.pos..];
            let from = scanned.saturating_sub(3);
            if let Some(i) = find(&avail[from..], b"\r\n\r\n") {
                return Ok(self.consume(from + i + 4));
            }
            scanned = avail.len();
            if scanned > max {
                return Err(WireError::Malformed(format!(
                    "head longer than {max} bytes: {:?}",
                    preview(avail)
                )));
            }
            let partial = avail.to_vec();
            self.fill_more(deadline, &partial)?;
        }
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    pub fn read_line(
        &mut self,
        deadline: Option<Instant>,
        max: usize,
    ) -> Result<Vec<u8>, WireError> {
        loop {
            let avail = &self.buf[self.pos..];
            if let Some(i) = find(avail, b"\r\n") {
                let mut line = self.consume(i + 2);
                line.truncate(i);
                return Ok(line);
            }
            if avail.len() > max {
                return Err(WireError::Malformed(format!(
                    "line too long: {:?}",
                    preview(avail)
                )));
            }
            let partial = avail.to_vec();
            self.fill_more(deadline, &partial)?;
        }
    }

    /// Reads exactly `n` bytes, handing them to `sink` piece by piece (never holding more than
    /// one read buffer).
    pub fn read_exact_into(
        &mut self,
        mut n: u64,
        deadline: Option<Instant>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), WireError> {
        while n > 0 {
            if self.pos == self.buf.len() {
                self.fill_more(deadline, &[])?;
                continue;
            }
            let take = (self.buf.len() - self.pos).min(usize::try_from(n).unwrap_or(usize::MAX));
            sink(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            n -= take as u64;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(())
    }

    /// Reads a chunked body (RFC 9112 §7.1), handing decoded data to `sink`. Returns the chunk
    /// sizes seen (without the last, zero one) and the trailer fields.
    pub fn read_chunked_into(
        &mut self,
        deadline: Option<Instant>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(Vec<u64>, Headers), WireError> {
        let mut sizes = Vec::new();
        loop {
            let line = self.read_line(deadline, 4096)?;
            let size_part = line.split(|&b| b == b';').next().unwrap_or(&[]);
            let size_text = std::str::from_utf8(size_part)
                .map_err(|_| WireError::Malformed(format!("chunk size {:?}", preview(&line))))?
                .trim_end_matches([' ', '\t']);
            if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(WireError::Malformed(format!(
                    "chunk size line {:?}",
                    preview(&line)
                )));
            }
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| WireError::Malformed(format!("chunk size {:?}", preview(&line))))?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let t = self.read_line(deadline, 16 * 1024)?;
                    if t.is_empty() {
                        break;
                    }
                    let mut fake = b"X\r\n".to_vec();
                    fake.extend_from_slice(&t);
                    let (_, mut h) = parse_head(&fake)?;
                    trailers.append(&mut h);
                }
                return Ok((sizes, trailers));
            }
            sizes.push(size);
            self.read_exact_into(size, deadline, sink)?;
            let end = self.read_line(deadline, 2)?;
            if !end.is_empty() {
                return Err(WireError::Malformed(format!(
                    "chunk data not followed by CRLF: {:?}",
                    preview(&end)
                )));
            }
        }
    }

    /// Reads until the peer closes, handing the bytes to `sink`.
    pub fn read_to_close_into(
        &mut self,
        deadline: Option<Instant>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), WireError> {
        loop {
            if self.pos < self.buf.len() {
                sink(&self.buf[self.pos..]);
                self.buf.clear();
                self.pos = 0;
            }
            match self.fill(deadline) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(WireError::Closed { reset: true, .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// `write_all` that maps a peer close to `WireError::Closed`.
pub fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), WireError> {
    stream.write_all(bytes).map_err(|e| match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => WireError::Closed {
            partial: Vec::new(),
            reset: true,
        },
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            WireError::Timeout { got: Vec::new() }
        }
        _ => WireError::Io(e),
    })
}
