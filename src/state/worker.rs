//! [`Worker`]: one worker thread's view of the gateway, what the connection loop and the
//! request phases run with: the config [`Snapshot`] (rebuilt when a reload publishes a new
//! generation), the upstream pools and balancers, the drain latch, the random source, and the
//! batches of access-log lines and spans. `runtime::worker` starts the thread and its tasks;
//! this module is only the state, so the layers above read it without reaching into runtime.
//!
//! A request clones this worker's `Rc<Snapshot>` (no atomic) and finishes on it even if a
//! reload swaps in a newer one meanwhile.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use crate::metrics::WorkerMetrics;
use crate::policy::auth::TokenCache;
use crate::upstream::balance::next_rand;
use crate::upstream::WorkerUpstreams;

use super::latch::Latch;
use super::shared::{Active, Shared};

/// The config generation a worker serves with, plus the worker-local state built from it.
pub struct Snapshot {
    pub active: Arc<Active>,
    pub upstreams: WorkerUpstreams,
    /// This worker's metric cells for this config's label values.
    pub metrics: Rc<WorkerMetrics>,
}

/// What a worker runs on each listening socket: the server layer's accept loop, handed in at
/// start (runtime runs threads and sockets and does not import the layers above it). It runs
/// until the worker drains or its latch fires (the address was removed by a reload).
pub type AcceptLoop = fn(
    Rc<Worker>,
    crate::state::listeners::Listen,
    monoio::net::TcpListener,
    Rc<Latch>,
) -> LocalTask;

/// A task a worker spawns; boxed once per listener, not per connection.
pub type LocalTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Where a worker's access-log lines and spans go.
pub struct Telemetry {
    pub access: crate::access_log::Local,
    pub spans: Option<crate::otlp::Local>,
}

pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    snapshot: RefCell<Rc<Snapshot>>,
    pub drain: Latch,
    /// Fired when the drain's `drain_timeout` has passed with connections still open: what
    /// holds a connection open by design (a WebSocket tunnel) closes now, and is logged, in
    /// the one tick the worker still waits before it exits.
    pub drain_expired: Latch,
    /// Connections open on this worker.
    pub open: Cell<usize>,
    rng: Cell<u64>,
    /// This worker's pending access-log lines (flushed by size and by the tick).
    pub access: crate::access_log::Local,
    /// This worker's pending spans, when `tracing.otlp_endpoint` exports them.
    pub spans: Option<RefCell<crate::otlp::Local>>,
    /// Accept loops by configured address, each with the latch that stops it.
    pub accepting: RefCell<Vec<(crate::state::listeners::Listen, Rc<Latch>)>>,
    /// What runs on each of this worker's listening sockets.
    pub accept: AcceptLoop,
    /// Verified-token caches, one per JWT policy (by `AuthId`), created on a policy's first
    /// verification. Kept across reloads: a cache empties itself when its policy's keys were
    /// compiled anew (a verifier of another compilation).
    tokens: RefCell<Vec<Option<TokenCache>>>,
    /// This worker's cache shard, created on the first lookup; kept across reloads (an
    /// unchanged rule keeps its entries, a changed one's are dead by their generation).
    cache: RefCell<Option<Rc<RefCell<crate::cache::Shard>>>>,
}

/// Tokens each verified-token cache holds (per worker and policy): a few hundred bytes each
/// (claims and forwarded headers), so at most a few MiB per worker; a client population
/// larger than this pays a signature check per eviction, never a wrong answer.
pub const TOKEN_CACHE_CAPACITY: usize = 16_384;

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>, telemetry: Telemetry, accept: AcceptLoop) -> Worker {
        let Telemetry { access, spans } = telemetry;
        let active = shared.active();
        let seed = seed(id);
        let upstreams = WorkerUpstreams::build(&active.config, &active.upstreams, None, seed);
        let metrics = Rc::new(shared.metrics.add_worker(active.metrics_layout()));
        Worker {
            id,
            shared,
            snapshot: RefCell::new(Rc::new(Snapshot {
                active,
                upstreams,
                metrics,
            })),
            drain: Latch::default(),
            drain_expired: Latch::default(),
            open: Cell::new(0),
            rng: Cell::new(seed),
            access,
            spans: spans.map(RefCell::new),
            accepting: RefCell::new(Vec::new()),
            accept,
            tokens: RefCell::new(Vec::new()),
            cache: RefCell::new(None),
        }
    }

    /// The snapshot for the next request, rebuilt first if a reload published a new config.
    pub fn snapshot(&self) -> Rc<Snapshot> {
        let current = self.snapshot.borrow().clone();
        if current.active.generation == self.shared.generation() {
            return current;
        }
        let active = self.shared.active();
        let upstreams = WorkerUpstreams::build(
            &active.config,
            &active.upstreams,
            Some(&current.upstreams),
            seed(self.id),
        );
        let metrics = Rc::new(current.metrics.reload(active.metrics_layout()));
        let next = Rc::new(Snapshot {
            active,
            upstreams,
            metrics,
        });
        *self.snapshot.borrow_mut() = next.clone();
        next
    }

    /// This worker's verified-token cache for the auth policy `policy`.
    pub fn token_cache(&self, policy: usize) -> std::cell::RefMut<'_, TokenCache> {
        let mut caches = self.tokens.borrow_mut();
        if caches.len() <= policy {
            caches.resize_with(policy + 1, || None);
        }
        std::cell::RefMut::map(caches, |c| {
            c[policy].get_or_insert_with(|| TokenCache::new(TOKEN_CACHE_CAPACITY))
        })
    }

    /// This worker's cache shard, sized `capacity` bytes (a reload that changed
    /// `max_bytes_per_worker` resizes it, evicting when it shrinks).
    pub fn cache_shard(&self, capacity: u64) -> Rc<RefCell<crate::cache::Shard>> {
        let mut slot = self.cache.borrow_mut();
        let shard =
            slot.get_or_insert_with(|| Rc::new(RefCell::new(crate::cache::Shard::new(capacity))));
        if shard.borrow().capacity() != capacity {
            shard.borrow_mut().set_capacity(capacity);
            self.publish_cache_size(&shard.borrow());
        }
        shard.clone()
    }

    /// Publishes the shard's size for the metrics scrape.
    pub fn publish_cache_size(&self, shard: &crate::cache::Shard) {
        self.shared.publish_cache_size(self.id, shard);
    }

    /// Drops purged entries from the shard (if it exists) and publishes its size: the tick's,
    /// so an idle worker gives back a purge's bytes too.
    pub fn sweep_cache(&self, active: &super::shared::Active) {
        let mut slot = self.cache.borrow_mut();
        // A reload removed `[cache]`: the shard's memory goes back.
        if active.config.cache.is_none() {
            if slot.take().is_some() {
                self.shared.publish_cache_gauges(self.id, 0, 0);
            }
            return;
        }
        let rules = &*active.cache;
        if let Some(shard) = slot.as_ref() {
            if let Ok(mut shard) = shard.try_borrow_mut() {
                shard.sweep(rules);
                self.publish_cache_size(&shard);
            }
        }
    }

    /// Hands every pending access-log line and span to their writer threads (at exit).
    pub fn flush_telemetry(&self) {
        self.access.flush(true);
        if let Some(spans) = &self.spans {
            spans.borrow_mut().flush();
        }
    }

    pub fn rand(&self) -> u64 {
        let mut s = self.rng.get();
        let r = next_rand(&mut s);
        self.rng.set(s);
        r
    }
}

pub fn seed(id: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ ((id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        ^ (std::process::id() as u64).rotate_left(32)
}
