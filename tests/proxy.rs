//! Proxying (BEHAVIOR.md "Proxying"): what the upstream receives and what the client gets back,
//! header rewriting both ways, keep-alive, pipelining, HTTP/1.0, bodiless responses, 1xx,
//! `Expect: 100-continue`, both body framings, and streaming with bounded memory.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::waits::wait_requests_done;
use support::wire::WireError;
use support::*;

/// A gateway with one catch-all route to `up`.
fn gateway(up: &Upstream) -> Gateway {
    gateway_with(up, "")
}

/// Like `gateway`, with extra top-level TOML (e.g. a `[server.limits]` table).
fn gateway_with(up: &Upstream, extra: &str) -> Gateway {
    catch_all_gateway(up, extra)
}

#[test]
fn forwards_method_target_body_and_returns_the_upstream_response() {
    let up = Upstream::start(|_| {
        Reply::text(201, "created")
            .header("X-Upstream", "yes")
            .header("Location", "/items/9")
    });
    let gw = gateway(&up);
    let r = send_request(
        gw.addr(),
        &Req::post("/api/items?x=1&y=a%20b", b"{\"name\":\"n\"}")
            .header("Content-Type", "application/json")
            .header("X-Custom", "custom value"),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.text(), "created");
    assert_eq!(r.header("x-upstream"), Some("yes"));
    assert_eq!(r.header("location"), Some("/items/9"));
    let req = up.last_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/api/items?x=1&y=a%20b");
    assert_eq!(req.body, b"{\"name\":\"n\"}");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("x-custom"), Some("custom value"));
    assert!(up.errors().is_empty(), "{:?}", up.errors());
}

#[test]
fn any_method_is_forwarded_on_a_route_without_methods() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    for m in ["GET", "PUT", "DELETE", "OPTIONS", "PATCH", "PURGE"] {
        let r = c.request(&Req::new(m, "/m"));
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(up.last_request().method, m);
    }
}

#[test]
fn adds_forwarding_headers_and_passes_the_client_host_through() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let r = send_request(gw.addr(), &Req::get("/h").host("Api.Example.com:8443"));
    assert_eq!(r.status, 200);
    let req = up.last_request();
    assert_eq!(
        req.header_all("host"),
        ["Api.Example.com:8443"],
        "client Host passed through unchanged"
    );
    assert_eq!(req.header("x-forwarded-host"), Some("Api.Example.com:8443"));
    assert_eq!(req.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(req.header("x-forwarded-proto"), Some("http"));
    assert_eq!(req.header_all("via"), ["1.1 dispatch"]);
    let id = req.header("x-request-id").unwrap_or("");
    assert!(
        !id.trim().is_empty(),
        "X-Request-Id must be generated: {:?}",
        req.headers
    );
}

#[test]
fn x_forwarded_for_is_appended_with_the_real_client_ip() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let client_ip = Ipv4Addr::new(127, 0, 0, 5);
    let mut c = Client::connect_from(client_ip, gw.addr());
    let r = c.request(&Req::get("/").header("X-Forwarded-For", "203.0.113.9, 198.51.100.2"));
    assert_eq!(r.status, 200);
    let req = up.last_request();
    assert_eq!(
        req.header_all("x-forwarded-for").join(", "),
        "203.0.113.9, 198.51.100.2, 127.0.0.5"
    );
    let r = c.request(&Req::get("/"));
    assert_eq!(r.status, 200);
    assert_eq!(
        up.last_request().header_all("x-forwarded-for"),
        ["127.0.0.5"]
    );
}

#[test]
fn via_is_added_both_ways_and_appended_to_an_existing_via() {
    let up = Upstream::start(|req| {
        if req.path() == "/with-via" {
            Reply::text(200, "v").header("Via", "1.1 origin-cache")
        } else {
            Reply::text(200, "plain")
        }
    });
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/with-via").header("Via", "1.0 fred"));
    assert_eq!(
        up.last_request().header_all("via").join(", "),
        "1.0 fred, 1.1 dispatch"
    );
    assert_eq!(
        r.header_all("via").join(", "),
        "1.1 origin-cache, 1.1 dispatch"
    );
    let r = c.request(&Req::get("/plain"));
    assert_eq!(r.header_all("via"), ["1.1 dispatch"]);
}

