//! Admin `GET /metrics` (BEHAVIOR.md "Metrics"): the contract's metric names, values that move
//! with real traffic over loopback, pool reuse as new vs reused connections, connection gauges,
//! process metrics, and admin-token protection.

mod support;

use support::*;

/// Gateway config with one upstream `app` on `url` and a route `/app`.
fn app_config(url: &str, admin_extra: &str) -> String {
    format!(
        "[admin]\n{admin_extra}\n\n[upstreams.app]\nendpoints = [\"{url}\"]\nretries = 0\n\n[routes.app]\npaths = [\"/app\"]\nupstream = \"app\"\n"
    )
}

fn scrape(gw: &Gateway) -> String {
    let r = get(gw.admin_addr(), "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    r.assert_content_type("text/plain; version=0.0.4");
    r.text()
}

/// Scrapes until `series` reads `want` (a request is counted just after its response is
/// written, so a client can be a moment ahead of the scrape); bounded to 3 s.
fn scrape_until(gw: &Gateway, series: &str, want: f64) -> String {
    let mut text = String::new();
    wait_until(std::time::Duration::from_secs(3), || {
        text = scrape(gw);
        metric(&text, series) == Some(want)
    });
    text
}

#[test]
fn every_contract_metric_name_is_exposed() {
    let up = Upstream::echo();
    let gw = Gateway::start(&app_config(&up.url(), ""));
    let text = scrape(&gw);
    for name in [
        "dispatch_requests_total",
        "dispatch_request_duration_seconds",
        "dispatch_upstream_requests_total",
        "dispatch_upstream_duration_seconds",
        "dispatch_breaker_state",
        "dispatch_ratelimit_rejected_total",
        "dispatch_cache_requests_total",
        "dispatch_connections_active",
        "dispatch_upstream_pool_reused_total",
        "dispatch_upstream_pool_new_total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# TYPE {name} "))),
            "no # TYPE line for {name}:\n{text}"
        );
    }
    assert!(
        metric(&text, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(
        metric(&text, "process_open_fds").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(text.contains("dispatch_build_info{version=\""), "{text}");
}

#[test]
fn request_upstream_and_pool_metrics_move_with_traffic() {
    let up = Upstream::echo();
    let gw = Gateway::start(&app_config(&up.url(), ""));
    // One keep-alive client connection, kept open during the scrape.
    let mut c = Client::connect(gw.addr());
    for _ in 0..2 {
        assert_eq!(c.request(&Req::get("/app/x")).status, 200);
    }
    assert_eq!(c.request(&Req::get("/missing")).status, 404);
    assert_eq!(c.request(&Req::new("DELETE", "/app/y")).status, 200);

    let text = scrape_until(
        &gw,
        r#"dispatch_requests_total{route="app",method="DELETE",status="200"}"#,
        1.0,
    );
    let v =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        v(r#"dispatch_requests_total{route="app",method="GET",status="200"}"#),
        2.0
    );
    assert_eq!(
        v(r#"dispatch_requests_total{route="app",method="DELETE",status="200"}"#),
        1.0
    );
    assert_eq!(
        v(r#"dispatch_requests_total{route="<none>",method="GET",status="404"}"#),
        1.0
    );
    assert_eq!(
        v(r#"dispatch_request_duration_seconds_count{route="app"}"#),
        3.0
    );
    assert_eq!(
        v(r#"dispatch_request_duration_seconds_bucket{route="app",le="+Inf"}"#),
        3.0
    );
    assert_eq!(
        v(r#"dispatch_upstream_requests_total{upstream="app",outcome="success"}"#),
        3.0
    );
    assert_eq!(
        v(r#"dispatch_upstream_duration_seconds_count{upstream="app"}"#),
        3.0
    );
    // workers = 1: the first request opened the upstream connection, the others reused it.
    assert_eq!(
        v(r#"dispatch_upstream_pool_new_total{upstream="app"}"#),
        1.0
    );
    assert_eq!(
        v(r#"dispatch_upstream_pool_reused_total{upstream="app"}"#),
        2.0
    );
    assert_eq!(up.connections(), 1);
    assert_eq!(v(r#"dispatch_connections_active{side="client"}"#), 1.0);
    assert_eq!(v(r#"dispatch_connections_active{side="upstream"}"#), 1.0);

    // Counters only go up between scrapes. A request is counted once its response is written,
    // so the client can be a moment ahead of the scrape.
    assert_eq!(c.request(&Req::get("/app/z")).status, 200);
    drop(c);
    let series = r#"dispatch_requests_total{route="app",method="GET",status="200"}"#;
    let later = scrape_until(&gw, series, 3.0);
    assert_eq!(metric(&later, series), Some(3.0), "{later}");
}

#[test]
fn upstream_failures_are_counted_by_outcome() {
    let gw = Gateway::start(&app_config(&dead_url(), ""));
    let r = get(gw.addr(), "/app/x");
    assert_error(&r, 502);
    let text = scrape_until(
        &gw,
        r#"dispatch_requests_total{route="app",method="GET",status="502"}"#,
        1.0,
    );
    assert_eq!(
        metric(
            &text,
            r#"dispatch_upstream_requests_total{upstream="app",outcome="connect_error"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"dispatch_requests_total{route="app",method="GET",status="502"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"dispatch_upstream_requests_total{upstream="app",outcome="success"}"#
        ),
        Some(0.0),
        "{text}"
    );
}

#[test]
fn metrics_need_the_admin_token_when_one_is_set() {
    // The child inherits this process's environment: name a variable cargo sets for tests.
    let var = "CARGO_MANIFEST_DIR";
    let token = std::env::var(var).expect("cargo sets CARGO_MANIFEST_DIR for test processes");
    let up = Upstream::echo();
    let gw = Gateway::start(&app_config(&up.url(), &format!("token_env = \"{var}\"")));

    let r = get(gw.admin_addr(), "/metrics");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = send_request(
        gw.admin_addr(),
        &Req::get("/metrics").header("Authorization", "Bearer wrong"),
    );
    assert_eq!(r.status, 401, "{r:?}");
    let r = send_request(
        gw.admin_addr(),
        &Req::get("/metrics").header("Authorization", &format!("Bearer {token}")),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains("# TYPE dispatch_requests_total counter"));
    // /health stays open.
    assert_eq!(get(gw.admin_addr(), "/health").status, 200);
}
