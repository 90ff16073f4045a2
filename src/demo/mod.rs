//! `dispatch demo`: the shipped demo config, its sample upstreams, this run's credentials, and
//! the curl tour.
//!
//! Owns [`Demo`] (everything the demo runs beside the gateway: [`Demo::prepare`] starts the
//! [`SampleUpstreams`] (see [`upstreams`]) where the config's upstreams point, makes this run's
//! credentials and writes their key files ([`credentials`]), loads the config and checks that
//! the printed token and API key pass its policies), [`DemoPorts`] (those addresses) and
//! [`curl_lines`] (the commands printed for the user to try). `main.rs` wires it: prepare from
//! `--config` (default [`CONFIG_PATH`]), run the gateway, print [`Demo::tour`].
//!
//! The one thing to know: the config is the one source of the addresses. The sample services
//! listen on the ports its upstreams name ([`DemoPorts::from_config`]), so a copy of the config
//! on other ports runs as it is (the tests do this); [`DemoPorts::default`] is what the shipped
//! `config/demo.toml` says, and a unit test below keeps the two in step.
//!
//! | what               | address          |
//! | ------------------ | ---------------- |
//! | gateway            | 127.0.0.1:8080   |
//! | admin API          | 127.0.0.1:9901   |
//! | users-1, users-2   | 127.0.0.1:9101, 9102 (upstream `users`, round robin) |
//! | users-v2 (canary)  | 127.0.0.1:9103   |
//! | accounts-1         | 127.0.0.1:9104   |
//! | transactions-1     | 127.0.0.1:9105   |
//! | offline            | 127.0.0.1:9109 (nothing listens: shows a 502) |

pub mod credentials;
pub mod upstreams;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::config::model::Config;
use crate::config::ConfigError;
use crate::policy::compiled::Verifier;

pub use credentials::{Credentials, KeyFiles};
pub use upstreams::{SampleServer, SampleUpstreams, Service};

/// The demo config, relative to the repository root (the working directory of `cargo run`).
pub const CONFIG_PATH: &str = "config/demo.toml";

/// The demo config's JWT policy: verifies the token the tour prints.
pub const JWT_POLICY: &str = "demo_jwt";
/// The demo config's API-key policy: knows the API key the tour prints.
pub const API_KEY_POLICY: &str = "demo_api_key";

/// Why the demo cannot start. Each is reported on stderr and `dispatch demo` exits 1.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The config does not load (file:line:col: key: message).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The config loads but is not one the demo can run (what it lacks is said).
    #[error("demo: {0}")]
    Unfit(String),
    /// Making this run's keys or token failed.
    #[error("demo: {0}")]
    Keys(String),
    /// A key file could not be written beside the config.
    #[error("demo: cannot write {}: {source}", path.display())]
    Files {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A sample upstream could not listen (its port is taken, most likely).
    #[error("demo: cannot start sample upstreams: {0}")]
    Upstreams(std::io::Error),
}

/// Loopback ports of the demo. [`Default`] gives the ones `config/demo.toml` uses; a port of 0
/// (tests) lets the OS pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoPorts {
    /// `server.listen` of the demo config.
    pub gateway: u16,
    /// `admin.listen` of the demo config.
    pub admin: u16,
    /// The two endpoints of upstream `users`: users-1 and users-2.
    pub users: [u16; 2],
    /// Upstream `users_v2`, reached with `x-canary: 1`.
    pub users_v2: u16,
    /// Upstream `accounts`: balances and orders.
    pub accounts: u16,
    /// Upstream `transactions`: transactions, shipments, and the slow endpoint.
    pub transactions: u16,
    /// Upstream `offline`: configured, never started.
    pub offline: u16,
}

impl Default for DemoPorts {
    fn default() -> Self {
        DemoPorts {
            gateway: 8080,
            admin: 9901,
            users: [9101, 9102],
            users_v2: 9103,
            accounts: 9104,
            transactions: 9105,
            offline: 9109,
        }
    }
}

