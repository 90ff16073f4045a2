//! Rate limits end to end (BEHAVIOR.md "Rate limits"): a real 2-worker gateway in front of a
//! real upstream. Every limit is one state shared by the workers, so a burst over many client
//! connections (spread over both workers by SO_REUSEPORT; the access log's `worker` field
//! shows both served) admits what the algorithm allows and not one request more: a per-worker
//! share would admit up to twice the limit. Answers on a limited route carry `RateLimit-*`, a
//! rejection is a 429 JSON error with `Retry-After`, a missing key is limited under
//! `"<missing>"`, rejections are counted per policy, and a reload keeps an unchanged limit's
//! state.
//!
//! Windows are long (1 h for the windows aligned on the gateway's clock origin, its start) so
//! that a burst, seconds after the start, never straddles a window boundary; the buckets run
//! at slow rates, and the refill a burst's measured duration permits is allowed for.

mod support;

use support::ratelimit::*;
use support::*;

/// Connections per burst: enough that both workers serve many of them.
const CONNECTIONS: usize = 48;

/// A 2-worker gateway with the JSON access log on, `upstreams`, `routes` and `limits` (TOML).
fn gateway(body: &str) -> Gateway {
    Gateway::start(&format!(
        "[server]\nworkers = 2\n\n[log]\naccess = \"json\"\n\n{body}"
    ))
}

/// Upstream `app` at `url` (no retries) and route `api` on `/api` under `limits` (a TOML
/// array), plus `extra` (the `[rate_limits.*]` tables).
fn one_route(url: &str, limits: &str, extra: &str) -> String {
    format!(
        "[upstreams.app]\nendpoints = [\"{url}\"]\nretries = 0\n\n[routes.api]\npaths = [\"/api\"]\nupstream = \"app\"\nrate_limits = {limits}\n\n{extra}\n"
    )
}

/// Asserts what every limited answer of a burst must show: each answer is a 200 or a 429 with
/// `RateLimit-Limit: limit`; each 429 is the JSON error with `Retry-After` (= `retryAfter`,
/// at least 1) and `RateLimit-Remaining: 0`; the rejections metric of `policy` counts every
/// 429; both workers served the burst. Returns the number admitted.
fn check_burst(gw: &Gateway, shots: &[Shot], policy: &str, limit: u64) -> usize {
    assert_only_200_or_429(shots);
    for s in shots {
        let f = rate_fields(&s.resp);
        assert_eq!(f.limit, limit, "{}: RateLimit-Limit", s.id);
        if s.resp.status == 429 {
            assert_error_retry_after(&s.resp, 429);
            assert_eq!(f.remaining, 0, "{}: a 429 has nothing remaining", s.id);
        }
    }
    let rejected = count(shots, 429) as u64;
    assert_eq!(
        rejected_total(gw, policy),
        rejected,
        "dispatch_ratelimit_rejected_total{{policy=\"{policy}\"}} counts every 429"
    );
    let workers = workers_of(gw, shots);
    assert_eq!(
        workers.len(),
        2,
        "the burst's connections should have reached both workers, got {workers:?}"
    );
    count(shots, 200)
}

/// A windowed limit of 20 per key, hit by 48 requests at once for one key over both workers,
/// admits exactly 20; each admission is counted once (the admitted answers' `Remaining` are
/// 19, 18, ..., 0, each once) and reached the upstream.
fn windowed_burst_admits_exactly_the_limit(algorithm: &str, window: &str, max_reset: u64) {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = gateway(&one_route(
        &up.url(),
        "[\"per_user\"]",
        &format!(
            "[rate_limits.per_user]\nalgorithm = \"{algorithm}\"\nkey = \"header:x-user\"\nlimit = 20\nwindow = \"{window}\"\n"
        ),
    ));
    let shots = burst(gw.addr(), CONNECTIONS, algorithm, |_| {
        Req::get("/api").header("x-user", "alice")
    });
    let admitted = check_burst(&gw, &shots, "per_user", 20);
    assert_eq!(admitted, 20, "{algorithm}: admitted over both workers");
    let mut remaining: Vec<u64> = shots
        .iter()
        .filter(|s| s.resp.status == 200)
        .map(|s| rate_fields(&s.resp).remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..20).collect::<Vec<u64>>(),
        "{algorithm}: each admission takes one unit"
    );
    for s in &shots {
        let reset = rate_fields(&s.resp).reset;
        assert!(
            (1..=max_reset).contains(&reset),
            "{algorithm} {}: RateLimit-Reset {reset} outside 1..={max_reset}",
            s.id
        );
    }
    assert_eq!(
        up.request_count(),
        20,
        "exactly the admitted reached the upstream"
    );
}

