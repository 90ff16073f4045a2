//! The router: picks the route for a request from its path, method, host and headers.
//!
//! Owns: compiling `Config::routes` into a [`Router`] (once per config, off the request path;
//! [`load_config`] and [`compile_config`] report its errors as config errors at the route),
//! lookups ([`Router::lookup`], the first pipeline stage), the `Allow` values the gateway
//! answers OPTIONS with ([`Router::allowed`], [`Router::allow_all`]) and the route table rows
//! that `dispatch check` and admin `GET /routes` print ([`Router::describe`]).
//! Files: `pattern.rs` (path pattern syntax), `trie.rs` (the compiled segment trie),
//! `matcher.rs` (method / host / header predicates), `load.rs` (a config file loaded with its
//! route table checked).
//!
//! The one thing to know: a lookup allocates nothing (unless a pattern has more than 4
//! parameters, or the answer is a 405 and its `Allow` string is built) and visits each trie
//! node at most once; its cost follows the path's depth, not the number of routes.
//!
//! # Path patterns
//! - `/api/v1/users`: a prefix on segment boundaries: `/api/v1/users`, `/api/v1/users/`,
//!   `/api/v1/users/42`, not `/api/v1/usersx`. `/` matches every path.
//! - `=/health`: exactly `/health`. Exact means exact: `=/health` does not match `/health/`,
//!   and `=/health/` matches only `/health/`.
//! - `:name`: one whole non-empty segment, bound as a parameter; still a prefix
//!   (`/users/:id` matches `/users/7/orders`).
//! - a trailing `/*`: any rest. `/x/*` matches what `/x` matches (`/x` itself too) and ranks
//!   just below it.
//!
//! Literals compare bytes, case-sensitively, against the request path as the HTTP layer
//! normalized it; a pattern with `%XX` escapes must be written in that normalized form.
//!
//! # Precedence (BEHAVIOR.md "Route precedence", with Dispatch's reading of it)
//! 1. Exact (`=`) patterns before all others.
//! 2. Patterns compare segment by segment from the left: a literal segment beats a `:param`
//!    segment, which beats the end of the pattern. So the longest literal prefix wins; where
//!    literal prefixes tie, continuing with a literal beats continuing with a parameter
//!    (`/users/me` beats `/users/:id` for `/users/me`; that is "fewer parameter segments"); and a
//!    longer matching pattern beats a shorter one (`/api/v1/users/:id` beats `/api/v1/users` for
//!    `/api/v1/users/7`, `/api/v1/users` beats `/api`).
//! 3. Then no wildcard beats wildcard (`/x` before `/x/*`).
//! 4. On the same path shape: more predicates first, counting 1 for `methods`, 1 for `hosts`,
//!    1 per header, 1 for `client`.
//!
//! Predicates filter: a route whose method, host or headers do not match is skipped and the
//! next candidate in this order is tried. The answer is 405 (with `Allow` listing, deduplicated
//! and in canonical order, the methods of every route that matched path, host and headers but
//! not the method) only when no route matches at all and at least one matched all but the
//! method; otherwise 404.
//!
//! Two routes are a config error ([`RouteError::Ambiguous`]) when they have the same shape
//! (same literals, parameters at the same positions, same exact / wildcard form; parameter
//! names do not count), the same predicate count, and a request could satisfy both: methods
//! overlap, hosts overlap, no header is required with two different values, and they do not
//! name two different clients. A route that
//! lists two patterns of the same shape is an error too.

mod load;
mod matcher;
mod pattern;
mod trie;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::fmt;

use smallvec::SmallVec;

use crate::config::model::{ClientId, Route, RouteId};
pub use load::{compile_config, load_config, load_config_str};
use matcher::{Check, MethodTable, Predicates, Prepared};
use pattern::{Pattern, Segment};
use trie::{Trie, TrieBuilder};

/// Request headers as the router reads them.
pub trait HeaderLookup {
    /// The value of the header named `lower_name` (lower-case), if present.
    fn get(&self, lower_name: &str) -> Option<&[u8]>;
}

