//! Aggregation (BEHAVIOR.md "Aggregation"): an aggregate's calls against real loopback
//! upstreams: the composite and its `_meta`, the dependency graph's start times, `foreach`,
//! `when`, deadlines, required and optional failures, an open breaker, missing placeholders,
//! what each call carries, HEAD and keep-alive, and `dispatch explain`.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::aggregate::{explain, recording, Arrivals, InFlight};
use support::upstream_misbehave::{Exchange, Scripted};
use support::*;

/// The reference's dashboard: profile required (500ms), balance optional with a default,
/// recentTransactions optional with `select` and a default.
fn dashboard(users: &Upstream, accounts: &Upstream, transactions: &Upstream) -> String {
    format!(
        r#"
[upstreams.users]
endpoints = ["{}"]
[upstreams.accounts]
endpoints = ["{}"]
retries = 0
[upstreams.transactions]
endpoints = ["{}"]

[aggregates.dashboard]
path = "/api/v1/dashboard/:userId"
timeout = "3s"

[aggregates.dashboard.calls.profile]
upstream = "users"
path = "/users/{{userId}}"
required = true
timeout = "500ms"

[aggregates.dashboard.calls.balance]
upstream = "accounts"
path = "/accounts/{{userId}}/balance"
default = {{ currency = "USD", available = 0, pending = 0 }}

[aggregates.dashboard.calls.recentTransactions]
upstream = "transactions"
path = "/transactions?userId={{userId}}&limit=5"
select = ".transactions"
default = []
timeout = "2s"
"#,
        users.url(),
        accounts.url(),
        transactions.url()
    )
}

fn profile_upstream() -> Upstream {
    Upstream::start(|req| {
        let id = req.path().trim_start_matches("/users/").to_string();
        Reply::json(200, &json!({"id": id, "name": "Ada", "plan": "business"}))
    })
}

fn transactions_upstream() -> Upstream {
    Upstream::start(|_| {
        Reply::json(
            200,
            &json!({"transactions": [{"id": 1, "amount": 5}], "total": 1}),
        )
    })
}

/// The dashboard's composite: every result by call name, `select` applied, a failed optional
/// call's default, and `_meta` as BEHAVIOR.md says.
#[test]
fn dashboard_composes_results_with_defaults_and_meta() {
    let users = profile_upstream();
    let accounts = Upstream::start(|_| Reply::text(500, "down"));
    let transactions = transactions_upstream();
    let gw = Gateway::start(&dashboard(&users, &accounts, &transactions));
    let r = get(gw.addr(), "/api/v1/dashboard/u42");
    assert_eq!(r.status, 200, "{r:?}");
    r.assert_content_type("application/json");
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let v = r.json();
    assert_eq!(
        v["profile"],
        json!({"id": "u42", "name": "Ada", "plan": "business"})
    );
    assert_eq!(
        v["balance"],
        json!({"currency": "USD", "available": 0, "pending": 0})
    );
    assert_eq!(v["recentTransactions"], json!([{"id": 1, "amount": 5}]));
    let meta = &v["_meta"];
    assert_eq!(meta["partial"], json!(true), "{v}");
    assert_eq!(
        meta["available"],
        json!({"profile": true, "balance": false, "recentTransactions": true})
    );
    assert_eq!(meta["errors"], json!({"balance": "status 500"}));
    assert_eq!(meta["skipped"], json!([]));
    assert_eq!(meta["truncated"], json!([]));
    for call in ["profile", "balance", "recentTransactions"] {
        assert!(meta["ms"][call].is_u64(), "ms.{call}: {v}");
    }
    assert_eq!(
        transactions.last_request().target,
        "/transactions?userId=u42&limit=5"
    );
    assert_eq!(accounts.last_request().target, "/accounts/u42/balance");
    // Every call succeeded: not partial.
    let ok = Upstream::start(|_| Reply::json(200, &json!({"available": 7})));
    let gw = Gateway::start(&dashboard(&users, &ok, &transactions));
    let v = get(gw.addr(), "/api/v1/dashboard/u1").json();
    assert_eq!(v["_meta"]["partial"], json!(false), "{v}");
    assert_eq!(v["balance"], json!({"available": 7}));
}

