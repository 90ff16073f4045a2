//! The validated, compiled configuration: what the rest of the gateway reads.
//!
//! Everything here is immutable once built by [`crate::config::load`]; a reload builds a new
//! [`Config`] off the request path and swaps it in whole. Indices (`UpstreamId`, `RouteId`)
//! are positions in the `Vec`s below and are only meaningful within one `Config`.
//!
//! Invariant: a `Config` that exists has passed every check of `config::validate`: every
//! reference resolves, every size and duration is in range, the route table is unambiguous.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The most endpoints one upstream may have: the file, admin registrations and DNS answers are
/// all held to it (config validation, `Discovery`); the balancer's endpoint sets are this wide.
pub const MAX_ENDPOINTS: usize = 1024;
/// Largest `failure_threshold` a breaker honours (a window bucket counts to `u16::MAX`).
pub const MAX_BREAKER_THRESHOLD: u32 = u16::MAX as u32;
/// Largest `half_open_probes` a breaker honours (21-bit fields in its probe word).
pub const MAX_BREAKER_PROBES: u32 = (1 << 20) - 1;

/// Index into [`Config::upstreams`].
pub type UpstreamId = usize;
/// Index into [`Config::routes`].
pub type RouteId = usize;
/// Index into [`Config::auth`].
pub type AuthId = usize;
/// Index into [`Config::rate_limits`].
pub type RateLimitId = usize;
/// Index into [`Cache::rules`].
pub type CacheRuleId = usize;
/// Index into [`Bff::clients`].
pub type ClientId = usize;
/// Index into [`Config::aggregates`].
pub type AggregateId = usize;
/// Index into [`Config::transforms`].
pub type TransformId = usize;

/// A position in the config file, for error messages and `dispatch check`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config was read from (reload re-reads it).
    pub path: PathBuf,
    pub server: Server,
    /// `None` without an `[admin]` section: no admin listener.
    pub admin: Option<Admin>,
    pub log: Log,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    /// `[auth.*]`, in file order.
    pub auth: Vec<AuthPolicy>,
    /// `[rate_limits.*]`, in file order.
    pub rate_limits: Vec<RateLimit>,
    /// `[cache]` (None: no response cache).
    pub cache: Option<Cache>,
    /// `[compression]`; None: responses are sent as they are.
    pub compression: Option<std::sync::Arc<Compression>>,
    pub tracing: Tracing,
    /// `[bff]` (None: no client profiles; no route has `client`).
    pub bff: Option<Bff>,
    /// `[aggregates.*]`, in file order. Each is also a route (see [`Route::aggregate`]).
    pub aggregates: Vec<Aggregate>,
    /// `[transforms.*]`, in file order.
    pub transforms: Vec<Transform>,
}

/// `[bff]`: backend-for-frontend client profiles (`compose::bff` reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bff {
    /// `header` (lower-case): its value names the client of a request no prefix claimed.
    pub header: Option<String>,
    /// `[bff.clients.*]`, in file order.
    pub clients: Vec<BffClient>,
}

/// `[bff.clients.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BffClient {
    /// The config key: what `bff.header` must carry, exactly, and what routes name.
    pub name: String,
    /// A normalised path (no trailing `/`, not `/` alone) claiming the requests under it on
    /// segment boundaries; removed before routing. None: named by `bff.header` only.
    pub prefix: Option<String>,
    /// The auth of the routes this client reaches that have none of their own.
    pub auth: Option<AuthId>,
    /// The limits of the routes this client reaches that list none (a route's own list
    /// replaces these; the two are not merged).
    pub rate_limits: Vec<RateLimitId>,
    pub location: Location,
}

impl Bff {
    /// The client by name (routes and the header name clients).
    pub fn client(&self, name: &str) -> Option<ClientId> {
        self.clients.iter().position(|c| c.name == name)
    }
}

/// `[aggregates.NAME]`, compiled: its call graph and jq programs, ready to run.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub name: String,
    /// Its entry in [`Config::routes`] (path, methods, auth, rate limits).
    pub route: RouteId,
    pub compiled: std::sync::Arc<crate::compose::aggregate::Compiled>,
    pub location: Location,
}