/// Fixed window: exactly `limit` per window across workers. The 1 h window starts at the
/// gateway's clock origin, so the burst lies in its first window, far from its end (the
/// `RateLimit-Reset` bound proves that premise: more than 3000 s were left).
#[test]
fn fixed_window_admits_exactly_the_limit_across_workers() {
    windowed_burst_admits_exactly_the_limit("fixed_window", "1h", 3600);
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = gateway(&one_route(
        &up.url(),
        "[\"w\"]",
        "[rate_limits.w]\nalgorithm = \"fixed_window\"\nkey = \"global\"\nlimit = 5\nwindow = \"1h\"\n",
    ));
    let reset = rate_fields(&get(gw.addr(), "/api")).reset;
    assert!(
        reset > 3000,
        "a fixed window starts at the gateway's clock origin: {reset} s left"
    );
}

/// Sliding-window log: exactly `limit` in the window across workers.
#[test]
fn sliding_window_log_admits_exactly_the_limit_across_workers() {
    windowed_burst_admits_exactly_the_limit("sliding_window_log", "1m", 60);
}

/// Sliding-window counter: exactly `limit` in the (first, 1 h) window across workers. Its
/// `RateLimit-Reset` may reach two windows: this window's count weighs on the next one.
#[test]
fn sliding_window_counter_admits_exactly_the_limit_across_workers() {
    windowed_burst_admits_exactly_the_limit("sliding_window_counter", "1h", 7200);
}

/// Token bucket (burst 20, 1 token a second): a burst over both workers admits the 20 tokens
/// plus at most the refill of the time it took, never more.
#[test]
fn token_bucket_admits_its_burst_plus_the_refill_across_workers() {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = gateway(&one_route(
        &up.url(),
        "[\"bucket\"]",
        "[rate_limits.bucket]\nalgorithm = \"token_bucket\"\nkey = \"header:x-user\"\nrate = 1\nburst = 20\n",
    ));
    let shots = burst(gw.addr(), CONNECTIONS, "tb", |_| {
        Req::get("/api").header("x-user", "alice")
    });
    let admitted = check_burst(&gw, &shots, "bucket", 20) as u64;
    // Every request was decided between the first send and the last answer; the gateway's
    // clock is read in whole milliseconds (floored), hence the extra millisecond.
    let first = shots.iter().map(|s| s.sent).min().expect("shots");
    let last = shots.iter().map(|s| s.done).max().expect("shots");
    let refill = ((last - first).as_secs_f64() + 0.001).floor() as u64;
    assert!(
        (20..=20 + refill).contains(&admitted),
        "admitted {admitted}: burst 20 plus at most {refill} refilled in {:?}",
        last - first
    );
    for s in &shots {
        let reset = rate_fields(&s.resp).reset;
        assert!(
            reset <= 21,
            "{}: RateLimit-Reset {reset} > burst / rate",
            s.id
        );
    }
    assert_eq!(up.request_count() as u64, admitted);
}

