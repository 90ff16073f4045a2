//! The admin API on `admin.listen` (BEHAVIOR.md "Admin API"), served by its own thread so
//! that operator calls never take time from a worker's request path.
//!
//! Owns authentication of admin calls (`admin.token_env`: when that variable is set, every
//! call but `GET /health` needs `Authorization: Bearer <value>`) and the endpoints available
//! in this milestone: `GET /health`, `GET /metrics`, `GET /routes`, `GET /upstreams`,
//! `PUT`/`DELETE /upstreams/{name}/endpoints` (service discovery, applied like a reload) and
//! `POST /reload`. Any other path is a JSON 404.
//!
//! The admin thread never blocks: work that may (a registration's DNS lookup, a reload, which
//! re-resolves the file's host names) runs on a thread of its own while this one keeps serving
//! `/health` and `/metrics`. The call is answered when that work is done: a registration waits
//! for its lookup up to 5 s, then answers 504 and changes nothing; a reload is answered with
//! its outcome.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use serde_json::json;

use crate::clock;
use crate::http;
use crate::state::shared::Shared;
use crate::upstream::health::all_out;
use crate::upstream::shared::UpstreamShared;

const MAX_BODY: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a registration waits for its host name to resolve before it answers 504.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Blocking admin work (lookups, reloads) running at once; more is answered 503. A lookup the
/// admin API gave up on still holds its thread until the resolver returns.
pub const MAX_BLOCKING: usize = 8;

static BLOCKING: AtomicUsize = AtomicUsize::new(0);

/// Runs `work` on a thread of its own (the side thread's `spawn_blocking`) and waits for it
/// without blocking the admin thread; `Err` is the reply when it cannot run (too many at once,
/// no thread).
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Reply> {
    if BLOCKING.fetch_add(1, Ordering::AcqRel) >= MAX_BLOCKING {
        BLOCKING.fetch_sub(1, Ordering::AcqRel);
        return Err(error(
            503,
            "too many admin operations in progress (DNS lookups, reloads); try again",
        ));
    }
    // Released when the work ends (or is dropped unrun), not when a caller stops waiting.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            BLOCKING.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let release = Release;
    let job = monoio::spawn_blocking(move || {
        let _release = release;
        work()
    });
    job.await
        .map_err(|_| error(500, "could not run the operation on a thread of its own"))
}

/// Serves the admin API on `listener` (bound from `settings.listen`). `settings` is the
/// `[admin]` section the process started with: its address and its token rule hold until a
/// restart, whatever a reload's file says (a changed one is warned about).
pub fn spawn(
    shared: Arc<Shared>,
    settings: crate::config::model::Admin,
    listener: std::net::TcpListener,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let settings = Arc::new(settings);
    crate::runtime::spawn_side_thread("admin", move || async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                crate::error!("admin: cannot register listener: {e}");
                return;
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    monoio::spawn(serve(shared.clone(), settings.clone(), stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    static ACCEPT: crate::logging::Limiter = crate::logging::Limiter::new();
                    crate::warn_limited!(&ACCEPT, "admin: accept failed: {e}");
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

struct Reply {
    status: u16,
    body: String,
    content_type: &'static str,
    /// The methods the path serves, sent as `Allow` with a 405 (RFC 9110 §15.5.6).
    allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            content_type: "application/json",
            allow: None,
        }
    }
}

/// 405 for a path that serves only `allow`.
fn not_allowed(allow: &'static str) -> Reply {
    Reply {
        allow: Some(allow),
        ..error(405, "Method not allowed")
    }
}

fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {"code": status, "message": message}}).to_string(),
    )
}

