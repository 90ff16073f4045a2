//! Endpoint health (issue 3 contract): active checks (`[upstreams.*.health_check]`) take an
//! endpoint out of rotation after `unhealthy_threshold` failed checks and back after
//! `healthy_threshold` passes, from one checker whatever the number of workers; passive outlier
//! ejection (`[upstreams.*.outlier]`, on by default) takes out an endpoint after consecutive
//! connect failures or 5xx, for `base_ejection`; when every endpoint is out, traffic goes to
//! all of them (panic mode) and `/health` says "degraded".
//!
//! The test upstreams answer `GET /healthz` themselves (`Upstream::set_health` switches the
//! status) and count those checks apart from the traffic they serve.

mod support;

use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// Active checks every 100 ms; 3 failures take an endpoint out, 2 passes bring it back.
/// Ejection is off, so only the checks decide.
const CHECKS: &str = r#"
[upstreams.app.health_check]
path = "/healthz"
interval = "100ms"
timeout = "500ms"
healthy_threshold = 2
unhealthy_threshold = 3

[upstreams.app.outlier]
consecutive_failures = 0
"#;

/// Passive ejection after `n` consecutive failures, for `base` at first.
fn outlier(n: u32, base: &str) -> String {
    format!("[upstreams.app.outlier]\nconsecutive_failures = {n}\nbase_ejection = \"{base}\"\n")
}

/// A gateway with `workers` workers and upstream `app` (these endpoints, no retries, `extra`
/// tables) behind a catch-all route.
fn gateway(workers: u32, endpoints: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
[server]
workers = {workers}

[upstreams.app]
endpoints = {endpoints}
retries = 0
connect_timeout = "300ms"

{extra}

[routes.all]
paths = ["/"]
upstream = "app"
"#
    ))
}

/// An upstream answering its own name.
fn named(name: &'static str) -> Upstream {
    Upstream::start(move |_| Reply::text(200, name))
}

