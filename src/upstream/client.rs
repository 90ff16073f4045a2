//! One upstream HTTP/1.1 connection: connect with a timeout, write, read with a timeout.
//!
//! [`UpConn`] owns its socket and its read buffer; the response head is parsed zero-copy from
//! that buffer by the pipeline. Reads and writes use monoio's owned-buffer I/O; a read that
//! times out is cancelled and the connection is never reused.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use super::UpstreamError;

/// Initial read buffer per upstream connection; grows up to the response head limit.
const READ_BUF: usize = 16 * 1024;

pub struct UpConn {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// Read buffer; `buf[pos..]` holds bytes received but not yet consumed.
    pub buf: Vec<u8>,
    pub pos: usize,
    /// True when this connection served an earlier request (pool hit).
    pub reused: bool,
    /// The kernel accepted at least one byte of the current request on this connection: from
    /// then on the upstream may have seen (and acted on) the request. Cleared at check-in.
    pub(super) accepted: bool,
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

/// What a non-blocking peek found on an upstream socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peek {
    Nothing,
    Data,
    Closed,
    Error,
}

impl UpConn {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<UpConn, UpstreamError> {
        let stream = match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
            Err(_) => return Err(UpstreamError::ConnectTimeout { addr }),
        };
        let _ = stream.set_nodelay(true);
        Ok(UpConn {
            stream,
            addr,
            buf: Vec::with_capacity(READ_BUF),
            pos: 0,
            reused: false,
            accepted: false,
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
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.buf.clear();
        }
    }

    /// Bytes left over after a complete response: the upstream sent more than it framed.
    pub fn pending_bytes(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Reads more bytes (at least one) within `timeout`. `Ok(0)` means the upstream closed.
    pub async fn fill(&mut self, timeout: Duration, max: usize) -> Result<usize, UpstreamError> {
        if self.pos > 0
            && (self.pos == self.buf.len() || self.buf.capacity() - self.buf.len() < 4096)
        {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            let want = (self.buf.capacity() * 2).clamp(READ_BUF, max.max(READ_BUF));
            if want > self.buf.len() {
                self.buf.reserve(want - self.buf.len());
            }
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity();
        match monoio::time::timeout(timeout, self.stream.read(buf.slice_mut(len..cap))).await {
            Ok((res, slice)) => {
                self.buf = slice.into_inner();
                match res {
                    Ok(n) => Ok(n),
                    Err(e) => Err(UpstreamError::Reset {
                        addr: self.addr,
                        detail: e.to_string(),
                    }),
                }
            }
            // The cancelled read keeps the buffer until the kernel lets go of it; this
            // connection is dropped by the caller.
            Err(_) => Err(UpstreamError::ReadTimeout { addr: self.addr }),
        }
    }

    /// Writes `buf[start..end]` within `timeout` (an upstream that stops reading must not hold
    /// a request forever). The buffer comes back unless the write timed out, in which case the
    /// kernel may still hold it and this connection must be dropped. Notes in
    /// [`UpConn::request_accepted`] whether any byte got through.
    pub async fn write(
        &mut self,
        buf: Vec<u8>,
        start: usize,
        end: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        let addr = self.addr;
        let (stream, accepted) = (&mut self.stream, &mut self.accepted);
        let write_all = async move {
            let (mut buf, mut pos) = (buf, start);
            while pos < end {
                let (res, slice) = stream.write(buf.slice(pos..end)).await;
                buf = slice.into_inner();
                match res {
                    Ok(0) => return (Err(std::io::ErrorKind::WriteZero.into()), buf),
                    Ok(n) => {
                        *accepted = true;
                        pos += n;
                    }
                    Err(e) => return (Err(e), buf),
                }
            }
            (Ok(()), buf)
        };
        match monoio::time::timeout(timeout, write_all).await {
            Ok((Ok(()), buf)) => Ok(buf),
            Ok((Err(e), _)) => Err(UpstreamError::Reset {
                addr,
                detail: e.to_string(),
            }),
            Err(_) => Err(UpstreamError::ReadTimeout { addr }),
        }
    }

    /// Whether the kernel took any byte of the current request on this connection. Until it
    /// has, the upstream cannot have seen the request.
    pub fn request_accepted(&self) -> bool {
        self.accepted
    }

    /// Keeps a pooled connection's buffer small: one large response must not pin its buffer
    /// for the connection's whole idle life.
    pub fn shrink_idle(&mut self) {
        if self.buf.capacity() > 2 * READ_BUF && self.buf.is_empty() {
            self.buf = Vec::with_capacity(READ_BUF);
            self.pos = 0;
        }
    }

    /// Non-blocking check that the upstream has not closed (or written to) this idle
    /// connection. Any byte or EOF means it cannot be reused.
    pub fn is_open(&self) -> bool {
        self.peek() == Peek::Nothing
    }

    /// The upstream has sent something (or closed) that has not been read yet: while a request
    /// body is still going up, that is an early answer. One non-blocking peek.
    pub fn peer_sent(&self) -> bool {
        !self.data().is_empty() || matches!(self.peek(), Peek::Data | Peek::Closed)
    }

    /// What the socket holds, without taking it or blocking.
    fn peek(&self) -> Peek {
        let mut byte = 0u8;
        // SAFETY: recv on a socket fd we own into a valid 1-byte buffer; MSG_PEEK leaves the
        // socket's data untouched and MSG_DONTWAIT never blocks the event loop.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => Peek::Closed,
            n if n > 0 => Peek::Data,
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) => {
                Peek::Nothing
            }
            _ => Peek::Error,
        }
    }
}
