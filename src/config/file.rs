//! The config file as written: serde structs that mirror `dispatch.example.toml` key for key.
//!
//! serde checks only what a value can be on its own: its type, its unit (durations, sizes), or
//! membership of a closed set of words (driver, log level, algorithm names). Anything with
//! structure inside a string (addresses, URLs, `balance`, rate-limit keys) and every
//! cross-reference is checked by `validate`, which has the key paths for errors.
//!
//! Every struct denies unknown keys, so a typo is an error with its position, never a silently
//! ignored setting. An `Option` field is `None` exactly when the key is absent; the default that
//! then applies is in the field's doc and in [`default`].

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use super::units::{Duration, Size};

/// Values used for absent keys. Each one is repeated in the doc of its field.
pub mod default {
    use std::time::Duration;

    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const PIN_WORKERS: bool = true;
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

    pub const MAX_REQUEST_LINE: u64 = 8 << 10;
    pub const MAX_HEADER_BYTES: u64 = 16 << 10;
    pub const MAX_HEADERS: usize = 100;
    pub const MAX_BODY: u64 = 10 << 20;
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const MAX_CONNECTIONS: usize = 65536;

    pub const ADMIN_LISTEN: &str = "127.0.0.1:9901";

    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
    pub const RETRIES: u32 = 1;
    pub const MAX_IDLE_PER_WORKER: usize = 64;
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const WEIGHT: u32 = 1;
    pub const DNS_REFRESH: Duration = Duration::from_secs(30);

    pub const BREAKER_FAILURE_THRESHOLD: u32 = 5;
    pub const BREAKER_WINDOW: Duration = Duration::from_secs(60);
    pub const BREAKER_RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
    pub const BREAKER_HALF_OPEN_PROBES: u32 = 3;

    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
    pub const HEALTHY_THRESHOLD: u32 = 2;
    pub const UNHEALTHY_THRESHOLD: u32 = 3;

    pub const OUTLIER_CONSECUTIVE_FAILURES: u32 = 5;
    pub const OUTLIER_BASE_EJECTION: Duration = Duration::from_secs(30);
    pub const OUTLIER_MAX_EJECTION: Duration = Duration::from_secs(300);
}

/// The whole file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: Server,
    /// Absent: no admin listener at all.
    pub admin: Option<Admin>,
    #[serde(default)]
    pub log: Log,
    /// Named backend services, in file order.
    #[serde(default)]
    pub upstreams: Named<Upstream>,
    /// Named routes, in file order. None at all is allowed (every request gets 404).
    #[serde(default)]
    pub routes: Named<Route>,

    /// Loaded by `config::bff`.
    pub bff: Option<Bff>,
    /// Compiled by `config::transform`.
    pub transforms: Option<Named<Transform>>,
    /// Compiled by `config::aggregate`.
    pub aggregates: Option<Named<Aggregate>>,
    pub auth: Option<Named<AuthPolicy>>,
    pub rate_limits: Option<Named<RateLimit>>,
    pub cache: Option<Cache>,
    pub compression: Option<Compression>,
    pub tracing: Option<Tracing>,
}

/// `[server]`
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Addresses every worker binds (SO_REUSEPORT). Default: `["127.0.0.1:8080"]`.
    pub listen: Option<Vec<String>>,
    /// Default: `"auto"`, one worker per core this process may run on.
    pub workers: Option<Workers>,
    /// Default: `true`.
    pub pin_workers: Option<bool>,
    /// Default: `"auto"`.
    pub driver: Option<Driver>,
    /// Default: `"30s"`. Zero is allowed: exit as soon as the listeners are closed.
    pub drain_timeout: Option<Duration>,
    #[serde(default)]
    pub limits: Limits,
    /// Not supported yet. Absent: plaintext only.
    pub tls: Option<Tls>,
}

/// `workers = "auto" | N`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Auto,
    Count(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    Auto,
    IoUring,
    Epoll,
}

