//! The response cache end to end (BEHAVIOR.md "Cache", issue 12): the real gateway in front of
//! real upstreams over loopback. What is stored and for how long (the upstream's `s-maxage`,
//! `max-age` and `Expires` over the rule's `ttl`), what is never stored, what bypasses, the
//! key (host without port or case, path, query, the rule's `vary`, the upstream's `Vary`, the
//! subject when `per_user`), HEAD and conditional requests answered from a stored GET,
//! coalescing of concurrent misses (and its release when an answer cannot be stored or takes
//! too long), stale-while-revalidate with one background refresh, stale-if-error on refused
//! connections, 5xx answers and an open breaker, purges by the admin API and by
//! `invalidate_on` on every worker, the memory bound, the metrics and the access log, rate
//! limits and request ids on hits, reload, and `per_user`.
//!
//! Gateways run one worker unless a test is about every worker. The cache's clock counts whole
//! seconds: tests that need an entry to age wait on that clock (`wait_age`) with lifetimes of
//! one second, and nothing else sleeps except to let requests reach the gateway before an
//! upstream answer is released.

mod support;

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::cache::*;
use support::ratelimit::{burst, rate_fields};
use support::*;

/// A target under the cached route.
fn at(rest: &str) -> String {
    format!("{CATALOG}/{rest}")
}

// ---- stored, and for how long ----

/// A miss goes upstream and is stored; later requests (new connections, a keep-alive one and
/// pipelined ones) are hits from the store with the upstream's status, headers and body, an
/// `Age`, and their own request ids, and the upstream is reached once.
#[test]
fn a_miss_is_stored_and_later_requests_are_hits_with_age() {
    let origin = Origin::versions(&[("X-Origin", "yes")]);
    let gw = Conf::new(&origin.url()).start();
    let t = at("items");
    let start = Instant::now();
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, 1));

    let hit = fetch(&gw, &t);
    assert_answer(&hit, 200, "HIT", &version(&t, 1));
    assert_eq!(hit.header("x-origin"), Some("yes"), "{:?}", hit.headers);
    hit.assert_content_type("text/plain");
    assert!(
        age(&hit) <= start.elapsed().as_secs() + 1,
        "Age {} of an entry stored {:?} ago",
        age(&hit),
        start.elapsed()
    );

    let mut c = Client::connect(gw.addr());
    for _ in 0..2 {
        assert_answer(&c.request(&Req::get(&t)), 200, "HIT", &version(&t, 1));
    }
    let mut pipelined = Vec::new();
    for id in ["p1", "p2", "p3"] {
        pipelined.extend(Req::get(&t).header("X-Request-Id", id).to_bytes());
    }
    c.send(&pipelined);
    let answers = c.read_responses(3);
    for (r, id) in answers.iter().zip(["p1", "p2", "p3"]) {
        assert_answer(r, 200, "HIT", &version(&t, 1));
        assert_eq!(
            r.header("x-request-id"),
            Some(id),
            "pipelined hits in order"
        );
    }
    assert_eq!(origin.count(&t), 1, "the upstream was reached once");
}

/// A hit's `Age` is the age the upstream gave plus the time spent in the cache (RFC 9111
/// §4.2.3), not the time in this cache alone.
#[test]
fn a_hit_s_age_includes_the_age_the_upstream_gave() {
    let origin = Origin::versions(&[("Age", "100")]);
    let gw = Conf::new(&origin.url()).start();
    let t = at("aged");
    let start = Instant::now();
    fetch(&gw, &t);
    let hit = fetch(&gw, &t);
    assert_answer(&hit, 200, "HIT", &version(&t, 1));
    let a = age(&hit);
    assert!(
        (100..=101 + start.elapsed().as_secs()).contains(&a),
        "Age {a}: the upstream's 100 plus at most the time since"
    );
}

/// HEAD is answered from a stored GET: the GET's status and headers (its Content-Length),
/// no body (the next answer on the connection reads cleanly), and no upstream request.
#[test]
fn head_is_answered_from_a_stored_get() {
    let origin = Origin::versions(&[]);
    let gw = Conf::new(&origin.url()).start();
    let t = at("h");
    let body = version(&t, 1);
    assert_answer(&fetch(&gw, &t), 200, "MISS", &body);
    let mut c = Client::connect(gw.addr());
    let head = c.request(&Req::head(&t));
    assert_eq!((head.status, x_cache(&head).as_str()), (200, "HIT"));
    age(&head);
    assert_eq!(
        head.header("content-length"),
        Some(body.len().to_string().as_str()),
        "HEAD carries the stored GET's Content-Length: {:?}",
        head.headers
    );
    assert_answer(&c.request(&Req::get(&t)), 200, "HIT", &body);
    assert_eq!(origin.total(), 1, "only the first GET reached the upstream");
}

/// A HEAD that misses goes upstream as HEAD and is not stored (it has no body to answer a GET
/// with): a second HEAD and the first GET are misses too, and the HEAD after that GET a hit.
#[test]
fn a_head_miss_goes_upstream_as_head_and_is_not_stored() {
    let origin = Origin::versions(&[]);
    let gw = Conf::new(&origin.url()).start();
    let t = at("hm");
    let head = |c: &mut Client| c.request(&Req::head(&t));
    let mut c = Client::connect(gw.addr());
    for _ in 0..2 {
        let r = head(&mut c);
        assert_eq!((r.status, x_cache(&r).as_str()), (200, "MISS"));
    }
    let methods: Vec<String> = origin.up.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["HEAD", "HEAD"], "a HEAD miss is sent on as HEAD");
    assert_answer(&c.request(&Req::get(&t)), 200, "MISS", &version(&t, 3));
    let r = head(&mut c);
    assert_eq!((r.status, x_cache(&r).as_str()), (200, "HIT"));
    assert_eq!(origin.total(), 3);
}

/// Lifetimes: the upstream's `max-age` beats the rule's `ttl` both ways, `s-maxage` beats
/// `max-age` both ways, `Expires` beats the `ttl`, and the `ttl` applies without any of them.
/// One wait of a second, past every 1 s lifetime, tells them apart.
#[test]
fn the_upstream_s_lifetimes_beat_the_ttl_and_s_maxage_beats_max_age() {
    let expires = http_date(unix_now() + 3600);
    let origin = Origin::start(move |req, n| {
        let r = Reply::text(200, &version(&req.target, n));
        match req.path().rsplit('/').next().unwrap_or("") {
            "max-age-long" => r.header("Cache-Control", "max-age=3600"),
            "max-age-short" => r.header("Cache-Control", "max-age=1"),
            "s-maxage-long" => r.header("Cache-Control", "max-age=1, s-maxage=3600"),
            "s-maxage-short" => r.header("Cache-Control", "s-maxage=1, max-age=3600"),
            "expires" => r.header("Expires", &expires),
            _ => r,
        }
    });
    // Rule `catalog`: ttl 1 s; rule `long`: ttl 1 h.
    let gw = Conf::new(&origin.url())
        .rule("ttl = \"1s\"")
        .extra("[cache.rules.long]\nttl = \"1h\"\n\n[routes.long]\npaths = [\"/long\"]\nupstream = \"app\"\ncache = \"long\"\n")
        .start();
    // (target, X-Cache once the 1 s lifetimes are over, why)
    let cases = [
        (at("none"), "MISS", "no upstream lifetime: the 1 s ttl"),
        (at("max-age-long"), "HIT", "max-age=3600 beats the 1 s ttl"),
        (at("s-maxage-long"), "HIT", "s-maxage=3600 beats max-age=1"),
        (at("expires"), "HIT", "Expires in an hour beats the 1 s ttl"),
        (
            "/long/max-age-short".to_string(),
            "MISS",
            "max-age=1 beats the 1 h ttl",
        ),
        (
            "/long/s-maxage-short".to_string(),
            "MISS",
            "s-maxage=1 beats max-age=3600",
        ),
    ];
    for (t, _, _) in &cases {
        assert_answer(&fetch(&gw, t), 200, "MISS", &version(t, 1));
    }
    let stored = Instant::now();
    wait_age(stored, 1);
    for (t, want, why) in &cases {
        let r = fetch(&gw, t);
        let n = if *want == "MISS" { 2 } else { 1 };
        assert_eq!(
            (r.status, x_cache(&r), r.text()),
            (200, want.to_string(), version(t, n)),
            "{t}: {why}"
        );
        assert_eq!(origin.count(t), n, "{t}: {why}");
    }
}

/// Every status BEHAVIOR.md lists as storable (200, 203, 204, 300, 301, 308, 404, 410) is
/// stored: the second request is a hit with the same status and body.
#[test]
fn every_storable_status_is_stored() {
    let origin = Origin::start(|req, n| {
        let status: u16 = req
            .path()
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        match status {
            204 => Reply::status(204),
            300 | 301 | 308 => {
                Reply::text(status, &version(&req.target, n)).header("Location", "/elsewhere")
            }
            _ => Reply::text(status, &version(&req.target, n)),
        }
    });
    let gw = Conf::new(&origin.url()).start();
    for status in [200u16, 203, 204, 300, 301, 308, 404, 410] {
        let t = at(&status.to_string());
        let body = if status == 204 {
            String::new()
        } else {
            version(&t, 1)
        };
        assert_answer(&fetch(&gw, &t), status, "MISS", &body);
        assert_answer(&fetch(&gw, &t), status, "HIT", &body);
        assert_eq!(origin.count(&t), 1, "{status} is storable");
    }
}

/// A stored answer is sent to each client in that client's framing: an HTTP/1.0 client gets a
/// stored chunked body whole without chunked framing (RFC 9112 §7: a 1.0 recipient cannot
/// decode it) and the connection closes after it; a 1.1 client that sends `Connection: close`
/// gets `Connection: close` and the close.
#[test]
fn a_hit_is_framed_for_the_client_that_asked() {
    let origin =
        Origin::start(|_, _| Reply::status(200).chunked(&[b"hello ", b"stored ", b"world"]));
    let gw = Conf::new(&origin.url()).start();
    let t = at("framed");
    let miss = fetch(&gw, &t);
    assert_eq!((miss.status, x_cache(&miss).as_str()), (200, "MISS"));
    assert_eq!(miss.text(), "hello stored world");

    let mut old = Client::connect(gw.addr());
    let r = old.request(&Req::get(&t).version("HTTP/1.0"));
    assert_answer(&r, 200, "HIT", "hello stored world");
    assert!(
        !r.header_tokens("transfer-encoding")
            .contains(&"chunked".to_string()),
        "chunked framing sent to an HTTP/1.0 client: {:?}",
        r.headers
    );
    old.assert_closed(Duration::from_secs(3));

    let mut closing = Client::connect(gw.addr());
    let r = closing.request(&Req::get(&t).header("Connection", "close"));
    assert_answer(&r, 200, "HIT", "hello stored world");
    assert!(!r.keeps_alive(), "{:?}", r.headers);
    closing.assert_closed(Duration::from_secs(3));
    assert_eq!(origin.total(), 1);
}

