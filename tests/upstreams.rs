//! Upstreams (`[upstreams.*]` and BEHAVIOR.md "Retries"): load balancing, per-worker keep-alive
//! pools, timeouts, which failures are retried and on which endpoint, the retry budget, and
//! upstream responses with broken framing.

mod support;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::waits::{wait_requests_done, Rendezvous};
use support::wire::WireError;
use support::*;

/// Retries that are always allowed in a second (BEHAVIOR.md: the retry budget's floor). Tests
/// that need every retry to happen stay within it.
const RETRY_FLOOR: usize = 3;

/// A gateway with one catch-all route to upstream `app` with these endpoints and extra keys.
fn gateway(endpoints: &str, upstream_keys: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
[upstreams.app]
endpoints = {endpoints}
connect_timeout = "300ms"
{upstream_keys}

[routes.all]
paths = ["/"]
upstream = "app"
"#
    ))
}

/// An upstream answering its own name (for "which endpoint served this").
fn named(name: &'static str) -> Upstream {
    Upstream::start(move |_| Reply::text(200, name))
}

#[test]
fn round_robin_honours_weights_1_to_3_exactly() {
    let a = named("a");
    let b = named("b");
    let gw = gateway(
        &format!("[\"{}\", {{ url = \"{}\", weight = 3 }}]", a.url(), b.url()),
        "balance = \"round_robin\"",
    );
    let served: Vec<String> = (0..8).map(|_| get(gw.addr(), "/").text()).collect();
    assert_eq!(served.iter().filter(|s| *s == "a").count(), 2, "{served:?}");
    assert_eq!(served.iter().filter(|s| *s == "b").count(), 6, "{served:?}");
    // Smooth weighted round robin: every run of 4 consecutive picks is one full cycle.
    for w in served.windows(4) {
        assert_eq!(
            w.iter().filter(|s| *s == "a").count(),
            1,
            "not smooth: {served:?}"
        );
    }
}

#[test]
fn round_robin_with_equal_weights_alternates() {
    let a = named("a");
    let b = named("b");
    let gw = gateway(&endpoints(&[&a, &b]), "");
    let served: Vec<String> = (0..6).map(|_| get(gw.addr(), "/").text()).collect();
    for w in served.windows(2) {
        assert_ne!(w[0], w[1], "round robin repeated an endpoint: {served:?}");
    }
}

#[test]
fn least_request_prefers_the_idle_endpoint() {
    // `/slow` is held at the upstream until the fast requests are done.
    let gate = Gate::new();
    let handler = |name: &'static str| {
        let gate = gate.clone();
        move |req: &Request| {
            if req.path() == "/slow" {
                gate.wait(Duration::from_secs(10));
            }
            Reply::text(200, name)
        }
    };
    let a = Upstream::start(handler("a"));
    let b = Upstream::start(handler("b"));
    let gw = gateway(&endpoints(&[&a, &b]), "balance = \"least_request\"");
    let addr = gw.addr();
    let slow = thread::spawn(move || get(addr, "/slow").text());
    assert!(
        wait_until(Duration::from_secs(2), || a.request_count()
            + b.request_count()
            > 0),
        "the slow request never reached an upstream"
    );
    let (busy, idle) = if a.request_count() == 1 {
        ("a", "b")
    } else {
        ("b", "a")
    };
    let served: Vec<String> = (0..10).map(|_| get(gw.addr(), "/fast").text()).collect();
    assert!(
        served.iter().all(|s| s == idle),
        "with {busy} busy, least_request sent fast requests to it: {served:?}"
    );
    gate.open();
    assert_eq!(slow.join().expect("slow request"), busy);
}

