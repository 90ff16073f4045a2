//! The control threads: work that must happen once per process, not once per worker, and off
//! every request path.
//!
//! - `dispatch-health` runs the active health checks of every upstream with a
//!   `[health_check]` (one [`Checker`] on its own monoio runtime); verdicts reach the workers
//!   through the endpoints' shared [`crate::upstream::health::EndpointHealth`].
//! - `dispatch-dns` re-resolves endpoint host names every `dns_refresh` and publishes a new
//!   endpoint set when an answer changes (blocking `getaddrinfo` belongs on a thread of its
//!   own, so a slow resolver never delays a health check).
//!
//! Both follow the active config: targets are rebuilt when its generation changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock;
use crate::state::shared::Shared;
use crate::upstream::client::TlsConnect;
use crate::upstream::health::{Checker, HealthCheckConfig, Target};

/// How often the checker looks for due probes.
const HEALTH_TICK: Duration = Duration::from_millis(50);
/// How often the DNS thread looks for due names.
const DNS_TICK: Duration = Duration::from_millis(500);

pub fn spawn(shared: Arc<Shared>) -> std::io::Result<()> {
    let health = shared.clone();
    super::spawn_side_thread("health", move || health_loop(health))?;
    std::thread::Builder::new()
        .name("dispatch-dns".into())
        .spawn(move || dns_loop(shared))?;
    Ok(())
}

async fn health_loop(shared: Arc<Shared>) {
    let mut checker = Checker::new();
    let mut generation = 0;
    let mut targets: Vec<Target> = Vec::new();
    while !shared.shutting_down() {
        if generation != shared.generation() {
            let active = shared.active();
            generation = active.generation;
            targets = health_targets(&active);
        }
        for t in checker.tick(&targets, clock::now_ms()) {
            if t.healthy {
                crate::info!("health check: {} is healthy again ({})", t.label, t.detail);
            } else {
                // Many endpoints of a large upstream may flap together: one line a second.
                static UNHEALTHY: crate::logging::Limiter = crate::logging::Limiter::new();
                crate::warn_limited!(
                    &UNHEALTHY,
                    "health check: {} is unhealthy ({})",
                    t.label,
                    t.detail
                );
            }
        }
        monoio::time::sleep(HEALTH_TICK).await;
    }
}

fn health_targets(active: &crate::state::shared::Active) -> Vec<Target> {
    let mut targets = Vec::new();
    for (u, shared) in active.config.upstreams.iter().zip(&active.upstreams) {
        let Some(h) = &u.health_check else { continue };
        let config = Arc::new(HealthCheckConfig {
            path: h.path.clone(),
            interval: h.interval,
            timeout: h.timeout,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
        });
        for (ep, (e, health)) in u.endpoints.iter().zip(&shared.endpoints).enumerate() {
            // An https endpoint is checked over TLS with the upstream's settings (this thread's
            // own session store: the model's config, which no worker connects with).
            let tls = u
                .tls
                .as_ref()
                .zip(u.tls_name(ep))
                .map(|(t, name)| TlsConnect {
                    config: t.client.clone(),
                    name,
                });
            targets.push(Target {
                key: health.clone(),
                addr: e.addr,
                tls,
                host: e.authority.clone(),
                config: config.clone(),
                label: format!("upstream {} endpoint {} ({})", u.name, e.url, e.addr),
            });
        }
    }
    targets
}

fn dns_loop(shared: Arc<Shared>) {
    // (upstream, url) -> when it is next due.
    let mut due: Vec<((String, String), Instant)> = Vec::new();
    while !shared.shutting_down() {
        std::thread::sleep(DNS_TICK);
        let targets = shared.discovery().dns_targets();
        let now = Instant::now();
        due.retain(|(k, _)| targets.iter().any(|t| t.upstream == k.0 && t.url == k.1));
        for t in targets {
            let key = (t.upstream.clone(), t.url.clone());
            match due.iter_mut().find(|(k, _)| *k == key) {
                None => due.push((key, now + t.every)),
                Some((_, at)) if *at <= now => {
                    *at = now + t.every;
                    refresh(&shared, &t);
                }
                Some(_) => {}
            }
        }
    }
}

fn refresh(shared: &Shared, t: &crate::upstream::discovery::DnsTarget) {
    let addrs = match crate::config::resolve(&t.host, t.port) {
        Ok(addrs) => addrs,
        Err(e) => {
            // Keep serving the last good answer.
            crate::warn!(
                "upstream {}: {e}; keeping the previous addresses",
                t.upstream
            );
            return;
        }
    };
    let mut discovery = shared.discovery();
    if discovery.set_dns(&t.upstream, &t.url, addrs.clone()) {
        match shared.publish(&discovery, None) {
            Ok(_) => crate::info!(
                "upstream {}: {} now resolves to {addrs:?}",
                t.upstream,
                t.host
            ),
            Err(e) => crate::error!("upstream {}: cannot apply DNS answer: {e}", t.upstream),
        }
    }
}
