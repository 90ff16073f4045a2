//! From [`file::File`] (what was written) to [`model::Config`] (what runs): defaults applied,
//! strings with structure parsed (addresses, URLs, `balance`, host patterns), endpoint host
//! names resolved, and references turned into indices.
//!
//! Each check reports the first problem at the key path of the offending value. Host names in
//! endpoint URLs are resolved here, once, with the system resolver: a load (or a reload, which
//! runs off the request path) may block on DNS; the request path never does.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration as StdDuration;

use super::error::{did_you_mean, ConfigError};
use super::file::{self, default, Named, Workers};
use super::model;
use super::model::MAX_ENDPOINTS;
use super::source::{KeyPath, Source};
use super::units::{self, Duration, Size};

pub(super) fn compile(file: &file::File, src: &Source) -> Result<model::Config, ConfigError> {
    let mut server = server(&file.server, src)?;
    server.tls = super::tls::server_tls(file, src)?;
    let admin = match &file.admin {
        Some(written) => Some(admin(written, &server, src)?),
        None => None,
    };
    let mut system_roots = super::upstream_tls::SystemRoots::default();
    let upstreams = file
        .upstreams
        .iter()
        .map(|(name, written)| upstream(name, written, src, &mut system_roots))
        .collect::<Result<Vec<_>, _>>()?;
    let auth = super::policy::auth_policies(&file.auth, src)?;
    let rate_limits = super::policy::rate_limits(&file.rate_limits, src)?;
    let cache = super::cache::cache(&file.cache, src)?;
    let compression = super::compression::compression(&file.compression, src)?.map(Into::into);
    let bff = super::bff::bff(file.bff.as_ref(), &auth, &rate_limits, src)?;
    let identity: Vec<String> = auth
        .iter()
        .flat_map(|p| p.forward.iter().map(|(_, header)| header.clone()))
        .collect();
    let transforms = super::transform::transforms(&file.transforms, &identity, src)?;
    let policies = Policies {
        auth: &auth,
        rate_limits: &rate_limits,
        cache: cache.as_ref(),
        bff: bff.as_ref(),
        transforms: &transforms,
    };
    let mut routes = file
        .routes
        .iter()
        .map(|(name, written)| route(name, written, &upstreams, &policies, src))
        .collect::<Result<Vec<_>, _>>()?;
    // Aggregates are routes too, after the file's routes.
    let refs = super::aggregate::Refs {
        upstreams: &upstreams,
        auth: &auth,
        rate_limits: &rate_limits,
        limits: &server.limits,
        bff: bff.as_ref(),
        routes: &routes,
    };
    let (aggregate_routes, aggregates) =
        super::aggregate::aggregates(&file.aggregates, &refs, routes.len(), src)?;
    routes.extend(aggregate_routes);
    Ok(model::Config {
        path: src.path.to_path_buf(),
        server,
        admin,
        log: log(&file.log),
        upstreams,
        routes,
        auth,
        rate_limits,
        cache,
        compression,
        aggregates,
        tracing: model::Tracing {
            propagate: file
                .tracing
                .as_ref()
                .and_then(|t| t.propagate)
                .unwrap_or(true),
            otlp_endpoint: match file.tracing.as_ref().and_then(|t| t.otlp_endpoint.as_ref()) {
                None => None,
                // A span is the gateway's hop of the trace it propagates; without propagation
                // there is no trace to put it in.
                Some(_) if file.tracing.as_ref().and_then(|t| t.propagate) == Some(false) => {
                    return Err(src.error(
                        &KeyPath::of(&["tracing", "otlp_endpoint"]),
                        "needs propagate = true (spans belong to the trace the gateway propagates)",
                    ))
                }
                Some(url) => {
                    crate::otlp::check_endpoint(url)
                        .map_err(|m| src.error(&KeyPath::of(&["tracing", "otlp_endpoint"]), m))?;
                    Some(url.clone())
                }
            },
        },
        bff,
        transforms,
    })
}

fn server(server: &file::Server, src: &Source) -> Result<model::Server, ConfigError> {
    let at = KeyPath::of(&["server"]);
    let listen = match &server.listen {
        None => vec![default::LISTEN
            .parse()
            .expect("default listen address parses")],
        Some(list) => {
            if list.is_empty() {
                return Err(src.error(&at.key("listen"), "must list at least one address"));
            }
            let mut addrs = Vec::with_capacity(list.len());
            for (i, text) in list.iter().enumerate() {
                let path = at.key("listen").index(i);
                let addr = listen_addr(text).map_err(|m| src.error(&path, m))?;
                if addrs.contains(&addr) {
                    return Err(src.error(&path, format!("duplicate address {text:?}")));
                }
                addrs.push(addr);
            }
            addrs
        }
    };
    let workers = match server.workers.unwrap_or(Workers::Auto) {
        Workers::Auto => available_cores(),
        Workers::Count(n) => n,
    };
    let driver = match server.driver.unwrap_or(file::Driver::Auto) {
        file::Driver::Auto => model::Driver::Auto,
        file::Driver::IoUring => model::Driver::IoUring,
        file::Driver::Epoll => model::Driver::Epoll,
    };
    Ok(model::Server {
        listen,
        workers,
        pin_workers: server.pin_workers.unwrap_or(default::PIN_WORKERS),
        driver,
        // Zero is fine here: it means "exit once the listeners are closed".
        drain_timeout: server.drain_timeout.map_or(default::DRAIN_TIMEOUT, |d| d.0),
        limits: limits(&server.limits, &at.key("limits"), src)?,
        tls: None,
    })
}

