//! The only state shared across worker threads.
//!
//! [`Shared`] holds the active compiled config ([`Active`], swapped whole on reload, with one
//! [`crate::upstream::shared::UpstreamShared`] per upstream: retry budget, breaker, endpoint health), the shutdown flag,
//! the process-wide connection count, the listener set and the discovery state. The request
//! path touches only atomics and the `ArcSwap`; the two `Mutex`es (discovery, listeners) are
//! taken only by the admin, DNS and reload threads. Workers keep their own
//! `Rc` of the active config and only compare the generation counter per request, a read of a
//! cache line that is written once per reload.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use super::listeners::Listeners;
use crate::config::model::Config;
use crate::policy::Policies;
use crate::router::Router;
use crate::upstream::discovery::Discovery;
use crate::upstream::shared::UpstreamShared;

/// One compiled generation of the config: the model, its route table and the cross-core state
/// that belongs to its upstreams (kept across reloads by upstream name).
pub struct Active {
    pub config: Arc<Config>,
    pub router: Router,
    /// Indexed like `config.upstreams`.
    pub upstreams: Vec<UpstreamShared>,
    /// The compiled auth policies and rate limits (limits shared by every worker).
    pub policies: Arc<Policies>,
    /// The cache rules' purge generations (shared by every worker; unchanged rules keep
    /// theirs across reloads, and so their entries).
    pub cache: Arc<crate::cache::Rules>,
    pub generation: u64,
    /// Worker threads running (fixed at start).
    pub workers: usize,
}

impl Active {
    /// Metric label values of this config: routes and upstreams by id.
    pub fn metrics_layout(&self) -> Arc<crate::metrics::Layout> {
        let c = &self.config;
        Arc::new(
            crate::metrics::Layout::new()
                .with_routes(c.routes.iter().map(|r| r.name.clone()))
                .with_upstreams(c.upstreams.iter().map(|u| u.name.clone()))
                .with_policies(c.rate_limits.iter().map(|r| r.name.clone()))
                .with_cache_rules(
                    c.cache
                        .iter()
                        .flat_map(|c| c.rules.iter().map(|r| r.name.clone())),
                ),
        )
    }