/// A required call that fails gives 503 naming it, at once: the other calls still in flight
/// (a 2 s one here) are not waited for.
#[test]
fn a_failed_required_call_is_503_naming_it_without_waiting_for_the_others() {
    let users = Upstream::start(|_| Reply::text(500, "boom"));
    let accounts = Upstream::start(|_| {
        Reply::json(200, &json!({"available": 1})).delay(Duration::from_secs(2))
    });
    let transactions = transactions_upstream();
    let gw = Gateway::start(&dashboard(&users, &accounts, &transactions));
    let began = Instant::now();
    let r = get(gw.addr(), "/api/v1/dashboard/u1");
    assert_error(&r, 503);
    assert_eq!(
        r.json()["error"]["message"],
        json!("Required call \"profile\" failed: status 500")
    );
    assert!(
        began.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        began.elapsed()
    );
}

/// A required call that misses its own timeout is a 503 too; an optional one that misses its
/// own is a `timeout` failure with its default, and the aggregate takes about that timeout.
#[test]
fn call_timeouts_fail_the_call_and_bound_the_aggregate() {
    let slow_users =
        Upstream::start(|_| Reply::json(200, &json!({"id": 1})).delay(Duration::from_secs(2)));
    let accounts = Upstream::start(|_| Reply::json(200, &json!({"available": 1})));
    let transactions = transactions_upstream();
    let gw = Gateway::start(&dashboard(&slow_users, &accounts, &transactions));
    let began = Instant::now();
    let r = get(gw.addr(), "/api/v1/dashboard/u1");
    assert_error(&r, 503);
    assert_eq!(
        r.json()["error"]["message"],
        json!("Required call \"profile\" failed: timeout")
    );
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    let users = profile_upstream();
    let slow = Upstream::start(|_| {
        Reply::json(200, &json!({"transactions": []})).delay(Duration::from_secs(5))
    });
    let gw = Gateway::start(&dashboard(&users, &accounts, &slow));
    let began = Instant::now();
    let r = get(gw.addr(), "/api/v1/dashboard/u1");
    let took = began.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["recentTransactions"], json!([]));
    assert_eq!(
        v["_meta"]["errors"],
        json!({"recentTransactions": "timeout"})
    );
    // recentTransactions' own timeout is 2s: the critical path, not the upstream's 5s.
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(3500),
        "{took:?}"
    );
}

/// The aggregate's own timeout passing while a required call is pending is a 504.
#[test]
fn the_aggregate_deadline_with_a_required_call_pending_is_504() {
    let slow = Upstream::start(|_| Reply::json(200, &json!({})).delay(Duration::from_secs(3)));
    let gw = Gateway::start(&format!(
        r#"
[upstreams.slow]
endpoints = ["{}"]
[aggregates.a]
path = "/a"
timeout = "300ms"
[aggregates.a.calls.main]
upstream = "slow"
path = "/main"
required = true
"#,
        slow.url()
    ));
    let began = Instant::now();
    let r = get(gw.addr(), "/a");
    assert_error(&r, 504);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

/// The order-details graph: `shipment` starts with `order`; `user`, `products` and `reviews`
/// start when `order` has answered (it takes 400 ms), not before and not much after.
#[test]
fn dependent_calls_start_when_their_dependency_ends_and_others_at_once() {
    let arrivals = Arrivals::default();
    let accounts = recording(&arrivals, |req| {
        if req.path().starts_with("/orders/") {
            Reply::json(
                200,
                &json!({"id": 7, "userId": "u9", "productIds": ["p1", "p2"]}),
            )
            .delay(Duration::from_millis(400))
        } else {
            Reply::json(200, &json!({"points": 10}))
        }
    });
    let users = recording(&arrivals, |req| {
        let p = req.path();
        if p.starts_with("/users/") {
            Reply::json(200, &json!({"id": "u9", "plan": "free"}))
        } else if p.starts_with("/products") {
            Reply::json(200, &json!([{"id": "p1"}, {"id": "p2"}]))
        } else {
            Reply::json(200, &json!({"review": p}))
        }
    });
    let transactions = recording(&arrivals, |_| {
        Reply::json(200, &json!({"status": "shipped"})).delay(Duration::from_millis(100))
    });
    let gw = Gateway::start(&order_details(&users, &accounts, &transactions));
    let began = Instant::now();
    let r = get(gw.addr(), "/api/v1/orders/7/details");
    let took = began.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    let order = arrivals.at("/orders/7");
    let shipment = arrivals.at("/shipments/7");
    let ms = |a: Instant, b: Instant| {
        a.saturating_duration_since(b).as_millis() as i64
            - b.saturating_duration_since(a).as_millis() as i64
    };
    assert!(
        ms(shipment, order).abs() < 200,
        "shipment starts with order: {}ms apart",
        ms(shipment, order)
    );
    for dependent in [
        "/users/u9",
        "/products?ids=p1,p2",
        "/reviews/p1",
        "/reviews/p2",
    ] {
        let after = ms(arrivals.at(dependent), order);
        assert!(
            (380..1000).contains(&after),
            "{dependent} starts when order ends (order took 400ms): {after}ms after order"
        );
    }
    // About the critical path (order 400ms, then one more hop), not the sum.
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let v = r.json();
    // `shape` keeps four results; `_meta` is added to the shaped object.
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        ["_meta", "order", "products", "shipment", "user"],
        "{v}"
    );
    assert_eq!(v["_meta"]["skipped"], json!(["loyalty"]), "{v}");
    assert_eq!(
        v["_meta"]["partial"],
        json!(false),
        "a when-skip is not partial: {v}"
    );
    assert!(!arrivals.targets().iter().any(|t| t.starts_with("/loyalty")));
}