/// `[cache]`, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// The bytes (heads and bodies) each worker's shard may hold.
    pub max_bytes_per_worker: u64,
    /// Larger responses stream through without being stored.
    pub max_object: u64,
    /// `[cache.rules.*]`, in file order.
    pub rules: Vec<CacheRule>,
}

/// `[compression]`, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// The codings offered, in the gateway's order of preference (it breaks ties between
    /// codings a client weighs equally).
    pub algorithms: Vec<crate::http::encoding::Coding>,
    /// Bodies known to be shorter are sent as they are.
    pub min_size: u64,
    /// Lower-case `type/subtype` or `type/*`.
    pub types: Vec<String>,
}

/// `[cache.rules.NAME]`, times in whole seconds (0: not written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    pub name: String,
    /// The freshness lifetime when the upstream gives none.
    pub ttl: u64,
    /// Lower-case request header names that are part of the key, de-duplicated.
    pub vary: Vec<String>,
    pub stale_while_revalidate: u64,
    pub stale_if_error: u64,
    /// Requests whose success purges the rule's entries.
    pub invalidate_on: Vec<Invalidation>,
    /// The authenticated subject is part of the key (the route has `auth`).
    pub per_user: bool,
    pub location: Location,
}

/// One `invalidate_on` entry: `METHOD /path/pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// Upper-case.
    pub method: String,
    /// The path's segments after the leading `/`.
    pub segments: Vec<PathSeg>,
    /// As written (for `dispatch check` and the admin API).
    pub text: String,
}

/// A segment of an `invalidate_on` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Literal(String),
    /// `:name`: any one non-empty segment.
    Param,
    /// A final `*`: any rest of the path, none included.
    Rest,
}

/// `[tracing]`: W3C trace context.
#[derive(Debug, Clone)]
pub struct Tracing {
    /// Continue an incoming `traceparent` (new span id) or start one, and send it upstream.
    /// Default true; false passes a client's `traceparent` through untouched.
    pub propagate: bool,
    /// OTLP/HTTP JSON collector URL for the gateway's spans (None: no export).
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    /// Resolved worker count (>= 1); "auto" is resolved at load to the available cores.
    pub workers: usize,
    pub pin_workers: bool,
    pub driver: Driver,
    pub drain_timeout: Duration,
    pub limits: Limits,
    /// `[server.tls]` (None: plaintext only).
    pub tls: Option<ServerTls>,
}

/// `[server.tls]`, compiled: certificates and keys have been read and matched.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Addresses served over TLS (none of them in `Server::listen`).
    pub listen: Vec<SocketAddr>,
    /// What was read from each `certificates` entry, in file order (the first is the default).
    pub certificates: Vec<CertificateInfo>,
    /// `"1.2"` or `"1.3"`.
    pub min_version: &'static str,
    pub alpn: Vec<String>,
    pub handshake_timeout: Duration,
    /// `client_ca`, resolved against the config's directory (None: no client certificate asked).
    pub client_ca: Option<std::path::PathBuf>,
    /// The rustls config every TLS connection of this generation is accepted with: the SNI
    /// resolver, versions, ALPN, the client verifier, the process's session-ticket keys.
    pub rustls: std::sync::Arc<rustls::ServerConfig>,
}

/// A configured certificate's leaf, as `dispatch check` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The `cert` file, resolved against the config's directory.
    pub cert: std::path::PathBuf,
    /// subjectAltName DNS names (SNI matches these), as written in the certificate.
    pub dns_names: Vec<String>,
    /// subjectAltName IP addresses.
    pub ip_names: Vec<String>,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body: u64,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Name of the environment variable holding the bearer token (None: no `token_env` key).
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Json,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub level: LogLevel,
    pub access: AccessLog,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's algorithm).
    RoundRobin,
    /// Power of two choices over in-flight counts.
    LeastRequest,
    /// Consistent hash on a request header (name lowercased).
    HashHeader(String),
    /// Consistent hash on the client IP.
    HashIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As written in the config (or registered), e.g. "http://127.0.0.1:9001".
    pub url: String,
    pub addr: SocketAddr,
    /// Value for the upstream `Host` header when the route does not keep the client's:
    /// the URL's authority, e.g. "127.0.0.1:9001".
    pub authority: String,
    pub weight: u32,
    /// Where the endpoint came from: the file, a DNS answer for a name in the file, or the
    /// admin API.
    pub source: EndpointSource,
    /// The host name to re-resolve every `dns_refresh` (None for IP literals), and its port.
    pub dns: Option<(String, u16)>,
    /// Operator metadata given at registration, as JSON text.
    pub metadata: Option<String>,
    /// Some exactly for an `https://` endpoint: the URL's host, the name its certificate is
    /// verified for (and sent in SNI when it is a DNS name) unless the upstream sets
    /// `tls_server_name`. An IP address host is checked against the certificate's IP SANs.
    pub tls_name: Option<rustls::pki_types::ServerName<'static>>,
}