/// The upstream's hop-by-hop fields (`Connection: close`, `Keep-Alive`, and a field its
/// `Connection` names) belong to its connection, not to the stored answer: a hit carries none
/// of them and keeps the client's connection open.
#[test]
fn a_hit_does_not_replay_the_upstream_s_hop_by_hop_fields() {
    let origin = Origin::start(|req, n| {
        Reply::text(200, &version(&req.target, n))
            .header("Connection", "close, X-Hop")
            .header("Keep-Alive", "timeout=5")
            .header("X-Hop", "1")
            .header("X-End", "kept")
            .close()
    });
    let gw = Conf::new(&origin.url()).start();
    let t = at("hop");
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, 1));
    let mut c = Client::connect(gw.addr());
    for _ in 0..2 {
        let r = c.request(&Req::get(&t));
        assert_answer(&r, 200, "HIT", &version(&t, 1));
        for name in ["keep-alive", "x-hop"] {
            assert!(!r.has_header(name), "{name} replayed: {:?}", r.headers);
        }
        assert!(r.keeps_alive(), "{:?}", r.headers);
        assert_eq!(r.header("x-end"), Some("kept"), "{:?}", r.headers);
    }
}

/// Bodies just under `max_object`, with a Content-Length or chunked in several pieces, are
/// stored whole and served byte for byte.
#[test]
fn a_large_body_under_max_object_is_stored_and_served_byte_for_byte() {
    const LEN: usize = 60_000;
    let origin = Origin::start(|req, _| {
        let body = big_body(LEN);
        if req.path().ends_with("chunked") {
            let pieces: Vec<&[u8]> = body.chunks(7_000).collect();
            Reply::status(200).chunked(&pieces)
        } else {
            Reply::status(200)
                .body(&body)
                .slow_body(4, Duration::from_millis(5))
        }
    });
    let gw = Conf::new(&origin.url()).start();
    for t in [at("length"), at("chunked")] {
        let miss = fetch(&gw, &t);
        assert_eq!((miss.status, x_cache(&miss).as_str()), (200, "MISS"), "{t}");
        assert!(miss.body == big_body(LEN), "{t}: MISS body");
        let hit = fetch(&gw, &t);
        assert_eq!((hit.status, x_cache(&hit).as_str()), (200, "HIT"), "{t}");
        assert!(
            hit.body == big_body(LEN),
            "{t}: the HIT's body differs ({} bytes)",
            hit.body.len()
        );
        assert_eq!(origin.count(&t), 1, "{t}");
    }
}

/// A conditional request that misses may get the upstream's 304, which is not stored: a later
/// unconditional GET gets the full 200, never a bodiless 304.
#[test]
fn an_upstream_304_is_never_served_to_an_unconditional_request() {
    let origin = Origin::start(|req, n| {
        if req.header("if-none-match") == Some("\"v1\"") {
            return Reply::status(304).header("ETag", "\"v1\"");
        }
        Reply::text(200, &version(&req.target, n)).header("ETag", "\"v1\"")
    });
    let gw = Conf::new(&origin.url()).start();
    let t = at("revalidated");
    let r = send_request(gw.addr(), &Req::get(&t).header("If-None-Match", "\"v1\""));
    assert_eq!(r.status, 304, "{:?}", r.headers);
    for _ in 0..2 {
        let full = fetch(&gw, &t);
        assert_eq!(full.status, 200, "{:?}", full.headers);
        assert!(
            full.text().starts_with(&format!("{t} v")),
            "the full body: {:?}",
            full.text()
        );
    }
}

// ---- not stored, bypassed, refreshed ----

/// Responses that must not be stored are fetched again every time: `Set-Cookie`,
/// `Cache-Control: private`, `no-store` or `no-cache`, `Vary: *`, and statuses outside the
/// storable list (500, 302, 201). Each answer is relayed as a MISS.
#[test]
fn responses_that_must_not_be_stored_are_fetched_every_time() {
    let origin = Origin::start(|req, n| {
        let body = version(&req.target, n);
        match req.path().rsplit('/').next().unwrap_or("") {
            "set-cookie" => Reply::text(200, &body).header("Set-Cookie", "session=s1; Path=/"),
            "private" => Reply::text(200, &body).header("Cache-Control", "private, max-age=60"),
            "no-store" => Reply::text(200, &body).header("Cache-Control", "no-store"),
            "no-cache" => Reply::text(200, &body).header("Cache-Control", "no-cache"),
            "vary-star" => Reply::text(200, &body).header("Vary", "*"),
            "s500" => Reply::text(500, &body),
            "s302" => Reply::text(302, &body).header("Location", "/elsewhere"),
            "s201" => Reply::text(201, &body),
            other => panic!("unexpected path {other}"),
        }
    });
    let gw = Conf::new(&origin.url()).start();
    let cases = [
        ("set-cookie", 200),
        ("private", 200),
        ("no-store", 200),
        ("no-cache", 200),
        ("vary-star", 200),
        ("s500", 500),
        ("s302", 302),
        ("s201", 201),
    ];
    for (name, status) in cases {
        let t = at(name);
        for n in 1..=2 {
            let r = fetch(&gw, &t);
            assert_answer(&r, status, "MISS", &version(&t, n));
        }
        assert_eq!(origin.count(&t), 2, "{name}: must not be stored");
    }
}

/// Only GET and HEAD use the cache: a POST on a cached route bypasses it (`X-Cache: BYPASS`,
/// the upstream reached every time), and its answer is not stored for a later GET.
#[test]
fn post_bypasses_the_cache_and_is_not_stored() {
    let origin = Origin::versions(&[("Cache-Control", "max-age=3600")]);
    let gw = Conf::new(&origin.url()).start();
    let t = at("form");
    for n in 1..=2 {
        let r = send_request(gw.addr(), &Req::post(&t, b"x=1"));
        assert_answer(&r, 200, "BYPASS", &version(&t, n));
    }
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, 3));
    assert_eq!(origin.count(&t), 3);
}

/// A request with `Cache-Control: no-store`, `Authorization` or `Cookie` (the rule is not
/// `per_user`) bypasses the cache: `X-Cache: BYPASS`, the upstream reached each time, the
/// upstream's answer relayed; the stored entry is neither served to it nor replaced by it, and
/// nothing is stored from it.
#[test]
fn no_store_authorization_and_cookie_requests_bypass_the_cache() {
    let origin = Origin::versions(&[]);
    let gw = Conf::new(&origin.url()).start();
    let t = at("shared");
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, 1));
    let mut n = 1;
    for (name, value) in [
        ("Cache-Control", "no-store"),
        ("Authorization", "Bearer some-token"),
        ("Cookie", "session=s1"),
    ] {
        for _ in 0..2 {
            n += 1;
            let r = send_request(gw.addr(), &Req::get(&t).header(name, value));
            assert_answer(&r, 200, "BYPASS", &version(&t, n));
        }
    }
    assert_eq!(origin.count(&t), 7, "every bypass reached the upstream");
    assert_answer(&fetch(&gw, &t), 200, "HIT", &version(&t, 1));

    let fresh = at("never-stored");
    let r = send_request(gw.addr(), &Req::get(&fresh).header("Cookie", "a=b"));
    assert_answer(&r, 200, "BYPASS", &version(&fresh, 1));
    assert_answer(&fetch(&gw, &fresh), 200, "MISS", &version(&fresh, 2));
}

/// A request's `Cache-Control: no-cache` (or `max-age=0`) is not answered from the store: it
/// goes upstream (MISS) and its answer replaces the entry, which later requests then get.
#[test]
fn a_no_cache_request_goes_upstream_and_replaces_the_entry() {
    let origin = Origin::versions(&[]);
    let gw = Conf::new(&origin.url()).start();
    let t = at("refresh");
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, 1));
    assert_answer(&fetch(&gw, &t), 200, "HIT", &version(&t, 1));
    for (n, cc) in [(2, "no-cache"), (3, "max-age=0")] {
        let r = send_request(gw.addr(), &Req::get(&t).header("Cache-Control", cc));
        assert_answer(&r, 200, "MISS", &version(&t, n));
        assert_answer(&fetch(&gw, &t), 200, "HIT", &version(&t, n));
    }
    assert_eq!(origin.count(&t), 3);
}

// ---- the key ----

/// The query, verbatim, is part of the key: each query has its own entry.
#[test]
fn the_query_is_part_of_the_key() {
    let origin = Origin::versions(&[]);
    let gw = Conf::new(&origin.url()).start();
    let p = at("q");
    let targets = [
        p.clone(),
        format!("{p}?a=1"),
        format!("{p}?a=2"),
        format!("{p}?a=1&b=2"),
        format!("{p}?b=2&a=1"),
    ];
    for t in &targets {
        assert_answer(&fetch(&gw, t), 200, "MISS", &version(t, 1));
    }
    for t in &targets {
        assert_answer(&fetch(&gw, t), 200, "HIT", &version(t, 1));
    }
    assert_eq!(origin.total(), targets.len());
}

/// The host is part of the key, without its port and in any letter case.
#[test]
fn the_host_is_part_of_the_key_without_port_or_case() {
    let origin = Origin::start(|req, n| {
        Reply::text(
            200,
            &format!(
                "{} for {}",
                version(&req.target, n),
                req.header("host").unwrap_or("")
            ),
        )
    });
    let gw = Conf::new(&origin.url()).start();
    let t = at("by-host");
    let get = |host: &str| send_request(gw.addr(), &Req::get(&t).host(host));
    let a_body = format!("{} for a.example", version(&t, 1));
    assert_answer(&get("a.example"), 200, "MISS", &a_body);
    assert_answer(&get("A.Example:8080"), 200, "HIT", &a_body);
    assert_answer(&get("a.example:9"), 200, "HIT", &a_body);
    let b = get("b.example");
    assert_eq!(
        (b.status, x_cache(&b).as_str()),
        (200, "MISS"),
        "another host has its own entry"
    );
    assert_eq!(origin.count(&t), 2);
}

