//! Per-worker upstream state: one [`UpstreamState`] per configured upstream, each with its
//! balancer and a keep-alive pool per endpoint.
//!
//! A connection goes back to its pool only after its response was read completely, with no
//! byte beyond that response's framing, and neither side asked to close; it is taken out LIFO
//! (warmest first). Every reuse, however short the idle spell, first peeks at the socket (one
//! non-blocking `MSG_PEEK`): an idle HTTP/1.1 connection has no request outstanding, so any
//! byte found there is an unsolicited response (or the tail of a mis-framed one) and the
//! connection is out of step with its requests (RFC 9112 §9.3, §11.2). Such a connection, like
//! one the upstream closed, is dropped, never read: reading those bytes as the next request's
//! response would hand one client another exchange's answer (response queue poisoning).
//! Pools are swept by the worker's housekeeping tick. Pools survive a config swap for
//! endpoints whose address did not change, nor (for `https://` endpoints) their TLS settings
//! or the name their certificate was verified for: a connection verified under the old
//! settings is not the one the new settings ask for.
//!
//! TLS connections pool exactly like plain ones. Each worker has its own copy of an https
//! upstream's client config with its own session store (resumption without a lock shared
//! across cores), kept across a config swap that leaves the settings unchanged.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::balance::Balancer;
use super::breaker::BreakerReplica;
use super::client::{TlsConnect, UpConn};
use super::health::{EndpointHealth, OutlierConfig, Rotation};
use super::retry::RetryBudget;
use super::shared::UpstreamShared;
use crate::config::model::{Config, Upstream};

pub struct EndpointPool {
    pub addr: SocketAddr,
    /// The name an `https://` endpoint's certificate is verified for (None: plain HTTP).
    tls_name: Option<ServerName<'static>>,
    idle: VecDeque<UpConn>,
}

pub struct UpstreamState {
    pub name: String,
    pub balancer: Balancer,
    pub pools: Vec<EndpointPool>,
    /// This worker's replica of the upstream's breaker.
    pub breaker: Option<BreakerReplica>,
    /// Endpoint health, shared with every worker; indexed like `pools`.
    pub health: Vec<Arc<EndpointHealth>>,
    /// Which endpoints are out of rotation (cached; recomputed only on change).
    pub rotation: Rotation,
    pub outlier: OutlierConfig,
    pub budget: Arc<RetryBudget>,
    /// Requests not yet added to the shared budget (batched, see `retry.rs`).
    pub pending_requests: Cell<u64>,
    pub max_idle: usize,
    pub idle_timeout: Duration,
    /// This worker's TLS client config for an https upstream, and the fingerprint of the
    /// settings it was built from.
    tls: Option<(Arc<ClientConfig>, [u8; 32])>,
}

/// All upstreams of one worker, indexed like `Config::upstreams`.
#[derive(Default)]
pub struct WorkerUpstreams {
    pub list: Vec<RefCell<UpstreamState>>,
}

impl WorkerUpstreams {
    /// Builds this worker's state for `config`, keeping the pools of `old` whose upstream name
    /// and endpoint address are unchanged.
    pub fn build(
        config: &Config,
        shared: &[UpstreamShared],
        old: Option<&WorkerUpstreams>,
        seed: u64,
    ) -> Self {
        let list = config
            .upstreams
            .iter()
            .zip(shared)
            .enumerate()
            .map(|(i, (u, shared))| {
                let previous = old.and_then(|o| o.list.iter().find(|s| s.borrow().name == u.name));
                let mut previous = previous.map(|p| p.borrow_mut());
                RefCell::new(UpstreamState::new(
                    u,
                    shared,
                    previous.as_deref_mut(),
                    seed ^ i as u64,
                ))
            })
            .collect();
        WorkerUpstreams { list }
    }

    /// Drops idle connections past their idle timeout; called by the housekeeping tick.
    pub fn sweep(&self, now: Instant) {
        for u in &self.list {
            let mut u = u.borrow_mut();
            let timeout = u.idle_timeout;
            for p in &mut u.pools {
                while p
                    .idle
                    .front()
                    .is_some_and(|c| now.duration_since(c.idle_since) >= timeout)
                {
                    p.idle.pop_front();
                }
            }
        }
    }

    /// Adds batched request counts to the shared retry budgets.
    pub fn flush_budgets(&self, now_sec: u64) {
        for u in &self.list {
            let u = u.borrow();
            u.budget
                .add_requests(now_sec, u.pending_requests.replace(0));
        }
    }