impl DemoPorts {
    /// The ports `cfg` gives the demo: its first listener, its admin API, and the endpoints of
    /// upstreams `users` (two), `users_v2`, `accounts`, `transactions` and `offline` (one each),
    /// which must be `127.0.0.1` literals: the sample services listen there.
    pub fn from_config(cfg: &Config) -> Result<DemoPorts, DemoError> {
        let gateway = cfg
            .server
            .listen
            .first()
            .ok_or_else(|| DemoError::Unfit("the config has no server.listen address".into()))?
            .port();
        let admin = cfg
            .admin
            .as_ref()
            .ok_or_else(|| {
                DemoError::Unfit("the tour uses the admin API: the config needs [admin]".into())
            })?
            .listen
            .port();
        let ports = |name: &str, count: usize| -> Result<Vec<u16>, DemoError> {
            let unfit = |why: String| {
                DemoError::Unfit(format!(
                    "upstream {name:?} {why}: the demo runs {count} sample endpoint(s) for it \
                     on 127.0.0.1"
                ))
            };
            let upstream = cfg
                .upstreams
                .iter()
                .find(|u| u.name == name)
                .ok_or_else(|| unfit("is not in the config".into()))?;
            if upstream.endpoints.len() != count {
                return Err(unfit(format!(
                    "has {} endpoint(s)",
                    upstream.endpoints.len()
                )));
            }
            upstream
                .endpoints
                .iter()
                .map(|e| match e.addr.ip() {
                    IpAddr::V4(ip) if ip == Ipv4Addr::LOCALHOST && e.dns.is_none() => {
                        Ok(e.addr.port())
                    }
                    _ => Err(unfit(format!("has endpoint {}", e.url))),
                })
                .collect()
        };
        let users = ports("users", 2)?;
        Ok(DemoPorts {
            gateway,
            admin,
            users: [users[0], users[1]],
            users_v2: ports("users_v2", 1)?[0],
            accounts: ports("accounts", 1)?[0],
            transactions: ports("transactions", 1)?[0],
            offline: ports("offline", 1)?[0],
        })
    }
}

/// Everything `dispatch demo` runs beside the gateway. Dropping it stops the sample services
/// and removes the key files.
pub struct Demo {
    config: Config,
    ports: DemoPorts,
    credentials: Credentials,
    upstreams: SampleUpstreams,
    files: KeyFiles,
}

impl Demo {
    /// Starts the sample services on the config's upstream ports, makes this run's
    /// credentials (the token signed at `now_unix`) and writes their key files beside
    /// `config_path`, loads the config (which reads them), and checks that its [`JWT_POLICY`]
    /// accepts the token and its [`API_KEY_POLICY`] the API key.
    ///
    /// Writing beside the config, not in a temp dir, keeps `config.path` the file the user
    /// runs: a reload (SIGHUP or the admin API) re-reads that file, and finds the key files
    /// where its relative `keys` and `keys_file` paths say.
    pub fn prepare(config_path: &Path, now_unix: u64) -> Result<Demo, DemoError> {
        // The addresses first, from the file alone (its policies need the key files; loading
        // it reads the TLS certificate, written now when none is there): the sample services
        // listen before any other key file is written, so a second demo on the same config
        // stops here and leaves the running one's files alone.
        let credentials = Credentials::generate(now_unix)?;
        // Removed on any error below, when `files` is dropped.
        let mut files = KeyFiles::new(config_path)?;
        files.write_tls_if_missing(&credentials)?;
        let ports = DemoPorts::from_config(&crate::config::load(config_path)?)?;
        let upstreams = SampleUpstreams::start(&ports).map_err(DemoError::Upstreams)?;
        files.write_all(&credentials)?;
        let config = crate::router::load_config(config_path)?;
        check_credentials(&config, &credentials, now_unix)?;
        // The file may have changed between the two reads.
        if DemoPorts::from_config(&config)? != ports {
            return Err(DemoError::Unfit(format!(
                "{} changed while the demo started",
                config_path.display()
            )));
        }
        Ok(Demo {
            config,
            ports,
            credentials,
            upstreams,
            files,
        })
    }