/// Leaky bucket (2 a second, 3 may wait): a burst over both workers sends one request on at
/// once and queues 3; they reach the upstream no faster than one per 500 ms; the rest are
/// rejected at once (not after waiting a turn). More are admitted only as the queue drains
/// while the burst is still being decided (allowed for from the gateway's own start times).
#[test]
fn leaky_bucket_shapes_to_its_rate_and_rejects_beyond_its_queue() {
    // A turn long enough that "a rejection was answered within a turn" holds on a loaded
    // 2-core runner too.
    const T_MS: f64 = 500.0;
    const BURST: usize = 3;
    let up = TimedUpstream::start();
    let gw = gateway(&one_route(
        &up.up.url(),
        "[\"shape\"]",
        "[rate_limits.shape]\nalgorithm = \"leaky_bucket\"\nkey = \"global\"\nrate = 2\nburst = 3\n",
    ));
    let shots = burst(gw.addr(), 32, "lb", |_| Req::get("/api"));
    let admitted = check_burst(&gw, &shots, "shape", BURST as u64);

    // At most BURST wait behind the one that leaves at once: beyond that, only the turns that
    // passed while the burst was being decided (the gateway's start times of its requests).
    let ids: Vec<String> = shots.iter().map(|s| s.id.clone()).collect();
    let log = logged(&gw, &ids);
    let starts = log.values().map(|l| l.started_ms);
    let span = starts.clone().fold(f64::MIN, f64::max) - starts.fold(f64::MAX, f64::min);
    let turns = ((span + 2.0) / T_MS).floor() as usize;
    assert!(
        (BURST + 1..=BURST + 1 + turns).contains(&admitted),
        "admitted {admitted}: 1 at once + {BURST} queued + at most {turns} turns in {span} ms"
    );

    // No faster than the rate: the k-th arrival (in arrival order) is at least k turns after
    // the burst's first send (less 1 ms: the gateway reads its clock in whole milliseconds).
    let first = shots.iter().map(|s| s.sent).min().expect("shots");
    let mut arrivals = up.arrivals();
    arrivals.sort();
    assert_eq!(arrivals.len(), admitted, "every admitted request went on");
    for (k, (at, id)) in arrivals.iter().enumerate() {
        let after = at.saturating_duration_since(first).as_secs_f64() * 1000.0;
        assert!(
            after >= k as f64 * T_MS - 1.0,
            "arrival {k} ({id}) {after:.1} ms after the first send: faster than 2/s ({arrivals:?})"
        );
    }

    // The rejected did not wait a turn: each was answered in less than one.
    for s in shots.iter().filter(|s| s.resp.status == 429) {
        let l = &log[&s.id];
        assert!(
            l.duration_ms < T_MS,
            "{} was rejected after {} ms: a rejection must not wait in the queue",
            s.id,
            l.duration_ms
        );
    }
}

/// Tiers: `tier = "header:x-plan"` picks the tier's limit by the header's value; a value that
/// names no tier, or no header, gets the base limit.
#[test]
fn each_tier_gets_its_own_limit_and_an_unknown_tier_the_base() {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = gateway(&one_route(
        &up.url(),
        "[\"plans\"]",
        "[rate_limits.plans]\nalgorithm = \"sliding_window_counter\"\nkey = \"header:x-user\"\nlimit = 2\nwindow = \"1h\"\ntier = \"header:x-plan\"\ntiers.gold = { limit = 5, window = \"1h\" }\ntiers.silver = { limit = 3, window = \"1h\" }\n",
    ));
    // (user, plan, its limit)
    let cases = [
        ("g", Some("gold"), 5),
        ("s", Some("silver"), 3),
        ("p", Some("platinum"), 2),
        ("n", None, 2),
    ];
    for (user, plan, limit) in cases {
        let mut statuses = Vec::new();
        for _ in 0..limit + 2 {
            // A new connection each time: both workers count against the tier.
            let mut req = Req::get("/api").header("x-user", user);
            if let Some(plan) = plan {
                req = req.header("x-plan", plan);
            }
            let r = send_request(gw.addr(), &req);
            assert_eq!(
                rate_fields(&r).limit,
                limit,
                "user {user} plan {plan:?}: RateLimit-Limit"
            );
            statuses.push(r.status);
        }
        let want: Vec<u16> = (0..limit + 2)
            .map(|i| if i < limit { 200 } else { 429 })
            .collect();
        assert_eq!(statuses, want, "user {user} plan {plan:?}");
    }
}

/// On one connection, `RateLimit-Remaining` goes down by one per request, `RateLimit-Reset`
/// counts down to the window's end, and the 429 past the limit carries `Retry-After` equal to
/// `retryAfter` and to the seconds left.
#[test]
fn ratelimit_headers_count_down_on_one_connection() {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = gateway(&one_route(
        &up.url(),
        "[\"quota\"]",
        "[rate_limits.quota]\nalgorithm = \"fixed_window\"\nkey = \"ip\"\nlimit = 5\nwindow = \"1h\"\n",
    ));
    let mut c = Client::connect(gw.addr());
    let mut last_reset = u64::MAX;
    for want_remaining in (0..5).rev() {
        let r = c.request(&Req::get("/api"));
        assert_eq!(r.status, 200);
        let f = rate_fields(&r);
        assert_eq!((f.limit, f.remaining), (5, want_remaining), "{f:?}");
        assert!(
            f.reset <= last_reset && (3000..=3600).contains(&f.reset),
            "RateLimit-Reset {} after {last_reset}: seconds to the 1 h window's end",
            f.reset
        );
        last_reset = f.reset;
    }
    let r = c.request(&Req::get("/api"));
    let (_, retry_after) = assert_error_retry_after(&r, 429);
    let f = rate_fields(&r);
    assert_eq!((f.limit, f.remaining), (5, 0));
    assert!(
        retry_after.abs_diff(last_reset) <= 1 && f.reset.abs_diff(retry_after) <= 1,
        "a fixed window admits again at its end: Retry-After {retry_after}, Reset {}, window end {last_reset} s",
        f.reset
    );
    assert!(r.keeps_alive(), "a 429 does not close the connection");
    assert_eq!(c.request(&Req::get("/api")).status, 429);
}

