//! The admin API on `admin.listen` (BEHAVIOR.md "Admin API"), served by its own thread so
//! that operator calls never take time from a worker's request path.
//!
//! Owns authentication of admin calls (`admin.token_env`: when that variable is set, every
//! call but `GET /health` needs `Authorization: Bearer <value>`) and the endpoints available
//! in this milestone: `GET /health`, `GET /metrics`, `GET /routes`, `GET /upstreams` and
//! `POST /reload`. Any other path is a JSON 404.

use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use serde_json::json;

use crate::http;
use crate::runtime::shared::Shared;

const MAX_BODY: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

pub fn spawn(shared: Arc<Shared>, listener: std::net::TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("dispatch-admin".into())
        .spawn(move || {
            let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build();
            match rt {
                Ok(mut rt) => rt.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            crate::error!("admin: cannot register listener: {e}");
                            return;
                        }
                    };
                    loop {
                        if let Ok((stream, _)) = listener.accept().await {
                            monoio::spawn(serve(shared.clone(), stream));
                        }
                    }
                }),
                Err(e) => crate::error!("admin: cannot start its event loop: {e}"),
            }
        })?;
    Ok(())
}

struct Reply {
    status: u16,
    body: String,
    content_type: &'static str,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            content_type: "application/json",
        }
    }
}

fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {"code": status, "message": message}}).to_string(),
    )
}

async fn serve(shared: Arc<Shared>, mut stream: TcpStream) {
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
                        let path = head.target.split('?').next().unwrap_or_default().as_bytes();
                        let auth = head
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                            .map(|h| h.value);
                        let reply = route(&shared, head.method, path, auth);
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

fn authorized(auth: Option<&[u8]>, token_env: Option<&str>) -> bool {
    let Some(var) = token_env else { return true };
    let Ok(token) = std::env::var(var) else {
        return true;
    };
    let Some(given) = auth.and_then(|a| a.strip_prefix(b"Bearer ")) else {
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

fn route(shared: &Shared, method: &str, path: &[u8], auth: Option<&[u8]>) -> Reply {
    let active = shared.active();
    let cfg = &active.config;
    let open = method == "GET" && path == b"/health";
    if !open && !authorized(auth, cfg.admin.token_env.as_deref()) {
        return error(401, "Missing or invalid admin token");
    }
    match (method, path) {
        ("GET", b"/health") => Reply::json(200, health(shared).to_string()),
        ("GET", b"/metrics") => {
            let mut body = String::with_capacity(16 * 1024);
            // No upstream has a breaker yet (a later capability): each is reported closed, as
            // in GET /health.
            let active = shared.active();
            let names: Vec<&str> = active
                .config
                .upstreams
                .iter()
                .map(|u| u.name.as_str())
                .collect();
            shared.metrics.render(&mut body, &|w| {
                w.breaker_states(names.iter().map(|n| (*n, 0u8)))
            });
            Reply {
                status: 200,
                body,
                content_type: crate::metrics::CONTENT_TYPE,
            }
        }
        ("GET", b"/routes") => Reply::json(200, routes(shared).to_string()),
        ("GET", b"/upstreams") => Reply::json(200, upstreams(shared).to_string()),
        ("POST", b"/reload") => match crate::runtime::reload::reload(shared) {
            Ok(()) => Reply::json(200, json!({"status": "reloaded"}).to_string()),
            Err(e) => error(400, &e.to_string()),
        },
        (_, b"/health" | b"/metrics" | b"/routes" | b"/upstreams") => {
            error(405, "Method not allowed")
        }
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
                "upstream": cfg.upstreams[r.upstream].name,
                "strip_prefix": r.strip_prefix,
                "rewrite": r.rewrite,
                "timeout_ms": r.timeout.unwrap_or(cfg.upstreams[r.upstream].read_timeout).as_millis() as u64,
            })
        })
        .collect();
    json!({"generation": active.generation, "routes": rows})
}

/// `GET /upstreams`: each upstream's policy and endpoints.
pub fn upstreams(shared: &Shared) -> serde_json::Value {
    let active = shared.active();
    let list: Vec<_> = active
        .config
        .upstreams
        .iter()
        .map(|u| {
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
                "endpoints": u.endpoints.iter().map(|e| json!({
                    "url": e.url, "address": e.addr.to_string(), "weight": e.weight, "healthy": true,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"upstreams": list})
}

/// `GET /health`: upstreams and their endpoints. Breakers and health checks are later
/// capabilities: until then every breaker is closed and every endpoint is in rotation.
pub fn health(shared: &Shared) -> serde_json::Value {
    let active = shared.active();
    let mut upstreams = serde_json::Map::new();
    for u in &active.config.upstreams {
        let endpoints: Vec<_> = u
            .endpoints
            .iter()
            .map(|e| json!({"url": e.url, "healthy": true, "weight": e.weight}))
            .collect();
        upstreams.insert(
            u.name.clone(),
            json!({"breaker": "closed", "failures": 0, "endpoints": endpoints}),
        );
    }
    json!({"status": "ok", "workers": shared.workers, "upstreams": upstreams})
}