/// `[server.limits]`. Defaults are nginx's and Envoy's orders of magnitude.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Default: `"8KiB"` (nginx `large_client_header_buffers`). At least 16 bytes.
    pub max_request_line: Option<Size>,
    /// Default: `"16KiB"`.
    pub max_header_bytes: Option<Size>,
    /// Default: `100` (Envoy's `max_headers_count`).
    pub max_headers: Option<usize>,
    /// Default: `"10MiB"`.
    pub max_body: Option<Size>,
    /// Default: `"10s"`.
    pub header_timeout: Option<Duration>,
    /// Default: `"30s"`.
    pub body_timeout: Option<Duration>,
    /// Default: `"60s"`.
    pub keepalive_timeout: Option<Duration>,
    /// Default: `65536`.
    pub max_connections: Option<usize>,
}

/// `[server.tls]`: TLS termination (compiled by `tls`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Required, at least one: addresses served over TLS besides the plaintext `listen`.
    pub listen: Vec<String>,
    /// Required, at least one; the first is the default (no SNI, or no name matches).
    pub certificates: Vec<Certificate>,
    /// The lowest TLS version accepted.
    pub min_version: Option<TlsVersion>,
    /// Protocols offered in ALPN, in order of preference.
    pub alpn: Option<Vec<String>>,
    /// A handshake not done in time closes the connection.
    pub handshake_timeout: Option<Duration>,
    /// mTLS: clients must present a certificate signed by this CA. Default: none asked for.
    pub client_ca: Option<String>,
}

/// One `{ cert = "PATH", key = "PATH" }` of `server.tls.certificates`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub cert: String,
    pub key: String,
}

/// `min_version = "1.2" | "1.3"`: the TLS versions rustls offers. A string, since `1.2`
/// unquoted is a TOML float (which would make `1.20` a version too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `[admin]`
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Default within `[admin]`: `"127.0.0.1:9901"` (Envoy's admin port).
    pub listen: Option<String>,
    /// Default: none, the admin API needs no token.
    pub token_env: Option<String>,
}

/// `[log]`
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// Default: `"info"`.
    pub level: Option<LogLevel>,
    /// Default: `"off"`; `"json"`: one line per request on stdout.
    pub access: Option<AccessLog>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLog {
    Off,
    Json,
}

/// `[upstreams.NAME]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Required, at least one.
    pub endpoints: Vec<Endpoint>,
    /// `"round_robin" | "least_request" | "hash:header:NAME" | "hash:ip"`. Default: `"round_robin"`.
    pub balance: Option<String>,
    /// Default: `"1s"`.
    pub connect_timeout: Option<Duration>,
    /// Default: `"30s"`.
    pub read_timeout: Option<Duration>,
    /// Extra attempts after the first. Default: `1` (Envoy's default retry policy).
    pub retries: Option<u32>,
    /// Default: `64`. Zero disables pooling: one connection per request.
    pub max_idle_per_worker: Option<usize>,
    /// Default: `"60s"`.
    pub idle_timeout: Option<Duration>,
    /// Default: no breaker.
    pub breaker: Option<Breaker>,
    /// Default: no active checks (endpoints stay in rotation unless ejected).
    pub health_check: Option<HealthCheck>,
    /// Passive outlier ejection. Default: the values of [`Outlier`]'s fields, even without
    /// the table.
    pub outlier: Option<Outlier>,
    /// How often endpoints written with a DNS name are re-resolved. Default: `"30s"`.
    pub dns_refresh: Option<Duration>,

    // TLS to the upstream, with `https://` endpoints (compiled by `upstream_tls`).
    /// A PEM bundle of roots. Default: the system roots.
    pub tls_ca: Option<String>,
    /// Default: the URL's host.
    pub tls_server_name: Option<String>,
    /// Default: no client certificate. Given together with `tls_client_key`.
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
}

/// `[upstreams.NAME.outlier]`: passive ejection of failing endpoints.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// Consecutive connect failures, timeouts or 5xx that eject an endpoint. Default: `5`;
    /// `0` turns ejection off.
    pub consecutive_failures: Option<u32>,
    /// First ejection; doubles on each repeat. Default: `"30s"`.
    pub base_ejection: Option<Duration>,
    /// Longest ejection. Default: `"5m"`.
    pub max_ejection: Option<Duration>,
}