/// The rule's `vary` request headers are part of the key: each value (and their absence) has
/// its own entry.
#[test]
fn the_rule_s_vary_headers_are_part_of_the_key() {
    let origin = Origin::start(|req, n| {
        let lang = req.header("accept-language").unwrap_or("none");
        Reply::text(200, &format!("{} {lang}", version(&req.target, n)))
    });
    let gw = Conf::new(&origin.url())
        .rule("vary = [\"accept-language\"]")
        .start();
    let t = at("lang");
    let get = |lang: Option<&str>| {
        let mut req = Req::get(&t);
        if let Some(lang) = lang {
            req = req.header("Accept-Language", lang);
        }
        send_request(gw.addr(), &req)
    };
    assert_answer(
        &get(Some("en")),
        200,
        "MISS",
        &format!("{} en", version(&t, 1)),
    );
    assert_answer(
        &get(Some("fr")),
        200,
        "MISS",
        &format!("{} fr", version(&t, 2)),
    );
    assert_answer(&get(None), 200, "MISS", &format!("{} none", version(&t, 3)));
    assert_answer(
        &get(Some("en")),
        200,
        "HIT",
        &format!("{} en", version(&t, 1)),
    );
    assert_answer(
        &get(Some("fr")),
        200,
        "HIT",
        &format!("{} fr", version(&t, 2)),
    );
    assert_answer(&get(None), 200, "HIT", &format!("{} none", version(&t, 3)));
}

/// The upstream's own `Vary: Accept-Encoding` keeps one variant per value side by side: each
/// request gets the variant made for its value, never another's.
#[test]
fn the_upstream_s_vary_keeps_a_variant_per_value() {
    let origin = Origin::start(|req, n| {
        let enc = req.header("accept-encoding").unwrap_or("none");
        Reply::text(200, &format!("{} {enc}", version(&req.target, n)))
            .header("Vary", "Accept-Encoding")
    });
    let gw = Conf::new(&origin.url()).start();
    let t = at("enc");
    let get = |enc: &str| send_request(gw.addr(), &Req::get(&t).header("Accept-Encoding", enc));
    assert_answer(
        &get("gzip"),
        200,
        "MISS",
        &format!("{} gzip", version(&t, 1)),
    );
    assert_answer(&get("br"), 200, "MISS", &format!("{} br", version(&t, 2)));
    for _ in 0..2 {
        assert_answer(
            &get("gzip"),
            200,
            "HIT",
            &format!("{} gzip", version(&t, 1)),
        );
        assert_answer(&get("br"), 200, "HIT", &format!("{} br", version(&t, 2)));
    }
    let plain = fetch(&gw, &t);
    assert_answer(&plain, 200, "MISS", &format!("{} none", version(&t, 3)));
    assert_eq!(origin.count(&t), 3);
}

/// The key's path is the normalised one (dot segments removed, slashes merged, escapes of
/// unreserved characters decoded): spellings of one path share one entry.
#[test]
fn the_key_uses_the_normalised_path() {
    let origin = Origin::versions(&[]);
    let gw = Conf::new(&origin.url()).start();
    let t = at("norm");
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, 1));
    for spelling in [
        format!("{CATALOG}/./norm"),
        format!("{CATALOG}//norm"),
        format!("{CATALOG}/x/../norm"),
        format!("{CATALOG}/%6Eorm"),
    ] {
        assert_answer(&fetch(&gw, &spelling), 200, "HIT", &version(&t, 1));
    }
    assert_eq!(origin.total(), 1);
}

/// On a route with API-key `auth` whose rule is not `per_user`, a request with a key
/// bypasses the cache (a credential, like `Authorization`: RFC 9111 §3.5), so one consumer's
/// answer is never stored for another; a request without a valid key gets the 401.
#[test]
fn api_key_requests_bypass_a_rule_without_per_user() {
    let dir = TempDir::new();
    let keys = dir.write(
        "keys.toml",
        &format!(
            "[keys.\"{}\"]\nconsumer = \"acme\"\n\n[keys.\"{}\"]\nconsumer = \"globex\"\n",
            auth::sha256_hex(b"acme-key"),
            auth::sha256_hex(b"globex-key")
        ),
    );
    let origin = identity_origin("x-consumer-id");
    let gw = Conf::new(&origin.url())
        .route("auth = \"keys\"")
        .extra(&format!(
            "[auth.keys]\ntype = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"{}\"\nforward = {{ consumer = \"x-consumer-id\" }}\n",
            keys.display()
        ))
        .start();
    let t = at("members");
    let with = |key: Option<&str>| {
        let mut req = Req::get(&t);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        send_request(gw.addr(), &req)
    };
    let mut n = 0;
    for key in ["acme-key", "globex-key", "acme-key"] {
        n += 1;
        let who = key.trim_end_matches("-key");
        let body = format!("{} for {who}", version(&t, n));
        assert_answer(&with(Some(key)), 200, "BYPASS", &body);
    }
    for key in [None, Some("guess")] {
        assert_error(&with(key), 401);
    }
    assert_eq!(origin.total(), 3, "each request with a key went upstream");
}

/// A GET with a body bypasses the cache (its answer may depend on the body): it goes
/// upstream with its body (Content-Length or chunked), even when the key is stored, and the
/// body is never taken for the next request: a request hidden in it never reaches the
/// upstream nor gets an answer.
#[test]
fn a_get_with_a_body_bypasses_and_its_body_is_never_a_request() {
    let origin = Origin::versions(&[]);
    let gw = Conf::new(&origin.url()).start();
    let t = at("bodied");
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, 1));
    let hidden = format!("GET {CATALOG}/smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    for (i, chunked) in [false, true].into_iter().enumerate() {
        let after = at(&format!("after{i}"));
        let req = if chunked {
            Req::get(&t).chunked(&[hidden.as_bytes()])
        } else {
            Req::get(&t).body(hidden.as_bytes())
        };
        let mut c = Client::connect(gw.addr());
        let mut bytes = req.to_bytes();
        bytes.extend(Req::get(&after).to_bytes());
        c.send(&bytes);
        let first = c.read_response();
        assert_answer(&first, 200, "BYPASS", &version(&t, i + 2));
        let sent = origin
            .up
            .requests()
            .into_iter()
            .filter(|r| r.target == t)
            .nth(i + 1)
            .expect("the bodied GET reached the upstream");
        assert_eq!(
            sent.body_text(),
            hidden,
            "chunked {chunked}: the GET went upstream with its body"
        );
        if first.keeps_alive() {
            match c.try_read_response() {
                Ok(next) => assert_eq!(
                    (next.status, next.text()),
                    (200, version(&after, 1)),
                    "chunked {chunked}: the answer after the bodied GET"
                ),
                Err(e) => panic!("chunked {chunked}: kept alive, then {e}"),
            }
        }
    }
    let targets: Vec<String> = origin.up.requests().into_iter().map(|r| r.target).collect();
    assert!(
        !targets.iter().any(|t| t.contains("smuggled")),
        "the body was read as a request: {targets:?}"
    );
    assert_answer(&fetch(&gw, &t), 200, "HIT", &version(&t, 1));
}

/// A reload that lowers `max_bytes_per_worker` shrinks the shard to the new bound (the
/// `dispatch_cache_bytes` gauge falls within it), and the cache keeps within it afterwards.
#[test]
fn a_reload_that_lowers_max_bytes_per_worker_shrinks_the_shard() {
    const LEN: usize = 4000;
    let origin = Origin::start(|_, _| Reply::text(200, &"y".repeat(LEN)));
    let gw = Conf::new(&origin.url()).start();
    let mut c = Client::connect(gw.addr());
    for i in 0..20 {
        let r = c.request(&Req::get(&at(&format!("s{i}"))));
        assert_eq!((r.status, x_cache(&r).as_str()), (200, "MISS"));
    }
    let bytes = || gauge(&scrape(&gw), "dispatch_cache_bytes", 0);
    assert!(
        bytes() >= (20 * LEN) as f64,
        "20 entries stored: {}",
        bytes()
    );
    reload_with(
        &gw,
        "max_bytes_per_worker = \"4MiB\"\nmax_object = \"64KiB\"",
        "max_bytes_per_worker = \"16KiB\"\nmax_object = \"8KiB\"",
    );
    let mut now = 0.0;
    let shrunk = wait_until(Duration::from_secs(3), || {
        // A request served under the new config, then the gauge.
        c.request(&Req::get(&at("s19")));
        now = bytes();
        now <= 16384.0
    });
    assert!(
        shrunk,
        "dispatch_cache_bytes {now} after lowering the bound to 16 KiB"
    );
    for i in 20..40 {
        let r = c.request(&Req::get(&at(&format!("s{i}"))));
        assert_eq!(r.status, 200);
        let b = bytes();
        assert!(b <= 16384.0, "dispatch_cache_bytes {b} > 16 KiB");
    }
}

// ---- conditional requests ----

/// A conditional GET the stored 2xx satisfies is answered 304 from the cache (`X-Cache: HIT`,
/// no body, the `ETag`): `If-None-Match` with the stored tag (weak comparison), or, without
/// it, `If-Modified-Since` not earlier than `Last-Modified`. A condition it does not satisfy
/// gets the stored 200. The upstream is reached once.
#[test]
fn a_conditional_request_the_entry_satisfies_is_answered_304_from_the_cache() {
    let modified = unix_now() - 86_400;
    let last_modified = http_date(modified);
    let lm = last_modified.clone();
    let origin = Origin::start(move |req, n| {
        Reply::text(200, &version(&req.target, n))
            .header("ETag", "\"v1\"")
            .header("Last-Modified", &lm)
    });
    let gw = Conf::new(&origin.url()).start();
    let t = at("cond");
    let body = version(&t, 1);
    assert_answer(&fetch(&gw, &t), 200, "MISS", &body);

    let mut c = Client::connect(gw.addr());
    let not_modified = |c: &mut Client, name: &str, value: &str| {
        let r = c.request(&Req::get(&t).header(name, value));
        assert_eq!(
            (r.status, x_cache(&r).as_str(), r.body.len()),
            (304, "HIT", 0),
            "{name}: {value}: {:?}",
            r.headers
        );
        assert_eq!(r.header("etag"), Some("\"v1\""), "a 304 carries the ETag");
        age(&r);
    };
    let full = |c: &mut Client, name: &str, value: &str| {
        let r = c.request(&Req::get(&t).header(name, value));
        assert_answer(&r, 200, "HIT", &body);
    };
    not_modified(&mut c, "If-None-Match", "\"v1\"");
    not_modified(&mut c, "If-None-Match", "\"other\", W/\"v1\"");
    full(&mut c, "If-None-Match", "\"other\"");
    not_modified(&mut c, "If-Modified-Since", &last_modified);
    not_modified(&mut c, "If-Modified-Since", &http_date(modified + 60));
    full(&mut c, "If-Modified-Since", &http_date(modified - 3600));
    // The 304s left nothing on the connection: a plain GET still reads cleanly.
    assert_answer(&c.request(&Req::get(&t)), 200, "HIT", &body);
    assert_eq!(origin.total(), 1);
}