fn order_details(users: &Upstream, accounts: &Upstream, transactions: &Upstream) -> String {
    format!(
        r#"
[upstreams.users]
endpoints = ["{}"]
[upstreams.accounts]
endpoints = ["{}"]
[upstreams.transactions]
endpoints = ["{}"]

[aggregates.order_details]
path = "/api/v1/orders/:orderId/details"
timeout = "3s"
shape = '{{order, user, products, shipment}}'

[aggregates.order_details.calls.order]
upstream = "accounts"
path = "/orders/{{orderId}}"
required = true

[aggregates.order_details.calls.user]
upstream = "users"
path = "/users/{{order.userId}}"
required = true

[aggregates.order_details.calls.products]
upstream = "users"
path = "/products?ids={{order.productIds}}"
default = []

[aggregates.order_details.calls.shipment]
upstream = "transactions"
path = "/shipments/{{orderId}}"

[aggregates.order_details.calls.reviews]
upstream = "users"
path = "/reviews/{{each}}"
foreach = "order.productIds"
max_items = 20
concurrency = 4
default = []

[aggregates.order_details.calls.loyalty]
upstream = "accounts"
path = "/loyalty/{{user.id}}"
when = '.user.plan == "business"'
"#,
        users.url(),
        accounts.url(),
        transactions.url()
    )
}

/// `when` true runs the call (it waits for the call it reads), false skips it.
#[test]
fn when_runs_or_skips_a_call() {
    for (plan, runs) in [("business", true), ("free", false)] {
        let arrivals = Arrivals::default();
        let up = recording(&arrivals, move |req| {
            if req.path().starts_with("/user") {
                Reply::json(200, &json!({"id": "u1", "plan": plan}))
            } else {
                Reply::json(200, &json!({"points": 3}))
            }
        });
        let gw = Gateway::start(&format!(
            r#"
[upstreams.u]
endpoints = ["{}"]
[aggregates.a]
path = "/a"
[aggregates.a.calls.user]
upstream = "u"
path = "/user"
[aggregates.a.calls.loyalty]
upstream = "u"
path = "/loyalty/{{user.id}}"
when = '.user.plan == "business"'
"#,
            up.url()
        ));
        let v = get(gw.addr(), "/a").json();
        assert_eq!(
            arrivals.targets().contains(&"/loyalty/u1".to_string()),
            runs,
            "{plan}: {v}"
        );
        if runs {
            assert_eq!(v["loyalty"], json!({"points": 3}));
            assert_eq!(v["_meta"]["skipped"], json!([]));
        } else {
            assert_eq!(v["loyalty"], Value::Null);
            assert_eq!(v["_meta"]["skipped"], json!(["loyalty"]));
            assert_eq!(v["_meta"]["available"]["loyalty"], json!(false));
        }
        assert_eq!(v["_meta"]["partial"], json!(false));
    }
}

