//! [`Policies`]: every `[auth.*]` and `[rate_limits.*]` of a config, compiled: JWT keys and
//! API-key files read and parsed, `secret_env` read, each rate limit's shared table built (or
//! carried over). Built off the request path by [`compile`] at start and on every reload, and
//! held by the active config generation; the request phases only read it.
//!
//! Errors are config errors at the key that caused them (`auth.jwt.keys: cannot read ...`), so
//! `dispatch check`, start and reload report a bad key file like any other bad value.
//!
//! The one thing to know: a rate limit's state (its [`ratelimit::Policy`]) is carried over from
//! the previous generation when the limit's name and every setting are unchanged, so a reload
//! never hands a client a fresh quota; key material is always read again.

use crate::config::model::{self, AuthKind, Config, JwtKeys, Location, RateAlgorithm, RateKey};
use crate::config::ConfigError;

use super::auth::{
    self, ApiKeyField, ApiKeySpec, ApiKeyVerifier, AuthConfigError, JwtSpec, JwtVerifier, KeyFrom,
    KeySource,
};
use super::ratelimit::{self, Algorithm, LimitSpec, PolicySpec, SpecError};

/// One compiled `[auth.*]` policy.
#[derive(Debug)]
pub enum Verifier {
    Jwt(JwtVerifier),
    ApiKey(ApiKeyVerifier),
}

/// One compiled `[rate_limits.*]`.
#[derive(Debug)]
pub struct RateLimit {
    pub name: Box<str>,
    /// What a request is counted under.
    pub key: RateKey,
    /// What picks a tier (None: the base limit for everyone).
    pub tier: Option<RateKey>,
    /// Checked after auth: every limit but one keyed (and tiered, if at all) on the client's
    /// address, which is checked before it.
    pub after_auth: bool,
    pub limits: ratelimit::Policy,
}

/// Every policy of one config generation, indexed like `Config::auth` and
/// `Config::rate_limits`.
#[derive(Debug, Default)]
pub struct Policies {
    pub auth: Vec<Verifier>,
    pub rate_limits: Vec<RateLimit>,
    /// The header names any policy sets (lower-case, each once), and `bff.header`: removed
    /// from every incoming request on every route, so no client can supply an identity
    /// (BEHAVIOR.md "Authentication"); the BFF header is set again to the client the gateway
    /// decided (`pipeline::stack`), so the upstream never sees another one.
    pub identity_headers: Box<[Box<str>]>,
}

/// Compiles the policies of `cfg`; `previous` (the running generation's) lends the state of
/// rate limits whose settings are unchanged.
pub fn compile(cfg: &Config, previous: Option<&Policies>) -> Result<Policies, ConfigError> {
    let mut auth = Vec::with_capacity(cfg.auth.len());
    for p in &cfg.auth {
        auth.push(verifier(p)?);
    }
    let mut identity_headers: Vec<Box<str>> = Vec::new();
    for v in &auth {
        let names: Vec<&str> = match v {
            Verifier::Jwt(j) => j.forward_headers().collect(),
            Verifier::ApiKey(k) => k.forward_headers().collect(),
        };
        for name in names {
            if !identity_headers.iter().any(|h| &**h == name) {
                identity_headers.push(name.into());
            }
        }
    }
    if let Some(name) = cfg.bff.as_ref().and_then(|b| b.header.as_deref()) {
        // Config refuses a BFF header that a policy forwards: no duplicate here.
        identity_headers.push(name.into());
    }
    let mut rate_limits = Vec::with_capacity(cfg.rate_limits.len());
    for r in &cfg.rate_limits {
        // The same limit counting the same keys: each of its limiters (base, tiers) keeps
        // its state when its own spec is unchanged.
        let old = previous.and_then(|p| {
            p.rate_limits
                .iter()
                .find(|o| *o.name == r.name && o.key == r.key && o.tier == r.tier)
        });
        let spec = policy_spec(r);
        check_spec(r, &spec)?;
        let limits = ratelimit::Policy::rebuild(spec, old.map(|o| &o.limits))
            .map_err(|e| spec_error(r, &r.location, "", e))?;
        // Only a limit on the client's address is checked before auth: anything else a
        // client without credentials could spend for the authenticated (a `global` or `route`
        // quota, a tenant's `header:` budget).
        let by_address = |k: &RateKey| *k == RateKey::Ip;
        rate_limits.push(RateLimit {
            name: r.name.as_str().into(),
            key: r.key.clone(),
            tier: r.tier.clone(),
            after_auth: !(by_address(&r.key) && r.tier.as_ref().is_none_or(by_address)),
            limits,
        });
    }
    Ok(Policies {
        auth,
        rate_limits,
        identity_headers: identity_headers.into(),
    })
}

