//! Regression tests: each pins one bug that was fixed, so it cannot come back unnoticed.

mod support;

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::waits::{wait_requests_done, Rendezvous};
use support::*;

/// A gateway with route `/app` to upstream `app` (these endpoints and extra upstream keys;
/// `read_timeout` is 1 s unless the keys set it).
fn app_gateway(endpoints: &str, upstream_keys: &str) -> Gateway {
    app_gateway_with(endpoints, upstream_keys, "")
}

/// Like `app_gateway`, with extra top-level TOML (e.g. a `[server.limits]` table).
fn app_gateway_with(endpoints: &str, upstream_keys: &str, extra: &str) -> Gateway {
    let read_timeout = if upstream_keys.contains("read_timeout") {
        ""
    } else {
        "read_timeout = \"1s\""
    };
    Gateway::start(&format!(
        r#"
[upstreams.app]
endpoints = {endpoints}
connect_timeout = "300ms"
{read_timeout}
{upstream_keys}

[routes.app]
paths = ["/app"]
upstream = "app"

{extra}
"#
    ))
}

/// A TCP server that accepts connections and never reads from them (holding them open until
/// dropped), so whatever is written to it only fills the socket buffers.
struct Deaf {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Deaf {
    fn start() -> Deaf {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind deaf upstream");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, n) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            // Blocking accepts; `drop` wakes the last one with a connection of its own.
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    n.fetch_add(1, Ordering::SeqCst);
                    held.push(stream);
                }
            }
            drop(held);
        });
        Deaf {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Deaf {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop (a refused connect means it is gone already).
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// Bug: a gateway error (404) to HEAD carried its JSON body, breaking the next pipelined response.
#[test]
fn head_error_response_has_no_body_and_pipelining_stays_in_sync() {
    let up = Upstream::start(|req| Reply::text(200, &format!("upstream saw {}", req.path())));
    let gw = app_gateway(&endpoints(&[&up]), "retries = 0");
    let mut c = Client::connect(gw.addr());
    c.set_timeout(Duration::from_secs(3));
    let mut bytes = Req::head("/nope").to_bytes();
    bytes.extend_from_slice(&Req::get("/app/x").to_bytes());
    c.send(&bytes);

    let r404 = c
        .try_read_response_for("HEAD")
        .unwrap_or_else(|e| panic!("reading the HEAD 404: {e}"));
    assert_eq!(r404.status, 404, "{r404:?}");
    assert!(
        r404.has_header("content-length"),
        "HEAD 404 should carry the Content-Length a GET would get: {r404:?}"
    );
    assert!(r404.body.is_empty());

    // If the 404's body had been sent, it would be parsed here as the next status line.
    let r200 = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("reading the GET after the HEAD 404 (body leaked?): {e}"));
    assert_eq!(r200.status, 200, "{r200:?}");
    assert_eq!(r200.text(), "upstream saw /app/x");
    assert_eq!(up.request_count(), 1);
}

/// Bug: body writes to an upstream that never reads had no timeout, so a big POST hung (not 504).
#[test]
fn body_write_to_an_upstream_that_never_reads_times_out() {
    let deaf = Deaf::start();
    let gw = app_gateway_with(
        &format!("[\"{}\"]", deaf.url()),
        "read_timeout = \"500ms\"\nretries = 0",
        "[server.limits]\nmax_body = \"64MiB\"",
    );
    const BODY: usize = 20 * 1024 * 1024;
    let mut c = Client::connect(gw.addr());
    c.set_timeout(Duration::from_secs(6));
    let mut w = c.writer_clone();
    let killer = c.writer_clone();
    let writer = thread::spawn(move || {
        let head = format!(
            "POST /app/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {BODY}\r\n\r\n"
        );
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let block = vec![b'u'; 64 * 1024];
        let mut left = BODY;
        while left > 0 {
            let n = left.min(block.len());
            // The gateway may stop reading or close: write errors are expected.
            if w.write_all(&block[..n]).is_err() {
                return;
            }
            left -= n;
        }
    });
    let start = Instant::now();
    let result = c.try_read_response_for("POST");
    let waited = start.elapsed();
    // Unblock the writer whatever happened.
    let _ = killer.shutdown(Shutdown::Both);
    let _ = writer.join();
    let r = result.unwrap_or_else(|e| {
        panic!("no response to a POST whose upstream never reads (after {waited:?}): {e}")
    });
    assert!(
        r.status == 504 || r.status == 502,
        "expected 504 (or 502), got {} {:?} {:?}",
        r.status,
        r.headers,
        r.text()
    );
    assert_error(&r, r.status);
    assert!(
        deaf.accepted.load(Ordering::SeqCst) >= 1,
        "the gateway never connected to the upstream"
    );
    assert!(
        waited < Duration::from_secs(4),
        "answered only after {waited:?} (read_timeout 500ms)"
    );
}

/// Bug: a POST the upstream fully read on a pooled connection, then closed on, was replayed.
#[test]
fn post_received_by_the_upstream_is_never_replayed() {
    let up = Upstream::start(|req| {
        if req.method == "POST" {
            // The whole body has been read: the upstream took the request, then it dies.
            Reply::drop_connection()
        } else {
            Reply::text(200, "ok")
        }
    });
    let gw = app_gateway(&endpoints(&[&up]), "retries = 2");
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/app/a"));
    assert_eq!(r.status, 200, "{r:?}");
    // Done with the GET: its upstream connection is back in the pool for the POST.
    wait_requests_done(&gw, 1);
    let r = c.request(&Req::post("/app/charge", b"12345"));
    assert_error(&r, 502);
    // Done with the POST: any replay of it has reached the upstream.
    wait_requests_done(&gw, 2);
    let posts: Vec<Request> = up
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST")
        .collect();
    assert_eq!(
        posts.len(),
        1,
        "the POST reached the upstream {} times (conns {:?})",
        posts.len(),
        posts.iter().map(|q| q.conn).collect::<Vec<_>>()
    );
    assert_eq!(posts[0].body, b"12345");
    assert_eq!(
        posts[0].conn, 1,
        "the POST should have gone on the pooled connection"
    );
}

/// Guard: every pooled connection closed at once; stale ones are replaced (GET 200, retries = 0).
#[test]
fn all_pooled_connections_closed_at_once_never_fail_a_get() {
    // The three warm-up requests are held at the upstream until all three are there, so the
    // pool gets three connections.
    let warm_up = Rendezvous::new(3, Duration::from_secs(5));
    let up = Upstream::start(move |req| {
        if req.path().starts_with("/app/warm") {
            warm_up.arrive();
            Reply::text(200, "warm")
        } else {
            Reply::text(200, &format!("fresh {}", req.path()))
        }
    });
    let gw = app_gateway(&endpoints(&[&up]), "retries = 0");
    let addr = gw.addr();
    let warm: Vec<_> = (0..3)
        .map(|i| thread::spawn(move || get(addr, &format!("/app/warm{i}")).status))
        .collect();
    for h in warm {
        assert_eq!(h.join().expect("warm-up request"), 200);
    }
    assert_eq!(
        up.connections(),
        3,
        "three concurrent requests should have opened three upstream connections"
    );
    assert_eq!(
        up.close_idle_connections(),
        3,
        "expected three pooled connections to close"
    );
    let mut c = Client::connect(gw.addr());
    for i in 0..3 {
        let target = format!("/app/after{i}");
        let r = c.request(&Req::get(&target));
        assert_eq!(
            r.status, 200,
            "GET {i} after the upstream closed every pooled connection: {r:?}"
        );
        assert_eq!(r.text(), format!("fresh {target}"));
    }
    assert!(up.connections() >= 4);
}

/// Bug: a connect failure was not retried for a body larger than the 64 KiB replay buffer.
#[test]
fn connect_failure_is_retried_for_a_body_larger_than_the_replay_buffer() {
    let good = Upstream::echo();
    let gw = app_gateway(
        &format!("[\"{}\", \"{}\"]", dead_url(), good.url()),
        "retries = 1\nbalance = \"round_robin\"",
    );
    let bodies: Vec<Vec<u8>> = (0..4u8)
        .map(|i| {
            (0..100 * 1024)
                .map(|j| b'a' + ((j + usize::from(i)) % 26) as u8)
                .collect()
        })
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        let r = send_request(gw.addr(), &Req::post(&format!("/app/big{i}"), body));
        assert_eq!(
            r.status,
            200,
            "POST {i} ({} bytes): {} {:?} {:?}",
            body.len(),
            r.status,
            r.headers,
            r.text()
        );
    }
    let got = good.requests();
    assert_eq!(
        got.len(),
        4,
        "the working upstream got {} requests",
        got.len()
    );
    for (i, body) in bodies.iter().enumerate() {
        let req = got
            .iter()
            .find(|q| q.path() == format!("/app/big{i}"))
            .unwrap_or_else(|| panic!("POST {i} never reached the working upstream"));
        assert_eq!(req.body_len, body.len() as u64, "POST {i} body length");
        assert!(req.body == *body, "POST {i} body differs");
    }
    assert!(good.errors().is_empty(), "{:?}", good.errors());
}

