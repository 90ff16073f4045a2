//! Configuration: read the TOML file, check it, compile it into the [`model::Config`] the
//! gateway runs on, and describe it for `dispatch check`.
//!
//! A load runs these stages in order and stops at the first error, reported as one line
//! `FILE:LINE:COL: KEY.PATH: message` ([`ConfigError`]):
//! 1. `source`: TOML syntax. Keeps every key's and value's span, to locate later errors.
//! 2. `file`: serde into structs that mirror the file: unknown keys, types, units, enum words.
//! 3. `validate`: everything else, with defaults applied, into `model` (addresses parsed,
//!    endpoint hosts resolved, references turned into indices; `aggregate`: each aggregate's
//!    call graph and jq programs compiled, and its route; `tls`: `[server.tls]`'s certificate
//!    and key files read and matched, its rustls server config built; `upstream_tls`: an https
//!    upstream's CA bundle and client certificate read and compiled into its rustls config).
//!
//! The route table's own check (patterns, two routes of equal precedence) is the router's:
//! the router's `load_config` runs [`load`] and then compiles the routes, reporting their
//! errors at the route through [`route_error`]. Config imports no layer that reads it.
//!
//! The one thing to know: a `model::Config` exists only if it passed all of these, and nothing
//! downstream checks them again (the router compiles the route table, which config leaves to it). Loading is off the request path (startup, or a reload building a
//! new config beside the running one) and may block on DNS.

mod aggregate;
mod bff;
mod cache;
mod compression;
pub mod error;
mod file;
pub mod model;
mod policy;
mod source;
mod summary;
mod tls;
mod transform;
mod units;
mod upstream_tls;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::ConfigError;
pub use summary::summary;

use source::{KeyPath, Source};

/// Read, parse and validate into the model (the route table is compiled by the router). Relative
/// paths inside the file are relative to its directory.
pub fn load(path: &Path) -> Result<model::Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path)
}

/// Same, from a string (path used for messages and relative paths).
pub fn load_str(src: &str, path: &Path) -> Result<model::Config, ConfigError> {
    let source = Source::parse(src, path)?;
    let file: file::File = toml::from_str(source.text()).map_err(|e| source.shape_error(&e))?;
    validate::compile(&file, &source)
}

/// Parses an endpoint URL as the file would (`http[s]://HOST[:PORT]`), resolving a host name to
/// every address: the admin API's registrations use it.
pub fn parse_endpoint(url: &str, weight: u32) -> Result<Vec<model::Endpoint>, String> {
    validate::check_weight(weight).map_err(|m| format!("weight {m}"))?;
    validate::endpoint(url, weight)
}

/// A host-name resolver: every address of `(host, port)`, or why there is none. It may block.
pub type Resolver = fn(&str, u16) -> Result<Vec<std::net::SocketAddr>, String>;

static RESOLVER: std::sync::OnceLock<Resolver> = std::sync::OnceLock::new();

/// Replaces the system resolver (`getaddrinfo`) for every later load, registration and DNS
/// refresh of this process, once: for embedding the gateway, and for tests that need a slow or
/// scripted resolver. False when one was set already.
pub fn set_resolver(resolver: Resolver) -> bool {
    RESOLVER.set(resolver).is_ok()
}

/// Every address of `host` (the DNS refresher uses it).
pub fn resolve(host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>, String> {
    validate::resolve(host, port)
}

/// An error about one key of a route, located at the route's table header, with key path
/// `routes.<name>.<key>` (for checks made after loading, such as the router's). An aggregate's
/// route is `aggregates.<name>`, whose one pattern is its `path`.
pub fn route_error(
    cfg: &model::Config,
    route: model::RouteId,
    key: &str,
    message: String,
) -> ConfigError {
    let route = &cfg.routes[route];
    let key = match key {
        "paths" if route.aggregate.is_some() => "path",
        other => other,
    };
    ConfigError::Invalid {
        location: route.location.clone(),
        key: KeyPath::of(&[route.section(), &route.name, key]).to_string(),
        message,
    }
}