/// `foreach`: one request per element in order, at most `max_items` (the rest listed in
/// `truncated`), at most `concurrency` in flight, a failed item null.
#[test]
fn foreach_keeps_order_nulls_failed_items_truncates_and_limits_concurrency() {
    let inflight = InFlight::default();
    let counted = inflight.clone();
    let up = Upstream::start(move |req| {
        let p = req.path().to_string();
        if p == "/list" {
            return Reply::json(200, &json!({"ids": [1, 2, 3, 4, 5, 6, 7]}));
        }
        counted.during(|| {
            std::thread::sleep(Duration::from_millis(150));
            // Later items answer sooner than earlier ones would have.
            match p.as_str() {
                "/item/3" => Reply::text(500, "no"),
                _ => Reply::json(200, &json!({"item": p})),
            }
        })
    });
    let gw = Gateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
retries = 0
[aggregates.a]
path = "/a"
[aggregates.a.calls.list]
upstream = "u"
path = "/list"
[aggregates.a.calls.items]
upstream = "u"
path = "/item/{{each}}"
foreach = "list.ids"
max_items = 5
concurrency = 2
select = ".item"
"#,
        up.url()
    ));
    let r = get(gw.addr(), "/a");
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(
        v["items"],
        json!(["/item/1", "/item/2", null, "/item/4", "/item/5"]),
        "{v}"
    );
    assert_eq!(v["_meta"]["truncated"], json!(["items"]));
    assert_eq!(inflight.most(), 2, "concurrency = 2");
    assert_eq!(up.request_count(), 6, "the list and 5 items, not 7");
    assert_eq!(v["_meta"]["available"]["items"], json!(true));
}

/// A placeholder without a value fails its call (reason in `_meta.errors`) and skips the calls
/// that wait on it.
#[test]
fn a_missing_placeholder_fails_the_call_and_skips_its_dependents() {
    let up = Upstream::start(|req| match req.path() {
        "/order" => Reply::json(200, &json!({"id": 1})),
        _ => Reply::json(200, &json!({"ok": true})),
    });
    let gw = Gateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[aggregates.a]
path = "/a"
[aggregates.a.calls.order]
upstream = "u"
path = "/order"
[aggregates.a.calls.user]
upstream = "u"
path = "/users/{{order.userId}}"
[aggregates.a.calls.prefs]
upstream = "u"
path = "/prefs/{{user.id}}"
default = {{}}
"#,
        up.url()
    ));
    let v = get(gw.addr(), "/a").json();
    assert_eq!(
        v["_meta"]["errors"],
        json!({"user": "no value for {order.userId}"}),
        "{v}"
    );
    assert_eq!(v["_meta"]["skipped"], json!(["prefs"]));
    assert_eq!(v["_meta"]["partial"], json!(true));
    assert_eq!(v["prefs"], json!({}));
    assert_eq!(up.request_count(), 1, "only /order was requested");
}

/// An optional call to an upstream whose breaker is open fails `breaker open` without a
/// request; non-JSON answers fail `not json`.
#[test]
fn breaker_open_and_non_json_calls_fail_with_their_reasons() {
    let bad = Upstream::start(|_| Reply::text(502, "bad"));
    let html = Upstream::start(|_| Reply::text(200, "<html>"));
    let gw = Gateway::start(&format!(
        r#"
[upstreams.bad]
endpoints = ["{}"]
retries = 0
[upstreams.bad.breaker]
failure_threshold = 1
recovery_timeout = "30s"
[upstreams.html]
endpoints = ["{}"]
[aggregates.a]
path = "/a"
[aggregates.a.calls.flaky]
upstream = "bad"
path = "/x"
[aggregates.a.calls.page]
upstream = "html"
path = "/page"
"#,
        bad.url(),
        html.url()
    ));
    let v = get(gw.addr(), "/a").json();
    assert_eq!(
        v["_meta"]["errors"],
        json!({"flaky": "status 502", "page": "not json"}),
        "{v}"
    );
    let v = get(gw.addr(), "/a").json();
    assert_eq!(v["_meta"]["errors"]["flaky"], json!("breaker open"), "{v}");
    assert_eq!(bad.request_count(), 1, "the open breaker sent nothing");
}