/// Worker count for `workers = "auto"`: the cores this process may run on (its affinity mask,
/// so that a `taskset` or cgroup cpuset is honoured), else what std reports, else 1.
fn available_cores() -> usize {
    core_affinity::get_core_ids()
        .map(|ids| ids.len())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

fn limits(limits: &file::Limits, at: &KeyPath, src: &Source) -> Result<model::Limits, ConfigError> {
    let s = Section::new(src, at);
    Ok(model::Limits {
        // The shortest valid request line, "GET / HTTP/1.1\r\n", is 16 bytes.
        max_request_line: s.buffer(
            "max_request_line",
            limits.max_request_line,
            16,
            default::MAX_REQUEST_LINE,
        )?,
        max_header_bytes: s.buffer(
            "max_header_bytes",
            limits.max_header_bytes,
            1,
            default::MAX_HEADER_BYTES,
        )?,
        max_headers: s.count("max_headers", limits.max_headers, default::MAX_HEADERS)?,
        max_body: s
            .size("max_body", limits.max_body, 1)?
            .unwrap_or(default::MAX_BODY),
        header_timeout: s.timeout(
            "header_timeout",
            limits.header_timeout,
            default::HEADER_TIMEOUT,
        )?,
        body_timeout: s.timeout("body_timeout", limits.body_timeout, default::BODY_TIMEOUT)?,
        keepalive_timeout: s.timeout(
            "keepalive_timeout",
            limits.keepalive_timeout,
            default::KEEPALIVE_TIMEOUT,
        )?,
        max_connections: s.count(
            "max_connections",
            limits.max_connections,
            default::MAX_CONNECTIONS,
        )?,
    })
}

fn admin(
    admin: &file::Admin,
    server: &model::Server,
    src: &Source,
) -> Result<model::Admin, ConfigError> {
    let at = KeyPath::of(&["admin"]);
    let listen = match &admin.listen {
        None => default::ADMIN_LISTEN
            .parse()
            .expect("default admin address parses"),
        Some(text) => {
            let addr = listen_addr(text).map_err(|m| src.error(&at.key("listen"), m))?;
            // With SO_REUSEPORT both binds would succeed and split connections between the
            // admin API and the proxy at random.
            if server.listen.contains(&addr) {
                return Err(src.error(
                    &at.key("listen"),
                    format!("{text:?} is also in server.listen"),
                ));
            }
            addr
        }
    };
    if let Some(name) = &admin.token_env {
        if !is_env_name(name) {
            return Err(src.error(
                &at.key("token_env"),
                format!("invalid environment variable name {name:?}: expected letters, digits and '_', not starting with a digit"),
            ));
        }
    }
    // Endpoint registration and reload reachable from the network need a token: a
    // non-loopback admin listener starts only with `token_env` naming a variable that is set
    // (and not empty) in the environment it starts in.
    if !listen.ip().is_loopback() {
        let token_set = admin
            .token_env
            .as_deref()
            .is_some_and(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
        if !token_set {
            let why = match &admin.token_env {
                None => "needs token_env (a non-loopback admin API must require a token)".to_string(),
                Some(var) => format!(
                    "needs a token: ${var} (admin.token_env) is not set or empty, and a non-loopback admin API must require one"
                ),
            };
            return Err(src.error(
                &at.key("listen"),
                format!("{listen} is not a loopback address: {why}"),
            ));
        }
    }
    Ok(model::Admin {
        listen,
        token_env: admin.token_env.clone(),
    })
}

fn log(log: &file::Log) -> model::Log {
    let level = match log.level.unwrap_or(file::LogLevel::Info) {
        file::LogLevel::Error => model::LogLevel::Error,
        file::LogLevel::Warn => model::LogLevel::Warn,
        file::LogLevel::Info => model::LogLevel::Info,
        file::LogLevel::Debug => model::LogLevel::Debug,
    };
    let access = match log.access.unwrap_or(file::AccessLog::Off) {
        file::AccessLog::Off => model::AccessLog::Off,
        file::AccessLog::Json => model::AccessLog::Json,
    };
    model::Log { level, access }
}

fn upstream(
    name: &str,
    upstream: &file::Upstream,
    src: &Source,
    system_roots: &mut super::upstream_tls::SystemRoots,
) -> Result<model::Upstream, ConfigError> {
    let at = KeyPath::of(&["upstreams", name]);
    let s = Section::new(src, &at);
    if upstream.endpoints.is_empty() {
        return Err(src.error(
            &at.key("endpoints"),
            "an upstream needs at least one endpoint",
        ));
    }
    let mut endpoints: Vec<model::Endpoint> = Vec::with_capacity(upstream.endpoints.len());
    for (i, written) in upstream.endpoints.iter().enumerate() {
        let entry = at.key("endpoints").index(i);
        let (url, url_at, weight) = match written {
            file::Endpoint::Url(url) => (url, entry.clone(), default::WEIGHT),
            file::Endpoint::Weighted(w) => (
                &w.url,
                entry.key("url"),
                w.weight.unwrap_or(default::WEIGHT),
            ),
        };
        if let Err(m) = check_weight(weight) {
            return Err(src.error(&entry.key("weight"), m));
        }
        for endpoint in endpoint(url, weight).map_err(|m| src.error(&url_at, m))? {
            if endpoints.iter().any(|e| e.addr == endpoint.addr) {
                return Err(src.error(&url_at, format!("duplicate endpoint {url:?}")));
            }
            endpoints.push(endpoint);
        }
        // Endpoint sets (rotation, retries) index at most MAX_ENDPOINTS endpoints.
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(src.error(
                &url_at,
                format!(
                    "too many endpoints: {} addresses with this one, at most {MAX_ENDPOINTS} per upstream",
                    endpoints.len()
                ),
            ));
        }
    }
    let tls = super::upstream_tls::compile(upstream, &at, src, system_roots)?;
    let balance = match &upstream.balance {
        None => model::Balance::RoundRobin,
        Some(text) => balance(text).map_err(|m| src.error(&at.key("balance"), m))?,
    };
    Ok(model::Upstream {
        name: name.to_string(),
        endpoints,
        balance,
        connect_timeout: s.timeout(
            "connect_timeout",
            upstream.connect_timeout,
            default::CONNECT_TIMEOUT,
        )?,
        read_timeout: s.timeout("read_timeout", upstream.read_timeout, default::READ_TIMEOUT)?,
        retries: upstream.retries.unwrap_or(default::RETRIES),
        max_idle_per_worker: upstream
            .max_idle_per_worker
            .unwrap_or(default::MAX_IDLE_PER_WORKER),
        idle_timeout: s.timeout("idle_timeout", upstream.idle_timeout, default::IDLE_TIMEOUT)?,
        breaker: match &upstream.breaker {
            None => None,
            Some(b) => Some(breaker(b, &at.key("breaker"), src)?),
        },
        health_check: match &upstream.health_check {
            None => None,
            Some(h) => Some(health_check(h, &at.key("health_check"), src)?),
        },
        outlier: outlier(upstream.outlier.as_ref(), &at.key("outlier"), src)?,
        dns_refresh: s.timeout("dns_refresh", upstream.dns_refresh, default::DNS_REFRESH)?,
        tls,
        location: src.location_of(&at),
    })
}

fn breaker(b: &file::Breaker, at: &KeyPath, src: &Source) -> Result<model::Breaker, ConfigError> {
    use super::model::{MAX_BREAKER_PROBES as MAX_PROBES, MAX_BREAKER_THRESHOLD as MAX_THRESHOLD};
    let s = Section::new(src, at);
    let failure_threshold = s
        .nonzero("failure_threshold", b.failure_threshold)?
        .unwrap_or(default::BREAKER_FAILURE_THRESHOLD);
    if failure_threshold > MAX_THRESHOLD {
        return Err(s.error(
            "failure_threshold",
            format!("must be at most {MAX_THRESHOLD}"),
        ));
    }
    let half_open_probes = s
        .nonzero("half_open_probes", b.half_open_probes)?
        .unwrap_or(default::BREAKER_HALF_OPEN_PROBES);
    if half_open_probes > MAX_PROBES {
        return Err(s.error("half_open_probes", format!("must be at most {MAX_PROBES}")));
    }
    let failure_on = b.failure_on.as_deref().unwrap_or(&[
        file::FailureOn::Connect,
        file::FailureOn::Timeout,
        file::FailureOn::Status5xx,
    ]);
    if failure_on.is_empty() {
        return Err(s.error(
            "failure_on",
            "must list at least one of \"connect\", \"timeout\", \"5xx\"",
        ));
    }
    let fallback = match &b.fallback {
        None => None,
        Some(f) => {
            // 204 and 304 cannot carry the JSON body (RFC 9110 §15.3.5, §15.4.5).
            if !(200..=599).contains(&f.status) || f.status == 204 || f.status == 304 {
                return Err(src.error(
                    &at.key("fallback").key("status"),
                    "must be an HTTP status from 200 to 599 that carries a body (not 204 or 304)",
                ));
            }
            let json = match &f.json {
                None => None,
                Some(value) => Some(serde_json::to_string(value).map_err(|e| {
                    src.error(
                        &at.key("fallback").key("json"),
                        format!("not valid JSON: {e}"),
                    )
                })?),
            };
            Some(model::Fallback {
                status: f.status,
                json,
            })
        }
    };
    Ok(model::Breaker {
        failure_threshold,
        window: s.timeout("window", b.window, default::BREAKER_WINDOW)?,
        recovery_timeout: s.timeout(
            "recovery_timeout",
            b.recovery_timeout,
            default::BREAKER_RECOVERY_TIMEOUT,
        )?,
        half_open_probes,
        on_connect: failure_on.contains(&file::FailureOn::Connect),
        on_timeout: failure_on.contains(&file::FailureOn::Timeout),
        on_5xx: failure_on.contains(&file::FailureOn::Status5xx),
        fallback,
    })
}

fn health_check(
    h: &file::HealthCheck,
    at: &KeyPath,
    src: &Source,
) -> Result<model::HealthCheck, ConfigError> {
    let s = Section::new(src, at);
    if !h.path.starts_with('/') || h.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(s.error(
            "path",
            format!(
                "invalid path {:?}: must start with \"/\" and contain no spaces or control bytes",
                h.path
            ),
        ));
    }
    let interval = s.timeout("interval", h.interval, default::HEALTH_INTERVAL)?;
    let timeout = s.timeout("timeout", h.timeout, default::HEALTH_TIMEOUT)?;
    Ok(model::HealthCheck {
        path: h.path.clone(),
        interval,
        timeout,
        healthy_threshold: s
            .nonzero("healthy_threshold", h.healthy_threshold)?
            .unwrap_or(default::HEALTHY_THRESHOLD),
        unhealthy_threshold: s
            .nonzero("unhealthy_threshold", h.unhealthy_threshold)?
            .unwrap_or(default::UNHEALTHY_THRESHOLD),
    })
}