    pub fn idle_count(&self) -> usize {
        self.list
            .iter()
            .map(|u| u.borrow().pools.iter().map(|p| p.idle.len()).sum::<usize>())
            .sum()
    }
}

impl UpstreamState {
    fn new(
        u: &Upstream,
        shared: &UpstreamShared,
        mut old: Option<&mut UpstreamState>,
        seed: u64,
    ) -> Self {
        let fingerprint = u.tls.as_ref().map(|t| t.fingerprint);
        // Pools and session tickets carry over only under the same TLS settings (or none).
        let same_tls = old
            .as_ref()
            .is_some_and(|o| o.tls.as_ref().map(|(_, f)| *f) == fingerprint);
        let tls = match (&u.tls, old.as_ref()) {
            (Some(t), Some(o)) if same_tls => {
                o.tls.as_ref().map(|(c, _)| (c.clone(), t.fingerprint))
            }
            (Some(t), _) => Some((t.per_worker(), t.fingerprint)),
            (None, _) => None,
        };
        let pools = (0..u.endpoints.len())
            .map(|ep| {
                let addr = u.endpoints[ep].addr;
                let tls_name = u.tls_name(ep);
                let idle = old
                    .as_mut()
                    .filter(|_| same_tls)
                    .and_then(|o| {
                        o.pools
                            .iter_mut()
                            .find(|p| p.addr == addr && p.tls_name == tls_name)
                    })
                    .map(|p| std::mem::take(&mut p.idle))
                    .unwrap_or_default();
                EndpointPool {
                    addr,
                    tls_name,
                    idle,
                }
            })
            .collect();
        UpstreamState {
            name: u.name.clone(),
            balancer: Balancer::new(&u.balance, &u.endpoints, seed),
            pools,
            breaker: shared
                .breaker
                .as_ref()
                .map(|(b, _)| BreakerReplica::new(b.clone())),
            health: shared.endpoints.clone(),
            rotation: Rotation::new(shared.endpoints.clone(), shared.epoch.clone()),
            outlier: OutlierConfig {
                consecutive_failures: u.outlier.consecutive_failures,
                base_ejection: u.outlier.base_ejection,
                max_ejection: u.outlier.max_ejection,
            },
            budget: shared.budget.clone(),
            pending_requests: Cell::new(0),
            max_idle: u.max_idle_per_worker,
            idle_timeout: u.idle_timeout,
            tls,
        }
    }

    /// What a new connection to endpoint `ep` needs for TLS: None for plain HTTP.
    pub fn tls_connect(&self, ep: usize) -> Option<TlsConnect> {
        let (config, _) = self.tls.as_ref()?;
        let name = self.pools.get(ep)?.tls_name.clone()?;
        Some(TlsConnect {
            config: config.clone(),
            name,
        })
    }

    /// A pooled connection to endpoint `ep` that is still open and has received nothing while
    /// idle, if there is one. Connections that fail the check are dropped on the way.
    pub fn checkout(&mut self, ep: usize, now: Instant) -> Option<UpConn> {
        let timeout = self.idle_timeout;
        let pool = &mut self.pools[ep];
        while let Some(mut conn) = pool.idle.pop_back() {
            let idle = now.duration_since(conn.idle_since);
            if idle >= timeout {
                // Everything older is expired too.
                pool.idle.clear();
                return None;
            }
            // Checked at every reuse, not only after some idle time: a stray response can
            // arrive within microseconds of the one before it.
            if conn.is_open() {
                return Some(conn);
            }
            crate::debug!(
                "idle connection to {} was closed or sent unsolicited bytes; dropped",
                conn.addr
            );
        }
        None
    }

    /// Drops every idle connection to endpoint `ep` (one of them was found closed: the
    /// upstream probably restarted or closed them all).
    pub fn clear(&mut self, ep: usize) {
        if let Some(p) = self.pools.get_mut(ep) {
            p.idle.clear();
        }
    }

    /// Returns a connection whose last response was read completely. One with bytes left over
    /// past that response is out of step and is dropped instead.
    pub fn checkin(&mut self, ep: usize, mut conn: UpConn, now: Instant) {
        if self.max_idle == 0 || ep >= self.pools.len() || conn.pending_bytes() {
            return;
        }
        let pool = &mut self.pools[ep];
        if pool.addr != conn.addr {
            return;
        }
        if pool.idle.len() >= self.max_idle {
            pool.idle.pop_front();
        }
        conn.idle_since = now;
        conn.park_idle();
        pool.idle.push_back(conn);
    }
}

/// Shared handle used by the pipeline.
pub type Upstreams = Rc<WorkerUpstreams>;