// ---- coalescing ----

/// A large body in two halves, so a reply can pause after the first.
fn big_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"abcdefghij"[i % 10]).collect()
}

/// 20 concurrent misses for one key on one worker make one upstream request: the upstream
/// holds its answer until the 20 requests have reached the gateway, and all 20 get the same
/// 200 (one MISS, 19 HITs from the entry it stored).
#[test]
fn concurrent_misses_for_one_key_make_one_upstream_request() {
    let hold = Gate::new();
    let h = hold.clone();
    let origin = Origin::start(move |req, n| {
        if n == 1 {
            h.wait(Duration::from_secs(10));
        }
        Reply::text(200, &version(&req.target, n))
    });
    let gw = Conf::new(&origin.url()).start();
    let t = at("hot");
    let shots = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(
                wait_until(Duration::from_secs(5), || origin.total() >= 1),
                "the first miss never reached the upstream"
            );
            // Let the other requests (written at the same instant) reach the gateway.
            pause(300);
            hold.open();
        });
        burst(gw.addr(), 20, "co", |_| Req::get(&t))
    });
    let mut caches: Vec<String> = shots.iter().map(|s| x_cache(&s.resp)).collect();
    caches.sort();
    let mut want = vec!["HIT".to_string(); 19];
    want.push("MISS".to_string());
    want.sort();
    for s in &shots {
        assert_eq!(
            (s.resp.status, s.resp.text()),
            (200, version(&t, 1)),
            "{}",
            s.id
        );
    }
    assert_eq!(
        caches, want,
        "one MISS went upstream, the rest were its HITs"
    );
    assert_eq!(origin.count(&t), 1, "exactly one upstream request");
}

/// Coalesced misses whose leader's answer turns out too large to store (its Content-Length, or
/// its chunked body so far, over `max_object`) are released at once: each goes upstream
/// itself while the leader's body is still arriving, every client gets the whole body, and
/// nothing is stored.
fn waiters_are_released_by_an_answer_too_large_to_store(chunked: bool) {
    const LEN: usize = 4096;
    let hold = Gate::new();
    let rest = Gate::new();
    let (h, r) = (hold.clone(), rest.clone());
    let reply = move |gated: bool| {
        let body = big_body(LEN);
        let reply = if chunked {
            Reply::status(200).chunked(&[&body[..LEN / 2], &body[LEN / 2..]])
        } else {
            Reply::status(200).body(&body).slow_body(2, Duration::ZERO)
        };
        if gated {
            reply.gate(&r)
        } else {
            reply
        }
    };
    let origin = Origin::start(move |_, n| {
        if n == 1 {
            // The leader: held before its head, then paused after its first half.
            h.wait(Duration::from_secs(10));
            return reply(true);
        }
        reply(false)
    });
    let gw = Conf::new(&origin.url())
        .cache("max_bytes_per_worker = \"4MiB\"\nmax_object = \"1KiB\"")
        .upstream("read_timeout = \"10s\"")
        .start();
    let t = at("big");
    let shots = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(
                wait_until(Duration::from_secs(5), || origin.total() >= 1),
                "the first miss never reached the upstream"
            );
            pause(300);
            hold.open();
            let released = wait_until(Duration::from_secs(3), || origin.total() >= 20);
            // Let the leader finish whatever happened, so the burst ends.
            rest.open();
            assert!(
                released,
                "the waiters were not released while the leader's oversized body was arriving: {} upstream requests",
                origin.total()
            );
        });
        burst(gw.addr(), 20, "big", |_| Req::get(&t))
    });
    for s in &shots {
        assert_eq!(s.resp.status, 200, "{}", s.id);
        assert_eq!(x_cache(&s.resp), "MISS", "{}: nothing was stored", s.id);
        assert!(
            s.resp.body == big_body(LEN),
            "{}: the whole body ({} bytes)",
            s.id,
            s.resp.body.len()
        );
    }
    assert_eq!(origin.count(&t), 20, "every request went upstream");
    let next = fetch(&gw, &t);
    assert_eq!((next.status, x_cache(&next).as_str()), (200, "MISS"));
    assert_eq!(next.body, big_body(LEN));
}

#[test]
fn a_content_length_over_max_object_releases_the_waiters_at_once() {
    waiters_are_released_by_an_answer_too_large_to_store(false);
}

#[test]
fn a_chunked_body_growing_over_max_object_releases_the_waiters_at_once() {
    waiters_are_released_by_an_answer_too_large_to_store(true);
}

/// A coalesced miss waits for the leader at most the route's `timeout`; then it goes upstream
/// itself (MISS, its own answer) instead of waiting for a leader whose body is still trickling
/// (or is answered by what another such waiter just stored).
#[test]
fn a_waiter_goes_upstream_itself_after_the_route_timeout() {
    let origin = Origin::start(|req, n| {
        let r = Reply::text(200, &version(&req.target, n));
        if n == 1 {
            // Bytes every 100 ms (within the 500 ms read timeout) for about 1.5 s.
            r.slow_body(16, Duration::from_millis(100))
        } else {
            r
        }
    });
    let gw = Conf::new(&origin.url())
        .route("timeout = \"500ms\"")
        .start();
    let t = at("trickle");
    let mut leader = Client::connect(gw.addr());
    leader.send(&Req::get(&t).to_bytes());
    assert!(wait_until(Duration::from_secs(5), || origin.total() >= 1));
    let shots = burst(gw.addr(), 5, "wait", |_| Req::get(&t));
    // Each waiter, once its wait is over, goes upstream itself (MISS), or finds what a waiter
    // whose wait ended a moment earlier stored (HIT: on a loaded machine their timers fire
    // apart); none waits for the leader's answer.
    let mut misses = 0;
    for s in &shots {
        let cache = x_cache(&s.resp);
        assert!(
            s.resp.status == 200 && (cache == "MISS" || cache == "HIT"),
            "{}: {} {cache}",
            s.id,
            s.resp.status
        );
        assert_ne!(
            s.resp.text(),
            version(&t, 1),
            "{}: a waiter got the leader's answer: it waited past the route timeout",
            s.id
        );
        misses += usize::from(cache == "MISS");
    }
    assert!(misses >= 1, "no waiter went upstream itself");
    leader.set_timeout(Duration::from_secs(5));
    let r = leader.read_response();
    assert_answer(&r, 200, "MISS", &version(&t, 1));
    assert_eq!(origin.count(&t), 1 + misses, "the leader and each MISS");
}

/// Coalesced misses whose leader's answer may not be stored (a 500) are released when it
/// arrives: each goes upstream itself and gets its own answer (MISS), none gets the 500.
#[test]
fn waiters_of_an_answer_that_may_not_be_stored_go_upstream_themselves() {
    let hold = Gate::new();
    let h = hold.clone();
    let origin = Origin::start(move |req, n| {
        if n == 1 {
            h.wait(Duration::from_secs(10));
            return Reply::text(500, "boom");
        }
        Reply::text(200, &version(&req.target, n))
    });
    let gw = Conf::new(&origin.url())
        .upstream("read_timeout = \"10s\"")
        .start();
    let t = at("err");
    let start = Instant::now();
    let shots = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(wait_until(Duration::from_secs(5), || origin.total() >= 1));
            pause(300);
            hold.open();
        });
        burst(gw.addr(), 8, "err", |_| Req::get(&t))
    });
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the waiters waited {:?}: not released when the 500 arrived",
        start.elapsed()
    );
    let errors: Vec<&str> = shots
        .iter()
        .filter(|s| s.resp.status == 500)
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(errors.len(), 1, "only the leader gets its 500: {errors:?}");
    for s in shots.iter().filter(|s| s.resp.status != 500) {
        assert_eq!(
            (s.resp.status, x_cache(&s.resp).as_str()),
            (200, "MISS"),
            "{}",
            s.id
        );
    }
    assert_eq!(origin.count(&t), 8);
}

/// A leader whose client leaves while its miss is upstream does not strand the requests
/// coalesced on it: they are answered (from the entry the fetch stored, or by going upstream
/// themselves) long before the read timeout.
#[test]
fn waiters_are_answered_when_the_leader_s_client_leaves() {
    let hold = Gate::new();
    let h = hold.clone();
    let origin = Origin::start(move |req, n| {
        if n == 1 {
            h.wait(Duration::from_secs(10));
        }
        Reply::text(200, &version(&req.target, n))
    });
    let gw = Conf::new(&origin.url())
        .upstream("read_timeout = \"10s\"")
        .start();
    let t = at("orphan");
    let mut leader = Client::connect(gw.addr());
    leader.send(&Req::get(&t).to_bytes());
    assert!(wait_until(Duration::from_secs(5), || origin.total() >= 1));
    let start = Instant::now();
    let shots = std::thread::scope(|s| {
        s.spawn(|| {
            pause(300);
            drop(leader);
            pause(300);
            hold.open();
        });
        burst(gw.addr(), 5, "orphan", |_| Req::get(&t))
    });
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the waiters took {:?} (read timeout 10 s)",
        start.elapsed()
    );
    for s in &shots {
        assert_eq!(s.resp.status, 200, "{} {}", s.id, s.resp.text());
        assert!(s.resp.text().starts_with(&t), "{}: {}", s.id, s.resp.text());
    }
}

