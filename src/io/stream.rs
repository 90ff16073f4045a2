//! [`Stream`]: the transport under a connection, one enum so the hot path dispatches by a
//! match instead of a vtable, and so TLS (one variant per side) changes no caller.
//!
//! The TLS variants are boxed: a rustls connection with its buffers is over a kilobyte, and a
//! plain TCP stream (the common case, moved with every `BufConn`) should not carry that size.
//! Their read and write futures are boxed for the same reason: every request's future embeds a
//! stream read, and TLS's (a socket read inside a record loop) would grow it for plain
//! connections too.
//! Under TLS, readiness and the liveness peek first ask the TLS layer what it already holds,
//! and the TLS peek decrypts what is on the socket (without waiting), so a record that carries
//! no application data (a session ticket, a key update) is not mistaken for an answer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use futures_util::future::Either;
use std::os::fd::AsRawFd;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;

use super::tls::{ClientTls, ServerTls};

/// A TLS read or write future, boxed (see [`Stream::read`]).
pub type Boxed<'a, T, B> = Pin<Box<dyn Future<Output = BufResult<T, B>> + 'a>>;

/// A connected byte stream.
pub enum Stream {
    Tcp(TcpStream),
    /// A client connection the gateway terminates TLS for.
    TlsServer(Box<ServerTls>),
    /// A connection to an `https://` upstream endpoint.
    TlsClient(Box<ClientTls>),
}

/// What a non-blocking look at a stream found, without taking any byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Peek {
    /// Nothing to read: an idle connection in sync.
    Nothing,
    /// Bytes are waiting.
    Data,
    /// The peer closed its side.
    Closed,
    /// The socket failed (reset, ...).
    Error,
}

impl Stream {
    /// Connects over TCP with `TCP_NODELAY` (heads and small bodies must not wait for Nagle).
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Stream> {
        let s = TcpStream::connect_addr(addr).await?;
        let _ = s.set_nodelay(true);
        Ok(Stream::Tcp(s))
    }

    /// Wraps an accepted TCP connection (with `TCP_NODELAY`).
    pub fn accepted(s: TcpStream) -> Stream {
        let _ = s.set_nodelay(true);
        Stream::Tcp(s)
    }

    /// One read. Not an `async fn`: a plain TCP read is returned as it is, a TLS read boxed,
    /// so the future every request embeds is a socket read's size, not a TLS record loop's.
    pub fn read<B: IoBufMut>(
        &mut self,
        buf: B,
    ) -> Either<impl Future<Output = BufResult<usize, B>> + '_, Boxed<'_, usize, B>> {
        match self {
            Stream::Tcp(s) => Either::Left(s.read(buf)),
            Stream::TlsServer(s) => Either::Right(Box::pin(s.read(buf))),
            Stream::TlsClient(s) => Either::Right(Box::pin(s.read(buf))),
        }
    }

    /// One write: takes some prefix of `buf` (at least one byte unless it fails). Boxed under
    /// TLS, as [`Stream::read`] is.
    pub fn write<B: IoBuf>(
        &mut self,
        buf: B,
    ) -> Either<impl Future<Output = BufResult<usize, B>> + '_, Boxed<'_, usize, B>> {
        match self {
            Stream::Tcp(s) => Either::Left(s.write(buf)),
            Stream::TlsServer(s) => Either::Right(Box::pin(s.write(buf))),
            Stream::TlsClient(s) => Either::Right(Box::pin(s.write(buf))),
        }
    }

    /// Reads what is on the socket under any TLS layer, for a lingering close that discards
    /// it anyway.
    pub async fn read_raw<B: IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::TlsServer(s) => Box::pin(s.read_raw(buf)).await,
            Stream::TlsClient(s) => Box::pin(s.read_raw(buf)).await,
        }
    }

    /// Between requests: gives back buffers a large exchange grew in the transport.
    pub fn shrink_idle(&mut self) {
        match self {
            Stream::Tcp(_) => {}
            Stream::TlsServer(s) => s.shrink_idle(),
            Stream::TlsClient(s) => s.shrink_idle(),
        }
    }

    /// Stops sending (FIN; under TLS, close_notify first); reading stays possible.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown().await,
            Stream::TlsServer(s) => Box::pin(s.shutdown()).await,
            Stream::TlsClient(s) => Box::pin(s.shutdown()).await,
        }
    }

    /// Waits until the stream has bytes to read or the peer closed or failed: a poll (an
    /// io_uring PollAdd, or the epoll readiness), never a read, so no byte is taken; look with
    /// [`Stream::peek`] after. Dropped, it cancels the poll.
    pub async fn readable(&self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable(false).await,
            Stream::TlsServer(s) if s.has_buffered() => Ok(()),
            Stream::TlsClient(s) if s.has_buffered() => Ok(()),
            Stream::TlsServer(s) => s.tcp().readable(false).await,
            Stream::TlsClient(s) => s.tcp().readable(false).await,
        }
    }

    /// Never blocks the event loop, never loses a byte: plain TCP is one `recv(MSG_PEEK)`;
    /// TLS takes what the socket holds into its own buffers and decrypts it (see
    /// [`super::tls::TlsStream::peek`]). Only while no read is in flight.
    pub fn peek(&mut self) -> Peek {
        match self {
            Stream::Tcp(s) => peek_fd(s.as_raw_fd()),
            Stream::TlsServer(s) => s.peek(),
            Stream::TlsClient(s) => s.peek(),
        }
    }
}

fn peek_fd(fd: std::os::fd::RawFd) -> Peek {
    let mut byte = 0u8;
    // SAFETY: recv on a socket fd owned by the caller's stream, into a valid 1-byte buffer;
    // MSG_PEEK leaves the socket's data untouched and MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Peek::Closed,
        n if n > 0 => Peek::Data,
        _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) => Peek::Nothing,
        _ => Peek::Error,
    }
}
