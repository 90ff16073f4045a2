//! Tests of the test support itself: the upstream server, the raw client and the framing reader
//! are exercised against each other, without the gateway, so that a gateway test failure
//! points at the gateway and not at the harness.

mod support;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use support::gateway::complete_config;
use support::upstream::PATTERN;
use support::wire::WireError;
use support::*;

#[test]
fn keep_alive_requests_share_one_upstream_connection() {
    let up = Upstream::start(|req| Reply::text(200, &format!("hello {}", req.path())));
    let mut c = Client::connect(up.addr());
    for i in 0..3 {
        let r = c.request(&Req::get(&format!("/n/{i}")));
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("hello /n/{i}"));
        assert_eq!(
            r.header("content-length"),
            Some(format!("hello /n/{i}").len().to_string().as_str())
        );
    }
    assert_eq!(up.connections(), 1);
    assert_eq!(up.request_count(), 3);
    assert!(up.requests().iter().all(|r| r.conn == 1));
}

#[test]
fn echo_records_method_target_headers_and_body() {
    let up = Upstream::echo();
    let r = send_request(
        up.addr(),
        &Req::post("/a/b?x=1&y=2", b"payload").header("X-Test", "v1"),
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["target"], "/a/b?x=1&y=2");
    assert_eq!(v["path"], "/a/b");
    assert_eq!(v["body"], "payload");
    let req = up.last_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path(), "/a/b");
    assert_eq!(req.query(), Some("x=1&y=2"));
    assert_eq!(req.header("x-test"), Some("v1"));
    assert_eq!(req.header("content-length"), Some("7"));
    assert_eq!(req.body, b"payload");
    assert!(req.head_raw.starts_with(b"POST /a/b?x=1&y=2 HTTP/1.1\r\n"));
    assert!(req.head_raw.ends_with(b"\r\n\r\n"));
    assert!(up.errors().is_empty());
}

#[test]
fn chunked_request_body_is_decoded() {
    let up = Upstream::echo();
    let r = send_request(
        up.addr(),
        &Req::new("PUT", "/c").chunked(&[b"abc", b"defgh"]),
    );
    assert_eq!(r.status, 200);
    let req = up.last_request();
    assert!(req.chunked);
    assert_eq!(req.body, b"abcdefgh");
    assert_eq!(up.body_bytes(), 8);
}

#[test]
fn chunked_response_is_decoded_with_chunk_sizes() {
    let up = Upstream::start(|_| Reply::status(200).chunked(&[b"hello ", b"chunked ", b"world"]));
    let r = get(up.addr(), "/");
    assert_eq!(r.text(), "hello chunked world");
    assert_eq!(r.chunks, Some(vec![6, 8, 5]));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
}

#[test]
fn close_delimited_response_is_read_to_eof() {
    let up = Upstream::start(|_| Reply::status(200).until_close(b"until the end"));
    let mut c = Client::connect(up.addr());
    let r = c.request(&Req::get("/"));
    assert_eq!(r.text(), "until the end");
    assert!(!r.has_header("content-length"));
    c.assert_closed(Duration::from_secs(1));
}