#[test]
fn hash_on_a_header_is_sticky_and_spreads_keys() {
    let ups = [named("a"), named("b"), named("c")];
    let gw = gateway(
        &endpoints(&[&ups[0], &ups[1], &ups[2]]),
        "balance = \"hash:header:x-user-id\"",
    );
    let mut used = HashSet::new();
    for user in 0..20 {
        let id = format!("user-{user}");
        let first = send_request(gw.addr(), &Req::get("/").header("X-User-Id", &id)).text();
        for _ in 0..3 {
            let again = send_request(gw.addr(), &Req::get("/").header("X-User-Id", &id)).text();
            assert_eq!(again, first, "{id} moved between endpoints");
        }
        used.insert(first);
    }
    assert!(used.len() >= 2, "20 keys all hashed to {used:?}");
    // A request without the header is still served.
    assert_eq!(get(gw.addr(), "/").status, 200);
}

#[test]
fn hash_on_ip_is_sticky_per_client_ip_and_spreads_ips() {
    let ups = [named("a"), named("b"), named("c")];
    let gw = gateway(
        &endpoints(&[&ups[0], &ups[1], &ups[2]]),
        "balance = \"hash:ip\"",
    );
    let mut used = HashSet::new();
    for last in 10..30u8 {
        let ip = Ipv4Addr::new(127, 0, 0, last);
        let mut seen = HashSet::new();
        for _ in 0..3 {
            // A new connection (new source port) every time: only the IP is shared.
            let mut c = Client::connect_from(ip, gw.addr());
            seen.insert(c.request(&Req::get("/")).text());
        }
        assert_eq!(
            seen.len(),
            1,
            "client {ip} moved between endpoints: {seen:?}"
        );
        used.extend(seen);
    }
    assert!(used.len() >= 2, "20 client IPs all hashed to {used:?}");
}

/// Consistent hashing: adding an endpoint moves only the keys the new endpoint takes over
/// (about 1/4 of them from 3 to 4 endpoints); a modulo hash would move most keys.
#[test]
fn consistent_hash_moves_only_keys_to_a_new_endpoint() {
    let ups = [named("a"), named("b"), named("c"), named("d")];
    let three = gateway(
        &endpoints(&[&ups[0], &ups[1], &ups[2]]),
        "balance = \"hash:header:x-user-id\"",
    );
    let four = gateway(
        &endpoints(&[&ups[0], &ups[1], &ups[2], &ups[3]]),
        "balance = \"hash:header:x-user-id\"",
    );
    let keys = 100;
    let mut stayed = 0;
    for k in 0..keys {
        let req = Req::get("/").header("X-User-Id", &format!("key-{k}"));
        let before = send_request(three.addr(), &req).text();
        let after = send_request(four.addr(), &req).text();
        if before == after {
            stayed += 1;
        } else {
            assert_eq!(
                after, "d",
                "key-{k} moved from {before} to {after}, not to the new endpoint"
            );
        }
    }
    assert!(
        stayed >= keys / 2,
        "only {stayed} of {keys} keys kept their endpoint"
    );
}

#[test]
fn sequential_requests_reuse_one_pooled_connection() {
    let up = Upstream::echo();
    let gw = gateway(&endpoints(&[&up]), "");
    for i in 0..10 {
        // A new client connection each time: the upstream pool is independent of it.
        assert_eq!(get(gw.addr(), &format!("/r{i}")).status, 200);
    }
    let mut c = Client::connect(gw.addr());
    for _ in 0..5 {
        assert_eq!(c.request(&Req::post("/p", b"body")).status, 200);
    }
    assert_eq!(up.request_count(), 15);
    assert_eq!(
        up.connections(),
        1,
        "sequential requests opened several upstream connections"
    );
}

