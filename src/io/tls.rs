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
//! Two things to know:
//! - Every socket read and write takes its buffer by value (io_uring owns it while the
//!   operation is in flight). An operation cancelled by a timeout loses its buffer and may
//!   leave a TLS record half written: like a plain connection, such a stream is never used
//!   again (the callers already close a connection whose read or write timed out).
//! - After the handshake, the read side never writes and the write side never reads: a read
//!   that makes rustls queue something for the peer (an alert, a key update's answer) leaves
//!   it for the next write or shutdown. So one task may read while another writes (a
//!   WebSocket tunnel), each touching only its own buffer and rustls's state between awaits.

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

use super::stream::Peek;

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
    /// The peer closed: close_notify received, or the TCP stream ended.
    peer_closed: bool,
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
            peer_closed: false,
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

    /// A read would return without waiting on the socket: plaintext inside rustls, the
    /// peer's close already seen, or ciphertext received and not yet decrypted.
    pub fn has_buffered(&self) -> bool {
        self.buffered || self.peer_closed || self.rpos < self.rbuf.len()
    }

    /// What a read would find, without waiting: records already on the socket are taken (one
    /// non-blocking `recv` at a time) and decrypted, so a record with no application data (a
    /// TLS 1.3 session ticket, a key update) reads as [`Peek::Nothing`], not as an answer,
    /// and a close_notify as [`Peek::Closed`]. Nothing is lost: plaintext stays in rustls for
    /// the next read. Called only while no read is in flight.
    pub fn peek(&mut self) -> Peek {
        loop {
            if self.buffered {
                return Peek::Data;
            }
            if self.peer_closed {
                return Peek::Closed;
            }
            if self.rpos >= self.rbuf.len() {
                self.rbuf.clear();
                self.rpos = 0;
                self.rbuf.reserve(READ_CHUNK);
                let spare = self.rbuf.spare_capacity_mut();
                // SAFETY: recv writes at most `spare.len()` bytes into the vector's spare
                // capacity, a valid writable region; MSG_DONTWAIT never blocks.
                let n = unsafe {
                    libc::recv(
                        self.io.as_raw_fd(),
                        spare.as_mut_ptr().cast(),
                        spare.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                match n {
                    0 => {
                        if self.conn.read_tls(&mut io::empty()).is_err() || self.process().is_err()
                        {
                            return Peek::Error;
                        }
                        self.peer_closed = true;
                        continue;
                    }
                    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
                    n if n > 0 => unsafe { self.rbuf.set_len(n as usize) },
                    _ if io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) => {
                        return Peek::Nothing;
                    }
                    _ => return Peek::Error,
                }
            }
            let mut pending = &self.rbuf[self.rpos..];
            match self.conn.read_tls(&mut pending) {
                Ok(0) => self.peer_closed = true,
                Ok(taken) => self.rpos += taken,
                Err(_) => return Peek::Error,
            }
            if self.process().is_err() {
                return Peek::Error;
            }
        }
    }

    async fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            if self.conn.wants_write() {
                self.flush_tls().await?;
                continue;
            }
            match self.read_tls().await {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed during the TLS handshake",
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    // The alert that says why goes out before the connection is dropped.
                    let _ = self.flush_tls().await;
                    return Err(e);
                }
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
                self.process()?;
                self.peer_closed = true;
                return Ok(0);
            }
        }
        let mut pending = &self.rbuf[self.rpos..];
        // Zero taken: rustls has received close_notify and reads no more.
        let taken = self.conn.read_tls(&mut pending)?;
        self.rpos += taken;
        self.process()?;
        Ok(taken)
    }

    /// Decrypts what rustls holds and notes what it found. A protocol error queues an alert
    /// for the peer; it goes out with the next write or shutdown (the handshake sends it at
    /// once), never from the read side.
    fn process(&mut self) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.buffered = state.plaintext_bytes_to_read() > 0;
                if state.peer_has_closed() {
                    self.peer_closed = true;
                    // Bytes after close_notify are never read: do not report them as pending.
                    self.rpos = self.rbuf.len();
                }
                Ok(())
            }
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
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
        let room = buf.bytes_total();
        loop {
            let mut reader = self.conn.reader();
            let mut n = 0;
            // Every decrypted record that fits, so a large download is not one record a read.
            let end = loop {
                match reader.fill_buf() {
                    Ok([]) => break Ok(()),
                    Ok(chunk) => {
                        let k = chunk.len().min(room - n);
                        // SAFETY: `write_ptr` is valid for `bytes_total` (= `room`) bytes
                        // (IoBufMut's contract) and `n + k <= room`; `chunk` is rustls's own
                        // buffer, so the two do not overlap.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                chunk.as_ptr(),
                                buf.write_ptr().add(n),
                                k,
                            );
                        }
                        reader.consume(k);
                        n += k;
                        if n == room {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            self.buffered = matches!(reader.fill_buf(), Ok(rest) if !rest.is_empty());
            match end {
                // Data, or the end of the stream (close_notify, or a FIN without one).
                _ if n > 0 => {}
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.read_tls().await {
                        return (Err(e), buf);
                    }
                    continue;
                }
                Err(e) => return (Err(e), buf),
            }
            // SAFETY: the first `n` bytes were written above.
            unsafe { buf.set_init(n) };
            return (Ok(n), buf);
        }
    }

    /// Reads raw bytes from the socket, under the TLS layer: what a lingering close discards
    /// (decrypting it would only cost, and rustls must not process records after our
    /// close_notify).
    pub async fn read_raw<B: IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        self.io.read(buf).await
    }

    /// Between requests: gives back a write buffer that a large response grew (the read
    /// buffer stays: it is one record's size).
    pub fn shrink_idle(&mut self) {
        if self.wbuf.capacity() > READ_CHUNK {
            self.wbuf = Vec::new();
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

// SAFETY: a read and a write may be in flight at once (monoio's `Split` contract, which a
// WebSocket tunnel relies on). After the handshake the read path touches only `rbuf`, `rpos`,
// `buffered`, `peer_closed` and the socket's receive side; the write path only `wbuf` and the
// socket's send side. Both reach rustls's state, but only synchronously inside one poll, never
// across an await, on a single-threaded runtime; an alert a read makes rustls queue is sent
// by the write path (the read path never writes).
unsafe impl<C> monoio::io::Split for TlsStream<C> {}

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
