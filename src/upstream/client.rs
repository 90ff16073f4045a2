//! One upstream HTTP/1.1 connection: connect with a timeout, write, read with a timeout.
//!
//! To an `https://` endpoint the connect is TCP then the TLS handshake ([`TlsConnect`]), both
//! within the one connect timeout; a certificate that does not verify, or a handshake that
//! fails, is a connect failure like a refused connection (retried on another endpoint, counted
//! by the breaker and outlier detection). Once connected, TLS changes nothing above the stream
//! layer: pooling, the liveness peek and the exchange are those of a plain connection.
//!
//! [`UpConn`] is the stream layer's [`BufConn`] plus what the pool and the retry rules need to
//! know of it (endpoint, reuse, whether the current request was accepted). The response head is
//! parsed zero-copy from its read buffer by the pipeline; a read or write that times out is
//! cancelled and the connection is never reused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::io::tls::ClientTls;
use crate::io::{BufConn, Peek, ReadEnd, Stream};

use super::UpstreamError;

/// Initial read buffer per upstream connection; grows up to the response head limit.
const READ_BUF: usize = 16 * 1024;

/// What a connect to an `https://` endpoint needs besides its address.
#[derive(Clone, Debug)]
pub struct TlsConnect {
    /// Roots, client certificate, ALPN and the session store (a worker's own, see
    /// `config::model::UpstreamTls::per_worker`).
    pub config: Arc<ClientConfig>,
    /// The name the certificate is verified for (and sent in SNI when it is a DNS name).
    pub name: ServerName<'static>,
}

pub struct UpConn {
    /// The stream layer's buffered connection; `io.data()` is received and not yet consumed.
    pub io: BufConn,
    pub addr: SocketAddr,
    /// True when this connection served an earlier request (pool hit).
    pub reused: bool,
    /// `io.bytes_out` when the current request began: once the kernel has taken more than
    /// that, the upstream may have seen (and acted on) the request.
    sent_before: u64,
    pub(super) idle_since: Instant,
    /// Counts this connection in `dispatch_connections_active{side="upstream"}` while it lives.
    gauge: Option<std::rc::Rc<crate::metrics::WorkerMetrics>>,
}

impl Drop for UpConn {
    fn drop(&mut self) {
        if let Some(m) = &self.gauge {
            m.connection_closed(crate::metrics::Side::Upstream);
        }
    }
}

