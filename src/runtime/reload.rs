//! Config reload: re-read, validate and compile the config file off the request path, then
//! publish it; each worker picks it up before its next request (see `worker::Worker::snapshot`).
//!
//! A config that fails to load is reported with the same error `dispatch check` prints and
//! changes nothing. New listen addresses are bound and removed ones closed
//! ([`super::listeners`]); a new address that cannot be bound fails the reload before anything
//! changes. Settings that need new threads (worker count, driver, admin listener, span
//! exporter) keep their running values until a restart; reload says so.
//!
//! Order: the new config is compiled once on its own (the only step that can fail on the
//! file), then listeners change (fails only as a whole), then the config is published with the
//! discovery overlays; the publication compiles the same routes again and cannot fail then.

use crate::config::ConfigError;
use crate::state::listeners::BindError;
use crate::state::shared::{Active, Shared};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load (the error `dispatch check` prints).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A new listen address cannot be bound.
    #[error("{0}")]
    Bind(#[from] BindError),
}

pub fn reload(shared: &Shared) -> Result<(), ReloadError> {
    let current = shared.active();
    // The route table is checked here too, so a bad file is refused before anything is said
    // about the settings it would change.
    let next = crate::router::load_config(&current.config.path)?;
    let fixed = |what: &str| crate::warn!("reload: {what} changed; it takes effect on restart");
    if next.server.workers != current.config.server.workers {
        fixed("server.workers");
    }
    // The admin thread keeps its listener and the token rule it started with until a
    // restart: a reload must never open an admin API that was bound requiring a token.
    let admin_of = |c: &crate::config::model::Config| {
        c.admin.as_ref().map(|a| (a.listen, a.token_env.clone()))
    };
    let (was, now) = (admin_of(&current.config), admin_of(&next));
    if was.as_ref().map(|a| a.0) != now.as_ref().map(|a| a.0) {
        fixed("admin.listen");
    }
    if was.is_some() && now.is_some() && was.map(|a| a.1) != now.map(|a| a.1) {
        fixed("admin.token_env");
    }
    if next.tracing.otlp_endpoint != current.config.tracing.otlp_endpoint {
        fixed("tracing.otlp_endpoint");
    }
    // Publications (this reload, a concurrent one, admin registrations, DNS answers) are
    // serialised by the discovery lock; the policies are built under it, against the config
    // running then, so two reloads cannot each hand a changed limit a fresh table.
    let mut discovery = shared.discovery();
    let current = shared.active();
    // Key files are read again here (a reload is how rotated keys are taken in), and the
    // publication below uses what this read. Unchanged rate limits keep their state.
    let policies = std::sync::Arc::new(crate::policy::compile(&next, Some(&current.policies))?);
    // Compiled once on its own first, so a bad file changes nothing; then published with the
    // registrations and DNS answers of the upstreams it keeps.
    Active::compile(
        next.clone(),
        Some(&current),
        current.generation + 1,
        Some(policies.clone()),
    )?;
    // New addresses are bound (all of them, or the reload fails), removed ones stop accepting.
    shared
        .listeners
        .apply(&crate::state::listeners::Listen::of(&next.server))?;
    let saved = discovery.clone();
    discovery.set_file(next);
    let generation = match shared.publish(&discovery, Some(policies)) {
        Ok(g) => g,
        Err(e) => {
            *discovery = saved;
            return Err(e.into());
        }
    };
    crate::logging::set_level(shared.active().config.log.level);
    crate::info!("config reloaded (generation {generation})");
    Ok(())
}