/// An endpoint: `"http://host:port"` (or `https://`) or `{ url = "http://host:port", weight = 3 }`.
#[derive(Debug)]
pub enum Endpoint {
    Url(String),
    Weighted(WeightedEndpoint),
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedEndpoint {
    pub url: String,
    /// Default: `1`. At least 1.
    pub weight: Option<u32>,
}

/// `[routes.NAME]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Required, at least one; each starts with `/` or `=/`.
    pub paths: Vec<String>,
    /// Default: any method.
    pub methods: Option<Vec<String>>,
    /// Default: any host.
    pub hosts: Option<Vec<String>>,
    /// Default: no header predicate.
    pub headers: Option<Named<String>>,
    /// Required unless `split` is given (which then decides the upstream).
    pub upstream: Option<String>,
    /// Default: `false`.
    pub strip_prefix: Option<bool>,
    /// Default: the path is forwarded unchanged.
    pub rewrite: Option<String>,
    /// Default: the upstream's `read_timeout`.
    pub timeout: Option<Duration>,

    /// Canary / A-B split over upstreams by weight. Default: none.
    pub split: Option<Vec<Split>>,
    /// `"header:NAME" | "cookie:NAME" | "ip"`: keeps a caller on one side of `split`.
    pub sticky: Option<String>,

    /// An `[auth.*]` policy (default: none, or the BFF client's).
    pub auth: Option<String>,
    /// `[rate_limits.*]` that must all admit a request (default: none, or the client's).
    pub rate_limits: Option<Vec<String>>,
    /// A `[cache.rules.*]` rule.
    pub cache: Option<String>,
    /// A `[transforms.*]` its bodies go through.
    pub transform: Option<String>,
    /// Default: `false`. `true`: a WebSocket upgrade (RFC 6455) is tunnelled to the upstream.
    pub websocket: Option<bool>,
    /// The `[bff.clients.*]` whose requests alone it matches.
    pub client: Option<String>,
}

/// One side of `split = [{ upstream = "users", weight = 90 }, ...]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    pub upstream: String,
    pub weight: u32,
}

/// `[upstreams.NAME.breaker]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    pub failure_threshold: Option<u32>,
    pub window: Option<Duration>,
    pub recovery_timeout: Option<Duration>,
    pub half_open_probes: Option<u32>,
    pub failure_on: Option<Vec<FailureOn>>,
    pub fallback: Option<Fallback>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum FailureOn {
    #[serde(rename = "connect")]
    Connect,
    #[serde(rename = "timeout")]
    Timeout,
    #[serde(rename = "5xx")]
    Status5xx,
}

/// The response a breaker sends while open.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    pub status: u16,
    pub json: Option<toml::Value>,
}

/// `[upstreams.NAME.health_check]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

/// `[bff]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bff {
    /// Default: none (clients are told apart by prefix only).
    pub header: Option<String>,
    #[serde(default)]
    pub clients: Named<BffClient>,
}

/// `[bff.clients.NAME]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BffClient {
    /// Default: none (the client is named by `bff.header` only; one of the two is required).
    pub prefix: Option<String>,
    pub auth: Option<String>,
    pub rate_limits: Option<Vec<String>>,
}

/// `[transforms.NAME]`: jq programs over JSON bodies, and header edits.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    pub request: Option<String>,
    pub response: Option<String>,
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    pub set: Option<Named<String>>,
    pub remove: Option<Vec<String>>,
}

/// `[aggregates.NAME]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    pub path: String,
    pub methods: Option<Vec<String>>,
    pub auth: Option<String>,
    pub timeout: Option<Duration>,
    pub shape: Option<String>,
    pub calls: Named<AggregateCall>,
    /// The `[rate_limits.*]` that must all admit a request, as a route's.
    pub rate_limits: Option<Vec<String>>,
    /// The BFF client whose requests alone it matches.
    pub client: Option<String>,
    /// The most bytes of call bodies one request reads, all calls together.
    pub max_body: Option<Size>,
}

/// `[aggregates.NAME.calls.CALL]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateCall {
    pub upstream: String,
    pub path: String,
    pub required: Option<bool>,
    pub timeout: Option<Duration>,
    pub default: Option<toml::Value>,
    pub select: Option<String>,
    /// `call.field...`: one request per element of that array of an earlier result.
    pub foreach: Option<String>,
    /// Only with `foreach`; at least 1.
    pub max_items: Option<usize>,
    /// Only with `foreach`; at least 1.
    pub concurrency: Option<usize>,
    /// A jq condition over the results so far.
    pub when: Option<String>,
}

