//! [`Stream`]: the transport under a connection, one enum so the hot path dispatches by a
//! match instead of a vtable, and so TLS (a second variant) changes no caller.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;

/// A connected byte stream.
pub enum Stream {
    Tcp(TcpStream),
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

    pub async fn read<B: IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
        }
    }

    /// One write: takes some prefix of `buf` (at least one byte unless it fails).
    pub async fn write<B: IoBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            Stream::Tcp(s) => s.write(buf).await,
        }
    }

    /// Stops sending (FIN); reading stays possible.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown().await,
        }
    }

    /// Waits until the stream has bytes to read or the peer closed or failed: a poll (an
    /// io_uring PollAdd, or the epoll readiness), never a read, so no byte is taken; look with
    /// [`Stream::peek`] after. Dropped, it cancels the poll.
    pub async fn readable(&self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable(false).await,
        }
    }

    /// One non-blocking `recv(MSG_PEEK)`: never blocks the event loop, never takes a byte.
    pub fn peek(&self) -> Peek {
        match self {
            Stream::Tcp(s) => peek_fd(s.as_raw_fd()),
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