#[test]
fn pooled_connection_is_not_reused_after_an_incomplete_response() {
    let gate = Gate::new();
    let g = gate.clone();
    let up = Upstream::start(move |req| {
        if req.path() == "/big" {
            Reply::status(200)
                // 2 pieces of 4 MiB: after the gate the second is more than the socket
                // buffers hold, so the gateway is still reading it when its relay fails.
                .body(&vec![b'x'; 8 << 20])
                .slow_body(2, Duration::ZERO)
                .gate(&g)
        } else {
            Reply::text(200, "small")
        }
    });
    let gw = gateway(&endpoints(&[&up]), "");
    {
        let mut c = Client::connect(gw.addr());
        c.send(&Req::get("/big").to_bytes());
        let head = c.read_head().expect("head of /big");
        assert_eq!(head.status, 200);
        // The client leaves mid-body; the upstream is still holding the rest.
    }
    // The upstream sends the rest; relaying it to the departed client fails, and the gateway
    // is done with the request (counted) once it has kept or dropped the upstream connection.
    gate.open();
    wait_requests_done(&gw, 1);
    let r = get(gw.addr(), "/small");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "small",
        "the second request read leftovers of the first"
    );
    assert_eq!(
        up.connections(),
        2,
        "a connection with an unfinished response was reused"
    );
}

#[test]
fn pooled_connection_closed_by_the_upstream_never_fails_a_request() {
    let up = Upstream::echo();
    // No retries: detecting the stale connection must not depend on the retry policy.
    let gw = gateway(&endpoints(&[&up]), "retries = 0");
    let mut c = Client::connect(gw.addr());
    assert_eq!(c.request(&Req::get("/first")).status, 200);
    for i in 0..6 {
        assert_eq!(
            up.close_idle_connections(),
            1,
            "round {i}: expected one pooled connection"
        );
        // Both an idempotent and a non-idempotent request must survive the stale connection.
        let req = if i % 2 == 0 {
            Req::get(&format!("/get{i}"))
        } else {
            Req::post(&format!("/post{i}"), format!("body{i}").as_bytes())
        };
        let r = c.request(&req);
        assert_eq!(
            r.status, 200,
            "round {i}: {} failed on a stale pooled connection: {r:?}",
            req.method
        );
        assert_eq!(r.json()["target"], req.target.as_str());
        if req.method == "POST" {
            assert_eq!(r.json()["body"], format!("body{i}").as_str());
        }
    }
    assert_eq!(up.connections(), 7);
}

#[test]
fn idle_timeout_closes_pooled_connections() {
    let up = Upstream::echo();
    let gw = gateway(&endpoints(&[&up]), "idle_timeout = \"300ms\"");
    let start = Instant::now();
    assert_eq!(get(gw.addr(), "/").status, 200);
    assert_eq!(up.open_connections(), 1);
    assert!(
        up.wait_until(Duration::from_secs(3), |u| u.open_connections() == 0),
        "pooled connection still open after 3 s (idle_timeout 300ms)"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "closed before idle_timeout"
    );
    assert_eq!(get(gw.addr(), "/").status, 200);
    assert_eq!(up.connections(), 2);
}

#[test]
fn max_idle_per_worker_bounds_the_pool() {
    // The three `/slow` requests are held at the upstream until all three are there.
    let together = Rendezvous::new(3, Duration::from_secs(5));
    let up = Upstream::start(move |req| {
        if req.path() == "/slow" {
            together.arrive();
        }
        Reply::text(200, "ok")
    });
    let gw = gateway(&endpoints(&[&up]), "max_idle_per_worker = 1");
    let addr = gw.addr();
    let handles: Vec<_> = (0..3)
        .map(|_| thread::spawn(move || get(addr, "/slow").status))
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("request"), 200);
    }
    assert_eq!(
        up.connections(),
        3,
        "3 concurrent requests need 3 upstream connections"
    );
    assert!(
        up.wait_until(Duration::from_secs(2), |u| u.open_connections() == 1),
        "{} upstream connections kept open with max_idle_per_worker = 1",
        up.open_connections()
    );
    for _ in 0..3 {
        assert_eq!(get(gw.addr(), "/").status, 200);
    }
    assert_eq!(up.connections(), 3, "the pooled connection was not reused");
}

