//! [`TlsStream`]: rustls driven over monoio's owned-buffer TCP I/O, for both sides (a client
//! connection the gateway terminates, and a connection to an `https://` upstream).
//!
//! Our own adapter rather than monoio-rustls 0.4: the stream layer must poll the socket for
//! readiness and peek it without taking a byte (the pool's liveness probe, a queued request
//! watching its client), and monoio-rustls gives no access to the TCP stream under it, nor
//! to the rustls session (SNI, ALPN, peer certificates) once the handshake is done. What this
//! needs of rustls is its buffered `Connection` API: ciphertext in through `read_tls`,
//! plaintext out through `reader()`, plaintext in through `writer()`, ciphertext out through
//! `write_tls`.
//!
//! The one thing to know: every socket read and write takes its buffer by value (io_uring owns
//! it while the operation is in flight). An operation cancelled by a timeout loses its buffer
//! and may leave a TLS record half written: like a plain connection, such a stream is never
//! used again (the callers already close a connection whose read or write timed out).

use std::io::{self, BufRead};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, ServerConfig, ServerConnection};

/// Ciphertext read from the socket per read: one full TLS record (16 KiB of plaintext plus
/// its header and tag) fits, so a record never needs two reads when the peer sent it whole.
const READ_CHUNK: usize = 16 * 1024 + 512;

/// A TLS connection over TCP. `C` is [`ServerConnection`] or [`ClientConnection`].
pub struct TlsStream<C> {
    io: TcpStream,
    conn: C,
    /// Ciphertext received and not yet taken by rustls: `rbuf[rpos..]` (rustls takes what
    /// its buffers have room for; the rest waits until the reader has drained plaintext).
    rbuf: Vec<u8>,
    rpos: usize,
    /// Ciphertext rustls produced, on its way to the socket.
    wbuf: Vec<u8>,
    /// Plaintext is waiting inside rustls (a record held more than the last read took), so
    /// the stream is readable even when the socket is not.
    buffered: bool,
}

/// A client connection the gateway terminates TLS for.
pub type ServerTls = TlsStream<ServerConnection>;
/// A connection to an `https://` upstream.
pub type ClientTls = TlsStream<ClientConnection>;

impl ServerTls {
    /// Runs the server side of the handshake on an accepted connection. The caller bounds it
    /// with its handshake timeout; an error is a failed handshake (the alert that says why
    /// has been sent when rustls made one).
    pub async fn accept(io: TcpStream, config: Arc<ServerConfig>) -> io::Result<ServerTls> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut s = TlsStream::new(io, conn);
        s.handshake().await?;
        Ok(s)
    }

    /// The name the client asked for in SNI, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.conn.server_name()
    }
}

impl ClientTls {
    /// Runs the client side of the handshake to `name` on a connected socket. A certificate
    /// that does not verify is an error here (`InvalidData` carrying rustls's reason).
    pub async fn connect(
        io: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<ClientTls> {
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut s = TlsStream::new(io, conn);
        s.handshake().await?;
        Ok(s)
    }
}

impl<C, SD> TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: rustls::SideData,
{
    fn new(io: TcpStream, conn: C) -> TlsStream<C> {
        TlsStream {
            io,
            conn,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            buffered: false,
        }
    }

    /// The TCP stream under the TLS layer (readiness polls, the liveness peek, socket options).
    pub fn tcp(&self) -> &TcpStream {
        &self.io
    }

    /// The rustls session: negotiated version, ALPN protocol, peer certificates.
    pub fn session(&self) -> &C {
        &self.conn
    }

    /// Bytes that a read would return without touching the socket: plaintext inside rustls,
    /// or ciphertext received and not yet decrypted.
    pub fn has_buffered(&self) -> bool {
        self.buffered || self.rpos < self.rbuf.len()
    }