    /// The config to run the gateway with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The sample services, this run's credentials and the curl tour, for the gateway
    /// listening on `gateway` with its admin API on `admin`.
    pub fn tour(&self, gateway: SocketAddr, admin: SocketAddr) -> String {
        let c = &self.credentials;
        format!(
            "Sample upstreams:\n{}\n\
             This run's credentials (new at every start; the private key never left the process):\n  \
             JWT (ES256, sub {sub}, plan {plan}, roles {roles}; expires {exp}):\n    {token}\n  \
             API key (consumer {consumer}, plan {cplan}):\n    {key}\n\n{tour}",
            self.upstreams.describe(),
            sub = credentials::SUBJECT,
            plan = credentials::PLAN,
            roles = credentials::ROLES.join(","),
            exp = crate::clock::rfc3339(c.expires_at * 1000),
            token = c.token,
            consumer = credentials::CONSUMER,
            cplan = credentials::CONSUMER_PLAN,
            key = c.api_key,
            tour = curl_lines(gateway, admin, &self.ports, c),
        ) + &self.tls_tour()
    }

    /// The TLS listener's curl line: the certificate made at this start, trusted with
    /// `--cacert` (empty without `[server.tls]`).
    fn tls_tour(&self) -> String {
        let Some(tls) = &self.config.server.tls else {
            return String::new();
        };
        let Some(addr) = tls.listen.first() else {
            return String::new();
        };
        format!(
            "\n# TLS on {addr}: a self-signed certificate for localhost made at this start, trusted with --cacert\ncurl -s --cacert {} https://localhost:{}/users/u_1\n",
            self.files.tls_cert().display(),
            addr.port(),
        )
    }
}

/// The printed credentials must work against the config as loaded: a demo whose tour answers
/// 401 would be silently wrong.
fn check_credentials(cfg: &Config, c: &Credentials, now_unix: u64) -> Result<(), DemoError> {
    let policies = crate::policy::compile(cfg, None)?;
    let policy = |name: &str| {
        cfg.auth
            .iter()
            .position(|p| p.name == name)
            .and_then(|i| policies.auth.get(i))
            .ok_or_else(|| DemoError::Unfit(format!("the config has no [auth.{name}]")))
    };
    let jwt_path = Path::new(credentials::KEYS_DIR).join(credentials::JWT_KEY_FILE);
    match policy(JWT_POLICY)? {
        Verifier::Jwt(v) => v
            .verify(c.token.as_bytes(), now_unix)
            .map(drop)
            .map_err(|e| {
                DemoError::Unfit(format!(
                "auth.{JWT_POLICY} refuses the demo's token ({e}): it must be type = \"jwt\" with \
                 keys = {jwt_path:?}, ES256 among its algorithms, issuer {:?} and audience {:?}",
                credentials::ISSUER,
                credentials::AUDIENCE
            ))
            })?,
        Verifier::ApiKey(_) => {
            return Err(DemoError::Unfit(format!(
                "auth.{JWT_POLICY} must be type = \"jwt\""
            )))
        }
    }
    let keys_path = Path::new(credentials::KEYS_DIR).join(credentials::API_KEYS_FILE);
    match policy(API_KEY_POLICY)? {
        Verifier::ApiKey(k) => k.lookup(c.api_key.as_bytes()).map(drop).map_err(|e| {
            DemoError::Unfit(format!(
                "auth.{API_KEY_POLICY} refuses the demo's API key ({e}): it must be \
                 type = \"api_key\" with keys_file = {keys_path:?}"
            ))
        }),
        Verifier::Jwt(_) => Err(DemoError::Unfit(format!(
            "auth.{API_KEY_POLICY} must be type = \"api_key\""
        ))),
    }
}