/// A route under two limits reports the more restrictive one (the least remaining), and a
/// rejection by one of them is counted under that policy only.
#[test]
fn two_limits_report_the_more_restrictive() {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = gateway(&one_route(
        &up.url(),
        "[\"loose\", \"tight\"]",
        "[rate_limits.loose]\nalgorithm = \"fixed_window\"\nkey = \"global\"\nlimit = 10\nwindow = \"1h\"\n\n[rate_limits.tight]\nalgorithm = \"sliding_window_log\"\nkey = \"global\"\nlimit = 3\nwindow = \"1m\"\n",
    ));
    for want_remaining in (0..3).rev() {
        let r = send_request(gw.addr(), &Req::get("/api"));
        assert_eq!(r.status, 200);
        let f = rate_fields(&r);
        assert_eq!((f.limit, f.remaining), (3, want_remaining), "{f:?}");
        assert!(f.reset <= 60, "the tight limit's reset: {f:?}");
    }
    let r = send_request(gw.addr(), &Req::get("/api"));
    assert_error_retry_after(&r, 429);
    assert_eq!(rate_fields(&r).limit, 3);
    assert_eq!(rejected_total(&gw, "tight"), 1);
    assert_eq!(rejected_total(&gw, "loose"), 0);
}

/// An answer the gateway makes after the limits admitted the request (a 502: the upstream is
/// down) still carries the `RateLimit-*` fields.
#[test]
fn a_502_on_a_limited_route_carries_the_ratelimit_headers() {
    let gw = gateway(&one_route(
        &dead_url(),
        "[\"quota\"]",
        "[rate_limits.quota]\nalgorithm = \"fixed_window\"\nkey = \"global\"\nlimit = 5\nwindow = \"1h\"\n",
    ));
    for want_remaining in [4, 3] {
        let r = send_request(gw.addr(), &Req::get("/api"));
        assert_error(&r, 502);
        let f = rate_fields(&r);
        assert_eq!((f.limit, f.remaining), (5, want_remaining), "{f:?}");
    }
}

/// A request without the header its limit keys on is limited under `"<missing>"`: all such
/// requests share one budget (whatever their client), never pass unlimited, and do not touch
/// the budget of a client that sends the header.
#[test]
fn requests_missing_the_key_header_share_one_budget() {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = gateway(&one_route(
        &up.url(),
        "[\"per_key\"]",
        "[rate_limits.per_key]\nalgorithm = \"fixed_window\"\nkey = \"header:x-api-key\"\nlimit = 2\nwindow = \"1h\"\n",
    ));
    let from = |ip: [u8; 4]| Client::connect_from(ip.into(), gw.addr()).request(&Req::get("/api"));
    assert_eq!(from([127, 0, 0, 1]).status, 200);
    assert_eq!(from([127, 0, 0, 2]).status, 200);
    let third = from([127, 0, 0, 3]);
    assert_error_retry_after(&third, 429);
    let keyed = send_request(gw.addr(), &Req::get("/api").header("x-api-key", "k1"));
    assert_eq!(
        keyed.status, 200,
        "a client with the header has its own budget"
    );
    assert_eq!(rate_fields(&keyed).remaining, 1);
    assert_eq!(up.request_count(), 3);
}