    async fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            if self.conn.wants_write() {
                self.flush_tls().await?;
            } else if self.read_tls().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the TLS handshake",
                ));
            }
        }
        // TLS 1.3: the server's session tickets (and a client's last flight) are queued once
        // the handshake is done; they go out now, not with the first response.
        self.flush_tls().await
    }

    /// Gives rustls the ciphertext it has room for from `rbuf`, reading the socket when none
    /// is pending, and decrypts it. `Ok(0)`: the peer closed (the TCP connection, or the TLS
    /// session with close_notify). Only called when rustls holds no plaintext, so its
    /// plaintext buffer always has room.
    async fn read_tls(&mut self) -> io::Result<usize> {
        if self.rpos >= self.rbuf.len() {
            let mut buf = std::mem::take(&mut self.rbuf);
            self.rpos = 0;
            buf.clear();
            buf.reserve(READ_CHUNK);
            let (res, buf) = self.io.read(buf).await;
            self.rbuf = buf;
            if res? == 0 {
                // rustls records the end of the stream: a read after it reports a clean close
                // (close_notify received) or an unclean one.
                self.conn.read_tls(&mut io::empty())?;
                self.process().await?;
                return Ok(0);
            }
        }
        let mut pending = &self.rbuf[self.rpos..];
        // Zero taken: rustls has received close_notify and reads no more.
        let taken = self.conn.read_tls(&mut pending)?;
        self.rpos += taken;
        self.process().await?;
        Ok(taken)
    }

    /// Decrypts what rustls holds. A protocol error queues an alert: it is sent (best effort)
    /// before the error is returned, so the peer learns why.
    async fn process(&mut self) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = self.flush_tls().await;
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
        }
    }

    /// Writes every ciphertext byte rustls has queued.
    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut buf = std::mem::take(&mut self.wbuf);
            buf.clear();
            self.conn.write_tls(&mut buf)?;
            let (res, buf) = write_all(&mut self.io, buf).await;
            self.wbuf = buf;
            res?;
        }
        Ok(())
    }

    /// Reads plaintext into `buf`. `Ok(0)` is the end of the stream, closed cleanly
    /// (close_notify) or not (a TCP FIN without one: many HTTP peers close that way, and the
    /// HTTP framing above detects a body cut short).
    pub async fn read<B: IoBufMut>(&mut self, mut buf: B) -> BufResult<usize, B> {
        loop {
            let mut reader = self.conn.reader();
            match reader.fill_buf() {
                Ok(chunk) => {
                    let n = chunk.len().min(buf.bytes_total());
                    // SAFETY: `write_ptr` is valid for `bytes_total` bytes (IoBufMut's
                    // contract) and `n` is at most that; `chunk` is rustls's own buffer, so
                    // the two do not overlap.
                    unsafe {
                        std::ptr::copy_nonoverlapping(chunk.as_ptr(), buf.write_ptr(), n);
                        buf.set_init(n);
                    }
                    reader.consume(n);
                    self.buffered = matches!(reader.fill_buf(), Ok(rest) if !rest.is_empty());
                    return (Ok(n), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.buffered = false;
                    return (Ok(0), buf);
                }
                Err(e) => return (Err(e), buf),
            }
            self.buffered = false;
            // A key update or an alert rustls owes the peer goes out before waiting on it.
            if let Err(e) = self.flush_tls().await {
                return (Err(e), buf);
            }
            if let Err(e) = self.read_tls().await {
                return (Err(e), buf);
            }
        }
    }

    /// Encrypts a prefix of `buf` and writes it to the socket before returning.
    pub async fn write<B: IoBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        // SAFETY: `read_ptr` is valid for `bytes_init` initialised bytes (IoBuf's contract),
        // and `buf` is owned here for the whole borrow.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let n = match io::Write::write(&mut self.conn.writer(), data) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        match self.flush_tls().await {
            Ok(()) => (Ok(n), buf),
            Err(e) => (Err(e), buf),
        }
    }

    /// Sends close_notify, then a FIN; reading stays possible.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_tls().await?;
        self.io.shutdown().await
    }
}

impl<C> AsRawFd for TlsStream<C> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

/// Writes all of `buf` (a socket write may take a part).
async fn write_all(io: &mut TcpStream, buf: Vec<u8>) -> BufResult<(), Vec<u8>> {
    let mut done = 0;
    let mut buf = buf;
    while done < buf.len() {
        let (res, slice) = io.write(buf.slice(done..)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => done += n,
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