/// The curl tour printed by `dispatch demo`: one command per behaviour, each under a comment
/// that says what to look for. `gateway` and `admin` are the listen addresses; an unspecified
/// address (0.0.0.0, ::) is shown as loopback so the commands work as printed. `ports` places
/// the canary service (registered as an endpoint in the discovery step); `credentials` are
/// this run's token and API key, spelled out in the commands that use them.
pub fn curl_lines(
    gateway: SocketAddr,
    admin: SocketAddr,
    ports: &DemoPorts,
    credentials: &Credentials,
) -> String {
    let gw = format!("http://{}", reachable(gateway));
    let adm = format!("http://{}", reachable(admin));
    let token = &credentials.token;
    let key = &credentials.api_key;
    let canary = format!("http://127.0.0.1:{}", ports.users_v2);
    let steps: [(&str, String); 36] = [
        (
            "Routing by path: /users goes to upstream `users` (users-1 or users-2)",
            format!("curl -i {gw}/users/u_1"),
        ),
        (
            "Load balancing: round robin over users-1 and users-2; watch \"upstream\"",
            format!("for i in 1 2 3 4; do curl -s {gw}/users/u_1; echo; done"),
        ),
        ("A list, same route", format!("curl -s {gw}/users")),
        (
            "Method not allowed: the users route takes GET and HEAD only -> 405 with Allow",
            format!("curl -i -X DELETE {gw}/users/u_1"),
        ),
        (
            "Header routing: x-canary: 1 goes to users-v2 (a different body shape)",
            format!("curl -s -H 'x-canary: 1' {gw}/users/u_1"),
        ),
        (
            "Host routing + strip_prefix: /bank/* only for Host bank.localhost; /bank is removed upstream",
            format!("curl -i -H 'Host: bank.localhost' {gw}/bank/accounts/u_1/balance"),
        ),
        (
            "Same path, another Host: no route matches -> 404 JSON error",
            format!("curl -i -H 'Host: shop.localhost' {gw}/bank/accounts/u_1/balance"),
        ),
        (
            "Named segment: /orders/:id (accounts service)",
            format!("curl -s {gw}/orders/o_1"),
        ),
        (
            "Rewrite: /api/v1/transactions is sent upstream as /transactions (see X-Seen-Path)",
            format!("curl -i '{gw}/api/v1/transactions?userId=u_1&limit=2'"),
        ),
        (
            "What the upstream received: X-Forwarded-For, X-Request-Id, Via; hop-by-hop headers gone",
            format!("curl -s -H 'Connection: keep-alive, x-secret' -H 'x-secret: 1' -d '{{\"hello\":\"world\"}}' {gw}/echo"),
        ),
        ("No route -> 404 with the standard JSON error body", format!("curl -i {gw}/nope")),
        (
            "JWT auth: /api/v1/me wants a Bearer token; without one -> 401 with WWW-Authenticate",
            format!("curl -i {gw}/api/v1/me"),
        ),
        (
            "... with this run's token: the upstream is told who the caller is (x-user-id, x-user-plan, x-user-roles from its claims; Authorization is not passed on)",
            format!("curl -s -H 'Authorization: Bearer {token}' {gw}/api/v1/me"),
        ),
        (
            "Identity headers from the client are dropped on every route: this x-user-id never reaches the upstream",
            format!("curl -s -H 'x-user-id: u_2' -H 'Authorization: Bearer {token}' {gw}/api/v1/me"),
        ),
        (
            "A token that is not this run's -> 401 Invalid token (error_description in WWW-Authenticate)",
            format!("curl -i -H 'Authorization: Bearer {}' {gw}/api/v1/me", forged(token)),
        ),
        (
            "API key: /partner/v1/me wants x-api-key; the upstream is told the key's consumer and plan (the keys file holds only its SHA-256)",
            format!("curl -s -H 'x-api-key: {key}' {gw}/partner/v1/me"),
        ),
        (
            "... an unknown key -> 401",
            format!("curl -i -H 'x-api-key: demo_not-a-key' {gw}/partner/v1/me"),
        ),
        (
            "Rate limit: /api/v1/products admits 5 requests per 10s per client IP; RateLimit-Limit/Remaining/Reset say where you stand",
            format!("curl -i {gw}/api/v1/products"),
        ),
        (
            "... past the limit: 429 with Retry-After (seconds until the oldest of the 5 is 10s old) and RateLimit-Remaining: 0",
            format!("for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}} ' {gw}/api/v1/products; done; echo; curl -i {gw}/api/v1/products"),
        ),
        (
            "Response cache: /api/v1/catalog is stored for 30s (each worker has its own shard, so the first request on each is a MISS); then HIT with Age",
            format!("for i in 1 2 3; do curl -si {gw}/api/v1/catalog | grep -iE '^(x-cache|age):'; done"),
        ),
        (
            "... purge it on every worker through the admin API: the next request is a MISS again",
            format!("curl -s -X DELETE '{adm}/cache?rule=demo_catalog'; echo; curl -si {gw}/api/v1/catalog | grep -i '^x-cache:'"),
        ),
        (
            "Route timeout of 1s against a 3s upstream -> 504",
            format!("curl -i '{gw}/slow?ms=3000'"),
        ),
        (
            "Upstream down (nothing listens on its port) -> 502 after the retry",
            format!("curl -i {gw}/offline"),
        ),
        (
            "Circuit breaker: 3 failures open it; then 503 with Retry-After, no upstream attempt",
            format!("for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{{http_code}} ' {gw}/offline; done; echo; curl -i {gw}/offline"),
        ),
        (
            "Admin API: health of the gateway (\"degraded\" while the breaker is open)",
            format!("curl -s {adm}/health"),
        ),
        (
            "Canary split 80/20, sticky on x-session-id: a session always lands on the same side",
            format!("for s in 1 2 3 4 5 6 7 8; do curl -s -H \"x-session-id: s$s\" {gw}/split/users/u_1; echo; done"),
        ),
        (
            "Aggregate: one request, three upstream calls in parallel (profile required; balance and transactions fall back to defaults); _meta says what each call did",
            format!("curl -s {gw}/api/v1/dashboard/u_1"),
        ),
        (
            "Aggregate with a call graph: order first, then user, products and reviews (one call per product, in order), then loyalty (only for a business plan)",
            format!("curl -s {gw}/api/v1/orders/o_1/details"),
        ),
        (
            "... the order the calls start in, and the worst case under the deadline",
            format!("dispatch explain --config {CONFIG_PATH} order_details"),
        ),
        (
            "BFF client by prefix: /mobile/v1 is the mobile client, which needs a token -> 401 without one",
            format!("curl -i {gw}/mobile/v1/transactions"),
        ),
        (
            "... with this run's token: the mobile route's response transform compacts each transaction (and drops X-Internal-Trace)",
            format!("curl -si -H 'Authorization: Bearer {token}' {gw}/mobile/v1/transactions"),
        ),
        (
            "BFF client by header: x-client-type: web reaches the web route, the full upstream answer",
            format!("curl -s -H 'x-client-type: web' {gw}/transactions"),
        ),
        (
            "Request and response transforms: a v1 transfer is sent to the v2 API (renamed, stamped with initiatedAt), its answer renamed back to v1",
            format!("curl -s -H 'Content-Type: application/json' -d '{{\"from_account\":\"a_1\",\"to_account\":\"a_2\",\"amount\":25}}' {gw}/api/v1/transfers"),
        ),
        (
            "... a body that is not JSON -> 400 from the gateway; the upstream never sees it",
            format!("curl -i -d 'amount=25' {gw}/api/v1/transfers"),
        ),
        (
            "Service discovery: register users-v2 as a third endpoint of `users`, then list it",
            format!("curl -s -X PUT -d '{{\"url\": \"{canary}\", \"weight\": 1}}' {adm}/upstreams/users/endpoints; curl -s {adm}/upstreams"),
        ),
        (
            "... and deregister it again",
            format!("curl -s -X DELETE '{adm}/upstreams/users/endpoints?url={canary}'"),
        ),
    ];

    let mut out = format!("Dispatch demo: gateway on {gw}, admin API on {adm}\nTry these:\n");
    for (what, command) in steps {
        let _ = write!(out, "\n  # {what}\n  {command}\n");
    }
    out
}