fn outlier(
    o: Option<&file::Outlier>,
    at: &KeyPath,
    src: &Source,
) -> Result<model::Outlier, ConfigError> {
    let s = Section::new(src, at);
    let base = s.timeout(
        "base_ejection",
        o.and_then(|o| o.base_ejection),
        default::OUTLIER_BASE_EJECTION,
    )?;
    let max = s.timeout(
        "max_ejection",
        o.and_then(|o| o.max_ejection),
        default::OUTLIER_MAX_EJECTION.max(base),
    )?;
    if max < base {
        return Err(s.error("max_ejection", "must be at least base_ejection"));
    }
    Ok(model::Outlier {
        consecutive_failures: o
            .and_then(|o| o.consecutive_failures)
            .unwrap_or(default::OUTLIER_CONSECUTIVE_FAILURES),
        base_ejection: base,
        max_ejection: max,
    })
}

/// Largest endpoint weight: a weight is relative, and a hash ring holds 100 points per unit of
/// weight per endpoint on every worker, so this bounds a ring at 1.6 MB per endpoint.
pub const MAX_WEIGHT: u32 = 1000;

pub fn check_weight(weight: u32) -> Result<(), String> {
    match weight {
        0 => Err("must be at least 1".to_string()),
        w if w > MAX_WEIGHT => Err(format!("must be at most {MAX_WEIGHT}")),
        _ => Ok(()),
    }
}