#[test]
fn client_supplied_forwarded_proto_and_host_are_replaced() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let r = send_request(
        gw.addr(),
        &Req::get("/")
            .host("real.example.com")
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "spoofed.example.com"),
    );
    assert_eq!(r.status, 200);
    let req = up.last_request();
    assert_eq!(req.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(req.header_all("x-forwarded-host"), ["real.example.com"]);
}

#[test]
fn x_request_id_is_kept_when_sent_and_unique_when_generated() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    c.request(&Req::get("/").header("X-Request-Id", "client-chosen-id-123"));
    assert_eq!(
        up.last_request().header_all("x-request-id"),
        ["client-chosen-id-123"]
    );
    let mut ids = HashSet::new();
    for _ in 0..5 {
        c.request(&Req::get("/"));
        let id = up
            .last_request()
            .header("x-request-id")
            .unwrap_or("")
            .to_string();
        assert!(!id.is_empty());
        assert!(
            ids.insert(id.clone()),
            "generated X-Request-Id {id} repeated"
        );
    }
}

#[test]
fn hop_by_hop_request_headers_are_removed() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let r = send_request(
        gw.addr(),
        &Req::get("/")
            .header("Connection", "keep-alive, X-Hop-A")
            .header("X-Hop-A", "secret")
            .header("Keep-Alive", "timeout=5")
            .header("Proxy-Connection", "keep-alive")
            .header("TE", "trailers")
            .header("Trailer", "X-T")
            .header("Upgrade", "h2c")
            .header("X-End-To-End", "kept"),
    );
    assert_eq!(r.status, 200);
    let req = up.last_request();
    for h in [
        "x-hop-a",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !req.has_header(h),
            "{h} reached the upstream: {:?}",
            req.headers
        );
    }
    let conn = support::wire::header_tokens(&req.headers, "connection");
    assert!(
        !conn.iter().any(|t| t == "x-hop-a" || t == "upgrade"),
        "Connection sent upstream names client hop-by-hop headers: {conn:?}"
    );
    assert_eq!(req.header("x-end-to-end"), Some("kept"));
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    let up = Upstream::start(|_| {
        Reply::text(200, "ok")
            .header("Connection", "X-Up-Hop")
            .header("X-Up-Hop", "1")
            .header("Keep-Alive", "timeout=99")
            .header("Proxy-Connection", "keep-alive")
            .header("Trailer", "X-T")
            .header("Upgrade", "foo")
            .header("Set-Cookie", "a=1")
            .header("Set-Cookie", "b=2")
            .header("X-End-To-End", "kept")
    });
    let gw = gateway(&up);
    let r = get(gw.addr(), "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    for h in ["x-up-hop", "proxy-connection", "trailer", "upgrade"] {
        assert!(!r.has_header(h), "{h} reached the client: {:?}", r.headers);
    }
    assert_ne!(
        r.header("keep-alive"),
        Some("timeout=99"),
        "upstream Keep-Alive forwarded"
    );
    assert!(!r
        .header_tokens("connection")
        .iter()
        .any(|t| t == "x-up-hop"));
    assert_eq!(
        r.header_all("set-cookie"),
        ["a=1", "b=2"],
        "Set-Cookie fields must stay separate"
    );
    assert_eq!(r.header("x-end-to-end"), Some("kept"));
}

