//! Router lookup cost on a table shaped like a real API.
//!
//! What is compared, and why:
//! - `lookup_1000/*`: the kinds of lookup a gateway does on a 1,000-route table (100 services x
//!   10 routes: literals, params, an exact health check, wildcards, a host-restricted tree, a
//!   header canary, method-restricted routes). A deep literal hit, a param route, a
//!   host-predicated route, two misses and a 405. The hit/param cases are the hot path; the
//!   misses show that a 404 costs no more than a hit (the walk stops where the trie does), and
//!   the 405 is the worst case (every candidate on the path checked, then `Allow` built).
//! - `param_by_table_size/{10,100,1000}`: the same param lookup against 1, 10 and 100
//!   services. The trie's claim is that cost follows the path's depth, not the number of
//!   routes: these three should be within a few nanoseconds of each other (only the binary
//!   search over services grows, logarithmically).
//! - `compile_1000`: building the router, which happens once per config load or reload, off the
//!   request path; it bounds how long a reload spends before swapping.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dispatch::config::model::{Location, Route};
use dispatch::router::{Lookup, RequestView, Router};

fn route(name: String, path: String) -> Route {
    Route {
        name,
        paths: vec![path],
        methods: None,
        hosts: None,
        headers: Vec::new(),
        upstream: 0,
        split: Vec::new(),
        sticky: None,
        strip_prefix: false,
        rewrite: None,
        timeout: None,
        auth: None,
        rate_limits: Vec::new(),
        cache: None,
        location: Location::default(),
        client: None,
        aggregate: None,
        transform: None,
        websocket: false,
    }
}

fn methods(mut r: Route, m: &[&str]) -> Route {
    r.methods = Some(m.iter().map(|s| s.to_string()).collect());
    r
}

/// `services` x 10 routes, the way an API gateway config grows: one block per service.
fn api_table(services: usize) -> Vec<Route> {
    let mut routes = Vec::with_capacity(services * 10);
    for i in 0..services {
        let base = format!("/api/v1/svc{i:03}");
        let r = |suffix: &str, path: String| route(format!("svc{i:03}_{suffix}"), path);
        routes.push(methods(r("index", base.clone()), &["GET", "HEAD"]));
        routes.push(methods(
            r("items", format!("{base}/items")),
            &["GET", "POST"],
        ));
        let mut canary = methods(r("items_canary", format!("{base}/items")), &["GET", "POST"]);
        canary.headers = vec![("x-canary".into(), "1".into())];
        routes.push(canary);
        routes.push(methods(
            r("item", format!("{base}/items/:id")),
            &["GET", "PUT", "DELETE"],
        ));
        routes.push(methods(
            r("child", format!("{base}/items/:id/children/:child")),
            &["GET"],
        ));
        routes.push(methods(
            r("search", format!("{base}/items/search")),
            &["GET"],
        ));
        routes.push(methods(r("health", format!("={base}/health")), &["GET"]));
        let mut admin = r("admin", format!("{base}/admin/*"));
        admin.hosts = Some(vec!["admin.example.com".into()]);
        routes.push(admin);
        routes.push(methods(
            r("uploads", format!("{base}/uploads/*")),
            &["POST", "PUT"],
        ));
        let mut reports = r(
            "reports",
            format!("/api/v2/svc{i:03}/:tenant/reports/:report"),
        );
        reports.hosts = Some(vec![format!("*.svc{i:03}.example.com")]);
        routes.push(reports);
    }
    routes
}

/// A realistic header block: the router looks up `x-canary` in it.
const HEADERS: [(&str, &[u8]); 8] = [
    ("user-agent", b"curl/8.5.0"),
    ("accept", b"application/json"),
    ("accept-encoding", b"gzip, br"),
    ("authorization", b"Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"),
    ("x-request-id", b"5b0c5a8e-6d1f-4f7e-9f53-0d2f0c2b9e11"),
    (
        "traceparent",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("content-length", b"0"),
    ("connection", b"keep-alive"),
];

fn request<'p>(
    method: &'p str,
    path: &'p str,
    host: &'p str,
) -> RequestView<'p, [(&'p str, &'p [u8]); 8]> {
    RequestView {
        path,
        method,
        host: Some(host.as_bytes()),
        headers: &HEADERS,
        client: None,
    }
}

fn found(router: &Router, req: &RequestView<'_, [(&str, &[u8]); 8]>) -> bool {
    matches!(router.lookup(req), Lookup::Found(_))
}

fn lookups(c: &mut Criterion) {
    let routes = api_table(100);
    assert_eq!(routes.len(), 1000);
    let router = Router::compile(&routes).expect("bench table compiles");
    let host = "api.example.com:8443";
    let cases = [
        (
            "deep_literal_hit",
            request("GET", "/api/v1/svc099/items/search", host),
            true,
        ),
        (
            "param_hit",
            request("GET", "/api/v1/svc057/items/12345/children/678", host),
            true,
        ),
        (
            "host_wildcard_hit",
            request(
                "GET",
                "/api/v2/svc057/acme/reports/42",
                "acme.svc057.example.com:443",
            ),
            true,
        ),
        (
            "miss_at_root",
            request("GET", "/static/app.js", host),
            false,
        ),
        (
            "miss_at_service",
            request("GET", "/api/v1/nosuch/items/1", host),
            false,
        ),
        (
            "method_not_allowed",
            request("PATCH", "/api/v1/svc057/items/1", host),
            false,
        ),
    ];
    let mut group = c.benchmark_group("lookup_1000");
    for (name, req, hit) in &cases {
        assert_eq!(found(&router, req), *hit, "{name}");
        group.bench_function(*name, |b| b.iter(|| router.lookup(black_box(req))));
    }
    group.finish();
}

fn table_size(c: &mut Criterion) {
    let mut group = c.benchmark_group("param_by_table_size");
    for services in [1, 10, 100] {
        let routes = api_table(services);
        let router = Router::compile(&routes).expect("bench table compiles");
        let req = request(
            "GET",
            "/api/v1/svc000/items/12345/children/678",
            "api.example.com",
        );
        assert!(found(&router, &req));
        group.bench_with_input(BenchmarkId::from_parameter(routes.len()), &req, |b, req| {
            b.iter(|| router.lookup(black_box(req)))
        });
    }
    group.finish();
}

fn compile(c: &mut Criterion) {
    let routes = api_table(100);
    c.bench_function("compile_1000", |b| {
        // Includes dropping the router, as a reload drops the old one.
        b.iter(|| Router::compile(black_box(&routes)))
    });
}

criterion_group! {
    name = benches;
    // Two shared cores: shorter runs, enough samples for stable medians.
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = lookups, table_size, compile
}
criterion_main!(benches);