impl Endpoint {
    /// The key of this endpoint on a consistent-hash ring: its URL, plus the address when one
    /// name resolved to several addresses (each is an endpoint of its own).
    pub fn ring_key(&self) -> String {
        match self.source {
            EndpointSource::Dns => format!("{}#{}", self.url, self.addr),
            _ => self.url.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointSource {
    Config,
    Dns,
    Admin,
}

impl EndpointSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointSource::Config => "config",
            EndpointSource::Dns => "dns",
            EndpointSource::Admin => "admin",
        }
    }
}

/// `[upstreams.NAME.breaker]`, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    pub failure_threshold: u32,
    pub window: Duration,
    pub recovery_timeout: Duration,
    pub half_open_probes: u32,
    pub on_connect: bool,
    pub on_timeout: bool,
    pub on_5xx: bool,
    pub fallback: Option<Fallback>,
}

/// The response sent instead of the standard 503 while a breaker is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub status: u16,
    /// The body as JSON text; None: the standard error body with `status`.
    pub json: Option<String>,
}

/// `[upstreams.NAME.health_check]`, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// `[upstreams.NAME.outlier]`, defaults applied (present for every upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlier {
    /// 0: ejection off.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub retries: u32,
    pub max_idle_per_worker: usize,
    pub idle_timeout: Duration,
    pub breaker: Option<Breaker>,
    pub health_check: Option<HealthCheck>,
    pub outlier: Outlier,
    pub dns_refresh: Duration,
    /// Some exactly when the endpoints are `https://` (one scheme per upstream).
    pub tls: Option<UpstreamTls>,
    pub location: Location,
}

/// The TLS side of an upstream whose endpoints are `https://`, compiled at load (start,
/// reload): `tls_ca` or the system roots, the client certificate, read and parsed here, so a
/// connect reads no file.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Roots, client certificate, ALPN `http/1.1`. Workers each connect with a clone that has
    /// a session store of its own ([`UpstreamTls::per_worker`]); the health checker uses this.
    pub client: std::sync::Arc<rustls::ClientConfig>,
    /// `tls_server_name`: the name every endpoint's certificate is verified for, in place of
    /// the URL's host.
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
    /// Where the roots came from, for `dispatch check` and the admin API.
    pub roots: TlsRoots,
    /// `tls_client_cert`, when a client certificate is presented (mTLS).
    pub client_cert: Option<PathBuf>,
    /// SHA-256 over every setting and file read: a reload that changes none keeps the pooled
    /// connections (and session tickets), one that changes any starts over.
    pub fingerprint: [u8; 32],
}

/// The roots an upstream's certificates are verified against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRoots {
    /// `tls_ca`: a PEM bundle, and how many certificates it held.
    File(PathBuf, usize),
    /// The system's store (rustls-native-certs), and how many certificates it held.
    System(usize),
}

/// Sessions a worker keeps per upstream for resumption: one per server name, and an upstream
/// rarely has more names than this.
const SESSIONS_PER_WORKER: usize = 64;

impl UpstreamTls {
    /// The client config one worker connects with: this one with a session store of the
    /// worker's own. rustls's in-memory store sits behind a Mutex; one per worker keeps it
    /// uncontended (only its thread takes it) and off every other core's cache lines, so
    /// resumption stays on without a lock shared across cores on the request path.
    pub fn per_worker(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let mut config = (*self.client).clone();
        config.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS_PER_WORKER);
        std::sync::Arc::new(config)
    }
}

