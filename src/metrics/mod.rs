//! Metrics: per-worker counters summed at scrape time, exposed as Prometheus text on the
//! admin `GET /metrics`.
//!
//! Owns the metric names ([`names`], a contract: BEHAVIOR.md "Metrics") and the cells and
//! exposition ([`registry`]). Key types: [`Layout`] (label values from config, addressed by
//! ids), [`WorkerMetrics`] (one per worker, written by the request path), [`Registry`]
//! (`Arc`-shared, renders), [`Writer`] (the text format, also used for breaker states).
//!
//! The one thing to know: the request path takes no lock and no atomic another core writes.
//! Each worker owns its cells (single writer: a Relaxed load + store per increment) and the
//! admin thread only reads them. Label cardinality is fixed by config names and small fixed
//! sets (method, status slot, outcome, cache result, side), never by request data.
//!
//! Wiring, in order:
//! 1. At start-up: `let reg = Registry::new(env!("CARGO_PKG_VERSION"));` shared via `Arc`.
//! 2. On each worker thread: `let m = Rc::new(reg.add_worker(Arc::new(layout)));` where the
//!    layout lists route/upstream/policy/cache-rule names in the order their ids are assigned.
//! 3. Request path: `m.request(route_id, method, status, elapsed)`, `m.upstream(..)`,
//!    `m.pool(..)`, `m.connection_opened(Side::Client)` / `connection_closed`, ...
//! 4. Reload: `let m2 = Rc::new(m.reload(Arc::new(new_layout)));` requests in flight keep
//!    their `Rc` to `m`; totals carry over by name, no counter goes backwards.
//! 5. Admin `GET /metrics`: `reg.render(&mut body, &|w| w.breaker_states(..))`, content type
//!    `text/plain; version=0.0.4`.

pub mod names;
pub mod registry;

pub use registry::{
    method_index, CacheResult, Layout, Registry, Side, UpstreamOutcome, WorkerMetrics, Writer, F64,
    METHODS, STATUS_LABELS,
};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