/// `key = "ip"`: each client address has its own budget, shared by all its connections.
#[test]
fn ip_key_gives_each_client_address_its_own_budget() {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = gateway(&one_route(
        &up.url(),
        "[\"per_ip\"]",
        "[rate_limits.per_ip]\nalgorithm = \"sliding_window_log\"\nkey = \"ip\"\nlimit = 2\nwindow = \"1m\"\n",
    ));
    let from = |ip: [u8; 4]| {
        Client::connect_from(ip.into(), gw.addr())
            .request(&Req::get("/api"))
            .status
    };
    assert_eq!(
        [
            from([127, 0, 0, 2]),
            from([127, 0, 0, 2]),
            from([127, 0, 0, 2])
        ],
        [200, 200, 429]
    );
    assert_eq!([from([127, 0, 0, 3]), from([127, 0, 0, 3])], [200, 200]);
    assert_eq!(from([127, 0, 0, 3]), 429);
    assert_eq!(from([127, 0, 0, 2]), 429);
}

/// One limit on two routes: `key = "route"` gives each route its own budget, `key = "global"`
/// one budget for both.
#[test]
fn route_key_splits_a_shared_limit_per_route_and_global_key_shares_it() {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = gateway(&format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\n\n\
         [routes.a]\npaths = [\"/a\"]\nupstream = \"app\"\nrate_limits = [\"per_route\"]\n\n\
         [routes.b]\npaths = [\"/b\"]\nupstream = \"app\"\nrate_limits = [\"per_route\"]\n\n\
         [routes.c]\npaths = [\"/c\"]\nupstream = \"app\"\nrate_limits = [\"everyone\"]\n\n\
         [routes.d]\npaths = [\"/d\"]\nupstream = \"app\"\nrate_limits = [\"everyone\"]\n\n\
         [rate_limits.per_route]\nalgorithm = \"fixed_window\"\nkey = \"route\"\nlimit = 2\nwindow = \"1h\"\n\n\
         [rate_limits.everyone]\nalgorithm = \"fixed_window\"\nkey = \"global\"\nlimit = 2\nwindow = \"1h\"\n",
        up.url()
    ));
    let status = |path: &str| get(gw.addr(), path).status;
    assert_eq!([status("/a"), status("/a"), status("/a")], [200, 200, 429]);
    assert_eq!(
        [status("/b"), status("/b"), status("/b")],
        [200, 200, 429],
        "route b has its own budget under key = \"route\""
    );
    assert_eq!([status("/c"), status("/d")], [200, 200]);
    assert_eq!(
        [status("/c"), status("/d")],
        [429, 429],
        "routes c and d share one budget under key = \"global\""
    );
    assert_eq!(rejected_total(&gw, "per_route"), 2);
    assert_eq!(rejected_total(&gw, "everyone"), 2);
}

/// Rewrites the running gateway's config file with `from` replaced by `to`, and reloads it.
fn reload_with(gw: &Gateway, from: &str, to: &str) {
    let path = gw.config_path().to_path_buf();
    let old = std::fs::read_to_string(&path).expect("read config");
    assert_eq!(old.matches(from).count(), 1, "{from} once in:\n{old}");
    std::fs::write(&path, old.replace(from, to)).expect("write config");
    let r = send_request(gw.admin_addr(), &Req::post("/reload", b""));
    assert_eq!(r.status, 200, "POST /reload: {}", r.text());
}

/// A reload that leaves a limit's settings unchanged keeps its state (a client at its limit
/// stays rejected); one that changes them starts it afresh.
#[test]
fn reload_keeps_an_unchanged_limit_and_resets_a_changed_one() {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = gateway(&one_route(
        &up.url(),
        "[\"quota\"]",
        "[rate_limits.quota]\nalgorithm = \"fixed_window\"\nkey = \"global\"\nlimit = 2\nwindow = \"1h\"\n",
    ));
    let status = |path: &str| get(gw.addr(), path).status;
    assert_eq!(
        [status("/api"), status("/api"), status("/api")],
        [200, 200, 429]
    );

    // Another route added: a new generation, the same limit.
    reload_with(
        &gw,
        "[routes.api]",
        "[routes.other]\npaths = [\"/other\"]\nupstream = \"app\"\n\n[routes.api]",
    );
    assert_eq!(status("/other"), 200, "the reload is in effect");
    let r = get(gw.addr(), "/api");
    assert_error_retry_after(&r, 429);
    assert_eq!(
        rate_fields(&r).limit,
        2,
        "the unchanged limit kept its count"
    );

    reload_with(&gw, "limit = 2\n", "limit = 3\n");
    let fresh: Vec<(u16, u64)> = (0..4)
        .map(|_| {
            let r = get(gw.addr(), "/api");
            (r.status, rate_fields(&r).remaining)
        })
        .collect();
    assert_eq!(
        fresh,
        [(200, 2), (200, 1), (200, 0), (429, 0)],
        "the changed limit starts afresh"
    );
}