/// `http[s]://HOST[:PORT][/]`, HOST an IP address or a DNS name, resolved now: one endpoint
/// per address (also used for endpoints registered through the admin API).
pub fn endpoint(url: &str, weight: u32) -> Result<Vec<model::Endpoint>, String> {
    let EndpointUrl {
        https,
        authority,
        host,
        port,
    } = endpoint_url(url)?;
    // `endpoint_url` checked that HOST is an IP address or a DNS name: both are server names.
    let tls_name = match https {
        true => Some(
            rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("invalid endpoint URL {url:?}: {host:?}: {e}"))?,
        ),
        false => None,
    };
    let one = |addr, source, dns| model::Endpoint {
        url: url.to_string(),
        addr,
        authority: authority.to_string(),
        weight,
        source,
        dns,
        metadata: None,
        tls_name: tls_name.clone(),
    };
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![one(
            SocketAddr::new(ip, port),
            model::EndpointSource::Config,
            None,
        )]),
        Err(_) => Ok(resolve(host, port)?
            .into_iter()
            .map(|addr| {
                one(
                    addr,
                    model::EndpointSource::Dns,
                    Some((host.to_string(), port)),
                )
            })
            .collect()),
    }
}

/// The parts of an endpoint URL, read without resolving anything.
pub(super) struct EndpointUrl<'a> {
    /// `https://`: the endpoint is reached over TLS.
    pub https: bool,
    /// `HOST[:PORT]` as written: the Host header sent upstream.
    pub authority: &'a str,
    /// An IP address (brackets removed) or a DNS name.
    pub host: &'a str,
    pub port: u16,
}

/// `http[s]://HOST[:PORT][/]`, checked for its shape only: HOST an IP address or a DNS name,
/// no user info, path, query or fragment.
pub(super) fn endpoint_url(url: &str) -> Result<EndpointUrl<'_>, String> {
    let invalid = |why: &str| format!("invalid endpoint URL {url:?}: {why}");
    let expected = "expected http://HOST[:PORT] or https://HOST[:PORT]";
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid(expected))?;
    let https = scheme.eq_ignore_ascii_case("https");
    if !https && !scheme.eq_ignore_ascii_case("http") {
        return Err(invalid(expected));
    }
    // A bare trailing "/" is the root path, the same as none.
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(invalid(
            "an endpoint has no path, query or fragment (a route's rewrite changes the path)",
        ));
    }
    if authority.contains('@') {
        return Err(invalid("user info is not supported"));
    }
    let scheme = if https { "https" } else { "http" };
    let (host, port) = split_host_port(authority, scheme).map_err(|why| invalid(&why))?;
    if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
        return Err(invalid(&format!(
            "{host:?} is not an IP address or a host name"
        )));
    }
    Ok(EndpointUrl {
        https,
        authority,
        host,
        port,
    })
}

/// "host", "host:port", "[v6]" or "[v6]:port"; the port defaults to the scheme's (80, 443).
fn split_host_port<'a>(authority: &'a str, scheme: &str) -> Result<(&'a str, u16), String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (v6, rest) = bracketed.split_once(']').ok_or("unclosed '['")?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("{v6:?} is not an IPv6 address"))?;
        match rest {
            "" => (v6, None),
            _ => (
                v6,
                Some(rest.strip_prefix(':').ok_or("expected ':' after ']'")?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(format!(
                    "write IPv6 addresses in brackets, as in \"{scheme}://[::1]:{}\"",
                    port.rsplit(':').next().unwrap_or("80")
                ));
            }
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".to_string());
    }
    let port = match port {
        None if scheme == "https" => 443,
        None => 80,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("invalid port {text:?}")),
        },
    };
    Ok((host, port))
}