#[test]
fn connection_refused_everywhere_is_502_after_retries() {
    let gw = gateway(
        &format!("[\"{}\", \"{}\"]", dead_url(), dead_url()),
        "retries = 2",
    );
    let start = Instant::now();
    let r = get(gw.addr(), "/");
    assert_error(&r, 502);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn connect_timeout_counts_as_a_connect_failure() {
    let hole = Blackhole::new();
    let gw = gateway(&format!("[\"{}\"]", hole.url()), "retries = 0");
    let start = Instant::now();
    let r = get(gw.addr(), "/");
    let waited = start.elapsed();
    assert_error(&r, 502);
    assert!(
        waited >= Duration::from_millis(250),
        "502 after only {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "502 after {waited:?} (connect_timeout 300ms)"
    );
}

#[test]
fn connect_timeout_is_retried_on_another_endpoint_even_for_post() {
    let hole = Blackhole::new();
    let good = Upstream::echo();
    let gw = gateway(
        &format!("[\"{}\", \"{}\"]", hole.url(), good.url()),
        "retries = 1",
    );
    for i in 0..RETRY_FLOOR {
        let r = send_request(gw.addr(), &Req::post("/", format!("p{i}").as_bytes()));
        assert_eq!(r.status, 200, "POST {i}: {r:?}");
    }
    assert_eq!(good.request_count(), RETRY_FLOOR);
}

#[test]
fn connect_failure_is_retried_on_another_endpoint_even_for_post() {
    let good = Upstream::echo();
    let gw = gateway(
        &format!("[\"{}\", \"{}\"]", dead_url(), good.url()),
        "retries = 1",
    );
    for i in 0..RETRY_FLOOR {
        let body = format!("payload-{i}");
        let r = send_request(gw.addr(), &Req::post("/orders", body.as_bytes()));
        assert_eq!(r.status, 200, "POST {i}: {r:?}");
        assert_eq!(r.json()["body"], body.as_str());
    }
    assert_eq!(good.request_count(), RETRY_FLOOR);
}

#[test]
fn status_503_is_retried_on_another_endpoint_for_get() {
    let bad = Upstream::start(|_| Reply::text(503, "busy"));
    let good = named("good");
    let gw = gateway(&endpoints(&[&bad, &good]), "retries = 1");
    for _ in 0..RETRY_FLOOR {
        let r = get(gw.addr(), "/");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "good");
    }
    assert!(
        bad.request_count() >= 1,
        "round robin never tried the failing endpoint"
    );
}

/// An upstream that answers `status` to the first attempt of each client request (keyed by
/// the X-Request-Id the client sends, which the gateway keeps across attempts) and 200 after.
fn fails_first_attempt(status_for: fn(&str) -> u16) -> Upstream {
    let seen = std::sync::Mutex::new(HashSet::new());
    Upstream::start(move |req| {
        let id = req.header("x-request-id").unwrap_or("").to_string();
        if seen.lock().unwrap().insert(id) {
            Reply::text(status_for(req.path()), "first attempt fails")
        } else {
            Reply::text(200, "second attempt")
        }
    })
}

fn status_from_path(path: &str) -> u16 {
    path.trim_start_matches('/').parse().unwrap_or(500)
}

#[test]
fn status_502_503_504_are_retried_for_every_idempotent_method() {
    for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
        // One gateway per method: its 3 retries stay within the budget's floor.
        let up = fails_first_attempt(status_from_path);
        let gw = gateway(&endpoints(&[&up]), "retries = 1");
        for status in [502, 503, 504] {
            let id = format!("{m}-{status}");
            let r = send_request(
                gw.addr(),
                &Req::new(m, &format!("/{status}")).header("X-Request-Id", &id),
            );
            assert_eq!(
                r.status, 200,
                "{m} answered {status} first was not retried: {r:?}"
            );
        }
        assert_eq!(up.request_count(), 6, "{m}: 3 requests, each retried once");
    }
}

