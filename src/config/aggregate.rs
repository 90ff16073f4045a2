//! `[aggregates.NAME]` and `[aggregates.NAME.calls.CALL]`, from what was written to
//! [`model::Aggregate`]: each aggregate's call graph compiled into a
//! [`Plan`](crate::compose::aggregate::Plan) (cycles, references to unknown calls, bad
//! placeholders), its jq programs (`select`, `when`, `shape`) compiled, and its route: an
//! aggregate is a route ([`model::Route::aggregate`]) with a path, `methods` (default GET and
//! HEAD), `auth`, `rate_limits` and `client` (a BFF client's, whose defaults apply as on any
//! route), so it joins the route table (the router's precedence and
//! ambiguity rules) like any other.
//!
//! Defaults: `timeout` 10s for the aggregate; a call's own `timeout` is the aggregate's when
//! not written, and may not exceed it (the aggregate's deadline would cut it first);
//! `max_body` (the bytes of call bodies one request reads, all calls together) 32 MiB, or
//! `server.limits.max_body` when that is larger. Every error is located at the key it is
//! about (file:line:col).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use serde_json::Value;

use super::error::ConfigError;
use super::file::{self, Named};
use super::model;
use super::source::{KeyPath, Source};
use super::units::format_duration;
use super::validate::{methods, suggestion, Section};
use crate::compose::aggregate::{
    AggregateSpec, CallRun, CallSpec, Compiled, Plan, PlanError, DEFAULT_BUDGET,
    DEFAULT_CONCURRENCY, DEFAULT_MAX_ITEMS,
};
use crate::compose::jq::Program;

/// An aggregate's `timeout` when not written.
pub const DEFAULT_TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// The methods an aggregate answers when `methods` is not written: a composite is read, never
/// written.
pub const DEFAULT_METHODS: [&str; 2] = ["GET", "HEAD"];

/// The policies an aggregate's route refers to.
pub(super) struct Refs<'a> {
    pub upstreams: &'a [model::Upstream],
    pub auth: &'a [model::AuthPolicy],
    pub rate_limits: &'a [model::RateLimit],
    pub limits: &'a model::Limits,
    pub bff: Option<&'a model::Bff>,
    /// The file's `[routes.*]`: an aggregate may not take a route's name.
    pub routes: &'a [model::Route],
}

/// Every `[aggregates.*]`, in file order, with its route; `first_route` is the id its first
/// route takes (aggregates' routes follow the file's routes).
pub(super) fn aggregates(
    written: &Option<Named<file::Aggregate>>,
    refs: &Refs<'_>,
    first_route: usize,
    src: &Source,
) -> Result<(Vec<model::Route>, Vec<model::Aggregate>), ConfigError> {
    let mut routes = Vec::new();
    let mut aggregates = Vec::new();
    for (id, (name, a)) in written.iter().flat_map(|t| t.iter()).enumerate() {
        let (route, compiled) = aggregate(name, a, refs, src)?;
        let at = KeyPath::of(&["aggregates", name]);
        aggregates.push(model::Aggregate {
            name: name.to_string(),
            route: first_route + id,
            compiled: Arc::new(compiled),
            location: src.location_of(&at),
        });
        routes.push(model::Route {
            aggregate: Some(id),
            ..route
        });
    }
    Ok((routes, aggregates))
}

