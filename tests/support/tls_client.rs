//! A small blocking TLS client for the TLS termination tests: rustls over a std `TcpStream`
//! (`rustls::StreamOwned`), sending raw HTTP/1.1 bytes and reading one response at a time
//! (Content-Length or chunked bodies), with the session's facts (peer certificate, version,
//! ALPN, whether it resumed) at hand.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::wire::{self, BodyKind, Headers};

/// How long any one read may block.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TlsClient {
    s: StreamOwned<ClientConnection, TcpStream>,
    /// Plaintext read and not yet returned as part of a response.
    buf: Vec<u8>,
}

/// One response: status, fields and the body de-framed.
#[derive(Debug)]
pub struct TlsResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl TlsResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TlsClient {
    /// Connects and completes the handshake, sending SNI `sni` when it is a DNS name (an IP
    /// address is sent as none, as RFC 6066 §3 says). Panics if the handshake fails.
    pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>, sni: &str) -> TlsClient {
        TlsClient::try_connect(addr, config, sni)
            .unwrap_or_else(|e| panic!("TLS handshake with {addr} as {sni:?} failed: {e}"))
    }

    /// Like `connect`, returning the handshake's error.
    pub fn try_connect(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        sni: &str,
    ) -> io::Result<TlsClient> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(READ_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(sni.to_string()).map_err(io::Error::other)?;
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(TlsClient { s, buf: Vec::new() })
    }

    /// The server's end-entity certificate, DER.
    pub fn peer_cert(&self) -> Vec<u8> {
        self.s
            .conn
            .peer_certificates()
            .expect("a server certificate")[0]
            .to_vec()
    }

    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.s.conn.protocol_version()
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.s.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    pub fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        self.s.conn.handshake_kind()
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.s.write_all(bytes)?;
        self.s.flush()
    }

    /// `GET target` with `Host: host`, keep-alive; the response.
    pub fn get(&mut self, target: &str) -> TlsResponse {
        let req = format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\n\r\n");
        self.send(req.as_bytes()).expect("send");
        self.read_response().expect("a response")
    }

    /// Reads one response (Content-Length or chunked body; none for 204/304).
    pub fn read_response(&mut self) -> io::Result<TlsResponse> {
        let head_end = loop {
            if let Some(i) = wire::find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head: Vec<u8> = self.buf.drain(..head_end).collect();
        let (start, headers) = wire::parse_head(&head).map_err(io::Error::other)?;
        let status: u16 = start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {start:?}")))?;
        let kind = if status == 204 || status == 304 {
            BodyKind::None
        } else {
            wire::body_kind(&headers, true).map_err(io::Error::other)?
        };
        let body = match kind {
            BodyKind::None => Vec::new(),
            BodyKind::Length(n) => self.take(n as usize)?,
            BodyKind::Chunked => {
                let mut body = Vec::new();
                loop {
                    let line = self.line()?;
                    let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                        .map_err(io::Error::other)?;
                    if size == 0 {
                        // Trailers, then the empty line.
                        while !self.line()?.is_empty() {}
                        break;
                    }
                    body.extend(self.take(size)?);
                    self.line()?;
                }
                body
            }
            BodyKind::UntilClose => {
                while self.fill()? > 0 {}
                std::mem::take(&mut self.buf)
            }
        };
        Ok(TlsResponse {
            status,
            headers,
            body,
        })
    }

    /// Reads until the peer closes or fails: what arrived meanwhile (Ok), or the error.
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.fill() {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(std::mem::take(&mut self.buf))
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.s.read(&mut chunk)?;
        if n == 0 && self.buf.is_empty() {
            return Ok(0);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(n)
    }

    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = wire::find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// Writes `bytes` on a plain TCP connection to `addr` and reads until the peer closes (at most
/// `within`): what came back. For plaintext and garbage sent to a TLS port.
pub fn send_plain(addr: SocketAddr, bytes: &[u8], within: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("{addr} did not close within {within:?}: {e}; read {out:?}"),
        }
    }
}