/// Regression: a leaky bucket's queued request whose client left was still sent upstream when
/// its turn came, and its turn was spent (nothing watched the client while it waited).
#[test]
fn a_queued_request_whose_client_left_is_not_sent_on_and_frees_its_turn() {
    let up = TimedUpstream::start();
    let gw = gateway(&one_route(
        &up.up.url(),
        "[\"shape\"]",
        "[rate_limits.shape]\nalgorithm = \"leaky_bucket\"\nkey = \"global\"\nrate = 1\nburst = 1\n",
    ));
    // The first goes on at once; the next turn is a second away.
    assert_eq!(get(gw.addr(), "/api").status, 200);
    let mut queued = Client::connect(gw.addr());
    queued.send(&Req::get("/api").header("X-Request-Id", "leaver").to_bytes());
    drop(queued);
    // The gateway is done with the leaver's request once it is counted.
    waits::wait_requests_done(&gw, 2);
    let ids: Vec<String> = up.arrivals().into_iter().map(|(_, id)| id).collect();
    assert!(
        !ids.iter().any(|id| id == "leaver"),
        "a request whose client left was sent on: {ids:?}"
    );
    // The turn it gave back is taken by the next request (queued for it, not rejected).
    let r = get(gw.addr(), "/api");
    assert_eq!(r.status, 200, "the freed turn: {} {:?}", r.status, r.text());
}

/// A queued request whose client pipelines another behind it is not taken for a departed
/// client: both are sent on in their turns and answered in order (bytes that arrive while the
/// first waits are left for the connection to read).
#[test]
fn a_queued_request_with_a_pipelined_one_behind_it_is_served_in_order() {
    let up = TimedUpstream::start();
    let gw = gateway(&one_route(
        &up.up.url(),
        "[\"shape\"]",
        "[rate_limits.shape]\nalgorithm = \"leaky_bucket\"\nkey = \"global\"\nrate = 10\nburst = 2\n",
    ));
    assert_eq!(get(gw.addr(), "/api").status, 200);
    // p1 waits about 100 ms for its turn; p2 is written during that wait (or, on a slow
    // machine, after it: the answers must be the same).
    let mut c = Client::connect(gw.addr());
    c.send(&Req::get("/api").header("X-Request-Id", "p1").to_bytes());
    pause(30);
    c.send(&Req::get("/api").header("X-Request-Id", "p2").to_bytes());
    let answers = c.read_responses(2);
    let ids: Vec<&str> = answers
        .iter()
        .map(|r| r.header("x-request-id").unwrap_or(""))
        .collect();
    assert_eq!(ids, ["p1", "p2"]);
    for r in &answers {
        assert_eq!(r.status, 200, "{} {:?}", r.status, r.text());
    }
    let sent_on: Vec<String> = up
        .arrivals()
        .into_iter()
        .skip(1)
        .map(|(_, id)| id)
        .collect();
    assert_eq!(sent_on, ["p1", "p2"]);
}

// ---- around auth ----

/// An API-key policy `keys` (header `x-api-key`) whose keys file holds `acme-key` (consumer
/// acme) and `globex-key` (consumer globex), forwarding the consumer as `x-consumer-id`.
fn api_key_policy(dir: &TempDir) -> String {
    let keys = dir.path().join("keys.toml");
    let entry = |key: &str, consumer: &str| {
        format!(
            "[keys.\"{}\"]\nconsumer = \"{consumer}\"\n",
            support::auth::sha256_hex(key.as_bytes())
        )
    };
    std::fs::write(
        &keys,
        format!(
            "{}{}",
            entry("acme-key", "acme"),
            entry("globex-key", "globex")
        ),
    )
    .unwrap();
    format!(
        "[auth.keys]\ntype = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"{}\"\nforward = {{ consumer = \"x-consumer-id\" }}\n",
        keys.display()
    )
}

