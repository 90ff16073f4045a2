//! `[bff]`, `[bff.clients.*]` and a route's `client`: backend-for-frontend client profiles,
//! from what was written to [`model::Bff`] (the request phase is `compose::bff`).
//!
//! Refused at load, each at its key:
//! - a client that no request could belong to: no `prefix` and no `bff.header`;
//! - a prefix that is not a clean path (request paths are normalised before the phase compares
//!   them, so a trailing `/`, an empty, `.` or `..` segment, or an escape in another form than
//!   the normalised one could never match), or that looks like route pattern syntax (`:`,
//!   `*`, a leading `=`), or `/` alone (it would claim every request);
//! - two clients with the same or nested prefixes (`/m` and `/m/x`): a request under both
//!   would belong to either;
//! - `bff.header` naming a field the gateway reads, removes or replaces (hop-by-hop fields,
//!   `Host`, `X-Request-Id`, `traceparent`, `X-Forwarded-*`, ...) or an identity header
//!   (removed from every request before any phase reads it);
//! - a route `client` that names no client (with a suggestion), or any `client` without a
//!   `[bff]` section.
//!
//! A client's `auth` and `rate_limits` are defaults: a route's own `auth` wins, and a route's
//! own `rate_limits` list replaces the client's (not merged). The checks that tie a route's
//! policies together ([`super::policy::limit_checks`], cache `per_user`) run on what a request
//! is actually held to. A route with `client` is reached only by that client's requests: it
//! is checked with that client's defaults. A route without `client` is reached by requests of
//! every client and by requests of none, so it is checked conservatively: its own policies
//! must stand alone (a request of no client gets only those), and with each client's defaults
//! filled in; a `per_user` cache rule on it needs the route's own `auth`.

use super::error::ConfigError;
use super::file;
use super::model;
use super::policy::{auth_ref, header_checks, identity_owner, limit_checks, rate_limit_refs};
use super::source::{KeyPath, Source};
use super::validate::{header_name, header_value, suggestion};

/// Request fields the gateway reads, removes or writes itself before forwarding (RFC 9110 §7.6.1
/// hop-by-hop fields, `Host`, framing, and the fields of BEHAVIOR.md "Proxying"): a client
/// named in one would be named by a field whose meaning belongs to the gateway.
const GATEWAY_FIELDS: [&str; 17] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    "via",
    "max-forwards",
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// `[bff]`, its references resolved into `auth` and `limits`.
pub(super) fn bff(
    written: Option<&file::Bff>,
    auth: &[model::AuthPolicy],
    limits: &[model::RateLimit],
    src: &Source,
) -> Result<Option<model::Bff>, ConfigError> {
    let Some(b) = written else {
        return Ok(None);
    };
    let at = KeyPath::of(&["bff"]);
    let header = match &b.header {
        None => None,
        Some(name) => Some(client_header(name, &at.key("header"), auth, src)?),
    };
    if b.clients.0.is_empty() {
        return Err(src.error(
            &at,
            "defines no client: add a [bff.clients.NAME] table, or remove [bff]",
        ));
    }
    let mut clients: Vec<model::BffClient> = Vec::with_capacity(b.clients.0.len());
    for (name, c) in b.clients.iter() {
        let here = at.key("clients").key(name);
        if let Some(header) = &header {
            // The header's value is compared with the name exactly.
            header_value(name).map_err(|m| {
                src.key_error(
                    &here,
                    format!("{m}: a client name is the value {header} carries"),
                )
            })?;
        }
        let prefix = match &c.prefix {
            None if header.is_none() => {
                return Err(src.error(
                    &here,
                    "needs a prefix: without one (and without bff.header) no request can belong to this client",
                ))
            }
            None => None,
            Some(p) => {
                let path = here.key("prefix");
                clean_prefix(p).map_err(|m| src.error(&path, m))?;
                let clash = clients.iter().find_map(|other| {
                    other
                        .prefix
                        .as_deref()
                        .filter(|o| nested(o, p))
                        .map(|o| (other, o))
                });
                if let Some((other, o)) = clash {
                    let how = if o == p { "the same prefix as" } else { "nested with" };
                    return Err(src.error(
                        &path,
                        format!(
                            "prefix {p:?} is {how} bff.clients.{}'s {o:?}: a request under both would belong to either",
                            other.name
                        ),
                    ));
                }
                Some(p.clone())
            }
        };
        let client_auth = match &c.auth {
            None => None,
            Some(wanted) => Some(auth_ref(wanted, &here.key("auth"), auth, src)?),
        };
        let rate_limits = match &c.rate_limits {
            None => Vec::new(),
            Some(names) => rate_limit_refs(names, &here.key("rate_limits"), limits, src)?,
        };
        clients.push(model::BffClient {
            name: name.to_string(),
            prefix,
            auth: client_auth,
            rate_limits,
            location: src.location_of(&here),
        });
    }
    Ok(Some(model::Bff { header, clients }))
}

