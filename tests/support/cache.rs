//! Helpers for the response-cache tests (tests/cache.rs): a gateway config with one cached
//! route (`Conf`), an upstream that numbers its answers per target (`Origin`), what an answer
//! says about the cache (`X-Cache`, `Age`), the cache's metrics and gauges, the access log's
//! `cache` and `worker` fields, requests spread over the workers one new connection at a time,
//! admin purges and reloads, and waits on the cache's clock.
//!
//! The cache's clock counts whole seconds, and an entry is stale once its age reaches its
//! lifetime. An entry stored while a response was being received has, a full second after the
//! client received that response, an age of at least 1 whatever instant the gateway's seconds
//! start at; so `wait_age(at, n)` (at least `n` seconds after `at`) is a clock wait that makes
//! an entry received before `at` at least `n` seconds old.

use super::client::{send_request, Client, Req, Response};
use super::gateway::Gateway;
use super::upstream::{Reply, Request, Upstream};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cached route's path prefix and the name of its rule.
pub const CATALOG: &str = "/api/v1/catalog";
pub const RULE: &str = "catalog";

/// A gateway config: upstream `app` (no retries), `[cache]`, rule `catalog` (default `ttl =
/// "1h"`), route `catalog` on `CATALOG` with `cache = "catalog"`, route `plain` on `/plain`
/// without a cache, the JSON access log, and whatever `extra` TOML is added.
pub struct Conf {
    url: String,
    workers: usize,
    upstream: String,
    cache: String,
    rule: String,
    route: String,
    extra: String,
}

impl Conf {
    pub fn new(url: &str) -> Conf {
        Conf {
            url: url.to_string(),
            workers: 1,
            upstream: String::new(),
            cache: "max_bytes_per_worker = \"4MiB\"\nmax_object = \"64KiB\"".to_string(),
            rule: String::new(),
            route: String::new(),
            extra: String::new(),
        }
    }

    pub fn workers(mut self, n: usize) -> Conf {
        self.workers = n;
        self
    }

    /// Extra keys of `[upstreams.app]`.
    pub fn upstream(mut self, keys: &str) -> Conf {
        self.upstream = keys.to_string();
        self
    }

    /// The keys of `[cache]` (replacing the defaults: 4 MiB per worker, 64 KiB objects).
    pub fn cache(mut self, keys: &str) -> Conf {
        self.cache = keys.to_string();
        self
    }

    /// Keys of `[cache.rules.catalog]`; `ttl = "1h"` unless they set `ttl`.
    pub fn rule(mut self, keys: &str) -> Conf {
        self.rule = keys.to_string();
        self
    }

    /// Extra keys of `[routes.catalog]`.
    pub fn route(mut self, keys: &str) -> Conf {
        self.route = keys.to_string();
        self
    }

    /// More TOML (routes, rules, policies), appended.
    pub fn extra(mut self, toml: &str) -> Conf {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn toml(&self) -> String {
        let ttl = if self.rule.lines().any(|l| l.trim_start().starts_with("ttl")) {
            ""
        } else {
            "ttl = \"1h\"\n"
        };
        format!(
            "[server]\nworkers = {workers}\n\n[log]\naccess = \"json\"\n\n\
             [upstreams.app]\nendpoints = [\"{url}\"]\nretries = 0\n{upstream}\n\n\
             [cache]\n{cache}\n\n[cache.rules.{RULE}]\n{ttl}{rule}\n\n\
             [routes.catalog]\npaths = [\"{CATALOG}\"]\nupstream = \"app\"\ncache = \"{RULE}\"\n{route}\n\n\
             [routes.plain]\npaths = [\"/plain\"]\nupstream = \"app\"\n\n{extra}",
            workers = self.workers,
            url = self.url,
            upstream = self.upstream,
            cache = self.cache,
            rule = self.rule,
            route = self.route,
            extra = self.extra,
        )
    }

    pub fn start(&self) -> Gateway {
        Gateway::start(&self.toml())
    }
}

/// An upstream that counts the requests for each target (path and query): the handler gets
/// the request and its 1-based number among those for its target, so an answer can say which
/// version it is (`Origin::versions` answers `"<target> v<n>"`).
pub struct Origin {
    pub up: Upstream,
}

impl Origin {
    pub fn start<F>(handler: F) -> Origin
    where
        F: Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    {
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let up = Upstream::start(move |req| {
            let n = {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let n = seen.entry(req.target.clone()).or_insert(0);
                *n += 1;
                *n
            };
            handler(req, n)
        });
        Origin { up }
    }

