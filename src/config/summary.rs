//! The human summary `dispatch check` prints: what the gateway will do with this config.

use std::fmt::Write;

use super::model::{AccessLog, Balance, Config, Driver, LogLevel, Route, ServerTls};
use super::units::{format_duration as dur, format_size};

pub fn summary(cfg: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_summary(&mut out, cfg);
    out
}

/// A certificate expiring within this many days is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `[server.tls]`: the addresses and settings, then each certificate's names and expiry, with
/// a `warning:` line for one that has expired or expires within [`EXPIRY_WARNING_DAYS`] of
/// `now` (Unix seconds).
fn write_tls(out: &mut String, tls: &ServerTls, now: i64) -> std::fmt::Result {
    let listen: Vec<String> = tls.listen.iter().map(ToString::to_string).collect();
    writeln!(
        out,
        "tls: {} (TLS {}+, ALPN {}, handshake timeout {}, {})",
        listen.join(", "),
        tls.min_version,
        tls.alpn.join(", "),
        dur(tls.handshake_timeout),
        match &tls.client_ca {
            Some(ca) => format!("client certificates required, signed by {}", ca.display()),
            None => "no client certificates".to_string(),
        },
    )?;
    for (i, c) in tls.certificates.iter().enumerate() {
        let mut names = c.dns_names.clone();
        names.extend(c.ip_names.iter().cloned());
        let names = if names.is_empty() {
            "no subjectAltName: SNI never picks it".to_string()
        } else {
            names.join(", ")
        };
        let expires = crate::clock::rfc3339(c.not_after.max(0) as u64 * 1000);
        let date = expires.get(..10).unwrap_or(&expires);
        writeln!(
            out,
            "  certificate {}{}: {names}; expires {date}",
            c.cert.display(),
            if i == 0 { " (default)" } else { "" },
        )?;
        let left = c.not_after - now;
        if left <= 0 {
            writeln!(
                out,
                "warning: certificate {} expired on {date}",
                c.cert.display()
            )?;
        } else if left < EXPIRY_WARNING_DAYS * 86_400 {
            writeln!(
                out,
                "warning: certificate {} expires in {} day(s), on {date}",
                c.cert.display(),
                left / 86_400
            )?;
        }
    }
    Ok(())
}