/// `token` with another signature of the same length: well-formed, not this run's key's.
fn forged(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').unwrap_or((token, ""));
    // 'A' everywhere decodes to zero bytes (a canonical encoding of a 64-byte r || s of 0),
    // which no ES256 signature verifies.
    format!("{signed}.{}", "A".repeat(signature.len()))
}

/// An address a client on this machine can connect to: unspecified becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(CONFIG_PATH)
    }

    /// `text` (the shipped config, or a variant) loaded from a scratch directory with this
    /// run's key files beside it: loading reads the TLS certificate and the auth keys, which
    /// exist only while a demo runs.
    fn load_beside_keys(
        text: &str,
        name: &str,
    ) -> Result<crate::config::model::Config, crate::config::ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "dispatch-demo-config-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("demo.toml");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let credentials = Credentials::generate(now).unwrap();
        let _files = KeyFiles::write(&path, &credentials).unwrap();
        let loaded = crate::config::load_str(text, &path);
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    /// `config/demo.toml` gives the addresses of [`DemoPorts::default`] (the README's table).
    #[test]
    fn the_shipped_config_gives_the_demo_ports() {
        let text = std::fs::read_to_string(shipped()).unwrap();
        let cfg = load_beside_keys(&text, "ports").unwrap();
        assert_eq!(DemoPorts::from_config(&cfg).unwrap(), DemoPorts::default());
    }

    /// The split's sticky header was x-user-id, which the gateway drops from every request once
    /// an auth policy forwards it: the canary split went random, silently. No header the demo
    /// config routes or sticks on may be an identity header.
    #[test]
    fn the_demo_never_routes_on_a_header_the_gateway_drops() {
        let text = std::fs::read_to_string(shipped()).unwrap();
        let cfg = load_beside_keys(&text, "identity").unwrap();
        let identity: Vec<&str> = cfg
            .auth
            .iter()
            .flat_map(|p| p.forward.iter().map(|(_, header)| header.as_str()))
            .collect();
        assert!(identity.contains(&"x-user-id"), "{identity:?}");
        for route in &cfg.routes {
            let sticky = match &route.sticky {
                Some(crate::config::model::Sticky::Header(name)) => Some(name.as_str()),
                _ => None,
            };
            for name in route.headers.iter().map(|(n, _)| n.as_str()).chain(sticky) {
                assert!(
                    !identity.contains(&name),
                    "routes.{} reads {name}, an identity header",
                    route.name
                );
            }
        }
    }

    /// A config whose upstreams are not where sample services can listen is refused, naming
    /// the upstream.
    #[test]
    fn ports_from_a_config_that_does_not_fit() {
        let text = std::fs::read_to_string(shipped()).unwrap();
        for (from, to, says) in [
            (
                "endpoints = [\"http://127.0.0.1:9104\"]",
                "endpoints = [\"http://10.0.0.1:9104\"]",
                "upstream \"accounts\" has endpoint http://10.0.0.1:9104",
            ),
            (
                "endpoints = [\"http://127.0.0.1:9101\", \"http://127.0.0.1:9102\"]",
                "endpoints = [\"http://127.0.0.1:9101\"]",
                "upstream \"users\" has 1 endpoint(s)",
            ),
            (
                "[admin]\nlisten = \"127.0.0.1:9901\"",
                "",
                "the config needs [admin]",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let cfg = load_beside_keys(&text.replace(from, to), "fit").unwrap();
            let e = DemoPorts::from_config(&cfg).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn curl_lines_use_reachable_addresses_and_this_runs_credentials() {
        let creds = Credentials::generate(NOW).unwrap();
        let text = curl_lines(
            "0.0.0.0:8080".parse().unwrap(),
            "127.0.0.1:9901".parse().unwrap(),
            &DemoPorts::default(),
            &creds,
        );
        assert!(text.contains("curl -i http://127.0.0.1:8080/users/u_1"));
        assert!(text.contains("curl -s http://127.0.0.1:9901/health"));
        assert!(text.contains("x-canary: 1"));
        assert!(text.contains(&format!(
            "curl -s -H 'Authorization: Bearer {}' http://127.0.0.1:8080/api/v1/me",
            creds.token
        )));
        assert!(text.contains(&format!(
            "curl -s -H 'x-api-key: {}' http://127.0.0.1:8080/partner/v1/me",
            creds.api_key
        )));
        assert!(text.contains(&format!(
            "curl -si -H 'Authorization: Bearer {}' http://127.0.0.1:8080/mobile/v1/transactions",
            creds.token
        )));
        assert!(text.contains("dispatch explain --config config/demo.toml order_details"));
        assert!(text.contains("\"url\": \"http://127.0.0.1:9103\""));
        assert!(!text.contains("0.0.0.0"));
    }

    /// The forged token of the tour is well-formed and differs from the real one only in its
    /// signature.
    #[test]
    fn the_forged_token_keeps_the_real_ones_shape() {
        let token = Credentials::generate(NOW).unwrap().token;
        let fake = forged(&token);
        assert_eq!(fake.len(), token.len());
        assert_ne!(fake, token);
        assert_eq!(
            fake.rsplit_once('.').unwrap().0,
            token.rsplit_once('.').unwrap().0
        );
    }
}
