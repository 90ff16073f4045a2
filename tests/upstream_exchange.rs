//! The upstream exchange (BEHAVIOR.md "Proxying", "Retries", "Metrics", "Access log"): what
//! counts as an attempt, broken first chunks answered 502, interim responses relayed, and the
//! last attempt's endpoint and outcome recorded on failures.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::upstream_misbehave::{ok, Exchange, Scripted};
use support::*;

/// A gateway with one catch-all route to `url`, `retries` retries, and `extra` TOML.
fn gateway_to(url: &str, retries: u32, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "[upstreams.app]\nendpoints = [\"{url}\"]\nretries = {retries}\n\n\
         [routes.all]\npaths = [\"/\"]\nupstream = \"app\"\n\n{extra}\n"
    ))
}

// ---- 2. Retries: what a free stale-connection replay is ----

/// A PUT the upstream read completely before resetting was replayed for free on top of its retry.
#[test]
fn put_read_whole_then_reset_reaches_the_upstream_retries_plus_one_times() {
    let up = Scripted::start(|x: &mut Exchange| {
        while let Some(head) = x.read_head() {
            if x.read_body(head.content_length()).is_err() {
                return;
            }
            if head.method == "PUT" {
                x.mark(1);
                x.reset_on_close();
                return;
            }
            if !x.write(&ok(&format!("own:{}", head.target))) {
                return;
            }
        }
    });
    let gw = gateway_to(&up.url(), 1, "");
    let mut c = Client::connect(gw.addr());
    // Warm the pool: the PUT's first attempt goes out on a reused connection.
    let r = c.request(&Req::get("/warm"));
    assert_eq!((r.status, r.text().as_str()), (200, "own:/warm"));
    let r = c.request(&Req::new("PUT", "/items/7").body(b"{\"name\":\"seven\"}"));
    assert_error(&r, 502);
    // The 502 is sent after the last attempt ended: the count is final.
    assert_eq!(
        up.marks(1),
        2,
        "retries = 1 allows exactly 2 attempts; upstream saw {:?}",
        up.targets()
    );
}

/// An idle pooled connection the upstream had closed failed a request instead of being replaced.
#[test]
fn pooled_connection_closed_while_idle_is_replaced_without_spending_a_retry() {
    let up = Scripted::start(|x: &mut Exchange| {
        if let Some(head) = x.read_head() {
            let _ = x.read_body(head.content_length());
            // Keep-alive response, then the upstream closes the idle connection.
            x.write(&ok(&format!("own:{}", head.target)));
            x.close();
            x.mark(2);
        }
    });
    let gw = gateway_to(&up.url(), 0, "");
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/first"));
    assert_eq!((r.status, r.text().as_str()), (200, "own:/first"));
    up.await_marks(2, 1);
    for (i, method) in ["GET", "POST"].into_iter().enumerate() {
        let r = c.request(&Req::new(method, "/next").body(b"x"));
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "own:/next"),
            "{method} after the upstream closed its idle connection"
        );
        up.await_marks(2, i + 2);
    }
    assert_eq!(up.accepted(), 3, "each request on a fresh connection");
}

// ---- 3. Invalid first chunk: 502 while no byte has left ----

/// Sends `body` after a chunked 200 head and expects a 502 JSON error on a connection that
/// stays usable.
fn broken_first_chunk_is_a_502(body: &str) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
    let raw = format!("{head}{body}");
    let up = Upstream::start(move |_| Reply::raw(raw.as_bytes()));
    let gw = catch_all_gateway(&up, "");
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/broken"));
    assert_error(&r, 502);
    // A gateway error, not a cut response: the client connection carries the next request.
    let r = c.request(&Req::get("/again"));
    assert_error(&r, 502);
}

/// A non-hex first chunk size closed the client connection without a byte instead of a 502.
#[test]
fn invalid_first_chunk_size_is_answered_502() {
    broken_first_chunk_is_a_502("zz\r\nhello\r\n0\r\n\r\n");
}

/// An overflowing first chunk size closed the client connection without a byte instead of a 502.
#[test]
fn overflowing_first_chunk_size_is_answered_502() {
    broken_first_chunk_is_a_502("fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n");
}

/// A CRLF inside a quoted chunk extension closed the client connection without a byte instead of a 502.
#[test]
fn crlf_in_quoted_first_chunk_extension_is_answered_502() {
    broken_first_chunk_is_a_502("5;name=\"a\r\nb\"\r\nhello\r\n0\r\n\r\n");
}