/// A HEAD that arrives while a GET for its key is upstream is answered as a HEAD: the GET's
/// status and Content-Length, no body bytes (the next answer on its connection reads cleanly).
#[test]
fn a_head_during_a_get_fill_is_answered_without_a_body() {
    let hold = Gate::new();
    let h = hold.clone();
    let origin = Origin::start(move |req, n| {
        if n == 1 {
            h.wait(Duration::from_secs(10));
        }
        Reply::text(200, &version(&req.target, n))
    });
    let gw = Conf::new(&origin.url()).start();
    let t = at("head-fill");
    let body = version(&t, 1);
    let mut leader = Client::connect(gw.addr());
    leader.send(&Req::get(&t).to_bytes());
    assert!(wait_until(Duration::from_secs(5), || origin.total() >= 1));
    let mut c = Client::connect(gw.addr());
    c.send(&Req::head(&t).to_bytes());
    pause(300);
    hold.open();
    let head = c.read_response_for("HEAD");
    assert_eq!(head.status, 200, "{:?}", head.headers);
    let cache = x_cache(&head);
    assert!(cache == "HIT" || cache == "MISS", "{cache}");
    if cache == "HIT" {
        assert_eq!(
            head.header("content-length"),
            Some(body.len().to_string().as_str()),
            "{:?}",
            head.headers
        );
    }
    assert_answer(&leader.read_response(), 200, "MISS", &body);
    assert_answer(&c.request(&Req::get(&t)), 200, "HIT", &body);
}

/// A fetch that began before a purge is not served after it: the purge answered while the
/// miss was upstream, so the entry that miss stores belongs to the purged generation (the data
/// may predate whatever the purge was for), and the next request is a MISS.
#[test]
fn a_fill_begun_before_a_purge_is_not_served_after_it() {
    let hold = Gate::new();
    let h = hold.clone();
    let origin = Origin::start(move |req, n| {
        if n == 1 {
            h.wait(Duration::from_secs(10));
        }
        Reply::text(200, &version(&req.target, n))
    });
    let gw = Conf::new(&origin.url()).start();
    let t = at("raced");
    let mut leader = Client::connect(gw.addr());
    leader.send(&Req::get(&t).to_bytes());
    assert!(wait_until(Duration::from_secs(5), || origin.total() >= 1));
    let r = purge(&gw, "");
    assert_eq!(r.status, 200, "{}", r.text());
    hold.open();
    assert_answer(&leader.read_response(), 200, "MISS", &version(&t, 1));
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, 2));
    assert_answer(&fetch(&gw, &t), 200, "HIT", &version(&t, 2));
}

/// Concurrent misses for a URL whose answers turn out to vary (the upstream's `Vary:
/// Accept-Encoding`, unknown until the first answer arrives) each get the variant for their
/// own value: a request waiting on another value's fetch is not answered with that variant.
#[test]
fn coalesced_requests_get_their_own_variant_of_an_upstream_vary() {
    let hold = Gate::new();
    let h = hold.clone();
    let origin = Origin::start(move |req, n| {
        if n == 1 {
            h.wait(Duration::from_secs(10));
        }
        let enc = req.header("accept-encoding").unwrap_or("none");
        Reply::text(200, &format!("{} {enc}", version(&req.target, n)))
            .header("Vary", "Accept-Encoding")
    });
    let gw = Conf::new(&origin.url()).start();
    let t = at("co-enc");
    let ask = |enc: &str| Req::get(&t).header("Accept-Encoding", enc);
    let mut gzip = Client::connect(gw.addr());
    gzip.send(&ask("gzip").to_bytes());
    assert!(wait_until(Duration::from_secs(5), || origin.total() >= 1));
    let mut br = Client::connect(gw.addr());
    br.send(&ask("br").to_bytes());
    pause(300);
    hold.open();
    assert_answer(
        &gzip.read_response(),
        200,
        "MISS",
        &format!("{} gzip", version(&t, 1)),
    );
    let r = br.read_response();
    assert_eq!(r.status, 200);
    assert!(
        r.text().ends_with(" br"),
        "the br request got another variant: {:?} (X-Cache {})",
        r.text(),
        x_cache(&r)
    );
    assert_answer(
        &send_request(gw.addr(), &ask("gzip")),
        200,
        "HIT",
        &format!("{} gzip", version(&t, 1)),
    );
    let again = send_request(gw.addr(), &ask("br"));
    assert_eq!(
        (again.status, x_cache(&again).as_str(), again.text()),
        (200, "HIT", r.text())
    );
}

// ---- stale-while-revalidate ----

/// Within `stale_while_revalidate` after the lifetime, requests are answered STALE at once
/// (the old body, an `Age`) while exactly one refresh goes upstream, in the background (the
/// client that started it is long gone, the upstream holds it); afterwards they are HITs with
/// the refreshed body.
#[test]
fn stale_while_revalidate_answers_stale_at_once_and_refreshes_once() {
    let hold = Gate::new();
    let h = hold.clone();
    let origin = Origin::start(move |req, n| {
        if n == 1 {
            return Reply::text(200, &version(&req.target, n)).header("Cache-Control", "max-age=1");
        }
        if n == 2 {
            h.wait(Duration::from_secs(10));
        }
        Reply::text(200, &version(&req.target, n)).header("Cache-Control", "max-age=3600")
    });
    let gw = Conf::new(&origin.url())
        .rule("stale_while_revalidate = \"60s\"")
        .start();
    let t = at("swr");
    let old = version(&t, 1);
    assert_answer(&fetch(&gw, &t), 200, "MISS", &old);
    wait_age(Instant::now(), 1);

    let first = fetch(&gw, &t);
    assert_answer(&first, 200, "STALE", &old);
    assert!(age(&first) >= 1, "a stale entry's Age: {}", age(&first));
    assert!(
        wait_until(Duration::from_secs(3), || origin.count(&t) == 2),
        "no refresh reached the upstream"
    );
    // The refresh is held upstream: these are answered from the stale entry meanwhile.
    for _ in 0..5 {
        assert_answer(&fetch(&gw, &t), 200, "STALE", &old);
    }
    assert_eq!(origin.count(&t), 2, "one refresh, not one per stale answer");
    hold.open();

    let r = until_refreshed(&gw, &t, &[], &old);
    assert_answer(&r, 200, "HIT", &version(&t, 2));
    assert_eq!(
        origin.count(&t),
        2,
        "the refresh was the only other request"
    );
}

/// Polls `GET target` (with `headers`) until it is no longer STALE (at most 3 s); every STALE
/// answer meanwhile must be `stale_body`. Returns the first answer that is not STALE.
fn until_refreshed(
    gw: &Gateway,
    target: &str,
    headers: &[(&str, &str)],
    stale_body: &str,
) -> Response {
    let mut last = None;
    let refreshed = wait_until(Duration::from_secs(3), || {
        let mut req = Req::get(target);
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let r = send_request(gw.addr(), &req);
        let done = x_cache(&r) != "STALE";
        if !done {
            assert_answer(&r, 200, "STALE", stale_body);
        }
        last = Some(r);
        done
    });
    assert!(refreshed, "{target} {headers:?}: still STALE after 3 s");
    last.expect("an answer")
}

/// The background refresh of a variant asks for that variant: it carries the request's
/// values of the rule's `vary` fields, and its answer replaces that variant only.
#[test]
fn a_refresh_asks_for_the_same_variant() {
    let origin = Origin::start(|req, n| {
        let lang = req.header("accept-language").unwrap_or("none");
        let cc = if n <= 2 { "max-age=1" } else { "max-age=3600" };
        Reply::text(200, &format!("{} {lang}", version(&req.target, n))).header("Cache-Control", cc)
    });
    let gw = Conf::new(&origin.url())
        .rule("vary = [\"accept-language\"]\nstale_while_revalidate = \"60s\"")
        .start();
    let t = at("lang-swr");
    let lang = |l: &'static str| [("Accept-Language", l)];
    let get = |l: &'static str| send_request(gw.addr(), &Req::get(&t).header("Accept-Language", l));
    let (en1, fr2) = (
        format!("{} en", version(&t, 1)),
        format!("{} fr", version(&t, 2)),
    );
    assert_answer(&get("en"), 200, "MISS", &en1);
    assert_answer(&get("fr"), 200, "MISS", &fr2);
    wait_age(Instant::now(), 1);

    assert_answer(&get("en"), 200, "STALE", &en1);
    let r = until_refreshed(&gw, &t, &lang("en"), &en1);
    assert_answer(&r, 200, "HIT", &format!("{} en", version(&t, 3)));
    let refresh = &origin.up.requests()[2];
    assert_eq!(
        refresh.header("accept-language"),
        Some("en"),
        "the refresh of the en variant"
    );

    assert_answer(&get("fr"), 200, "STALE", &fr2);
    let r = until_refreshed(&gw, &t, &lang("fr"), &fr2);
    assert_answer(&r, 200, "HIT", &format!("{} fr", version(&t, 4)));
    assert_answer(&get("en"), 200, "HIT", &format!("{} en", version(&t, 3)));
}

/// With `per_user`, the background refresh of a user's entry is made as that user (the
/// forwarded identity the upstream answers for), so it never stores another user's or an
/// anonymous answer under that user's key.
#[test]
fn a_per_user_refresh_is_made_for_the_same_user() {
    let dir = TempDir::new();
    let keys = dir.write(
        "keys.toml",
        &format!(
            "[keys.\"{}\"]\nconsumer = \"acme\"\n\n[keys.\"{}\"]\nconsumer = \"globex\"\n",
            auth::sha256_hex(b"acme-key"),
            auth::sha256_hex(b"globex-key")
        ),
    );
    let origin = Origin::start(|req, n| {
        let who = req.header("x-consumer-id").unwrap_or("-");
        let cc = if n <= 2 { "max-age=1" } else { "max-age=3600" };
        Reply::text(200, &format!("{} for {who}", version(&req.target, n)))
            .header("Cache-Control", cc)
    });
    let gw = Conf::new(&origin.url())
        .rule("per_user = true\nstale_while_revalidate = \"60s\"")
        .route("auth = \"keys\"")
        .extra(&format!(
            "[auth.keys]\ntype = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"{}\"\nforward = {{ consumer = \"x-consumer-id\" }}\n",
            keys.display()
        ))
        .start();
    let t = at("mine-swr");
    let as_ = |key: &str| send_request(gw.addr(), &Req::get(&t).header("x-api-key", key));
    let acme1 = format!("{} for acme", version(&t, 1));
    let globex2 = format!("{} for globex", version(&t, 2));
    assert_answer(&as_("acme-key"), 200, "MISS", &acme1);
    assert_answer(&as_("globex-key"), 200, "MISS", &globex2);
    wait_age(Instant::now(), 1);

    assert_answer(&as_("acme-key"), 200, "STALE", &acme1);
    let r = until_refreshed(&gw, &t, &[("x-api-key", "acme-key")], &acme1);
    assert_answer(&r, 200, "HIT", &format!("{} for acme", version(&t, 3)));
    assert_answer(&as_("globex-key"), 200, "STALE", &globex2);
    let r = until_refreshed(&gw, &t, &[("x-api-key", "globex-key")], &globex2);
    assert_answer(&r, 200, "HIT", &format!("{} for globex", version(&t, 4)));
}