/// Checks what [`compile`] would build, without building the limits' tables (which can be
/// large): keys read and parsed, every limit and tier within what its algorithm holds. What
/// `dispatch check` and a load before start or reload run.
pub fn check(cfg: &Config) -> Result<(), ConfigError> {
    for p in &cfg.auth {
        verifier(p)?;
    }
    for r in &cfg.rate_limits {
        check_spec(r, &policy_spec(r))?;
    }
    Ok(())
}

/// Every limiter of `r` within what its algorithm holds, errors at the tier they concern.
fn check_spec(r: &model::RateLimit, spec: &PolicySpec) -> Result<(), ConfigError> {
    spec.base
        .validate()
        .map_err(|e| spec_error(r, &r.location, "", e))?;
    for ((name, tier), written) in spec.tiers.iter().zip(&r.tiers) {
        tier.validate()
            .map_err(|e| spec_error(r, &written.location, &format!("tiers.{name}."), e))?;
    }
    Ok(())
}

fn verifier(p: &model::AuthPolicy) -> Result<Verifier, ConfigError> {
    let at = |location: &Location, key: &str, message: String| ConfigError::Invalid {
        location: location.clone(),
        key: format!("auth.{}.{key}", p.name),
        message,
    };
    let fail = |e: AuthConfigError, material: &str| match e {
        AuthConfigError::Read { .. }
        | AuthConfigError::KeyFile { .. }
        | AuthConfigError::ShortSecret { .. } => at(&p.material_location, material, e.to_string()),
        AuthConfigError::Algorithms(_) => at(&p.location, "algorithms", e.to_string()),
        AuthConfigError::ForwardHeader { .. } => at(&p.location, "forward", e.to_string()),
    };
    match &p.kind {
        AuthKind::Jwt(j) => {
            let (keys, material) = match &j.keys {
                JwtKeys::File(path) => {
                    (KeySource::file(path).map_err(|e| fail(e, "keys"))?, "keys")
                }
                JwtKeys::SecretEnv(var) => match std::env::var_os(var) {
                    Some(value) if !value.is_empty() => {
                        (KeySource::Secret(value.into_encoded_bytes()), "secret_env")
                    }
                    _ => {
                        return Err(at(
                            &p.material_location,
                            "secret_env",
                            format!("environment variable {var} is not set (or empty)"),
                        ))
                    }
                },
            };
            let algorithms = j
                .algorithms
                .iter()
                .map(|name| {
                    auth::Algorithm::parse(name).ok_or_else(|| {
                        at(
                            &p.location,
                            "algorithms",
                            format!("unknown algorithm {name:?}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let spec = JwtSpec {
                algorithms,
                keys,
                issuer: j.issuer.clone(),
                audience: j.audience.clone(),
                leeway: j.leeway,
                required_claims: j.required_claims.clone(),
                forward: p.forward.clone(),
                strip_authorization: j.strip_authorization,
            };
            JwtVerifier::new(&spec)
                .map(Verifier::Jwt)
                .map_err(|e| fail(e, material))
        }
        AuthKind::ApiKey(k) => {
            let forward = p
                .forward
                .iter()
                .map(|(field, header)| {
                    ApiKeyField::parse(field)
                        .map(|f| (f, header.clone()))
                        .ok_or_else(|| {
                            at(&p.location, "forward", format!("unknown field {field:?}"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let spec = ApiKeySpec {
                from: match &k.from {
                    model::ApiKeyFrom::Header(name) => KeyFrom::Header(name.clone()),
                    model::ApiKeyFrom::Query(name) => KeyFrom::Query(name.clone()),
                },
                keys_file: k.keys_file.clone(),
                forward,
            };
            ApiKeyVerifier::new(&spec)
                .map(Verifier::ApiKey)
                .map_err(|e| fail(e, "keys_file"))
        }
    }
}

fn policy_spec(r: &model::RateLimit) -> PolicySpec {
    let algorithm = match r.algorithm {
        RateAlgorithm::FixedWindow => Algorithm::FixedWindow,
        RateAlgorithm::SlidingWindowLog => Algorithm::SlidingWindowLog,
        RateAlgorithm::SlidingWindowCounter => Algorithm::SlidingWindowCounter,
        RateAlgorithm::TokenBucket => Algorithm::TokenBucket,
        RateAlgorithm::LeakyBucket => Algorithm::LeakyBucket,
    };
    let spec = |limit, window| LimitSpec {
        algorithm,
        limit,
        window,
        rate: r.rate,
        burst: r.burst,
        max_keys: r.max_keys,
    };
    PolicySpec {
        base: spec(r.limit, r.window),
        tiers: r
            .tiers
            .iter()
            .map(|t| (t.name.clone(), spec(t.limit, t.window)))
            .collect(),
    }
}

/// A limit the algorithm cannot hold, reported at the field it names (`tier`: `tiers.NAME.`
/// for a tier's).
fn spec_error(r: &model::RateLimit, at: &Location, tier: &str, e: SpecError) -> ConfigError {
    let field = match &e {
        SpecError::Missing { field, .. }
        | SpecError::NotApplicable { field, .. }
        | SpecError::TooLarge { field, .. } => field,
        SpecError::WindowPrecision => "window",
        SpecError::TableTooLarge { .. } => "max_keys",
    };
    let tier = if matches!(field, "limit" | "window") {
        tier
    } else {
        ""
    };
    ConfigError::Invalid {
        location: at.clone(),
        key: format!("rate_limits.{}.{tier}{field}", r.name),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(src: &str) -> Config {
        crate::config::load_str(src, Path::new("/nonexistent/d.toml")).unwrap()
    }

    const LIMIT: &str =
        "[rate_limits.a]\nalgorithm = \"fixed_window\"\nkey = \"ip\"\nlimit = 5\nwindow = \"1m\"\n";

    /// A reload keeps a limit's state when its settings are unchanged, even if it moved in
    /// the file, and starts it afresh when they change.
    #[test]
    fn unchanged_limits_keep_their_state_across_a_reload() {
        let first = compile(&load(LIMIT), None).unwrap();
        let moved = compile(&load(&format!("\n\n{LIMIT}")), Some(&first)).unwrap();
        let state = |p: &Policies| p.rate_limits[0].limits.limiter(None).clone();
        assert!(state(&first).same_state(&state(&moved)));
        let changed = compile(
            &load(&LIMIT.replace("limit = 5", "limit = 6")),
            Some(&moved),
        )
        .unwrap();
        assert!(!state(&moved).same_state(&state(&changed)));
        let rekeyed = compile(&load(&LIMIT.replace("\"ip\"", "\"global\"")), Some(&moved)).unwrap();
        assert!(
            !state(&moved).same_state(&state(&rekeyed)),
            "a new key means new counts"
        );
    }

    /// Key material that cannot be read is a config error at the key that names it.
    #[test]
    fn unreadable_key_material_is_reported_at_its_key() {
        let cfg = load("[auth.j]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nkeys = \"k.pem\"\n");
        let err = compile(&cfg, None).unwrap_err().to_string();
        assert!(
            err.starts_with("/nonexistent/d.toml:4:8: auth.j.keys: cannot read /nonexistent/k.pem"),
            "{err}"
        );
        let cfg = load("[auth.j]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"DISPATCH_TEST_UNSET_SECRET_9\"\n");
        assert_eq!(
            compile(&cfg, None).unwrap_err().to_string(),
            "/nonexistent/d.toml:4:14: auth.j.secret_env: environment variable DISPATCH_TEST_UNSET_SECRET_9 is not set (or empty)"
        );
    }

    /// A limit its algorithm cannot hold is refused at the field.
    #[test]
    fn a_limit_too_large_for_its_algorithm_is_refused() {
        let cfg = load("[rate_limits.a]\nalgorithm = \"sliding_window_log\"\nkey = \"ip\"\nlimit = 20000\nwindow = \"1m\"\n");
        let err = check(&cfg).unwrap_err().to_string();
        assert!(err.contains("rate_limits.a.limit: sliding_window_log: `limit` = 20000 is above the maximum 10000"), "{err}");
        assert_eq!(err, compile(&cfg, None).unwrap_err().to_string());
        // A tier's own limit is reported at the tier.
        let cfg = load("[rate_limits.a]\nalgorithm = \"sliding_window_log\"\nkey = \"ip\"\nlimit = 10\nwindow = \"1m\"\ntier = \"header:x-plan\"\n\n[rate_limits.a.tiers.big]\nlimit = 20000\nwindow = \"1m\"\n");
        assert_eq!(
            check(&cfg).unwrap_err().to_string(),
            "/nonexistent/d.toml:8:1: rate_limits.a.tiers.big.limit: sliding_window_log: `limit` = 20000 is above the maximum 10000"
        );
    }
}
