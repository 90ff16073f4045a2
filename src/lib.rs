//! # Dispatch: a thread-per-core HTTP/1.1 API gateway
//!
//! ## A worker
//! The process runs N pinned worker threads ([`runtime::worker`], each with its [`state::worker::Worker`]), each with its own monoio
//! event loop (io_uring, or epoll where io_uring is unavailable), its own SO_REUSEPORT listening
//! sockets, its own upstream connection pools and balancers. A connection, and every request on
//! it, lives and dies on the worker that accepted it: requests never hop threads. The only
//! state shared across cores is in [`state::shared`]: the active compiled config (swapped
//! whole on reload), the shutdown flag, the connection count, and per upstream
//! ([`upstream::shared`]) the retry budget, the circuit breaker and the endpoints' health, all
//! atomics. Work done once per process (active health checks, DNS refresh) runs on control
//! threads ([`runtime::control`]).
//!
//! ## A request's path
//! 1. [`server::listener`] accepts; [`server::conn`] reads the head into the connection's
//!    buffer (the stream layer, [`io`]) and [`http`] parses it zero-copy (limits and strict
//!    framing enforced here).
//! 2. [`pipeline::stack`] runs the request phases ([`pipeline::phase`], one module each) in
//!    their one declared order: untrusted fields dropped (names with `_`, identity headers),
//!    identity (request id and trace context), framing, target normalisation, the BFF client
//!    ([`compose::bff`]: by path prefix, removed, or by header), route ([`router`]: compiled
//!    trie), rate limits keyed on the client's address
//!    ([`policy::ratelimit`]), auth ([`policy::auth`]), every other rate limit, the aggregate
//!    phase (a route that is an aggregate leaves here: [`pipeline::aggregate`] runs its calls
//!    through [`upstream::call`] as futures inside the request's own and answers with the
//!    composite, [`compose::aggregate`]), the split
//!    (canary) side, the cache lookup ([`cache`]: a hit, a 304 or a stale answer ends the
//!    request here), the breaker ([`upstream::breaker`]), then the upstream phase, which
//!    writes the upstream head. Each returns `Continue` or `Respond(Response)`.
//! 3. [`pipeline::proxy`], the upstream stage, hands the request to [`upstream::call`], the one
//!    way to call an upstream: it picks an endpoint in rotation ([`upstream::balance`],
//!    [`upstream::health`]: unhealthy and ejected endpoints skipped), takes a pooled connection
//!    (peeked at every reuse) or opens one, over TLS to an `https://` endpoint
//!    ([`upstream::pool`], [`upstream::client`]), sends the
//!    request (the proxy phase streams the body through the `Caller` seam), offers interim
//!    responses back, reads the final head and retries within [`upstream::retry`]'s rules and
//!    budget; the proxy phase then streams the body back re-framed (copying it for the cache
//!    when the response may be stored). On a websocket route an upgrade's 101 takes the
//!    upgrade branch instead ([`pipeline::tunnel`]): the connection becomes a tunnel, bytes
//!    piped both ways until both sides end, it idles out or a drain closes it.
//! 4. Answers the gateway makes itself are JSON errors or bodiless answers
//!    ([`pipeline::Response`], `http::write`). Every answer, the gateway's or the upstream's,
//!    gets the response phases' headers ([`pipeline::respond`]), and last, compression
//!    ([`pipeline::compress`]) when `[compression]` and the request allow.
//! 5. Every answered request, whoever answered it (framing errors and 408s included), then
//!    passes the logging phase once ([`pipeline::log`]: metrics, access log, span).
//!
//! ## Dependencies point one way
//! `main` and this crate root ([`start`]) wire the layers. [`runtime`] runs the threads, the
//! sockets being served and the signals; it is handed the server's accept loop and the admin
//! spawner at start ([`runtime::Entry`]), so it imports neither. [`server`] builds on
//! [`pipeline`]; [`pipeline`] on [`upstream`]; all of them (and [`admin`]) read the state in
//! [`state`]: the cross-core state, a worker's view of it, the drain latch and the listen set.
//! [`state`] and [`upstream`] import none of `runtime`, `server`, `pipeline` or `admin`, and
//! the module graph has no cycle among them. [`config`] is plain data below all of them: it
//! imports no layer that reads it (only [`otlp`]'s endpoint URL check), and [`router`] reads
//! it, so loading a file with its route table checked is the router's
//! ([`router::load_config`]), not the config's.
//!
//! ## Module map
//! - [`config`]: TOML -> serde structs -> validated [`config::model::Config`] (file:line:col
//!   errors), and the limits every layer is held to (endpoints per upstream, breaker sizes).
//! - [`runtime`]: start-up, the worker threads and their tasks, reload (config and listeners),
//!   shutdown signals, the control threads (active health checks, DNS refresh).
//! - [`state`]: the cross-core state ([`state::shared`]), a worker's view of it
//!   ([`state::worker`]), the drain latch, the set of listen addresses.
//! - [`server`]: the accept loop and the client connection loop.
//! - [`io`]: the stream layer: one buffered connection type over a `Stream` (TCP, or TLS
//!   terminated with rustls: SNI certificate choice, shared session-ticket keys), with
//!   timeouts, byte counts, the liveness peek and the lingering close.
//! - [`http`]: the HTTP/1.1 codec (parse, framing, chunked, write), and response
//!   compression's rules and encoders ([`http::encoding`], applied by the last response
//!   phase, [`pipeline::compress`]).
//! - [`router`]: the route trie and its predicates, and [`router::load_config`]: a config file
//!   loaded, its route table and policies compiled (what `check`, `run`, `demo` and reload
//!   call).
//! - [`pipeline`]: the phase list ([`pipeline::stack`]), the request phases
//!   ([`pipeline::phase`]), the per-request context, the client side of an exchange
//!   ([`pipeline::client`]), the proxy phase's side of an upstream call ([`pipeline::proxy`]),
//!   the response phases ([`pipeline::respond`]) and the logging phase.
//! - [`policy`]: edge policies as decision cores ([`policy::auth`]: JWT and API keys;
//!   [`policy::ratelimit`]: the five rate-limit algorithms, exact across workers, over fixed
//!   memory), and [`policy::compile`]: a config generation's policies (key files read, limits
//!   built or carried over), held by the active config and driven by phases 5 to 7.
//! - [`compose`]: composition: backend-for-frontend client profiles ([`compose::bff`], a
//!   request phase before routing), the jq engine ([`compose::jq`]), a route's transform
//!   ([`compose::transform`]: JSON bodies through jq programs, header edits; the proxy stage
//!   runs it) and aggregation ([`compose::aggregate`]: the call graph compiled at load, start
//!   order, critical path, path templates, and the executor over a transport seam).
//! - [`upstream`]: [`upstream::call`] (the one way to call an upstream), balancing, pools, the
//!   upstream connection, retries, breakers, endpoint
//!   health, discovery (admin registrations, DNS answers), and each upstream's cross-core
//!   state.
//! - [`cache`]: the response cache: RFC 9111 rules as pure functions ([`cache::rules`]), the
//!   stored entry, one shard per worker with its coalescing table ([`cache::shard`]), and the
//!   purge generations shared by every worker ([`cache::purge`]). The cache phase
//!   (`pipeline::phase::cache`) reads it; the proxy phase and `pipeline::refresh` fill it.
//! - [`admin`]: the admin API thread.
//! - [`access_log`]: the JSON access log (per-worker batches, one writer thread).
//! - [`otlp`]: span export to an OTLP/HTTP JSON collector (per-worker batches, one thread).
//! - [`metrics`]: per-worker counters summed at scrape, served by the admin `GET /metrics`.
//! - [`clock`]: the process clock that cross-core time-based state is kept in.
//! - [`logging`]: the process log (RFC 3339 UTC lines, rate-limited repeated warnings).
//! - [`demo`]: sample upstreams for `dispatch demo`.

pub mod logging;

pub mod access_log;
pub mod admin;
pub mod cache;
pub mod clock;
pub mod compose;
pub mod config;
pub mod demo;
pub mod http;
pub mod io;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod policy;
pub mod router;
pub mod runtime;
pub mod server;
pub mod state;
pub mod upstream;

/// Starts the gateway on `config`: the runtime's pinned workers, each running the server's
/// accept loop on its listening sockets, and the admin API when the config has `[admin]`.
pub fn start(config: config::model::Config) -> Result<runtime::Running, runtime::StartError> {
    runtime::start(
        config,
        runtime::Entry {
            accept: server::listener::accept_loop,
            admin: admin::spawn,
        },
    )
}
