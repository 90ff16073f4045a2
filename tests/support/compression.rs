//! Helpers for the compression tests (tests/compression.rs): decoders for what the gateway
//! sends (gzip with flate2, brotli), a chunked-framing reader for raw bytes, and an upstream
//! that streams a chunked body and holds its last chunk until the test releases it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// `bytes` decoded from `coding` (`gzip` or `br`); panics on a broken stream.
pub fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("a valid gzip stream"),
        "br" => brotli::Decompressor::new(bytes, 4096)
            .read_to_end(&mut out)
            .expect("a valid brotli stream"),
        other => panic!("no decoder for {other:?}"),
    };
    out
}

/// What of a chunked body `bytes` holds: the payload of its complete chunks, and whether
/// the last chunk (`0\r\n\r\n`) was among them. Panics on a framing error.
pub fn dechunk(bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = bytes[pos..].windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let line = std::str::from_utf8(&bytes[pos..pos + eol]).expect("ASCII size line");
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("chunk size line {line:?}"));
        let data = pos + eol + 2;
        if size == 0 {
            return (out, bytes.len() >= data + 2);
        }
        if bytes.len() < data + size + 2 {
            return (out, false);
        }
        out.extend_from_slice(&bytes[data..data + size]);
        assert_eq!(
            &bytes[data + size..data + size + 2],
            b"\r\n",
            "chunk ends in CRLF"
        );
        pos = data + size + 2;
    }
}

/// A text body of `len` bytes that compresses well but not trivially (numbered lines).
pub fn text_body(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("{{\"line\":{i},\"value\":\"v{}\"}}\n", i * 7919 % 1000).as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// An upstream for one request: it answers `200` with `Content-Type: text/plain` and a
/// chunked body of `chunks`, sending all of them but the last at once, and the last (with the
/// end of the body) only when [`HeldUpstream::release`] is called.
pub struct HeldUpstream {
    pub addr: SocketAddr,
    release: mpsc::Sender<()>,
    /// Set once the last chunk was written.
    finished: mpsc::Receiver<()>,
}

impl HeldUpstream {
    pub fn start(chunks: Vec<Vec<u8>>) -> HeldUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (release, released) = mpsc::channel::<()>();
        let (finish, finished) = mpsc::channel::<()>();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            // The request head: read until its end (the test sends no body).
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            let write_chunk = |s: &mut std::net::TcpStream, c: &[u8]| {
                let _ = s.write_all(format!("{:x}\r\n", c.len()).as_bytes());
                let _ = s.write_all(c);
                let _ = s.write_all(b"\r\n");
            };
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            let (last, first) = chunks.split_last().expect("at least one chunk");
            for c in first {
                write_chunk(&mut s, c);
            }
            let _ = s.flush();
            if released.recv_timeout(Duration::from_secs(20)).is_err() {
                return;
            }
            write_chunk(&mut s, last);
            let _ = s.write_all(b"0\r\n\r\n");
            let _ = finish.send(());
            // Hold the connection until the gateway is done with it.
            let _ = s.read(&mut byte);
        });
        HeldUpstream {
            addr,
            release,
            finished,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets the upstream send its last chunk.
    pub fn release(&self) {
        let _ = self.release.send(());
    }

    /// Whether the last chunk has been written (without waiting).
    pub fn last_sent(&self) -> bool {
        self.finished.try_recv().is_ok()
    }
}