/// Each call carries the client's Authorization, its request id, a child span of its trace,
/// the forwarded fields and `Accept: application/json`, and none of its other fields.
#[test]
fn calls_carry_identity_request_id_and_a_child_span() {
    let up = Upstream::start(|_| Reply::json(200, &json!({})));
    let gw = Gateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[aggregates.a]
path = "/a"
[aggregates.a.calls.one]
upstream = "u"
path = "/one"
[aggregates.a.calls.two]
upstream = "u"
path = "/two"
"#,
        up.url()
    ));
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = send_request(
        gw.addr(),
        &Req::get("/a")
            .header("Authorization", "Bearer t0k")
            .header("X-Request-Id", "rid-42")
            .header("traceparent", parent)
            .header("Cookie", "session=secret")
            .header("Accept", "text/html"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-request-id"), Some("rid-42"));
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2);
    let mut spans = Vec::new();
    for req in &reqs {
        assert_eq!(req.method, "GET");
        assert_eq!(req.header("authorization"), Some("Bearer t0k"));
        assert_eq!(req.header("x-request-id"), Some("rid-42"));
        assert_eq!(req.header("accept"), Some("application/json"));
        assert_eq!(req.header("x-forwarded-for"), Some("127.0.0.1"));
        assert!(
            req.header("via").is_some_and(|v| v.contains("dispatch")),
            "{req:?}"
        );
        assert!(!req.has_header("cookie"), "{req:?}");
        let tp = req.header("traceparent").expect("traceparent");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", "0af7651916cd43dd8448eb211c80319c", "01")
        );
        assert_ne!(parts[2], "b7ad6b7169203331", "a new span id");
        spans.push(parts[2].to_string());
    }
    assert_ne!(spans[0], spans[1], "a span per call");
}

/// HEAD gets the head of GET's answer (same Content-Length, no body), and the connection
/// stays open for the next request.
#[test]
fn head_and_keep_alive_after_an_aggregate_answer() {
    let up = Upstream::start(|_| Reply::json(200, &json!({"v": 1})));
    let gw = Gateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[aggregates.a]
path = "/a"
[aggregates.a.calls.one]
upstream = "u"
path = "/one"
"#,
        up.url()
    ));
    let mut c = Client::connect(gw.addr());
    let got = c.request(&Req::get("/a"));
    assert_eq!(got.status, 200);
    let length = |r: &Response| -> usize { r.header("content-length").unwrap().parse().unwrap() };
    let head = c.request(&Req::head("/a"));
    assert_eq!(head.status, 200, "{head:?}");
    // The composite's own length (`_meta.ms` may take one more digit on a slow machine).
    assert!(
        length(&head).abs_diff(length(&got)) <= 2,
        "{head:?} {got:?}"
    );
    assert!(head.body.is_empty());
    let again = c.request(&Req::get("/a"));
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["one"], json!({"v": 1}));
    // GET and HEAD only by default.
    let post = c.request(&Req::post("/a", b"{}"));
    assert_eq!(post.status, 405, "{post:?}");
}

/// `dispatch explain` prints the plan; an unknown name exits 1 listing the aggregates.
#[test]
fn explain_prints_the_plan_and_lists_aggregates_for_an_unknown_name() {
    let u = "http://127.0.0.1:9";
    let toml = order_details_urls(u);
    let (code, out, err) = explain(&toml, "order_details");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "aggregate order_details: 6 calls, timeout 3s\n\
         start order:\n\
         \x20  1. order     starts at once; required, accounts; timeout 3s (aggregate's)\n\
         \x20  2. user      waits for order; required, users; timeout 3s (aggregate's)\n\
         \x20  3. products  waits for order; optional, users; timeout 3s (aggregate's)\n\
         \x20  4. shipment  starts at once; optional, transactions; timeout 3s (aggregate's)\n\
         \x20  5. reviews   waits for order; optional, users; timeout 3s (aggregate's); foreach order.productIds (at most 20 items, 4 at once)\n\
         \x20  6. loyalty   waits for user; optional, accounts; timeout 3s (aggregate's); when .user.plan == \"business\"\n\
         critical path: order -> user -> loyalty (9s by the calls' timeouts)\n\
         worst case: 3s (the aggregate's timeout caps the path's 9s)\n"
    );
    let (code, _, err) = explain(&toml, "dashbord");
    assert_eq!(code, 1);
    assert!(
        err.contains("no aggregate named \"dashbord\"; the aggregates are: order_details"),
        "{err}"
    );
    // `dispatch check` prints each aggregate's critical path.
    let out = check(&toml);
    assert!(
        out.stdout
            .contains("critical path: order -> user -> loyalty (worst case 3s)"),
        "{}",
        out.stdout
    );
}

