//! Helpers for the rate-limit tests (tests/ratelimit.rs): concurrent bursts over many client
//! connections, the `RateLimit-*` fields of an answer, an upstream that notes when each
//! request reached it, and what the access log says about each request (which worker served
//! it, when the gateway started on it).
//!
//! The access log is the gateway's own account of a request: `worker` is the worker that
//! served it, and `ts - duration_ms` is the instant the request's phases started, which is
//! the instant a rate limit decided it at (the limiter is asked at the request's start).

use super::client::{Client, Req, Response};
use super::gateway::Gateway;
use super::upstream::{Reply, Upstream};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// One request of a burst as the client saw it.
#[derive(Debug)]
pub struct Shot {
    /// The request's `X-Request-Id` (what the access log and the upstream see).
    pub id: String,
    /// Just before its bytes were written.
    pub sent: Instant,
    /// Once its whole answer was read.
    pub done: Instant,
    pub resp: Response,
}

/// Sends `req(i)` for `i in 0..n`, each on its own connection, all at once: every connection
/// is opened first (the kernel spreads new connections over the workers' SO_REUSEPORT
/// sockets), then each of `n` threads writes its request at the same barrier and reads the
/// answer. Each request gets `X-Request-Id: {tag}-{i}`. Returns the shots in `i` order.
pub fn burst(
    addr: SocketAddr,
    n: usize,
    tag: &str,
    req: impl Fn(usize) -> Req + Sync,
) -> Vec<Shot> {
    let clients: Vec<Client> = (0..n).map(|_| Client::connect(addr)).collect();
    let start = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                let (start, req) = (&start, &req);
                s.spawn(move || {
                    let id = format!("{tag}-{i}");
                    let bytes = req(i).header("X-Request-Id", &id).to_bytes();
                    start.wait();
                    let sent = Instant::now();
                    c.send(&bytes);
                    let resp = c.read_response();
                    Shot {
                        id,
                        sent,
                        done: Instant::now(),
                        resp,
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("burst thread"))
            .collect()
    })
}

/// How many of `shots` were answered `status`.
pub fn count(shots: &[Shot], status: u16) -> usize {
    shots.iter().filter(|s| s.resp.status == status).count()
}

/// Panics unless every shot was answered 200 or 429 (anything else is not a rate decision).
#[track_caller]
pub fn assert_only_200_or_429(shots: &[Shot]) {
    for s in shots {
        assert!(
            matches!(s.resp.status, 200 | 429),
            "{}: expected 200 or 429, got {} {:?} {:?}",
            s.id,
            s.resp.status,
            s.resp.headers,
            s.resp.text()
        );
    }
}

/// The `RateLimit-*` fields of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateFields {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds.
    pub reset: u64,
}

/// The `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` fields of `resp`, each
/// present once and a whole number; panics otherwise.
#[track_caller]
pub fn rate_fields(resp: &Response) -> RateFields {
    let field = |name: &str| -> u64 {
        let all = resp.header_all(name);
        assert_eq!(
            all.len(),
            1,
            "{name} must appear exactly once on a rate-limited route's answer ({} {:?})",
            resp.status,
            resp.headers
        );
        all[0]
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a whole number: {:?}", all[0]))
    };
    RateFields {
        limit: field("ratelimit-limit"),
        remaining: field("ratelimit-remaining"),
        reset: field("ratelimit-reset"),
    }
}

/// An upstream that answers 200 and notes, for each request, when it arrived and its
/// `X-Request-Id`.
pub struct TimedUpstream {
    pub up: Upstream,
    arrivals: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl TimedUpstream {
    pub fn start() -> TimedUpstream {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&arrivals);
        let up = Upstream::start(move |req| {
            let id = req.header("x-request-id").unwrap_or("").to_string();
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Instant::now(), id));
            Reply::text(200, "ok")
        });
        TimedUpstream { up, arrivals }
    }

    /// (arrival, request id) of every request so far, in arrival order.
    pub fn arrivals(&self) -> Vec<(Instant, String)> {
        self.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// `dispatch_ratelimit_rejected_total{policy="<policy>"}` now; panics if it is not exposed.
pub fn rejected_total(gw: &Gateway, policy: &str) -> u64 {
    let r = super::client::get(gw.admin_addr(), "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {r:?}");
    let series = format!("dispatch_ratelimit_rejected_total{{policy=\"{policy}\"}}");
    super::metric(&r.text(), &series)
        .unwrap_or_else(|| panic!("{series} is not exposed:\n{}", r.text())) as u64
}

/// What the access log says about one request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub status: u64,
    pub worker: u64,
    /// Unix milliseconds at which the gateway started on the request (`ts - duration_ms`;
    /// `ts` is whole milliseconds, so this is within 1 ms).
    pub started_ms: f64,
    pub duration_ms: f64,
}

/// The JSON access-log lines printed so far, by request id.
fn access_lines(gw: &Gateway) -> BTreeMap<String, Value> {
    gw.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v["request_id"].as_str()?.to_string(), v)))
        .collect()
}

/// Waits (at most 5 s: the workers hand their lines over on their housekeeping tick) until the
/// access log has a line for each of `ids`, and returns them by id; panics if one is missing.
pub fn logged(gw: &Gateway, ids: &[String]) -> BTreeMap<String, Logged> {
    let mut lines = BTreeMap::new();
    super::wait_until(Duration::from_secs(5), || {
        lines = access_lines(gw);
        ids.iter().all(|id| lines.contains_key(id))
    });
    ids.iter()
        .map(|id| {
            let v = lines
                .get(id)
                .unwrap_or_else(|| panic!("no access-log line for {id}; stdout:\n{}", gw.stdout()));
            let ts = v["ts"]
                .as_str()
                .and_then(super::rfc3339_utc_millis)
                .unwrap_or_else(|| panic!("access-log ts is not RFC 3339: {v}"));
            let duration_ms = v["duration_ms"]
                .as_f64()
                .unwrap_or_else(|| panic!("access-log duration_ms is not a number: {v}"));
            let field = |k: &str| {
                v[k].as_u64()
                    .unwrap_or_else(|| panic!("access-log {k} is not a number: {v}"))
            };
            let l = Logged {
                status: field("status"),
                worker: field("worker"),
                started_ms: ts as f64 - duration_ms,
                duration_ms,
            };
            (id.clone(), l)
        })
        .collect()
}

/// The workers that served the shots (from the access log).
pub fn workers_of(gw: &Gateway, shots: &[Shot]) -> BTreeSet<u64> {
    let ids: Vec<String> = shots.iter().map(|s| s.id.clone()).collect();
    logged(gw, &ids).values().map(|l| l.worker).collect()
}
