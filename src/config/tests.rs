//! Table tests for `config::load_str`: source text in, exact error line or compiled model out.

use std::path::Path;
use std::time::Duration;

use super::model::{AccessLog, Balance, Config, Driver, LogLevel, SplitSide, Sticky};
use super::*;

/// The format contract, verbatim from `spec/dispatch.example.toml`.
const SPEC_EXAMPLE: &str = include_str!("testdata/dispatch.example.toml");

fn load(src: &str) -> Config {
    match load_str(src, Path::new("d.toml")) {
        Ok(cfg) => cfg,
        Err(e) => panic!("unexpected error: {e}\n--- source ---\n{src}"),
    }
}

fn error(src: &str) -> String {
    match load_str(src, Path::new("d.toml")) {
        Ok(_) => panic!("loaded, expected an error\n--- source ---\n{src}"),
        Err(e) => e.to_string(),
    }
}

/// The spec example with every section and route key of a capability not built yet removed,
/// line by line, so the rest of the contract is tested as written.
fn spec_example_supported_part() -> String {
    const LATER_SECTIONS: [&str; 1] = ["tracing"];
    // Tables left out inside supported sections: TLS termination and the one upstream whose
    // endpoint is https://, whose certificate files are not in the repository (tests/tls.rs
    // and `https_upstream_compiles_its_tls_settings` load real ones).
    const LATER_TABLES: [&str; 2] = ["server.tls", "upstreams.ledger"];
    let mut out = String::new();
    let mut section = String::new();
    for line in SPEC_EXAMPLE.lines() {
        if let Some(header) = line.strip_prefix('[') {
            section = header.split(']').next().unwrap().to_string();
        }
        let first = section.split('.').next().unwrap();
        let later_section = LATER_SECTIONS.contains(&first)
            || LATER_TABLES
                .iter()
                .any(|t| section == *t || section.starts_with(&format!("{t}.")));
        if !later_section {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The 1-based number of the line that is exactly `line`.
fn line_of(text: &str, line: &str) -> usize {
    text.lines().position(|l| l.trim_end() == line).expect(line) + 1
}

/// `text` with the lines of the tables named `tables` (and their sub-tables) commented out,
/// so that every other line keeps its number.
fn comment_out(text: &str, tables: &[&str]) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if let Some(header) = line.strip_prefix('[') {
            let name = header.split(']').next().unwrap();
            inside = tables
                .iter()
                .any(|t| name == *t || name.starts_with(&format!("{t}.")));
        }
        if inside {
            out.push('#');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn spec_example_fails_only_on_its_certificate_files() {
    // Every key of the example parses, every value passes its checks and every capability is
    // built: the only errors are the certificate files it names, which are not in the
    // repository (`[server.tls]`'s first, then `upstreams.ledger`'s CA bundle).
    let err = load_str(SPEC_EXAMPLE, Path::new("config/dispatch.toml")).unwrap_err();
    let line = line_of(
        SPEC_EXAMPLE,
        "  { cert = \"config/tls/api.example.com.crt\", key = \"config/tls/api.example.com.key\" },",
    );
    assert_eq!(
        err.to_string(),
        format!("config/dispatch.toml:{line}:12: server.tls.certificates[0].cert: cannot read config/config/tls/api.example.com.crt: No such file or directory (os error 2)")
    );
    let text = comment_out(SPEC_EXAMPLE, &["server.tls"]);
    let line = line_of(&text, "tls_ca = \"config/tls/internal-ca.pem\"     # CA bundle the upstream's certificate must chain to; default: the system roots");
    assert_eq!(
        error(&text),
        format!("d.toml:{line}:10: upstreams.ledger.tls_ca: cannot read \"config/tls/internal-ca.pem\": No such file or directory (os error 2)")
    );
    // An http:// upstream with tls_* keys is a mistake in itself.
    let plain = text.replace("\"https://127.0.0.1:9443\"", "\"http://127.0.0.1:9443\"");
    assert_eq!(
        error(&plain),
        format!("d.toml:{line}:1: upstreams.ledger.tls_ca: only applies to https:// endpoints, and this upstream has none")
    );
}

#[test]
fn spec_example_without_later_capabilities_loads() {
    let text = spec_example_supported_part();
    for gone in ["[tracing]", "[server.tls]", "https://", "tls_"] {
        assert!(!text.contains(gone), "{gone} left in:\n{text}");
    }
    let cfg = load(&text);

    // BFF as written: the header, three clients with their defaults, two client routes.
    let bff = cfg.bff.as_ref().expect("[bff]");
    assert_eq!(bff.header.as_deref(), Some("x-client-type"));
    let clients: Vec<(&str, Option<&str>, Option<&str>, usize)> = bff
        .clients
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.prefix.as_deref(),
                c.auth.map(|a| cfg.auth[a].name.as_str()),
                c.rate_limits.len(),
            )
        })
        .collect();
    assert_eq!(
        clients,
        [
            ("mobile", Some("/mobile/v1"), Some("jwt"), 1),
            ("web", Some("/web/v1"), Some("jwt"), 0),
            ("admin", Some("/admin/v1"), Some("partners"), 0),
        ]
    );
    let client_of = |route: &str| {
        let r = cfg.routes.iter().find(|r| r.name == route).expect(route);
        r.client.map(|c| bff.clients[c].name.as_str())
    };
    assert_eq!(
        (
            client_of("transactions_mobile"),
            client_of("transactions_web"),
            client_of("users")
        ),
        (Some("mobile"), Some("web"), None)
    );

    assert_eq!(cfg.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert!(cfg.server.workers >= 1);
    assert!(cfg.server.pin_workers);
    assert_eq!(cfg.server.driver, Driver::Auto);
    assert_eq!(cfg.server.drain_timeout, Duration::from_secs(30));
    let l = &cfg.server.limits;
    assert_eq!(
        (
            l.max_request_line,
            l.max_header_bytes,
            l.max_headers,
            l.max_body,
            l.max_connections
        ),
        (8 << 10, 16 << 10, 100, 10 << 20, 65536)
    );
    assert_eq!(
        (l.header_timeout, l.body_timeout, l.keepalive_timeout),
        (
            Duration::from_secs(10),
            Duration::from_secs(30),
            Duration::from_secs(60)
        )
    );
    let admin = cfg.admin.as_ref().expect("[admin] section");
    assert_eq!(admin.listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(admin.token_env.as_deref(), Some("DISPATCH_ADMIN_TOKEN"));
    assert_eq!(
        (cfg.log.level, cfg.log.access),
        (LogLevel::Info, AccessLog::Off)
    );

    let names: Vec<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["users", "accounts", "transactions", "users_v2"]);

    // The spec's transforms compile, and the routes name them.
    let transforms: Vec<&str> = cfg.transforms.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(transforms, ["transactions_compact", "transfer_v1_to_v2"]);
    let v1 = &cfg.transforms[1];
    assert!(v1.request.is_some() && v1.response.is_some());
    assert_eq!(
        v1.request_headers.set,
        [("x-api-version".to_string(), "2".to_string())]
    );
    assert_eq!(v1.request_headers.remove, ["x-debug"]);
    assert_eq!(
        cfg.transforms[0].response_headers.remove,
        ["x-internal-trace"]
    );
    let route = |name: &str| cfg.routes.iter().find(|r| r.name == name).expect(name);
    assert_eq!(route("transfers_v1").transform, Some(1));
    assert_eq!(route("transactions_mobile").transform, Some(0));

    // Auth and rate limits as written; key paths relative to the file's directory.
    let auth: Vec<&str> = cfg.auth.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(auth, ["jwt", "partners"]);
    let super::model::AuthKind::Jwt(jwt) = &cfg.auth[0].kind else {
        panic!("auth.jwt is a jwt policy");
    };
    assert_eq!(jwt.algorithms, ["RS256"]);
    assert_eq!(
        jwt.keys,
        super::model::JwtKeys::File("config/keys/jwt.pub.pem".into())
    );
    let elsewhere = load_str(&text, Path::new("/etc/dispatch/main.toml")).unwrap();
    let super::model::AuthKind::ApiKey(partners) = &elsewhere.auth[1].kind else {
        panic!("auth.partners is an api_key policy");
    };
    assert_eq!(
        partners.keys_file,
        Path::new("/etc/dispatch/config/api_keys.toml")
    );
    assert_eq!(
        (jwt.leeway, jwt.strip_authorization, &jwt.audience[..]),
        (Duration::from_secs(30), true, &["dispatch".to_string()][..])
    );
    assert_eq!(cfg.auth[0].forward.len(), 4);
    let limits: Vec<&str> = cfg.rate_limits.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(limits, ["per_user", "per_ip", "mobile", "strict", "simple"]);
    assert_eq!(cfg.rate_limits[0].tiers.len(), 4);
    assert_eq!(
        cfg.rate_limits[0].tier,
        Some(super::model::RateKey::Jwt("plan".into()))
    );
    assert_eq!(
        (cfg.rate_limits[1].rate, cfg.rate_limits[1].burst),
        (10, 50)
    );
    let users_route = cfg.routes.iter().find(|r| r.name == "users").unwrap();
    assert_eq!(
        (users_route.auth, &users_route.rate_limits[..]),
        (Some(0), &[0, 1][..])
    );
    let users = &cfg.upstreams[0];
    let endpoints: Vec<(String, &str, u32)> = users
        .endpoints
        .iter()
        .map(|e| (e.addr.to_string(), e.authority.as_str(), e.weight))
        .collect();
    assert_eq!(
        endpoints,
        [
            ("127.0.0.1:9001".to_string(), "127.0.0.1:9001", 1),
            ("127.0.0.1:9002".to_string(), "127.0.0.1:9002", 3)
        ]
    );
    assert_eq!(users.endpoints[1].url, "http://127.0.0.1:9002");
    assert_eq!(users.balance, Balance::RoundRobin);
    assert_eq!(
        (
            users.connect_timeout,
            users.read_timeout,
            users.retries,
            users.max_idle_per_worker,
            users.idle_timeout
        ),
        (
            Duration::from_millis(500),
            Duration::from_secs(3),
            2,
            64,
            Duration::from_secs(60)
        )
    );
    assert_eq!(
        (users.location.line, users.location.col),
        (line_of(&text, "[upstreams.users]"), 1)
    );
    let b = users.breaker.as_ref().expect("users has a breaker");
    assert_eq!(
        (
            b.failure_threshold,
            b.window,
            b.recovery_timeout,
            b.half_open_probes
        ),
        (5, Duration::from_secs(60), Duration::from_secs(30), 3)
    );
    assert!(b.on_connect && b.on_timeout && b.on_5xx);
    let fallback = b.fallback.as_ref().expect("fallback");
    assert_eq!(fallback.status, 503);
    let body: serde_json::Value =
        serde_json::from_str(fallback.json.as_deref().expect("json")).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "Users service temporarily unavailable", "retryAfter": 30})
    );
    let h = users
        .health_check
        .as_ref()
        .expect("users has health checks");
    assert_eq!(
        (
            h.path.as_str(),
            h.interval,
            h.timeout,
            h.healthy_threshold,
            h.unhealthy_threshold
        ),
        (
            "/healthz",
            Duration::from_secs(2),
            Duration::from_secs(1),
            2,
            3
        )
    );
    // Defaults every upstream gets.
    assert_eq!(users.outlier.consecutive_failures, 5);
    assert_eq!(users.outlier.base_ejection, Duration::from_secs(30));
    assert_eq!(users.outlier.max_ejection, Duration::from_secs(300));
    assert_eq!(users.dns_refresh, Duration::from_secs(30));
    // `accounts` sets only its endpoints: every other key takes its default.
    let accounts = &cfg.upstreams[1];
    assert_eq!(
        (
            accounts.connect_timeout,
            accounts.read_timeout,
            accounts.retries,
            accounts.max_idle_per_worker,
            accounts.idle_timeout
        ),
        (
            Duration::from_secs(1),
            Duration::from_secs(30),
            1,
            64,
            Duration::from_secs(60)
        )
    );
    assert_eq!(cfg.upstreams[2].read_timeout, Duration::from_secs(1));

    let names: Vec<&str> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "users",
            "users_canary",
            "products",
            "payments",
            "transfers_v1",
            "live",
            "transactions_mobile",
            "transactions_web",
            "dashboard",
            "order_details"
        ]
    );
    // The aggregates as written: routes of their own, after the file's routes.
    let aggregates: Vec<(&str, usize, &str)> = cfg
        .aggregates
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.compiled.plan.calls.len(),
                cfg.routes[a.route].paths[0].as_str(),
            )
        })
        .collect();
    assert_eq!(
        aggregates,
        [
            ("dashboard", 3, "/api/v1/dashboard/:userId"),
            ("order_details", 6, "/api/v1/orders/:orderId/details")
        ]
    );
    let r = &cfg.routes[0];
    assert_eq!(r.paths, ["/api/v1/users", "/api/v1/profiles"]);
    assert_eq!(
        r.methods.as_deref(),
        Some(&["GET", "POST", "PUT", "DELETE"].map(String::from)[..])
    );
    assert_eq!(
        r.hosts.as_deref(),
        Some(&["api.example.com", "*.example.com", "127.0.0.1"].map(String::from)[..])
    );
    assert_eq!(
        (r.upstream, r.strip_prefix, r.rewrite.as_deref(), r.timeout),
        (0, false, None, None)
    );
    assert_eq!(
        (r.location.line, r.location.col),
        (line_of(&text, "[routes.users]"), 1)
    );
    assert_eq!(
        r.split,
        [
            SplitSide {
                upstream: 0,
                weight: 90
            },
            SplitSide {
                upstream: 3,
                weight: 10
            }
        ]
    );
    assert_eq!(r.sticky, Some(Sticky::Header("x-user-id".into())));
    let canary = &cfg.routes[1];
    assert_eq!(canary.headers, [("x-canary".to_string(), "1".to_string())]);
    assert_eq!(
        (
            canary.upstream,
            canary.methods.as_ref(),
            canary.hosts.as_ref()
        ),
        (3, None, None)
    );
    assert_eq!(cfg.routes[3].paths, ["/api/v1/payments/*"]);
    assert_eq!(cfg.routes[3].timeout, Some(Duration::from_secs(5)));
    let transfers = &cfg.routes[4];
    assert_eq!(transfers.paths, ["=/api/v1/transfers"]);
    assert_eq!(transfers.rewrite.as_deref(), Some("/v2/transfers"));
    assert_eq!(cfg.routes[5].upstream, 2);
}

