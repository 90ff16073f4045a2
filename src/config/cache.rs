//! `[cache]`, `[cache.rules.*]` and a route's `cache`, from what was written to
//! [`model::Cache`]: sizes and their defaults, times in whole seconds (HTTP ages are whole
//! seconds, RFC 9111 §1.2.2), `vary` header names, `invalidate_on` patterns, and the
//! reference from a route to its rule.
//!
//! A rule with `per_user = true` keys its entries on the authenticated subject; a route
//! without `auth` has none, so one client's entry would answer another: refused here.

use super::error::ConfigError;
use super::file;
use super::model;
use super::source::{KeyPath, Source};
use super::units::Duration;
use super::validate::{header_name, is_token, suggestion, Section};

/// `max_bytes_per_worker` when not written.
pub const DEFAULT_MAX_BYTES_PER_WORKER: u64 = 64 * 1024 * 1024;
/// `max_object` when not written.
pub const DEFAULT_MAX_OBJECT: u64 = 1024 * 1024;

/// The `[cache]` section, `None` without one.
pub(super) fn cache(
    written: &Option<file::Cache>,
    src: &Source,
) -> Result<Option<model::Cache>, ConfigError> {
    let Some(c) = written else { return Ok(None) };
    let at = KeyPath::of(&["cache"]);
    let section = Section::new(src, &at);
    let max_bytes_per_worker = section
        .size("max_bytes_per_worker", c.max_bytes_per_worker, 1)?
        .unwrap_or(DEFAULT_MAX_BYTES_PER_WORKER);
    let max_object = section
        .size("max_object", c.max_object, 1)?
        .unwrap_or(DEFAULT_MAX_OBJECT);
    if max_object > max_bytes_per_worker {
        let key = if c.max_object.is_some() {
            "max_object"
        } else {
            "max_bytes_per_worker"
        };
        return Err(section.error(
            key,
            "max_object must not exceed max_bytes_per_worker: such an object could never be stored",
        ));
    }
    let rules = c
        .rules
        .iter()
        .map(|(name, r)| rule(name, r, src))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(model::Cache {
        max_bytes_per_worker,
        max_object,
        rules,
    }))
}

fn rule(name: &str, r: &file::CacheRule, src: &Source) -> Result<model::CacheRule, ConfigError> {
    let at = KeyPath::of(&["cache", "rules", name]);
    let mut vary: Vec<String> = Vec::new();
    for (i, header) in r.vary.iter().flatten().enumerate() {
        let lower = header_name(header).map_err(|m| src.error(&at.key("vary").index(i), m))?;
        if !vary.contains(&lower) {
            vary.push(lower);
        }
    }
    let invalidate_on = r
        .invalidate_on
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, text)| {
            invalidation(text).map_err(|m| src.error(&at.key("invalidate_on").index(i), m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(model::CacheRule {
        name: name.to_string(),
        ttl: seconds(src, &at, "ttl", r.ttl, false)?,
        stale_while_revalidate: seconds(
            src,
            &at,
            "stale_while_revalidate",
            r.stale_while_revalidate,
            true,
        )?,
        stale_if_error: seconds(src, &at, "stale_if_error", r.stale_if_error, true)?,
        vary,
        invalidate_on,
        per_user: r.per_user.unwrap_or(false),
        location: src.location_of(&at),
    })
}

/// A time of a rule in whole seconds (0 when not written).
fn seconds(
    src: &Source,
    table: &KeyPath,
    key: &str,
    value: Option<Duration>,
    zero_ok: bool,
) -> Result<u64, ConfigError> {
    let Some(Duration(d)) = value else {
        return Ok(0);
    };
    if d.is_zero() && !zero_ok {
        return Err(src.error(&table.key(key), "must be greater than zero"));
    }
    if d.subsec_nanos() != 0 {
        return Err(src.error(
            &table.key(key),
            "must be a whole number of seconds (HTTP cache ages are counted in seconds)",
        ));
    }
    Ok(d.as_secs())
}

/// `"METHOD /path"`: a method token and a path pattern whose segments are literal, `:name`
/// (one segment) or, last, `*` (anything below, nothing included).
fn invalidation(text: &str) -> Result<model::Invalidation, String> {
    let expected = || format!("invalid request {text:?}: expected \"METHOD /path\"");
    let (method, path) = text.split_once(' ').ok_or_else(expected)?;
    if !is_token(method) || !path.starts_with('/') {
        return Err(expected());
    }
    let raw: Vec<&str> = path[1..].split('/').collect();
    let mut segments = Vec::with_capacity(raw.len());
    for (i, seg) in raw.iter().enumerate() {
        let last = i + 1 == raw.len();
        segments.push(match *seg {
            "*" if last => model::PathSeg::Rest,
            "*" => {
                return Err(format!(
                    "invalid path in {text:?}: `*` may only end the path"
                ))
            }
            s if s.starts_with(':') && s.len() > 1 => model::PathSeg::Param,
            s if s
                .bytes()
                .any(|b| b <= b' ' || b == b'?' || b == b'#' || b == 0x7f) =>
            {
                return Err(format!("invalid path in {text:?}"))
            }
            s => model::PathSeg::Literal(s.to_string()),
        });
    }
    // "/" alone is one empty literal segment: it matches only "/".
    Ok(model::Invalidation {
        method: method.to_ascii_uppercase(),
        segments,
        text: text.to_string(),
    })
}

/// A route's `cache = "NAME"` as an index into the rules; a `per_user` rule needs an auth
/// every request on the route passes (`route_auth`: the route's own, or its client's).
pub(super) fn rule_ref(
    name: &str,
    at: &KeyPath,
    cache: Option<&model::Cache>,
    route_auth: Option<model::AuthId>,
    src: &Source,
) -> Result<model::CacheRuleId, ConfigError> {
    let rules = cache.map_or(&[][..], |c| &c.rules[..]);
    let id = rules.iter().position(|r| r.name == name).ok_or_else(|| {
        src.error(
            at,
            format!(
                "no cache rule named {name:?}{}",
                suggestion(name, rules.iter().map(|r| r.name.as_str()))
            ),
        )
    })?;
    if rules[id].per_user && route_auth.is_none() {
        return Err(src.error(
            at,
            format!(
                "cache rule {name:?} is per_user: the route needs `auth` (without an authenticated subject one client's entry would answer another)"
            ),
        ));
    }
    Ok(id)
}