impl UpConn {
    /// Connects to `addr`, over TLS when `tls` is given, within `timeout` (the handshake
    /// included: an upstream that accepts and then stalls the handshake is a connect timeout).
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<TlsConnect>,
        timeout: Duration,
    ) -> Result<UpConn, UpstreamError> {
        let open = async {
            let stream = Stream::connect(addr).await?;
            match (stream, tls) {
                (Stream::Tcp(tcp), Some(t)) => {
                    // Boxed: the handshake's state (a rustls session, over a kilobyte) would
                    // otherwise grow every request's future, pooled or plain alike.
                    match Box::pin(ClientTls::connect(tcp, t.config, t.name)).await {
                        Ok(s) => Ok(Stream::TlsClient(Box::new(s))),
                        Err(e) => Err(std::io::Error::new(
                            e.kind(),
                            format!("TLS handshake failed: {e}"),
                        )),
                    }
                }
                (stream, _) => Ok(stream),
            }
        };
        let stream = match crate::io::timeout::timeout(timeout, open).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
            Err(_) => return Err(UpstreamError::ConnectTimeout { addr }),
        };
        Ok(UpConn {
            io: BufConn::new(stream, READ_BUF),
            addr,
            reused: false,
            sent_before: 0,
            idle_since: Instant::now(),
            gauge: None,
        })
    }

    /// Counts this connection as open in `metrics` until it is dropped.
    pub fn count_in(&mut self, metrics: &std::rc::Rc<crate::metrics::WorkerMetrics>) {
        metrics.connection_opened(crate::metrics::Side::Upstream);
        self.gauge = Some(metrics.clone());
    }

    /// Unconsumed bytes received so far.
    pub fn data(&self) -> &[u8] {
        self.io.data()
    }

    pub fn consume(&mut self, n: usize) {
        self.io.consume(n);
    }

    /// Bytes left over after a complete response: the upstream sent more than it framed.
    pub fn pending_bytes(&self) -> bool {
        !self.io.data().is_empty()
    }

    /// Reads more bytes (at least one) within `timeout`. `Ok(0)` means the upstream closed.
    pub async fn fill(&mut self, timeout: Duration, max: usize) -> Result<usize, UpstreamError> {
        match self.io.fill(timeout, max).await {
            Ok(n) => Ok(n),
            Err(ReadEnd::Closed) => Ok(0),
            Err(ReadEnd::Io(e)) if self.handshake_refused(&e) => Err(UpstreamError::Connect {
                addr: self.addr,
                source: std::io::Error::new(
                    e.kind(),
                    format!("TLS handshake failed (refused after the client's last flight): {e}"),
                ),
            }),
            Err(ReadEnd::Io(e)) => Err(UpstreamError::Reset {
                addr: self.addr,
                detail: e.to_string(),
            }),
            // The cancelled read may keep the buffer until the kernel lets go of it; this
            // connection is dropped by the caller.
            Err(ReadEnd::Timeout) => Err(UpstreamError::ReadTimeout { addr: self.addr }),
        }
    }

    /// Whether read error `e` is the upstream refusing the TLS handshake rather than failing
    /// an exchange. In TLS 1.3 a server that rejects the client's certificate, or its absence
    /// (mTLS), says so with an alert after the client's last handshake flight (RFC 8446
    /// §4.4.2.4, §6.2): the client has finished its side of the handshake and learns it at its
    /// first read. On a new connection that has received nothing yet, such an alert means the
    /// upstream never took the request: a connect failure, retried for any method.
    fn handshake_refused(&self, e: &std::io::Error) -> bool {
        let fresh = !self.reused && self.io.bytes_in == 0 && self.io.data().is_empty();
        let alert = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|r| matches!(r, rustls::Error::AlertReceived(_)));
        fresh && alert && matches!(self.io.stream, Stream::TlsClient(_))
    }

    /// Writes `buf[start..end]` within `timeout` (an upstream that stops reading must not hold
    /// a request forever). The buffer comes back whatever happened, except after a timeout:
    /// the kernel may still hold it then, and this connection must be dropped. Whether any
    /// byte got through shows in [`UpConn::request_accepted`].
    pub async fn write(
        &mut self,
        buf: Vec<u8>,
        start: usize,
        end: usize,
        timeout: Duration,
    ) -> (Result<(), UpstreamError>, Option<Vec<u8>>) {
        let addr = self.addr;
        let (res, buf) = self.io.write(buf, start, end, timeout).await;
        let res = match res {
            Ok(()) => Ok(()),
            Err(_) if buf.is_none() => Err(UpstreamError::ReadTimeout { addr }),
            Err(e) => Err(UpstreamError::Reset {
                addr,
                detail: e.to_string(),
            }),
        };
        (res, buf)
    }

    /// Whether the kernel took any byte of the current request on this connection. Until it
    /// has, the upstream cannot have seen the request.
    pub fn request_accepted(&self) -> bool {
        self.io.bytes_out > self.sent_before
    }

    /// Readies an idle connection for the pool: its buffer shrinks back (one large response
    /// must not pin it for the connection's idle life) and the next request starts counting.
    pub fn park_idle(&mut self) {
        self.io.shrink_idle(2 * READ_BUF);
        self.sent_before = self.io.bytes_out;
    }

    /// Non-blocking check that the upstream has not closed (or written to) this idle
    /// connection. Any byte or EOF means it cannot be reused.
    pub fn is_open(&mut self) -> bool {
        self.io.peek() == Peek::Nothing
    }

    /// The upstream has sent something (or closed) that has not been read yet: while a request
    /// body is still going up, that is an early answer. One non-blocking peek.
    pub fn peer_sent(&mut self) -> bool {
        matches!(self.io.peek(), Peek::Data | Peek::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write to an upstream that reset used to drop the request buffer, so the retry that
    /// followed sent an empty request and waited out the read timeout: the head and held body
    /// now come back with the error.
    #[test]
    fn failed_upstream_write_gives_the_request_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (connected_tx, connected_rx) = std::sync::mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            // A reset before the connect has finished would fail the connect instead.
            connected_rx.recv().unwrap();
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
            tx.send(()).unwrap();
        });
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut up = UpConn::connect(addr, None, Duration::from_secs(5))
                .await
                .unwrap();
            connected_tx.send(()).unwrap();
            rx.recv().unwrap();
            let request = b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody".to_vec();
            for _ in 0..50 {
                let (res, back) = up
                    .write(request.clone(), 0, request.len(), Duration::from_secs(5))
                    .await;
                assert_eq!(
                    back.as_deref(),
                    Some(&request[..]),
                    "the request comes back"
                );
                if let Err(e) = res {
                    assert!(matches!(e, UpstreamError::Reset { .. }), "{e}");
                    return;
                }
                monoio::time::sleep(Duration::from_millis(2)).await;
            }
            panic!("writes to a reset upstream kept succeeding");
        });
        peer.join().unwrap();
    }
}