/// Bug: an upstream 204 with `Content-Length: 10` was relayed with that header.
#[test]
fn upstream_204_with_content_length_is_relayed_without_it() {
    let up = Upstream::start(|req| {
        if req.path() == "/app/nc" {
            Reply::status(204).header("Content-Length", "10")
        } else {
            Reply::text(200, "after")
        }
    });
    let gw = app_gateway(&endpoints(&[&up]), "retries = 0");
    let mut c = Client::connect(gw.addr());
    c.set_timeout(Duration::from_secs(3));
    let mut bytes = Req::get("/app/nc").to_bytes();
    bytes.extend_from_slice(&Req::get("/app/next").to_bytes());
    c.send(&bytes);
    let r = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("reading the 204: {e}"));
    assert_eq!(r.status, 204, "{r:?}");
    assert!(
        !r.has_header("content-length"),
        "a 204 must not carry Content-Length: {:?}",
        r.headers
    );
    assert!(
        !r.has_header("transfer-encoding"),
        "a 204 must not carry Transfer-Encoding: {:?}",
        r.headers
    );
    let next = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("reading the pipelined response after the 204: {e}"));
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(next.text(), "after");
    assert_eq!(up.request_count(), 2);
}

/// Bug: an idle keep-alive connection kept serving on the old config after an admin reload.
#[test]
fn reload_applies_to_the_next_request_of_an_open_keep_alive_connection() {
    let up = Upstream::start(|req| Reply::text(200, &format!("up {}", req.path())));
    let gw = Gateway::start(&format!(
        r#"
[upstreams.app]
endpoints = ["{}"]
connect_timeout = "300ms"
read_timeout = "1s"
retries = 0

[routes.r]
paths = ["/a"]
upstream = "app"
"#,
        up.url()
    ));
    let mut c = Client::connect(gw.addr());
    c.set_timeout(Duration::from_secs(3));
    let r = c.request(&Req::get("/a"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "up /a");

    let path = gw.config_path().to_path_buf();
    let old = std::fs::read_to_string(&path).expect("read config");
    let new = old.replace("paths = [\"/a\"]", "paths = [\"/b\"]");
    assert_ne!(old, new, "the route line was not found in:\n{old}");
    std::fs::write(&path, new).expect("rewrite config");

    let reload = send_request(gw.admin_addr(), &Req::post("/reload", b""));
    assert_eq!(
        reload.status,
        200,
        "POST /reload: {} {:?}",
        reload.status,
        reload.text()
    );

    let r = c.request(&Req::get("/a"));
    assert_error(&r, 404);
    let r = c.request(&Req::get("/b"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "up /b");
    assert_eq!(
        up.requests()
            .iter()
            .map(|q| q.target.clone())
            .collect::<Vec<_>>(),
        vec!["/a", "/b"]
    );
}

/// An upstream that reads one request head, answers it at once with `status` and `body`
/// (never reading the request body), and keeps the connection open until `release` opens
/// (at most 10 s).
fn early_answering_upstream(
    status: &'static str,
    body: Vec<u8>,
    release: &Gate,
) -> (u16, std::thread::JoinHandle<()>) {
    let release = release.clone();
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(&body).unwrap();
        release.wait(std::time::Duration::from_secs(10));
    });
    (port, thread)
}

