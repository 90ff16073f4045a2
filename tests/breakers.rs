//! Circuit breakers (`[upstreams.*.breaker]`, BEHAVIOR.md "Circuit breakers", issue 3
//! contract): failures counted across all workers open the breaker at exactly
//! `failure_threshold`; the open response (standard 503 with `Retry-After`, or the configured
//! fallback); half-open after `recovery_timeout` with at most `half_open_probes` requests in
//! flight; what counts as a failure (`failure_on`, client disconnects); and the state as seen at
//! admin `GET /health` and `GET /metrics`.
//!
//! Every gateway here runs 2 workers and every request opens a new client connection, so the
//! kernel spreads requests over both workers: a per-worker count or state would show.

mod support;

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use support::waits::wait_requests_done;
use support::*;

/// `[upstreams.NAME]` with one endpoint, no retries and no outlier ejection (so only the
/// breaker decides), the breaker keys `breaker` (no breaker when None), and a route `path`.
fn upstream(name: &str, url: &str, breaker: Option<&str>, path: &str) -> String {
    upstream_with(name, url, "", breaker, path)
}

/// `upstream` with extra upstream keys `keys` (e.g. a `read_timeout`).
fn upstream_with(name: &str, url: &str, keys: &str, breaker: Option<&str>, path: &str) -> String {
    let breaker = breaker
        .map(|keys| format!("[upstreams.{name}.breaker]\n{keys}\n"))
        .unwrap_or_default();
    format!(
        r#"
[upstreams.{name}]
endpoints = ["{url}"]
retries = 0
connect_timeout = "300ms"
{keys}

[upstreams.{name}.outlier]
consecutive_failures = 0

{breaker}
[routes.{name}]
paths = ["{path}"]
upstream = "{name}"
"#
    )
}

/// A 2-worker gateway with these upstream sections.
fn gateway_of(sections: &[String]) -> Gateway {
    Gateway::start(&format!("[server]\nworkers = 2\n{}", sections.concat()))
}

/// A 2-worker gateway: upstream `users` on `url` with breaker keys `breaker` behind the
/// catch-all route, and upstream `plain` (same endpoint, no breaker) behind `/plain`.
fn gateway(url: &str, breaker: &str) -> Gateway {
    gateway_of(&[
        upstream("users", url, Some(breaker), "/"),
        upstream("plain", url, None, "/plain"),
    ])
}

/// An upstream whose answer can change: `/slow...` waits (before answering anything) until
/// `gate` opens; `/fail...` always answers 500; every other path answers the current
/// `status`.
struct Flaky {
    up: Upstream,
    status: Arc<AtomicU16>,
    gate: Gate,
}

impl Flaky {
    fn start(status: u16) -> Flaky {
        let status = Arc::new(AtomicU16::new(status));
        let gate = Gate::new();
        let (s, g) = (Arc::clone(&status), gate.clone());
        let up = Upstream::start(move |req| {
            if req.path().starts_with("/slow") {
                g.wait(Duration::from_secs(10));
            }
            let code = if req.path().starts_with("/fail") {
                500
            } else {
                s.load(Ordering::SeqCst)
            };
            Reply::text(code, if code < 500 { "ok" } else { "boom" })
        });
        Flaky { up, status, gate }
    }

    fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

/// Asserts `r` is the standard open response of upstream `name`'s breaker; returns its
/// `retryAfter`.
fn assert_open_for(r: &Response, name: &str) -> u64 {
    let (_, secs) = assert_error_retry_after(r, 503);
    assert_eq!(
        r.json()["error"]["message"],
        format!("Circuit breaker open for upstream {name}").as_str(),
        "{}",
        r.text()
    );
    secs
}

fn assert_open(r: &Response) -> u64 {
    assert_open_for(r, "users")
}

fn health(gw: &Gateway) -> Value {
    let r = get(gw.admin_addr(), "/health");
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// `upstreams.NAME.breaker` at `/health`.
fn breaker(gw: &Gateway, name: &str) -> String {
    let v = health(gw);
    v["upstreams"][name]["breaker"]
        .as_str()
        .unwrap_or_else(|| panic!("no upstreams.{name}.breaker in /health: {v}"))
        .to_string()
}

fn scrape(gw: &Gateway) -> String {
    let r = get(gw.admin_addr(), "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    r.text()
}

fn breaker_metric(gw: &Gateway, name: &str) -> Option<f64> {
    metric(
        &scrape(gw),
        &format!("dispatch_breaker_state{{upstream=\"{name}\"}}"),
    )
}

/// Once the breaker is open: sends `GET path` on a new connection (each in its own thread,
/// every 50 ms) until one is admitted as a half-open probe, i.e. reaches the upstream. Every
/// request refused meanwhile must be the open response. Returns the admitted request's thread
/// (its response comes when the upstream answers) and when it was seen admitted.
fn first_probe(
    gw: &Gateway,
    up: &Upstream,
    path: &str,
    within: Duration,
) -> (JoinHandle<Response>, Instant) {
    let end = Instant::now() + within;
    loop {
        let before = up.request_count();
        let (addr, p) = (gw.addr(), path.to_string());
        let h = thread::spawn(move || get(addr, &p));
        let settled = wait_until(Duration::from_secs(2), || {
            up.request_count() > before || h.is_finished()
        });
        assert!(
            settled,
            "GET {path} neither reached the upstream nor was answered"
        );
        if up.request_count() > before {
            return (h, Instant::now());
        }
        assert_open(&h.join().expect("request thread"));
        assert!(
            Instant::now() < end,
            "no request was admitted as a half-open probe within {within:?}"
        );
        pause(50);
    }
}

/// The breaker counts failures over all workers: with `failure_threshold = 10` the 10th failure
/// in total opens it (not 10 per worker), and from the next request on no worker sends
/// anything to the upstream.
#[test]
fn breaker_opens_after_exactly_failure_threshold_failures_across_workers() {
    let up = Upstream::start(|_| Reply::text(500, "boom"));
    let gw = gateway(
        &up.url(),
        "failure_threshold = 10\nrecovery_timeout = \"30s\"",
    );
    for i in 1..=10 {
        // A new connection each time: the kernel spreads them over both workers.
        let r = get(gw.addr(), "/");
        assert_eq!(r.status, 500, "request {i}, before the threshold: {r:?}");
        assert_eq!(
            r.text(),
            "boom",
            "request {i}: the upstream's answer is relayed"
        );
        assert_eq!(
            up.request_count(),
            i,
            "request {i} did not reach the upstream before the threshold"
        );
    }
    for i in 0..20 {
        let r = get(gw.addr(), "/");
        assert_open(&r);
        assert_eq!(
            up.request_count(),
            10,
            "request {i} after the threshold reached the upstream: {r:?}"
        );
    }
}

#[test]
fn open_breaker_answers_503_with_retry_after_and_the_request_id() {
    let up = Upstream::start(|_| Reply::text(500, "boom"));
    let gw = gateway(
        &up.url(),
        "failure_threshold = 2\nrecovery_timeout = \"30s\"",
    );
    for _ in 0..2 {
        assert_eq!(get(gw.addr(), "/").status, 500);
    }
    let r = send_request(
        gw.addr(),
        &Req::get("/users/7").header("X-Request-Id", "req-open-1"),
    );
    let secs = assert_open(&r);
    assert!(
        (28..=30).contains(&secs),
        "retryAfter {secs}: whole seconds until half-open, recovery_timeout 30s just started"
    );
    assert_eq!(
        r.json()["error"]["request_id"],
        "req-open-1",
        "the client's X-Request-Id is kept"
    );
    // Without one, a generated id (assert_open checks the header matches the body).
    assert_open(&get(gw.addr(), "/"));
    assert_eq!(up.request_count(), 2);
}

#[test]
fn breaker_fallback_replaces_the_open_response() {
    let up = Upstream::start(|_| Reply::text(500, "boom"));
    let gw = gateway(
        &up.url(),
        r#"failure_threshold = 1
recovery_timeout = "30s"
fallback = { status = 200, json = { users = [], degraded = true, note = "from cache" } }"#,
    );
    assert_eq!(get(gw.addr(), "/").status, 500);
    let r = get(gw.addr(), "/users");
    assert_eq!(r.status, 200, "the fallback's status: {r:?}");
    r.assert_content_type("application/json");
    assert_eq!(
        r.json(),
        json!({"users": [], "degraded": true, "note": "from cache"}),
        "the fallback body is the configured json"
    );
    let retry: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on the fallback: {r:?}"))
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    assert!(
        !r.header("x-request-id").unwrap_or("").is_empty(),
        "no X-Request-Id on the fallback: {r:?}"
    );
    assert_eq!(up.request_count(), 1);
}

/// Half-open admits at most `half_open_probes` requests at once over all workers (the rest get
/// the open response at once, without waiting for the probes), and that many successes close
/// the breaker.
#[test]
fn half_open_admits_at_most_half_open_probes_at_once_then_closes() {
    let f = Flaky::start(200);
    let gw = gateway(
        &f.up.url(),
        "failure_threshold = 1\nrecovery_timeout = \"1s\"\nhalf_open_probes = 3",
    );
    assert_eq!(get(gw.addr(), "/fail").status, 500);
    let opened = Instant::now();
    assert_open(&get(gw.addr(), "/"));

    let (first, admitted) = first_probe(&gw, &f.up, "/slow", Duration::from_secs(3));
    assert!(
        admitted - opened >= Duration::from_millis(900),
        "a probe was admitted {:?} after opening (recovery_timeout 1s)",
        admitted - opened
    );
    // Five more at once, on new connections (both workers): two more probes fit.
    let before = f.up.request_count();
    let addr = gw.addr();
    let more: Vec<JoinHandle<Response>> = (0..5)
        .map(|_| thread::spawn(move || get(addr, "/slow")))
        .collect();
    let settled = wait_until(Duration::from_secs(3), || {
        more.iter().filter(|h| h.is_finished()).count() >= 3 && f.up.request_count() >= before + 2
    });
    assert!(
        settled,
        "expected 2 more probes in flight and 3 requests refused at once; {} reached the upstream, {} answered",
        f.up.request_count() - before,
        more.iter().filter(|h| h.is_finished()).count()
    );
    // All 5 are accounted for without waiting more: 3 answered, and only what reached the
    // upstream can be in flight (a probe is held there until the gate opens). A third probe
    // admitted would have left at most 2 answered, and the wait above would have failed.
    assert_eq!(
        f.up.request_count(),
        before + 2,
        "more than half_open_probes = 3 requests were in flight in half-open"
    );
    assert_eq!(breaker(&gw, "users"), "half_open");
    let (done, pending): (Vec<_>, Vec<_>) = more.into_iter().partition(|h| h.is_finished());
    assert_eq!(done.len(), 3, "requests beyond the probes must not wait");
    for h in done {
        assert_open(&h.join().expect("refused request"));
    }

    f.gate.open();
    for h in pending.into_iter().chain([first]) {
        let r = h.join().expect("probe");
        assert_eq!(r.status, 200, "probe: {r:?}");
    }
    assert!(
        wait_until(Duration::from_secs(1), || breaker(&gw, "users") == "closed"),
        "3 successful probes did not close the breaker: {}",
        health(&gw)
    );
    let seen = f.up.request_count();
    for i in 0..6 {
        assert_eq!(get(gw.addr(), "/").status, 200, "request {i} after closing");
    }
    assert_eq!(f.up.request_count(), seen + 6);
}

/// One failed probe reopens the breaker and restarts `recovery_timeout`.
#[test]
fn failed_probe_reopens_the_breaker_and_restarts_recovery_timeout() {
    let f = Flaky::start(500);
    let gw = gateway(
        &f.up.url(),
        "failure_threshold = 1\nrecovery_timeout = \"1s\"\nhalf_open_probes = 2",
    );
    assert_eq!(get(gw.addr(), "/").status, 500);
    let (probe, _) = first_probe(&gw, &f.up, "/", Duration::from_secs(3));
    let r = probe.join().expect("probe");
    assert_eq!(r.status, 500, "the failed probe's answer is relayed: {r:?}");
    let reopened = Instant::now();
    let secs = assert_open(&get(gw.addr(), "/"));
    assert_eq!(secs, 1, "a fresh recovery_timeout of 1s");
    assert_eq!(breaker(&gw, "users"), "open");
    let count = f.up.request_count();

    f.set_status(200);
    let (probe, admitted) = first_probe(&gw, &f.up, "/", Duration::from_secs(3));
    assert!(
        admitted - reopened >= Duration::from_millis(800),
        "half-open again {:?} after the failed probe: recovery_timeout was not restarted",
        admitted - reopened
    );
    assert_eq!(f.up.request_count(), count + 1);
    assert_eq!(probe.join().expect("probe").status, 200);
    // half_open_probes = 2: a second success closes it.
    assert_eq!(get(gw.addr(), "/").status, 200);
    assert!(
        wait_until(Duration::from_secs(1), || breaker(&gw, "users") == "closed"),
        "{}",
        health(&gw)
    );
}

/// `failure_on = ["5xx"]`: connect failures (the client gets 502) are not failures; 5xx
/// responses are.
#[test]
fn failure_on_5xx_ignores_connect_failures() {
    let broken = Upstream::start(|_| Reply::text(500, "boom"));
    let keys = "failure_threshold = 2\nrecovery_timeout = \"30s\"\nfailure_on = [\"5xx\"]";
    let gw = gateway_of(&[
        upstream("dead", &dead_url(), Some(keys), "/dead"),
        upstream("broken", &broken.url(), Some(keys), "/broken"),
    ]);
    for i in 0..5 {
        assert_error(&get(gw.addr(), "/dead"), 502);
        assert_eq!(breaker(&gw, "dead"), "closed", "after connect failure {i}");
    }
    assert_eq!(health(&gw)["upstreams"]["dead"]["failures"], 0);
    for _ in 0..2 {
        assert_eq!(get(gw.addr(), "/broken").status, 500);
    }
    assert_open_for(&get(gw.addr(), "/broken"), "broken");
    assert_eq!(broken.request_count(), 2);
}

/// `failure_on = ["connect"]`: 5xx responses are not failures; connect failures are.
#[test]
fn failure_on_connect_ignores_5xx_responses() {
    let broken = Upstream::start(|_| Reply::text(500, "boom"));
    let keys = "failure_threshold = 2\nrecovery_timeout = \"30s\"\nfailure_on = [\"connect\"]";
    let gw = gateway_of(&[
        upstream("dead", &dead_url(), Some(keys), "/dead"),
        upstream("broken", &broken.url(), Some(keys), "/broken"),
    ]);
    for i in 0..5 {
        let r = get(gw.addr(), "/broken");
        assert_eq!(r.status, 500, "request {i}: {r:?}");
        assert_eq!(r.text(), "boom");
    }
    assert_eq!(broken.request_count(), 5);
    assert_eq!(breaker(&gw, "broken"), "closed");
    assert_eq!(health(&gw)["upstreams"]["broken"]["failures"], 0);
    for _ in 0..2 {
        assert_error(&get(gw.addr(), "/dead"), 502);
    }
    assert_open_for(&get(gw.addr(), "/dead"), "dead");
}

/// `failure_on = ["timeout"]`: read timeouts (the client gets 504) are failures; 5xx
/// responses are not.
#[test]
fn failure_on_timeout_counts_read_timeouts_and_ignores_5xx() {
    let late = Upstream::start(|_| Reply::text(200, "late").delay(Duration::from_secs(1)));
    let broken = Upstream::start(|_| Reply::text(500, "boom"));
    let keys = "failure_threshold = 2\nrecovery_timeout = \"30s\"\nfailure_on = [\"timeout\"]";
    let gw = gateway_of(&[
        upstream_with(
            "late",
            &late.url(),
            "read_timeout = \"200ms\"",
            Some(keys),
            "/late",
        ),
        upstream("broken", &broken.url(), Some(keys), "/broken"),
    ]);
    for i in 0..4 {
        assert_eq!(get(gw.addr(), "/broken").status, 500, "request {i}");
    }
    assert_eq!(broken.request_count(), 4);
    assert_eq!(breaker(&gw, "broken"), "closed");
    for _ in 0..2 {
        assert_error(&get(gw.addr(), "/late"), 504);
    }
    assert_open_for(&get(gw.addr(), "/late"), "late");
    assert_eq!(late.request_count(), 2);
}

/// Only upstream failures feed a breaker: a client that goes away while its request is
/// forwarded or awaited, or that sends a malformed body, is not a failure (threshold 1 here,
/// so any miscount would open the breaker).
#[test]
fn client_disconnects_and_bad_bodies_are_not_breaker_failures() {
    let f = Flaky::start(200);
    let gw = gateway(
        &f.up.url(),
        "failure_threshold = 1\nrecovery_timeout = \"30s\"",
    );

    // 1. Waiting for a slow response, the client leaves.
    let mut c = Client::connect(gw.addr());
    c.send(&Req::get("/slow").to_bytes());
    assert!(
        f.up.wait_until(Duration::from_secs(2), |u| u.request_count() == 1),
        "the slow request did not reach the upstream"
    );
    drop(c);

    // 2. Halfway through streaming a request body, the client leaves. The body is larger
    // than the gateway holds for replays (64 KiB), so it streams: the client leaves once the
    // upstream exchange has begun.
    let mut c = Client::connect(gw.addr());
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n");
    c.send(&[b'u'; 100 << 10]);
    assert!(
        f.up.wait_until(Duration::from_secs(2), |u| u.body_bytes() > 0),
        "the start of the upload did not reach the upstream"
    );
    drop(c);

    // 3. An invalid chunk size: the client's fault (400), not the upstream's.
    let mut c = Client::connect(gw.addr());
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n");
    if let Ok(r) = c.try_read_response() {
        assert!(r.status < 500, "a malformed client body answered {r:?}");
    }
    drop(c);

    // The slow response finishes into a closed client connection.
    f.gate.open();
    // The breaker learns an outcome before the request is counted: once all 3 are, it has
    // seen everything it will see of them.
    wait_requests_done(&gw, 3);
    let h = health(&gw);
    assert_eq!(h["upstreams"]["users"]["breaker"], "closed", "{h}");
    assert_eq!(h["upstreams"]["users"]["failures"], 0, "{h}");
    let seen = f.up.request_count();
    let r = get(gw.addr(), "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(f.up.request_count(), seen + 1);
}

#[test]
fn health_reports_breaker_state_failures_and_since() {
    let up = Upstream::start(|_| Reply::text(500, "boom"));
    let gw = gateway(
        &up.url(),
        "failure_threshold = 3\nrecovery_timeout = \"30s\"",
    );
    let v = health(&gw);
    assert_eq!(v["status"], "ok", "{v}");
    let users = &v["upstreams"]["users"];
    assert_eq!(users["breaker"], "closed", "{v}");
    assert_eq!(users["failures"], 0, "{v}");
    let since0 = users["since"]
        .as_str()
        .and_then(rfc3339_utc_millis)
        .unwrap_or_else(|| panic!("users.since is not an RFC 3339 UTC time: {v}"));
    assert!(
        (since0 - now_millis()).abs() < 60_000,
        "since {since0} is not around the gateway's start: {v}"
    );
    let eps = users["endpoints"].as_array().expect("users.endpoints");
    assert_eq!(eps.len(), 1, "{v}");
    assert_eq!(eps[0]["url"], up.url().as_str(), "{v}");
    assert_eq!(eps[0]["healthy"], true, "{v}");
    assert_eq!(eps[0]["weight"], 1, "{v}");
    // An upstream without a breaker reports a closed one.
    assert_eq!(v["upstreams"]["plain"]["breaker"], "closed", "{v}");
    assert_eq!(v["upstreams"]["plain"]["failures"], 0, "{v}");

    assert_eq!(get(gw.addr(), "/").status, 500);
    assert!(
        wait_until(Duration::from_secs(1), || health(&gw)["upstreams"]["users"]
            ["failures"]
            == 1),
        "{}",
        health(&gw)
    );
    assert_eq!(breaker(&gw, "users"), "closed");
    assert_eq!(get(gw.addr(), "/").status, 500);
    let before = now_millis();
    assert_eq!(get(gw.addr(), "/").status, 500);
    let after = now_millis();

    let v = health(&gw);
    let users = &v["upstreams"]["users"];
    assert_eq!(users["breaker"], "open", "{v}");
    assert_eq!(users["failures"], 3, "{v}");
    assert_eq!(
        v["status"], "degraded",
        "an open breaker degrades /health: {v}"
    );
    let since = users["since"]
        .as_str()
        .and_then(rfc3339_utc_millis)
        .unwrap_or_else(|| panic!("users.since is not an RFC 3339 UTC time: {v}"));
    assert!(
        since >= before - 1000 && since <= after + 1000,
        "since {since} is not the time the breaker opened ({before}..{after}): {v}"
    );
    assert!(since >= since0, "{v}");
    assert_eq!(v["upstreams"]["plain"]["breaker"], "closed", "{v}");
}

#[test]
fn breaker_state_metric_is_0_closed_1_half_open_2_open() {
    let f = Flaky::start(200);
    let gw = gateway(
        &f.up.url(),
        "failure_threshold = 1\nrecovery_timeout = \"1s\"\nhalf_open_probes = 1",
    );
    let text = scrape(&gw);
    assert!(
        text.contains("# TYPE dispatch_breaker_state gauge"),
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"dispatch_breaker_state{upstream="users"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"dispatch_breaker_state{upstream="plain"}"#),
        Some(0.0),
        "an upstream without a breaker reads closed: {text}"
    );

    assert_eq!(get(gw.addr(), "/fail").status, 500);
    assert!(
        wait_until(Duration::from_secs(1), || breaker_metric(&gw, "users")
            == Some(2.0)),
        "open: {}",
        scrape(&gw)
    );

    let (probe, _) = first_probe(&gw, &f.up, "/slow", Duration::from_secs(3));
    assert_eq!(
        breaker_metric(&gw, "users"),
        Some(1.0),
        "half-open with a probe in flight: {}",
        scrape(&gw)
    );
    assert_eq!(breaker(&gw, "users"), "half_open");
    f.gate.open();
    assert_eq!(probe.join().expect("probe").status, 200);
    assert!(
        wait_until(Duration::from_secs(1), || breaker_metric(&gw, "users")
            == Some(0.0)),
        "closed again: {}",
        scrape(&gw)
    );
    assert_eq!(breaker_metric(&gw, "plain"), Some(0.0));
}

/// Breaker rejections are counted under their route (not as unmatched requests), so a
/// per-route error rate shows a tripped breaker.
#[test]
fn breaker_rejections_count_under_their_route() {
    let f = Flaky::start(200);
    let gw = gateway(
        &f.up.url(),
        "failure_threshold = 1\nrecovery_timeout = \"30s\"",
    );
    assert_eq!(get(gw.addr(), "/fail").status, 500);
    assert_eq!(get(gw.addr(), "/x").status, 503);
    assert_eq!(get(gw.addr(), "/y").status, 503);
    let series = r#"dispatch_requests_total{route="users",method="GET",status="503"}"#;
    assert!(
        wait_until(Duration::from_secs(1), || metric(&scrape(&gw), series)
            == Some(2.0)),
        "{}",
        scrape(&gw)
    );
}

/// A reload that changes only the fallback keeps the breaker as it is (open stays open);
/// changing a threshold starts a new, closed breaker.
#[test]
fn reload_keeps_an_open_breaker_unless_its_thresholds_change() {
    let f = Flaky::start(200);
    let gw = gateway(
        &f.up.url(),
        "failure_threshold = 1\nrecovery_timeout = \"30s\"",
    );
    assert_eq!(get(gw.addr(), "/fail").status, 500);
    assert_eq!(get(gw.addr(), "/x").status, 503);

    let reload_with = |from: &str, to: &str| {
        let path = gw.config_path().to_path_buf();
        let old = std::fs::read_to_string(&path).unwrap();
        assert!(old.contains(from), "{from} not in:\n{old}");
        std::fs::write(&path, old.replace(from, to)).unwrap();
        let r = send_request(gw.admin_addr(), &Req::post("/reload", b""));
        assert_eq!(r.status, 200, "POST /reload: {}", r.text());
    };
    reload_with(
        "recovery_timeout = \"30s\"",
        "recovery_timeout = \"30s\"\nfallback = { status = 503, json = { down = true } }",
    );
    let r = get(gw.addr(), "/x");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.json(),
        serde_json::json!({"down": true}),
        "still open, with the new fallback"
    );

    reload_with("failure_threshold = 1", "failure_threshold = 2");
    assert_eq!(
        get(gw.addr(), "/x").status,
        200,
        "a new threshold: a new, closed breaker"
    );
}