#[test]
fn client_keep_alive_serves_many_requests_on_one_connection() {
    let up = Upstream::start(|req| Reply::text(200, req.path()));
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    for i in 0..10 {
        let r = c.request(&Req::get(&format!("/k/{i}")));
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("/k/{i}"));
        assert!(
            r.keeps_alive(),
            "response {i} closes the connection: {:?}",
            r.headers
        );
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start(|req| {
        let delay = if req.path() == "/slow" { 300 } else { 0 };
        Reply::text(200, &format!("{} {}", req.path(), req.body_text()))
            .delay(Duration::from_millis(delay))
    });
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let mut bytes = Req::get("/slow").to_bytes();
    bytes.extend(Req::post("/post", b"data").to_bytes());
    bytes.extend(Req::get("/fast").to_bytes());
    bytes.extend(Req::head("/head").to_bytes());
    bytes.extend(Req::get("/last").to_bytes());
    c.send(&bytes);
    let mut texts = Vec::new();
    for (i, m) in ["GET", "POST", "GET", "HEAD", "GET"].iter().enumerate() {
        let r = c
            .try_read_response_for(m)
            .unwrap_or_else(|e| panic!("pipelined response {}: {e}", i + 1));
        assert_eq!(r.status, 200);
        texts.push(r.text());
    }
    assert_eq!(texts, ["/slow ", "/post data", "/fast ", "", "/last "]);
}

#[test]
fn http10_client_gets_an_unchunked_response_and_the_connection_closes() {
    let up = Upstream::start(|_| Reply::status(200).chunked(&[b"hello ", b"world"]));
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    // HTTP/1.0 needs no Host.
    c.send(b"GET /old HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world");
    assert!(
        !r.has_header("transfer-encoding"),
        "an HTTP/1.0 client cannot read chunked: {:?}",
        r.headers
    );
    c.assert_closed(Duration::from_secs(2));
    assert_eq!(up.last_request().path(), "/old");
}

#[test]
fn head_response_has_no_body_and_the_connection_stays_in_sync() {
    let up = Upstream::start(|_| Reply::text(200, "hello"));
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::head("/thing"));
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().method, "HEAD");
    if let Some(cl) = r.header("content-length") {
        assert_eq!(cl, "5", "HEAD keeps the representation's Content-Length");
    }
    let r = c.request(&Req::get("/thing"));
    assert_eq!(
        r.text(),
        "hello",
        "bytes after a HEAD response were misread"
    );
    assert_eq!(
        up.connections(),
        1,
        "the upstream connection was not reused after a HEAD"
    );
}

#[test]
fn bodiless_responses_with_framing_headers_do_not_wait_for_a_body() {
    // A HEAD answered with Transfer-Encoding: chunked, a 304 with a Content-Length: neither
    // has a body on the wire (RFC 9112 §6.3 rule 1).
    let up = Upstream::start(|req| match (req.method.as_str(), req.path()) {
        ("HEAD", _) => Reply::status(200).header("Transfer-Encoding", "chunked"),
        (_, "/304") => Reply::status(304).header("Content-Length", "100"),
        _ => Reply::text(200, "next"),
    });
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    assert_eq!(c.request(&Req::head("/h")).status, 200);
    assert_eq!(c.request(&Req::get("/after-head")).text(), "next");
    assert_eq!(c.request(&Req::get("/304")).status, 304);
    assert_eq!(c.request(&Req::get("/after-304")).text(), "next");
    assert_eq!(
        up.connections(),
        1,
        "the upstream connection was not reused"
    );
}

#[test]
fn responses_204_and_304_carry_no_body() {
    let up = Upstream::start(|req| match req.path() {
        "/204" => Reply::status(204).header("X-Kind", "no-content"),
        "/304" => Reply::status(304).header("ETag", "\"v1\""),
        _ => Reply::text(200, "after"),
    });
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/204"));
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-kind"), Some("no-content"));
    assert!(
        !r.has_header("transfer-encoding"),
        "204 with Transfer-Encoding: {:?}",
        r.headers
    );
    // RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204.
    assert!(
        !r.has_header("content-length"),
        "204 with Content-Length: {:?}",
        r.headers
    );
    let r = c.request(&Req::get("/304").header("If-None-Match", "\"v1\""));
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(up.last_request().header("if-none-match"), Some("\"v1\""));
    let r = c.request(&Req::get("/next"));
    assert_eq!(r.text(), "after", "stray bytes after a 204/304");
}

