//! [`BufConn`]: a [`Stream`] with its read buffer, timeouts and byte counts.

use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};

use super::stream::{Peek, Stream};

/// Why a read ended without data.
#[derive(Debug)]
pub enum ReadEnd {
    /// The peer closed its side (a read returned 0).
    Closed,
    /// Nothing arrived within the timeout; the read was cancelled.
    Timeout,
    Io(std::io::Error),
}

/// A buffered connection. `rbuf[rpos..]` is received and not yet consumed; the codec parses
/// heads from it in place, and bodies are written onward from it without a copy.
pub struct BufConn {
    pub stream: Stream,
    pub rbuf: Vec<u8>,
    pub rpos: usize,
    /// Bytes consumed from `rbuf` and bytes written, over the connection's life.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The buffer size a read starts with and an idle connection shrinks back to.
    initial: usize,
}

impl BufConn {
    pub fn new(stream: Stream, initial: usize) -> BufConn {
        BufConn {
            stream,
            rbuf: Vec::with_capacity(initial),
            rpos: 0,
            bytes_in: 0,
            bytes_out: 0,
            initial,
        }
    }

    /// Received bytes not yet consumed.
    pub fn data(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.bytes_in += n as u64;
        self.rpos += n;
        if self.rpos >= self.rbuf.len() {
            self.rpos = 0;
            self.rbuf.clear();
        }
    }