/// Headers as (lower-case name, value) pairs; the first pair with the name wins.
impl HeaderLookup for [(&str, &[u8])] {
    fn get(&self, lower_name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == lower_name).map(|(_, v)| *v)
    }
}

impl<const N: usize> HeaderLookup for [(&str, &[u8]); N] {
    fn get(&self, lower_name: &str) -> Option<&[u8]> {
        HeaderLookup::get(self.as_slice(), lower_name)
    }
}

/// What the router looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'p, H: ?Sized> {
    /// Without the query, already normalized; starts with '/' (anything else is a 404).
    pub path: &'p str,
    /// As sent (methods are case-sensitive).
    pub method: &'p str,
    /// The raw `Host` value: may carry a port and any case. None: no Host header.
    pub host: Option<&'p [u8]>,
    pub headers: &'p H,
    /// The BFF client the request belongs to (`compose::bff`); None: no client.
    pub client: Option<ClientId>,
}

/// Route parameters as (name, value); four fit inline.
pub type Params<'r, 'p> = SmallVec<[(&'r str, &'p str); 4]>;

/// The outcome of [`Router::lookup`]. `'r`: the router, `'p`: the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'r, 'p> {
    Found(Match<'r, 'p>),
    /// 405 with `Allow: <allow>`: some route matched everything but the method.
    MethodNotAllowed {
        allow: String,
    },
    /// 404: no route matched.
    NotFound,
}

/// A matched route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match<'r, 'p> {
    pub route: RouteId,
    /// The pattern that matched, as written in the config.
    pub pattern: &'r str,
    /// Bytes of the path the pattern matched (for `strip_prefix` / `rewrite`):
    /// `&path[prefix_len..]` is empty or starts with '/'. 0 for `/` and `/*`.
    pub prefix_len: usize,
    /// In pattern order.
    pub params: Params<'r, 'p>,
}

impl<'p> Match<'_, 'p> {
    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&'p str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// One line of the route table, as `dispatch check` and admin `GET /routes` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    pub route: RouteId,
    pub name: String,
    /// As written in the config.
    pub pattern: String,
    /// Canonical order; None: any method.
    pub methods: Option<Vec<String>>,
    /// Lower-case; None: any host.
    pub hosts: Option<Vec<String>>,
    pub headers: Vec<(String, String)>,
    /// The route's BFF client (its name is the config's: `bff.clients[client]`).
    pub client: Option<ClientId>,
}

impl fmt::Display for RouteRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<24} {}", self.name, self.pattern)?;
        if let Some(m) = &self.methods {
            write!(f, "  methods={}", m.join(","))?;
        }
        if let Some(h) = &self.hosts {
            write!(f, "  hosts={}", h.join(","))?;
        }
        for (n, v) in &self.headers {
            write!(f, "  {n}: {v}")?;
        }
        if let Some(c) = self.client {
            write!(f, "  client=#{c}")?;
        }
        Ok(())
    }
}

/// A route table that cannot be compiled. All are config errors: `dispatch check` exits 1,
/// `run` does not start and a reload keeps the running config (no HTTP status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A path pattern that does not parse.
    #[error("{section}.{name}: invalid path pattern {path:?}: {reason}")]
    InvalidPattern {
        route: RouteId,
        name: String,
        /// `routes` or `aggregates` ([`Route::section`]).
        section: &'static str,
        path: String,
        reason: String,
    },
    /// A `hosts` entry that can never match (a port, a misplaced '*', ...).
    #[error("{section}.{name}: invalid host {host:?}: {reason}")]
    InvalidHost {
        route: RouteId,
        name: String,
        /// `routes` or `aggregates` ([`Route::section`]).
        section: &'static str,
        host: String,
        reason: String,
    },
    /// A `methods` entry that is not a method token, or too many distinct extension methods.
    #[error("{section}.{name}: invalid method {method:?}: {reason}")]
    InvalidMethod {
        route: RouteId,
        name: String,
        /// `routes` or `aggregates` ([`Route::section`]).
        section: &'static str,
        method: String,
        reason: String,
    },
    /// Two routes (or one route twice) that can match one request with equal precedence.
    /// `path` is `a`'s pattern.
    #[error("{}.{a_name} and {}.{b_name} can match the same request with equal precedence (path {path:?}): {reason}", section(*.a_aggregate), section(*.b_aggregate))]
    Ambiguous {
        a: RouteId,
        a_name: String,
        /// `a` is an aggregate's route (`aggregates.NAME`, not `routes.NAME`).
        a_aggregate: bool,
        b: RouteId,
        b_name: String,
        b_aggregate: bool,
        path: String,
        reason: String,
    },
}