/// `bff.header`, lower-cased: a header name the gateway leaves to the client.
fn client_header(
    name: &str,
    at: &KeyPath,
    auth: &[model::AuthPolicy],
    src: &Source,
) -> Result<String, ConfigError> {
    let lower = header_name(name).map_err(|m| src.error(at, m))?;
    if GATEWAY_FIELDS.contains(&lower.as_str()) {
        return Err(src.error(
            at,
            format!("{name:?} is a field the gateway reads, removes or sets itself: choose a header of your own, such as \"x-client-type\""),
        ));
    }
    if let Some(owner) = identity_owner(auth, &lower) {
        return Err(src.error(
            at,
            format!("{name:?} is an identity header (auth.{owner} forwards it): it is removed from every request before routing, so no client could be named in it"),
        ));
    }
    Ok(lower)
}

/// A prefix the normalised request path can start with (see the module doc).
fn clean_prefix(text: &str) -> Result<(), String> {
    let invalid = |why: &str| Err(format!("invalid prefix {text:?}: {why}"));
    if text.starts_with("=/") {
        return invalid("\"=\" marks an exact route path; a prefix matches on segment boundaries, write it without \"=\"");
    }
    if !text.starts_with('/') {
        return invalid("must start with \"/\"");
    }
    if text == "/" {
        return invalid("\"/\" would claim every request; use a path such as \"/mobile/v1\"");
    }
    if text.ends_with('/') {
        return invalid(&format!(
            "no trailing \"/\": write {:?} (a prefix matches on segment boundaries)",
            text.trim_end_matches('/')
        ));
    }
    for segment in text[1..].split('/') {
        match segment {
            "" => {
                return invalid(
                    "empty segment (\"//\"): request paths are normalised, so it could never match",
                )
            }
            "." | ".." => return invalid(
                "\".\" and \"..\" segments are resolved in request paths, so it could never match",
            ),
            _ => {}
        }
        let bytes = segment.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match b {
                b':' | b'*' => {
                    return invalid(
                        "':' and '*' are route pattern syntax; a prefix is a literal path",
                    )
                }
                b'%' => {
                    let escape = bytes.get(i + 1..i + 3).filter(|h| {
                        h.iter()
                            .all(|&d| d.is_ascii_digit() || (b'A'..=b'F').contains(&d))
                    });
                    let Some(hex) = escape else {
                        return invalid("write escapes as '%' and two upper-case hex digits, as request paths are normalised");
                    };
                    let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("00"), 16)
                        .unwrap_or(0);
                    if is_unreserved(value) {
                        return invalid(&format!(
                            "request paths are normalised: write {:?} for %{}",
                            value as char,
                            std::str::from_utf8(hex).unwrap_or("")
                        ));
                    }
                    i += 3;
                    continue;
                }
                // RFC 3986 §3.3 pchar: unreserved, sub-delims and '@' ('%' and ':' above).
                _ if is_unreserved(b) || b"!$&'()+,;=@".contains(&b) => {}
                _ => {
                    return invalid(&format!(
                        "{:?} is not allowed in a path (RFC 3986 §3.3)",
                        b as char
                    ))
                }
            }
            i += 1;
        }
    }
    Ok(())
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether one prefix equals the other or lies under it on a segment boundary.
fn nested(a: &str, b: &str) -> bool {
    let under = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under(a, b) || under(b, a)
}

/// Refuses a route path under a client's prefix: the prefix is removed from every request
/// under it before routing, so such a path could only be reached by a request that repeats
/// the prefix (`/mobile/v1/mobile/v1/...`). Only the literal segments before the first
/// `:name` or `*` are compared: `/mobile/:v` is reachable beside a `/mobile/v1` prefix.
pub(super) fn reachable(
    path: &str,
    at: &KeyPath,
    bff: Option<&model::Bff>,
    src: &Source,
) -> Result<(), ConfigError> {
    let pattern = path.strip_prefix('=').unwrap_or(path);
    let literal_end = pattern
        .match_indices('/')
        .map(|(i, _)| i)
        .find(|&i| matches!(pattern.as_bytes().get(i + 1), Some(b':' | b'*')))
        .unwrap_or(pattern.len());
    let literal = pattern[..literal_end].trim_end_matches('/');
    let clients = bff.iter().flat_map(|b| b.clients.iter());
    for c in clients {
        let Some(prefix) = c.prefix.as_deref() else {
            continue;
        };
        let under = literal
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if under {
            return Err(src.error(
                at,
                format!(
                    "{path:?} is under bff.clients.{}'s prefix {prefix:?}, which is removed before routing: no request can reach it; write the path without the prefix (and client = {:?} to keep it that client's)",
                    c.name, c.name
                ),
            ));
        }
    }
    Ok(())
}

