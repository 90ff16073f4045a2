//! The only state shared across worker threads.
//!
//! [`Shared`] holds the active compiled config ([`Active`], swapped whole on reload), the
//! shutdown flag, the process-wide connection count and the retry budgets. Everything here is
//! atomics or an `ArcSwap`: no lock is ever taken on the request path. Workers keep their own
//! `Rc` of the active config and only compare the generation counter per request, a read of a
//! cache line that is written once per reload.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::model::Config;
use crate::router::Router;
use crate::upstream::retry::RetryBudget;

/// One compiled generation of the config: the model, its route table and the cross-core state
/// that belongs to its upstreams (kept across reloads by upstream name).
pub struct Active {
    pub config: Arc<Config>,
    pub router: Router,
    pub budgets: Vec<Arc<RetryBudget>>,
    pub generation: u64,
}

impl Active {
    /// Metric label values of this config: routes and upstreams by id.
    pub fn metrics_layout(&self) -> Arc<crate::metrics::Layout> {
        let c = &self.config;
        Arc::new(
            crate::metrics::Layout::new()
                .with_routes(c.routes.iter().map(|r| r.name.clone()))
                .with_upstreams(c.upstreams.iter().map(|u| u.name.clone())),
        )
    }

    /// Compiles `config`; `old` provides the budgets of upstreams that keep their name.
    pub fn compile(
        config: Config,
        old: Option<&Active>,
        generation: u64,
    ) -> Result<Active, crate::config::ConfigError> {
        let router = crate::config::compile_router(&config)?;
        let budgets = config
            .upstreams
            .iter()
            .map(|u| {
                old.and_then(|o| {
                    o.config
                        .upstreams
                        .iter()
                        .position(|p| p.name == u.name)
                        .map(|i| o.budgets[i].clone())
                })
                .unwrap_or_else(|| Arc::new(RetryBudget::new()))
            })
            .collect();
        Ok(Active {
            config: Arc::new(config),
            router,
            budgets,
            generation,
        })
    }
}

pub struct Shared {
    active: ArcSwap<Active>,
    generation: AtomicU64,
    shutdown: AtomicBool,
    /// Open client connections in the whole process (`max_connections`).
    pub connections: AtomicUsize,
    pub workers: usize,
    pub started: Instant,
    /// Every worker's metric cells, read by the admin thread at scrape time.
    pub metrics: Arc<crate::metrics::Registry>,
}

impl Shared {
    pub fn new(active: Active, workers: usize) -> Arc<Shared> {
        let generation = active.generation;
        Arc::new(Shared {
            active: ArcSwap::from_pointee(active),
            generation: AtomicU64::new(generation),
            shutdown: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            workers,
            started: Instant::now(),
            metrics: crate::metrics::Registry::new(env!("CARGO_PKG_VERSION")),
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// Makes `next` the config every worker uses for its next request.
    pub fn swap(&self, next: Active) {
        let generation = next.generation;
        self.active.store(Arc::new(next));
        self.generation.store(generation, Ordering::Release);
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Seconds since start: the clock of the retry budget.
    pub fn now_sec(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Claims a connection slot; false when `max_connections` are open.
    pub fn try_open_connection(&self, max: usize) -> bool {
        let prev = self.connections.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn close_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