impl Upstream {
    /// The name endpoint `ep`'s certificate is verified for: `tls_server_name`, else the
    /// URL's host. None for an `http://` endpoint.
    pub fn tls_name(&self, ep: usize) -> Option<rustls::pki_types::ServerName<'static>> {
        let own = self.endpoints.get(ep)?.tls_name.as_ref()?;
        let set = self.tls.as_ref().and_then(|t| t.server_name.as_ref());
        Some(set.unwrap_or(own).clone())
    }
}

/// One side of a route's `split`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSide {
    pub upstream: UpstreamId,
    pub weight: u32,
}

/// What keeps a caller on one side of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// A request header (name lowercased).
    Header(String),
    /// A cookie by name.
    Cookie(String),
    /// The client IP.
    Ip,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// Path patterns as written ("/api/v1/users", "=/health", "/users/:id", "/files/*").
    /// The router parses and compiles them.
    pub paths: Vec<String>,
    /// Upper-case method tokens; None: any method.
    pub methods: Option<Vec<String>>,
    /// Lower-case host patterns ("api.example.com", "*.example.com"); None: any host.
    pub hosts: Option<Vec<String>>,
    /// (lower-case name, exact value) pairs that must all be present.
    pub headers: Vec<(String, String)>,
    /// The upstream: the `upstream` key, or without it (a split route) the first side with a
    /// non-zero weight. With a split, each request goes to the side it draws, with that
    /// side's timeouts and Host fallback; this one is what the route table shows.
    pub upstream: UpstreamId,
    /// Sides with weights (empty: no split).
    pub split: Vec<SplitSide>,
    pub sticky: Option<Sticky>,
    pub strip_prefix: bool,
    /// Replaces the matched path prefix when forwarding (the rest and the query are kept).
    pub rewrite: Option<String>,
    /// Overrides the upstream's `read_timeout` for this route.
    pub timeout: Option<Duration>,
    /// The `[auth.*]` policy a request must pass (None: no authentication).
    pub auth: Option<AuthId>,
    /// The `[rate_limits.*]` that must all admit a request, in the order written.
    pub rate_limits: Vec<RateLimitId>,
    /// The `[cache.rules.*]` its GET and HEAD answers are cached under.
    pub cache: Option<CacheRuleId>,
    pub location: Location,
    /// `client`: only requests of this `[bff.clients.*]` match (None: every request does).
    pub client: Option<ClientId>,
    /// Set for an aggregate's entry: the aggregate phase answers its requests (its `upstream`
    /// is its first call's, shown by the route table and never called as such).
    pub aggregate: Option<AggregateId>,
    /// The `[transforms.*]` its requests and responses go through.
    pub transform: Option<TransformId>,
    /// `websocket = true`: a WebSocket upgrade request is forwarded with its `Upgrade` and,
    /// once the upstream answers 101, the connection becomes a tunnel (`pipeline::tunnel`).
    pub websocket: bool,
}

impl Route {
    /// The config section the route comes from: `routes` or `aggregates` (error messages).
    pub fn section(&self) -> &'static str {
        if self.aggregate.is_some() {
            "aggregates"
        } else {
            "routes"
        }
    }

    /// The auth a request of `client` must pass here: the route's own, else the client's.
    pub fn effective_auth(&self, bff: Option<&Bff>, client: Option<ClientId>) -> Option<AuthId> {
        self.auth
            .or_else(|| client_of(bff, client).and_then(|c| c.auth))
    }

    /// The limits a request of `client` is counted under here: the route's own list when it
    /// has one (it replaces the client's), else the client's.
    pub fn effective_rate_limits<'a>(
        &'a self,
        bff: Option<&'a Bff>,
        client: Option<ClientId>,
    ) -> &'a [RateLimitId] {
        match client_of(bff, client) {
            Some(c) if self.rate_limits.is_empty() => &c.rate_limits,
            _ => &self.rate_limits,
        }
    }
}

fn client_of(bff: Option<&Bff>, client: Option<ClientId>) -> Option<&BffClient> {
    bff.zip(client).and_then(|(b, c)| b.clients.get(c))
}