#[test]
fn interim_103_from_upstream_does_not_replace_the_final_response() {
    let up = Upstream::start(|req| {
        Reply::text(200, &format!("final {}", req.path()))
            .interim("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
    });
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    for p in ["/one", "/two"] {
        let r = c.request(&Req::get(p));
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("final {p}"));
        for i in &r.interim {
            assert_eq!(i.status, 103, "unexpected interim {i:?}");
        }
    }
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let head = c
        .read_head()
        .unwrap_or_else(|e| panic!("no 100 Continue while the client waits for it: {e}"));
    assert_eq!(head.status, 100, "{head:?}");
    c.send(b"hello");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    let req = up.last_request();
    assert_eq!(req.body, b"hello");
    let r = c.request(&Req::get("/after"));
    assert_eq!(r.status, 200, "connection usable after 100-continue");
}

#[test]
fn chunked_request_body_is_forwarded_whole() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let r = send_request(
        gw.addr(),
        &Req::new("PUT", "/c").chunked(&[b"first,", b"second,", &[b'x'; 10_000]]),
    );
    assert_eq!(r.status, 200);
    let req = up.last_request();
    let mut expected = b"first,second,".to_vec();
    expected.extend([b'x'; 10_000]);
    assert_eq!(req.body, expected);
    assert!(up.errors().is_empty(), "{:?}", up.errors());
}

#[test]
fn chunked_response_body_is_relayed() {
    let up = Upstream::start(|_| Reply::status(200).chunked(&[b"hello ", b"chunked ", b"world"]));
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/"));
    assert_eq!(r.text(), "hello chunked world");
    let r = c.request(&Req::get("/"));
    assert_eq!(
        r.text(),
        "hello chunked world",
        "connection in sync after a chunked response"
    );
}

#[test]
fn close_delimited_upstream_body_is_relayed() {
    let up = Upstream::start(|_| Reply::status(200).until_close(b"read until the upstream closes"));
    let gw = gateway(&up);
    let r = get(gw.addr(), "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "read until the upstream closes");
}

#[test]
fn response_body_streams_before_the_upstream_finishes() {
    let gate = Gate::new();
    let g = gate.clone();
    let up = Upstream::start(move |_| {
        Reply::status(200)
            .chunked(&[b"first-part;", b"second-part"])
            .gate(&g)
    });
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    c.send(&Req::get("/stream").to_bytes());
    let head = c
        .read_head()
        .expect("response head before the body is complete");
    assert_eq!(head.status, 200);
    let mut got = head.head_raw.clone();
    let end = Instant::now() + Duration::from_secs(3);
    while !String::from_utf8_lossy(&got).contains("first-part;") {
        assert!(
            Instant::now() < end,
            "first chunk not relayed while the upstream pauses: {:?}",
            String::from_utf8_lossy(&got)
        );
        match c.read_some() {
            Ok(b) if !b.is_empty() => got.extend(b),
            other => panic!("waiting for the first chunk: {other:?}"),
        }
    }
    gate.open();
    let end = Instant::now() + Duration::from_secs(3);
    while !String::from_utf8_lossy(&got).contains("second-part") {
        assert!(Instant::now() < end, "rest of the body never arrived");
        match c.read_some() {
            Ok(b) if !b.is_empty() => got.extend(b),
            other => panic!("waiting for the rest: {other:?}"),
        }
    }
}

/// Sends the first part of a 4 MiB body, checks that most of it reached the upstream while the
/// client still holds the rest, then sends the rest.
fn request_body_streams(chunked: bool) {
    let up = Upstream::builder()
        .discard_bodies()
        .start(|_| Reply::text(200, "got it"));
    let gw = gateway_with(&up, "[server.limits]\nmax_body = \"16MiB\"");
    let total = 4 << 20;
    let first = 512 << 10;
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {total}")
    };
    let piece = |byte: u8, n: usize| {
        let mut out = Vec::new();
        if chunked {
            out.extend(format!("{n:x}\r\n").as_bytes());
        }
        out.extend(vec![byte; n]);
        if chunked {
            out.extend(b"\r\n");
        }
        out
    };
    let mut c = Client::connect(gw.addr());
    c.send(format!("POST /up HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n").as_bytes());
    c.send(&piece(b'a', first));
    let arrived = up.wait_until(Duration::from_secs(3), |u| {
        u.body_bytes() >= (first / 2) as u64
    });
    assert!(
        arrived,
        "only {} of the first {first} body bytes reached the upstream: the body is being buffered",
        up.body_bytes()
    );
    c.send(&piece(b'b', total - first));
    if chunked {
        c.send(b"0\r\n\r\n");
    }
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().body_len, total as u64);
}