fn health(gw: &Gateway) -> Value {
    let r = get(gw.admin_addr(), "/health");
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// `healthy` of the endpoint `url` of upstream `app` at `/health`.
fn healthy(gw: &Gateway, url: &str) -> Option<bool> {
    health(gw)["upstreams"]["app"]["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == url)?["healthy"]
        .as_bool()
}

/// The endpoint `url` of upstream `app` at `GET /upstreams`.
fn listed(gw: &Gateway, url: &str) -> Value {
    let v = get(gw.admin_addr(), "/upstreams").json();
    v["upstreams"]
        .as_array()
        .and_then(|ups| ups.iter().find(|u| u["name"] == "app"))
        .and_then(|u| u["endpoints"].as_array())
        .and_then(|eps| eps.iter().find(|e| e["url"] == url))
        .cloned()
        .unwrap_or_else(|| panic!("no endpoint {url} of app in /upstreams: {v}"))
}

/// `n` requests, each on a new connection; what served each.
fn serve(gw: &Gateway, n: usize) -> Vec<String> {
    (0..n).map(|_| get(gw.addr(), "/").text()).collect()
}

/// Waits (at most 1 s) until 10 requests in a row are all served by `only`, then asserts 20
/// more are too. (How fast a verdict reaches the workers is not pinned down; 1 s is generous.)
fn assert_only(gw: &Gateway, only: &str) {
    let settled = wait_until(Duration::from_secs(1), || {
        serve(gw, 10).iter().all(|s| s == only)
    });
    assert!(settled, "traffic did not move to {only} alone");
    let served = serve(gw, 20);
    assert!(
        served.iter().all(|s| s == only),
        "expected every request on {only}: {served:?}"
    );
}

#[test]
fn failing_checks_take_an_endpoint_out_until_healthy_threshold_passes() {
    let a = named("a");
    let b = named("b");
    let gw = gateway(1, &endpoints(&[&a, &b]), CHECKS);
    let served: HashSet<String> = serve(&gw, 4).into_iter().collect();
    assert_eq!(served.len(), 2, "both endpoints start healthy: {served:?}");

    let checks = b.healthz_count();
    b.set_health(503);
    assert!(
        wait_until(Duration::from_secs(3), || healthy(&gw, &b.url())
            == Some(false)),
        "b still healthy 3 s after its checks started failing: {}",
        health(&gw)
    );
    let failed = b.healthz_count() - checks;
    assert!(
        failed >= 3,
        "b taken out after {failed} failed checks (unhealthy_threshold = 3)"
    );
    assert_eq!(healthy(&gw, &a.url()), Some(true));
    assert_eq!(health(&gw)["status"], "ok", "a is still healthy");
    assert_eq!(listed(&gw, &b.url())["healthy"], false);
    assert_only(&gw, "a");

    let checks = b.healthz_count();
    let traffic = b.request_count();
    b.set_health(200);
    assert!(
        wait_until(Duration::from_secs(3), || healthy(&gw, &b.url())
            == Some(true)),
        "b not back 3 s after its checks passed again: {}",
        health(&gw)
    );
    let passed = b.healthz_count() - checks;
    assert!(
        passed >= 2,
        "b back after {passed} passed checks (healthy_threshold = 2)"
    );
    assert!(
        wait_until(Duration::from_secs(1), || {
            serve(&gw, 4);
            b.request_count() > traffic
        }),
        "b is healthy again but gets no traffic"
    );
}

#[test]
fn health_check_is_a_get_of_path_with_the_endpoint_host_and_connection_close() {
    let a = named("a");
    let gw = gateway(1, &endpoints(&[&a]), CHECKS);
    assert!(
        a.wait_until(Duration::from_secs(2), |u| u.healthz_count() >= 2),
        "no health checks arrived"
    );
    let check = a.last_healthz().expect("a check");
    assert_eq!(check.method, "GET");
    assert_eq!(check.target, "/healthz");
    assert_eq!(check.header("host"), Some(a.addr().to_string().as_str()));
    assert!(
        check
            .header_all("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close")),
        "{:?}",
        check.headers
    );
    assert_eq!(a.request_count(), 0, "checks are not traffic");
    drop(gw);
}

/// A 3xx answer passes a check (pass = 2xx or 3xx within the timeout).
#[test]
fn redirect_answer_passes_the_health_check() {
    let a = named("a");
    let b = named("b");
    let gw = gateway(1, &endpoints(&[&a, &b]), CHECKS);
    b.set_health(302);
    let checks = b.healthz_count();
    assert!(b.wait_until(Duration::from_secs(3), |u| u.healthz_count() >= checks + 5));
    assert_eq!(healthy(&gw, &b.url()), Some(true), "{}", health(&gw));
}

/// Checks run from one thread, not one per worker: with 2 workers an endpoint sees one
/// check per interval. A checker starts an endpoint's next check no sooner than `interval`
/// after the last one started (and within its 50 ms tick after that), so N checks span at
/// least N-1 intervals; two checkers (one per worker) would fit them in about half that.
#[test]
fn health_checks_run_once_per_interval_whatever_the_worker_count() {
    const CHECKS_SEEN: usize = 6;
    const GAPS: u32 = CHECKS_SEEN as u32 - 1;
    // Checks of `/check` reach the handler (unlike the built-in `/healthz`), which notes
    // when each one arrived.
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&arrivals);
    let a = Upstream::start(move |req| {
        if req.path() == "/check" {
            seen.lock().unwrap().push(Instant::now());
        }
        Reply::text(200, "ok")
    });
    let gw = gateway(2, &endpoints(&[&a]), &CHECKS.replace("/healthz", "/check"));
    assert!(
        a.wait_until(Duration::from_secs(3), |u| u.request_count() >= CHECKS_SEEN),
        "fewer than {CHECKS_SEEN} checks in 3 s (interval 100ms)"
    );
    let at: Vec<Instant> = arrivals.lock().unwrap()[..CHECKS_SEEN].to_vec();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    let span = at[CHECKS_SEEN - 1] - at[0];
    // Only the first and the last check's own latency can shorten the span: 50 ms of slack.
    // Two checkers in any phase span at most GAPS x 75 ms (half of the longest period).
    assert!(
        span >= Duration::from_millis(100) * GAPS - Duration::from_millis(50),
        "{CHECKS_SEEN} checks in {span:?} (interval 100ms), {gaps:?} apart: more than one checker?"
    );
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(50)),
        "two checks {gaps:?} apart (interval 100ms): more than one checker?"
    );
    // Not late by more than the checker's 50 ms tick and a loaded machine's scheduling.
    assert!(
        span <= Duration::from_millis(250) * GAPS,
        "{CHECKS_SEEN} checks took {span:?} (interval 100ms): {gaps:?}"
    );
    drop(gw);
}

/// With every endpoint unhealthy, requests still go to all of them (panic mode) and `/health`
/// says "degraded"; one endpoint back ends it.
#[test]
fn all_endpoints_unhealthy_is_panic_mode_and_degraded() {
    let a = named("a");
    let b = named("b");
    let gw = gateway(1, &endpoints(&[&a, &b]), CHECKS);
    a.set_health(503);
    b.set_health(503);
    let degraded = wait_until(Duration::from_secs(3), || {
        let v = health(&gw);
        v["status"] == "degraded"
            && v["upstreams"]["app"]["endpoints"]
                .as_array()
                .is_some_and(|eps| eps.iter().all(|e| e["healthy"] == false))
    });
    assert!(degraded, "{}", health(&gw));
    let served = serve(&gw, 10);
    assert!(
        served.iter().any(|s| s == "a") && served.iter().any(|s| s == "b"),
        "panic mode sends traffic to every endpoint: {served:?}"
    );

    a.set_health(200);
    assert!(
        wait_until(Duration::from_secs(3), || health(&gw)["status"] == "ok"),
        "{}",
        health(&gw)
    );
    assert_eq!(healthy(&gw, &a.url()), Some(true));
    assert_only(&gw, "a");
}