/// Every address of `host` (deduplicated, in the resolver's order).
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Some(resolver) = super::RESOLVER.get() {
        return resolver(host, port);
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
    {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(format!("cannot resolve {host:?}: no addresses"));
    }
    Ok(addrs)
}

fn sticky(text: &str) -> Result<model::Sticky, String> {
    if text == "ip" {
        return Ok(model::Sticky::Ip);
    }
    if let Some(name) = text.strip_prefix("header:").filter(|n| is_token(n)) {
        if name.contains('_') {
            return Err(format!(
                "invalid sticky {text:?}: {}",
                underscore_name(name)
            ));
        }
        return Ok(model::Sticky::Header(name.to_ascii_lowercase()));
    }
    if let Some(name) = text.strip_prefix("cookie:").filter(|n| is_token(n)) {
        return Ok(model::Sticky::Cookie(name.to_string()));
    }
    Err(format!(
        "invalid sticky {text:?}: expected \"header:NAME\", \"cookie:NAME\" or \"ip\""
    ))
}

fn balance(text: &str) -> Result<model::Balance, String> {
    const FORMS: [&str; 4] = [
        "round_robin",
        "least_request",
        "hash:header:NAME",
        "hash:ip",
    ];
    match text {
        "round_robin" => Ok(model::Balance::RoundRobin),
        "least_request" => Ok(model::Balance::LeastRequest),
        "hash:ip" => Ok(model::Balance::HashIp),
        _ => match text.strip_prefix("hash:header:") {
            Some(name) if name.contains('_') => {
                Err(format!("invalid balance {text:?}: {}", underscore_name(name)))
            }
            Some(name) if is_token(name) => Ok(model::Balance::HashHeader(name.to_ascii_lowercase())),
            Some(name) => Err(format!("invalid balance {text:?}: {name:?} is not a header name")),
            None => Err(format!(
                "invalid balance {text:?}: expected \"round_robin\", \"least_request\", \"hash:header:NAME\" or \"hash:ip\"{}",
                suggestion(text, FORMS)
            )),
        },
    }
}

/// The policies a route may name.
struct Policies<'a> {
    auth: &'a [model::AuthPolicy],
    rate_limits: &'a [model::RateLimit],
    cache: Option<&'a model::Cache>,
    bff: Option<&'a model::Bff>,
    transforms: &'a [model::Transform],
}

