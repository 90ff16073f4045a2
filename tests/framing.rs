//! Strict request framing and limits (BEHAVIOR.md "Errors sent to clients"): every malformed
//! or conflicting request is a 400 and the connection is closed; over-limit requests get
//! 414/431/413; slow clients get 408; every such error has the JSON error body. Nothing that
//! fails here may reach the upstream.

mod support;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};
use support::waits::wait_requests_done;
use support::*;

/// Small limits so that tests can cross them cheaply.
const LIMITS: &str = r#"
[server.limits]
max_request_line = "1KiB"
max_header_bytes = "4KiB"
max_headers = 20
max_body = "1KiB"
header_timeout = "500ms"
body_timeout = "500ms"
keepalive_timeout = "2s"
"#;

fn gateway(up: &Upstream) -> Gateway {
    gateway_limits(up, LIMITS)
}

fn gateway_limits(up: &Upstream, limits: &str) -> Gateway {
    catch_all_gateway(up, limits)
}

/// Sends `raw` on a fresh connection and expects the error `status` with the JSON body, then
/// the connection closed; the upstream must have received nothing.
fn rejected_then_closed(raw: &[u8], status: u16) {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    c.send(raw);
    let r = c.try_read_response().unwrap_or_else(|e| {
        panic!(
            "expected {status} for {:?}, got no response: {e}",
            String::from_utf8_lossy(raw)
        )
    });
    assert_eq!(
        r.status,
        status,
        "request {:?} -> {} {:?}",
        String::from_utf8_lossy(raw),
        r.status,
        r.text()
    );
    assert_error(&r, status);
    c.assert_closed(Duration::from_secs(2));
    assert_eq!(
        up.request_count(),
        0,
        "a rejected request reached the upstream: {:?}",
        up.requests()
    );
}

macro_rules! bad_request {
    ($($(#[$doc:meta])* $name:ident: $raw:expr;)*) => {$(
        $(#[$doc])*
        #[test]
        fn $name() {
            rejected_then_closed($raw, 400);
        }
    )*};
}

bad_request! {
    /// RFC 9112 §7: chunked must not be applied more than once.
    chunked_applied_twice:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n";
    chunked_in_two_fields:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    /// RFC 9112 §6.3: Content-Length with Transfer-Encoding is a smuggling vector.
    content_length_with_transfer_encoding:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    transfer_encoding_with_content_length_reversed:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n";
    two_different_content_lengths:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    content_length_list_with_different_values:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!";
    content_length_not_a_number:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n";
    content_length_negative:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello";
    /// RFC 9110 §8.6: Content-Length = 1*DIGIT; a sign is not a digit.
    content_length_with_plus_sign:
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello";
    invalid_chunk_size:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    chunk_data_not_followed_by_crlf:
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n";
    /// RFC 9112 §5.2: obs-fold in a request is rejected.
    obs_fold_header:
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  continued\r\n\r\n";
    /// RFC 9112 §5.1: whitespace between a field name and the colon MUST be rejected.
    whitespace_before_colon:
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A : v\r\n\r\n";
    invalid_byte_in_header_name:
        b"GET / HTTP/1.1\r\nHost: x\r\nX(A): v\r\n\r\n";
    empty_header_name:
        b"GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n";
    header_line_without_colon:
        b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n";
    nul_in_header_value:
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n";
    control_byte_in_header_value:
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n";
    bare_cr_in_header_value:
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n";
    request_line_without_version:
        b"GET /\r\nHost: x\r\n\r\n";
    request_line_with_space_in_target:
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n";
    control_byte_in_target:
        b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n";
    invalid_byte_in_method:
        b"G(ET / HTTP/1.1\r\nHost: x\r\n\r\n";
    /// RFC 9112 §3.2: an HTTP/1.1 request without Host -> 400.
    http11_request_without_host:
        b"GET / HTTP/1.1\r\nX-A: v\r\n\r\n";
    /// RFC 9112 §3.2: more than one Host field line -> 400.
    two_host_headers:
        b"GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: b.example.com\r\n\r\n";
}

/// RFC 9112 §6.3: a request whose final transfer coding is not chunked has no reliable length:
/// 400 and close. (§6.1 also allows 501 for a coding the server does not implement.)
#[test]
fn transfer_encoding_not_ending_in_chunked() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello");
    let r = c.read_response();
    assert!(matches!(r.status, 400 | 501), "got {r:?}");
    assert_error(&r, r.status);
    c.assert_closed(Duration::from_secs(2));
    assert_eq!(up.request_count(), 0);
}

#[test]
fn valid_but_unusual_framing_is_accepted() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let cases: [(&str, &[u8], &[u8]); 4] = [
        (
            "chunk extensions",
            b"POST /ext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            "request trailers",
            b"POST /trailers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n",
            b"abc",
        ),
        (
            "upper-case hex and leading zeros in chunk sizes",
            b"POST /hex HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n00A\r\n0123456789\r\n0\r\n\r\n",
            b"0123456789",
        ),
        (
            "Content-Length with leading zeros",
            b"POST /zeros HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhello",
            b"hello",
        ),
    ];
    for (what, raw, body) in cases {
        c.send(raw);
        let r = c
            .try_read_response()
            .unwrap_or_else(|e| panic!("{what}: no response: {e}"));
        assert_eq!(r.status, 200, "{what}: {r:?}");
        assert_eq!(up.last_request().body, body, "{what}");
    }
}