fn write_summary(out: &mut String, cfg: &Config) -> std::fmt::Result {
    let server = &cfg.server;
    let driver = match server.driver {
        Driver::Auto => "auto",
        Driver::IoUring => "io_uring",
        Driver::Epoll => "epoll",
    };
    writeln!(out, "config: {}", cfg.path.display())?;
    writeln!(
        out,
        "workers: {} ({}), driver {driver}, drain timeout {}",
        server.workers,
        if server.pin_workers {
            "pinned"
        } else {
            "not pinned"
        },
        dur(server.drain_timeout),
    )?;
    let listen: Vec<String> = server.listen.iter().map(ToString::to_string).collect();
    writeln!(out, "listen: {}", listen.join(", "))?;
    if let Some(tls) = &server.tls {
        write_tls(out, tls, unix_now())?;
    }
    let l = &server.limits;
    writeln!(
        out,
        "limits: request line {}, header block {}, {} headers, body {}, timeouts header {} body {} keep-alive {}, {} connections",
        format_size(l.max_request_line as u64),
        format_size(l.max_header_bytes as u64),
        l.max_headers,
        format_size(l.max_body),
        dur(l.header_timeout),
        dur(l.body_timeout),
        dur(l.keepalive_timeout),
        l.max_connections,
    )?;
    match &cfg.admin {
        None => writeln!(out, "admin: none (no [admin] section, no admin listener)")?,
        Some(a) => match &a.token_env {
            Some(var) => writeln!(out, "admin: {} (token from ${var})", a.listen)?,
            None => writeln!(out, "admin: {} (no token)", a.listen)?,
        },
    }
    let level = match cfg.log.level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    let access = match cfg.log.access {
        AccessLog::Off => "off",
        AccessLog::Json => "json",
    };
    writeln!(out, "log: level {level}, access log {access}")?;

    writeln!(out, "upstreams ({}):", cfg.upstreams.len())?;
    for u in &cfg.upstreams {
        let balance = match &u.balance {
            Balance::RoundRobin => "round_robin".to_string(),
            Balance::LeastRequest => "least_request".to_string(),
            Balance::HashHeader(name) => format!("hash:header:{name}"),
            Balance::HashIp => "hash:ip".to_string(),
        };
        writeln!(
            out,
            "  {}: {balance}, connect timeout {}, read timeout {}, {} retries, pool {} per worker (idle timeout {})",
            u.name,
            dur(u.connect_timeout),
            dur(u.read_timeout),
            u.retries,
            u.max_idle_per_worker,
            dur(u.idle_timeout),
        )?;
        if let Some(t) = &u.tls {
            let roots = match &t.roots {
                super::model::TlsRoots::File(path, n) => {
                    format!("tls_ca {} ({n} certificates)", path.display())
                }
                super::model::TlsRoots::System(n) => format!("system roots ({n} certificates)"),
            };
            let name = match &t.server_name {
                Some(name) => format!("server name {}", name.to_str()),
                None => "server name from each URL".to_string(),
            };
            let client = match &t.client_cert {
                Some(path) => format!("client certificate {}", path.display()),
                None => "no client certificate".to_string(),
            };
            writeln!(out, "    tls: verified against {roots}, {name}, {client}")?;
        }
        if let Some(b) = &u.breaker {
            let mut on = Vec::new();
            for (set, kind) in [
                (b.on_connect, "connect"),
                (b.on_timeout, "timeout"),
                (b.on_5xx, "5xx"),
            ] {
                if set {
                    on.push(kind);
                }
            }
            writeln!(
                out,
                "    breaker: opens after {} failures ({}) in {}, half-open after {}, {} probes{}",
                b.failure_threshold,
                on.join(", "),
                dur(b.window),
                dur(b.recovery_timeout),
                b.half_open_probes,
                b.fallback
                    .as_ref()
                    .map_or(String::new(), |f| format!(", fallback {}", f.status)),
            )?;
        }
        if let Some(h) = &u.health_check {
            writeln!(
                out,
                "    health check: GET {} every {} (timeout {}), unhealthy after {}, healthy after {}",
                h.path,
                dur(h.interval),
                dur(h.timeout),
                h.unhealthy_threshold,
                h.healthy_threshold,
            )?;
        }
        match u.outlier.consecutive_failures {
            0 => writeln!(out, "    outlier ejection: off")?,
            n => writeln!(
                out,
                "    outlier ejection: after {n} consecutive failures, for {} (doubling, at most {})",
                dur(u.outlier.base_ejection),
                dur(u.outlier.max_ejection),
            )?,
        }
        for e in &u.endpoints {
            writeln!(out, "    {} -> {} (weight {})", e.url, e.addr, e.weight)?;
        }
    }

    write_policies(out, cfg)?;
    write_bff(out, cfg)?;
    let routes: Vec<&Route> = cfg
        .routes
        .iter()
        .filter(|r| r.aggregate.is_none())
        .collect();
    writeln!(out, "routes ({}):", routes.len())?;
    for r in routes {
        write_route(out, cfg, r)?;
    }
    if !cfg.aggregates.is_empty() {
        writeln!(out, "aggregates ({}):", cfg.aggregates.len())?;
    }
    for a in &cfg.aggregates {
        write_aggregate(out, cfg, a)?;
    }
    Ok(())
}

fn write_aggregate(
    out: &mut String,
    cfg: &Config,
    a: &super::model::Aggregate,
) -> std::fmt::Result {
    let r = &cfg.routes[a.route];
    let plan = &a.compiled.plan;
    writeln!(
        out,
        "  {}: {} call{}, timeout {}",
        a.name,
        plan.calls.len(),
        if plan.calls.len() == 1 { "" } else { "s" },
        dur(plan.timeout)
    )?;
    writeln!(out, "    paths: {}", r.paths.join(", "))?;
    writeln!(
        out,
        "    methods: {}",
        r.methods
            .as_ref()
            .map_or("any".to_string(), |l| l.join(", "))
    )?;
    let mut policies = Vec::new();
    if let Some(p) = r.auth {
        policies.push(format!("auth {}", cfg.auth[p].name));
    }
    if !r.rate_limits.is_empty() {
        let names: Vec<&str> = r
            .rate_limits
            .iter()
            .map(|&l| cfg.rate_limits[l].name.as_str())
            .collect();
        policies.push(format!("rate_limits {}", names.join(" + ")));
    }
    if !policies.is_empty() {
        writeln!(out, "    policies: {}", policies.join(", "))?;
    }
    writeln!(
        out,
        "    critical path: {} (worst case {})",
        plan.critical_path_text(),
        dur(plan.worst_case())
    )
}