/// `[auth.NAME]`. One struct for both types, so that a key of the wrong type is reported at
/// its own position (a serde-tagged enum would buffer the table and lose the spans).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthPolicy {
    #[serde(rename = "type")]
    pub kind: AuthKind,
    // type = "jwt"
    pub algorithms: Option<Vec<JwtAlgorithm>>,
    pub keys: Option<String>,
    pub secret_env: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<Vec<String>>,
    pub leeway: Option<Duration>,
    pub required_claims: Option<Vec<String>>,
    pub strip_authorization: Option<bool>,
    // type = "api_key"
    pub header: Option<String>,
    pub query: Option<String>,
    pub keys_file: Option<String>,
    // both
    pub forward: Option<Named<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    Jwt,
    ApiKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JwtAlgorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Es256,
    Es384,
    #[serde(rename = "EdDSA")]
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

/// `[rate_limits.NAME]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub algorithm: RateAlgorithm,
    pub key: String,
    // Window algorithms.
    pub limit: Option<u64>,
    pub window: Option<Duration>,
    pub tier: Option<String>,
    pub tiers: Option<Named<Tier>>,
    // Bucket algorithms.
    pub rate: Option<u32>,
    pub burst: Option<u32>,
    // Every algorithm (an addition to the reference).
    pub max_keys: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateAlgorithm {
    FixedWindow,
    SlidingWindowLog,
    SlidingWindowCounter,
    TokenBucket,
    LeakyBucket,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub limit: u64,
    pub window: Duration,
}

/// `[cache]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    pub max_bytes_per_worker: Option<Size>,
    pub max_object: Option<Size>,
    #[serde(default)]
    pub rules: Named<CacheRule>,
}

/// `[cache.rules.NAME]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    pub ttl: Option<Duration>,
    pub vary: Option<Vec<String>>,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    pub invalidate_on: Option<Vec<String>>,
    pub per_user: Option<bool>,
}

/// `[compression]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    pub algorithms: Option<Vec<Encoding>>,
    pub min_size: Option<Size>,
    pub types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Br,
    Gzip,
}

/// `[tracing]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    pub propagate: Option<bool>,
    pub otlp_endpoint: Option<String>,
}

/// A table of named entries (`[routes.NAME]`, `headers = { NAME = ... }`) in file order.
#[derive(Debug)]
pub struct Named<T>(pub Vec<(String, T)>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<T> Named<T> {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| name.as_str())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NamedVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for NamedVisitor<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Named(entries))
            }
        }
        deserializer.deserialize_map(NamedVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WorkersVisitor;
        impl Visitor<'_> for WorkersVisitor {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\" or an integer >= 1")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Workers, E> {
                match v {
                    "auto" => Ok(Workers::Auto),
                    _ => Err(E::custom(format!(
                        "invalid value {v:?}: expected \"auto\" or an integer >= 1"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Workers, E> {
                match usize::try_from(v) {
                    Ok(n) if n >= 1 => Ok(Workers::Count(n)),
                    _ => Err(E::custom(format!(
                        "invalid value {v}: expected \"auto\" or an integer >= 1"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Workers, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        deserializer.deserialize_any(WorkersVisitor)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EndpointVisitor;
        impl<'de> Visitor<'de> for EndpointVisitor {
            type Value = Endpoint;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a URL string or a table { url, weight }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Endpoint, E> {
                Ok(Endpoint::Url(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Endpoint, A::Error> {
                // Through the same MapAccess, so errors inside keep their spans.
                WeightedEndpoint::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Endpoint::Weighted)
            }
        }
        deserializer.deserialize_any(EndpointVisitor)
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const VERSIONS: &[&str] = &["1.2", "1.3"];
        struct VersionVisitor;
        impl Visitor<'_> for VersionVisitor {
            type Value = TlsVersion;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"1.2\" or \"1.3\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TlsVersion, E> {
                match v {
                    "1.2" => Ok(TlsVersion::Tls12),
                    "1.3" => Ok(TlsVersion::Tls13),
                    _ => Err(E::unknown_variant(v, VERSIONS)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TlsVersion, E> {
                Err(E::custom(format!(
                    "invalid type: number {v}, expected the string \"1.2\" or \"1.3\" (in quotes)"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TlsVersion, E> {
                self.visit_f64(v as f64)
            }
        }
        deserializer.deserialize_any(VersionVisitor)
    }
}