/// A route's `client = "NAME"` as an index into the clients.
pub(super) fn client_ref(
    name: &str,
    at: &KeyPath,
    bff: Option<&model::Bff>,
    src: &Source,
) -> Result<model::ClientId, ConfigError> {
    let Some(bff) = bff else {
        return Err(src.error(
            at,
            format!("no bff client named {name:?}: the config has no [bff] section"),
        ));
    };
    bff.client(name).ok_or_else(|| {
        src.error(
            at,
            format!(
                "no bff client named {name:?}{}",
                suggestion(name, bff.clients.iter().map(|c| c.name.as_str()))
            ),
        )
    })
}

/// A route's policies checked against each other as each request reaching it is held to them
/// (see the module doc): its own alone unless it has `client`, and with the defaults of every
/// client that can reach it.
#[allow(clippy::too_many_arguments)] // the route's parts and the tables they index
pub(super) fn route_checks(
    at: &KeyPath,
    headers: &[(String, String)],
    auth: Option<model::AuthId>,
    rate_limits: &[model::RateLimitId],
    client: Option<model::ClientId>,
    bff: Option<&model::Bff>,
    policies: &[model::AuthPolicy],
    limits: &[model::RateLimit],
    src: &Source,
) -> Result<(), ConfigError> {
    header_checks(at, headers, policies, src)?;
    if client.is_none() {
        limit_checks(
            &at.key("rate_limits"),
            auth,
            rate_limits,
            policies,
            limits,
            src,
            "on the route",
        )?;
    }
    let Some(bff) = bff else {
        return Ok(());
    };
    for (id, c) in bff.clients.iter().enumerate() {
        if client.is_some_and(|only| only != id) {
            continue;
        }
        let (limits_at, list) = if rate_limits.is_empty() {
            (
                KeyPath::of(&["bff", "clients", &c.name, "rate_limits"]),
                &c.rate_limits[..],
            )
        } else {
            (at.key("rate_limits"), rate_limits)
        };
        let on = format!(
            "on {at} for client {:?}'s requests (the route's auth, else the client's)",
            c.name
        );
        limit_checks(
            &limits_at,
            auth.or(c.auth),
            list,
            policies,
            limits,
            src,
            &on,
        )?;
    }
    Ok(())
}

/// The auth a `per_user` cache rule on the route can count on for every request: the
/// route's own, or with `client` that client's when the route has none.
pub(super) fn sure_auth(
    auth: Option<model::AuthId>,
    client: Option<model::ClientId>,
    bff: Option<&model::Bff>,
) -> Option<model::AuthId> {
    auth.or_else(|| {
        bff.zip(client)
            .and_then(|(b, c)| b.clients.get(c))
            .and_then(|c| c.auth)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_must_be_clean_normalised_paths() {
        for (text, expected) in [
            ("/mobile/v1", Ok(())),
            ("/m", Ok(())),
            ("/a%2Fb/v~1", Ok(())),
            ("/a=b@c", Ok(())),
            ("mobile", Err("invalid prefix \"mobile\": must start with \"/\"")),
            ("=/mobile", Err("invalid prefix \"=/mobile\": \"=\" marks an exact route path; a prefix matches on segment boundaries, write it without \"=\"")),
            ("/", Err("invalid prefix \"/\": \"/\" would claim every request; use a path such as \"/mobile/v1\"")),
            ("/mobile/", Err("invalid prefix \"/mobile/\": no trailing \"/\": write \"/mobile\" (a prefix matches on segment boundaries)")),
            ("/a//b", Err("invalid prefix \"/a//b\": empty segment (\"//\"): request paths are normalised, so it could never match")),
            ("/a/../b", Err("invalid prefix \"/a/../b\": \".\" and \"..\" segments are resolved in request paths, so it could never match")),
            ("/a/:v", Err("invalid prefix \"/a/:v\": ':' and '*' are route pattern syntax; a prefix is a literal path")),
            ("/a/*", Err("invalid prefix \"/a/*\": ':' and '*' are route pattern syntax; a prefix is a literal path")),
            ("/a%2fb", Err("invalid prefix \"/a%2fb\": write escapes as '%' and two upper-case hex digits, as request paths are normalised")),
            ("/a%4", Err("invalid prefix \"/a%4\": write escapes as '%' and two upper-case hex digits, as request paths are normalised")),
            ("/%61pp", Err("invalid prefix \"/%61pp\": request paths are normalised: write 'a' for %61")),
            ("/a b", Err("invalid prefix \"/a b\": ' ' is not allowed in a path (RFC 3986 §3.3)")),
            ("/a?x", Err("invalid prefix \"/a?x\": '?' is not allowed in a path (RFC 3986 §3.3)")),
        ] {
            assert_eq!(clean_prefix(text), expected.map_err(str::to_string), "{text}");
        }
    }

    #[test]
    fn prefixes_nest_on_segment_boundaries_only() {
        assert!(nested("/m", "/m"));
        assert!(nested("/m", "/m/x"));
        assert!(nested("/m/x", "/m"));
        assert!(!nested("/m", "/mx"));
        assert!(!nested("/mobile/v1", "/mobile/v2"));
    }
}