fn aggregate(
    name: &str,
    a: &file::Aggregate,
    refs: &Refs<'_>,
    src: &Source,
) -> Result<(model::Route, Compiled), ConfigError> {
    let at = KeyPath::of(&["aggregates", name]);
    let section = Section::new(src, &at);
    // The aggregate's name is its route's: in metric labels, the access log and `key =
    // "route"` rate-limit buckets, a route of the same name would be indistinguishable.
    if let Some(route) = refs.routes.iter().find(|r| r.name == name) {
        return Err(src.key_error(
            &at,
            format!(
                "aggregate {name:?} has the name of route {:?} (line {}); aggregates and \
                 routes share one namespace (metric labels, access log, rate-limit keys): \
                 rename one",
                route.name,
                src.location_of(&KeyPath::of(&["routes", &route.name])).line
            ),
        ));
    }
    if !(a.path.starts_with('/') || a.path.starts_with("=/")) {
        return Err(section.error(
            "path",
            format!(
                "invalid path {:?}: must start with \"/\" (prefix) or \"=/\" (exact)",
                a.path
            ),
        ));
    }
    super::bff::reachable(&a.path, &at.key("path"), refs.bff, src)?;
    let methods = match &a.methods {
        None => DEFAULT_METHODS.iter().map(|m| m.to_string()).collect(),
        Some(list) => methods(list, &at.key("methods"), src)?,
    };
    let auth = match &a.auth {
        None => None,
        Some(wanted) => Some(super::policy::auth_ref(
            wanted,
            &at.key("auth"),
            refs.auth,
            src,
        )?),
    };
    let rate_limits = match &a.rate_limits {
        None => Vec::new(),
        Some(names) => {
            super::policy::rate_limit_refs(names, &at.key("rate_limits"), refs.rate_limits, src)?
        }
    };
    let client = match &a.client {
        None => None,
        Some(name) => Some(super::bff::client_ref(
            name,
            &at.key("client"),
            refs.bff,
            src,
        )?),
    };
    super::bff::route_checks(
        &at,
        &[],
        auth,
        &rate_limits,
        client,
        refs.bff,
        refs.auth,
        refs.rate_limits,
        src,
    )?;
    let timeout = section.timeout("timeout", a.timeout, DEFAULT_TIMEOUT)?;
    let budget = section
        .size("max_body", a.max_body, 1)?
        .unwrap_or(DEFAULT_BUDGET.max(refs.limits.max_body));
    let shape = program(src, &at.key("shape"), a.shape.as_deref())?;

    if a.calls.0.is_empty() {
        return Err(section.error("calls", "an aggregate needs at least one call"));
    }
    let mut specs = Vec::new();
    let mut upstream_of = Vec::new();
    let mut programs = Vec::new();
    for (call_name, call) in a.calls.iter() {
        let here = at.key("calls").key(call_name);
        let s = Section::new(src, &here);
        let upstream = refs
            .upstreams
            .iter()
            .position(|u| u.name == call.upstream)
            .ok_or_else(|| {
                s.error(
                    "upstream",
                    format!(
                        "no upstream named {:?}{}",
                        call.upstream,
                        suggestion(
                            &call.upstream,
                            refs.upstreams.iter().map(|u| u.name.as_str())
                        )
                    ),
                )
            })?;
        let call_timeout = s.positive("timeout", call.timeout)?;
        if let Some(t) = call_timeout.filter(|&t| t > timeout) {
            return Err(s.error(
                "timeout",
                format!(
                    "{} is longer than the aggregate's timeout ({}): the aggregate's deadline would always cut it first",
                    format_duration(t),
                    format_duration(timeout)
                ),
            ));
        }
        for (key, value) in [
            ("max_items", call.max_items),
            ("concurrency", call.concurrency),
        ] {
            if value.is_some() && call.foreach.is_none() {
                return Err(src.key_error(&here.key(key), "only valid with foreach"));
            }
            s.nonzero(key, value)?;
        }
        if let Some(source) = &call.foreach {
            foreach(src, &here.key("foreach"), source, call_name, a)?;
        }
        let default = match &call.default {
            None => None,
            Some(v) => Some(json_of(v).map_err(|m| s.error("default", m))?),
        };
        let select = program(src, &here.key("select"), call.select.as_deref())?;
        let when = program(src, &here.key("when"), call.when.as_deref())?;
        specs.push(CallSpec {
            name: call_name.to_string(),
            upstream: call.upstream.clone(),
            path: call.path.clone(),
            required: call.required.unwrap_or(false),
            timeout: call_timeout,
            default,
            select: call.select.clone(),
            foreach: call.foreach.clone(),
            max_items: call
                .foreach
                .as_ref()
                .map(|_| call.max_items.unwrap_or(DEFAULT_MAX_ITEMS)),
            concurrency: call
                .foreach
                .as_ref()
                .map(|_| call.concurrency.unwrap_or(DEFAULT_CONCURRENCY)),
            when: call.when.clone(),
        });
        upstream_of.push(upstream);
        programs.push((select, when));
    }
    let spec = AggregateSpec {
        name: name.to_string(),
        timeout,
        calls: specs,
    };
    let plan = Plan::compile(&spec).map_err(|e| plan_error(&at, &e, src))?;
    let calls = plan
        .calls
        .iter()
        .map(|c| {
            let f = c.file_index;
            let upstream = upstream_of[f];
            CallRun {
                upstream,
                fallback_host: refs.upstreams[upstream].endpoints[0].authority.clone(),
                select: programs[f].0.clone(),
                when: programs[f].1.clone(),
            }
        })
        .collect();
    let first_upstream = upstream_of[plan.calls[0].file_index];
    let route = model::Route {
        name: name.to_string(),
        paths: vec![a.path.clone()],
        methods: Some(methods),
        hosts: None,
        headers: Vec::new(),
        upstream: first_upstream,
        split: Vec::new(),
        sticky: None,
        strip_prefix: false,
        rewrite: None,
        timeout: None,
        auth,
        rate_limits,
        cache: None,
        location: src.location_of(&at),
        client,
        aggregate: None,
        transform: None,
        websocket: false,
    };
    let compiled = Compiled {
        plan,
        calls,
        shape,
        max_body: usize::try_from(refs.limits.max_body).unwrap_or(usize::MAX),
        budget: usize::try_from(budget).unwrap_or(usize::MAX),
    };
    Ok((route, compiled))
}