/// A HEAD that finds an entry stale within `stale_while_revalidate` is answered STALE (no
/// body) and refreshes the entry with a GET, whose body the next GET gets.
#[test]
fn a_head_on_a_stale_entry_refreshes_it_with_a_get() {
    let origin = Origin::start(|req, n| {
        let cc = if n == 1 { "max-age=1" } else { "max-age=3600" };
        Reply::text(200, &version(&req.target, n)).header("Cache-Control", cc)
    });
    let gw = Conf::new(&origin.url())
        .rule("stale_while_revalidate = \"60s\"")
        .start();
    let t = at("head-swr");
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, 1));
    wait_age(Instant::now(), 1);
    let mut c = Client::connect(gw.addr());
    let head = c.request(&Req::head(&t));
    assert_eq!((head.status, x_cache(&head).as_str()), (200, "STALE"));
    assert!(
        wait_until(Duration::from_secs(3), || origin.total() == 2),
        "no refresh"
    );
    assert_eq!(
        origin.up.last_request().method,
        "GET",
        "a refresh fetches the body"
    );
    let r = until_refreshed(&gw, &t, &[], &version(&t, 1));
    assert_answer(&r, 200, "HIT", &version(&t, 2));
}

// ---- stale-if-error ----

/// An upstream that answers `Origin::versions`-style bodies with `Cache-Control` by the last
/// path segment (`sie1`: `max-age=1, stale-if-error=1`; `fail`: a 500; anything else:
/// `max-age=1`), or, once `status` is not 200, that status with the body "down".
fn failing_origin(status: &Arc<AtomicU16>) -> Origin {
    let status = Arc::clone(status);
    Origin::start(move |req, n| {
        let now = status.load(Ordering::SeqCst);
        if now != 200 {
            return Reply::text(now, "down");
        }
        match req.path().rsplit('/').next().unwrap_or("") {
            "sie1" => Reply::text(200, &version(&req.target, n))
                .header("Cache-Control", "max-age=1, stale-if-error=1"),
            "fail" => Reply::text(500, "boom"),
            "fresh" => Reply::text(200, &version(&req.target, n)),
            "missing" => {
                Reply::text(404, &version(&req.target, n)).header("Cache-Control", "max-age=1")
            }
            _ => Reply::text(200, &version(&req.target, n)).header("Cache-Control", "max-age=1"),
        }
    })
}

/// Upstream refused: within `stale_if_error` the stale entry is served (STALE, its status and
/// body, an `Age`); past the window (the response's own `stale-if-error=1`) the 502, as for a
/// key never stored.
#[test]
fn stale_if_error_serves_the_stale_entry_when_the_upstream_refuses() {
    let status = Arc::new(AtomicU16::new(200));
    let origin = failing_origin(&status);
    let gw = Conf::new(&origin.url())
        .rule("stale_if_error = \"60s\"")
        .upstream("connect_timeout = \"300ms\"")
        .start();
    let (a, b) = (at("a"), at("sie1"));
    assert_answer(&fetch(&gw, &a), 200, "MISS", &version(&a, 1));
    assert_answer(&fetch(&gw, &b), 200, "MISS", &version(&b, 1));
    let stored = Instant::now();
    drop(origin);

    wait_age(stored, 1);
    let r = fetch(&gw, &a);
    assert_answer(&r, 200, "STALE", &version(&a, 1));
    assert!(age(&r) >= 1, "Age {}", age(&r));
    let never = fetch(&gw, &at("never"));
    assert_error(&never, 502);
    assert_eq!(x_cache(&never), "MISS");

    wait_age(stored, 2);
    let past = fetch(&gw, &b);
    assert_error(&past, 502);
    assert_eq!(x_cache(&past), "MISS", "past its stale-if-error window");
    assert_answer(&fetch(&gw, &a), 200, "STALE", &version(&a, 1));
}

/// Upstream answering 503: within `stale_if_error` the stale entry is served instead (STALE,
/// with the stored status, a 404 too; the upstream was asked); past the window the upstream's
/// 503 is relayed.
#[test]
fn stale_if_error_serves_the_stale_entry_on_a_5xx_answer() {
    let status = Arc::new(AtomicU16::new(200));
    let origin = failing_origin(&status);
    let gw = Conf::new(&origin.url())
        .rule("stale_if_error = \"60s\"")
        .start();
    let (a, b, missing) = (at("a"), at("sie1"), at("missing"));
    assert_answer(&fetch(&gw, &a), 200, "MISS", &version(&a, 1));
    assert_answer(&fetch(&gw, &b), 200, "MISS", &version(&b, 1));
    assert_answer(&fetch(&gw, &missing), 404, "MISS", &version(&missing, 1));
    let stored = Instant::now();
    status.store(503, Ordering::SeqCst);

    wait_age(stored, 1);
    let r = fetch(&gw, &a);
    assert_answer(&r, 200, "STALE", &version(&a, 1));
    assert!(age(&r) >= 1);
    assert_eq!(
        origin.count(&a),
        2,
        "the upstream was asked and answered 503"
    );
    // The stale entry's own status, not a 200.
    assert_answer(&fetch(&gw, &missing), 404, "STALE", &version(&missing, 1));

    wait_age(stored, 2);
    assert_answer(&fetch(&gw, &b), 503, "MISS", "down");
}

/// With the upstream's breaker open, a stale entry within `stale_if_error` is served (STALE)
/// and a fresh one is a HIT; neither reaches the upstream. A key never stored gets the
/// breaker's 503.
#[test]
fn an_open_breaker_serves_stale_and_fresh_entries_without_reaching_the_upstream() {
    let status = Arc::new(AtomicU16::new(200));
    let origin = failing_origin(&status);
    let gw = Conf::new(&origin.url())
        .rule("stale_if_error = \"60s\"")
        .extra("[upstreams.app.breaker]\nfailure_threshold = 1\nrecovery_timeout = \"30s\"\n")
        .start();
    let (stale, fresh) = (at("a"), at("fresh"));
    assert_answer(&fetch(&gw, &stale), 200, "MISS", &version(&stale, 1));
    assert_answer(&fetch(&gw, &fresh), 200, "MISS", &version(&fresh, 1));
    let stored = Instant::now();
    wait_age(stored, 1);

    // One failure opens the breaker.
    let fail = fetch(&gw, &at("fail"));
    assert_eq!((fail.status, x_cache(&fail).as_str()), (500, "MISS"));
    assert_error_retry_after(&get(gw.addr(), "/plain/x"), 503);
    let before = origin.total();

    assert_answer(&fetch(&gw, &stale), 200, "STALE", &version(&stale, 1));
    assert_answer(&fetch(&gw, &fresh), 200, "HIT", &version(&fresh, 1));
    let never = fetch(&gw, &at("never"));
    assert_error_retry_after(&never, 503);
    assert_eq!(origin.total(), before, "nothing reached the upstream");
}

/// `stale_if_error` also covers a connection reset by the upstream and a read timeout: the
/// stale entry is served (STALE, its body) instead of the 502 or 504.
#[test]
fn stale_if_error_covers_a_reset_and_a_read_timeout() {
    let failing = Arc::new(AtomicU16::new(0));
    let f = Arc::clone(&failing);
    let origin = Origin::start(move |req, n| {
        if f.load(Ordering::SeqCst) == 1 {
            if req.path().ends_with("reset") {
                return Reply::reset();
            }
            return Reply::text(200, "late").delay(Duration::from_secs(2));
        }
        Reply::text(200, &version(&req.target, n)).header("Cache-Control", "max-age=1")
    });
    let gw = Conf::new(&origin.url())
        .rule("stale_if_error = \"60s\"")
        .upstream("read_timeout = \"300ms\"")
        .start();
    let (reset, slow) = (at("reset"), at("slow"));
    assert_answer(&fetch(&gw, &reset), 200, "MISS", &version(&reset, 1));
    assert_answer(&fetch(&gw, &slow), 200, "MISS", &version(&slow, 1));
    wait_age(Instant::now(), 1);
    failing.store(1, Ordering::SeqCst);
    assert_answer(&fetch(&gw, &reset), 200, "STALE", &version(&reset, 1));
    assert_answer(&fetch(&gw, &slow), 200, "STALE", &version(&slow, 1));
    assert!(
        origin.count(&reset) >= 2 && origin.count(&slow) == 2,
        "both were tried upstream"
    );
}

// ---- purge ----