#[test]
fn content_length_request_body_streams_before_the_client_finishes() {
    request_body_streams(false);
}

#[test]
fn chunked_request_body_streams_before_the_client_finishes() {
    request_body_streams(true);
}

/// Peak RSS of `gw` while `work` runs: sampled every few ms, and VmHWM if it rose meanwhile.
fn peak_rss_during(gw: &Gateway, work: impl FnOnce()) -> (u64, u64) {
    let baseline = gw.rss_kib();
    let hwm_before = gw.hwm_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(baseline));
    let pid = gw.pid();
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = s
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        peak.fetch_max(kib, Ordering::SeqCst);
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    work();
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    let hwm_after = gw.hwm_kib();
    let mut max = peak.load(Ordering::SeqCst).max(gw.rss_kib());
    if hwm_after > hwm_before {
        max = max.max(hwm_after);
    }
    (baseline, max)
}

/// RSS growth allowed while streaming a body far larger than it.
const RSS_BOUND_KIB: u64 = 16 * 1024;

#[test]
fn upload_of_1_gib_streams_with_bounded_memory() {
    let up = Upstream::builder()
        .discard_bodies()
        .start(|_| Reply::text(200, "stored"));
    let gw = gateway_with(&up, "[server.limits]\nmax_body = \"2GiB\"");
    // Warm up: the first request allocates the worker's steady-state buffers and pool.
    assert_eq!(
        send_request(gw.addr(), &Req::post("/warm", b"x")).status,
        200
    );
    let total: u64 = 1 << 30;
    let start = Instant::now();
    let (baseline, peak) = peak_rss_during(&gw, || {
        let mut c = Client::connect(gw.addr());
        c.set_timeout(Duration::from_secs(10));
        c.send(
            format!("PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
        );
        let block = vec![b'z'; 1 << 20];
        let mut w = c.writer_clone();
        for _ in 0..(total >> 20) {
            w.write_all(&block)
                .expect("gateway stopped reading the upload");
        }
        let r = c.read_response();
        assert_eq!(r.status, 200, "{r:?}");
    });
    assert_eq!(up.last_request().body_len, total);
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "1 GiB upload: {:?}, RSS {baseline} KiB -> peak {peak} KiB",
        start.elapsed()
    );
    assert!(
        growth < RSS_BOUND_KIB,
        "RSS grew by {growth} KiB while streaming 1 GiB (bound {RSS_BOUND_KIB} KiB)"
    );
}

#[test]
fn download_to_a_slow_client_streams_with_bounded_memory() {
    let len: u64 = 256 << 20;
    let up = Upstream::start(move |req| match req.path() {
        "/warm" => Reply::text(200, "warm"),
        _ => Reply::status(200).generated(len),
    });
    let gw = gateway(&up);
    assert_eq!(get(gw.addr(), "/warm").status, 200);
    let (baseline, peak) = peak_rss_during(&gw, || {
        let mut c = Client::connect(gw.addr());
        c.set_timeout(Duration::from_secs(30));
        c.send(&Req::get("/big").to_bytes());
        let mut head = c.read_head().expect("head");
        assert_eq!(head.status, 200);
        // Stall: a gateway without backpressure now reads the whole body into memory.
        thread::sleep(Duration::from_millis(700));
        let n = c.read_body_counting(&mut head, "GET").expect("body");
        assert_eq!(n, len);
    });
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < RSS_BOUND_KIB,
        "RSS grew by {growth} KiB relaying 256 MiB to a slow client (bound {RSS_BOUND_KIB} KiB)"
    );
}

#[test]
fn client_connection_close_is_honoured() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/").header("Connection", "close"));
    assert_eq!(r.status, 200);
    c.assert_closed(Duration::from_secs(2));
}