fn route(
    name: &str,
    route: &file::Route,
    upstreams: &[model::Upstream],
    policies: &Policies<'_>,
    src: &Source,
) -> Result<model::Route, ConfigError> {
    let at = KeyPath::of(&["routes", name]);

    if route.paths.is_empty() {
        return Err(src.error(&at.key("paths"), "a route needs at least one path"));
    }
    for (i, path) in route.paths.iter().enumerate() {
        let here = at.key("paths").index(i);
        if !(path.starts_with('/') || path.starts_with("=/")) {
            return Err(src.error(
                &here,
                format!("invalid path {path:?}: must start with \"/\" (prefix) or \"=/\" (exact)"),
            ));
        }
        if route.paths[..i].contains(path) {
            return Err(src.error(&here, format!("duplicate path {path:?}")));
        }
        super::bff::reachable(path, &here, policies.bff, src)?;
    }

    let methods = match &route.methods {
        None => None,
        Some(list) => Some(methods(list, &at.key("methods"), src)?),
    };

    let hosts = match &route.hosts {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(src.error(
                &at.key("hosts"),
                "must not be empty; omit the key to match any host",
            ));
        }
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, host)| {
                    host_pattern(host).map_err(|m| src.error(&at.key("hosts").index(i), m))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };

    let headers = match &route.headers {
        None => Vec::new(),
        Some(table) => header_predicates(table, &at.key("headers"), src)?,
    };

    let find = |wanted: &str, key: &KeyPath| {
        upstreams
            .iter()
            .position(|u| u.name == wanted)
            .ok_or_else(|| {
                src.error(
                    key,
                    format!(
                        "no upstream named {wanted:?}{}",
                        suggestion(wanted, upstreams.iter().map(|u| u.name.as_str()))
                    ),
                )
            })
    };
    let mut split = Vec::new();
    if let Some(sides) = &route.split {
        if sides.is_empty() {
            return Err(src.error(&at.key("split"), "must list at least one upstream"));
        }
        for (i, side) in sides.iter().enumerate() {
            let here = at.key("split").index(i);
            let upstream = find(&side.upstream, &here.key("upstream"))?;
            if split
                .iter()
                .any(|s: &model::SplitSide| s.upstream == upstream)
            {
                return Err(src.error(
                    &here.key("upstream"),
                    format!("upstream {:?} is listed twice", side.upstream),
                ));
            }
            split.push(model::SplitSide {
                upstream,
                weight: side.weight,
            });
        }
        if split.iter().all(|side| side.weight == 0) {
            return Err(src.error(
                &at.key("split"),
                "at least one weight must be greater than zero",
            ));
        }
    }
    let upstream = match (&route.upstream, split.iter().find(|s| s.weight > 0)) {
        (Some(wanted), _) => find(wanted, &at.key("upstream"))?,
        (None, Some(side)) => side.upstream,
        (None, None) => return Err(src.error(&at.key("upstream"), "missing required key")),
    };
    let sticky = match &route.sticky {
        None => None,
        Some(_) if split.is_empty() => {
            return Err(src.error(
                &at.key("sticky"),
                "only applies to a route with a split: add `split` or remove `sticky`",
            ))
        }
        Some(text) => Some(sticky(text).map_err(|m| src.error(&at.key("sticky"), m))?),
    };

    let strip_prefix = route.strip_prefix.unwrap_or(false);
    if let Some(rewrite) = &route.rewrite {
        if !rewrite.starts_with('/') {
            return Err(src.error(
                &at.key("rewrite"),
                format!("invalid rewrite {rewrite:?}: must start with \"/\""),
            ));
        }
        if strip_prefix {
            return Err(src.error(
                &at.key("rewrite"),
                "cannot be combined with strip_prefix = true: rewrite already replaces the matched prefix",
            ));
        }
    }

    let timeout = Section::new(src, &at).positive("timeout", route.timeout)?;
    let auth = match &route.auth {
        None => None,
        Some(wanted) => Some(super::policy::auth_ref(
            wanted,
            &at.key("auth"),
            policies.auth,
            src,
        )?),
    };
    let rate_limits = match &route.rate_limits {
        None => Vec::new(),
        Some(names) => super::policy::rate_limit_refs(
            names,
            &at.key("rate_limits"),
            policies.rate_limits,
            src,
        )?,
    };
    let client = match &route.client {
        None => None,
        Some(name) => Some(super::bff::client_ref(
            name,
            &at.key("client"),
            policies.bff,
            src,
        )?),
    };
    super::bff::route_checks(
        &at,
        &headers,
        auth,
        &rate_limits,
        client,
        policies.bff,
        policies.auth,
        policies.rate_limits,
        src,
    )?;
    let websocket = route.websocket.unwrap_or(false);
    let cache = match &route.cache {
        None => None,
        // After a 101 the connection carries frames, not a response that could be stored (and
        // an upgrade must reach the upstream, never be answered from a stored copy).
        Some(_) if websocket => {
            return Err(src.error(
                &at.key("cache"),
                "cannot be combined with websocket = true: an upgrade is never answered from the cache, and a tunnel's bytes are not a response to store",
            ))
        }
        Some(rule) => Some(super::cache::rule_ref(
            rule,
            &at.key("cache"),
            policies.cache,
            super::bff::sure_auth(auth, client, policies.bff),
            src,
        )?),
    };

    let transform = match &route.transform {
        None => None,
        Some(wanted) => Some(super::transform::route_ref(
            wanted,
            &at.key("transform"),
            route,
            policies.transforms,
            cache,
            src,
        )?),
    };

    Ok(model::Route {
        name: name.to_string(),
        paths: route.paths.clone(),
        methods,
        hosts,
        headers,
        upstream,
        split,
        sticky,
        strip_prefix,
        rewrite: route.rewrite.clone(),
        timeout,
        auth,
        rate_limits,
        cache,
        location: src.location_of(&at),
        client,
        aggregate: None,
        transform,
        websocket,
    })
}

/// Upper-cased, validated, de-duplicated method tokens (also used by aggregates).
pub(super) fn methods(
    list: &[String],
    at: &KeyPath,
    src: &Source,
) -> Result<Vec<String>, ConfigError> {
    if list.is_empty() {
        return Err(src.error(at, "must not be empty; omit the key to allow any method"));
    }
    let mut methods: Vec<String> = Vec::with_capacity(list.len());
    for (i, method) in list.iter().enumerate() {
        if !is_token(method) {
            return Err(src.error(
                &at.index(i),
                format!("invalid method {method:?}: not an HTTP token"),
            ));
        }
        let method = method.to_ascii_uppercase();
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    Ok(methods)
}

/// A lower-cased host pattern: a name, an IP address, or `*.` followed by a name.
fn host_pattern(text: &str) -> Result<String, String> {
    let host = text.to_ascii_lowercase();
    let invalid = |why: &str| format!("invalid host {text:?}: {why}");
    if let Some(bracketed) = host.strip_prefix('[') {
        return match bracketed.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(host),
            _ => Err(invalid(
                "expected an IPv6 address in brackets, without a port",
            )),
        };
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return Err(invalid(&format!(
            "write IPv6 addresses in brackets, as in \"[{host}]\""
        )));
    }
    let name = host.strip_prefix("*.").unwrap_or(&host);
    if name.contains('*') {
        return Err(invalid(
            "'*' is only allowed as the whole first label, as in \"*.example.com\"",
        ));
    }
    if name.contains(':') {
        return Err(invalid(
            "hosts are matched without the port; remove \":PORT\"",
        ));
    }
    if !is_dns_name(name) {
        return Err(invalid("not a host name or IP address"));
    }
    Ok(host)
}

fn header_predicates(
    table: &Named<String>,
    at: &KeyPath,
    src: &Source,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(table.0.len());
    for (name, value) in table.iter() {
        let here = at.key(name);
        let lower = header_name(name).map_err(|m| src.key_error(&here, m))?;
        if headers.iter().any(|(n, _)| *n == lower) {
            return Err(src.key_error(
                &here,
                format!("duplicate header {name:?} (names are case-insensitive)"),
            ));
        }
        header_value(value).map_err(|m| src.error(&here, m))?;
        headers.push((lower, value.to_string()));
    }
    Ok(headers)
}