/// `[auth.NAME]`: what the file says; `policy::compile` reads the key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    pub name: String,
    pub kind: AuthKind,
    /// `(claim or field, lower-case header name)`, in the order written.
    pub forward: Vec<(String, String)>,
    /// The table's header (errors about the policy as a whole).
    pub location: Location,
    /// The key naming the key material (`keys`, `secret_env` or `keys_file`): errors reading it.
    pub material_location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthKind {
    Jwt(Jwt),
    ApiKey(ApiKey),
}

/// `type = "jwt"`, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwt {
    /// Algorithm names as written in the reference (`RS256`, `EdDSA`, ...), de-duplicated.
    pub algorithms: Vec<String>,
    pub keys: JwtKeys,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    /// Default 0.
    pub leeway: Duration,
    pub required_claims: Vec<String>,
    /// Default false: the upstream gets the token too.
    pub strip_authorization: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKeys {
    /// `keys`: a PEM public key or a JWKS file (resolved against the config's directory).
    File(PathBuf),
    /// `secret_env`: the variable holding the HMAC secret (read when the policy is compiled).
    SecretEnv(String),
}

/// `type = "api_key"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub from: ApiKeyFrom,
    /// Resolved against the config's directory.
    pub keys_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyFrom {
    /// A header (lower-case name).
    Header(String),
    /// A query parameter, removed from the target before forwarding.
    Query(String),
}

/// `[rate_limits.NAME]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub name: String,
    pub algorithm: RateAlgorithm,
    pub key: RateKey,
    /// Windowed algorithms: `limit` per `window` (0 and zero for the buckets).
    pub limit: u64,
    pub window: Duration,
    /// Buckets: `rate` per second and `burst` (0 for the windowed algorithms).
    pub rate: u64,
    pub burst: u64,
    /// `tier`: what picks one of `tiers` (windowed algorithms only).
    pub tier: Option<RateKey>,
    /// `tiers.NAME = { limit, window }`, in the order written.
    pub tiers: Vec<RateTier>,
    /// `max_keys` (an addition to the reference): distinct keys tracked at once.
    pub max_keys: Option<usize>,
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateAlgorithm {
    FixedWindow,
    SlidingWindowLog,
    SlidingWindowCounter,
    TokenBucket,
    LeakyBucket,
}

impl RateAlgorithm {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            RateAlgorithm::FixedWindow => "fixed_window",
            RateAlgorithm::SlidingWindowLog => "sliding_window_log",
            RateAlgorithm::SlidingWindowCounter => "sliding_window_counter",
            RateAlgorithm::TokenBucket => "token_bucket",
            RateAlgorithm::LeakyBucket => "leaky_bucket",
        }
    }
}

/// What a request is counted under (`key`, `tier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client address.
    Ip,
    /// A request header (lower-case name).
    Header(String),
    /// A claim of the verified JWT.
    Jwt(String),
    /// The API key's consumer.
    Consumer,
    /// The route: one count per route.
    Route,
    /// One count for everything.
    Global,
}

impl std::fmt::Display for RateKey {
    /// As written in the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateKey::Ip => f.write_str("ip"),
            RateKey::Header(name) => write!(f, "header:{name}"),
            RateKey::Jwt(claim) => write!(f, "jwt:{claim}"),
            RateKey::Consumer => f.write_str("consumer"),
            RateKey::Route => f.write_str("route"),
            RateKey::Global => f.write_str("global"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateTier {
    pub name: String,
    pub limit: u64,
    pub window: Duration,
    pub location: Location,
}

/// `[transforms.NAME]`: jq programs compiled at load, and header edits (names lowercased).
#[derive(Debug, Clone)]
pub struct Transform {
    pub name: String,
    /// Runs on the JSON request body, with `$now`.
    pub request: Option<crate::compose::jq::Program>,
    /// Runs on a 2xx JSON response body, with `$now`.
    pub response: Option<crate::compose::jq::Program>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub location: Location,
}

/// `{ set = {...}, remove = [...] }`: lower-case names; `set` replaces every field of its name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}