#[test]
fn defaults_apply_to_an_empty_file() {
    let cfg = load("");
    assert_eq!(cfg.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    let cores = core_affinity::get_core_ids().map_or(0, |ids| ids.len());
    assert!(cfg.server.workers >= 1 && (cores == 0 || cfg.server.workers == cores));
    assert!(cfg.server.pin_workers);
    assert_eq!(cfg.server.driver, Driver::Auto);
    assert_eq!(cfg.server.drain_timeout, Duration::from_secs(30));
    assert_eq!(cfg.server.limits.max_request_line, 8 << 10);
    assert_eq!(cfg.server.limits.max_body, 10 << 20);
    assert!(cfg.admin.is_none(), "no [admin] section, no admin listener");
    let admin = load("[admin]\n").admin.expect("[admin] section");
    assert_eq!(admin.listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(admin.token_env, None);
    assert_eq!(
        (cfg.log.level, cfg.log.access),
        (LogLevel::Info, AccessLog::Off)
    );
    assert!(cfg.upstreams.is_empty() && cfg.routes.is_empty());
}

#[test]
fn values_are_normalised() {
    let cfg = load(
        r#"
[server]
workers = 3
driver = "epoll"
listen = ["0.0.0.0:80", "[::1]:8080"]
drain_timeout = "0s"

[server.limits]
max_request_line = 1024
max_body = "1GiB"

[log]
level = "debug"

[upstreams.zeta]
endpoints = [{ url = "http://localhost:7000" }]
balance = "hash:header:X-User-Id"

[upstreams.alpha]
endpoints = ["http://127.0.0.1"]
balance = "least_request"

[routes.zeta]
paths = ["/z"]
methods = ["get", "GET", "Post"]
hosts = ["API.Example.COM", "*.Example.com"]
headers = { "X-Canary" = "1", "x-b" = "two words" }
upstream = "alpha"
strip_prefix = true

[routes.alpha]
paths = ["=/a", "/a/:id/*"]
upstream = "zeta"
timeout = "250ms"
"#,
    );
    assert_eq!(cfg.server.workers, 3);
    assert_eq!(cfg.server.driver, Driver::Epoll);
    assert_eq!(
        cfg.server.listen,
        vec!["0.0.0.0:80".parse().unwrap(), "[::1]:8080".parse().unwrap()]
    );
    assert_eq!(cfg.server.drain_timeout, Duration::ZERO);
    assert_eq!(
        (
            cfg.server.limits.max_request_line,
            cfg.server.limits.max_body
        ),
        (1024, 1 << 30)
    );
    assert_eq!(cfg.log.level, LogLevel::Debug);
    // File order, not alphabetical.
    assert_eq!(
        cfg.upstreams
            .iter()
            .map(|u| u.name.as_str())
            .collect::<Vec<_>>(),
        ["zeta", "alpha"]
    );
    assert_eq!(
        cfg.routes
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["zeta", "alpha"]
    );
    let zeta = &cfg.upstreams[0];
    assert_eq!(zeta.balance, Balance::HashHeader("x-user-id".into()));
    assert_eq!(
        (zeta.endpoints[0].weight, zeta.endpoints[0].addr.port()),
        (1, 7000)
    );
    assert!(zeta.endpoints[0].addr.ip().is_loopback());
    let alpha = &cfg.upstreams[1];
    assert_eq!(alpha.balance, Balance::LeastRequest);
    assert_eq!(
        (
            alpha.endpoints[0].addr.to_string().as_str(),
            alpha.endpoints[0].authority.as_str()
        ),
        ("127.0.0.1:80", "127.0.0.1")
    );
    let r = &cfg.routes[0];
    assert_eq!(
        r.methods.as_deref(),
        Some(&["GET".to_string(), "POST".to_string()][..])
    );
    assert_eq!(
        r.hosts.as_deref(),
        Some(&["api.example.com".to_string(), "*.example.com".to_string()][..])
    );
    assert_eq!(
        r.headers,
        [
            ("x-canary".to_string(), "1".to_string()),
            ("x-b".to_string(), "two words".to_string())
        ]
    );
    assert_eq!((r.upstream, r.strip_prefix), (1, true));
    assert_eq!((r.location.line, r.location.col), (23, 1));
    assert_eq!(cfg.routes[1].upstream, 0);
    assert_eq!(cfg.routes[1].timeout, Some(Duration::from_millis(250)));
}

/// One error class per row: source, and the exact line `load_str` reports.
#[test]
fn errors_name_file_line_column_and_key() {
    const UP: &str = "[upstreams.users]\nendpoints = [\"http://127.0.0.1:9001\"]\n";
    const UPS: &str = "[upstreams.ledger]\nendpoints = [\"https://127.0.0.1:9443\"]\n";
    const TLS: &str = "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{ cert = \"a.crt\", key = \"a.key\" }]\n";
    // Call `items` of aggregate `d` is open at line 11.
    const AGG: &str = "[upstreams.users]\nendpoints = [\"http://127.0.0.1:9001\"]\n[aggregates.d]\npath = \"/d\"\n[aggregates.d.calls.order]\nupstream = \"users\"\npath = \"/o\"\n[aggregates.d.calls.items]\nupstream = \"users\"\npath = \"/i/{each}\"\n";
    let cases: Vec<(&str, String, &str)> = vec![
        // Syntax.
        ("syntax", "[server]\nworkers = \n".into(), "d.toml:2:11: invalid string: expected `\"`, `'`"),
        ("duplicate key", "[server]\nworkers = 1\nworkers = 2\n".into(), "d.toml:3:1: duplicate key `workers` in table `server`"),
        // Unknown keys, with and without a suggestion.
        ("unknown route key", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstrem = \"users\"\n"), "d.toml:5:1: routes.r.upstrem: unknown key \"upstrem\" (did you mean \"upstream\"?)"),
        ("unknown section", "[upstream.users]\nendpoints = []\n".into(), "d.toml:1:2: upstream: unknown key \"upstream\" (did you mean \"upstreams\"?)"),
        ("unknown limit", "[server.limits]\nmax_body_size = 1\n".into(), "d.toml:2:1: server.limits.max_body_size: unknown key \"max_body_size\" (did you mean \"max_body\"?)"),
        ("unknown key, no suggestion", "[admin]\nport = 1\n".into(), "d.toml:2:1: admin.port: unknown key \"port\"; expected one of \"listen\", \"token_env\""),
        ("unknown endpoint key", "[upstreams.u]\nendpoints = [{ url = \"http://127.0.0.1:1\", wieght = 2 }]\n".into(), "d.toml:2:44: upstreams.u.endpoints[0].wieght: unknown key \"wieght\" (did you mean \"weight\"?)"),
        ("unknown breaker key", format!("{UP}[upstreams.users.breaker]\nthreshold = 5\n"), "d.toml:4:1: upstreams.users.breaker.threshold: unknown key \"threshold\"; expected one of \"failure_threshold\", \"window\", \"recovery_timeout\", \"half_open_probes\", \"failure_on\", \"fallback\""),
        // Types and enum words.
        ("wrong type", "[server]\npin_workers = \"yes\"\n".into(), "d.toml:2:15: server.pin_workers: invalid type: string \"yes\", expected a boolean"),
        ("driver word", "[server]\ndriver = \"iouring\"\n".into(), "d.toml:2:10: server.driver: invalid value \"iouring\": expected one of \"auto\", \"io_uring\", \"epoll\" (did you mean \"io_uring\"?)"),
        ("log level", "[log]\nlevel = \"trace\"\n".into(), "d.toml:2:9: log.level: invalid value \"trace\": expected one of \"error\", \"warn\", \"info\", \"debug\""),
        ("negative count", "[server.limits]\nmax_headers = -1\n".into(), "d.toml:2:15: server.limits.max_headers: invalid value: integer `-1`, expected a non-negative integer"),
        // Workers.
        ("workers 0", "[server]\nworkers = 0\n".into(), "d.toml:2:11: server.workers: invalid value 0: expected \"auto\" or an integer >= 1"),
        ("workers word", "[server]\nworkers = \"all\"\n".into(), "d.toml:2:11: server.workers: invalid value \"all\": expected \"auto\" or an integer >= 1"),
        // Durations.
        ("bad duration", format!("{UP}connect_timeout = \"3x\"\n"), "d.toml:3:19: upstreams.users.connect_timeout: invalid duration \"3x\": expected a number followed by ms, s, m or h"),
        ("duration as integer", format!("{UP}read_timeout = 3\n"), "d.toml:3:16: upstreams.users.read_timeout: invalid type: integer `3`, expected a duration string such as \"250ms\", \"3s\", \"1m\" or \"1h\""),
        ("negative duration", "[server]\ndrain_timeout = \"-1s\"\n".into(), "d.toml:2:17: server.drain_timeout: invalid duration \"-1s\": must not be negative"),
        ("zero timeout", "[server.limits]\nheader_timeout = \"0s\"\n".into(), "d.toml:2:18: server.limits.header_timeout: must be greater than zero"),
        ("zero route timeout", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\ntimeout = \"0ms\"\n"), "d.toml:6:11: routes.r.timeout: must be greater than zero"),
        // Sizes.
        ("bad size", "[server.limits]\nmax_body = \"10MB\"\n".into(), "d.toml:2:12: server.limits.max_body: invalid size \"10MB\": ambiguous unit \"MB\"; sizes are 1024-based, write MiB (e.g. \"10MiB\")"),
        ("bad size unit", "[server.limits]\nmax_header_bytes = \"16 KiB\"\n".into(), "d.toml:2:20: server.limits.max_header_bytes: invalid size \"16 KiB\": expected a number of bytes, or a number followed by B, KiB, MiB or GiB"),
        ("zero size", "[server.limits]\nmax_body = 0\n".into(), "d.toml:2:12: server.limits.max_body: must be greater than zero"),
        ("tiny request line", "[server.limits]\nmax_request_line = \"8B\"\n".into(), "d.toml:2:20: server.limits.max_request_line: must be at least 16B"),
        ("zero count", "[server.limits]\nmax_connections = 0\n".into(), "d.toml:2:19: server.limits.max_connections: must be at least 1"),
        // Addresses.
        ("bad listen address", "[server]\nlisten = [\"127.0.0.1:8080\", \"localhost:8081\"]\n".into(), "d.toml:2:29: server.listen[1]: invalid address \"localhost:8081\": expected IP:PORT, as in \"127.0.0.1:8080\" or \"[::1]:8080\""),
        ("listen port 0", "[server]\nlisten = [\"127.0.0.1:0\"]\n".into(), "d.toml:2:11: server.listen[0]: invalid address \"127.0.0.1:0\": port 0 is not allowed"),
        ("empty listen", "[server]\nlisten = []\n".into(), "d.toml:2:10: server.listen: must list at least one address"),
        ("duplicate listen", "[server]\nlisten = [\"127.0.0.1:80\", \"127.0.0.1:80\"]\n".into(), "d.toml:2:27: server.listen[1]: duplicate address \"127.0.0.1:80\""),
        ("admin on a proxy port", "[server]\nlisten = [\"127.0.0.1:80\"]\n[admin]\nlisten = \"127.0.0.1:80\"\n".into(), "d.toml:4:10: admin.listen: \"127.0.0.1:80\" is also in server.listen"),
        ("token env name", "[admin]\ntoken_env = \"MY-TOKEN\"\n".into(), "d.toml:2:13: admin.token_env: invalid environment variable name \"MY-TOKEN\": expected letters, digits and '_', not starting with a digit"),
        // Upstreams.
        ("endpoint with path", "[upstreams.u]\nendpoints = [\"http://127.0.0.1:1\", { url = \"http://127.0.0.1:2/api\" }]\n".into(), "d.toml:2:44: upstreams.u.endpoints[1].url: invalid endpoint URL \"http://127.0.0.1:2/api\": an endpoint has no path, query or fragment (a route's rewrite changes the path)"),
        ("zero weight", "[upstreams.u]\nendpoints = [{ url = \"http://127.0.0.1:1\", weight = 0 }]\n".into(), "d.toml:2:53: upstreams.u.endpoints[0].weight: must be at least 1"),
        ("no endpoints", "[upstreams.u]\nendpoints = []\n".into(), "d.toml:2:13: upstreams.u.endpoints: an upstream needs at least one endpoint"),
        ("missing endpoints", "[upstreams.u]\nretries = 1\n".into(), "d.toml:1:1: upstreams.u.endpoints: missing required key"),
        ("missing endpoint url", "[upstreams.u]\nendpoints = [{ weight = 2 }]\n".into(), "d.toml:2:14: upstreams.u.endpoints[0].url: missing required key"),
        ("duplicate endpoint", "[upstreams.u]\nendpoints = [\"http://127.0.0.1:1\", \"http://127.0.0.1:1/\"]\n".into(), "d.toml:2:36: upstreams.u.endpoints[1]: duplicate endpoint \"http://127.0.0.1:1/\""),
        ("bad balance", format!("{UP}balance = \"least_requests\"\n"), "d.toml:3:11: upstreams.users.balance: invalid balance \"least_requests\": expected \"round_robin\", \"least_request\", \"hash:header:NAME\" or \"hash:ip\" (did you mean \"least_request\"?)"),
        // Routes.
        ("dangling upstream", format!("{UP}[routes.users]\npaths = [\"/api/v1/users\"]\nupstream = \"user\"\n"), "d.toml:5:12: routes.users.upstream: no upstream named \"user\" (did you mean \"users\"?)"),
        ("dangling upstream, no suggestion", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"billing\"\n"), "d.toml:5:12: routes.r.upstream: no upstream named \"billing\""),
        ("missing upstream", format!("{UP}[routes.r]\npaths = [\"/\"]\n"), "d.toml:3:1: routes.r.upstream: missing required key"),
        ("missing paths", format!("{UP}[routes.r]\nupstream = \"users\"\n"), "d.toml:3:1: routes.r.paths: missing required key"),
        ("empty paths", format!("{UP}[routes.r]\npaths = []\nupstream = \"users\"\n"), "d.toml:4:9: routes.r.paths: a route needs at least one path"),
        ("relative path", format!("{UP}[routes.r]\npaths = [\"/a\", \"b\"]\nupstream = \"users\"\n"), "d.toml:4:16: routes.r.paths[1]: invalid path \"b\": must start with \"/\" (prefix) or \"=/\" (exact)"),
        ("bad method", format!("{UP}[routes.r]\npaths = [\"/\"]\nmethods = [\"GET\", \"GE T\"]\nupstream = \"users\"\n"), "d.toml:5:19: routes.r.methods[1]: invalid method \"GE T\": not an HTTP token"),
        ("empty methods", format!("{UP}[routes.r]\npaths = [\"/\"]\nmethods = []\nupstream = \"users\"\n"), "d.toml:5:11: routes.r.methods: must not be empty; omit the key to allow any method"),
        ("bad host wildcard", format!("{UP}[routes.r]\npaths = [\"/\"]\nhosts = [\"api.*.com\"]\nupstream = \"users\"\n"), "d.toml:5:10: routes.r.hosts[0]: invalid host \"api.*.com\": '*' is only allowed as the whole first label, as in \"*.example.com\""),
        ("bad header name", format!("{UP}[routes.r]\npaths = [\"/\"]\nheaders = {{ \"x canary\" = \"1\" }}\nupstream = \"users\"\n"), "d.toml:5:13: routes.r.headers.\"x canary\": invalid header name \"x canary\": not an HTTP token"),
        ("duplicate header", format!("{UP}[routes.r]\npaths = [\"/\"]\nheaders = {{ \"X-A\" = \"1\", \"x-a\" = \"2\" }}\nupstream = \"users\"\n"), "d.toml:5:26: routes.r.headers.x-a: duplicate header \"x-a\" (names are case-insensitive)"),
        ("header value type", format!("{UP}[routes.r]\npaths = [\"/\"]\nheaders = {{ \"x-a\" = 1 }}\nupstream = \"users\"\n"), "d.toml:5:21: routes.r.headers.x-a: invalid type: integer `1`, expected a string"),
        ("bad rewrite", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nrewrite = \"v2\"\n"), "d.toml:6:11: routes.r.rewrite: invalid rewrite \"v2\": must start with \"/\""),
        ("rewrite with strip_prefix", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nstrip_prefix = true\nrewrite = \"/v2\"\n"), "d.toml:7:11: routes.r.rewrite: cannot be combined with strip_prefix = true: rewrite already replaces the matched prefix"),
        // Capabilities not built yet: parsed and checked, then rejected at their first key.
        // The cache: sizes, times, references, and per_user needing auth.
        ("cache unknown rule", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\ncache = \"catalgo\"\n\n[cache.rules.catalog]\nttl = \"1s\"\n"), "d.toml:6:9: routes.r.cache: no cache rule named \"catalgo\" (did you mean \"catalog\"?)"),
        ("cache per_user without auth", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\ncache = \"c\"\n\n[cache.rules.c]\nttl = \"1s\"\nper_user = true\n"), "d.toml:6:9: routes.r.cache: cache rule \"c\" is per_user: the route needs `auth` (without an authenticated subject one client's entry would answer another)"),
        ("cache object over shard", "[cache]\nmax_bytes_per_worker = \"1KiB\"\nmax_object = \"2KiB\"\n".into(), "d.toml:3:14: cache.max_object: max_object must not exceed max_bytes_per_worker: such an object could never be stored"),
        ("cache fractional ttl", "[cache.rules.c]\nttl = \"1500ms\"\n".into(), "d.toml:2:7: cache.rules.c.ttl: must be a whole number of seconds (HTTP cache ages are counted in seconds)"),
        ("cache zero ttl", "[cache.rules.c]\nttl = \"0s\"\n".into(), "d.toml:2:7: cache.rules.c.ttl: must be greater than zero"),
        ("cache bad invalidation", "[cache.rules.c]\ninvalidate_on = [\"POST\"]\n".into(), "d.toml:2:18: cache.rules.c.invalidate_on[0]: invalid request \"POST\": expected \"METHOD /path\""),
        ("cache star inside", "[cache.rules.c]\ninvalidate_on = [\"PUT /a/*/b\"]\n".into(), "d.toml:2:18: cache.rules.c.invalidate_on[0]: invalid path in \"PUT /a/*/b\": `*` may only end the path"),
        // Auth and rate limits: what a route's policies need of each other.
        ("jwt key without jwt auth", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nrate_limits = [\"u\"]\n[rate_limits.u]\nalgorithm = \"fixed_window\"\nkey = \"jwt:sub\"\nlimit = 1\nwindow = \"1s\"\n"), "d.toml:6:16: routes.r.rate_limits[0]: rate limit \"u\" counts by jwt:sub, which needs a jwt auth policy on the route: without it every request would share the key \"<missing>\""),
        ("consumer key on a jwt route", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nauth = \"j\"\nrate_limits = [\"u\"]\n[rate_limits.u]\nalgorithm = \"token_bucket\"\nkey = \"consumer\"\nrate = 1\nburst = 1\n[auth.j]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nkeys = \"k.pem\"\n"), "d.toml:7:16: routes.r.rate_limits[0]: rate limit \"u\" counts by consumer, which needs an api_key auth policy on the route: without it every request would share the key \"<missing>\""),
        ("predicate on an identity header", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nheaders = {{ \"X-User-Id\" = \"1\" }}\n[auth.j]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nkeys = \"k.pem\"\nforward = {{ sub = \"x-user-id\" }}\n"), "d.toml:6:11: routes.r.headers.x-user-id: \"x-user-id\" is an identity header (auth.j forwards it): it is removed from every request before routing, so no route can match on it"),
        ("api key from an identity header", "[auth.j]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nkeys = \"k.pem\"\nforward = { sub = \"x-api-key\" }\n[auth.k]\ntype = \"api_key\"\nheader = \"X-Api-Key\"\nkeys_file = \"k.toml\"\n".into(), "d.toml:8:10: auth.k.header: \"x-api-key\" is an identity header (auth.j forwards it): it is removed from every request, so no key could be read from it"),
        ("forward to a gateway header", "[auth.j]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nkeys = \"k.pem\"\nforward = { sub = \"X-Request-Id\" }\n".into(), "d.toml:5:19: auth.j.forward.sub: \"x-request-id\" frames, routes or authenticates the request, or is set by the gateway: it cannot carry an identity"),
        ("identity header key without its policy", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nrate_limits = [\"u\"]\n[rate_limits.u]\nalgorithm = \"fixed_window\"\nkey = \"header:x-user-id\"\nlimit = 1\nwindow = \"1s\"\n[auth.j]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nkeys = \"k.pem\"\nforward = {{ sub = \"x-user-id\" }}\n"), "d.toml:6:16: routes.r.rate_limits[0]: rate limit \"u\" counts by header:x-user-id, which needs an auth policy that forwards x-user-id on the route: without it every request would share the key \"<missing>\""),
        ("api key under a gateway header", "[auth.k]\ntype = \"api_key\"\nheader = \"X-Request-Id\"\nkeys_file = \"k.toml\"\n".into(), "d.toml:3:10: auth.k.header: \"x-request-id\" is read or set by the gateway: it cannot carry an API key"),
        ("leaky bucket without burst", "[rate_limits.l]\nalgorithm = \"leaky_bucket\"\nkey = \"ip\"\nrate = 5\n".into(), "d.toml:1:1: rate_limits.l.burst: missing required key"),
        ("api key query spelled encoded", "[auth.k]\ntype = \"api_key\"\nquery = \"api%5Fkey\"\nkeys_file = \"k.toml\"\n".into(), "d.toml:3:9: auth.k.query: invalid query parameter name \"api%5Fkey\""),
        ("websocket route with a cache rule", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nwebsocket = true\ncache = \"c\"\n\n[cache.rules.c]\nttl = \"1s\"\n"), "d.toml:7:9: routes.r.cache: cannot be combined with websocket = true: an upgrade is never answered from the cache, and a tunnel's bytes are not a response to store"),
        // Compression (issue 13): codings, sizes and media types.
        ("compression without algorithms", "[compression]\nalgorithms = []\n".into(), "d.toml:2:14: compression.algorithms: must list at least one of \"br\", \"gzip\""),
        ("compression algorithm twice", "[compression]\nalgorithms = [\"gzip\", \"br\", \"gzip\"]\n".into(), "d.toml:2:29: compression.algorithms[2]: duplicate algorithm \"gzip\""),
        ("compression type without subtype", "[compression]\ntypes = [\"text\"]\n".into(), "d.toml:2:10: compression.types[0]: invalid media type \"text\": expected \"type/subtype\" or \"type/*\""),
        ("compression of every type", "[compression]\ntypes = [\"*/*\"]\n".into(), "d.toml:2:10: compression.types[0]: \"*/*\" would compress every type, images and archives included (already compressed): list the types, as in \"text/*\""),
        ("compression type twice", "[compression]\ntypes = [\"text/*\", \"TEXT/*\"]\n".into(), "d.toml:2:20: compression.types[1]: duplicate media type \"TEXT/*\""),
        ("compression without types", "[compression]\ntypes = []\n".into(), "d.toml:2:9: compression.types: must list at least one media type, as in [\"application/json\", \"text/*\"]"),
        ("compression min_size", "[compression]\nmin_size = \"1KB\"\n".into(), "d.toml:2:12: compression.min_size: invalid size \"1KB\": ambiguous unit \"KB\"; sizes are 1024-based, write KiB (e.g. \"1KiB\")"),
        // TLS (issue 13): termination, https upstreams and their tls_* keys.
        // TLS termination (issue 13): certificate files are read at load, relative to the file.
        ("tls certificate file missing", TLS.into(), "d.toml:3:26: server.tls.certificates[0].cert: cannot read a.crt: No such file or directory (os error 2)"),
        ("tls as dotted keys, certificate file missing", "[server]\nworkers = 1\ntls.listen = [\"127.0.0.1:8443\"]\ntls.certificates = [{ cert = \"a.crt\", key = \"a.key\" }]\n".into(), "d.toml:4:30: server.tls.certificates[0].cert: cannot read a.crt: No such file or directory (os error 2)"),
        // ... whose values are checked before that.
        ("tls_ca file missing", format!("{UPS}tls_ca = \"missing-ca.pem\"\n"), "d.toml:3:10: upstreams.ledger.tls_ca: cannot read \"missing-ca.pem\": No such file or directory (os error 2)"),
        ("tls_ca read before the client certificate", format!("{UPS}tls_client_cert = \"g.crt\"\ntls_client_key = \"g.key\"\ntls_ca = \"missing-ca.pem\"\n"), "d.toml:5:10: upstreams.ledger.tls_ca: cannot read \"missing-ca.pem\": No such file or directory (os error 2)"),
        ("tls listen missing", "[server.tls]\ncertificates = [{ cert = \"a.crt\", key = \"a.key\" }]\n".into(), "d.toml:1:1: server.tls.listen: missing required key"),
        ("tls certificates missing", "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\n".into(), "d.toml:1:1: server.tls.certificates: missing required key"),
        ("tls unknown key", format!("{TLS}certificate = \"a.crt\"\n"), "d.toml:4:1: server.tls.certificate: unknown key \"certificate\" (did you mean \"certificates\"?)"),
        ("tls empty listen", "[server.tls]\nlisten = []\ncertificates = [{ cert = \"a.crt\", key = \"a.key\" }]\n".into(), "d.toml:2:10: server.tls.listen: must list at least one address"),
        ("tls listen address", "[server.tls]\nlisten = [\"localhost:8443\"]\ncertificates = [{ cert = \"a.crt\", key = \"a.key\" }]\n".into(), "d.toml:2:11: server.tls.listen[0]: invalid address \"localhost:8443\": expected IP:PORT, as in \"127.0.0.1:8080\" or \"[::1]:8080\""),
        ("tls listen duplicate", "[server.tls]\nlisten = [\"127.0.0.1:8443\", \"127.0.0.1:8443\"]\ncertificates = [{ cert = \"a.crt\", key = \"a.key\" }]\n".into(), "d.toml:2:29: server.tls.listen[1]: duplicate address \"127.0.0.1:8443\""),
        ("tls listen on a plaintext port", format!("[server]\nlisten = [\"127.0.0.1:8443\"]\n{TLS}"), "d.toml:4:11: server.tls.listen[0]: \"127.0.0.1:8443\" is also in server.listen (one address serves either plaintext or TLS)"),
        ("tls listen on the default plaintext port", "[server.tls]\nlisten = [\"127.0.0.1:8080\"]\ncertificates = [{ cert = \"a.crt\", key = \"a.key\" }]\n".into(), "d.toml:2:11: server.tls.listen[0]: \"127.0.0.1:8080\" is server.listen's default, served in plaintext: one address serves either plaintext or TLS"),
        ("tls listen on the admin port", format!("{TLS}[admin]\nlisten = \"127.0.0.1:8443\"\n"), "d.toml:2:11: server.tls.listen[0]: \"127.0.0.1:8443\" is also admin.listen"),
        ("tls no certificates", "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = []\n".into(), "d.toml:3:16: server.tls.certificates: must list at least one { cert, key } pair"),
        ("tls certificate without key", "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{ cert = \"a.crt\" }]\n".into(), "d.toml:3:17: server.tls.certificates[0].key: missing required key"),
        ("tls empty key path", "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{ cert = \"a.crt\", key = \"a.key\" }, { cert = \"b.crt\", key = \" \" }]\n".into(), "d.toml:3:76: server.tls.certificates[1].key: must not be empty: expected a file path"),
        ("tls min_version", format!("{TLS}min_version = \"1.1\"\n"), "d.toml:4:15: server.tls.min_version: invalid value \"1.1\": expected one of \"1.2\", \"1.3\" (did you mean \"1.2\"?)"),
        ("tls min_version as a number", format!("{TLS}min_version = 1.3\n"), "d.toml:4:15: server.tls.min_version: invalid type: number 1.3, expected the string \"1.2\" or \"1.3\" (in quotes)"),
        ("tls empty alpn", format!("{TLS}alpn = []\n"), "d.toml:4:8: server.tls.alpn: must list at least one protocol, as in [\"http/1.1\"]"),
        ("tls alpn id", format!("{TLS}alpn = [\"http/1.1\", \"http 1.1\"]\n"), "d.toml:4:21: server.tls.alpn[1]: invalid ALPN protocol ID \"http 1.1\": expected 1 to 255 printable ASCII characters, as in \"http/1.1\""),
        ("tls alpn h2", format!("{TLS}alpn = [\"h2\", \"http/1.1\"]\n"), "d.toml:4:9: server.tls.alpn[0]: \"h2\" is not a protocol this gateway speaks: it serves HTTP/1.1 only, so offer \"http/1.1\" (or \"http/1.0\")"),
        ("tls alpn duplicate", format!("{TLS}alpn = [\"http/1.1\", \"http/1.1\"]\n"), "d.toml:4:21: server.tls.alpn[1]: duplicate protocol \"http/1.1\""),
        ("tls zero handshake timeout", format!("{TLS}handshake_timeout = \"0s\"\n"), "d.toml:4:21: server.tls.handshake_timeout: must be greater than zero"),
        ("tls handshake timeout unit", format!("{TLS}handshake_timeout = \"10\"\n"), "d.toml:4:21: server.tls.handshake_timeout: invalid duration \"10\": expected a number followed by ms, s, m or h"),
        ("tls empty client_ca", format!("{TLS}client_ca = \"\"\n"), "d.toml:4:13: server.tls.client_ca: must not be empty: expected a file path"),
        ("https endpoint with a path", "[upstreams.u]\nendpoints = [\"https://127.0.0.1:9443/api\"]\n".into(), "d.toml:2:14: upstreams.u.endpoints[0]: invalid endpoint URL \"https://127.0.0.1:9443/api\": an endpoint has no path, query or fragment (a route's rewrite changes the path)"),
        ("https endpoint, IPv6 unbracketed", "[upstreams.u]\nendpoints = [{ url = \"https://::1:9443\" }]\n".into(), "d.toml:2:22: upstreams.u.endpoints[0].url: invalid endpoint URL \"https://::1:9443\": write IPv6 addresses in brackets, as in \"https://[::1]:9443\""),
        ("https endpoint port", "[upstreams.u]\nendpoints = [\"https://ledger.internal:0\"]\n".into(), "d.toml:2:14: upstreams.u.endpoints[0]: invalid endpoint URL \"https://ledger.internal:0\": invalid port \"0\""),
        ("https and http mixed", "[upstreams.u]\nendpoints = [\"https://127.0.0.1:9443\", \"http://127.0.0.1:9001\"]\n".into(), "d.toml:2:40: upstreams.u.endpoints[1]: \"http://127.0.0.1:9001\" mixes http:// and https:// endpoints in one upstream: a retry or the balancer would move a request between TLS and plaintext; use one scheme per upstream"),
        ("http and https mixed", "[upstreams.u]\nendpoints = [\"http://127.0.0.1:9001\", { url = \"https://127.0.0.1:9443\" }]\n".into(), "d.toml:2:47: upstreams.u.endpoints[1].url: \"https://127.0.0.1:9443\" mixes http:// and https:// endpoints in one upstream: a retry or the balancer would move a request between TLS and plaintext; use one scheme per upstream"),
        ("tls_ca on an http upstream", format!("{UP}tls_ca = \"ca.pem\"\n"), "d.toml:3:1: upstreams.users.tls_ca: only applies to https:// endpoints, and this upstream has none"),
        ("tls_server_name on an http upstream", format!("{UP}tls_server_name = \"users.internal\"\n"), "d.toml:3:1: upstreams.users.tls_server_name: only applies to https:// endpoints, and this upstream has none"),
        ("empty tls_ca", format!("{UPS}tls_ca = \"\"\n"), "d.toml:3:10: upstreams.ledger.tls_ca: must not be empty: expected a file path"),
        ("tls_server_name wildcard", format!("{UPS}tls_server_name = \"*.internal\"\n"), "d.toml:3:19: upstreams.ledger.tls_server_name: invalid server name \"*.internal\": expected a DNS name or an IP address"),
        ("tls_client_cert without key", format!("{UPS}tls_client_cert = \"g.crt\"\n"), "d.toml:3:1: upstreams.ledger.tls_client_cert: needs tls_client_key: a client certificate is presented with its private key"),
        ("tls_client_key without cert", format!("{UPS}tls_client_key = \"g.key\"\n"), "d.toml:3:1: upstreams.ledger.tls_client_key: needs tls_client_cert: a private key without its certificate presents nothing"),
        ("empty tls_client_key", format!("{UPS}tls_client_cert = \"g.crt\"\ntls_client_key = \"\"\n"), "d.toml:4:18: upstreams.ledger.tls_client_key: must not be empty: expected a file path"),
        ("upstream tls key typo", format!("{UPS}tls_ca_file = \"ca.pem\"\n"), "d.toml:3:1: upstreams.ledger.tls_ca_file: unknown key \"tls_ca_file\" (did you mean \"tls_ca\"?)"),
        // Aggregate fan-out and conditions (issue 11).
        ("foreach path", format!("{AGG}foreach = \"order..ids\"\n"), "d.toml:11:11: aggregates.d.calls.items.foreach: invalid foreach \"order..ids\": expected a path like \"call.field\" (A-Z a-z 0-9 _ - between dots)"),
        ("foreach unknown call", format!("{AGG}foreach = \"ordr.productIds\"\n"), "d.toml:11:11: aggregates.d.calls.items.foreach: no call named \"ordr\" (did you mean \"order\"?)"),
        ("foreach own result", format!("{AGG}foreach = \"items.ids\"\n"), "d.toml:11:11: aggregates.d.calls.items.foreach: invalid foreach \"items.ids\": a call cannot iterate over its own result"),
        ("foreach zero max_items", format!("{AGG}foreach = \"order.ids\"\nmax_items = 0\n"), "d.toml:12:13: aggregates.d.calls.items.max_items: must be at least 1"),
        ("foreach zero concurrency", format!("{AGG}foreach = \"order.ids\"\nconcurrency = 0\n"), "d.toml:12:15: aggregates.d.calls.items.concurrency: must be at least 1"),
        ("foreach negative max_items", format!("{AGG}foreach = \"order.ids\"\nmax_items = -1\n"), "d.toml:12:13: aggregates.d.calls.items.max_items: invalid value: integer `-1`, expected a non-negative integer"),
        ("max_items without foreach", format!("{AGG}max_items = 5\n"), "d.toml:11:1: aggregates.d.calls.items.max_items: only valid with foreach"),
        ("concurrency without foreach", format!("{AGG}concurrency = 2\n"), "d.toml:11:1: aggregates.d.calls.items.concurrency: only valid with foreach"),
        ("empty when", format!("{AGG}when = '  '\n"), "d.toml:11:8: aggregates.d.calls.items.when: empty jq program"),
        ("foreach key typo", format!("{AGG}for_each = \"order.ids\"\n"), "d.toml:11:1: aggregates.d.calls.items.for_each: unknown key \"for_each\" (did you mean \"foreach\"?)"),
        ("weight over the cap", "[upstreams.users]\nendpoints = [{ url = \"http://127.0.0.1:9001\", weight = 1001 }]\n".into(), "d.toml:2:56: upstreams.users.endpoints[0].weight: must be at most 1000"),
        ("fallback without a body", format!("{UP}[upstreams.users.breaker]\nfallback = {{ status = 204 }}\n"), "d.toml:4:23: upstreams.users.breaker.fallback.status: must be an HTTP status from 200 to 599 that carries a body (not 204 or 304)"),
        ("sticky without split", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nsticky = \"ip\"\n"), "d.toml:6:10: routes.r.sticky: only applies to a route with a split: add `split` or remove `sticky`"),
        ("otlp without propagation", "[tracing]\npropagate = false\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n".into(), "d.toml:3:17: tracing.otlp_endpoint: needs propagate = true (spans belong to the trace the gateway propagates)"),
        ("otlp over https", "[tracing]\notlp_endpoint = \"https://127.0.0.1:4318/v1/traces\"\n".into(), "d.toml:2:17: tracing.otlp_endpoint: invalid URL \"https://127.0.0.1:4318/v1/traces\": https is not supported (no TLS): use http://"),
        // ... whose values are checked before that.
        ("breaker failure_on", format!("{UP}[upstreams.users.breaker]\nfailure_on = [\"connect\", \"5xxx\"]\n"), "d.toml:4:26: upstreams.users.breaker.failure_on[1]: invalid value \"5xxx\": expected one of \"connect\", \"timeout\", \"5xx\" (did you mean \"5xx\"?)"),
        ("breaker window", format!("{UP}[upstreams.users.breaker]\nwindow = \"60\"\n"), "d.toml:4:10: upstreams.users.breaker.window: invalid duration \"60\": expected a number followed by ms, s, m or h"),
        ("rate limit algorithm", "[rate_limits.x]\nalgorithm = \"sliding_window\"\nkey = \"ip\"\n".into(), "d.toml:2:13: rate_limits.x.algorithm: invalid value \"sliding_window\": expected one of \"fixed_window\", \"sliding_window_log\", \"sliding_window_counter\", \"token_bucket\", \"leaky_bucket\" (did you mean \"sliding_window_log\"?)"),
        ("rate limit key", "[rate_limits.x]\nalgorithm = \"token_bucket\"\nkey = \"user\"\nrate = 1\nburst = 1\n".into(), "d.toml:3:7: rate_limits.x.key: invalid key \"user\": expected \"ip\", \"header:NAME\", \"jwt:CLAIM\", \"consumer\", \"route\" or \"global\""),
        ("rate limit shape", "[rate_limits.x]\nalgorithm = \"token_bucket\"\nkey = \"ip\"\nlimit = 5\n".into(), "d.toml:4:1: rate_limits.x.limit: only valid with algorithm fixed_window, sliding_window_log and sliding_window_counter"),
        ("rate limit tier", "[rate_limits.x]\nalgorithm = \"fixed_window\"\nkey = \"ip\"\nlimit = 5\nwindow = \"1s\"\ntiers.free = { limit = 0, window = \"1h\" }\ntier = \"jwt:plan\"\n".into(), "d.toml:6:24: rate_limits.x.tiers.free.limit: must be at least 1"),
        ("auth type", "[auth.x]\ntype = \"oauth\"\n".into(), "d.toml:2:8: auth.x.type: invalid value \"oauth\": expected one of \"jwt\", \"api_key\""),
        ("auth algorithm", "[auth.x]\ntype = \"jwt\"\nalgorithms = [\"RS256\", \"none\"]\nkeys = \"k.pem\"\n".into(), "d.toml:3:24: auth.x.algorithms[1]: invalid value \"none\": expected one of \"RS256\", \"RS384\", \"RS512\", \"PS256\", \"ES256\", \"ES384\", \"EdDSA\", \"HS256\", \"HS384\", \"HS512\""),
        ("auth key of the other type", "[auth.x]\ntype = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"keys.toml\"\nissuer = \"me\"\n".into(), "d.toml:5:1: auth.x.issuer: only valid with type = \"jwt\""),
        ("route auth reference", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nauth = \"jtw\"\n[auth.jwt]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"S\"\n"), "d.toml:6:8: routes.r.auth: no auth policy named \"jtw\" (did you mean \"jwt\"?)"),
        ("split upstream", format!("{UP}[routes.r]\npaths = [\"/\"]\nsplit = [{{ upstream = \"users\", weight = 90 }}, {{ upstream = \"v2\", weight = 10 }}]\n"), "d.toml:5:60: routes.r.split[1].upstream: no upstream named \"v2\""),
        ("cache ttl", "[cache.rules.catalog]\nttl = \"5 m\"\n".into(), "d.toml:2:7: cache.rules.catalog.ttl: invalid duration \"5 m\": expected a number followed by ms, s, m or h"),
        ("cache size", "[cache]\nmax_object = \"1MB\"\n".into(), "d.toml:2:14: cache.max_object: invalid size \"1MB\": ambiguous unit \"MB\"; sizes are 1024-based, write MiB (e.g. \"1MiB\")"),
        ("aggregate call", "[aggregates.d]\npath = \"/d\"\n[aggregates.d.calls.a]\nupstream = \"u\"\npath = \"/a\"\nrequried = true\n".into(), "d.toml:6:1: aggregates.d.calls.a.requried: unknown key \"requried\" (did you mean \"required\"?)"),
        // Regression: an aggregate and a route of one name shared labels, log lines and buckets.
        ("aggregate named as a route", format!("{UP}[routes.d]\npaths = [\"/r\"]\nupstream = \"users\"\n[aggregates.d]\npath = \"/d\"\n[aggregates.d.calls.a]\nupstream = \"users\"\npath = \"/a\"\n"), "d.toml:6:13: aggregates.d: aggregate \"d\" has the name of route \"d\" (line 3); aggregates and routes share one namespace (metric labels, access log, rate-limit keys): rename one"),
        ("compression algorithm", "[compression]\nalgorithms = [\"brotli\"]\n".into(), "d.toml:2:15: compression.algorithms[0]: invalid value \"brotli\": expected one of \"br\", \"gzip\""),
        // BFF (issue 11): clients, prefixes, the header, routes' `client`, client defaults.
        ("route client unknown", format!("{UP}[bff.clients.mobile]\nprefix = \"/m\"\n[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nclient = \"mobil\"\n"), "d.toml:8:10: routes.r.client: no bff client named \"mobil\" (did you mean \"mobile\"?)"),
        ("route client without bff", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nclient = \"mobile\"\n"), "d.toml:6:10: routes.r.client: no bff client named \"mobile\": the config has no [bff] section"),
        ("bff without clients", "[bff]\nheader = \"x-client-type\"\n".into(), "d.toml:1:1: bff: defines no client: add a [bff.clients.NAME] table, or remove [bff]"),
        ("client without prefix or header", "[bff.clients.tv]\nauth = \"j\"\n[auth.j]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"S\"\n".into(), "d.toml:1:1: bff.clients.tv: needs a prefix: without one (and without bff.header) no request can belong to this client"),
        ("prefix with a trailing slash", "[bff.clients.mobile]\nprefix = \"/mobile/v1/\"\n".into(), "d.toml:2:10: bff.clients.mobile.prefix: invalid prefix \"/mobile/v1/\": no trailing \"/\": write \"/mobile/v1\" (a prefix matches on segment boundaries)"),
        ("prefix with pattern syntax", "[bff.clients.mobile]\nprefix = \"/m/:version\"\n".into(), "d.toml:2:10: bff.clients.mobile.prefix: invalid prefix \"/m/:version\": ':' and '*' are route pattern syntax; a prefix is a literal path"),
        ("nested prefixes", "[bff.clients.mobile]\nprefix = \"/m\"\n[bff.clients.tablet]\nprefix = \"/m/t\"\n".into(), "d.toml:4:10: bff.clients.tablet.prefix: prefix \"/m/t\" is nested with bff.clients.mobile's \"/m\": a request under both would belong to either"),
        ("same prefixes", "[bff.clients.mobile]\nprefix = \"/m\"\n[bff.clients.tablet]\nprefix = \"/m\"\n".into(), "d.toml:4:10: bff.clients.tablet.prefix: prefix \"/m\" is the same prefix as bff.clients.mobile's \"/m\": a request under both would belong to either"),
        ("bff header owned by the gateway", "[bff]\nheader = \"X-Forwarded-For\"\n[bff.clients.mobile]\nprefix = \"/m\"\n".into(), "d.toml:2:10: bff.header: \"X-Forwarded-For\" is a field the gateway reads, removes or sets itself: choose a header of your own, such as \"x-client-type\""),
        ("bff header is an identity header", "[bff]\nheader = \"X-User-Id\"\n[bff.clients.mobile]\nprefix = \"/m\"\n[auth.j]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"S\"\nforward = { sub = \"x-user-id\" }\n".into(), "d.toml:2:10: bff.header: \"X-User-Id\" is an identity header (auth.j forwards it): it is removed from every request before routing, so no client could be named in it"),
        ("bff header with an underscore", "[bff]\nheader = \"x_client\"\n[bff.clients.mobile]\nprefix = \"/m\"\n".into(), "d.toml:2:10: bff.header: header name \"x_client\" holds '_': request fields with '_' in their name are dropped (as nginx's underscores_in_headers off), so it could never be read"),
        ("client name the header cannot carry", "[bff]\nheader = \"x-client-type\"\n[bff.clients.\" tv\"]\n".into(), "d.toml:3:14: bff.clients.\" tv\": invalid header value \" tv\": leading or trailing whitespace never matches: a client name is the value x-client-type carries"),
        ("client auth reference", "[bff.clients.mobile]\nprefix = \"/m\"\nauth = \"jtw\"\n[auth.jwt]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"S\"\n".into(), "d.toml:3:8: bff.clients.mobile.auth: no auth policy named \"jtw\" (did you mean \"jwt\"?)"),
        ("client empty rate limits", "[bff.clients.mobile]\nprefix = \"/m\"\nrate_limits = []\n".into(), "d.toml:3:15: bff.clients.mobile.rate_limits: must name at least one rate limit; omit the key for none"),
        ("client jwt limit on a route with api_key auth", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nauth = \"k\"\n[bff.clients.mobile]\nprefix = \"/m\"\nauth = \"j\"\nrate_limits = [\"u\"]\n[rate_limits.u]\nalgorithm = \"fixed_window\"\nkey = \"jwt:sub\"\nlimit = 1\nwindow = \"1s\"\n[auth.j]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"S\"\n[auth.k]\ntype = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"k.toml\"\n"), "d.toml:10:16: bff.clients.mobile.rate_limits[0]: rate limit \"u\" counts by jwt:sub, which needs a jwt auth policy on routes.r for client \"mobile\"'s requests (the route's auth, else the client's): without it every request would share the key \"<missing>\""),
        ("route jwt limit for a client without auth", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nclient = \"mobile\"\nrate_limits = [\"u\"]\n[bff.clients.mobile]\nprefix = \"/m\"\n[rate_limits.u]\nalgorithm = \"fixed_window\"\nkey = \"jwt:sub\"\nlimit = 1\nwindow = \"1s\"\n"), "d.toml:7:16: routes.r.rate_limits[0]: rate limit \"u\" counts by jwt:sub, which needs a jwt auth policy on routes.r for client \"mobile\"'s requests (the route's auth, else the client's): without it every request would share the key \"<missing>\""),
        ("cache per_user on a route any client reaches", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\ncache = \"c\"\n[cache.rules.c]\nttl = \"1s\"\nper_user = true\n[bff.clients.mobile]\nprefix = \"/m\"\nauth = \"j\"\n[auth.j]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"S\"\n"), "d.toml:6:9: routes.r.cache: cache rule \"c\" is per_user: the route needs `auth` (without an authenticated subject one client's entry would answer another)"),
        ("route path under a client prefix", format!("{UP}[routes.r]\npaths = [\"/x\", \"/m/v1/a\"]\nupstream = \"users\"\n[bff.clients.mobile]\nprefix = \"/m/v1\"\n"), "d.toml:4:16: routes.r.paths[1]: \"/m/v1/a\" is under bff.clients.mobile's prefix \"/m/v1\", which is removed before routing: no request can reach it; write the path without the prefix (and client = \"mobile\" to keep it that client's)"),
        ("exact route path at a client prefix", format!("{UP}[routes.r]\npaths = [\"=/m/v1\"]\nupstream = \"users\"\n[bff.clients.mobile]\nprefix = \"/m/v1\"\n"), "d.toml:4:10: routes.r.paths[0]: \"=/m/v1\" is under bff.clients.mobile's prefix \"/m/v1\", which is removed before routing: no request can reach it; write the path without the prefix (and client = \"mobile\" to keep it that client's)"),
        ("bff key typo", "[bff.clients.mobile]\nprefx = \"/m\"\n".into(), "d.toml:2:1: bff.clients.mobile.prefx: unknown key \"prefx\" (did you mean \"prefix\"?)"),
        // Aggregates' call graphs and programs (issue 11), at the key they are about.
        ("aggregate cycle", AGG.replace("path = \"/o\"", "path = \"/o/{items.id}\"").replace("/i/{each}", "/i/{order.id}"), "d.toml:5:1: aggregates.d.calls.order: dependency cycle order -> items -> order"),
        ("aggregate unknown call in a path", AGG.replace("/i/{each}", "/i/{ordr.id}"), "d.toml:10:8: aggregates.d.calls.items.path: \"ordr\" is not a call of this aggregate"),
        ("aggregate unknown call in when", AGG.replace("/i/{each}", "/i") + "when = '.ordr.open'\n", "d.toml:11:8: aggregates.d.calls.items.when: byte 0: .ordr is not a call (a condition reads results as .call.field from the root)"),
        ("aggregate bad select", AGG.replace("/i/{each}", "/i") + "select = '.items | map('\n", "d.toml:11:10: aggregates.d.calls.items.select: jq program does not compile at byte 13: expected closing parenthesis"),
        ("aggregate bad shape", AGG.replace("path = \"/d\"\n", "path = \"/d\"\nshape = '{a: }'\n"), "d.toml:5:9: aggregates.d.shape: jq program does not compile at byte 4: expected term, found \"}\""),
        ("aggregate call timeout over the aggregate's", AGG.replace("path = \"/d\"\n", "path = \"/d\"\ntimeout = \"1s\"\n").replace("/i/{each}", "/i") + "timeout = \"2s\"\n", "d.toml:12:11: aggregates.d.calls.items.timeout: 2s is longer than the aggregate's timeout (1s): the aggregate's deadline would always cut it first"),
        ("aggregate call named _meta", AGG.replace("calls.items]", "calls._meta]").replace("/i/{each}", "/i"), "d.toml:8:21: aggregates.d.calls._meta: invalid call name \"_meta\": is reserved for the composite's metadata (_meta)"),
        ("aggregate unknown upstream", AGG.replace("upstream = \"users\"\npath = \"/i", "upstream = \"user\"\npath = \"/i"), "d.toml:9:12: aggregates.d.calls.items.upstream: no upstream named \"user\" (did you mean \"users\"?)"),
        ("aggregate zero max_body", AGG.replace("path = \"/d\"\n", "path = \"/d\"\nmax_body = 0\n").replace("/i/{each}", "/i"), "d.toml:5:12: aggregates.d.max_body: must be greater than zero"),
        ("aggregate max_body not a size", AGG.replace("path = \"/d\"\n", "path = \"/d\"\nmax_body = \"1MB\"\n").replace("/i/{each}", "/i"), "d.toml:5:12: aggregates.d.max_body: invalid size \"1MB\": ambiguous unit \"MB\"; sizes are 1024-based, write MiB (e.g. \"1MiB\")"),
        // Transforms (issue 11): programs compiled at load, errors inside the program.
        ("transform parse error in a literal string", "[transforms.t]\nresponse = '{a: .b, c: }'\n".into(), "d.toml:2:24: transforms.t.response: transform \"t\": the response program does not compile: expected term, found \"}\""),
        ("transform unknown filter", "[transforms.t]\nresponse = 'map(.x) | lenght'\n".into(), "d.toml:2:23: transforms.t.response: transform \"t\": the response program does not compile: undefined filter \"lenght/0\""),
        ("transform unknown variable", "[transforms.t]\nrequest = \"{at: $then}\"\n".into(), "d.toml:2:17: transforms.t.request: transform \"t\": the request program does not compile: undefined variable \"$then\""),
        ("transform error in an escaped string", "[transforms.t]\nrequest = \"{a: \\\"x\\\", b: }\"\n".into(), "d.toml:2:11: transforms.t.request: transform \"t\": the request program does not compile: expected term, found \"}\" (at byte 12 of the program)"),
        ("transform empty program", "[transforms.t]\nrequest = \" \"\n".into(), "d.toml:2:11: transforms.t.request: empty jq program"),
        ("transform sets a framing header", "[transforms.t]\nrequest_headers = { set = { \"Content-Length\" = \"5\" } }\n".into(), "d.toml:2:29: transforms.t.request_headers.set.Content-Length: \"content-length\" is written by the gateway on every request: a transform cannot edit it"),
        ("transform removes a hop-by-hop header", "[transforms.t]\nresponse_headers = { remove = [\"Connection\"] }\n".into(), "d.toml:2:32: transforms.t.response_headers.remove[0]: \"connection\" is a hop-by-hop field (RFC 9110 §7.6.1): the gateway sets it per connection"),
        ("transform sets an identity header", "[transforms.t]\nrequest_headers = { set = { \"x-user-id\" = \"1\" } }\n[auth.j]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nkeys = \"k.pem\"\nforward = { sub = \"x-user-id\" }\n".into(), "d.toml:2:29: transforms.t.request_headers.set.x-user-id: \"x-user-id\" is an identity header an auth policy sets: only a verified credential may set it"),
        ("transform sets the type its program decides", "[transforms.t]\nresponse = \".\"\nresponse_headers = { set = { \"content-type\" = \"text/plain\" } }\n".into(), "d.toml:3:30: transforms.t.response_headers.set.content-type: \"content-type\" is decided by the response program (its output is identity-encoded application/json)"),
        ("transform sets and removes one header", "[transforms.t]\nrequest_headers = { set = { \"x-a\" = \"1\" }, remove = [\"X-A\"] }\n".into(), "d.toml:2:54: transforms.t.request_headers.remove[0]: \"X-A\" is both set and removed: set already replaces it"),
        ("websocket route with a transform", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\nwebsocket = true\ntransform = \"t\"\n[transforms.t]\nresponse = \".\"\n"), "d.toml:7:13: routes.r.transform: cannot be combined with websocket = true: after the upgrade the connection carries frames, not JSON bodies"),
        ("route transform reference", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\ntransform = \"compct\"\n[transforms.compact]\nresponse = \".\"\n"), "d.toml:6:13: routes.r.transform: no transform named \"compct\" (did you mean \"compact\"?)"),
        ("route transform with cache", format!("{UP}[routes.r]\npaths = [\"/\"]\nupstream = \"users\"\ncache = \"c\"\ntransform = \"t\"\n[cache.rules.c]\nttl = \"1s\"\n[transforms.t]\nresponse = \".\"\n"), "d.toml:7:13: routes.r.transform: transform \"t\" changes responses and the route has `cache`: cache hits skip the transform, so refused; cache the upstream route the transformed one calls, or drop one of the two"),
    ];
    let mut failures = Vec::new();
    for (name, src, expected) in &cases {
        let got = match load_str(src, Path::new("d.toml")) {
            Ok(_) => "loaded".to_string(),
            Err(e) => e.to_string(),
        };
        if got != *expected {
            failures.push(format!(
                "{name}:\n  expected: {expected}\n  got:      {got}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn errors_keep_their_structure() {
    let err = load_str("[server]\nworkers = 0\n", Path::new("config/dispatch.toml")).unwrap_err();
    match err {
        ConfigError::Invalid {
            location,
            key,
            message,
        } => {
            assert_eq!(location.file, Path::new("config/dispatch.toml"));
            assert_eq!((location.line, location.col), (2, 11));
            assert_eq!(key, "server.workers");
            assert_eq!(
                message,
                "invalid value 0: expected \"auto\" or an integer >= 1"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unresolvable_endpoint_host_is_an_error_at_its_value() {
    let err = error("[upstreams.u]\nendpoints = [\"http://no-such-host.invalid:9001\"]\n");
    assert!(
        err.starts_with(
            "d.toml:2:14: upstreams.u.endpoints[0]: cannot resolve \"no-such-host.invalid\": "
        ),
        "{err}"
    );
}

#[test]
fn compression_loads_with_defaults_and_lower_cased_types() {
    use crate::http::encoding::Coding;
    let c = load("[compression]\n")
        .compression
        .expect("section present");
    assert_eq!(c.algorithms, [Coding::Br, Coding::Gzip]);
    assert_eq!(c.min_size, 1024);
    assert!(c.types.iter().any(|t| t == "application/json"));
    let c = load("[compression]\nalgorithms = [\"gzip\"]\nmin_size = 0\ntypes = [\"Application/JSON\", \"text/*\"]\n")
        .compression
        .expect("section present");
    assert_eq!(c.algorithms, [Coding::Gzip]);
    assert_eq!(c.min_size, 0);
    assert_eq!(c.types, ["application/json", "text/*"]);
    assert!(load("[server]\nworkers = 1\n").compression.is_none());
}

#[test]
fn load_reads_the_file_and_reports_unreadable_ones() {
    let dir = std::env::temp_dir().join(format!("dispatch-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dispatch.toml");
    std::fs::write(&path, "[server]\nworkers = 2\n").unwrap();
    let cfg = super::load(&path).unwrap();
    assert_eq!(
        (cfg.server.workers, cfg.path.as_path()),
        (2, path.as_path())
    );

    let missing = dir.join("missing.toml");
    let err = super::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            missing.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn route_error_points_at_the_route() {
    let cfg = load("[upstreams.u]\nendpoints = [\"http://127.0.0.1:1\"]\n\n[routes.a]\npaths = [\"/a\"]\nupstream = \"u\"\n\n[routes.b]\npaths = [\"/b\"]\nupstream = \"u\"\n");
    let err = route_error(
        &cfg,
        1,
        "paths",
        "same precedence as route \"a\"".to_string(),
    );
    assert_eq!(
        err.to_string(),
        "d.toml:8:1: routes.b.paths: same precedence as route \"a\""
    );
}

#[test]
fn summary_lists_workers_listeners_upstreams_and_routes() {
    let cfg = load(&spec_example_supported_part());
    let text = summary(&cfg);
    for expected in [
        "listen: 127.0.0.1:8080\n",
        "admin: 127.0.0.1:9901 (token from $DISPATCH_ADMIN_TOKEN)\n",
        "limits: request line 8KiB, header block 16KiB, 100 headers, body 10MiB, timeouts header 10s body 30s keep-alive 1m, 65536 connections\n",
        "log: level info, access log off\n",
        "upstreams (4):\n  users: round_robin, connect timeout 500ms, read timeout 3s, 2 retries, pool 64 per worker (idle timeout 1m)\n",
        "    http://127.0.0.1:9002 -> 127.0.0.1:9002 (weight 3)\n",
        "  users -> users\n    paths: /api/v1/users, /api/v1/profiles\n    methods: GET, POST, PUT, DELETE\n    hosts: api.example.com, *.example.com, 127.0.0.1\n    policies: split users 90 / users_v2 10, sticky header:x-user-id, auth jwt, rate_limits per_user + per_ip, timeout 3s (upstream)\n",
        "    breaker: opens after 5 failures (connect, timeout, 5xx) in 1m, half-open after 30s, 3 probes, fallback 503\n",
        "    health check: GET /healthz every 2s (timeout 1s), unhealthy after 3, healthy after 2\n",
        "    outlier ejection: after 5 consecutive failures, for 30s (doubling, at most 5m)\n",
        "  users_canary -> users_v2\n    paths: /api/v1/users\n    methods: any\n    hosts: any\n    headers: x-canary: \"1\"\n",
        "  payments -> accounts\n    paths: /api/v1/payments/*\n    methods: any\n    hosts: any\n    policies: timeout 5s (route)\n",
        "    policies: rewrite /v2/transfers, transform transfer_v1_to_v2 (request + response), timeout 30s (upstream)\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        text.starts_with(&format!(
            "config: d.toml\nworkers: {} (pinned), driver auto, drain timeout 30s\n",
            cfg.server.workers
        )),
        "{text}"
    );
}

/// A non-loopback admin API without a token used to start open to the network.
#[test]
fn non_loopback_admin_without_a_token_is_refused() {
    assert_eq!(
        error("[admin]\nlisten = \"0.0.0.0:9901\"\n"),
        "d.toml:2:10: admin.listen: 0.0.0.0:9901 is not a loopback address: needs token_env (a non-loopback admin API must require a token)"
    );
    assert_eq!(
        error("[admin]\nlisten = \"10.1.2.3:9901\"\ntoken_env = \"DISPATCH_TEST_TOKEN_NEVER_SET_4711\"\n"),
        "d.toml:2:10: admin.listen: 10.1.2.3:9901 is not a loopback address: needs a token: $DISPATCH_TEST_TOKEN_NEVER_SET_4711 (admin.token_env) is not set or empty, and a non-loopback admin API must require one"
    );
    // Loopback needs no token; [::1] is loopback too.
    assert!(load("[admin]\nlisten = \"[::1]:9901\"\n").admin.is_some());
}

/// A client's defaults stand in for a route's missing auth and limits: a route of that client
/// may rely on them (a jwt-keyed limit, a per_user cache), and the model keeps prefixes,
/// the header (lower-cased) and the route's client.
#[test]
fn bff_clients_and_route_clients_load_with_their_defaults() {
    let src = r#"
[upstreams.users]
endpoints = ["http://127.0.0.1:9001"]

[auth.j]
type = "jwt"
algorithms = ["HS256"]
secret_env = "S"

[rate_limits.u]
algorithm = "fixed_window"
key = "jwt:sub"
limit = 5
window = "1s"

[cache.rules.c]
ttl = "1s"
per_user = true

[bff]
header = "X-Client-Type"

[bff.clients.mobile]
prefix = "/mobile/v1"
auth = "j"
rate_limits = ["u"]

[bff.clients.tv]

[routes.m]
client = "mobile"
paths = ["/a"]
upstream = "users"
cache = "c"

[routes.any]
paths = ["/b"]
upstream = "users"
"#;
    let cfg = load(src);
    let bff = cfg.bff.as_ref().expect("[bff]");
    assert_eq!(bff.header.as_deref(), Some("x-client-type"));
    let names: Vec<(&str, Option<&str>)> = bff
        .clients
        .iter()
        .map(|c| (c.name.as_str(), c.prefix.as_deref()))
        .collect();
    assert_eq!(names, [("mobile", Some("/mobile/v1")), ("tv", None)]);
    assert_eq!(
        (bff.clients[0].auth, &bff.clients[0].rate_limits[..]),
        (Some(0), &[0][..])
    );
    assert_eq!(
        (cfg.routes[0].client, cfg.routes[1].client),
        (Some(0), None)
    );
    // Per request: a route without auth takes its client's; its own list replaces the client's.
    let any = &cfg.routes[1];
    assert_eq!(any.effective_auth(Some(bff), Some(0)), Some(0));
    assert_eq!(any.effective_auth(Some(bff), Some(1)), None);
    assert_eq!(any.effective_auth(Some(bff), None), None);
    assert_eq!(any.effective_rate_limits(Some(bff), Some(0)), &[0]);
    assert_eq!(any.effective_rate_limits(Some(bff), None), &[] as &[usize]);
    let text = summary(&cfg);
    for expected in [
        "bff (2 clients, header x-client-type):\n  mobile: prefix /mobile/v1 (removed before routing), default auth j, default rate_limits u\n  tv: no prefix (header only)\n",
        "  m -> users\n    paths: /a\n    methods: any\n    hosts: any\n    client: mobile\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// An aggregate's `max_body` (the bytes of call bodies one request reads, all calls together):
/// as written; else 32 MiB, or `server.limits.max_body` when that is larger.
#[test]
fn aggregate_max_body_is_read_and_defaults_to_32_mib_or_the_server_limit() {
    let agg = |server: &str, own: &str| {
        format!(
            "{server}[upstreams.u]\nendpoints = [\"http://127.0.0.1:9001\"]\n\
             [aggregates.d]\npath = \"/d\"\n{own}[aggregates.d.calls.a]\nupstream = \"u\"\n\
             path = \"/a\"\n"
        )
    };
    let budget = |src: String| {
        let cfg = load(&src);
        (
            cfg.aggregates[0].compiled.budget,
            cfg.aggregates[0].compiled.max_body,
        )
    };
    assert_eq!(budget(agg("", "")), (32 << 20, 10 << 20));
    assert_eq!(
        budget(agg("[server.limits]\nmax_body = \"64MiB\"\n", "")),
        (64 << 20, 64 << 20)
    );
    assert_eq!(
        budget(agg("", "max_body = \"1MiB\"\n")),
        (1 << 20, 10 << 20)
    );
}

/// An https upstream's `tls_*` keys compile at load: the CA bundle and the client certificate
/// and key read (relative to the file) and paired, ALPN `http/1.1`, the name each endpoint's
/// certificate is verified for; an unusable file is an error at its key.
#[test]
fn https_upstream_compiles_its_tls_settings() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir =
        std::env::temp_dir().join(format!("dispatch-upstream-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["gateway.internal".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    for (name, text) in [
        ("ca.pem", ca.pem()),
        ("gw.crt", cert.pem()),
        ("gw.key", key.serialize_pem()),
        ("other.key", KeyPair::generate().unwrap().serialize_pem()),
        ("junk.pem", "not a certificate\n".to_string()),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let path = dir.join("d.toml");
    let src = |keys: &str| {
        format!("[upstreams.ledger]\nendpoints = [\"https://127.0.0.1:9443\", {{ url = \"https://[::1]:9444\" }}]\n{keys}\n")
    };
    let mtls = "tls_ca = \"ca.pem\"\ntls_server_name = \"ledger.internal\"\ntls_client_cert = \"gw.crt\"\ntls_client_key = \"gw.key\"";
    let cfg = load_str(&src(mtls), &path).unwrap();
    let u = &cfg.upstreams[0];
    let tls = u.tls.as_ref().expect("an https upstream has TLS settings");
    assert_eq!(tls.roots, model::TlsRoots::File(dir.join("ca.pem"), 1));
    assert_eq!(tls.client_cert, Some(dir.join("gw.crt")));
    assert!(tls.client.client_auth_cert_resolver.has_certs());
    assert_eq!(tls.client.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let name =
        |n: Option<rustls::pki_types::ServerName<'static>>| n.map(|n| n.to_str().into_owned());
    // The endpoints' own names (an IPv6 host without brackets), overridden by tls_server_name.
    assert_eq!(
        name(u.endpoints[1].tls_name.clone()).as_deref(),
        Some("::1")
    );
    assert_eq!(name(u.tls_name(0)).as_deref(), Some("ledger.internal"));
    assert_eq!(name(u.tls_name(1)).as_deref(), Some("ledger.internal"));
    // The same settings and files: the same fingerprint (pools survive a reload); another
    // server name: another one.
    let again = load_str(&src(mtls), &path).unwrap();
    assert_eq!(
        again.upstreams[0].tls.as_ref().unwrap().fingerprint,
        tls.fingerprint
    );
    let renamed = load_str(
        &src(&mtls.replace("ledger.internal", "ledger2.internal")),
        &path,
    )
    .unwrap();
    assert_ne!(
        renamed.upstreams[0].tls.as_ref().unwrap().fingerprint,
        tls.fingerprint
    );
    // Without tls_server_name, each endpoint's URL host.
    let plain = load_str(&src("tls_ca = \"ca.pem\""), &path).unwrap();
    let u = &plain.upstreams[0];
    assert_eq!(name(u.tls_name(0)).as_deref(), Some("127.0.0.1"));
    assert_eq!(name(u.tls_name(1)).as_deref(), Some("::1"));
    assert!(!u
        .tls
        .as_ref()
        .unwrap()
        .client
        .client_auth_cert_resolver
        .has_certs());

    let err = |keys: &str| load_str(&src(keys), &path).unwrap_err().to_string();
    let at = path.display();
    assert_eq!(
        err("tls_ca = \"junk.pem\""),
        format!("{at}:3:10: upstreams.ledger.tls_ca: \"junk.pem\" holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)")
    );
    assert_eq!(
        err("tls_ca = \"ca.pem\"\ntls_client_cert = \"gw.crt\"\ntls_client_key = \"other.key\""),
        format!("{at}:5:18: upstreams.ledger.tls_client_key: \"other.key\" cannot sign for the certificate in \"gw.crt\": keys may not be consistent: KeyMismatch")
    );
    assert!(err(
        "tls_ca = \"ca.pem\"\ntls_client_cert = \"gw.crt\"\ntls_client_key = \"junk.pem\""
    )
    .starts_with(&format!(
        "{at}:5:18: upstreams.ledger.tls_client_key: \"junk.pem\" holds no usable private key: "
    )),);
    std::fs::remove_dir_all(&dir).unwrap();
}