/// A 429 made before the request's body was read closes the connection: the body is never
/// read as the next request (regression: it kept the connection open, and a request hidden
/// in the body reached the upstream).
#[test]
fn a_429_before_the_body_is_read_closes_instead_of_reading_the_body_as_a_request() {
    let up = Upstream::echo();
    let gw = gateway(&one_route(
        &up.url(),
        "[\"one\"]",
        "[rate_limits.one]\nalgorithm = \"fixed_window\"\nkey = \"ip\"\nlimit = 1\nwindow = \"1h\"\n",
    ));
    assert_eq!(send_request(gw.addr(), &Req::get("/api")).status, 200);
    let hidden = b"GET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut c = Client::connect(gw.addr());
    c.send(&Req::post("/api", hidden).to_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 429);
    assert!(!r.keeps_alive(), "{r:?}");
    c.assert_closed(std::time::Duration::from_secs(5));
    let targets: Vec<String> = up.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/api"], "the hidden request reached the upstream");
}

/// A limit keyed on the client's address is checked before auth: refused credentials from
/// one address are counted (a flood of bad tokens is throttled before each costs a signature
/// check), and the upstream is never reached.
#[test]
fn an_ip_limit_counts_requests_that_auth_refuses() {
    let dir = TempDir::new();
    let up = Upstream::echo();
    let gw = gateway(&format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\n\n[routes.api]\npaths = [\"/api\"]\nupstream = \"app\"\nauth = \"keys\"\nrate_limits = [\"per_ip\"]\n\n[rate_limits.per_ip]\nalgorithm = \"fixed_window\"\nkey = \"ip\"\nlimit = 2\nwindow = \"1h\"\n\n{}",
        up.url(),
        api_key_policy(&dir)
    ));
    let wrong = || Req::get("/api").header("x-api-key", "guess");
    let statuses: Vec<u16> = (0..3)
        .map(|_| send_request(gw.addr(), &wrong()).status)
        .collect();
    assert_eq!(statuses, [401, 401, 429]);
    let right = send_request(gw.addr(), &Req::get("/api").header("x-api-key", "acme-key"));
    assert_eq!(right.status, 429, "the address's budget is spent");
    assert_eq!(up.request_count(), 0);
}

/// A `header:` key naming an identity header counts the verified value (checked after
/// auth): each consumer has its own budget, and a forged header changes nothing.
#[test]
fn a_header_key_on_an_identity_header_counts_the_verified_identity() {
    let dir = TempDir::new();
    let up = Upstream::echo();
    let gw = gateway(&format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\n\n[routes.api]\npaths = [\"/api\"]\nupstream = \"app\"\nauth = \"keys\"\nrate_limits = [\"per_consumer\"]\n\n[rate_limits.per_consumer]\nalgorithm = \"fixed_window\"\nkey = \"header:x-consumer-id\"\nlimit = 1\nwindow = \"1h\"\n\n{}",
        up.url(),
        api_key_policy(&dir)
    ));
    let as_ = |key: &str, forged: &str| {
        send_request(
            gw.addr(),
            &Req::get("/api")
                .header("x-api-key", key)
                .header("X-Consumer-Id", forged),
        )
        .status
    };
    assert_eq!(as_("acme-key", "someone"), 200);
    assert_eq!(as_("globex-key", "acme"), 200, "globex has its own budget");
    assert_eq!(as_("acme-key", "globex"), 429, "acme's budget is spent");
    let seen: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.header("x-consumer-id").unwrap_or("").to_string())
        .collect();
    assert_eq!(seen, ["acme", "globex"]);
}

/// A shared quota (`global`) is checked after auth: clients without valid credentials cannot
/// spend what the authenticated depend on.
#[test]
fn refused_credentials_do_not_spend_a_global_quota() {
    let dir = TempDir::new();
    let up = Upstream::echo();
    let gw = gateway(&format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\n\n[routes.api]\npaths = [\"/api\"]\nupstream = \"app\"\nauth = \"keys\"\nrate_limits = [\"everyone\"]\n\n[rate_limits.everyone]\nalgorithm = \"fixed_window\"\nkey = \"global\"\nlimit = 2\nwindow = \"1h\"\n\n{}",
        up.url(),
        api_key_policy(&dir)
    ));
    for _ in 0..5 {
        let r = send_request(gw.addr(), &Req::get("/api").header("x-api-key", "guess"));
        assert_eq!(r.status, 401);
    }
    let good = || send_request(gw.addr(), &Req::get("/api").header("x-api-key", "acme-key")).status;
    assert_eq!([good(), good(), good()], [200, 200, 429]);
}