/// `DELETE /cache?rule=NAME` purges that rule on every worker before it answers: on each
/// worker the next request is a MISS; another rule's entries stay. `DELETE /cache` purges
/// every rule (and the entry and byte gauges drop to 0 within a moment); an unknown rule is a
/// 404 and purges nothing.
#[test]
fn admin_purge_empties_a_rule_or_every_rule_on_every_worker() {
    let origin = Origin::versions(&[]);
    let gw = Conf::new(&origin.url())
        .workers(2)
        .extra("[cache.rules.other]\nttl = \"1h\"\n\n[routes.other]\npaths = [\"/other\"]\nupstream = \"app\"\ncache = \"other\"\n")
        .start();
    let (t, o) = (at("p"), "/other/p".to_string());
    let spread_on = |tag: &str, target: &str| spread(&gw, 16, tag, |_| Req::get(target));
    assert_first_miss_on_each_worker(&spread_on("fill", &t), "filling");
    assert_first_miss_on_each_worker(&spread_on("fill-o", &o), "filling the other rule");
    assert_eq!((origin.count(&t), origin.count(&o)), (2, 2));

    assert_admin_error(&purge(&gw, "?rule=nope"), 404);
    assert_eq!(
        x_cache(&fetch(&gw, &t)),
        "HIT",
        "an unknown rule purges nothing"
    );
    let r = purge(&gw, &format!("?rule={RULE}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"purged": [RULE]}));
    assert_first_miss_on_each_worker(&spread_on("after-rule", &t), "after purging the rule");
    let other = spread_on("other-kept", &o);
    assert!(
        by_worker(&other)
            .values()
            .all(|c| c.iter().all(|x| x == "HIT")),
        "another rule's entries survive: {:?}",
        by_worker(&other)
    );
    assert_eq!((origin.count(&t), origin.count(&o)), (4, 2));

    let r = purge(&gw, "");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut purged: Vec<String> = r.json()["purged"]
        .as_array()
        .unwrap_or_else(|| panic!("purged is not a list: {}", r.text()))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    purged.sort();
    assert_eq!(purged, [RULE, "other"]);
    // The purge is in effect at once (below); the memory of the purged entries is given back,
    // and the gauges drop to 0, within a moment.
    let mut text = String::new();
    let emptied = wait_until(Duration::from_secs(3), || {
        text = scrape(&gw);
        (0..2).all(|w| {
            gauge(&text, "dispatch_cache_entries", w) == 0.0
                && gauge(&text, "dispatch_cache_bytes", w) == 0.0
        })
    });
    assert!(emptied, "the gauges after purging everything:\n{text}");
    assert_first_miss_on_each_worker(&spread_on("after-all", &t), "after purging all");
    assert_first_miss_on_each_worker(&spread_on("after-all-o", &o), "after purging all");
    assert_eq!((origin.count(&t), origin.count(&o)), (6, 4));
}

/// An upstream for the invalidation tests: GETs are numbered versions; any other method is
/// answered with the current `status`.
fn writes_origin(status: &Arc<AtomicU16>) -> Origin {
    let status = Arc::clone(status);
    Origin::start(move |req, n| {
        if req.method == "GET" {
            Reply::text(200, &version(&req.target, n))
        } else {
            Reply::text(status.load(Ordering::SeqCst), "written")
        }
    })
}

/// `invalidate_on`: a matching request on another route whose upstream answer is 2xx purges
/// the rule on every worker (the next request on each is a MISS); one answered 4xx or 5xx
/// purges nothing.
#[test]
fn a_successful_invalidating_request_purges_the_rule_on_every_worker() {
    let status = Arc::new(AtomicU16::new(200));
    let origin = writes_origin(&status);
    let gw = Conf::new(&origin.url())
        .workers(2)
        .rule("invalidate_on = [\"POST /api/v1/categories\"]")
        .extra("[routes.writes]\npaths = [\"/api/v1/categories\"]\nupstream = \"app\"\n")
        .start();
    let t = at("list");
    let round = |tag: &str| spread(&gw, 16, tag, |_| Req::get(&t));
    assert_first_miss_on_each_worker(&round("fill"), "filling");
    for (code, tag) in [(400, "after-400"), (500, "after-500")] {
        status.store(code, Ordering::SeqCst);
        let r = send_request(gw.addr(), &Req::post("/api/v1/categories", b"{}"));
        assert_eq!(r.status, code);
        let served = round(tag);
        let seen = by_worker(&served);
        assert!(
            seen.len() == 2 && seen.values().all(|c| c.iter().all(|x| x == "HIT")),
            "a {code} answer must not purge: {seen:?}"
        );
    }
    status.store(201, Ordering::SeqCst);
    let r = send_request(gw.addr(), &Req::post("/api/v1/categories", b"{}"));
    assert_eq!(r.status, 201);
    assert_first_miss_on_each_worker(&round("after-201"), "after a 201");
    assert_eq!(origin.count(&t), 4);
}

/// `invalidate_on` patterns: method and normalised path (no query) match exactly, `:name` one
/// segment, a final `*` anything below; a request on the cached route itself (a BYPASS) also
/// invalidates.
#[test]
fn invalidate_on_patterns_match_method_and_path() {
    let status = Arc::new(AtomicU16::new(200));
    let origin = writes_origin(&status);
    let gw = Conf::new(&origin.url())
        .rule(&format!(
            "invalidate_on = [\"POST /api/v1/categories\", \"PUT /api/v1/categories/*\", \"DELETE /api/v1/items/:id\", \"POST {CATALOG}/refresh\"]"
        ))
        .extra("[routes.writes]\npaths = [\"/api/v1/categories\", \"/api/v1/items\"]\nupstream = \"app\"\n")
        .start();
    let t = at("list");
    let mut v = 1;
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, v));
    let keeps = [
        ("GET", "/api/v1/categories"),
        ("POST", "/api/v1/categories/7"),
        ("DELETE", "/api/v1/items"),
        ("DELETE", "/api/v1/items/5/x"),
        ("PUT", "/api/v1/items/5"),
    ];
    for (method, path) in keeps {
        let r = send_request(gw.addr(), &Req::new(method, path).body(b"{}"));
        assert_eq!(r.status, 200, "{method} {path}");
        let after = fetch(&gw, &t);
        assert_eq!(
            (x_cache(&after), after.text()),
            ("HIT".to_string(), version(&t, v)),
            "{method} {path} must not invalidate"
        );
    }
    let purges = [
        ("POST", "/api/v1/categories".to_string()),
        ("POST", "/api/v1/categories?x=1".to_string()),
        ("PUT", "/api/v1/categories/7".to_string()),
        ("PUT", "/api/v1/categories/7/a/b".to_string()),
        ("DELETE", "/api/v1/items/5".to_string()),
        ("POST", at("refresh")),
    ];
    for (method, path) in &purges {
        let r = send_request(gw.addr(), &Req::new(method, path).body(b"{}"));
        assert_eq!(r.status, 200, "{method} {path}");
        v += 1;
        assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, v));
        assert_answer(&fetch(&gw, &t), 200, "HIT", &version(&t, v));
    }
}

// ---- memory ----

/// With `max_bytes_per_worker = "256KiB"`, 2,000 distinct keys of 4 KB bodies: the
/// `dispatch_cache_bytes` gauge never exceeds 256 KiB, entries are evicted (the last key is a
/// HIT, and no more earlier keys are still stored than fit), and every request is answered
/// whole.
#[test]
fn the_cache_stays_within_max_bytes_per_worker_and_evicts() {
    const LIMIT: f64 = 256.0 * 1024.0;
    const LEN: usize = 4000;
    let origin = Origin::start(|_, _| Reply::text(200, &"x".repeat(LEN)));
    let gw = Conf::new(&origin.url())
        .cache("max_bytes_per_worker = \"256KiB\"\nmax_object = \"64KiB\"")
        .start();
    let mut c = Client::connect(gw.addr());
    let mut peak = 0.0f64;
    for i in 0..2000 {
        let r = c.request(&Req::get(&at(&format!("k{i}"))));
        assert_eq!(
            (r.status, x_cache(&r).as_str(), r.body.len()),
            (200, "MISS", LEN),
            "key {i}"
        );
        if i % 100 == 99 {
            let text = scrape(&gw);
            let bytes = gauge(&text, "dispatch_cache_bytes", 0);
            let entries = gauge(&text, "dispatch_cache_entries", 0);
            assert!(
                bytes <= LIMIT,
                "after {} keys: dispatch_cache_bytes {bytes} > 256 KiB",
                i + 1
            );
            assert!(
                entries <= LIMIT / LEN as f64,
                "after {} keys: {entries} entries of {LEN} bytes cannot fit in 256 KiB",
                i + 1
            );
            peak = peak.max(bytes);
        }
    }
    assert!(
        peak > LIMIT / 2.0,
        "the cache was used ({peak} bytes at most)"
    );
    assert_eq!(
        x_cache(&c.request(&Req::get(&at("k1999")))),
        "HIT",
        "the last key stored"
    );
    // However the shard picks its victims, no more than 65 of the 4 KB entries fit: of 100
    // keys spread over the 2,000, each asked once more, at most 65 can be hits.
    let hits = (0..2000)
        .step_by(20)
        .filter(|i| x_cache(&c.request(&Req::get(&at(&format!("k{i}"))))) == "HIT")
        .count();
    assert!(
        hits <= (LIMIT as usize) / LEN,
        "{hits} of 100 earlier keys still stored: nothing was evicted"
    );
    let bytes = gauge(&scrape(&gw), "dispatch_cache_bytes", 0);
    assert!(bytes <= LIMIT, "dispatch_cache_bytes {bytes} > 256 KiB");
}

// ---- metrics and the access log ----

/// `dispatch_cache_requests_total{rule,result}` counts each result as the test made it, the
/// access log's `cache` field says the same per request (null on a route without a cache,
/// whose answers carry no `X-Cache`), and the entry gauge counts the stored entries.
#[test]
fn cache_metrics_and_the_access_log_count_each_result() {
    let status = Arc::new(AtomicU16::new(200));
    let origin = failing_origin(&status);
    let gw = Conf::new(&origin.url())
        .rule("stale_if_error = \"60s\"")
        .start();
    let (m, s) = (at("fresh"), at("s"));
    let send = |id: &str, req: Req| send_request(gw.addr(), &req.header("X-Request-Id", id));
    let mut want = vec![
        ("m1", x_cache(&send("m1", Req::get(&m)))),
        ("h1", x_cache(&send("h1", Req::get(&m)))),
        ("h2", x_cache(&send("h2", Req::get(&m)))),
        (
            "b1",
            x_cache(&send("b1", Req::get(&m).header("Cookie", "a=b"))),
        ),
        ("m2", x_cache(&send("m2", Req::get(&s)))),
    ];
    let stored = Instant::now();
    wait_age(stored, 1);
    status.store(503, Ordering::SeqCst);
    want.push(("s1", x_cache(&send("s1", Req::get(&s)))));
    let plain = send("p1", Req::get("/plain/x"));
    assert!(
        !plain.has_header("x-cache"),
        "a route without a cache: {:?}",
        plain.headers
    );
    let got: Vec<&str> = want.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(got, ["MISS", "HIT", "HIT", "BYPASS", "MISS", "STALE"]);

    let counts = |text: &str| {
        ["hit", "miss", "stale", "bypass"].map(|result| cache_count(text, RULE, result))
    };
    let mut text = String::new();
    wait_until(Duration::from_secs(3), || {
        text = scrape(&gw);
        counts(&text) == [2, 2, 1, 1]
    });
    assert_eq!(
        counts(&text),
        [2, 2, 1, 1],
        "hit, miss, stale, bypass:\n{text}"
    );
    assert_eq!(gauge(&text, "dispatch_cache_entries", 0), 2.0, "{text}");
    assert!(gauge(&text, "dispatch_cache_bytes", 0) > 0.0, "{text}");

    let mut ids: Vec<String> = want.iter().map(|(id, _)| id.to_string()).collect();
    ids.push("p1".to_string());
    let lines = access_lines(&gw, &ids);
    for (id, cache) in &want {
        assert_eq!(lines[*id]["cache"], cache.as_str(), "{}", lines[*id]);
    }
    assert_eq!(lines["p1"]["cache"], Value::Null, "{}", lines["p1"]);
}

