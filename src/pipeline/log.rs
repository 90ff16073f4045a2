//! The logging phase: the last step of every answered request, whoever answered it (a phase,
//! the upstream, a framing error, a timeout). It runs exactly once per request and feeds the
//! three sinks: the request metrics, the JSON access log, and the exported span.
//!
//! Everything here is per worker and lock-free: metric cells are this worker's, access-log
//! lines and spans are batched per worker and handed to their writer threads.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::model::{AccessLog, Config, RouteId, UpstreamId};
use crate::metrics::WorkerMetrics;

use super::ctx::RequestId;
use super::trace::TraceContext;

/// What the logging phase learns about one answered request.
pub struct Record<'a> {
    pub id: &'a RequestId,
    /// The trace context of the request's span (none when neither propagation nor export is on).
    pub trace: Option<&'a TraceContext>,
    /// The method as received (`""` when the head could not be parsed).
    pub method: &'a str,
    /// The path as received, without the query (`""` when the head could not be parsed).
    pub path: &'a str,
    pub route: Option<RouteId>,
    /// The upstream the request was meant for (a split's side), and its last attempt: the
    /// endpoint and how long that attempt took.
    pub upstream: Option<UpstreamId>,
    pub attempt: Option<(SocketAddr, Duration)>,
    /// The status sent; 499 when the client left before any response.
    pub status: u16,
    pub started: Instant,
    pub client: IpAddr,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The cache's result, on a cached route whose cache phase ran.
    pub cache: Option<crate::metrics::CacheResult>,
}

/// Where a worker's records go.
pub struct Sinks<'a> {
    pub config: &'a Config,
    pub metrics: &'a WorkerMetrics,
    pub access: &'a crate::access_log::Local,
    pub spans: Option<&'a RefCell<crate::otlp::Local>>,
    pub worker: usize,
}

impl<'a> Sinks<'a> {
    /// Where `worker` writes a request served with `snap`.
    pub fn of(
        worker: &'a crate::state::worker::Worker,
        snap: &'a crate::state::worker::Snapshot,
    ) -> Sinks<'a> {
        Sinks {
            config: &snap.active.config,
            metrics: &snap.metrics,
            access: &worker.access,
            spans: worker.spans.as_ref(),
            worker: worker.id,
        }
    }

    /// Whether the method and path must be kept for this request (copied off the read buffer
    /// only when a sink will write them).
    pub fn wants_text(&self) -> bool {
        self.config.log.access == AccessLog::Json || self.spans.is_some()
    }
}

/// Records one answered request in every sink.
pub fn log(sinks: &Sinks<'_>, r: &Record<'_>) {
    let elapsed = r.started.elapsed();
    sinks
        .metrics
        .request(r.route.map(|id| id as u32), r.method, r.status, elapsed);
    let cfg = sinks.config;
    let route = r.route.map(|id| &cfg.routes[id]);
    if let (Some(result), Some(rule)) = (r.cache, route.and_then(|r| r.cache)) {
        sinks.metrics.cache(rule as u32, result);
    }
    let upstream = r.upstream.map(|id| cfg.upstreams[id].name.as_str());
    if let (Some(spans), Some(trace)) = (sinks.spans, r.trace) {
        let route_name = route.map(|r| r.name.as_str());
        let method = if r.method.is_empty() {
            "_OTHER"
        } else {
            r.method
        };
        spans.borrow_mut().record(crate::otlp::Span {
            trace_id: trace.trace_id_bytes(),
            span_id: trace.span_id_bytes(),
            parent_span_id: trace.parent_span_id_bytes(),
            // OpenTelemetry HTTP span naming: "{method} {route}", the method alone without one.
            name: match route_name {
                Some(name) => format!("{method} {name}"),
                None => method.to_string(),
            },
            start_unix_nanos: crate::clock::unix_nanos(r.started),
            end_unix_nanos: crate::clock::unix_nanos(r.started + elapsed),
            method: method.to_string(),
            path: r.path.to_string(),
            route: route_name.map(Into::into),
            status: r.status,
            client: r.client,
            upstream: upstream.map(Into::into),
            worker: sinks.worker as u32,
        });
    }
    if cfg.log.access == AccessLog::Json {
        sinks.access.record(&crate::access_log::Entry {
            ts: std::time::SystemTime::now(),
            request_id: r.id.as_str(),
            trace_id: r.trace.map(|t| t.trace_id()),
            client_ip: r.client,
            method: r.method,
            path: r.path,
            route: route.map(|r| r.name.as_str()),
            status: r.status,
            upstream,
            upstream_addr: r.attempt.map(|(a, _)| a),
            duration: elapsed,
            upstream_time: r.attempt.map(|(_, t)| t),
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            cache: r.cache.map(|c| c.header()),
            worker: sinks.worker,
        });
    }
}