async fn serve(
    shared: Arc<Shared>,
    settings: Arc<crate::config::model::Admin>,
    mut stream: TcpStream,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        // Read one request (head and Content-Length body).
        let limits = http::HeadLimits {
            max_request_line: 8192,
            max_header_bytes: 16384,
            max_headers: 100,
        };
        let (reply, keep, consumed) = loop {
            match http::parse_request(&buf, &limits) {
                Ok(Some(head)) => {
                    let body_len = match http::request_body(&head.headers, head.version) {
                        Ok(http::BodyKind::Length(n)) if n as usize <= MAX_BODY => n as usize,
                        Ok(http::BodyKind::None) => 0,
                        _ => {
                            break (
                                error(400, "admin requests take a Content-Length body up to 1 MiB"),
                                false,
                                buf.len(),
                            )
                        }
                    };
                    if buf.len() < head.head_len + body_len {
                        // fall through to read more
                    } else {
                        let keep = !head.headers.iter().any(|h| {
                            h.name.eq_ignore_ascii_case("connection")
                                && h.value.eq_ignore_ascii_case(b"close")
                        }) && head.version == http::Version::Http11;
                        let (path, query) = match head.target.split_once('?') {
                            Some((p, q)) => (p, q),
                            None => (head.target, ""),
                        };
                        let auth = head
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                            .map(|h| h.value);
                        let call = Call {
                            method: head.method,
                            path,
                            query,
                            body: &buf[head.head_len..head.head_len + body_len],
                            auth,
                        };
                        let reply = route(&shared, &settings, &call).await;
                        break (reply, keep, head.head_len + body_len);
                    }
                }
                Ok(None) => {}
                Err(e) => break (error(e.status(), &e.to_string()), false, buf.len()),
            }
            let len = buf.len();
            if buf.capacity() - len < 4096 {
                buf.reserve(8192);
            }
            let cap = buf.capacity();
            use monoio::buf::IoBufMut;
            match monoio::time::timeout(TIMEOUT, stream.read(buf.slice_mut(len..cap))).await {
                Ok((Ok(n), slice)) if n > 0 => buf = slice.into_inner(),
                _ => return,
            }
        };
        buf.drain(..consumed.min(buf.len()));
        let mut out = Vec::with_capacity(reply.body.len() + 128);
        http::write::status_line(&mut out, http::Version::Http11, reply.status, None);
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(reply.content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        http::write::write_u64(&mut out, reply.body.len() as u64);
        out.extend_from_slice(b"\r\n");
        if let Some(allow) = reply.allow {
            out.extend_from_slice(b"Allow: ");
            out.extend_from_slice(allow.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if reply.status == 401 {
            out.extend_from_slice(b"WWW-Authenticate: Bearer\r\n");
        }
        if !keep {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(reply.body.as_bytes());
        let (res, _) = stream.write_all(out).await;
        if res.is_err() || !keep {
            return;
        }
    }
}

/// Whether a call may go on. With `token_env` naming a variable that is set, the call needs
/// `Authorization: Bearer <value>`; with it unset, a loopback API is open (the documented
/// default) but a non-loopback one refuses every call (fail closed: start-up checks the
/// variable, and it must not open the API by disappearing later).
fn authorized(auth: Option<&[u8]>, token_env: Option<&str>, public: bool) -> bool {
    let token = token_env
        .and_then(|var| std::env::var(var).ok())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return !public;
    };
    let Some(given) = auth.and_then(bearer_credentials) else {
        return false;
    };
    // Constant time in the token's length.
    given.len() == token.len()
        && given
            .iter()
            .zip(token.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The token of `Bearer <token>`. RFC 9110 §11.1: the scheme is case-insensitive
/// (`bearer`, `BEARER`), and one or more spaces separate it from the credentials.
fn bearer_credentials(header: &[u8]) -> Option<&[u8]> {
    let space = header.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = header.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(&rest[start..])
}

/// One admin request.
struct Call<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    body: &'a [u8],
    auth: Option<&'a [u8]>,
}

async fn route(
    shared: &Arc<Shared>,
    started: &crate::config::model::Admin,
    call: &Call<'_>,
) -> Reply {
    let active = shared.active();
    let (method, path) = (call.method, call.path);
    let open = method == "GET" && path == "/health";
    // The token rule is the listener's, fixed at start like its address: a reload that drops
    // `token_env` (or the whole `[admin]`) must not open an API bound to require a token.
    if !open
        && !authorized(
            call.auth,
            started.token_env.as_deref(),
            !started.listen.ip().is_loopback(),
        )
    {
        return error(401, "Missing or invalid admin token");
    }
    if let Some(name) = path
        .strip_prefix("/upstreams/")
        .and_then(|rest| rest.strip_suffix("/endpoints"))
    {
        return match method {
            "PUT" => register(shared, name, call.body).await,
            "DELETE" => deregister(shared, name, call.query),
            _ => not_allowed("PUT, DELETE"),
        };
    }
    match (method, path.as_bytes()) {
        ("GET", b"/health") => Reply::json(200, health(shared).to_string()),
        ("GET", b"/metrics") => {
            let mut body = String::with_capacity(16 * 1024);
            let now = crate::clock::now_ms();
            let states: Vec<(&str, u8)> = active
                .config
                .upstreams
                .iter()
                .zip(&active.upstreams)
                .map(|(u, s)| {
                    let state = s
                        .breaker
                        .as_ref()
                        .map_or(0, |(b, _)| b.snapshot(now).state.metric_value());
                    (u.name.as_str(), state)
                })
                .collect();
            let dropped = shared
                .spans_dropped
                .load(std::sync::atomic::Ordering::Relaxed);
            let access_dropped = shared
                .access_log_dropped
                .load(std::sync::atomic::Ordering::Relaxed);
            let rejected = shared
                .connections_rejected
                .load(std::sync::atomic::Ordering::Relaxed);
            let shards: Vec<(u64, u64)> = shared
                .cache_gauges
                .iter()
                .map(|(e, b)| {
                    (
                        e.load(std::sync::atomic::Ordering::Relaxed),
                        b.load(std::sync::atomic::Ordering::Relaxed),
                    )
                })
                .collect();
            shared.metrics.render(&mut body, &|w| {
                w.breaker_states(states.iter().copied());
                w.cache_shards(&shards);
                w.spans_dropped(dropped);
                w.access_log_dropped(access_dropped);
                w.connections_rejected(rejected);
            });
            Reply {
                status: 200,
                body,
                content_type: crate::metrics::CONTENT_TYPE,
                allow: None,
            }
        }
        ("GET", b"/routes") => Reply::json(200, routes(shared).to_string()),
        ("GET", b"/upstreams") => Reply::json(200, upstreams(shared).to_string()),
        ("POST", b"/reload") => {
            // Loading the file resolves its host names: off this thread, so /health and
            // /metrics keep answering. The answer waits for the outcome (no timeout: the
            // reload applies whenever it completes, so answering earlier would misreport it).
            let s = shared.clone();
            match blocking(move || crate::runtime::reload::reload(&s).map_err(|e| e.to_string()))
                .await
            {
                Ok(Ok(())) => Reply::json(200, json!({"status": "reloaded"}).to_string()),
                Ok(Err(e)) => error(400, &e),
                Err(busy) => busy,
            }
        }
        ("DELETE", b"/cache") => purge_cache(&active, call.query),
        (_, b"/health" | b"/metrics" | b"/routes" | b"/upstreams") => not_allowed("GET"),
        (_, b"/reload") => not_allowed("POST"),
        (_, b"/cache") => not_allowed("DELETE"),
        _ => error(404, "No such admin endpoint"),
    }
}

/// `GET /routes`: the compiled route table in precedence order (the order lookups try
/// candidates), each pattern with its match rules and the route's policies.
pub fn routes(shared: &Shared) -> serde_json::Value {
    let active = shared.active();
    let cfg = &active.config;
    let rows: Vec<_> = active
        .router
        .describe()
        .into_iter()
        .map(|row| {
            let r = &cfg.routes[row.route];
            json!({
                "route": row.name,
                "pattern": row.pattern,
                "methods": row.methods,
                "hosts": row.hosts,
                "headers": row.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                // An aggregate's calls name their upstreams; the route itself calls none.
                "upstream": r.aggregate.is_none().then(|| cfg.upstreams[r.upstream].name.as_str()),
                "aggregate": r.aggregate.map(|a| aggregate(cfg, a)),
                "split": r.split.iter().map(|s| json!({"upstream": cfg.upstreams[s.upstream].name, "weight": s.weight})).collect::<Vec<_>>(),
                "sticky": r.sticky.as_ref().map(|s| match s {
                    crate::config::model::Sticky::Header(n) => format!("header:{n}"),
                    crate::config::model::Sticky::Cookie(n) => format!("cookie:{n}"),
                    crate::config::model::Sticky::Ip => "ip".to_string(),
                }),
                "strip_prefix": r.strip_prefix,
                "rewrite": r.rewrite,
                "timeout_ms": r.timeout.unwrap_or(cfg.upstreams[r.upstream].read_timeout).as_millis() as u64,
                "auth": r.auth.map(|a| cfg.auth[a].name.as_str()),
                "rate_limits": r.rate_limits.iter().map(|&l| cfg.rate_limits[l].name.as_str()).collect::<Vec<_>>(),
                "cache": r.cache.and_then(|c| cfg.cache.as_ref().map(|cache| cache.rules[c].name.as_str())),
                "client": r.client.and_then(|c| cfg.bff.as_ref().map(|b| b.clients[c].name.as_str())),
                "transform": r.transform.map(|t| cfg.transforms[t].name.as_str()),
                "websocket": r.websocket,
            })
        })
        .collect();
    json!({"generation": active.generation, "routes": rows})
}

/// An aggregate's row details: its calls in start order and its critical path.
fn aggregate(cfg: &crate::config::model::Config, id: usize) -> serde_json::Value {
    let plan = &cfg.aggregates[id].compiled.plan;
    let calls: Vec<_> = plan
        .calls
        .iter()
        .map(|c| {
            let waits: Vec<&str> = plan
                .calls
                .iter()
                .enumerate()
                .filter(|(d, _)| c.deps & (1 << d) != 0)
                .map(|(_, d)| d.name.as_str())
                .collect();
            json!({
                "call": c.name,
                "upstream": c.upstream,
                "required": c.required,
                "timeout_ms": c.timeout.as_millis() as u64,
                "waits_for": waits,
            })
        })
        .collect();
    json!({
        "timeout_ms": plan.timeout.as_millis() as u64,
        "calls": calls,
        "critical_path": plan.critical_path.iter().map(|&i| plan.calls[i].name.as_str()).collect::<Vec<_>>(),
        "worst_case_ms": plan.worst_case().as_millis() as u64,
    })
}

/// `GET /upstreams`: each upstream's policy and endpoints, with their health and the
/// requests in flight to each (summed over workers).
pub fn upstreams(shared: &Shared) -> serde_json::Value {
    let active = shared.active();
    let now = clock::now_ms();
    let list: Vec<_> = active
        .config
        .upstreams
        .iter()
        .zip(&active.upstreams)
        .map(|(u, state)| {
            let endpoints: Vec<_> = u
                .endpoints
                .iter()
                .zip(&state.endpoints)
                .map(|(e, h)| {
                    let ejected = h.ejected(now);
                    json!({
                        "url": e.url,
                        "address": e.addr.to_string(),
                        "weight": e.weight,
                        "healthy": h.active_healthy() && !ejected,
                        "active_check": if h.active_healthy() { "pass" } else { "fail" },
                        "ejected": ejected,
                        "in_flight": h.inflight(),
                        "metadata": e.metadata.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()),
                        "source": e.source.as_str(),
                    })
                })
                .collect();
            json!({
                "name": u.name,
                "balance": match &u.balance {
                    crate::config::model::Balance::RoundRobin => "round_robin".to_string(),
                    crate::config::model::Balance::LeastRequest => "least_request".to_string(),
                    crate::config::model::Balance::HashHeader(h) => format!("hash:header:{h}"),
                    crate::config::model::Balance::HashIp => "hash:ip".to_string(),
                },
                "connect_timeout_ms": u.connect_timeout.as_millis() as u64,
                "read_timeout_ms": u.read_timeout.as_millis() as u64,
                "retries": u.retries,
                "max_idle_per_worker": u.max_idle_per_worker,
                "tls": u.tls.as_ref().map(|t| json!({
                    "roots": match &t.roots {
                        crate::config::model::TlsRoots::File(path, _) => path.display().to_string(),
                        crate::config::model::TlsRoots::System(_) => "system".to_string(),
                    },
                    "server_name": t.server_name.as_ref().map(|n| n.to_str().into_owned()),
                    "client_cert": t.client_cert.as_ref().map(|p| p.display().to_string()),
                })),
                "breaker": breaker_json(state, now),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({"upstreams": list})
}

/// An upstream's breaker: state, failures in the window and the last transition. An upstream
/// without a breaker is reported closed, since it never rejects.
fn breaker_json(state: &UpstreamShared, now: u64) -> serde_json::Value {
    match &state.breaker {
        Some((b, _)) => {
            let snap = b.snapshot(now);
            json!({
                "state": snap.state.as_str(),
                "failures": snap.failures,
                "since": clock::rfc3339(clock::unix_ms(snap.since_ms)),
            })
        }
        None => json!({
            "state": "closed",
            "failures": 0,
            "since": clock::rfc3339(clock::unix_ms(0)),
        }),
    }
}

/// `GET /health`: "degraded" while any breaker is open or any upstream has no endpoint in
/// rotation (it then serves in panic mode, on all of them).
pub fn health(shared: &Shared) -> serde_json::Value {
    let active = shared.active();
    let now = clock::now_ms();
    let mut degraded = false;
    let mut upstreams = serde_json::Map::new();
    for (u, state) in active.config.upstreams.iter().zip(&active.upstreams) {
        let endpoints: Vec<_> = u
            .endpoints
            .iter()
            .zip(&state.endpoints)
            .map(|(e, h)| json!({"url": e.url, "healthy": h.available(now), "weight": e.weight}))
            .collect();
        let breaker = breaker_json(state, now);
        degraded |= breaker["state"] == "open" || all_out(&state.endpoints, now);
        upstreams.insert(
            u.name.clone(),
            json!({
                "breaker": breaker["state"],
                "failures": breaker["failures"],
                "since": breaker["since"],
                "endpoints": endpoints,
            }),
        );
    }
    json!({
        "status": if degraded { "degraded" } else { "ok" },
        "workers": shared.workers,
        "upstreams": upstreams,
    })
}

/// `PUT /upstreams/{name}/endpoints` with `{"url", "weight", "metadata"}`.
async fn register(shared: &Shared, name: &str, body: &[u8]) -> Reply {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Registration {
        url: String,
        weight: Option<u32>,
        metadata: Option<serde_json::Value>,
    }
    let name = percent_decode(name);
    let reg: Registration = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                400,
                &format!("expected {{\"url\": \"http://host:port\", \"weight\": n, \"metadata\": {{...}}}}: {e}"),
            )
        }
    };
    let weight = reg.weight.unwrap_or(1);
    // The URL's host name is resolved on a thread of its own (getaddrinfo blocks), so a slow
    // resolver never stalls the other admin calls; the registration waits for it, up to
    // RESOLVE_TIMEOUT, and changes nothing when it gives up.
    let url = reg.url.clone();
    let lookup = blocking(move || crate::config::parse_endpoint(&url, weight));
    let mut endpoints = match monoio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(Ok(e))) => e,
        Ok(Ok(Err(e))) => return error(400, &e),
        Ok(Err(busy)) => return busy,
        Err(_) => {
            return error(
                504,
                &format!(
                    "resolving {:?} took longer than {}s; nothing was registered",
                    reg.url,
                    RESOLVE_TIMEOUT.as_secs()
                ),
            )
        }
    };
    let metadata = reg.metadata.as_ref().map(|m| m.to_string());
    for e in &mut endpoints {
        e.metadata = metadata.clone();
    }
    let mut discovery = shared.discovery();
    let created = match discovery.register(&name, endpoints) {
        Ok(created) => created,
        Err(e) => return error(e.status(), &e.to_string()),
    };
    if let Err(e) = shared.publish(&discovery, None) {
        return error(500, &e.to_string());
    }
    crate::info!(
        "upstream {name}: endpoint {} registered (weight {weight})",
        reg.url
    );
    Reply::json(
        if created { 201 } else { 200 },
        json!({
            "upstream": name,
            "endpoint": {"url": reg.url, "weight": weight, "metadata": reg.metadata},
        })
        .to_string(),
    )
}

/// `DELETE /upstreams/{name}/endpoints?url=...`
/// `DELETE /cache[?rule=NAME]`: purges one rule's entries, or every rule's, on every worker
/// (each rule's purge generation moves: the next lookup anywhere misses). Answered once the
/// purge is visible to every worker.
fn purge_cache(active: &crate::state::shared::Active, query: &str) -> Reply {
    let rules = active
        .config
        .cache
        .as_ref()
        .map_or(&[][..], |c| &c.rules[..]);
    let wanted = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("rule="))
        .map(percent_decode);
    let purged: Vec<&str> = match wanted {
        Some(name) => {
            let Some(id) = rules.iter().position(|r| r.name == name) else {
                return error(404, &format!("no cache rule named {name:?}"));
            };
            active.cache.purge(id);
            vec![rules[id].name.as_str()]
        }
        None => {
            active.cache.purge_all();
            rules.iter().map(|r| r.name.as_str()).collect()
        }
    };
    crate::info!("cache purged: {}", purged.join(", "));
    Reply::json(200, json!({ "purged": purged }).to_string())
}

fn deregister(shared: &Shared, name: &str, query: &str) -> Reply {
    let name = percent_decode(name);
    let Some(url) = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("url="))
        .map(percent_decode)
    else {
        return error(400, "missing query parameter url");
    };
    let mut discovery = shared.discovery();
    if let Err(e) = discovery.deregister(&name, &url) {
        return error(e.status(), &e.to_string());
    }
    if let Err(e) = shared.publish(&discovery, None) {
        return error(500, &e.to_string());
    }
    crate::info!("upstream {name}: endpoint {url} deregistered");
    Reply::json(200, json!({"upstream": name, "removed": url}).to_string())
}

/// `%XX` escapes and `+` (as a space, form encoding) decoded; invalid escapes kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{bearer_credentials, percent_decode};

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_credentials(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"BEARER  abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"Basic abc"), None);
        assert_eq!(bearer_credentials(b"Bearerabc"), None);
        assert_eq!(bearer_credentials(b"Bearer "), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("http%3A%2F%2F127.0.0.1%3A9005"),
            "http://127.0.0.1:9005"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