/// Once part of a chunked body reached the client, a broken chunk closes the connection.
#[test]
fn broken_chunk_after_bytes_left_closes_the_client_connection() {
    let up = Scripted::start(|x: &mut Exchange| {
        if x.read_head().is_some() {
            x.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
            // The broken chunk follows once the client has the first one (event 4, set by
            // the test).
            if x.await_mark(4, 1) {
                x.write(b"zz\r\n");
            }
        }
    });
    let gw = gateway_to(&up.url(), 0, "");
    let mut c = Client::connect(gw.addr());
    c.send(&Req::get("/cut").to_bytes());
    let head = c
        .read_head()
        .expect("the response head is relayed with the first chunk");
    assert_eq!(head.status, 200);
    let first = c.read_some().expect("the first chunk is relayed");
    assert!(!first.is_empty());
    up.mark(4);
    c.assert_closed(Duration::from_secs(5));
}

/// The chunked head used to be held until the first chunk arrived, so a stream (server-sent
/// events, long polling) reached the client only with its first event: the head goes out as
/// soon as nothing of the body came with it.
#[test]
fn chunked_stream_head_is_relayed_before_its_first_chunk() {
    let up = Scripted::start(|x: &mut Exchange| {
        if x.read_head().is_some() {
            x.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                  Transfer-Encoding: chunked\r\n\r\n",
            );
            // The first event follows once the client has the head (event 4, set by the test).
            if x.await_mark(4, 1) {
                x.write(b"5\r\nhello\r\n0\r\n\r\n");
            }
        }
    });
    let gw = gateway_to(&up.url(), 0, "");
    let mut c = Client::connect(gw.addr());
    c.send(&Req::get("/events").to_bytes());
    let mut head = c.read_head().expect("the head arrives before any event");
    assert_eq!(head.status, 200);
    up.mark(4);
    c.read_body(&mut head, "GET").expect("the event follows");
    assert_eq!(head.text(), "hello");
}

// ---- 4. Interim responses (RFC 9110 §15.2) ----

/// `103 Early Hints` from the upstream was swallowed instead of relayed to an HTTP/1.1 client.
#[test]
fn early_hints_are_relayed_to_http11_clients_without_hop_by_hop_headers() {
    let up = Upstream::start(|_| {
        Reply::text(200, "final").interim(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nConnection: x-hop\r\n\
             X-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\n",
        )
    });
    let gw = catch_all_gateway(&up, "");
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/page"));
    assert_eq!((r.status, r.text().as_str()), (200, "final"));
    assert_eq!(r.interim.len(), 1, "one interim response: {:?}", r.interim);
    let hints = &r.interim[0];
    assert_eq!(hints.status, 103);
    assert_eq!(hints.header("link"), Some("</style.css>; rel=preload"));
    for hop in ["connection", "x-hop", "keep-alive"] {
        assert!(
            !hints.has_header(hop),
            "hop-by-hop {hop} relayed: {hints:?}"
        );
    }
    // The connection stays in step for the next exchange.
    let r = c.request(&Req::get("/again"));
    assert_eq!((r.status, r.interim.len()), (200, 1));
}

/// An HTTP/1.0 client must get no interim response (RFC 9110 §15.2).
#[test]
fn http10_clients_get_no_interim_responses() {
    let up = Upstream::start(|_| {
        Reply::text(200, "final").interim("HTTP/1.1 103 Early Hints\r\nLink: </a.js>\r\n\r\n")
    });
    let gw = catch_all_gateway(&up, "");
    let r = send_request(gw.addr(), &Req::get("/page").version("HTTP/1.0"));
    assert_eq!((r.status, r.text().as_str()), (200, "final"));
    assert!(
        r.interim.is_empty(),
        "interim sent to HTTP/1.0: {:?}",
        r.interim
    );
}

/// The upstream's `100 Continue` was swallowed when the gateway had not sent its own.
#[test]
fn upstream_100_continue_is_relayed_when_the_gateway_sent_none() {
    let up =
        Upstream::start(|_| Reply::text(200, "final").interim("HTTP/1.1 100 Continue\r\n\r\n"));
    let gw = catch_all_gateway(&up, "");
    let r = send_request(gw.addr(), &Req::post("/upload", b"body"));
    assert_eq!((r.status, r.text().as_str()), (200, "final"));
    let statuses: Vec<u16> = r.interim.iter().map(|i| i.status).collect();
    assert_eq!(statuses, [100]);
}