fn write_policies(out: &mut String, cfg: &Config) -> std::fmt::Result {
    use super::model::{ApiKeyFrom, AuthKind, JwtKeys};
    if !cfg.auth.is_empty() {
        writeln!(out, "auth ({}):", cfg.auth.len())?;
    }
    for a in &cfg.auth {
        let what = match &a.kind {
            AuthKind::Jwt(j) => {
                let keys = match &j.keys {
                    JwtKeys::File(path) => format!("keys {}", path.display()),
                    JwtKeys::SecretEnv(var) => format!("secret ${var}"),
                };
                format!("jwt {}, {keys}", j.algorithms.join("/"))
            }
            AuthKind::ApiKey(k) => {
                let from = match &k.from {
                    ApiKeyFrom::Header(h) => format!("header {h}"),
                    ApiKeyFrom::Query(q) => format!("query {q}"),
                };
                format!("api_key from {from}, keys {}", k.keys_file.display())
            }
        };
        let forward: Vec<&str> = a.forward.iter().map(|(_, h)| h.as_str()).collect();
        writeln!(out, "  {}: {what}; forwards {}", a.name, forward.join(", "))?;
    }
    if !cfg.rate_limits.is_empty() {
        writeln!(out, "rate limits ({}):", cfg.rate_limits.len())?;
    }
    for r in &cfg.rate_limits {
        use super::model::RateAlgorithm as A;
        let rule = match r.algorithm {
            A::FixedWindow | A::SlidingWindowLog | A::SlidingWindowCounter => {
                format!("{} per {}", r.limit, dur(r.window))
            }
            A::TokenBucket | A::LeakyBucket => format!("{}/s, burst {}", r.rate, r.burst),
        };
        let tiers = match &r.tier {
            None => String::new(),
            Some(by) => format!(", {} tiers by {by}", r.tiers.len()),
        };
        writeln!(
            out,
            "  {}: {} {rule}, key {}{tiers}",
            r.name,
            r.algorithm.name(),
            r.key
        )?;
    }
    if let Some(c) = &cfg.cache {
        writeln!(
            out,
            "cache: {} per worker, objects up to {}, {} rules:",
            super::units::format_size(c.max_bytes_per_worker),
            super::units::format_size(c.max_object),
            c.rules.len()
        )?;
        for r in &c.rules {
            let secs = |s: u64| dur(std::time::Duration::from_secs(s));
            let mut parts = vec![if r.ttl == 0 {
                "ttl none (the upstream's max-age only)".to_string()
            } else {
                format!("ttl {}", secs(r.ttl))
            }];
            if r.stale_while_revalidate > 0 {
                parts.push(format!(
                    "stale-while-revalidate {}",
                    secs(r.stale_while_revalidate)
                ));
            }
            if r.stale_if_error > 0 {
                parts.push(format!("stale-if-error {}", secs(r.stale_if_error)));
            }
            if !r.vary.is_empty() {
                parts.push(format!("vary {}", r.vary.join(", ")));
            }
            if r.per_user {
                parts.push("per user".to_string());
            }
            for inv in &r.invalidate_on {
                parts.push(format!("purged by {}", inv.text));
            }
            writeln!(out, "  {}: {}", r.name, parts.join("; "))?;
        }
    }
    if let Some(c) = &cfg.compression {
        let codings: Vec<&str> = c.algorithms.iter().map(|a| a.token()).collect();
        writeln!(
            out,
            "compression: {} from {}, types {}",
            codings.join(", "),
            super::units::format_size(c.min_size),
            c.types.join(", ")
        )?;
    }
    Ok(())
}