#[test]
fn head_204_304_responses_have_no_body() {
    let up = Upstream::start(|req| match req.path() {
        "/204" => Reply::status(204),
        "/304" => Reply::status(304).header("ETag", "\"x\""),
        _ => Reply::text(200, "hello"),
    });
    let mut c = Client::connect(up.addr());
    let r = c.request(&Req::head("/"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
    assert!(r.body.is_empty());
    assert_eq!(c.request(&Req::get("/204")).status, 204);
    assert_eq!(c.request(&Req::get("/304")).status, 304);
    let r = c.request(&Req::get("/"));
    assert_eq!(
        r.text(),
        "hello",
        "framing stayed in sync after bodiless responses"
    );
}

#[test]
fn interim_responses_are_collected_before_the_final_one() {
    let up = Upstream::start(|_| {
        Reply::text(200, "final").interim("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")
    });
    let r = get(up.addr(), "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "final");
    assert_eq!(r.interim.len(), 1);
    assert_eq!(r.interim[0].status, 103);
    assert_eq!(r.interim[0].header("link"), Some("</s.css>"));
}

#[test]
fn expect_100_continue_gets_interim_from_upstream() {
    let up = Upstream::echo();
    let mut c = Client::connect(up.addr());
    c.send(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let head = c.read_head().expect("interim head");
    assert_eq!(head.status, 100);
    c.send(b"body");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().body, b"body");
}

#[test]
fn pipelined_responses_come_back_in_order() {
    let up = Upstream::start(|req| {
        let delay = if req.path() == "/slow" { 100 } else { 0 };
        Reply::text(200, req.path()).delay(Duration::from_millis(delay))
    });
    let mut c = Client::connect(up.addr());
    let mut bytes = Req::get("/slow").to_bytes();
    bytes.extend(Req::get("/b").to_bytes());
    bytes.extend(Req::get("/c").to_bytes());
    c.send(&bytes);
    let texts: Vec<String> = c.read_responses(3).iter().map(|r| r.text()).collect();
    assert_eq!(texts, ["/slow", "/b", "/c"]);
}

#[test]
fn http10_request_is_answered_then_closed() {
    let up = Upstream::start(|_| Reply::text(200, "old"));
    let mut c = Client::connect(up.addr());
    let r = c.request(&Req::get("/").version("HTTP/1.0"));
    assert_eq!(r.text(), "old");
    c.assert_closed(Duration::from_secs(1));
}

#[test]
fn drop_connection_is_seen_as_clean_close_without_response() {
    let up = Upstream::start(|_| Reply::drop_connection());
    let mut c = Client::connect(up.addr());
    c.send(&Req::get("/").to_bytes());
    match c.try_read_response() {
        Err(WireError::Closed { partial, .. }) => assert!(partial.is_empty()),
        other => panic!("expected close, got {other:?}"),
    }
}

#[test]
fn reset_is_seen_as_reset() {
    let up = Upstream::start(|_| Reply::reset());
    let mut c = Client::connect(up.addr());
    c.send(&Req::get("/").to_bytes());
    match c.try_read_response() {
        Err(WireError::Closed { partial, reset }) => {
            assert!(partial.is_empty());
            assert!(reset, "expected RST, got FIN");
        }
        other => panic!("expected reset, got {other:?}"),
    }
}

#[test]
fn broken_framing_replies_are_rejected_by_the_client_reader() {
    let cases: [&[u8]; 5] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    ];
    for raw in cases {
        let up = Upstream::start(move |_| Reply::raw(raw));
        let mut c = Client::connect(up.addr());
        c.send(&Req::get("/").to_bytes());
        match c.try_read_response() {
            Err(WireError::Malformed(_)) => {}
            other => panic!(
                "{:?} should be malformed, got {other:?}",
                String::from_utf8_lossy(raw)
            ),
        }
    }
}

#[test]
fn truncated_content_length_body_is_reported_as_closed_with_partial_bytes() {
    let up = Upstream::start(|_| Reply::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"));
    let mut c = Client::connect(up.addr());
    c.send(&Req::get("/").to_bytes());
    match c.try_read_response() {
        Err(WireError::Closed { partial, .. }) => assert!(partial.ends_with(b"abc")),
        other => panic!("expected a truncated body, got {other:?}"),
    }
}

#[test]
fn close_idle_connections_closes_keep_alive_connections() {
    let up = Upstream::start(|_| Reply::text(200, "x"));
    let mut c = Client::connect(up.addr());
    assert_eq!(c.request(&Req::get("/")).status, 200);
    assert!(up.wait_until(Duration::from_secs(1), |u| u.open_connections() == 1));
    assert_eq!(up.close_idle_connections(), 1);
    c.assert_closed(Duration::from_secs(1));
    assert!(up.wait_until(Duration::from_secs(1), |u| u.open_connections() == 0));
}

#[test]
fn reads_time_out_instead_of_hanging() {
    let up = Upstream::start(|_| Reply::text(200, "late").delay(Duration::from_secs(2)));
    let mut c = Client::connect(up.addr());
    c.set_timeout(Duration::from_millis(200));
    c.send(&Req::get("/").to_bytes());
    let start = Instant::now();
    match c.try_read_response() {
        Err(WireError::Timeout { got }) => assert!(got.is_empty()),
        other => panic!("expected timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_millis(1500));
    match c.wait_closed(Duration::from_millis(100)) {
        Err(WireError::Timeout { .. }) => {}
        other => panic!("connection should still be open: {other:?}"),
    }
}

#[test]
fn gate_holds_the_rest_of_the_body_until_opened() {
    let gate = Gate::new();
    let g = gate.clone();
    let up = Upstream::start(move |_| Reply::status(200).chunked(&[b"first", b"second"]).gate(&g));
    let mut c = Client::connect(up.addr());
    c.send(&Req::get("/").to_bytes());
    let head = c.read_head().expect("head");
    assert_eq!(head.status, 200);
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(2);
    while !String::from_utf8_lossy(&got).contains("first") && Instant::now() < end {
        got.extend(c.read_some().expect("first chunk"));
    }
    assert!(String::from_utf8_lossy(&got).contains("first"));
    assert!(!String::from_utf8_lossy(&got).contains("second"));
    gate.open();
    let rest = c.wait_closed(Duration::from_millis(300));
    let rest = match rest {
        Err(WireError::Timeout { got }) => got,
        other => panic!("connection should stay open: {other:?}"),
    };
    assert!(String::from_utf8_lossy(&rest).contains("second"));
}

#[test]
fn generated_body_has_the_pattern_and_length() {
    let len = 1_000_003u64;
    let up = Upstream::start(move |_| Reply::status(200).generated(len));
    let r = get(up.addr(), "/");
    assert_eq!(r.body.len() as u64, len);
    assert!(r
        .body
        .chunks(PATTERN.len())
        .all(|c| c == &PATTERN[..c.len()]));
}

#[test]
fn slow_body_arrives_in_pieces_over_time() {
    let up =
        Upstream::start(|_| Reply::text(200, "abcdef").slow_body(3, Duration::from_millis(100)));
    let start = Instant::now();
    let r = get(up.addr(), "/");
    assert_eq!(r.text(), "abcdef");
    assert!(start.elapsed() >= Duration::from_millis(180));
}

#[test]
fn discarding_upstream_counts_but_does_not_keep_bodies() {
    let up = Upstream::builder()
        .discard_bodies()
        .start(|_| Reply::status(200));
    let body = vec![b'x'; 300_000];
    assert_eq!(send_request(up.addr(), &Req::post("/", &body)).status, 200);
    let req = up.last_request();
    assert_eq!(req.body_len, 300_000);
    assert!(req.body.is_empty());
    assert_eq!(up.body_bytes(), 300_000);
}

#[test]
fn healthz_is_answered_without_logging() {
    let up = Upstream::start(|_| Reply::status(500));
    let r = get(up.addr(), "/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(up.healthz_count(), 1);
    assert_eq!(up.request_count(), 0);
}

#[test]
fn healthz_status_switches_at_runtime_and_the_last_check_is_kept() {
    let up = Upstream::start(|_| Reply::status(500));
    assert!(up.last_healthz().is_none());
    up.set_health(503);
    assert_eq!(get(up.addr(), "/healthz").status, 503);
    up.set_health(302);
    assert_eq!(get(up.addr(), "/healthz").status, 302);
    up.set_health(200);
    let r = send_request(
        up.addr(),
        &Req::get("/healthz")
            .host("example:1")
            .header("Connection", "close"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.healthz_count(), 3);
    assert_eq!(up.request_count(), 0, "checks are not logged as traffic");
    let last = up.last_healthz().expect("last check");
    assert_eq!(last.header("host"), Some("example:1"));
    assert_eq!(last.header("connection"), Some("close"));
}

#[test]
fn connect_from_uses_the_chosen_loopback_source() {
    let up = Upstream::start(|_| Reply::status(200));
    let src = Ipv4Addr::new(127, 0, 0, 7);
    let mut c = Client::connect_from(src, up.addr());
    assert_eq!(c.local_addr().ip(), src);
    assert_eq!(c.request(&Req::get("/")).status, 200);
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let p = free_port();
        assert!(seen.insert(p), "port {p} handed out twice");
        TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, p))).expect("bindable");
    }
}

#[test]
fn ports_claimed_by_another_live_process_are_not_handed_out() {
    let port = free_port();
    let other = std::env::temp_dir()
        .join("dispatch-itest-ports")
        .join((port + 1).to_string());
    // pid 1 is always alive: the claim stands.
    std::fs::write(&other, "1").unwrap();
    assert!(!support::ports::claim(port + 1));
    // A claim by a pid that does not exist is taken over.
    std::fs::write(&other, "4194304999").unwrap();
    assert!(support::ports::claim(port + 1));
    assert!(
        !support::ports::claim(port + 1),
        "claimed twice by one process"
    );
    assert!(
        !support::ports::claim(port),
        "free_port's own claim handed out again"
    );
}

#[test]
fn nothing_listens_on_dead_url() {
    let url = dead_url();
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    assert!(Client::try_connect(addr).is_err());
}

#[test]
fn complete_config_fills_in_listeners_and_workers() {
    let listen: SocketAddr = "127.0.0.1:1111".parse().unwrap();
    let admin: SocketAddr = "127.0.0.1:2222".parse().unwrap();
    let c = complete_config("[upstreams.a]\nendpoints = []\n", listen, admin);
    assert!(c.contains("[server]\nlisten = [\"127.0.0.1:1111\"]\nworkers = 1\n"));
    assert!(c.contains("[admin]\nlisten = \"127.0.0.1:2222\"\n"));
    let c = complete_config(
        "[server]\nworkers = 2\n\n[server.limits]\nmax_body = 5\n\n[admin]\n",
        listen,
        admin,
    );
    assert!(c.starts_with("[server]\nlisten = [\"127.0.0.1:1111\"]\nworkers = 2\n"));
    assert_eq!(c.matches("workers").count(), 1);
    assert_eq!(c.matches("[admin]").count(), 1);
    assert!(c.contains("[admin]\nlisten = \"127.0.0.1:2222\"\n"));
}

fn error_response(body: &str, request_id: Option<&str>) -> Response {
    let body = body.to_string();
    let id = request_id.map(str::to_string);
    let up = Upstream::start(move |_| {
        let r = Reply::status(404)
            .header("Content-Type", "application/json")
            .body(body.as_bytes());
        match &id {
            Some(id) => r.header("X-Request-Id", id),
            None => r,
        }
    });
    get(up.addr(), "/")
}

#[test]
fn assert_error_accepts_the_contract_shape() {
    let r = error_response(
        r#"{"error":{"code":404,"message":"no route","request_id":"abc"}}"#,
        Some("abc"),
    );
    assert_eq!(assert_error(&r, 404), "abc");
}

#[test]
#[should_panic(expected = "error object keys")]
fn assert_error_rejects_extra_keys() {
    let r = error_response(
        r#"{"error":{"code":404,"message":"m","request_id":"a","extra":1}}"#,
        None,
    );
    assert_error(&r, 404);
}

#[test]
#[should_panic(expected = "must carry X-Request-Id equal to error.request_id")]
fn assert_error_rejects_request_id_mismatch() {
    let r = error_response(
        r#"{"error":{"code":404,"message":"m","request_id":"a"}}"#,
        Some("b"),
    );
    assert_error(&r, 404);
}

#[test]
#[should_panic(expected = "must carry X-Request-Id equal to error.request_id")]
fn assert_error_rejects_missing_request_id_header() {
    let r = error_response(
        r#"{"error":{"code":404,"message":"m","request_id":"a"}}"#,
        None,
    );
    assert_error(&r, 404);
}

#[test]
#[should_panic(expected = "error.code")]
fn assert_error_rejects_wrong_code() {
    let r = error_response(
        r#"{"error":{"code":500,"message":"m","request_id":"a"}}"#,
        None,
    );
    assert_error(&r, 404);
}

#[test]
fn blackhole_connects_time_out() {
    let hole = Blackhole::new();
    let start = Instant::now();
    let r = std::net::TcpStream::connect_timeout(&hole.addr, Duration::from_millis(300));
    assert!(r.is_err(), "connect to the blackhole succeeded");
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "failed at once: {r:?}"
    );
}

fn error_response_with(body: &str, headers: &[(&str, &str)]) -> Response {
    let body = body.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let up = Upstream::start(move |_| {
        headers.iter().fold(
            Reply::status(503)
                .header("Content-Type", "application/json")
                .body(body.as_bytes()),
            |r, (n, v)| r.header(n, v),
        )
    });
    get(up.addr(), "/")
}

#[test]
fn assert_error_retry_after_accepts_the_contract_shape() {
    let r = error_response_with(
        r#"{"error":{"code":503,"message":"open","request_id":"x","retryAfter":7}}"#,
        &[("X-Request-Id", "x"), ("Retry-After", "7")],
    );
    assert_eq!(assert_error_retry_after(&r, 503), ("x".to_string(), 7));
}

#[test]
#[should_panic(expected = "Retry-After must equal error.retryAfter")]
fn assert_error_retry_after_rejects_a_mismatched_header() {
    let r = error_response_with(
        r#"{"error":{"code":503,"message":"open","request_id":"x","retryAfter":7}}"#,
        &[("X-Request-Id", "x"), ("Retry-After", "8")],
    );
    assert_error_retry_after(&r, 503);
}

#[test]
#[should_panic(expected = "error object keys")]
fn assert_error_retry_after_requires_retry_after_in_the_body() {
    let r = error_response_with(
        r#"{"error":{"code":503,"message":"open","request_id":"x"}}"#,
        &[("X-Request-Id", "x"), ("Retry-After", "7")],
    );
    assert_error_retry_after(&r, 503);
}

#[test]
fn wait_until_polls_until_the_condition_or_the_deadline() {
    let start = Instant::now();
    let mut n = 0;
    assert!(wait_until(Duration::from_secs(2), || {
        n += 1;
        n == 3
    }));
    assert!(start.elapsed() < Duration::from_millis(1500));
    let start = Instant::now();
    assert!(!wait_until(Duration::from_millis(100), || false));
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(1));
}

#[test]
fn metric_reads_a_sample_by_exact_series() {
    let text = "# TYPE dispatch_breaker_state gauge\ndispatch_breaker_state{upstream=\"users\"} 2\ndispatch_breaker_state{upstream=\"users_v2\"} 0\n";
    assert_eq!(
        metric(text, r#"dispatch_breaker_state{upstream="users"}"#),
        Some(2.0)
    );
    assert_eq!(
        metric(text, r#"dispatch_breaker_state{upstream="users_v2"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(text, r#"dispatch_breaker_state{upstream="user"}"#),
        None
    );
}

#[test]
fn percent_encode_keeps_only_unreserved_characters() {
    assert_eq!(
        percent_encode("http://127.0.0.1:9005/a b"),
        "http%3A%2F%2F127.0.0.1%3A9005%2Fa%20b"
    );
    assert_eq!(percent_encode("A-z_0.9~"), "A-z_0.9~");
}

#[test]
fn rfc3339_utc_millis_parses_utc_timestamps() {
    assert_eq!(rfc3339_utc_millis("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(rfc3339_utc_millis("1970-01-01T00:00:01.5Z"), Some(1500));
    assert_eq!(
        rfc3339_utc_millis("2026-11-22T09:14:03.120Z"),
        Some(1_795_338_843_120)
    );
    assert_eq!(
        rfc3339_utc_millis("2000-02-29T23:59:59.999+00:00"),
        Some(951_868_799_999)
    );
    for bad in [
        "2026-11-22 09:14:03Z",
        "2026-11-22T09:14:03",
        "2026-13-01T00:00:00Z",
        "yesterday",
        "2026-11-22T09:14:03.Z",
    ] {
        assert_eq!(rfc3339_utc_millis(bad), None, "{bad}");
    }
    let now = now_millis();
    assert!(now > 1_700_000_000_000, "{now}");
}

/// The test authority's certificates chain to it, carry the names asked for, and its files
/// exist: the TLS tests' fixtures are what they say.
#[test]
fn test_pki_issues_certificates_that_verify_for_their_names() {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{ServerName, UnixTime};
    let pki = support::tls::Pki::new("selftest");
    let leaf = pki.server("api", &["api.example.com", "*.example.net"], 30);
    assert!(std::fs::read_to_string(&leaf.cert_path)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(std::fs::read_to_string(&leaf.key_path)
        .unwrap()
        .contains("PRIVATE KEY"));
    let config = pki.client_config(&["http/1.1"], None, &[]);
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(
        rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes())
            .map(|c| c.unwrap()),
    );
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .build()
    .unwrap();
    for (name, ok) in [
        ("api.example.com", true),
        ("x.example.net", true),
        ("example.net", false),
    ] {
        let res = verifier.verify_server_cert(
            &leaf.cert_der,
            &[],
            &ServerName::try_from(name).unwrap(),
            &[],
            UnixTime::now(),
        );
        assert_eq!(res.is_ok(), ok, "{name}: {res:?}");
    }
}