    /// Reads at least one more byte within `timeout`, keeping unconsumed bytes. `max` bounds
    /// how far the buffer may grow for this read (the head limits while reading a head).
    pub async fn fill(&mut self, timeout: Duration, max: usize) -> Result<usize, ReadEnd> {
        // Room for a useful read: below this, consumed bytes are moved out first, then the
        // buffer doubles (up to `max`).
        const MIN_ROOM: usize = 4096;
        if self.rpos > 0 && self.rbuf.capacity() - self.rbuf.len() < MIN_ROOM {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < MIN_ROOM {
            let want = (self.rbuf.capacity() * 2).clamp(self.initial, max.max(self.initial));
            if want > self.rbuf.len() {
                self.rbuf.reserve(want - self.rbuf.len());
            }
        }
        let buf = std::mem::take(&mut self.rbuf);
        let (len, cap) = (buf.len(), buf.capacity());
        match super::timeout::timeout(timeout, self.stream.read(buf.slice_mut(len..cap))).await {
            Ok((res, slice)) => {
                self.rbuf = slice.into_inner();
                match res {
                    Ok(0) => Err(ReadEnd::Closed),
                    Ok(n) => Ok(n),
                    Err(e) => Err(ReadEnd::Io(e)),
                }
            }
            // The cancelled read may still hold the buffer: the caller drops this connection.
            Err(_) => {
                self.rpos = 0;
                Err(ReadEnd::Timeout)
            }
        }
    }

    /// Writes `buf[start..end]` within `timeout`; the buffer comes back unless the write timed
    /// out (the kernel may still hold it, and the connection must be dropped). `bytes_out`
    /// counts what the kernel took, also when the write fails part way: the upstream side
    /// tells from it whether a request can have been seen.
    pub async fn write(
        &mut self,
        buf: Vec<u8>,
        start: usize,
        end: usize,
        timeout: Duration,
    ) -> (std::io::Result<()>, Option<Vec<u8>>) {
        let (stream, sent) = (&mut self.stream, &mut self.bytes_out);
        let write_all = async move {
            let (mut buf, mut pos) = (buf, start);
            while pos < end {
                let (res, slice) = stream.write(buf.slice(pos..end)).await;
                buf = slice.into_inner();
                match res {
                    Ok(0) => return (Err(std::io::ErrorKind::WriteZero.into()), buf),
                    Ok(n) => {
                        *sent += n as u64;
                        pos += n;
                    }
                    Err(e) => return (Err(e), buf),
                }
            }
            (Ok(()), buf)
        };
        match super::timeout::timeout(timeout, write_all).await {
            Ok((res, buf)) => (res, Some(buf)),
            Err(_) => (Err(std::io::ErrorKind::TimedOut.into()), None),
        }
    }

    /// Writes all of `buf` and gives it back cleared (a connection's reusable write buffer).
    pub async fn write_buf(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len();
        let (res, back) = self.write(std::mem::take(buf), 0, len, timeout).await;
        if let Some(mut back) = back {
            back.clear();
            *buf = back;
        }
        res
    }

    /// What the stream holds beyond what was read: bytes already buffered count as data.
    /// Never blocks (plain TCP: one syscall; TLS: see [`Stream::peek`]).
    pub fn peek(&mut self) -> Peek {
        if !self.data().is_empty() {
            return Peek::Data;
        }
        self.stream.peek()
    }

    /// Between requests, gives back buffer space a large exchange needed, so an idle
    /// connection holds a few KiB, not the peak of its last exchange.
    pub fn shrink_idle(&mut self, keep: usize) {
        self.stream.shrink_idle();
        if self.rbuf.capacity() > keep && self.data().len() <= self.initial {
            let mut fresh = Vec::with_capacity(self.initial);
            fresh.extend_from_slice(&self.rbuf[self.rpos..]);
            self.rbuf = fresh;
            self.rpos = 0;
        }
    }

    /// Lingering close: stops sending (the peer sees the end of what was written), then reads
    /// and discards what the peer still sends, until it closes or `linger` runs out. Closing
    /// a socket with unread input resets the connection, and the reset throws away what is
    /// still in the send buffer (RFC 9112 §9.6). Time-bounded only: stopping early while the
    /// peer still sends would bring that reset back.
    pub async fn linger(&mut self, linger: Duration) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let deadline = Instant::now() + linger;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut buf = std::mem::take(&mut self.rbuf);
            self.rpos = 0;
            buf.clear();
            buf.reserve(self.initial);
            // Raw: under TLS, records after our close_notify are discarded undecrypted.
            match super::timeout::timeout(left, self.stream.read_raw(buf)).await {
                Ok((Ok(n), buf)) if n > 0 => self.rbuf = buf,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Runs `f` on a monoio runtime with one end of a loopback connection; the other end is a
    /// plain blocking socket handed to `peer` on its own thread.
    fn with_pair<F, Fut, P>(f: F, peer: P)
    where
        F: FnOnce(BufConn) -> Fut,
        Fut: std::future::Future<Output = ()>,
        P: FnOnce(std::net::TcpStream) + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || peer(listener.accept().unwrap().0));
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let stream = Stream::connect(addr).await.unwrap();
            f(BufConn::new(stream, 1024)).await;
        });
        t.join().unwrap();
    }

    #[test]
    fn fill_consume_and_close() {
        with_pair(
            |mut c| async move {
                let mut got = Vec::new();
                while got.len() < 10 {
                    c.fill(Duration::from_secs(5), 1 << 20).await.unwrap();
                    got.extend_from_slice(c.data());
                    let n = c.data().len();
                    c.consume(n);
                }
                assert_eq!(got, b"helloworld");
                assert_eq!(c.bytes_in, 10);
                assert!(matches!(
                    c.fill(Duration::from_secs(5), 1 << 20).await,
                    Err(ReadEnd::Closed)
                ));
            },
            |mut s| {
                s.write_all(b"hello").unwrap();
                std::thread::sleep(Duration::from_millis(10));
                s.write_all(b"world").unwrap();
            },
        );
    }

    #[test]
    fn fill_times_out_when_nothing_arrives() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        with_pair(
            |mut c| async move {
                let r = c.fill(Duration::from_millis(30), 1 << 20).await;
                assert!(matches!(r, Err(ReadEnd::Timeout)), "{r:?}");
                tx.send(()).unwrap();
            },
            move |_s| {
                // Hold the connection open until the read has timed out.
                rx.recv().unwrap();
            },
        );
    }

    /// The liveness peek sees buffered bytes, a waiting byte and a close, and takes nothing.
    #[test]
    fn peek_reports_data_and_close_without_consuming() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
        with_pair(
            |mut c| async move {
                assert_eq!(c.peek(), Peek::Nothing);
                tx.send(()).unwrap();
                sent_rx.recv().unwrap();
                // The byte is on the socket: seen, not taken.
                let end = Instant::now() + Duration::from_secs(5);
                while c.peek() != Peek::Data && Instant::now() < end {
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
                assert_eq!(c.peek(), Peek::Data);
                c.fill(Duration::from_secs(5), 1024).await.unwrap();
                assert_eq!(c.data(), b"x");
                assert_eq!(c.peek(), Peek::Data, "buffered bytes count as data");
                c.consume(1);
                tx.send(()).unwrap();
                let end = Instant::now() + Duration::from_secs(5);
                while c.peek() != Peek::Closed && Instant::now() < end {
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
                assert_eq!(c.peek(), Peek::Closed);
            },
            move |mut s| {
                rx.recv().unwrap();
                s.write_all(b"x").unwrap();
                sent_tx.send(()).unwrap();
                rx.recv().unwrap();
                drop(s);
            },
        );
    }

    /// A lingering close lets the peer read the whole answer although it was still sending.
    #[test]
    fn linger_delivers_the_answer_to_a_peer_still_sending() {
        with_pair(
            |mut c| async move {
                let mut answer = vec![b'a'; 256 * 1024];
                c.write_buf(&mut answer, Duration::from_secs(5))
                    .await
                    .unwrap();
                assert!(answer.is_empty());
                assert_eq!(c.bytes_out, 256 * 1024);
                c.linger(Duration::from_secs(5)).await;
            },
            |mut s| {
                s.write_all(&vec![b'u'; 64 * 1024]).unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                assert_eq!(got.len(), 256 * 1024);
            },
        );
    }

    /// A write that fails used to lose its buffer at the upstream layer, so a retry sent an
    /// empty request: the buffer comes back, contents intact, whenever the write did not time
    /// out.
    #[test]
    fn failed_write_gives_the_buffer_back() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (connected_tx, connected_rx) = std::sync::mpsc::channel::<()>();
        with_pair(
            |mut c| async move {
                connected_tx.send(()).unwrap();
                rx.recv().unwrap();
                let payload = vec![b'p'; 8 * 1024];
                let mut failed = None;
                // The first write may still be taken by the kernel before the reset is seen.
                for _ in 0..50 {
                    let (res, back) = c
                        .write(payload.clone(), 0, payload.len(), Duration::from_secs(5))
                        .await;
                    let back = back.expect("not a timeout: the buffer comes back");
                    assert_eq!(back, payload);
                    if res.is_err() {
                        failed = Some(res);
                        break;
                    }
                    monoio::time::sleep(Duration::from_millis(2)).await;
                }
                assert!(
                    failed.is_some(),
                    "writes to a reset connection kept succeeding"
                );
            },
            move |s| {
                // Close with a reset (SO_LINGER 0), then let the writer go. Not before the
                // connect has finished: the epoll driver reads SO_ERROR once the socket is
                // writable, and a reset that came first fails the connect itself.
                connected_rx.recv().unwrap();
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(s);
                tx.send(()).unwrap();
            },
        );
    }

    #[test]
    fn shrink_idle_keeps_unconsumed_bytes() {
        with_pair(
            |mut c| async move {
                c.rbuf.reserve(64 * 1024);
                c.rbuf.extend_from_slice(b"doneNEXT");
                c.consume(4);
                c.shrink_idle(16 * 1024);
                assert!(c.rbuf.capacity() < 16 * 1024);
                assert_eq!(c.data(), b"NEXT");
            },
            |_s| {},
        );
    }
}