/// A lower-cased header name, or why it is not one.
pub(super) fn header_name(name: &str) -> Result<String, String> {
    if name.contains('_') {
        return Err(underscore_name(name));
    }
    if is_token(name) {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!("invalid header name {name:?}: not an HTTP token"))
    }
}

/// RFC 9110 §5.5: no control characters; and since parsers strip surrounding whitespace, a
/// value with some could never match.
pub(super) fn header_value(value: &str) -> Result<(), String> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "invalid header value {value:?}: control characters are not allowed"
        ));
    }
    if value != value.trim_matches([' ', '\t']) {
        return Err(format!(
            "invalid header value {value:?}: leading or trailing whitespace never matches"
        ));
    }
    Ok(())
}

/// Why a request header name with '_' cannot be used: the gateway drops such fields.
fn underscore_name(name: &str) -> String {
    format!(
        "header name {name:?} holds '_': request fields with '_' in their name are dropped \
         (as nginx's underscores_in_headers off), so it could never be read"
    )
}

/// RFC 9110 §5.6.2 token: what methods and header names are made of.
pub(super) fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Dot-separated labels of letters, digits, '-' and '_' (IPv4 addresses included).
pub(super) fn is_dns_name(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn is_env_name(text: &str) -> bool {
    text.bytes().next().is_some_and(|b| !b.is_ascii_digit())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(super) fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        format!("invalid address {text:?}: expected IP:PORT, as in \"127.0.0.1:8080\" or \"[::1]:8080\"")
    })?;
    if addr.port() == 0 {
        // Every worker binds the address itself: port 0 would give each its own random port.
        return Err(format!("invalid address {text:?}: port 0 is not allowed"));
    }
    Ok(addr)
}

/// ` (did you mean "x"?)`, or nothing.
pub(super) fn suggestion<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(name, candidates).map_or_else(String::new, |s| format!(" (did you mean {s:?}?)"))
}

/// The keys of one table, for checks that report at `<table>.<key>`.
pub(super) struct Section<'a> {
    src: &'a Source<'a>,
    at: KeyPath,
}