#[test]
fn status_502_503_504_are_not_retried_for_non_idempotent_methods() {
    let up = fails_first_attempt(status_from_path);
    let gw = gateway(&endpoints(&[&up]), "retries = 2");
    for m in ["POST", "PATCH"] {
        for status in [502, 503, 504] {
            let id = format!("{m}-{status}");
            let r = send_request(
                gw.addr(),
                &Req::new(m, &format!("/{status}"))
                    .header("X-Request-Id", &id)
                    .body(b"x"),
            );
            assert_eq!(r.status, status, "{m}: {r:?}");
            assert_eq!(
                r.text(),
                "first attempt fails",
                "the upstream's response is passed through"
            );
        }
    }
    // Every attempt of the 6 requests has reached the upstream once they are counted.
    wait_requests_done(&gw, 6);
    assert_eq!(
        up.request_count(),
        6,
        "a non-idempotent request was retried"
    );
}

#[test]
fn status_503_is_not_retried_for_post() {
    let up = Upstream::start(|_| Reply::text(503, "busy"));
    let gw = gateway(&endpoints(&[&up]), "retries = 2");
    let r = send_request(gw.addr(), &Req::post("/", b"once"));
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "busy", "the upstream's own 503 is passed through");
    wait_requests_done(&gw, 1);
    assert_eq!(up.request_count(), 1, "POST was retried");
}

#[test]
fn retries_of_a_get_on_a_single_endpoint_use_the_retry_count() {
    let up = Upstream::start(|_| Reply::text(503, "busy"));
    let gw = gateway(&endpoints(&[&up]), "retries = 2");
    let r = get(gw.addr(), "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "busy");
    assert_eq!(up.request_count(), 3, "1 attempt + 2 retries");
}

#[test]
fn status_500_is_not_retried() {
    let up = Upstream::start(|_| Reply::text(500, "broken"));
    let gw = gateway(&endpoints(&[&up]), "retries = 2");
    let r = get(gw.addr(), "/");
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "broken");
    wait_requests_done(&gw, 1);
    assert_eq!(up.request_count(), 1, "a 500 was retried");
}

#[test]
fn read_timeout_is_504() {
    let up = Upstream::start(|_| Reply::text(200, "late").delay(Duration::from_secs(2)));
    let gw = gateway(&endpoints(&[&up]), "read_timeout = \"300ms\"\nretries = 0");
    let start = Instant::now();
    let r = get(gw.addr(), "/");
    let waited = start.elapsed();
    assert_error(&r, 504);
    assert!(
        waited >= Duration::from_millis(250),
        "504 after only {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "504 after {waited:?} (read_timeout 300ms)"
    );
}

