//! `[transforms.*]` and a route's `transform`, from what was written to [`model::Transform`]:
//! the jq programs compiled here (a program that does not compile is an error at the failing
//! token inside the program, `file:line:col`), header edits lowercased and checked against the
//! fields the gateway owns, and the combinations that could never work refused.
//!
//! The one thing to know: a transform may not set or remove a field the gateway decides
//! itself: framing (`Content-Length`, `Transfer-Encoding`), hop-by-hop fields (RFC 9110
//! §7.6.1), `Host`, the forwarding fields, the request id, the trace context, the identity
//! headers an auth policy sets, and the response phases' fields. Editing them would break
//! framing or forge what the gateway vouches for; they are refused at load.

use super::error::ConfigError;
use super::file::{self, Named};
use super::model;
use super::source::{KeyPath, Source};
use super::validate::{header_name, header_value, suggestion};
use crate::compose::jq::Program;

/// The global variables every transform program may read, in the order they are bound.
pub const VARS: [&str; 1] = ["now"];

/// Request fields the gateway writes itself (beyond the hop-by-hop set).
const REQUEST_OWNED: [&str; 10] = [
    "host",
    "content-length",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "via",
    "traceparent",
    "expect",
    "max-forwards",
];

/// Response fields the gateway writes itself (beyond the hop-by-hop set): framing, `Via`, and
/// what the response phases add.
const RESPONSE_OWNED: [&str; 8] = [
    "content-length",
    "via",
    "x-request-id",
    "x-cache",
    "age",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

/// `[transforms.*]` in file order. `identity` are the header names auth policies set.
pub(super) fn transforms(
    written: &Option<Named<file::Transform>>,
    identity: &[String],
    src: &Source,
) -> Result<Vec<model::Transform>, ConfigError> {
    written
        .iter()
        .flat_map(|t| t.iter())
        .map(|(name, t)| transform(name, t, identity, src))
        .collect()
}

fn transform(
    name: &str,
    t: &file::Transform,
    identity: &[String],
    src: &Source,
) -> Result<model::Transform, ConfigError> {
    let at = KeyPath::of(&["transforms", name]);
    let request = program(name, "request", t.request.as_deref(), &at, src)?;
    let response = program(name, "response", t.response.as_deref(), &at, src)?;
    let request_headers = edits(
        &t.request_headers,
        &at.key("request_headers"),
        Side::Request {
            has_program: request.is_some(),
        },
        identity,
        src,
    )?;
    let response_headers = edits(
        &t.response_headers,
        &at.key("response_headers"),
        Side::Response {
            has_program: response.is_some(),
        },
        identity,
        src,
    )?;
    Ok(model::Transform {
        name: name.to_string(),
        request,
        response,
        request_headers,
        response_headers,
        location: src.location_of(&at),
    })
}

/// A program compiled with `$now`; an error is located inside the program's text.
fn program(
    name: &str,
    key: &str,
    text: Option<&str>,
    at: &KeyPath,
    src: &Source,
) -> Result<Option<Program>, ConfigError> {
    let Some(text) = text else { return Ok(None) };
    let here = at.key(key);
    if text.trim().is_empty() {
        return Err(src.error(&here, "empty jq program"));
    }
    Program::compile(text, &VARS).map(Some).map_err(|e| {
        src.error_in_string(
            &here,
            e.offset,
            format!(
                "transform {name:?}: the {key} program does not compile: {}",
                e.message
            ),
        )
    })
}

#[derive(Clone, Copy)]
enum Side {
    Request { has_program: bool },
    Response { has_program: bool },
}

fn edits(
    written: &Option<file::HeaderEdits>,
    at: &KeyPath,
    side: Side,
    identity: &[String],
    src: &Source,
) -> Result<model::HeaderEdits, ConfigError> {
    let Some(e) = written else {
        return Ok(model::HeaderEdits::default());
    };
    let mut out = model::HeaderEdits::default();
    for (name, value) in e.set.iter().flat_map(|s| s.iter()) {
        let here = at.key("set").key(name);
        let lower = header_name(name).map_err(|m| src.key_error(&here, m))?;
        header_value(value).map_err(|m| src.error(&here, m))?;
        owned(&lower, side, identity).map_err(|m| src.key_error(&here, m))?;
        out.set.push((lower, value.clone()));
    }
    for (i, name) in e.remove.iter().flatten().enumerate() {
        let here = at.key("remove").index(i);
        let lower = header_name(name).map_err(|m| src.error(&here, m))?;
        owned(&lower, side, identity).map_err(|m| src.error(&here, m))?;
        if out.set.iter().any(|(set, _)| *set == lower) {
            return Err(src.error(
                &here,
                format!("{name:?} is both set and removed: set already replaces it"),
            ));
        }
        if !out.remove.contains(&lower) {
            out.remove.push(lower);
        }
    }
    Ok(out)
}

/// Why a transform may not edit `name` (lowercase), if it may not.
fn owned(name: &str, side: Side, identity: &[String]) -> Result<(), String> {
    if crate::http::is_hop_by_hop(name) {
        return Err(format!(
            "{name:?} is a hop-by-hop field (RFC 9110 §7.6.1): the gateway sets it per connection"
        ));
    }
    let (owned, has_program, what) = match side {
        Side::Request { has_program } => (&REQUEST_OWNED[..], has_program, "request"),
        Side::Response { has_program } => (&RESPONSE_OWNED[..], has_program, "response"),
    };
    if owned.contains(&name) {
        return Err(format!(
            "{name:?} is written by the gateway on every {what}: a transform cannot edit it"
        ));
    }
    if matches!(side, Side::Request { .. }) && identity.iter().any(|i| i == name) {
        return Err(format!(
            "{name:?} is an identity header an auth policy sets: only a verified credential may set it"
        ));
    }
    if has_program && (name == "content-type" || name == "content-encoding") {
        return Err(format!(
            "{name:?} is decided by the {what} program (its output is identity-encoded application/json)"
        ));
    }
    Ok(())
}

/// A route's `transform = "NAME"` as an index; refuses what can never work on the route.
pub(super) fn route_ref(
    name: &str,
    at: &KeyPath,
    route: &file::Route,
    transforms: &[model::Transform],
    cache: Option<model::CacheRuleId>,
    src: &Source,
) -> Result<model::TransformId, ConfigError> {
    let id = transforms
        .iter()
        .position(|t| t.name == name)
        .ok_or_else(|| {
            src.error(
                at,
                format!(
                    "no transform named {name:?}{}",
                    suggestion(name, transforms.iter().map(|t| t.name.as_str()))
                ),
            )
        })?;
    let t = &transforms[id];
    if route.websocket == Some(true) {
        return Err(src.error(
            at,
            "cannot be combined with websocket = true: after the upgrade the connection carries frames, not JSON bodies",
        ));
    }
    // A hit is answered from the stored response before the proxy stage: it would skip the
    // response side, or store the upstream's body under a route whose clients get another.
    if cache.is_some() && (t.response.is_some() || !t.response_headers.is_empty()) {
        return Err(src.error(
            at,
            format!(
                "transform {name:?} changes responses and the route has `cache`: cache hits skip the transform, so refused; cache the upstream route the transformed one calls, or drop one of the two"
            ),
        ));
    }
    Ok(id)
}