/// The body of a request the gateway answers itself must be consumed (or the connection
/// closed): parsed as the next request it would be a smuggled request.
fn rejected_request_body_is_never_parsed_as_a_request(expect_continue: bool) {
    let up = Upstream::echo();
    let gw = Gateway::start(&format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\nretries = 0\n\n[routes.api]\npaths = [\"/api\"]\nupstream = \"app\"\n",
        up.url()
    ));
    let smuggled = b"GET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut c = Client::connect(gw.addr());
    let expect = if expect_continue {
        "Expect: 100-continue\r\n"
    } else {
        ""
    };
    c.send(
        format!(
            "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{expect}\r\n",
            smuggled.len()
        )
        .as_bytes(),
    );
    if expect_continue {
        // The client waits for 100 Continue, then sends the body anyway (RFC 9110 §10.1.1).
        // The 404 can be decided from the head alone, so the gateway answers it at once
        // (counted once written): the body arrives after the answer.
        wait_requests_done(&gw, 1);
    }
    let _ = c.try_send(smuggled);
    let _ = c.try_send(&Req::get("/api/next").to_bytes());
    let r = c.read_response();
    assert_error(&r, 404);
    // Requests on one connection are served in order: once it answered the next request or
    // closed the connection, the gateway is done with whatever it parsed from it.
    let answered = match c.try_read_response() {
        Ok(r) => {
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(
                r.json()["path"],
                "/api/next",
                "the body was parsed as a request"
            );
            2
        }
        Err(support::wire::WireError::Closed { partial, .. }) if partial.is_empty() => 1,
        Err(e) => panic!("after the 404: {e}"),
    };
    wait_requests_done(&gw, answered);
    assert!(
        up.requests().iter().all(|r| r.path() != "/api/smuggled"),
        "a request smuggled in a rejected request's body reached the upstream"
    );
}

#[test]
fn body_of_a_request_answered_404_is_never_parsed_as_a_request() {
    rejected_request_body_is_never_parsed_as_a_request(false);
}

#[test]
fn body_of_an_expect_100_request_answered_404_is_never_parsed_as_a_request() {
    rejected_request_body_is_never_parsed_as_a_request(true);
}

#[test]
fn framing_error_after_a_good_pipelined_request_answers_the_good_one_first() {
    let up = Upstream::start(|_| Reply::text(200, "good"));
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let mut bytes = Req::get("/good").to_bytes();
    bytes.extend_from_slice(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    );
    c.send(&bytes);
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "good");
    let r = c.read_response();
    assert_error(&r, 400);
    c.assert_closed(Duration::from_secs(2));
    assert_eq!(up.request_count(), 1);
}

#[test]
fn a_framing_error_closes_only_its_own_connection() {
    let up = Upstream::start(|_| Reply::text(200, "still here"));
    let gw = gateway(&up);
    let mut other = Client::connect(gw.addr());
    assert_eq!(other.request(&Req::get("/")).status, 200);
    let mut bad = Client::connect(gw.addr());
    bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n");
    assert_error(&bad.read_response(), 400);
    bad.assert_closed(Duration::from_secs(2));
    let r = other.request(&Req::get("/"));
    assert_eq!(r.text(), "still here");
}

#[test]
fn request_line_over_the_limit_is_414() {
    let raw = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
    rejected_then_closed(raw.as_bytes(), 414);
}

#[test]
fn request_line_under_the_limit_is_served() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let path = format!("/{}", "a".repeat(800));
    let r = get(gw.addr(), &path);
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().target, path);
}

#[test]
fn header_block_over_the_limit_is_431() {
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    rejected_then_closed(raw.as_bytes(), 431);
}

#[test]
fn many_small_headers_over_the_byte_limit_are_431() {
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..15 {
        raw.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(400)));
    }
    raw.push_str("\r\n");
    rejected_then_closed(raw.as_bytes(), 431);
}

#[test]
fn too_many_header_fields_is_431() {
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    rejected_then_closed(raw.as_bytes(), 431);
}

#[test]
fn headers_under_the_limits_are_served() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut req = Req::get("/");
    for i in 0..12 {
        req = req.header(&format!("X-H{i}"), &"v".repeat(100));
    }
    let r = send_request(gw.addr(), &req);
    assert_eq!(r.status, 200);
    assert_eq!(
        up.last_request().header("x-h11"),
        Some("v".repeat(100).as_str())
    );
}

#[test]
fn content_length_over_max_body_is_413_before_the_body_is_sent() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n");
    let r = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("no 413 on the Content-Length alone: {e}"));
    assert_error(&r, 413);
    c.assert_closed(Duration::from_secs(2));
    assert_eq!(up.request_count(), 0);
}

