//! `[auth.*]` and `[rate_limits.*]`, from what was written to [`model::AuthPolicy`] and
//! [`model::RateLimit`]: the keys each type or algorithm allows, references, header names,
//! rate-limit keys, and paths resolved against the config file's directory.
//!
//! What needs more than the file (reading key files and `secret_env`, the limits an algorithm
//! can hold) is the policy layer's: `policy::compile` runs right after this load and reports
//! at the locations kept here. Config never imports the layers that read it.

use std::path::Path;

use super::error::ConfigError;
use super::file::{self, AuthKind, JwtAlgorithm, Named, RateAlgorithm};
use super::model;
use super::source::{KeyPath, Source};
use super::validate::{header_name, is_token, suggestion, Section};

/// Every `[auth.*]` policy, in file order.
pub(super) fn auth_policies(
    table: &Option<Named<file::AuthPolicy>>,
    src: &Source,
) -> Result<Vec<model::AuthPolicy>, ConfigError> {
    let policies: Vec<model::AuthPolicy> = table
        .iter()
        .flat_map(|t| t.iter())
        .map(|(name, p)| auth(name, p, src))
        .collect::<Result<_, _>>()?;
    // Identity headers are removed from every request before any phase reads them: a key
    // read from one could never be presented.
    for p in &policies {
        if let model::AuthKind::ApiKey(model::ApiKey {
            from: model::ApiKeyFrom::Header(header),
            ..
        }) = &p.kind
        {
            if let Some(owner) = identity_owner(&policies, header) {
                return Err(src.error(
                    &KeyPath::of(&["auth", &p.name, "header"]),
                    format!(
                        "{header:?} is an identity header (auth.{owner} forwards it): it is removed from every request, so no key could be read from it"
                    ),
                ));
            }
        }
    }
    Ok(policies)
}

/// The policy that forwards identity header `name` (lower-case), if any.
pub(super) fn identity_owner<'p>(policies: &'p [model::AuthPolicy], name: &str) -> Option<&'p str> {
    policies
        .iter()
        .find(|p| p.forward.iter().any(|(_, h)| h.eq_ignore_ascii_case(name)))
        .map(|p| p.name.as_str())
}

/// A header predicate cannot name an identity header (removed before routing).
pub(super) fn header_checks(
    at: &KeyPath,
    headers: &[(String, String)],
    policies: &[model::AuthPolicy],
    src: &Source,
) -> Result<(), ConfigError> {
    for (name, _) in headers {
        if let Some(owner) = identity_owner(policies, name) {
            return Err(src.error(
                &at.key("headers").key(name),
                format!(
                    "{name:?} is an identity header (auth.{owner} forwards it): it is removed from every request before routing, so no route can match on it"
                ),
            ));
        }
    }
    Ok(())
}

