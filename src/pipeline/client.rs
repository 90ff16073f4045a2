//! [`ClientIo`]: the client side of one connection as the pipeline sees it. The stream layer's
//! buffered connection, plus the two buffers an exchange fills: the client-bound response head
//! (and small bodies), and the upstream-bound request head (and the replayable part of the
//! body). `server::conn` owns the connection loop around it; the phases read the request body
//! from it and write the answer to it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http;
use crate::io::{BufConn, ReadEnd, Stream};

/// Initial capacity of a connection's read buffer; it grows to the head limits when needed.
const READ_BUF: usize = 8 * 1024;
/// Lingering close: how long a closing connection keeps reading (and discarding) what the
/// client still sends, as nginx's lingering_time does. Not capped by bytes: stopping early
/// while the client still sends would reset the connection under the response.
const LINGER: Duration = Duration::from_secs(2);

/// The client side of a connection: the buffered stream, plus the two buffers a request's
/// exchange fills (the client-bound head and small bodies; the upstream-bound head and the
/// replayable part of the request body).
pub struct ClientIo {
    pub io: BufConn,
    pub peer: SocketAddr,
    /// The connection is TLS (terminated here).
    pub tls: bool,
    /// Client-bound bytes (response heads, small bodies).
    pub wbuf: Vec<u8>,
    /// Upstream-bound bytes (request head and the replayable part of the body).
    pub ubuf: Vec<u8>,
    /// What the request being answered accepts of compression (the compression phase reads
    /// it for every answer written here); None between requests and for refused heads.
    pub offer: Option<super::compress::Offer>,
}

impl ClientIo {
    /// `stream` is an accepted connection: TCP, or TLS with its handshake done.
    pub fn new(stream: Stream, peer: SocketAddr) -> ClientIo {
        ClientIo {
            tls: matches!(stream, Stream::TlsServer(_)),
            io: BufConn::new(stream, READ_BUF),
            peer,
            wbuf: Vec::new(),
            ubuf: Vec::new(),
            offer: None,
        }
    }

    pub fn data(&self) -> &[u8] {
        self.io.data()
    }

    pub fn consume(&mut self, n: usize) {
        self.io.consume(n);
    }

    /// Reads at least one more byte within `timeout`, keeping unconsumed bytes; `max` bounds
    /// how large the buffer may grow (the head limits while reading a head).
    pub async fn fill(&mut self, timeout: Duration, max: usize) -> Result<usize, ReadEnd> {
        self.io.fill(timeout, max).await
    }

    /// Closes gracefully (the stream layer's lingering close, for up to `LINGER`).
    pub async fn linger(&mut self) {
        self.io.linger(LINGER).await;
    }

    /// Between requests, gives back buffer space a large request or response needed, so an
    /// idle keep-alive connection holds a few KiB, not the peak of its last exchange.
    pub fn shrink_idle(&mut self) {
        const KEEP: usize = 16 * 1024;
        self.io.shrink_idle(KEEP);
        if self.wbuf.capacity() > KEEP {
            self.wbuf = Vec::new();
        }
        if self.ubuf.capacity() > KEEP {
            self.ubuf = Vec::new();
        }
    }

    /// Writes and clears `wbuf`.
    pub async fn flush(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.io.write_buf(&mut self.wbuf, timeout).await
    }

    /// Writes `buf[start..end]` from a buffer the caller owns (an upstream read buffer), so
    /// large bodies are not copied; the buffer comes back unless the write timed out.
    pub async fn write_from(
        &mut self,
        buf: Vec<u8>,
        start: usize,
        end: usize,
        timeout: Duration,
    ) -> (std::io::Result<()>, Option<Vec<u8>>) {
        self.io.write(buf, start, end, timeout).await
    }

    /// Writes an answer the gateway makes itself (BEHAVIOR.md's JSON error, a fallback, a
    /// stored response, or a bodiless 204), with `X-Request-Id`, and `Allow` / `Retry-After`
    /// where it has them, compressed when the request's offer and the rules allow.
    pub async fn send_response(
        &mut self,
        r: &super::Response,
        timeout: Duration,
    ) -> std::io::Result<()> {
        use super::Body;
        let rate = r.rate.map(|h| h.text());
        let cache = r.cache.map(|c| c.text());
        let added = super::respond::phases(&super::respond::Answering {
            id: &r.id,
            rate: rate.as_ref(),
            cache: cache.as_ref(),
        });
        let start = self.wbuf.len();
        if let Body::Stored(stored) = &r.body {
            super::phase::cache::write_stored(
                &mut self.wbuf,
                stored,
                r.head_only,
                &added,
                r.close,
                r.http10,
            );
            // The cache holds what the upstream sent: a hit is compressed for its requester.
            super::compress::whole(&mut self.wbuf, start, self.offer.as_ref());
            return self.flush(timeout).await;
        }
        let mut extra: smallvec::SmallVec<[(&str, &str); 6]> =
            added.iter().map(|a| (a.name, a.value)).collect();
        if let Some(allow) = &r.allow {
            extra.push(("Allow", allow.as_str()));
        }
        if let Some(challenge) = r.challenge {
            extra.push(("WWW-Authenticate", challenge));
        }
        let head_len = match &r.body {
            // Written above.
            Body::Stored(_) => 0,
            Body::Empty => {
                http::write::empty_response(&mut self.wbuf, r.status, &extra, r.close);
                return self.flush(timeout).await;
            }
            Body::Json(json) => http::write::json_response(
                &mut self.wbuf,
                r.status,
                json,
                r.retry_after,
                &extra,
                r.close,
            ),
            Body::Error(message) => http::write::error_response(
                &mut self.wbuf,
                r.status,
                message,
                r.id.as_str(),
                r.retry_after,
                &extra,
                r.close,
            ),
        };
        if r.head_only {
            // RFC 9110 §9.3.2: the head a GET would get, without its body.
            self.wbuf.truncate(start + head_len);
        }
        // The last response phase: the gateway's answers pass the same rule as any other
        // (an aggregate's composite; an error is below `min_size` in practice).
        super::compress::whole(&mut self.wbuf, start, self.offer.as_ref());
        self.flush(timeout).await
    }
}
