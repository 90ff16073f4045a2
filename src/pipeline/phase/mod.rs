//! The request phases, one module each, in the order [`super::stack`] calls them:
//! [`untrusted`], [`identity`], [`framing`], [`target`], the BFF client
//! ([`crate::compose::bff`]), [`route`], [`ratelimit`] (limits keyed on the client's address;
//! a route's own, else its BFF client's), [`auth`] (likewise), [`ratelimit`] again (every
//! other limit), [`aggregate`] (an aggregate's request leaves the list here), [`split`],
//! [`cache`], [`breaker`], the WebSocket handshake check
//! ([`crate::pipeline::tunnel::handshake`]), [`upstream`].
//!
//! A phase owns one concern and its own part of the per-request state (its output type:
//! [`identity::Identity`], [`framing::Framing`], [`target::Resource`], the router's
//! [`Match`](crate::router::Match), [`Destination`], auth's [`auth::Subject`], the rate
//! limits' [`ratelimit::Limited`], the cache's [`cache::Pending`], the breaker's permit, the
//! upstream head's balance key). A phase that may answer the request returns a [`Flow`]: `Continue`
//! with its output, or `Respond` with the answer, never a flag for a later phase to check. A
//! phase that cannot answer (untrusted, identity, split) returns its output directly.
//!
//! The one thing to know: a phase takes a narrow context (the parsed head or its header
//! fields, the config parts it reads, a breaker replica, worker-local services as plain values
//! or closures such as a random draw or a clock reading), never the worker or the snapshot, so
//! each is unit-tested in-process without sockets. Phases are plain static calls on the hot
//! path: no boxing, no dynamic dispatch, no allocation beyond what the work itself needs.

pub mod aggregate;
pub mod auth;
pub mod breaker;
pub mod cache;
pub mod framing;
pub mod identity;
pub mod ratelimit;
pub mod route;
pub mod split;
pub mod target;
pub mod untrusted;
pub mod upstream;

use crate::config::model::{Route, RouteId, Upstream, UpstreamId};
use crate::http::Header;
use crate::router::HeaderLookup;
use crate::upstream::balance::hash_key;

use super::Response;

/// A phase's decision.
// The answer is the rare path and about as large as the per-request state; boxing it would
// add an allocation to every answer, and the phases are inlined into the one list.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Flow<T = ()> {
    /// Go on to the next phase with this phase's output.
    Continue(T),
    /// The gateway answers now; no later phase runs.
    Respond(Response),
}

/// Where a request goes: the route the route phase matched and the upstream the split phase
/// picked (the route's own upstream when it has no split).
#[derive(Clone, Copy, Debug)]
pub struct Destination<'c> {
    pub route_id: RouteId,
    pub route: &'c Route,
    /// Bytes of the path the route's pattern matched (for `strip_prefix` / `rewrite`).
    pub matched: usize,
    pub upstream_id: UpstreamId,
    pub upstream: &'c Upstream,
}

impl Destination<'_> {
    /// The route and upstream an answer made from here on names (metrics, access log).
    pub fn ids(&self) -> (RouteId, UpstreamId) {
        (self.route_id, self.upstream_id)
    }
}

/// The router reads predicates' headers straight from the parsed fields.
impl HeaderLookup for [Header<'_>] {
    fn get(&self, lower_name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|h| h.name.eq_ignore_ascii_case(lower_name))
            .map(|h| h.value)
    }
}

/// The request's fields as the phases after auth read them: the identity headers auth set
/// (phase 0 removed the client's own) before the client's fields, so a sticky split, a
/// `hash:header:` balance key or a `header:` rate-limit key on `x-user-id` reads the verified
/// identity, never a forged one.
#[derive(Clone, Copy)]
pub struct Fields<'a, 'h> {
    pub headers: &'a [Header<'h>],
    /// `(lower-case name, value)` from [`auth::Subject::forwarded`].
    pub identity: &'a [(&'a str, &'a str)],
}

impl<'a, 'h: 'a> Fields<'a, 'h> {
    /// The client's fields alone (a route without auth).
    pub fn plain(headers: &'a [Header<'h>]) -> Self {
        Fields {
            headers,
            identity: &[],
        }
    }

    /// The value of the first field `lower_name`.
    pub fn get(&self, lower_name: &str) -> Option<&'a [u8]> {
        self.identity
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(lower_name))
            .map(|(_, value)| value.as_bytes())
            .or_else(|| HeaderLookup::get(self.headers, lower_name))
    }
}

/// The value of the field `name` when it appears at most once. Err: it appears more than once.
fn single<'h>(headers: &[Header<'h>], name: &str) -> Result<Option<&'h [u8]>, ()> {
    let mut found = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(());
            }
            found = Some(h.value);
        }
    }
    Ok(found)
}

/// A client address as a hash key (sticky splits, `hash_ip` balancing).
fn hash_ip(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => hash_key(&v4.octets()),
        std::net::IpAddr::V6(v6) => hash_key(&v6.octets()),
    }
}

/// What the phases' unit tests build their inputs from: heads parsed by the codec from bytes,
/// configs loaded from TOML by the config loader, and routers compiled from them.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use crate::config::model::Config;
    use crate::http::{parse_request, HeadLimits, RequestHead};
    use crate::pipeline::ctx::RequestId;
    use crate::pipeline::{Body, Response};

    /// The head of `raw` (a complete request head).
    pub fn head(raw: &[u8]) -> RequestHead<'_> {
        parse_request(raw, &HeadLimits::default())
            .expect("a valid head")
            .expect("a complete head")
    }

    /// `src` loaded as a config file.
    pub fn config(src: &str) -> Config {
        crate::config::load_str(src, Path::new("phase-test.toml"))
            .unwrap_or_else(|e| panic!("{e}\n--- config ---\n{src}"))
    }

    pub fn router(cfg: &Config) -> crate::router::Router {
        crate::router::compile_config(cfg).expect("routes compile")
    }

    pub fn id() -> RequestId {
        RequestId::from_client(b"test-id").unwrap()
    }

    /// The message of a standard JSON error answer.
    pub fn message(r: &Response) -> &str {
        match &r.body {
            Body::Error(m) => m,
            other => panic!("not an error body: {other:?}"),
        }
    }
}