// ---- around the other phases ----

/// A hit on a rate-limited route carries `RateLimit-*` like a miss and counts against the
/// limit: past it the 429, even for a stored key.
#[test]
fn a_hit_on_a_rate_limited_route_carries_ratelimit_fields_and_counts() {
    let origin = Origin::versions(&[]);
    let gw = Conf::new(&origin.url())
        .route("rate_limits = [\"quota\"]")
        .extra("[rate_limits.quota]\nalgorithm = \"fixed_window\"\nkey = \"global\"\nlimit = 3\nwindow = \"1h\"\n")
        .start();
    let t = at("limited");
    for (remaining, cache) in [(2, "MISS"), (1, "HIT"), (0, "HIT")] {
        let r = fetch(&gw, &t);
        assert_answer(&r, 200, cache, &version(&t, 1));
        let f = rate_fields(&r);
        assert_eq!((f.limit, f.remaining), (3, remaining), "{cache}: {f:?}");
    }
    let r = fetch(&gw, &t);
    assert_error_retry_after(&r, 429);
    assert_eq!(origin.count(&t), 1);
}

/// A hit carries its own request's `X-Request-Id` (the client's, or a fresh one), once, never
/// the id of the request that filled the entry (even when the upstream echoed that one).
#[test]
fn a_hit_carries_its_own_request_id() {
    // The upstream echoes the request id it got, as many services do: a stored answer holds
    // the filling request's id, which a hit must not replay.
    let origin = Origin::start(|req, n| {
        Reply::text(200, &version(&req.target, n))
            .header("X-Request-Id", req.header("x-request-id").unwrap_or("none"))
    });
    let gw = Conf::new(&origin.url()).start();
    let t = at("ids");
    let miss = send_request(gw.addr(), &Req::get(&t).header("X-Request-Id", "filler"));
    assert_eq!(miss.header("x-request-id"), Some("filler"));
    let given = send_request(gw.addr(), &Req::get(&t).header("X-Request-Id", "hit-1"));
    assert_answer(&given, 200, "HIT", &version(&t, 1));
    assert_eq!(given.header_all("x-request-id"), ["hit-1"]);
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let r = fetch(&gw, &t);
            assert_eq!(x_cache(&r), "HIT");
            let all = r.header_all("x-request-id");
            assert_eq!(all.len(), 1, "{:?}", r.headers);
            all[0].to_string()
        })
        .collect();
    assert!(
        !ids[0].is_empty() && ids[0] != ids[1] && !ids.iter().any(|id| id == "filler"),
        "each hit gets a fresh id: {ids:?}"
    );
}

/// A reload that keeps the rule keeps its entries (HIT after it); one that changes the rule
/// (its `ttl`) drops them (MISS).
#[test]
fn a_reload_keeps_an_unchanged_rule_s_entries_and_drops_a_changed_one_s() {
    let origin = Origin::versions(&[]);
    let gw = Conf::new(&origin.url()).start();
    let t = at("kept");
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, 1));
    reload_with(
        &gw,
        "[routes.plain]",
        "[routes.other]\npaths = [\"/other\"]\nupstream = \"app\"\n\n[routes.plain]",
    );
    assert_eq!(
        get(gw.addr(), "/other").status,
        200,
        "the reload is in effect"
    );
    assert_answer(&fetch(&gw, &t), 200, "HIT", &version(&t, 1));

    reload_with(&gw, "ttl = \"1h\"", "ttl = \"2h\"");
    assert_answer(&fetch(&gw, &t), 200, "MISS", &version(&t, 2));
    assert_answer(&fetch(&gw, &t), 200, "HIT", &version(&t, 2));
}

// ---- per_user ----

/// An upstream whose answers say who they were made for (the forwarded identity header).
fn identity_origin(header: &'static str) -> Origin {
    Origin::start(move |req, n| {
        Reply::text(
            200,
            &format!(
                "{} for {}",
                version(&req.target, n),
                req.header(header).unwrap_or("-")
            ),
        )
    })
}

/// `per_user` with an API-key policy: each consumer has its own entry, and each gets its own.
#[test]
fn per_user_keeps_api_key_consumers_apart() {
    let dir = TempDir::new();
    let keys = dir.write(
        "keys.toml",
        &format!(
            "[keys.\"{}\"]\nconsumer = \"acme\"\n\n[keys.\"{}\"]\nconsumer = \"globex\"\n",
            auth::sha256_hex(b"acme-key"),
            auth::sha256_hex(b"globex-key")
        ),
    );
    let origin = identity_origin("x-consumer-id");
    let gw = Conf::new(&origin.url())
        .rule("per_user = true")
        .route("auth = \"keys\"")
        .extra(&format!(
            "[auth.keys]\ntype = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"{}\"\nforward = {{ consumer = \"x-consumer-id\" }}\n",
            keys.display()
        ))
        .start();
    let t = at("mine");
    let as_ = |key: &str| send_request(gw.addr(), &Req::get(&t).header("x-api-key", key));
    let acme = format!("{} for acme", version(&t, 1));
    let globex = format!("{} for globex", version(&t, 2));
    assert_answer(&as_("acme-key"), 200, "MISS", &acme);
    assert_answer(&as_("globex-key"), 200, "MISS", &globex);
    assert_answer(&as_("acme-key"), 200, "HIT", &acme);
    assert_answer(&as_("globex-key"), 200, "HIT", &globex);
    assert_eq!(as_("wrong-key").status, 401);
    assert_eq!(origin.count(&t), 2);
}

/// `per_user` with a JWT policy: a request with `Authorization` is not bypassed, and each
/// subject has its own entry; on a rule without `per_user` the same requests bypass.
#[test]
fn per_user_keeps_jwt_subjects_apart_and_without_it_authorization_bypasses() {
    let dir = TempDir::new();
    let pem = dir.write("rsa.pem", &auth::rsa_pem(&auth::keys().rsa));
    let token = |sub: &str| {
        format!(
            "Bearer {}",
            auth::rs256(
                &auth::keys().rsa,
                None,
                &json!({"sub": sub, "exp": unix_now() + 3600})
            )
        )
    };
    let origin = identity_origin("x-user-id");
    let gw = Conf::new(&origin.url())
        .rule("per_user = true")
        .route("auth = \"jwt\"")
        .extra(&format!(
            "[auth.jwt]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nkeys = \"{}\"\nforward = {{ sub = \"x-user-id\" }}\n\n\
             [cache.rules.shared]\nttl = \"1h\"\n\n\
             [routes.shared]\npaths = [\"/shared\"]\nupstream = \"app\"\nauth = \"jwt\"\ncache = \"shared\"\n",
            pem.display()
        ))
        .start();
    let t = at("mine");
    let as_ = |target: &str, sub: &str| {
        send_request(
            gw.addr(),
            &Req::get(target).header("Authorization", &token(sub)),
        )
    };
    let alice = format!("{} for alice", version(&t, 1));
    let bob = format!("{} for bob", version(&t, 2));
    assert_answer(&as_(&t, "alice"), 200, "MISS", &alice);
    assert_answer(&as_(&t, "bob"), 200, "MISS", &bob);
    assert_answer(&as_(&t, "alice"), 200, "HIT", &alice);
    assert_answer(&as_(&t, "bob"), 200, "HIT", &bob);
    assert_eq!(origin.count(&t), 2);

    for n in 1..=2 {
        let r = as_("/shared/x", "alice");
        assert_answer(
            &r,
            200,
            "BYPASS",
            &format!("{} for alice", version("/shared/x", n)),
        );
    }
}

/// `per_user = true` on a rule used by a route without `auth` is a config error: `dispatch
/// check` exits 1 with one `file:line:col: message` naming `per_user`, at the rule's key or at
/// the route's `cache`.
#[test]
fn per_user_on_a_route_without_auth_is_a_config_error() {
    let toml = "[upstreams.app]\nendpoints = [\"http://127.0.0.1:9\"]\n\n\
                [cache]\nmax_bytes_per_worker = \"1MiB\"\n\n\
                [cache.rules.mine]\nttl = \"1m\"\nper_user = true\n\n\
                [routes.r]\npaths = [\"/r\"]\nupstream = \"app\"\ncache = \"mine\"\n";
    let out = check(toml);
    assert_eq!(out.code, Some(1), "expected exit 1; output:\n{}", out.all());
    let prefix = format!("{}:", out.config_path.display());
    let all = out.all();
    let errors: Vec<&str> = all
        .lines()
        .filter_map(|l| l.find(&prefix).map(|i| &l[i + prefix.len()..]))
        .collect();
    assert_eq!(errors.len(), 1, "one located error; output:\n{all}");
    let mut parts = errors[0].splitn(3, ':');
    let line: usize = parts
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no line in {:?}", errors[0]));
    let col: usize = parts
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no column in {:?}", errors[0]));
    let message = parts.next().unwrap_or_default();
    let line_of = |needle: &str| toml.lines().position(|l| l.contains(needle)).map(|i| i + 1);
    assert!(
        [line_of("per_user = true"), line_of("cache = \"mine\"")].contains(&Some(line)) && col >= 1,
        "the error is located at per_user or at the route's cache: {:?}",
        errors[0]
    );
    assert!(message.contains("per_user"), "{message}");
}

/// The test's own IMF-fixdate formatter (RFC 9110 §5.6.7's example date).
#[test]
fn http_date_helper_writes_imf_fixdate() {
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
}