    /// 200 `"<target> v<n>"` (text/plain) with `headers` added.
    pub fn versions(headers: &[(&str, &str)]) -> Origin {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Origin::start(move |req, n| {
            let mut r = Reply::text(200, &version(&req.target, n));
            for (name, value) in &headers {
                r = r.header(name, value);
            }
            r
        })
    }

    pub fn url(&self) -> String {
        self.up.url()
    }

    /// Requests received for exactly `target`.
    pub fn count(&self, target: &str) -> usize {
        self.up
            .requests()
            .iter()
            .filter(|r| r.target == target)
            .count()
    }

    /// Requests received in all.
    pub fn total(&self) -> usize {
        self.up.request_count()
    }
}

/// The body `Origin::versions` answers the `n`th request for `target` with.
pub fn version(target: &str, n: usize) -> String {
    format!("{target} v{n}")
}

/// The one `X-Cache` field of `resp`; panics when there is none or several.
#[track_caller]
pub fn x_cache(resp: &Response) -> String {
    let all = resp.header_all("x-cache");
    assert_eq!(
        all.len(),
        1,
        "expected exactly one X-Cache field: {} {:?} {:?}",
        resp.status,
        resp.headers,
        resp.text()
    );
    all[0].to_string()
}

/// The one `Age` field of `resp` (whole seconds); panics when there is none, several, or it is
/// not a whole number.
#[track_caller]
pub fn age(resp: &Response) -> u64 {
    let all = resp.header_all("age");
    assert_eq!(
        all.len(),
        1,
        "expected exactly one Age field: {} {:?}",
        resp.status,
        resp.headers
    );
    all[0]
        .parse()
        .unwrap_or_else(|_| panic!("Age is not a whole number of seconds: {:?}", all[0]))
}

/// Asserts `resp` is `status` with `X-Cache: cache` and `body`.
#[track_caller]
pub fn assert_answer(resp: &Response, status: u16, cache: &str, body: &str) {
    assert_eq!(
        (resp.status, x_cache(resp).as_str(), resp.text().as_str()),
        (status, cache, body),
        "status, X-Cache and body; headers {:?}",
        resp.headers
    );
    if cache == "HIT" || cache == "STALE" {
        age(resp);
    }
}

/// `GET target` on a new connection.
pub fn fetch(gw: &Gateway, target: &str) -> Response {
    send_request(gw.addr(), &Req::get(target))
}

/// Sleeps until at least `secs` whole seconds (and a few milliseconds for the gateway's clock
/// reading) have passed since `at`: an entry received before `at` is then at least `secs`
/// seconds old on the cache's clock (see the module doc). A clock wait, never a wait for an
/// event.
pub fn wait_age(at: Instant, secs: u64) {
    let until = at + Duration::from_millis(secs * 1000 + 30);
    let now = Instant::now();
    if until > now {
        std::thread::sleep(until - now);
    }
}

/// The admin metrics text.
pub fn scrape(gw: &Gateway) -> String {
    let r = super::get(gw.admin_addr(), "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {r:?}");
    r.text()
}

/// `dispatch_cache_requests_total{rule="<rule>",result="<result>"}` in `text`, 0 when absent.
pub fn cache_count(text: &str, rule: &str, result: &str) -> u64 {
    super::metric(
        text,
        &format!("dispatch_cache_requests_total{{rule=\"{rule}\",result=\"{result}\"}}"),
    )
    .unwrap_or(0.0) as u64
}

/// The gauge `name{worker="<worker>"}` in `text`; panics when it is not exposed.
#[track_caller]
pub fn gauge(text: &str, name: &str, worker: usize) -> f64 {
    let series = format!("{name}{{worker=\"{worker}\"}}");
    super::metric(text, &series).unwrap_or_else(|| panic!("{series} is not exposed:\n{text}"))
}

/// `DELETE /cache<query>` on the admin listener.
pub fn purge(gw: &Gateway, query: &str) -> Response {
    send_request(
        gw.admin_addr(),
        &Req::new("DELETE", &format!("/cache{query}")),
    )
}

/// Asserts `resp` is an admin API error: `status`, a JSON body `{"error": {"code": status,
/// "message": "..."}}` with a message (admin answers carry no request id).
#[track_caller]
pub fn assert_admin_error(resp: &Response, status: u16) {
    assert_eq!(resp.status, status, "{} {}", resp.status, resp.text());
    resp.assert_content_type("application/json");
    let v = resp.json();
    assert_eq!(v["error"]["code"], status, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

/// Rewrites the running gateway's config file with `from` (present once) replaced by `to`,
/// and reloads it with admin `POST /reload`.
pub fn reload_with(gw: &Gateway, from: &str, to: &str) {
    let path = gw.config_path().to_path_buf();
    let old = std::fs::read_to_string(&path).expect("read config");
    assert_eq!(old.matches(from).count(), 1, "{from:?} once in:\n{old}");
    std::fs::write(&path, old.replace(from, to)).expect("write config");
    let r = send_request(gw.admin_addr(), &Req::post("/reload", b""));
    assert_eq!(r.status, 200, "POST /reload: {}", r.text());
}

/// The JSON access-log lines for `ids`, by request id: waits (at most 5 s; a worker hands its
/// lines over on its housekeeping tick) until each is there; panics if one is missing.
pub fn access_lines(gw: &Gateway, ids: &[String]) -> BTreeMap<String, Value> {
    let read = || -> BTreeMap<String, Value> {
        gw.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| Some((v["request_id"].as_str()?.to_string(), v)))
            .collect()
    };
    let mut lines = BTreeMap::new();
    super::wait_until(Duration::from_secs(5), || {
        lines = read();
        ids.iter().all(|id| lines.contains_key(id))
    });
    for id in ids {
        assert!(
            lines.contains_key(id),
            "no access-log line for {id}; stdout:\n{}",
            gw.stdout()
        );
    }
    lines.retain(|id, _| ids.contains(id));
    lines
}

/// One request of `spread` as the client and the access log saw it.
#[derive(Debug)]
pub struct Served {
    pub id: String,
    /// The worker that served it (the access log's `worker`).
    pub worker: u64,
    pub resp: Response,
}

/// Sends `req(i)` for `i in 0..n` one after another, each on a new connection (the kernel
/// spreads new connections over the workers' SO_REUSEPORT sockets) with `X-Request-Id:
/// {tag}-{i}`, and returns them in order with the worker each was served by.
pub fn spread(gw: &Gateway, n: usize, tag: &str, req: impl Fn(usize) -> Req) -> Vec<Served> {
    let sent: Vec<(String, Response)> = (0..n)
        .map(|i| {
            let id = format!("{tag}-{i}");
            let resp = Client::connect(gw.addr()).request(&req(i).header("X-Request-Id", &id));
            (id, resp)
        })
        .collect();
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    let lines = access_lines(gw, &ids);
    sent.into_iter()
        .map(|(id, resp)| {
            let worker = lines[&id]["worker"]
                .as_u64()
                .unwrap_or_else(|| panic!("access-log worker is not a number: {}", lines[&id]));
            Served { id, worker, resp }
        })
        .collect()
}

/// The `X-Cache` of each request of `served`, in order, per worker.
pub fn by_worker(served: &[Served]) -> BTreeMap<u64, Vec<String>> {
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for s in served {
        out.entry(s.worker).or_default().push(x_cache(&s.resp));
    }
    out
}

/// Asserts that `served` reached both workers of a 2-worker gateway and that on each the
/// first answer was a MISS and every later one a HIT (each worker has its own shard, which
/// its first request found empty and filled).
#[track_caller]
pub fn assert_first_miss_on_each_worker(served: &[Served], what: &str) {
    let seen = by_worker(served);
    assert_eq!(
        seen.len(),
        2,
        "{what}: the requests should have reached both workers: {seen:?}"
    );
    for (worker, caches) in &seen {
        let want: Vec<&str> = (0..caches.len())
            .map(|i| if i == 0 { "MISS" } else { "HIT" })
            .collect();
        assert_eq!(
            caches, &want,
            "{what}: worker {worker} must answer its first request MISS, then HIT: {seen:?}"
        );
    }
}

/// An HTTP-date (RFC 9110 §5.6.7 IMF-fixdate) of `unix` seconds.
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
