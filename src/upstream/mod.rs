//! Upstream services: endpoint selection, per-worker connection pools, the HTTP/1.1 client
//! exchange, retries and their budget.
//!
//! [`call::call`] is the one way to send a request to an upstream: balancer, pool, outlier
//! detection, breaker, retries and budget behind one function that returns the final response
//! head and the connection its body streams from.
//!
//! Key types: [`UpstreamError`] (every way an upstream attempt fails, with the status it maps
//! to and whether it may be retried), [`WorkerUpstreams`] (this worker's pools and balancers,
//! one [`UpstreamState`] per configured upstream).
//!
//! [`breaker`] is the cross-core circuit breaker (a per-worker replica over shared atomics);
//! [`health`] owns endpoint health: passive outlier ejection, the rotation mask each worker
//! reads, and the active checks (run by a runtime control thread); [`discovery`] owns the
//! endpoint sets that change at run time (admin registrations, DNS answers).
//!
//! Invariant: pools and balancers are owned by one worker thread (a pooled connection is only
//! ever used by the worker that opened it); the retry budget, breakers and endpoint health are
//! the cross-core parts, atomics only, held in [`shared::UpstreamShared`].

pub mod balance;
pub mod breaker;
pub mod call;
pub mod client;
pub mod discovery;
pub mod health;
pub mod pool;
pub mod retry;
pub mod shared;

use std::net::SocketAddr;

pub use pool::{UpstreamState, WorkerUpstreams};

/// An upstream attempt that failed. Only these feed retries (and, later, breakers): errors
/// caused by the client are [`UpstreamError::ClientAborted`] and never count against an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// 502: the TCP connect failed (refused, unreachable), or to an `https://` endpoint the
    /// TLS handshake did (a certificate that does not verify, a refused handshake). The
    /// request was not sent: retried for any method.
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// 502: no connection (TLS handshake included) within `connect_timeout`. Retried for any
    /// method.
    #[error("connect to {addr} timed out")]
    ConnectTimeout { addr: SocketAddr },
    /// 504: no response bytes within the read timeout. Retried for idempotent methods.
    #[error("upstream {addr} read timed out")]
    ReadTimeout { addr: SocketAddr },
    /// 502: the connection was reset or closed before a complete response head.
    #[error("upstream {addr} closed the connection: {detail}")]
    Reset { addr: SocketAddr, detail: String },
    /// 502: the upstream sent a response we cannot frame (bad head, conflicting lengths, a
    /// bad chunk before any response byte left the gateway, ...).
    #[error("upstream {addr} sent an invalid response: {detail}")]
    BadResponse { addr: SocketAddr, detail: String },
    /// The upstream answered 502, 503 or 504: a complete exchange, retried for idempotent
    /// requests. When it is not retried, the response itself goes to the client.
    #[error("upstream {addr} answered {status}")]
    Status { addr: SocketAddr, status: u16 },
    /// The client went away or misbehaved while its request was being forwarded. Not the
    /// upstream's fault; carries the client-side status to answer with, if any.
    #[error("client aborted: {detail}")]
    ClientAborted { status: Option<u16>, detail: String },
    /// 503: the upstream's circuit breaker is open; a probe is admitted in `retry_after_secs`.
    /// Never retried and never counted by the breaker itself.
    #[error("circuit breaker open (probe in {retry_after_secs}s)")]
    BreakerOpen { retry_after_secs: u64 },
}

impl UpstreamError {
    /// The status a client gets for this failure.
    pub fn status(&self) -> u16 {
        match self {
            UpstreamError::ReadTimeout { .. } => 504,
            UpstreamError::BreakerOpen { .. } => 503,
            UpstreamError::ClientAborted { status, .. } => status.unwrap_or(400),
            UpstreamError::Status { status, .. } => *status,
            _ => 502,
        }
    }

    /// The message of the JSON error body.
    pub fn client_message(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. } => {
                "Upstream connection failed"
            }
            UpstreamError::ReadTimeout { .. } => "Upstream timed out",
            UpstreamError::Reset { .. } => "Upstream connection reset",
            UpstreamError::BadResponse { .. } => "Invalid response from upstream",
            UpstreamError::Status { .. } => "Upstream error",
            UpstreamError::BreakerOpen { .. } => "Circuit breaker open",
            UpstreamError::ClientAborted {
                status: Some(413), ..
            } => "Request body too large",
            UpstreamError::ClientAborted {
                status: Some(408), ..
            } => "Request body timeout",
            UpstreamError::ClientAborted { .. } => "Malformed request body",
        }
    }
}
