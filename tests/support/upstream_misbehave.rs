//! Upstreams that break HTTP/1.1 on purpose, on real loopback sockets, for the desync and
//! upstream-exchange tests: each accepted connection runs a test-written script on its own
//! std thread.
//!
//! `Scripted::start(|x: &mut Exchange| ...)` binds `127.0.0.1:0`; the script gets the
//! connection as an [`Exchange`] (read a request head, read or ignore its body, write any bytes,
//! reset) and decides what the upstream does wrong: answer twice, treat a body as the next
//! request, reset after reading a body, send a broken chunk. The script returns when it is
//! done with the connection, which is then closed. Every event a test needs to await (a request
//! head read, a numbered mark set by the script) is counted, so tests wait for them instead of
//! sleeping.

use super::wire::{self, parse_head, Headers, WireError, WireReader};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a script waits for the gateway's next bytes before giving up on the connection.
const READ_WAIT: Duration = Duration::from_secs(10);

/// A request head as a script read it.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub headers: Headers,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header(&self.headers, name)
    }

    /// The Content-Length value, 0 when absent.
    pub fn content_length(&self) -> u64 {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// One upstream connection, handed to the script.
pub struct Exchange {
    reader: WireReader,
    out: TcpStream,
    /// 1-based number of this connection in accept order.
    pub conn: usize,
    shared: Arc<Shared>,
}

impl Exchange {
    /// Reads the next request head; None when the gateway closed the connection (or sent
    /// nothing for 10 s).
    pub fn read_head(&mut self) -> Option<Head> {
        let raw = self
            .reader
            .read_head(Some(Instant::now() + READ_WAIT), 1 << 20)
            .ok()?;
        let (line, headers) = parse_head(&raw).ok()?;
        let mut parts = line.split(' ');
        let method = parts.next()?.to_string();
        let target = parts.next()?.to_string();
        self.shared.heads.fetch_add(1, Ordering::SeqCst);
        lock(&self.shared.targets).push(format!("{method} {target}"));
        Some(Head {
            method,
            target,
            headers,
        })
    }

    /// Reads `n` body bytes (a Content-Length body).
    pub fn read_body(&mut self, n: u64) -> Result<Vec<u8>, WireError> {
        let mut body = Vec::new();
        self.reader
            .read_exact_into(n, Some(Instant::now() + READ_WAIT), &mut |b| {
                body.extend_from_slice(b)
            })?;
        Ok(body)
    }

    /// Writes `bytes` as they are (one write call).
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.out.write_all(bytes).is_ok() && self.out.flush().is_ok()
    }

    /// Makes the close at the end of the script a reset (SO_LINGER 0): RST, not FIN.
    pub fn reset_on_close(&mut self) {
        let _ = socket2::SockRef::from(&self.out).set_linger(Some(Duration::ZERO));
    }

    /// Sends FIN now (both directions shut down), before the script returns.
    pub fn close(&mut self) {
        let _ = self.out.shutdown(Shutdown::Both);
    }

    /// Counts one occurrence of the script's event number `n` (see `Scripted::marks`).
    pub fn mark(&self, n: usize) {
        if let Some(m) = self.shared.marks.get(n) {
            m.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits (at most 10 s) until event `n` was counted `count` times, by the test
    /// (`Scripted::mark`) or another connection's script; true if it was.
    pub fn await_mark(&self, n: usize, count: usize) -> bool {
        let end = Instant::now() + READ_WAIT;
        while self.shared.marks[n].load(Ordering::SeqCst) < count {
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// `HTTP/1.1 200 OK` with `body` (Content-Length framed, keep-alive).
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

struct Shared {
    stop: AtomicBool,
    accepted: AtomicUsize,
    heads: AtomicUsize,
    targets: Mutex<Vec<String>>,
    marks: Vec<AtomicUsize>,
}

/// A running scripted upstream; stops accepting when dropped (a script still running ends
/// when the gateway closes its connection, or after 10 s without a request).
pub struct Scripted {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Numbered events a script may count with `Exchange::mark`.
const MARKS: usize = 8;

impl Scripted {
    pub fn start(script: impl Fn(&mut Exchange) + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind scripted upstream");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            heads: AtomicUsize::new(0),
            targets: Mutex::new(Vec::new()),
            marks: (0..MARKS).map(|_| AtomicUsize::new(0)).collect(),
        });
        let script = Arc::new(script);
        let s = Arc::clone(&shared);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn = s.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = stream.set_nodelay(true);
                let Ok(out) = stream.try_clone() else {
                    continue;
                };
                let mut x = Exchange {
                    reader: WireReader::new(stream),
                    out,
                    conn,
                    shared: Arc::clone(&s),
                };
                let script = Arc::clone(&script);
                // The connection closes when the script returns and `x` is dropped.
                thread::spawn(move || script(&mut x));
            }
        });
        Scripted { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Request heads read so far, over all connections.
    pub fn heads(&self) -> usize {
        self.shared.heads.load(Ordering::SeqCst)
    }

    /// `METHOD target` of every head read, in order.
    pub fn targets(&self) -> Vec<String> {
        lock(&self.shared.targets).clone()
    }

    /// Counts one occurrence of event `n` from the test side (a signal to scripts waiting in
    /// `Exchange::await_mark`).
    pub fn mark(&self, n: usize) {
        self.shared.marks[n].fetch_add(1, Ordering::SeqCst);
    }

    /// How often the script counted event `n`.
    pub fn marks(&self, n: usize) -> usize {
        self.shared.marks[n].load(Ordering::SeqCst)
    }

    /// Waits (at most 5 s) until event `n` was counted `count` times; panics otherwise.
    pub fn await_marks(&self, n: usize, count: usize) {
        let end = Instant::now() + Duration::from_secs(5);
        while self.marks(n) < count {
            assert!(
                Instant::now() < end,
                "scripted upstream: event {n} seen {} times, expected {count}",
                self.marks(n)
            );
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