/// A `foreach` source: a path whose head is another call of the aggregate.
fn foreach(
    src: &Source,
    at: &KeyPath,
    source: &str,
    call: &str,
    a: &file::Aggregate,
) -> Result<(), ConfigError> {
    // The same characters as a call name, since the head is one (placeholders name calls).
    let name_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if source
        .split('.')
        .any(|part| part.is_empty() || !part.bytes().all(name_char))
    {
        return Err(src.error(
            at,
            format!("invalid foreach {source:?}: expected a path like \"call.field\" (A-Z a-z 0-9 _ - between dots)"),
        ));
    }
    let head = source.split('.').next().unwrap_or_default();
    if head == call {
        return Err(src.error(
            at,
            format!("invalid foreach {source:?}: a call cannot iterate over its own result"),
        ));
    }
    if !a.calls.names().any(|other| other == head) {
        let others = a.calls.names().filter(|other| *other != call);
        return Err(src.error(
            at,
            format!("no call named {head:?}{}", suggestion(head, others)),
        ));
    }
    Ok(())
}

/// A jq program compiled, or the error at its key naming the byte in the program.
fn program(src: &Source, at: &KeyPath, text: Option<&str>) -> Result<Option<Program>, ConfigError> {
    let Some(text) = text else { return Ok(None) };
    if text.trim().is_empty() {
        return Err(src.error(at, "empty jq program"));
    }
    Program::compile(text, &[]).map(Some).map_err(|e| {
        src.error(
            at,
            format!(
                "jq program does not compile at byte {}: {}",
                e.offset, e.message
            ),
        )
    })
}

/// A plan error at the key it is about.
fn plan_error(at: &KeyPath, e: &PlanError, src: &Source) -> ConfigError {
    let call = |name: &str| at.key("calls").key(name);
    let (path, message) = match e {
        PlanError::NoCalls { .. } | PlanError::TooManyCalls { .. } => {
            (at.key("calls"), e.to_string())
        }
        PlanError::ZeroTimeout { .. } => (at.key("timeout"), e.to_string()),
        PlanError::BadCallName {
            call: c, reason, ..
        } => return src.key_error(&call(c), format!("invalid call name {c:?}: {reason}")),
        PlanError::DuplicateCall { call: c, .. } => (call(c), e.to_string()),
        PlanError::BadField {
            call: c,
            field,
            reason,
            ..
        } => (call(c).key(field), reason.clone()),
        PlanError::Placeholder {
            call: c,
            pos,
            reason,
            ..
        } => (call(c).key("path"), format!("byte {pos}: {reason}")),
        PlanError::When {
            call: c,
            pos,
            reason,
            ..
        } => (call(c).key("when"), format!("byte {pos}: {reason}")),
        PlanError::UnknownCall {
            call: c,
            field,
            reference,
            ..
        } => (
            call(c).key(field),
            format!("{reference:?} is not a call of this aggregate"),
        ),
        PlanError::Cycle { cycle, .. } => {
            let first = cycle.split(" -> ").next().unwrap_or_default();
            (call(first), format!("dependency cycle {cycle}"))
        }
    };
    src.error(&path, message)
}

/// A TOML value as JSON (a `default`). Dates and times become their RFC 3339 text.
fn json_of(v: &toml::Value) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} has no JSON form (NaN and infinities do not)"))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => {
            Value::Array(items.iter().map(json_of).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), json_of(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}