#[test]
fn read_timeout_bounds_silence_not_the_whole_response() {
    // 6 pieces 150 ms apart: 750 ms in all, never 400 ms without a byte.
    let up = Upstream::start(|_| {
        Reply::text(200, "abcdefghijkl").slow_body(6, Duration::from_millis(150))
    });
    let gw = gateway(&endpoints(&[&up]), "read_timeout = \"400ms\"\nretries = 0");
    let r = get(gw.addr(), "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "abcdefghijkl");
}

#[test]
fn read_timeout_in_the_middle_of_a_body_aborts_the_response() {
    let gate = Gate::new();
    let g = gate.clone();
    let up = Upstream::start(move |_| {
        Reply::status(200)
            .body(&[b'x'; 1000])
            .slow_body(2, Duration::ZERO)
            .gate(&g)
    });
    let gw = gateway(&endpoints(&[&up]), "read_timeout = \"300ms\"\nretries = 0");
    let mut c = Client::connect(gw.addr());
    c.send(&Req::get("/").to_bytes());
    let start = Instant::now();
    match c.try_read_response() {
        Err(WireError::Closed { .. }) => {}
        Ok(r) => panic!(
            "a response whose upstream stalled was completed: {} bytes",
            r.body.len()
        ),
        Err(e) => panic!("expected the response to be aborted, got {e}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    gate.open();
}

#[test]
fn read_timeout_is_retried_on_another_endpoint_for_get() {
    let slow = Upstream::start(|_| Reply::text(200, "slow").delay(Duration::from_secs(2)));
    let fast = named("fast");
    let gw = gateway(
        &endpoints(&[&slow, &fast]),
        "read_timeout = \"300ms\"\nretries = 1",
    );
    for _ in 0..2 {
        let r = get(gw.addr(), "/");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "fast");
    }
}

#[test]
fn read_timeout_is_not_retried_for_post() {
    let slow = Upstream::start(|_| Reply::text(200, "slow").delay(Duration::from_secs(2)));
    let gw = gateway(
        &endpoints(&[&slow]),
        "read_timeout = \"300ms\"\nretries = 2",
    );
    let r = send_request(gw.addr(), &Req::post("/", b"x"));
    assert_error(&r, 504);
    wait_requests_done(&gw, 1);
    assert_eq!(
        slow.request_count(),
        1,
        "POST was retried after a read timeout"
    );
}

#[test]
fn reset_before_any_response_byte_is_retried_for_get() {
    let bad = Upstream::start(|_| Reply::reset());
    let good = named("good");
    let gw = gateway(&endpoints(&[&bad, &good]), "retries = 1");
    for _ in 0..RETRY_FLOOR {
        let r = get(gw.addr(), "/");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "good");
    }
    assert!(bad.request_count() >= 1);
}

#[test]
fn reset_before_any_response_byte_is_502_and_not_retried_for_post() {
    let bad = Upstream::start(|_| Reply::reset());
    let gw = gateway(&endpoints(&[&bad]), "retries = 2");
    let r = send_request(gw.addr(), &Req::post("/", b"x"));
    assert_error(&r, 502);
    wait_requests_done(&gw, 1);
    assert_eq!(
        bad.request_count(),
        1,
        "POST was retried after a reset on a fresh connection"
    );
}

/// A request body the gateway did not forward (the upstream was unreachable) must be consumed
/// or the connection closed; parsed as the next request it would be a smuggled request.
#[test]
fn client_connection_stays_in_sync_after_an_upstream_failure() {
    let live = Upstream::echo();
    let gw = Gateway::start(&format!(
        r#"
[upstreams.dead]
endpoints = ["{}"]
retries = 0

[upstreams.live]
endpoints = ["{}"]

[routes.dead]
paths = ["/dead"]
upstream = "dead"

[routes.live]
paths = ["/live"]
upstream = "live"
"#,
        dead_url(),
        live.url()
    ));
    let smuggled = b"GET /live/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut c = Client::connect(gw.addr());
    let mut bytes = format!(
        "POST /dead HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    )
    .into_bytes();
    bytes.extend_from_slice(smuggled);
    bytes.extend(Req::get("/live/next").to_bytes());
    c.send(&bytes);
    assert_error(&c.read_response(), 502);
    // The gateway is done with the connection's requests once it closed it or answered the
    // next one (in order): a smuggled request would have been one of them.
    let answered = match c.try_read_response() {
        Ok(r) => {
            assert_eq!(
                r.json()["path"],
                "/live/next",
                "the body was parsed as a request"
            );
            2
        }
        Err(WireError::Closed { partial, .. }) if partial.is_empty() => 1,
        Err(e) => panic!("after the 502: {e}"),
    };
    wait_requests_done(&gw, answered);
    assert!(
        live.requests().iter().all(|r| r.path() != "/live/smuggled"),
        "a request smuggled in a failed request's body reached an upstream"
    );
}

#[test]
fn upstream_closing_without_a_response_is_502() {
    let bad = Upstream::start(|_| Reply::drop_connection());
    let gw = gateway(&endpoints(&[&bad]), "retries = 0");
    assert_error(&get(gw.addr(), "/"), 502);
}

#[test]
fn nothing_is_retried_once_the_response_has_started() {
    let bad =
        Upstream::start(|_| Reply::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial"));
    let gw = gateway(&endpoints(&[&bad]), "retries = 2");
    let mut c = Client::connect(gw.addr());
    c.send(&Req::get("/").to_bytes());
    match c.try_read_response() {
        Ok(r) => assert_ne!(
            r.status, 200,
            "a truncated body was relayed as complete: {r:?}"
        ),
        Err(WireError::Closed { .. }) => {}
        Err(e) => panic!("expected an aborted response or an error status, got {e}"),
    }
    wait_requests_done(&gw, 1);
    assert_eq!(
        bad.request_count(),
        1,
        "a request whose response had started was retried"
    );
}

fn broken_upstream_gives_502(raw: &'static [u8]) {
    let bad = Upstream::start(move |_| Reply::raw(raw));
    let gw = gateway(&endpoints(&[&bad]), "retries = 0");
    let r = get(gw.addr(), "/");
    assert_eq!(
        r.status,
        502,
        "upstream sent {:?}; client got {r:?}",
        String::from_utf8_lossy(raw)
    );
    assert_error(&r, 502);
}

#[test]
fn upstream_response_with_content_length_and_transfer_encoding_is_502() {
    broken_upstream_gives_502(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
}

#[test]
fn upstream_response_with_conflicting_content_lengths_is_502() {
    broken_upstream_gives_502(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    );
}

#[test]
fn upstream_response_with_invalid_status_line_is_502() {
    broken_upstream_gives_502(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n");
}

#[test]
fn upstream_response_that_is_not_http_is_502() {
    broken_upstream_gives_502(b"SSH-2.0-OpenSSH_9.6\r\n\r\n");
}

#[test]
fn upstream_response_with_obs_fold_is_502() {
    broken_upstream_gives_502(b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n");
}

#[test]
fn upstream_response_with_invalid_header_bytes_is_502() {
    broken_upstream_gives_502(b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 0\r\n\r\n");
}

#[test]
fn upstream_response_with_a_bad_chunk_is_never_relayed_as_complete() {
    let bad = Upstream::start(|_| {
        Reply::raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nxyz\r\n0\r\n\r\n")
    });
    let gw = gateway(&endpoints(&[&bad]), "retries = 0");
    let mut c = Client::connect(gw.addr());
    c.send(&Req::get("/").to_bytes());
    match c.try_read_response() {
        Ok(r) => {
            assert_error(&r, 502);
        }
        // The head was already relayed: the response is aborted.
        Err(WireError::Closed { .. }) => {}
        Err(e) => panic!("expected 502 or an aborted response, got {e}"),
    };
}

/// Under a full outage, retries stay within the budget: 20% of requests (over 10 s) plus the
/// floor of 3 retries a second, far below `retries` times the requests.
#[test]
fn retry_budget_caps_retries_during_an_outage() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (h1, h2) = (Arc::clone(&hits), Arc::clone(&hits));
    let a = Upstream::start(move |_| {
        h1.fetch_add(1, Ordering::SeqCst);
        Reply::text(503, "down")
    });
    let b = Upstream::start(move |_| {
        h2.fetch_add(1, Ordering::SeqCst);
        Reply::text(503, "down")
    });
    let gw = gateway(&endpoints(&[&a, &b]), "retries = 3");
    let n = 100;
    let start = Instant::now();
    let mut c = Client::connect(gw.addr());
    for _ in 0..n {
        assert_eq!(c.request(&Req::get("/")).status, 503);
    }
    let secs = start.elapsed().as_secs_f64().ceil() as usize + 1;
    let attempts = hits.load(Ordering::SeqCst);
    let retries = attempts - n;
    let bound = n / 4 + 3 * secs;
    eprintln!(
        "{n} requests -> {attempts} upstream attempts in {:?}",
        start.elapsed()
    );
    assert!(
        retries <= bound,
        "{retries} retries for {n} requests (budget: 20% + 3/s, bound {bound}; unbudgeted would be {})",
        3 * n
    );
    assert!(
        retries >= 3,
        "the budget's floor allows at least 3 retries a second; got {retries}"
    );
}