/// A gateway in front of `port`, and a client that starts a `total`-byte upload through it and
/// keeps sending from another thread (until the gateway stops taking it).
fn uploading_client(port: u16, total: u64) -> (Gateway, Client, std::thread::JoinHandle<()>) {
    use std::io::Write;
    let gw = Gateway::start(&format!(
        "[server.limits]\nmax_body = \"1GiB\"\n[upstreams.u]\nendpoints = [\"http://127.0.0.1:{port}\"]\nread_timeout = \"5s\"\nretries = 0\n[routes.r]\npaths = [\"/\"]\nupstream = \"u\"\n"
    ));
    let mut c = Client::connect(gw.addr());
    c.set_timeout(std::time::Duration::from_secs(5));
    c.send(format!("PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n").as_bytes());
    let mut w = c.writer_clone();
    let writer = std::thread::spawn(move || {
        let block = vec![b'z'; 64 << 10];
        let mut sent = 0u64;
        while sent < total && w.write_all(&block).is_ok() {
            sent += block.len() as u64;
        }
    });
    (gw, c, writer)
}

/// An upstream that answers a large upload early (413 after the head) and stops reading:
/// its answer reaches the client at once, instead of a 504 after the upload's write times out.
#[test]
fn early_upstream_answer_during_a_large_upload_is_relayed() {
    let release = Gate::new();
    let (port, upstream) = early_answering_upstream(
        "413 Payload Too Large",
        br#"{"error":"too big"}"#.to_vec(),
        &release,
    );
    let (_gw, mut c, writer) = uploading_client(port, 256 << 20);
    let start = std::time::Instant::now();
    let r = c.read_response();
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.text(), r#"{"error":"too big"}"#);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "answered after {:?} (the read timeout is 5 s)",
        start.elapsed()
    );
    assert!(
        r.header_tokens("connection").contains(&"close".to_string()),
        "the rest of the body is unread: the connection closes {:?}",
        r.headers
    );
    c.assert_closed(std::time::Duration::from_secs(4));
    drop(c);
    let _ = writer.join();
    release.open();
    let _ = upstream.join();
}

/// An early answer with a large body, sent while the client is still uploading, reaches the
/// client whole: the gateway stops sending and drains the client's input before closing.
/// Closing with unread input resets the connection, and the reset throws away whatever of the
/// answer is still in the gateway's send buffer (without the lingering close this client got
/// 4 KiB of the 4 MiB).
#[test]
fn early_answer_is_not_cut_short_by_a_reset_when_the_connection_closes() {
    const ANSWER: usize = 4 << 20;
    let release = Gate::new();
    let (port, upstream) = early_answering_upstream("403 Forbidden", vec![b'a'; ANSWER], &release);
    let (_gw, mut c, writer) = uploading_client(port, 64 << 20);
    // Read late: by then the gateway has written what fits and is waiting on this client.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = c.try_read_response().unwrap_or_else(|e| {
        let got = match e {
            support::wire::WireError::Closed { partial, reset } => {
                format!("{} bytes, reset: {reset}", partial.len())
            }
            other => format!("{other:?}"),
        };
        panic!("the answer was cut short after {got}")
    });
    assert_eq!(r.status, 403);
    assert_eq!(r.body.len(), ANSWER);
    drop(c);
    let _ = writer.join();
    release.open();
    let _ = upstream.join();
}