fn order_details_urls(url: &str) -> String {
    let up = Upstream::start(|_| Reply::status(200));
    order_details(&up, &up, &up).replace(&up.url(), url)
}

/// An aggregate and a route that can match the same request with equal precedence are a
/// config error naming both.
#[test]
fn an_aggregate_and_a_route_of_equal_precedence_are_a_config_error() {
    let toml = r#"
[upstreams.u]
endpoints = ["http://127.0.0.1:9"]
[routes.r]
paths = ["/a"]
methods = ["GET"]
upstream = "u"
[aggregates.a]
path = "/a"
methods = ["GET"]
[aggregates.a.calls.one]
upstream = "u"
path = "/one"
"#;
    let out = check(toml);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr.contains("aggregates.a.path: routes.r and aggregates.a can match the same request with equal precedence"),
        "{}",
        out.stderr
    );
}

/// Regression: a leaky bucket on an aggregate never delayed or rejected (phase 8 dropped the
/// `Delay`, whose drop gave its place back): now queued requests leave at the rate and those
/// beyond the queue get 429.
#[test]
fn leaky_bucket_on_an_aggregate_delays_and_rejects() {
    // One a second, one may wait: of a burst of 4, one goes at once, one a turn later.
    const T_MS: f64 = 1000.0;
    let arrivals = Arrivals::default();
    let up = recording(&arrivals, |_| Reply::json(200, &json!({"ok": true})));
    let gw = Gateway::start(&format!(
        r#"
[upstreams.up]
endpoints = ["{}"]
[rate_limits.shape]
algorithm = "leaky_bucket"
key = "global"
rate = 1
burst = 1
[aggregates.a]
path = "/a"
rate_limits = ["shape"]
[aggregates.a.calls.main]
upstream = "up"
path = "/main"
"#,
        up.url()
    ));
    let shots = support::ratelimit::burst(gw.addr(), 4, "lb", |_| Req::get("/a"));
    let ok = shots.iter().filter(|s| s.resp.status == 200).count();
    let rejected = shots.iter().filter(|s| s.resp.status == 429).count();
    assert_eq!(ok + rejected, 4, "only 200 or 429");
    assert!(rejected >= 1, "nothing rejected beyond rate + burst");
    assert!(ok >= 2, "the queued request was not admitted");
    let first = shots.iter().map(|s| s.sent).min().expect("shots");
    let mut at: Vec<Instant> = arrivals.instants();
    at.sort();
    assert_eq!(at.len(), ok, "every admitted request's call went on");
    for (k, a) in at.iter().enumerate() {
        let after = a.saturating_duration_since(first).as_secs_f64() * 1000.0;
        assert!(
            after >= k as f64 * T_MS - 50.0,
            "call {k} arrived {after:.0} ms after the burst: not delayed to the rate"
        );
    }
}

/// Regression: a call cut by the aggregate's deadline was dropped mid-exchange, so its
/// timeout never reached the breaker: now the call's own read timeout fires first, and a
/// breaker on timeouts opens after `failure_threshold` aggregate requests.
#[test]
fn calls_cut_at_the_aggregate_deadline_count_as_timeouts_for_the_breaker() {
    let hang = Upstream::start(|_| Reply::json(200, &json!({})).delay(Duration::from_secs(5)));
    let gw = Gateway::start(&format!(
        r#"
[upstreams.hang]
endpoints = ["{}"]
retries = 0
[upstreams.hang.breaker]
failure_threshold = 2
recovery_timeout = "30s"
failure_on = ["timeout"]
[aggregates.a]
path = "/a"
timeout = "300ms"
[aggregates.a.calls.slow]
upstream = "hang"
path = "/slow"
"#,
        hang.url()
    ));
    for _ in 0..2 {
        let v = get(gw.addr(), "/a").json();
        assert_eq!(v["_meta"]["errors"]["slow"], json!("timeout"), "{v}");
    }
    let v = get(gw.addr(), "/a").json();
    assert_eq!(v["_meta"]["errors"]["slow"], json!("breaker open"), "{v}");
    assert_eq!(hang.request_count(), 2, "the open breaker sent nothing");
}