/// `[bff]`: the header, and each client's prefix and defaults.
fn write_bff(out: &mut String, cfg: &Config) -> std::fmt::Result {
    let Some(bff) = &cfg.bff else {
        return Ok(());
    };
    let header = bff
        .header
        .as_deref()
        .map_or(String::new(), |h| format!(", header {h}"));
    let n = bff.clients.len();
    let plural = if n == 1 { "" } else { "s" };
    writeln!(out, "bff ({n} client{plural}{header}):")?;
    for c in &bff.clients {
        let mut parts = vec![match &c.prefix {
            Some(p) => format!("prefix {p} (removed before routing)"),
            None => "no prefix (header only)".to_string(),
        }];
        if let Some(a) = c.auth {
            parts.push(format!("default auth {}", cfg.auth[a].name));
        }
        if !c.rate_limits.is_empty() {
            let names: Vec<&str> = c
                .rate_limits
                .iter()
                .map(|&l| cfg.rate_limits[l].name.as_str())
                .collect();
            parts.push(format!("default rate_limits {}", names.join(" + ")));
        }
        writeln!(out, "  {}: {}", c.name, parts.join(", "))?;
    }
    Ok(())
}

fn write_route(out: &mut String, cfg: &Config, r: &Route) -> std::fmt::Result {
    writeln!(out, "  {} -> {}", r.name, cfg.upstreams[r.upstream].name)?;
    writeln!(out, "    paths: {}", r.paths.join(", "))?;
    let any =
        |list: &Option<Vec<String>>| list.as_ref().map_or("any".to_string(), |l| l.join(", "));
    writeln!(out, "    methods: {}", any(&r.methods))?;
    writeln!(out, "    hosts: {}", any(&r.hosts))?;
    if let (Some(c), Some(bff)) = (r.client, &cfg.bff) {
        writeln!(out, "    client: {}", bff.clients[c].name)?;
    }
    if !r.headers.is_empty() {
        let headers: Vec<String> = r
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v:?}"))
            .collect();
        writeln!(out, "    headers: {}", headers.join(", "))?;
    }
    let mut policies = Vec::new();
    if !r.split.is_empty() {
        let sides: Vec<String> = r
            .split
            .iter()
            .map(|s| format!("{} {}", cfg.upstreams[s.upstream].name, s.weight))
            .collect();
        policies.push(format!("split {}", sides.join(" / ")));
    }
    if let Some(sticky) = &r.sticky {
        policies.push(match sticky {
            crate::config::model::Sticky::Header(n) => format!("sticky header:{n}"),
            crate::config::model::Sticky::Cookie(n) => format!("sticky cookie:{n}"),
            crate::config::model::Sticky::Ip => "sticky ip".to_string(),
        });
    }
    if let Some(a) = r.auth {
        policies.push(format!("auth {}", cfg.auth[a].name));
    }
    if !r.rate_limits.is_empty() {
        let names: Vec<&str> = r
            .rate_limits
            .iter()
            .map(|&l| cfg.rate_limits[l].name.as_str())
            .collect();
        policies.push(format!("rate_limits {}", names.join(" + ")));
    }
    if let (Some(c), Some(cache)) = (r.cache, &cfg.cache) {
        policies.push(format!("cache {}", cache.rules[c].name));
    }
    if r.strip_prefix {
        policies.push("strip_prefix".to_string());
    }
    if let Some(rewrite) = &r.rewrite {
        policies.push(format!("rewrite {rewrite}"));
    }
    if r.websocket {
        policies.push("websocket".to_string());
    }
    if let Some(t) = r.transform {
        let t = &cfg.transforms[t];
        let sides: Vec<&str> = [
            (
                "request",
                t.request.is_some() || !t.request_headers.is_empty(),
            ),
            (
                "response",
                t.response.is_some() || !t.response_headers.is_empty(),
            ),
        ]
        .into_iter()
        .filter_map(|(side, present)| present.then_some(side))
        .collect();
        policies.push(format!("transform {} ({})", t.name, sides.join(" + ")));
    }
    let timeout = r.timeout.unwrap_or(cfg.upstreams[r.upstream].read_timeout);
    let source = if r.timeout.is_some() {
        "route"
    } else {
        "upstream"
    };
    policies.push(format!("timeout {} ({source})", dur(timeout)));
    writeln!(out, "    policies: {}", policies.join(", "))
}