impl<'a> Section<'a> {
    pub fn new(src: &'a Source<'a>, at: &KeyPath) -> Self {
        Section {
            src,
            at: at.clone(),
        }
    }

    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.src.error(&self.at.key(key), message)
    }

    /// A duration that must be greater than zero when present: every timeout.
    pub fn positive(
        &self,
        key: &str,
        value: Option<Duration>,
    ) -> Result<Option<StdDuration>, ConfigError> {
        match value {
            Some(d) if d.0.is_zero() => Err(self.error(key, "must be greater than zero")),
            _ => Ok(value.map(|d| d.0)),
        }
    }

    pub fn timeout(
        &self,
        key: &str,
        value: Option<Duration>,
        default: StdDuration,
    ) -> Result<StdDuration, ConfigError> {
        Ok(self.positive(key, value)?.unwrap_or(default))
    }

    /// A number that must be at least 1 when present.
    pub fn nonzero<T: Copy + PartialEq + From<u8>>(
        &self,
        key: &str,
        value: Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        match value {
            Some(n) if n == T::from(0) => Err(self.error(key, "must be at least 1")),
            _ => Ok(value),
        }
    }

    pub fn count(
        &self,
        key: &str,
        value: Option<usize>,
        default: usize,
    ) -> Result<usize, ConfigError> {
        Ok(self.nonzero(key, value)?.unwrap_or(default))
    }

    /// A size of at least `min` bytes when present.
    pub fn size(
        &self,
        key: &str,
        value: Option<Size>,
        min: u64,
    ) -> Result<Option<u64>, ConfigError> {
        match value {
            Some(Size(n)) if n < min && min == 1 => {
                Err(self.error(key, "must be greater than zero"))
            }
            Some(Size(n)) if n < min => {
                Err(self.error(key, format!("must be at least {}", units::format_size(min))))
            }
            _ => Ok(value.map(|s| s.0)),
        }
    }

    /// A size of at least `min` bytes that sizes a buffer in memory.
    fn buffer(
        &self,
        key: &str,
        value: Option<Size>,
        min: u64,
        default: u64,
    ) -> Result<usize, ConfigError> {
        let bytes = self.size(key, value, min)?.unwrap_or(default);
        usize::try_from(bytes).map_err(|_| self.error(key, "too large for this platform"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        for (url, expected) in [
            ("http://127.0.0.1:9001", Ok(("127.0.0.1:9001", "127.0.0.1:9001"))),
            ("http://127.0.0.1:9001/", Ok(("127.0.0.1:9001", "127.0.0.1:9001"))),
            ("HTTP://127.0.0.1", Ok(("127.0.0.1:80", "127.0.0.1"))),
            ("http://[::1]:8080", Ok(("[::1]:8080", "[::1]:8080"))),
            ("http://[::1]", Ok(("[::1]:80", "[::1]"))),
            ("https://127.0.0.1:9001", Ok(("127.0.0.1:9001", "127.0.0.1:9001"))),
            ("HTTPS://[::1]", Ok(("[::1]:443", "[::1]"))),
            ("127.0.0.1:9001", Err("invalid endpoint URL \"127.0.0.1:9001\": expected http://HOST[:PORT] or https://HOST[:PORT]")),
            ("ftp://x:1", Err("invalid endpoint URL \"ftp://x:1\": expected http://HOST[:PORT] or https://HOST[:PORT]")),
            ("http://127.0.0.1:9001/api", Err("invalid endpoint URL \"http://127.0.0.1:9001/api\": an endpoint has no path, query or fragment (a route's rewrite changes the path)")),
            ("http://127.0.0.1:0", Err("invalid endpoint URL \"http://127.0.0.1:0\": invalid port \"0\"")),
            ("http://127.0.0.1:99999", Err("invalid endpoint URL \"http://127.0.0.1:99999\": invalid port \"99999\"")),
            ("http://127.0.0.1:", Err("invalid endpoint URL \"http://127.0.0.1:\": invalid port \"\"")),
            ("http://:80", Err("invalid endpoint URL \"http://:80\": missing host")),
            ("http://::1:80", Err("invalid endpoint URL \"http://::1:80\": write IPv6 addresses in brackets, as in \"http://[::1]:80\"")),
            ("http://u@h:80", Err("invalid endpoint URL \"http://u@h:80\": user info is not supported")),
            ("http://a b:80", Err("invalid endpoint URL \"http://a b:80\": \"a b\" is not an IP address or a host name")),
        ] {
            let got = endpoint(url, 1).map(|mut e| {
                let e = e.remove(0);
                (e.addr.to_string(), e.authority)
            });
            let expected = expected
                .map(|(addr, authority)| (addr.to_string(), authority.to_string()))
                .map_err(str::to_string);
            assert_eq!(got, expected, "{url}");
        }
    }

    #[test]
    fn endpoint_host_names_resolve_now() {
        let all = endpoint("http://localhost:9001", 2).unwrap();
        for e in &all {
            assert!(e.addr.ip().is_loopback(), "{e:?}");
            assert_eq!(
                (e.addr.port(), e.authority.as_str(), e.weight, e.source),
                (9001, "localhost:9001", 2, model::EndpointSource::Dns)
            );
            assert_eq!(e.dns, Some(("localhost".to_string(), 9001)));
        }
        let err = endpoint("http://no-such-host.invalid:80", 1).unwrap_err();
        assert!(
            err.starts_with("cannot resolve \"no-such-host.invalid\": "),
            "{err}"
        );
    }

    #[test]
    fn balance_forms() {
        for (text, expected) in [
            ("round_robin", Ok(model::Balance::RoundRobin)),
            ("least_request", Ok(model::Balance::LeastRequest)),
            ("hash:ip", Ok(model::Balance::HashIp)),
            ("hash:header:X-User-Id", Ok(model::Balance::HashHeader("x-user-id".into()))),
            ("hash:header:", Err("invalid balance \"hash:header:\": \"\" is not a header name")),
            ("hash:header:a b", Err("invalid balance \"hash:header:a b\": \"a b\" is not a header name")),
            ("hash:header:x_user", Err("invalid balance \"hash:header:x_user\": header name \"x_user\" holds '_': request fields with '_' in their name are dropped (as nginx's underscores_in_headers off), so it could never be read")),
            ("round-robin", Err("invalid balance \"round-robin\": expected \"round_robin\", \"least_request\", \"hash:header:NAME\" or \"hash:ip\" (did you mean \"round_robin\"?)")),
            ("random", Err("invalid balance \"random\": expected \"round_robin\", \"least_request\", \"hash:header:NAME\" or \"hash:ip\"")),
        ] {
            assert_eq!(balance(text), expected.map_err(str::to_string), "{text}");
        }
    }

    #[test]
    fn host_patterns() {
        for (text, expected) in [
            ("API.Example.com", Ok("api.example.com")),
            ("*.example.com", Ok("*.example.com")),
            ("127.0.0.1", Ok("127.0.0.1")),
            ("[::1]", Ok("[::1]")),
            ("*", Err("invalid host \"*\": '*' is only allowed as the whole first label, as in \"*.example.com\"")),
            ("*example.com", Err("invalid host \"*example.com\": '*' is only allowed as the whole first label, as in \"*.example.com\"")),
            ("a.*.com", Err("invalid host \"a.*.com\": '*' is only allowed as the whole first label, as in \"*.example.com\"")),
            ("*.", Err("invalid host \"*.\": not a host name or IP address")),
            ("example.com:8080", Err("invalid host \"example.com:8080\": hosts are matched without the port; remove \":PORT\"")),
            ("a..b", Err("invalid host \"a..b\": not a host name or IP address")),
            ("::1", Err("invalid host \"::1\": write IPv6 addresses in brackets, as in \"[::1]\"")),
            ("[::1]:80", Err("invalid host \"[::1]:80\": expected an IPv6 address in brackets, without a port")),
        ] {
            assert_eq!(host_pattern(text), expected.map(str::to_string).map_err(str::to_string), "{text}");
        }
    }

    #[test]
    fn tokens_and_env_names() {
        assert!(is_token("GET") && is_token("x-user-id") && is_token("M-SEARCH"));
        assert!(!is_token("") && !is_token("a b") && !is_token("a:b") && !is_token("é"));
        assert!(is_env_name("DISPATCH_ADMIN_TOKEN") && is_env_name("_x1"));
        assert!(!is_env_name("") && !is_env_name("1X") && !is_env_name("A-B"));
    }
}