/// Consecutive failures are counted per endpoint over all workers: with 2 workers and
/// `consecutive_failures = 3`, the failing endpoint gets exactly 3 requests (not 3 per worker),
/// then none until `base_ejection` has passed.
#[test]
fn endpoint_answering_5xx_is_ejected_after_consecutive_failures_across_workers() {
    let a = named("a");
    let b = Upstream::start(|_| Reply::text(502, "bad gateway"));
    let gw = gateway(2, &endpoints(&[&a, &b]), &outlier(3, "1s"));
    let mut sent = 0;
    while b.request_count() < 3 {
        let r = get(gw.addr(), "/");
        assert!(r.status == 200 || r.status == 502, "{r:?}");
        sent += 1;
        assert!(sent <= 60, "b got {} of {sent} requests", b.request_count());
    }
    let ejected = Instant::now();
    let served = serve(&gw, 20);
    assert!(
        served.iter().all(|s| s == "a"),
        "after 3 consecutive failures b still gets traffic: {served:?}"
    );
    assert_eq!(b.request_count(), 3);
    assert_eq!(healthy(&gw, &b.url()), Some(false), "{}", health(&gw));
    assert_eq!(listed(&gw, &b.url())["ejected"], true);
    assert_eq!(listed(&gw, &a.url())["ejected"], false);

    // Back in rotation after base_ejection (1 s).
    let back = wait_until(Duration::from_secs(3), || {
        get(gw.addr(), "/");
        b.request_count() > 3
    });
    assert!(back, "b still ejected 3 s after a 1 s ejection");
    assert!(
        ejected.elapsed() >= Duration::from_millis(800),
        "b back after {:?} (base_ejection 1s)",
        ejected.elapsed()
    );
}

#[test]
fn dead_endpoint_is_ejected_after_consecutive_connect_failures() {
    let a = named("a");
    let gw = gateway(
        1,
        &format!("[\"{}\", \"{}\"]", a.url(), dead_url()),
        &outlier(3, "30s"),
    );
    let mut failed = 0;
    for _ in 0..20 {
        let r = get(gw.addr(), "/");
        if r.status == 502 {
            failed += 1;
            if failed == 3 {
                break;
            }
        } else {
            assert_eq!(r.text(), "a");
        }
    }
    assert_eq!(
        failed, 3,
        "the dead endpoint was taken out before 3 failures"
    );
    let served = serve(&gw, 20);
    assert!(
        served.iter().all(|s| s == "a"),
        "the dead endpoint still gets traffic after 3 connect failures: {served:?}"
    );
}

/// Without an `[outlier]` table, an endpoint is ejected after 5 consecutive failures.
#[test]
fn outlier_ejection_is_on_by_default_after_five_failures() {
    let a = named("a");
    let b = Upstream::start(|_| Reply::text(500, "boom"));
    let gw = gateway(1, &endpoints(&[&a, &b]), "");
    let mut sent = 0;
    while b.request_count() < 5 {
        get(gw.addr(), "/");
        sent += 1;
        assert!(
            sent <= 30,
            "b got only {} of {sent} requests: ejected before 5 failures?",
            b.request_count()
        );
    }
    let served = serve(&gw, 20);
    assert!(
        served.iter().all(|s| s == "a"),
        "after 5 consecutive failures b still gets traffic: {served:?}"
    );
    assert_eq!(b.request_count(), 5);
}

/// A success resets the consecutive-failure count: an endpoint that fails twice, succeeds
/// once, and so on, is never ejected with `consecutive_failures = 3`.
#[test]
fn a_success_resets_the_consecutive_failure_count() {
    let a = named("a");
    let n = AtomicUsize::new(0);
    let b = Upstream::start(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
            Reply::text(200, "b")
        } else {
            Reply::text(500, "boom")
        }
    });
    let gw = gateway(1, &endpoints(&[&a, &b]), &outlier(3, "30s"));
    let mut c = Client::connect(gw.addr());
    for _ in 0..30 {
        c.request(&Req::get("/"));
    }
    assert_eq!(
        b.request_count(),
        15,
        "round robin over 2 endpoints: b was ejected although it never failed 3 times in a row"
    );
}