#[test]
fn expect_100_continue_with_a_body_over_max_body_gets_413_not_100() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\nExpect: 100-continue\r\n\r\n");
    let head = c.read_head().expect("a response to the head");
    assert_eq!(head.status, 413, "{head:?}");
    assert_eq!(up.request_count(), 0);
}

#[test]
fn body_of_exactly_max_body_is_accepted() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let r = send_request(gw.addr(), &Req::post("/", &[b'q'; 1024]));
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().body_len, 1024);
}

#[test]
fn chunked_body_over_max_body_is_413_while_streaming() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("190\r\n{}\r\n", "c".repeat(0x190));
    // 3 x 400 bytes crosses 1 KiB on the third chunk. The body stays open (no last chunk):
    // only a gateway that counts while streaming can answer now.
    c.send(chunk.repeat(3).as_bytes());
    let r = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("no 413 for a chunked body over max_body: {e}"));
    assert_error(&r, 413);
    c.assert_closed(Duration::from_secs(2));
    assert!(
        up.requests().iter().all(|r| r.body_len <= 1024),
        "the upstream received a complete over-limit body"
    );
}

#[test]
fn chunked_body_under_max_body_is_accepted() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let r = send_request(
        gw.addr(),
        &Req::post("/", b"").chunked(&[&[b'a'; 500], &[b'b'; 500]]),
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().body_len, 1000);
}

#[test]
fn incomplete_head_times_out_with_408() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let start = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let r = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("no 408: {e}"));
    let waited = start.elapsed();
    assert_error(&r, 408);
    assert!(
        waited >= Duration::from_millis(400),
        "408 after only {waited:?} (header_timeout 500ms)"
    );
    assert!(
        waited < Duration::from_secs(3),
        "408 after {waited:?} (header_timeout 500ms)"
    );
    c.assert_closed(Duration::from_secs(2));
    assert_eq!(up.request_count(), 0);
}

/// Slowloris: a head dribbled out one byte at a time must still time out as a whole.
#[test]
fn header_timeout_bounds_the_whole_head_not_the_gaps() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let mut w = c.writer_clone();
    let start = Instant::now();
    let dribbler = thread::spawn(move || {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: {}\r\n\r\n",
            "s".repeat(60)
        );
        for b in head.bytes() {
            if w.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    let r = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("no 408: {e}"));
    let waited = start.elapsed();
    assert_error(&r, 408);
    assert!(
        waited < Duration::from_millis(2500),
        "408 after {waited:?} (header_timeout 500ms)"
    );
    // The dribbler stops by itself once its writes fail (or the head is out).
    drop(dribbler);
}

#[test]
fn stalled_body_times_out_with_408() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let start = Instant::now();
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    let r = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("no 408: {e}"));
    let waited = start.elapsed();
    assert_error(&r, 408);
    assert!(
        waited >= Duration::from_millis(400),
        "408 after only {waited:?} (body_timeout 500ms)"
    );
    assert!(
        waited < Duration::from_secs(3),
        "408 after {waited:?} (body_timeout 500ms)"
    );
    c.assert_closed(Duration::from_secs(2));
    assert!(
        up.requests().iter().all(|r| r.body_len < 10),
        "the upstream received a complete body"
    );
}

#[test]
fn body_that_keeps_flowing_is_not_timed_out() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n");
    // 8 bytes over ~800 ms, longer than body_timeout (500ms) in all but never more than
    // 100 ms apart.
    for b in b"abcdefgh" {
        thread::sleep(Duration::from_millis(100));
        c.send(&[*b]);
    }
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().body, b"abcdefgh");
}

#[test]
fn idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let up = Upstream::echo();
    let gw = gateway_limits(&up, "[server.limits]\nkeepalive_timeout = \"300ms\"");
    let mut c = Client::connect(gw.addr());
    assert_eq!(c.request(&Req::get("/")).status, 200);
    pause(100);
    assert_eq!(
        c.request(&Req::get("/")).status,
        200,
        "closed before keepalive_timeout"
    );
    let start = Instant::now();
    match c.wait_closed(Duration::from_secs(3)) {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "an idle connection must be closed silently, got {:?}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => panic!("idle connection not closed within 3 s (keepalive_timeout 300ms): {e}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn error_body_carries_the_client_request_id() {
    let up = Upstream::echo();
    let gw = Gateway::start(&format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\n\n[routes.api]\npaths = [\"/api\"]\nupstream = \"app\"\n",
        up.url()
    ));
    let r = send_request(
        gw.addr(),
        &Req::get("/nowhere").header("X-Request-Id", "rid-42"),
    );
    assert_eq!(assert_error(&r, 404), "rid-42");
}

#[test]
fn error_body_has_a_generated_request_id_when_none_was_sent() {
    let up = Upstream::echo();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n");
    let r = c.read_response();
    let id = assert_error(&r, 400);
    assert!(!id.is_empty());
}
