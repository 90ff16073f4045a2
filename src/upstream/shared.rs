//! The cross-core state of one upstream ([`UpstreamShared`]): its retry budget, its breaker
//! and its endpoints' health. Atomics only: written by workers on failures and transitions and
//! by the health checker, read on every request. `state::shared::Active` holds one per
//! configured upstream and hands it on across reloads by upstream name.

use std::sync::Arc;

use super::breaker::{Breaker, BreakerConfig, FailureKind, FailureSet};
use super::health::{EndpointHealth, HealthEpoch};
use super::retry::RetryBudget;
use crate::clock;
use crate::config::model::Upstream;

/// The cross-core state of one upstream: atomics only, written by workers on failures and
/// transitions, read on every request. It outlives a config generation: a reload or an
/// endpoint registration hands it on by upstream name (and endpoint address).
pub struct UpstreamShared {
    pub budget: Arc<RetryBudget>,
    /// The breaker and the settings it was built from (changed settings start a new breaker;
    /// a changed fallback alone keeps it, open or not).
    pub breaker: Option<(Arc<Breaker>, BreakerConfig)>,
    /// Bumped whenever an endpoint of this upstream enters or leaves the rotation by a write.
    pub epoch: Arc<HealthEpoch>,
    /// Indexed like the upstream's endpoints.
    pub endpoints: Vec<Arc<EndpointHealth>>,
}

impl UpstreamShared {
    pub fn new(
        u: &Upstream,
        old: Option<&UpstreamShared>,
        old_u: Option<&Upstream>,
        workers: usize,
    ) -> Self {
        let breaker = u.breaker.as_ref().map(|b| {
            let settings = breaker_config(b);
            match old
                .and_then(|o| o.breaker.as_ref())
                .filter(|(_, c)| *c == settings)
            {
                Some(kept) => kept.clone(),
                None => (Arc::new(Breaker::new(&settings, clock::now_ms())), settings),
            }
        });
        let epoch = old.map_or_else(|| Arc::new(HealthEpoch::default()), |o| o.epoch.clone());
        let endpoints: Vec<Arc<EndpointHealth>> = u
            .endpoints
            .iter()
            .map(|e| {
                old.zip(old_u)
                    .and_then(|(o, ou)| {
                        ou.endpoints
                            .iter()
                            .position(|p| p.addr == e.addr)
                            .and_then(|i| o.endpoints.get(i).cloned())
                    })
                    .unwrap_or_else(|| Arc::new(EndpointHealth::new_in(epoch.clone(), workers)))
            })
            .collect();
        if u.health_check.is_none() {
            // Without active checks nothing would ever clear a verdict from before a reload
            // that removed them.
            for h in &endpoints {
                h.set_active(true);
            }
        }
        // The set changed: workers recompute their rotation.
        epoch.bump();
        UpstreamShared {
            budget: old.map_or_else(|| Arc::new(RetryBudget::new()), |o| o.budget.clone()),
            breaker,
            epoch,
            endpoints,
        }
    }
}

/// The breaker core's settings for `[upstreams.*.breaker]`.
pub fn breaker_config(b: &crate::config::model::Breaker) -> BreakerConfig {
    let mut failure_on = FailureSet::NONE;
    for (on, kind) in [
        (b.on_connect, FailureKind::Connect),
        (b.on_timeout, FailureKind::Timeout),
        (b.on_5xx, FailureKind::Status5xx),
    ] {
        if on {
            failure_on = failure_on.with(kind);
        }
    }
    BreakerConfig {
        failure_threshold: b.failure_threshold,
        window: b.window,
        recovery_timeout: b.recovery_timeout,
        half_open_probes: b.half_open_probes,
        failure_on,
    }
}