/// The config section of a route (`aggregates` for an aggregate's), for error messages.
fn section(aggregate: bool) -> &'static str {
    if aggregate {
        "aggregates"
    } else {
        "routes"
    }
}

/// One (route, pattern) pair: what the trie's candidates point at.
#[derive(Debug, Clone, Copy)]
struct Entry {
    route: u32,
    /// `slots[params..params + params_len]`.
    params: u32,
    params_len: u32,
}

/// A parameter of a pattern: its name and the index of the path segment it binds.
#[derive(Debug)]
struct ParamSlot {
    name: Box<str>,
    segment: u32,
}

/// The compiled route table. Immutable; built once per config and shared by all workers.
#[derive(Debug)]
pub struct Router {
    trie: Trie,
    entries: Box<[Entry]>,
    /// Pattern text by entry id.
    patterns: Box<[Box<str>]>,
    slots: Box<[ParamSlot]>,
    /// By route id.
    predicates: Box<[Predicates]>,
    methods: MethodTable,
    rows: Vec<RouteRow>,
    /// `Allow` for `OPTIONS *`: every method some route serves, and OPTIONS.
    allow_all: String,
}

const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Router>();
};

impl Router {
    /// Compiles `routes` (indices are the [`RouteId`]s). The error is the first found, checking
    /// methods, then hosts, then patterns, then ambiguity, each in config order.
    pub fn compile(routes: &[Route]) -> Result<Router, RouteError> {
        let methods = MethodTable::build(routes).map_err(|(route, method, reason)| {
            RouteError::InvalidMethod {
                route,
                name: routes[route].name.clone(),
                section: routes[route].section(),
                method,
                reason,
            }
        })?;
        let predicates = routes
            .iter()
            .enumerate()
            .map(|(route, r)| {
                Predicates::compile(r, &methods).map_err(|(host, reason)| RouteError::InvalidHost {
                    route,
                    name: r.name.clone(),
                    section: r.section(),
                    host,
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut trie = TrieBuilder::new();
        let mut entries = Vec::new();
        let mut parsed: Vec<Pattern> = Vec::new();
        let mut texts: Vec<Box<str>> = Vec::new();
        let mut slots = Vec::new();
        for (route, r) in routes.iter().enumerate() {
            for path in &r.paths {
                let pattern =
                    pattern::parse(path).map_err(|reason| RouteError::InvalidPattern {
                        route,
                        name: r.name.clone(),
                        section: r.section(),
                        path: path.clone(),
                        reason,
                    })?;
                let id = entries.len() as u32;
                let first_slot = slots.len() as u32;
                for (i, seg) in pattern.segments.iter().enumerate() {
                    if let Segment::Param(name) = seg {
                        slots.push(ParamSlot {
                            name: name.as_str().into(),
                            segment: i as u32,
                        });
                    }
                }
                entries.push(Entry {
                    route: route as u32,
                    params: first_slot,
                    params_len: slots.len() as u32 - first_slot,
                });
                trie.insert(&pattern.segments, pattern.exact, id);
                parsed.push(pattern);
                texts.push(path.as_str().into());
            }
        }

        let route_of = |e: u32| entries[e as usize].route as usize;
        for group in trie.entry_groups_mut() {
            check_group(
                group,
                routes,
                &parsed,
                &texts,
                &predicates,
                &methods,
                route_of,
            )?;
            // A group is one shape but for the wildcard flag: wildcard last, then more
            // predicates first; config order among the rest (they can't match one request).
            group.sort_by_key(|&e| {
                let count = predicates[route_of(e)].count();
                (parsed[e as usize].wildcard, Reverse(count), e)
            });
        }

        let rows = table_rows(routes, &entries, &parsed, &texts, &predicates, &methods);
        let served = predicates
            .iter()
            .fold(methods.bit("OPTIONS"), |acc, p| acc | p.methods.0);
        let allow_all = methods.allow_header(matcher::MethodSet(served));
        Ok(Router {
            trie: trie.finish(),
            entries: entries.into(),
            patterns: texts.into(),
            slots: slots.into(),
            predicates: predicates.into(),
            methods,
            rows,
            allow_all,
        })
    }

    /// The `Allow` value for `OPTIONS *` (RFC 9110 §9.3.7): every method some route serves
    /// (the standard methods but CONNECT when a route takes any method), and OPTIONS, which
    /// the gateway answers itself for `*`.
    pub fn allow_all(&self) -> &str {
        &self.allow_all
    }

    /// The `Allow` value for the resource `req` names: the methods of every route that matches
    /// its path, host and headers, whatever its method. None when no route does (a 404).
    pub fn allowed<H: HeaderLookup + ?Sized>(&self, req: &RequestView<'_, H>) -> Option<String> {
        let path = req.path.as_bytes();
        if path.first() != Some(&b'/') {
            return None;
        }
        let prepared = Prepared {
            method: self.methods.bit(req.method),
            host: req.host,
            headers: req.headers,
            client: req.client,
        };
        let mut allow = 0u64;
        let mut any = false;
        let mut collect = |e: u32| {
            let p = &self.predicates[self.entries[e as usize].route as usize];
            if p.check(&prepared) != Check::No {
                allow |= p.methods.0;
                any = true;
            }
            false
        };
        let _ = self.trie.find(path, &mut collect);
        any.then(|| self.methods.allow_header(matcher::MethodSet(allow)))
    }

    /// The route for `req`, or why there is none (405 / 404).
    pub fn lookup<'r, 'p, H: HeaderLookup + ?Sized>(
        &'r self,
        req: &RequestView<'p, H>,
    ) -> Lookup<'r, 'p> {
        let path = req.path.as_bytes();
        if path.first() != Some(&b'/') {
            return Lookup::NotFound;
        }
        let prepared = Prepared {
            method: self.methods.bit(req.method),
            host: req.host,
            headers: req.headers,
            client: req.client,
        };
        // Methods of routes that matched all but the method: the 405's `Allow`.
        let mut allow = 0u64;
        let mut accept = |e: u32| {
            let p = &self.predicates[self.entries[e as usize].route as usize];
            match p.check(&prepared) {
                Check::Match => true,
                Check::MethodOnly => {
                    allow |= p.methods.0;
                    false
                }
                Check::No => false,
            }
        };
        match self.trie.find(path, &mut accept) {
            Some((e, prefix_len)) => Lookup::Found(self.matched(e, prefix_len, req.path)),
            None if allow != 0 => Lookup::MethodNotAllowed {
                allow: self.methods.allow_header(matcher::MethodSet(allow)),
            },
            None => Lookup::NotFound,
        }
    }

    #[inline]
    fn matched<'r, 'p>(&'r self, e: u32, prefix_len: usize, path: &'p str) -> Match<'r, 'p> {
        let entry = self.entries[e as usize];
        let slots = &self.slots[entry.params as usize..][..entry.params_len as usize];
        let mut params = Params::new();
        // Segment i is the i-th piece after the leading '/', as in the trie walk; the pattern
        // matched, so each slot's segment exists. `pos` is the '/' before segment `index`.
        let (mut pos, mut index) = (0, 0);
        for slot in slots {
            while index < slot.segment && pos < path.len() {
                pos = trie::segment_end(path.as_bytes(), pos + 1);
                index += 1;
            }
            if pos >= path.len() {
                break;
            }
            let end = trie::segment_end(path.as_bytes(), pos + 1);
            // Both ends sit next to a '/' (or the path's end): char boundaries.
            params.push((&*slot.name, &path[pos + 1..end]));
            (pos, index) = (end, index + 1);
        }
        Match {
            route: entry.route as usize,
            pattern: &self.patterns[e as usize],
            prefix_len,
            params,
        }
    }

    /// The route table in precedence order: (route, pattern, predicates), one row per pattern.
    /// Rows for unrelated paths are ordered by their literals, for a stable listing.
    pub fn describe(&self) -> Vec<RouteRow> {
        self.rows.clone()
    }
}

/// Rejects ambiguous pairs among the entries that end at one trie node (one shape but for the
/// wildcard flag).
fn check_group(
    group: &[u32],
    routes: &[Route],
    parsed: &[Pattern],
    texts: &[Box<str>],
    predicates: &[Predicates],
    methods: &MethodTable,
    route_of: impl Fn(u32) -> usize,
) -> Result<(), RouteError> {
    for (i, &x) in group.iter().enumerate() {
        for &y in &group[i + 1..] {
            if parsed[x as usize].wildcard != parsed[y as usize].wildcard {
                continue;
            }
            let (a, b) = (route_of(x), route_of(y));
            let (px, py) = (&texts[x as usize], &texts[y as usize]);
            let reason = if a == b {
                format!("the route lists two patterns of the same shape, {px:?} and {py:?}")
            } else {
                let (pa, pb) = (&predicates[a], &predicates[b]);
                if pa.count() != pb.count() {
                    continue;
                }
                let Some(why) = pa.overlap(pb, methods) else {
                    continue;
                };
                let shape = if px == py {
                    "same pattern".to_string()
                } else {
                    format!("same shape as {py:?}")
                };
                format!("{shape}, {} predicate(s) each; {why}", pa.count())
            };
            return Err(RouteError::Ambiguous {
                a,
                a_name: routes[a].name.clone(),
                a_aggregate: routes[a].aggregate.is_some(),
                b,
                b_name: routes[b].name.clone(),
                b_aggregate: routes[b].aggregate.is_some(),
                path: px.to_string(),
                reason,
            });
        }
    }
    Ok(())
}

/// Segment rank for ordering the table: a literal before a parameter before the pattern's end.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rank<'a> {
    Literal(&'a str),
    Param,
    End,
}

fn table_rows(
    routes: &[Route],
    entries: &[Entry],
    parsed: &[Pattern],
    texts: &[Box<str>],
    predicates: &[Predicates],
    methods: &MethodTable,
) -> Vec<RouteRow> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_cached_key(|&e| {
        let p = &parsed[e];
        let route = entries[e].route as usize;
        let ranks: Vec<Rank> = p
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => Rank::Literal(l),
                Segment::Param(_) => Rank::Param,
            })
            .chain([Rank::End])
            .collect();
        (
            !p.exact,
            ranks,
            p.wildcard,
            Reverse(predicates[route].count()),
            e,
        )
    });
    order
        .into_iter()
        .map(|e| {
            let route = entries[e].route as usize;
            let p = &predicates[route];
            RouteRow {
                route,
                name: routes[route].name.clone(),
                pattern: texts[e].to_string(),
                methods: (!p.methods.is_any()).then(|| {
                    methods
                        .names(p.methods)
                        .into_iter()
                        .map(String::from)
                        .collect()
                }),
                hosts: p
                    .hosts
                    .as_ref()
                    .map(|h| h.iter().map(ToString::to_string).collect()),
                headers: routes[route].headers.clone(),
                client: routes[route].client,
            }
        })
        .collect()
}