#[test]
fn pipelined_request_after_connection_close_is_not_served() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let mut bytes = Req::get("/first").header("Connection", "close").to_bytes();
    bytes.extend(Req::get("/second").to_bytes());
    c.send(&bytes);
    let r = c.read_response();
    assert_eq!(r.json()["path"], "/first");
    c.assert_closed(Duration::from_secs(2));
    // The gateway counts a request before it reads the connection's next one or closes it:
    // a forwarded `/second` would have been counted, and have reached the upstream, by now.
    wait_requests_done(&gw, 1);
    assert!(
        up.requests().iter().all(|r| r.path() != "/second"),
        "a request after Connection: close was forwarded"
    );
}

/// An HTTP/1.0 client asking for keep-alive: the gateway may keep the connection or close it,
/// but what it says (Connection header) must match what it does.
#[test]
fn http10_keep_alive_is_honoured_consistently() {
    let up = Upstream::start(|_| Reply::status(200).chunked(&[b"one ", b"two"]));
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let req = Req::get("/")
        .version("HTTP/1.0")
        .header("Connection", "keep-alive");
    let r = c.request(&req);
    assert_eq!(r.text(), "one two");
    assert!(
        !r.has_header("transfer-encoding"),
        "chunked sent to an HTTP/1.0 client"
    );
    // To an HTTP/1.0 client the connection persists only if the response says keep-alive.
    if r.header_tokens("connection")
        .iter()
        .any(|t| t == "keep-alive")
    {
        assert!(
            r.has_header("content-length"),
            "kept alive without a length: {:?}",
            r.headers
        );
        assert_eq!(c.request(&req).text(), "one two");
    } else {
        c.assert_closed(Duration::from_secs(2));
    }
}

#[test]
fn upstream_connection_close_does_not_close_the_client_connection() {
    let up = Upstream::start(|req| {
        Reply::text(200, req.path())
            .header("Connection", "close")
            .close()
    });
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    for p in ["/a", "/b", "/c"] {
        let r = c.request(&Req::get(p));
        assert_eq!(r.text(), p);
        assert!(
            !r.header_tokens("connection").iter().any(|t| t == "close"),
            "the upstream's Connection: close reached the client: {:?}",
            r.headers
        );
    }
    assert_eq!(up.connections(), 3);
}

#[test]
fn concurrent_clients_are_all_served_correctly() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let addr = gw.addr();
    let handles: Vec<_> = (0..16)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..10 {
                    let path = format!("/t{t}/r{i}");
                    let body = format!("body-{t}-{i}");
                    let r = c.request(&Req::post(&path, body.as_bytes()));
                    assert_eq!(r.status, 200);
                    let v = r.json();
                    assert_eq!(v["path"], path.as_str());
                    assert_eq!(v["body"], body.as_str());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    assert_eq!(up.request_count(), 160);
}

#[test]
fn reset_client_mid_request_does_not_disturb_other_connections() {
    let up = Upstream::start(|_| Reply::text(200, "fine"));
    let gw = gateway(&up);
    let mut keep = Client::connect(gw.addr());
    assert_eq!(keep.request(&Req::get("/")).text(), "fine");
    {
        let mut rude = Client::connect(gw.addr());
        rude.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial");
        let _ = socket2::SockRef::from(&rude.writer_clone()).set_linger(Some(Duration::ZERO));
    }
    // The gateway is done with the reset request (counted) before the others are checked.
    wait_requests_done(&gw, 2);
    assert_eq!(keep.request(&Req::get("/")).text(), "fine");
    assert_eq!(get(gw.addr(), "/").text(), "fine");
}

#[test]
fn truncated_upstream_body_is_never_presented_as_complete() {
    let up =
        Upstream::start(|_| Reply::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-this"));
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    c.send(&Req::get("/").to_bytes());
    match c.try_read_response() {
        Ok(r) => assert_eq!(
            r.status, 502,
            "a truncated body was relayed as complete: {r:?}"
        ),
        Err(WireError::Closed { .. }) => {}
        Err(e) => panic!("expected 502 or an aborted response, got {e}"),
    }
}