    /// Compiles `config`; `old` provides the cross-core state of upstreams (and endpoints)
    /// that keep their name (and address). `policies`: the policies compiled for this config
    /// (a reload reads the key files once, before publishing); None reuses `old`'s when the
    /// config's `[auth.*]` and `[rate_limits.*]` are unchanged (an admin registration or a
    /// DNS answer changes only endpoints), else compiles them.
    pub fn compile(
        config: Config,
        old: Option<&Active>,
        generation: u64,
        policies: Option<Arc<Policies>>,
    ) -> Result<Active, crate::config::ConfigError> {
        let router = crate::router::compile_config(&config)?;
        let policies = match (policies, old) {
            (Some(p), _) => p,
            (None, Some(o))
                if o.config.auth == config.auth && o.config.rate_limits == config.rate_limits =>
            {
                o.policies.clone()
            }
            (None, old) => Arc::new(crate::policy::compile(&config, old.map(|o| &*o.policies))?),
        };
        let cache = Arc::new(crate::cache::Rules::compile(
            config.cache.as_ref(),
            old.map(|o| &*o.cache),
        ));
        // The running worker count: a reload cannot change it (see `reload`).
        let workers = old.map_or(config.server.workers, |o| o.workers);
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let previous = old.and_then(|o| {
                    o.config
                        .upstreams
                        .iter()
                        .position(|p| p.name == u.name)
                        .map(|i| (&o.upstreams[i], &o.config.upstreams[i]))
                });
                UpstreamShared::new(u, previous.map(|p| p.0), previous.map(|p| p.1), workers)
            })
            .collect();
        Ok(Active {
            config: Arc::new(config),
            router,
            upstreams,
            policies,
            cache,
            generation,
            workers,
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
    /// The file's config plus registrations and DNS answers. Taken by the admin thread, the
    /// DNS thread and reload only, never by a worker; it also serialises their publications.
    pub discovery: Mutex<Discovery>,
    /// Spans the OTLP exporter dropped (queue full, collector failing).
    pub spans_dropped: Arc<AtomicU64>,
    /// Access-log lines dropped because the writer fell behind (bumped only on a drop).
    pub access_log_dropped: Arc<AtomicU64>,
    /// Client connections closed at accept over `max_connections` (bumped only on a
    /// rejection, next to the connection count the accept already touches).
    pub connections_rejected: AtomicU64,
    /// The open listen addresses and the way to change them (reload).
    pub listeners: Listeners,
    /// Each worker's cache shard size, `(entries, bytes)`: written by its worker after a
    /// store or a sweep, read by the metrics scrape.
    pub cache_gauges: Box<[(AtomicU64, AtomicU64)]>,
}

impl Shared {
    pub fn new(
        active: Active,
        workers: usize,
        discovery: Discovery,
        listeners: Listeners,
    ) -> Arc<Shared> {
        let generation = active.generation;
        Arc::new(Shared {
            active: ArcSwap::from_pointee(active),
            generation: AtomicU64::new(generation),
            shutdown: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            workers,
            started: Instant::now(),
            metrics: crate::metrics::Registry::new(env!("CARGO_PKG_VERSION")),
            discovery: Mutex::new(discovery),
            spans_dropped: Arc::default(),
            access_log_dropped: Arc::default(),
            connections_rejected: AtomicU64::new(0),
            listeners,
            cache_gauges: (0..workers)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
        })
    }

    /// Compiles the effective config of `discovery` (the caller holds its lock) and makes it
    /// the one every worker uses for its next request.
    /// `policies`: as [`Active::compile`] takes them.
    pub fn publish(
        &self,
        discovery: &Discovery,
        policies: Option<Arc<Policies>>,
    ) -> Result<u64, crate::config::ConfigError> {
        let current = self.active();
        let generation = current.generation + 1;
        let next = Active::compile(discovery.effective(), Some(&current), generation, policies)?;
        self.swap(next);
        Ok(generation)
    }

    /// The discovery state, even if a thread panicked while holding it (its data is only
    /// ever replaced whole, so it is consistent).
    pub fn discovery(&self) -> std::sync::MutexGuard<'_, Discovery> {
        self.discovery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Publishes worker `worker`'s cache shard size for the metrics scrape.
    pub fn publish_cache_size(&self, worker: usize, shard: &crate::cache::Shard) {
        self.publish_cache_gauges(worker, shard.entries() as u64, shard.bytes());
    }

    /// Publishes worker `worker`'s cache gauges: `entries` slots holding `bytes`.
    pub fn publish_cache_gauges(&self, worker: usize, entries: u64, bytes: u64) {
        if let Some((e, b)) = self.cache_gauges.get(worker) {
            e.store(entries, Ordering::Relaxed);
            b.store(bytes, Ordering::Relaxed);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str, old: Option<&Active>) -> Active {
        let config = crate::config::load_str(text, std::path::Path::new("t.toml")).unwrap();
        Active::compile(config, old, old.map_or(1, |o| o.generation + 1), None).unwrap()
    }

    const ROUTE: &str = "[routes.r]\npaths = [\"/\"]\nupstream = \"u\"\n";

    /// An endpoint marked unhealthy by active checks is back in rotation after a reload that
    /// removes the checks (nothing else would ever clear the verdict).
    #[test]
    fn reload_without_health_checks_clears_old_verdicts() {
        let checked = format!(
            "[upstreams.u]\nendpoints = [\"http://127.0.0.1:9001\"]\n[upstreams.u.health_check]\npath = \"/h\"\n{ROUTE}"
        );
        let first = compile(&checked, None);
        let health = first.upstreams[0].endpoints[0].clone();
        health.set_active(false);
        let again = compile(&checked, Some(&first));
        assert!(Arc::ptr_eq(&again.upstreams[0].endpoints[0], &health));
        assert!(!health.active_healthy(), "kept while checks run");
        let plain = format!("[upstreams.u]\nendpoints = [\"http://127.0.0.1:9001\"]\n{ROUTE}");
        compile(&plain, Some(&again));
        assert!(health.active_healthy());
    }

    /// Breaker state survives a reload unless its thresholds change.
    #[test]
    fn breaker_is_kept_unless_its_settings_change() {
        let with = |threshold: u32, fallback: &str| {
            format!(
                "[upstreams.u]\nendpoints = [\"http://127.0.0.1:9001\"]\n[upstreams.u.breaker]\nfailure_threshold = {threshold}\n{fallback}\n{ROUTE}"
            )
        };
        let first = compile(&with(5, ""), None);
        let b = |a: &Active| a.upstreams[0].breaker.as_ref().unwrap().0.clone();
        let fallback = compile(
            &with(5, "fallback = { status = 503, json = { a = 1 } }"),
            Some(&first),
        );
        assert!(Arc::ptr_eq(&b(&first), &b(&fallback)));
        let changed = compile(&with(6, ""), Some(&fallback));
        assert!(!Arc::ptr_eq(&b(&first), &b(&changed)));
    }
}