/// A client that got the gateway's own `100 Continue` must not get the upstream's as well.
#[test]
fn client_never_gets_two_100_continue() {
    let up =
        Upstream::start(|_| Reply::text(200, "final").interim("HTTP/1.1 100 Continue\r\n\r\n"));
    let gw = catch_all_gateway(&up, "");
    let mut c = Client::connect(gw.addr());
    let head: &[u8] =
        b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n";
    c.send(head);
    let cont = c.read_head().expect("the gateway invites the body");
    assert_eq!(cont.status, 100);
    c.send(b"body");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "final"));
    assert!(
        r.interim.is_empty(),
        "a second 100 Continue: {:?}",
        r.interim
    );
    assert_eq!(up.requests()[0].body, b"body");
}

// ---- 5. The last attempt on failures, in the access log ----

/// JSON access-log lines printed so far.
fn access_lines(gw: &Gateway) -> Vec<Value> {
    gw.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The access-log line of request `id` (waits up to 3 s for it).
fn access_line(gw: &Gateway, id: &str) -> Value {
    let mut line = None;
    wait_until(Duration::from_secs(3), || {
        line = access_lines(gw).into_iter().find(|v| v["request_id"] == id);
        line.is_some()
    });
    line.unwrap_or_else(|| panic!("no access-log line for {id}: {}", gw.stdout()))
}

/// `upstream_addr` / `upstream_ms` were null in the access log exactly on 502 and 504.
#[test]
fn access_log_names_the_last_attempt_on_502_and_504() {
    let dead = dead_url();
    let slow = Upstream::start(|_| Reply::text(200, "late").delay(Duration::from_millis(800)));
    let gw = Gateway::start(&format!(
        "[log]\naccess = \"json\"\n\n\
         [upstreams.dead]\nendpoints = [\"{dead}\"]\nretries = 0\n\n\
         [upstreams.slow]\nendpoints = [\"{}\"]\nretries = 0\nread_timeout = \"200ms\"\n\n\
         [routes.dead]\npaths = [\"/dead\"]\nupstream = \"dead\"\n\n\
         [routes.slow]\npaths = [\"/slow\"]\nupstream = \"slow\"\n",
        slow.url()
    ));
    let cases = [(
        "/dead",
        502,
        dead.trim_start_matches("http://").to_string(),
        "failed-502",
    )];
    let cases = cases.into_iter().chain([(
        "/slow",
        504,
        slow.url().trim_start_matches("http://").to_string(),
        "failed-504",
    )]);
    for (path, status, addr, id) in cases {
        let r = send_request(gw.addr(), &Req::get(path).header("X-Request-Id", id));
        assert_error(&r, status);
        let line = access_line(&gw, id);
        assert_eq!(line["upstream_addr"], addr.as_str(), "{path}: {line}");
        let ms = line["upstream_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{path}: upstream_ms is not a number: {line}"));
        if status == 504 {
            assert!(
                ms >= 190.0,
                "{path}: the attempt waited the read timeout: {line}"
            );
        }
    }
}

// ---- 6. A retried 5xx counts as what it is ----

/// A retried 503 was counted as `outcome="reset"` in `dispatch_upstream_requests_total`.
#[test]
fn retried_503_counts_as_error_5xx_not_reset() {
    let up = Upstream::start(|_| Reply::text(503, "busy"));
    let gw = gateway_to(&up.url(), 1, "");
    let r = send_request(gw.addr(), &Req::get("/x"));
    assert_eq!((r.status, r.text().as_str()), (503, "busy"));
    assert_eq!(up.requests().len(), 2, "one retry");
    let series = |text: &str, outcome: &str| {
        metric(
            text,
            &format!("dispatch_upstream_requests_total{{upstream=\"app\",outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0)
    };
    // An attempt is counted just after its response was relayed: the client can be a moment
    // ahead of the scrape.
    let mut text = String::new();
    wait_until(Duration::from_secs(3), || {
        text = get(gw.admin_addr(), "/metrics").text();
        series(&text, "error_5xx") + series(&text, "reset") >= 2.0
    });
    assert_eq!(series(&text, "error_5xx"), 2.0, "{text}");
    assert_eq!(series(&text, "reset"), 0.0, "{text}");
}
