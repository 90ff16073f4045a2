//! # Dispatch: a thread-per-core HTTP/1.1 API gateway
//!
//! ## A worker
//! The process runs N pinned worker threads ([`runtime::worker`]), each with its own monoio
//! event loop (io_uring, or epoll where io_uring is unavailable), its own SO_REUSEPORT listening
//! sockets, its own upstream connection pools and balancers. A connection, and every request on
//! it, lives and dies on the worker that accepted it: requests never hop threads. The only
//! state shared across cores is in [`runtime::shared`]: the active compiled config (swapped
//! whole on reload), the shutdown flag, the connection count, and per upstream the retry
//! budget, the circuit breaker and the endpoints' health, all atomics. Work done once per
//! process (active health checks, DNS refresh) runs on control threads ([`runtime::control`]).
//!
//! ## A request's path
//! 1. [`server::listener`] accepts; [`server::conn`] reads the head into the connection's
//!    buffer and [`http`] parses it zero-copy (limits and strict framing enforced here).
//! 2. [`pipeline::stack`] runs the stages in their one declared order: identity, framing,
//!    target normalisation, [`router`] (compiled trie), the split (canary) side, the breaker
//!    ([`upstream::breaker`]), then the upstream stage.
//! 3. [`pipeline::proxy`] picks an endpoint in rotation ([`upstream::balance`],
//!    [`upstream::health`]: unhealthy and ejected endpoints skipped), takes a pooled connection
//!    or opens one ([`upstream::pool`], [`upstream::client`]), sends the head and streams the
//!    body, reads the response head, retries within [`upstream::retry`]'s rules and budget, and
//!    streams the response back re-framed for the client.
//! 4. Errors the gateway answers itself are JSON ([`pipeline::Rejection`], `http::write`).
//!
//! ## Module map
//! - [`config`]: TOML -> serde structs -> validated [`config::model::Config`] (file:line:col errors).
//! - [`runtime`]: start-up, workers, shared state, reload (config and listeners), shutdown,
//!   discovery (admin registrations, DNS), the control threads.
//! - [`server`]: listeners and client connections.
//! - [`http`]: the HTTP/1.1 codec (parse, framing, chunked, write).
//! - [`router`]: the route trie and its predicates.
//! - [`pipeline`]: the per-request context and stages.
//! - [`upstream`]: balancing, pools, the upstream exchange, retries, breakers, endpoint health.
//! - [`admin`]: the admin API thread.
//! - [`access_log`]: the JSON access log (per-worker batches, one writer thread).
//! - [`otlp`]: span export to an OTLP/HTTP JSON collector (per-worker batches, one thread).
//! - [`metrics`]: per-worker counters summed at scrape, served by the admin `GET /metrics`.
//! - [`demo`]: sample upstreams for `dispatch demo`.

pub mod logging;

pub mod access_log;
pub mod admin;
pub mod clock;
pub mod config;
pub mod demo;
pub mod http;
pub mod io;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod router;
pub mod runtime;
pub mod server;
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