/// Regression: a required call without its own `timeout` whose upstream's read timeout
/// passed was answered 504 (as if the aggregate's deadline had cut it): it is 503.
#[test]
fn an_upstream_read_timeout_on_a_required_call_is_503_not_504() {
    let hang = Upstream::start(|_| Reply::json(200, &json!({})).delay(Duration::from_secs(5)));
    let gw = Gateway::start(&format!(
        r#"
[upstreams.hang]
endpoints = ["{}"]
retries = 0
read_timeout = "200ms"
[aggregates.a]
path = "/a"
timeout = "3s"
[aggregates.a.calls.main]
upstream = "hang"
path = "/main"
required = true
"#,
        hang.url()
    ));
    let r = get(gw.addr(), "/a");
    assert_error(&r, 503);
    assert!(
        r.text()
            .contains("Required call \\\"main\\\" failed: timeout"),
        "{r:?}"
    );
}

/// Regression: a required call skipped because its optional dependency was cut at the
/// aggregate's deadline was answered 503: the aggregate timed out, 504.
#[test]
fn a_required_call_after_a_dependency_cut_by_the_aggregate_deadline_is_504() {
    let arrivals = Arrivals::default();
    let up = recording(&arrivals, |req| {
        if req.path() == "/first" {
            Reply::json(200, &json!({"id": 1})).delay(Duration::from_secs(5))
        } else {
            Reply::json(200, &json!({}))
        }
    });
    let gw = Gateway::start(&format!(
        r#"
[upstreams.up]
endpoints = ["{}"]
retries = 0
[aggregates.a]
path = "/a"
timeout = "300ms"
[aggregates.a.calls.first]
upstream = "up"
path = "/first"
[aggregates.a.calls.second]
upstream = "up"
path = "/second/{{first.id}}"
required = true
"#,
        up.url()
    ));
    let r = get(gw.addr(), "/a");
    assert_error(&r, 504);
    assert_eq!(arrivals.targets(), ["/first"]);
}

/// Regression: a parameter of `..` (or `%2E%2E`; the query's, the client's path is normalized
/// first) rendered `/users/..`, a path traversal upstream: the call fails naming the
/// placeholder, and nothing is sent.
#[test]
fn a_dot_segment_placeholder_value_fails_the_call_and_sends_nothing() {
    let arrivals = Arrivals::default();
    let up = recording(&arrivals, |_| Reply::json(200, &json!({})));
    let gw = Gateway::start(&format!(
        r#"
[upstreams.up]
endpoints = ["{}"]
[aggregates.a]
path = "/a"
[aggregates.a.calls.user]
upstream = "up"
path = "/users/{{id}}"
"#,
        up.url()
    ));
    for target in ["/a?id=..", "/a?id=%2E%2E", "/a?id=."] {
        let v = get(gw.addr(), target).json();
        let error = v["_meta"]["errors"]["user"].as_str().unwrap_or_default();
        assert!(error.starts_with("bad value for {id}"), "{target}: {v}");
    }
    assert!(arrivals.targets().is_empty(), "{:?}", arrivals.targets());
}

/// A client that leaves while its aggregate's calls are in flight ends the request: the calls
/// are dropped and their upstream connections closed, long before any timeout would end them,
/// and the request is logged as 499.
#[test]
fn a_client_that_leaves_drops_the_calls_in_flight() {
    // Mark 0: the call arrived. Mark 1: the gateway closed the call's connection (the script's
    // next read ends; it would wait 10 s for bytes that never come, and `await_marks` gives up
    // after 5).
    let up = Scripted::start(|x: &mut Exchange| {
        if x.read_head().is_some() {
            x.mark(0);
            if x.read_head().is_none() {
                x.mark(1);
            }
        }
    });
    let gw = Gateway::start(&format!(
        r#"
[log]
access = "json"
[upstreams.u]
endpoints = ["{}"]
read_timeout = "30s"
[aggregates.a]
path = "/a"
timeout = "30s"
[aggregates.a.calls.one]
upstream = "u"
path = "/one"
required = true
timeout = "20s"
"#,
        up.url()
    ));
    let mut c = Client::connect(gw.addr());
    c.send(&Req::get("/a").header("X-Request-Id", "leaves-1").to_bytes());
    up.await_marks(0, 1);
    drop(c);
    up.await_marks(1, 1);
    let lines = support::cache::access_lines(&gw, &["leaves-1".to_string()]);
    assert_eq!(lines["leaves-1"]["status"], json!(499), "{lines:?}");
    assert_eq!(lines["leaves-1"]["route"], json!("a"), "{lines:?}");
}