/// What the limits `rate_limits` (listed at `limits_at`) need of the auth a request passes
/// with them (`on`: where that auth comes from, for the message): a limit keyed (or tiered)
/// on a JWT claim needs a JWT policy, one keyed on `consumer` an API-key policy, one on an
/// identity header a policy that forwards it (else every request would share the key
/// `"<missing>"`). `config::bff::route_checks` runs it on what each request is held to.
pub(super) fn limit_checks(
    limits_at: &KeyPath,
    auth: Option<model::AuthId>,
    rate_limits: &[model::RateLimitId],
    policies: &[model::AuthPolicy],
    limits: &[model::RateLimit],
    src: &Source,
    on: &str,
) -> Result<(), ConfigError> {
    let kind = auth.map(|a| &policies[a].kind);
    for (i, &l) in rate_limits.iter().enumerate() {
        let limit = &limits[l];
        for key in std::iter::once(&limit.key).chain(limit.tier.as_ref()) {
            let forwards =
                |h: &str| auth.is_some_and(|a| policies[a].forward.iter().any(|(_, f)| f == h));
            let needs = match (key, kind) {
                (model::RateKey::Jwt(_), Some(model::AuthKind::Jwt(_))) => None,
                (model::RateKey::Jwt(_), _) => Some("a jwt auth policy".to_string()),
                (model::RateKey::Consumer, Some(model::AuthKind::ApiKey(_))) => None,
                (model::RateKey::Consumer, _) => Some("an api_key auth policy".to_string()),
                // An identity header reaches a limit only from the route's own policy.
                (model::RateKey::Header(h), _)
                    if identity_owner(policies, h).is_some() && !forwards(h) =>
                {
                    Some(format!("an auth policy that forwards {h}"))
                }
                _ => None,
            };
            if let Some(needs) = needs {
                return Err(src.error(
                    &limits_at.index(i),
                    format!(
                        "rate limit {:?} counts by {key}, which needs {needs} {on}: without it every request would share the key \"<missing>\"",
                        limit.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Every `[rate_limits.*]`, in file order.
pub(super) fn rate_limits(
    table: &Option<Named<file::RateLimit>>,
    src: &Source,
) -> Result<Vec<model::RateLimit>, ConfigError> {
    table
        .iter()
        .flat_map(|t| t.iter())
        .map(|(name, r)| rate_limit(name, r, src))
        .collect()
}

/// A route's `auth` as an index into `policies`.
pub(super) fn auth_ref(
    name: &str,
    at: &KeyPath,
    policies: &[model::AuthPolicy],
    src: &Source,
) -> Result<model::AuthId, ConfigError> {
    policies.iter().position(|p| p.name == name).ok_or_else(|| {
        src.error(
            at,
            format!(
                "no auth policy named {name:?}{}",
                suggestion(name, policies.iter().map(|p| p.name.as_str()))
            ),
        )
    })
}

/// A route's `rate_limits` as indices into `limits`, each named once.
pub(super) fn rate_limit_refs(
    names: &[String],
    at: &KeyPath,
    limits: &[model::RateLimit],
    src: &Source,
) -> Result<Vec<model::RateLimitId>, ConfigError> {
    if names.is_empty() {
        return Err(src.error(
            at,
            "must name at least one rate limit; omit the key for none",
        ));
    }
    let mut ids = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let here = at.index(i);
        let id = limits.iter().position(|l| &l.name == name).ok_or_else(|| {
            src.error(
                &here,
                format!(
                    "no rate limit named {name:?}{}",
                    suggestion(name, limits.iter().map(|l| l.name.as_str()))
                ),
            )
        })?;
        if ids.contains(&id) {
            return Err(src.error(&here, format!("rate limit {name:?} is listed twice")));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn auth(name: &str, p: &file::AuthPolicy, src: &Source) -> Result<model::AuthPolicy, ConfigError> {
    let at = KeyPath::of(&["auth", name]);
    let jwt_only = [
        ("algorithms", p.algorithms.is_some()),
        ("keys", p.keys.is_some()),
        ("secret_env", p.secret_env.is_some()),
        ("issuer", p.issuer.is_some()),
        ("audience", p.audience.is_some()),
        ("leeway", p.leeway.is_some()),
        ("required_claims", p.required_claims.is_some()),
        ("strip_authorization", p.strip_authorization.is_some()),
    ];
    let api_key_only = [
        ("header", p.header.is_some()),
        ("query", p.query.is_some()),
        ("keys_file", p.keys_file.is_some()),
    ];
    let (other, other_type) = match p.kind {
        AuthKind::Jwt => (&api_key_only[..], "api_key"),
        AuthKind::ApiKey => (&jwt_only[..], "jwt"),
    };
    if let Some((key, _)) = other.iter().find(|(_, present)| *present) {
        return Err(src.key_error(
            &at.key(key),
            format!("only valid with type = \"{other_type}\""),
        ));
    }
    let mut forward = Vec::new();
    for (claim, header) in p.forward.iter().flat_map(|f| f.iter()) {
        let here = at.key("forward").key(claim);
        let header = header_name(header).map_err(|m| src.error(&here, m))?;
        if GATEWAY_HEADERS.contains(&header.as_str()) {
            return Err(src.error(
                &here,
                format!(
                    "{header:?} frames, routes or authenticates the request, or is set by the gateway: it cannot carry an identity"
                ),
            ));
        }
        if let AuthKind::ApiKey = p.kind {
            if !["consumer", "plan"].contains(&claim) {
                return Err(src.key_error(
                    &here,
                    format!("an api_key policy forwards \"consumer\" or \"plan\", not {claim:?}"),
                ));
            }
        }
        if forward.iter().any(|(_, h): &(String, String)| *h == header) {
            return Err(src.error(&here, format!("header {header:?} is set twice")));
        }
        forward.push((claim.to_string(), header));
    }
    let (kind, material) = match p.kind {
        AuthKind::Jwt => jwt(p, &at, src)?,
        AuthKind::ApiKey => api_key(p, &at, src)?,
    };
    Ok(model::AuthPolicy {
        name: name.to_string(),
        kind,
        forward,
        location: src.location_of(&at),
        material_location: src.location_of(&at.key(material)),
    })
}

/// A jwt policy and the key naming its key material.
fn jwt(
    p: &file::AuthPolicy,
    at: &KeyPath,
    src: &Source,
) -> Result<(model::AuthKind, &'static str), ConfigError> {
    let algorithms = match &p.algorithms {
        None => return Err(src.error(&at.key("algorithms"), "missing required key")),
        Some(list) if list.is_empty() => {
            return Err(src.error(&at.key("algorithms"), "must list at least one algorithm"))
        }
        Some(list) => {
            let mut names: Vec<String> = Vec::with_capacity(list.len());
            for a in list {
                let name = jwt_algorithm(*a).to_string();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            names
        }
    };
    let (keys, material) = match (&p.keys, &p.secret_env) {
        (Some(path), None) => (model::JwtKeys::File(relative_to(src.path, path)), "keys"),
        (None, Some(var)) => {
            let valid = var.bytes().next().is_some_and(|b| !b.is_ascii_digit())
                && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(src.error(
                    &at.key("secret_env"),
                    format!("invalid environment variable name {var:?}"),
                ));
            }
            (model::JwtKeys::SecretEnv(var.clone()), "secret_env")
        }
        (Some(_), Some(_)) => return Err(src.key_error(
            &at.key("secret_env"),
            "keys and secret_env cannot both be set: keys for RS/PS/ES/EdDSA, secret_env for HS*",
        )),
        (None, None) => {
            return Err(src.error(
                at,
                "a jwt policy needs keys (PEM or JWKS file) or secret_env (HS*)",
            ))
        }
    };
    if let Some(issuer) = &p.issuer {
        if issuer.is_empty() {
            return Err(src.error(&at.key("issuer"), "must not be empty"));
        }
    }
    let audience = p.audience.clone().unwrap_or_default();
    if let Some(i) = audience.iter().position(String::is_empty) {
        return Err(src.error(&at.key("audience").index(i), "must not be empty"));
    }
    let required_claims = p.required_claims.clone().unwrap_or_default();
    if let Some(i) = required_claims.iter().position(String::is_empty) {
        return Err(src.error(&at.key("required_claims").index(i), "must not be empty"));
    }
    Ok((
        model::AuthKind::Jwt(model::Jwt {
            algorithms,
            keys,
            issuer: p.issuer.clone(),
            audience,
            leeway: p.leeway.map_or(std::time::Duration::ZERO, |d| d.0),
            required_claims,
            strip_authorization: p.strip_authorization.unwrap_or(false),
        }),
        material,
    ))
}

fn api_key(
    p: &file::AuthPolicy,
    at: &KeyPath,
    src: &Source,
) -> Result<(model::AuthKind, &'static str), ConfigError> {
    let from = match (&p.header, &p.query) {
        (None, None) => return Err(src.error(at, "an api_key policy needs header or query")),
        (Some(_), Some(_)) => {
            return Err(src.key_error(&at.key("query"), "header and query cannot both be set"))
        }
        (Some(header), None) => {
            let name = header_name(header).map_err(|m| src.error(&at.key("header"), m))?;
            // A credential under a header the gateway reads or writes would be logged, echoed
            // or forwarded as something else (x-request-id, traceparent, ...).
            if GATEWAY_HEADERS.contains(&name.as_str()) {
                return Err(src.error(
                    &at.key("header"),
                    format!("{name:?} is read or set by the gateway: it cannot carry an API key"),
                ));
            }
            model::ApiKeyFrom::Header(name)
        }
        (None, Some(query)) => {
            // Names are compared decoded: one spelled with `%` or `+` could never match.
            let reserved = |b: u8| matches!(b, b'=' | b'&' | b'#' | b'%' | b'+' | b'?');
            if query.is_empty() || !query.bytes().all(|b| b.is_ascii_graphic() && !reserved(b)) {
                return Err(src.error(
                    &at.key("query"),
                    format!("invalid query parameter name {query:?}"),
                ));
            }
            model::ApiKeyFrom::Query(query.clone())
        }
    };
    let Some(keys_file) = &p.keys_file else {
        return Err(src.error(&at.key("keys_file"), "missing required key"));
    };
    Ok((
        model::AuthKind::ApiKey(model::ApiKey {
            from,
            keys_file: relative_to(src.path, keys_file),
        }),
        "keys_file",
    ))
}

/// Headers a `forward` may not name: the framing, routing and credential fields, and those the
/// gateway itself reads or writes (an identity set under one would be read as something else,
/// or sent twice).
const GATEWAY_HEADERS: [&str; 22] = [
    "authorization",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "expect",
    "host",
    "keep-alive",
    "max-forwards",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "traceparent",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
];

fn jwt_algorithm(a: JwtAlgorithm) -> &'static str {
    match a {
        JwtAlgorithm::Rs256 => "RS256",
        JwtAlgorithm::Rs384 => "RS384",
        JwtAlgorithm::Rs512 => "RS512",
        JwtAlgorithm::Ps256 => "PS256",
        JwtAlgorithm::Es256 => "ES256",
        JwtAlgorithm::Es384 => "ES384",
        JwtAlgorithm::EdDsa => "EdDSA",
        JwtAlgorithm::Hs256 => "HS256",
        JwtAlgorithm::Hs384 => "HS384",
        JwtAlgorithm::Hs512 => "HS512",
    }
}

/// BEHAVIOR.md "Command line": relative paths in a config file are relative to its directory.
pub(super) fn relative_to(config: &Path, path: &str) -> std::path::PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match config.parent() {
        Some(dir) => dir.join(path),
        None => path.to_path_buf(),
    }
}

fn rate_limit(
    name: &str,
    r: &file::RateLimit,
    src: &Source,
) -> Result<model::RateLimit, ConfigError> {
    let at = KeyPath::of(&["rate_limits", name]);
    let section = Section::new(src, &at);
    let key = rate_key(&r.key).map_err(|m| src.error(&at.key("key"), m))?;
    let algorithm = match r.algorithm {
        RateAlgorithm::FixedWindow => model::RateAlgorithm::FixedWindow,
        RateAlgorithm::SlidingWindowLog => model::RateAlgorithm::SlidingWindowLog,
        RateAlgorithm::SlidingWindowCounter => model::RateAlgorithm::SlidingWindowCounter,
        RateAlgorithm::TokenBucket => model::RateAlgorithm::TokenBucket,
        RateAlgorithm::LeakyBucket => model::RateAlgorithm::LeakyBucket,
    };
    let windowed = matches!(
        r.algorithm,
        RateAlgorithm::FixedWindow
            | RateAlgorithm::SlidingWindowLog
            | RateAlgorithm::SlidingWindowCounter
    );
    let window_keys = [("limit", r.limit.is_some()), ("window", r.window.is_some())];
    let tier_keys = [("tier", r.tier.is_some()), ("tiers", r.tiers.is_some())];
    let bucket_keys = [("rate", r.rate.is_some()), ("burst", r.burst.is_some())];
    let (required, forbidden, family) = if windowed {
        (
            window_keys,
            bucket_keys.to_vec(),
            "token_bucket and leaky_bucket",
        )
    } else {
        (
            bucket_keys,
            [window_keys, tier_keys].concat(),
            "fixed_window, sliding_window_log and sliding_window_counter",
        )
    };
    if let Some((key, _)) = forbidden.iter().find(|(_, present)| *present) {
        return Err(src.key_error(&at.key(key), format!("only valid with algorithm {family}")));
    }
    if let Some((key, _)) = required.iter().find(|(_, present)| !*present) {
        return Err(src.error(&at.key(key), "missing required key"));
    }
    let limit = section.nonzero("limit", r.limit)?.unwrap_or(0);
    let window = section.positive("window", r.window)?.unwrap_or_default();
    let rate = section.nonzero("rate", r.rate)?.unwrap_or(0);
    let burst = section.nonzero("burst", r.burst)?.unwrap_or(0);
    let max_keys = match section.nonzero("max_keys", r.max_keys)? {
        None => None,
        Some(n) => Some(usize::try_from(n).map_err(|_| section.error("max_keys", "too large"))?),
    };
    let (tier, tiers) = match (&r.tier, &r.tiers) {
        (Some(tier), Some(tiers)) => {
            let tier = rate_key(tier).map_err(|m| src.error(&at.key("tier"), m))?;
            let mut list = Vec::new();
            for (name, t) in tiers.iter() {
                let path = at.key("tiers").key(name);
                let here = Section::new(src, &path);
                let limit = here.nonzero("limit", Some(t.limit))?.unwrap_or(0);
                let window = here.positive("window", Some(t.window))?.unwrap_or_default();
                list.push(model::RateTier {
                    name: name.to_string(),
                    limit,
                    window,
                    location: src.location_of(&path),
                });
            }
            (Some(tier), list)
        }
        (Some(_), None) => {
            return Err(src.error(&at.key("tiers"), "missing required key (tier is set)"))
        }
        (None, Some(_)) => {
            return Err(src.error(&at.key("tier"), "missing required key (tiers is set)"))
        }
        (None, None) => (None, Vec::new()),
    };
    Ok(model::RateLimit {
        name: name.to_string(),
        algorithm,
        key,
        limit,
        window,
        rate: u64::from(rate),
        burst: u64::from(burst),
        tier,
        tiers,
        max_keys,
        location: src.location_of(&at),
    })
}

/// A rate-limit key (or tier selector): `ip`, `consumer`, `route`, `global`, `header:NAME`,
/// `jwt:CLAIM`.
fn rate_key(text: &str) -> Result<model::RateKey, String> {
    let key = match text {
        "ip" => Some(model::RateKey::Ip),
        "consumer" => Some(model::RateKey::Consumer),
        "route" => Some(model::RateKey::Route),
        "global" => Some(model::RateKey::Global),
        _ => match text.split_once(':') {
            Some(("header", name)) if is_token(name) => {
                Some(model::RateKey::Header(header_name(name)?))
            }
            Some(("jwt", claim)) if !claim.is_empty() => {
                Some(model::RateKey::Jwt(claim.to_string()))
            }
            _ => None,
        },
    };
    key.ok_or_else(|| {
        format!(
            "invalid key {text:?}: expected \"ip\", \"header:NAME\", \"jwt:CLAIM\", \"consumer\", \"route\" or \"global\""
        )
    })
}
