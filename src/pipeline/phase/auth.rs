//! Phase 6: authentication, on routes with `auth` ([`crate::policy::auth`]). A JWT comes as
//! `Authorization: Bearer <token>` and is verified through this worker's verified-token cache;
//! an API key comes from its header or query parameter and is looked up by digest. Success is a
//! [`Subject`]: who the client is, the identity headers to set upstream, and what the
//! rate-limit phase keys on (`jwt:CLAIM`, `consumer`). Failure is the 401 of BEHAVIOR.md with
//! `WWW-Authenticate` (RFC 6750 §3).
//!
//! The forwarded header names were already removed from the request by phase 0
//! ([`super::untrusted`]), on every route: what the upstream sees under them is only what this
//! phase sets.

use std::borrow::Cow;
use std::rc::Rc;

use smallvec::SmallVec;

use crate::http::Header;
use crate::pipeline::ctx::RequestId;
use crate::pipeline::Response;
use crate::policy::auth::{
    api_key, ApiKeyVerifier, AuthError, Consumer, Invalid, KeyFrom, TokenCache, Verified,
};
use crate::policy::compiled::Verifier;

use super::framing::Framing;
use super::{Destination, Flow};

/// Who the client is, once authenticated.
pub enum Subject<'c> {
    /// The route has no auth.
    Anonymous,
    /// A verified JWT (shared with this worker's token cache).
    Jwt {
        verified: Rc<Verified>,
        strip_authorization: bool,
    },
    /// A known API key.
    Consumer {
        consumer: &'c Consumer,
        verifier: &'c ApiKeyVerifier,
    },
}

/// The identity headers to set upstream: `(lower-case name, value)`.
pub type Forwarded<'s> = SmallVec<[(&'s str, &'s str); 4]>;

impl Subject<'_> {
    /// The headers to set upstream, in the policy's `forward` order.
    pub fn forwarded(&self) -> Forwarded<'_> {
        match self {
            Subject::Anonymous => Forwarded::new(),
            Subject::Jwt { verified, .. } => verified
                .forward
                .iter()
                .map(|(name, value)| (&**name, &**value))
                .collect(),
            Subject::Consumer { consumer, verifier } => {
                verifier.forwarded(consumer).into_iter().collect()
            }
        }
    }

    /// Whether `Authorization` is removed before forwarding.
    pub fn strips_authorization(&self) -> bool {
        matches!(
            self,
            Subject::Jwt {
                strip_authorization: true,
                ..
            }
        )
    }

    /// A JWT claim as rate-limit key bytes (strings as they are, other values as JSON text);
    /// None when there is no verified token or no such claim (or it is null).
    pub fn claim(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let Subject::Jwt { verified, .. } = self else {
            return None;
        };
        match verified.claims.get(name)? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(Cow::Borrowed(s.as_bytes())),
            other => Some(Cow::Owned(other.to_string().into_bytes())),
        }
    }

    /// The query parameter to remove from the target before forwarding (an API key presented
    /// in the query: the upstream must not see the credential).
    pub fn credential_param(&self) -> Option<&str> {
        match self {
            Subject::Consumer { verifier, .. } => match verifier.from() {
                KeyFrom::Query(name) => Some(name),
                KeyFrom::Header(_) => None,
            },
            _ => None,
        }
    }

    /// The API key's consumer, when an API key authenticated the request.
    pub fn consumer(&self) -> Option<&str> {
        match self {
            Subject::Consumer { consumer, .. } => Some(&consumer.consumer),
            _ => None,
        }
    }
}

/// What the auth phase reads of the request.
pub struct Credentials<'a, 'h> {
    pub headers: &'a [Header<'h>],
    /// The request target as received (a query-parameter API key is read from it).
    pub target: &'a str,
    pub now_unix: u64,
}

/// Authenticates the request with `policy`, the route's. `cache` gives this worker's
/// verified-token cache for the policy (asked for by JWT policies only).
pub fn run<'c, 'w>(
    policy: &'c Verifier,
    req: &Credentials<'_, '_>,
    cache: impl FnOnce() -> std::cell::RefMut<'w, TokenCache>,
    framing: &Framing,
    to: &Destination<'_>,
    id: &RequestId,
) -> Flow<Subject<'c>> {
    let result = match policy {
        Verifier::Jwt(verifier) => bearer(req.headers).and_then(|token| {
            Ok(Subject::Jwt {
                verified: cache().verify(verifier, token, req.now_unix)?,
                strip_authorization: verifier.strip_authorization(),
            })
        }),
        Verifier::ApiKey(verifier) => presented_key(verifier, req).and_then(|key| {
            let consumer = verifier.lookup(&key)?;
            Ok(Subject::Consumer { consumer, verifier })
        }),
    };
    match result {
        Ok(subject) => Flow::Continue(subject),
        // A body that follows is unread: the connection closes after the answer.
        Err(e) => Flow::Respond(framing.close_if_body(refusal(e, to, id))),
    }
}

/// The 401 for `e` (BEHAVIOR.md "Errors sent to clients").
pub fn refusal(e: AuthError, to: &Destination<'_>, id: &RequestId) -> Response {
    let mut r = Response::error(AuthError::STATUS, e.message(), *id);
    r.challenge = Some(e.www_authenticate());
    r.routed = Some(to.ids());
    r
}

/// The token of the one `Authorization: Bearer <token>` field (RFC 6750 §2.1; the scheme is
/// case-insensitive, RFC 9110 §11.1). No field, another scheme or an empty token: Missing.
/// Two fields: which one is meant is not ours to guess (Invalid).
fn bearer<'h>(headers: &[Header<'h>]) -> Result<&'h [u8], AuthError> {
    let value = super::single(headers, "authorization")
        .map_err(|()| AuthError::Invalid(Invalid::Malformed))?
        .ok_or(AuthError::Missing)?;
    let value = value.trim_ascii();
    let (scheme, token) = match value.iter().position(|&b| b == b' ') {
        Some(sp) => (&value[..sp], value[sp + 1..].trim_ascii()),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// The API key as presented (a query parameter decoded).
fn presented_key<'a>(
    verifier: &ApiKeyVerifier,
    req: &Credentials<'a, '_>,
) -> Result<Cow<'a, [u8]>, AuthError> {
    match verifier.from() {
        KeyFrom::Header(name) => super::single(req.headers, name)
            .map_err(|()| AuthError::Invalid(Invalid::AmbiguousApiKey))?
            .map(|v| Cow::Borrowed(v.trim_ascii()))
            .ok_or(AuthError::Missing),
        KeyFrom::Query(name) => {
            api_key::query_param(req.target.as_bytes(), name)?.ok_or(AuthError::Missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::model::Config;
    use crate::pipeline::phase::testing::{config, head, id, message};
    use crate::policy::auth::{Algorithm, JwtSpec, JwtVerifier, KeySource};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn cfg() -> Config {
        config("[upstreams.u]\nendpoints = [\"http://127.0.0.1:9001\"]\n[routes.r]\npaths = [\"/\"]\nupstream = \"u\"\n")
    }

    fn to(cfg: &Config) -> Destination<'_> {
        Destination {
            route_id: 0,
            route: &cfg.routes[0],
            matched: 1,
            upstream_id: 0,
            upstream: &cfg.upstreams[0],
        }
    }

    fn jwt_policy(strip: bool) -> Verifier {
        Verifier::Jwt(
            JwtVerifier::new(&JwtSpec {
                algorithms: vec![Algorithm::HS256],
                keys: KeySource::Secret(SECRET.to_vec()),
                issuer: None,
                audience: Vec::new(),
                leeway: Duration::ZERO,
                required_claims: vec!["sub".into()],
                forward: vec![
                    ("sub".into(), "x-user-id".into()),
                    ("roles".into(), "x-user-roles".into()),
                ],
                strip_authorization: strip,
            })
            .unwrap(),
        )
    }

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    /// Runs the phase on `raw` with `policy`.
    fn authenticate<'c>(
        policy: &'c Verifier,
        raw: &[u8],
        cache: &std::cell::RefCell<TokenCache>,
    ) -> Flow<Subject<'c>> {
        let cfg = cfg();
        let h = head(raw);
        let creds = Credentials {
            headers: &h.headers,
            target: h.target,
            now_unix: NOW,
        };
        let Flow::Continue(framing) = super::super::framing::run(h.version, &h.headers, &id())
        else {
            panic!("framing answered");
        };
        run(
            policy,
            &creds,
            || cache.borrow_mut(),
            &framing,
            &to(&cfg),
            &id(),
        )
    }

    fn refused(flow: Flow<Subject<'_>>) -> (u16, String, &'static str) {
        match flow {
            Flow::Respond(r) => (r.status, message(&r).to_string(), r.challenge.unwrap()),
            Flow::Continue(_) => panic!("admitted"),
        }
    }

    #[test]
    fn a_verified_bearer_token_gives_its_subject_and_identity_headers() {
        let policy = jwt_policy(true);
        let t = token(
            serde_json::json!({"sub": "alice", "roles": ["a", "b"], "plan": 3, "exp": NOW + 60}),
        );
        let raw = format!("GET / HTTP/1.1\r\nHost: g\r\nAuthorization: bEaReR {t}\r\n\r\n");
        let cache = std::cell::RefCell::new(TokenCache::new(16));
        let Flow::Continue(subject) = authenticate(&policy, raw.as_bytes(), &cache) else {
            panic!("refused");
        };
        assert_eq!(
            subject.forwarded().as_slice(),
            &[("x-user-id", "alice"), ("x-user-roles", "a,b")]
        );
        assert!(subject.strips_authorization());
        assert_eq!(subject.claim("sub").as_deref(), Some(&b"alice"[..]));
        assert_eq!(subject.claim("plan").as_deref(), Some(&b"3"[..]));
        assert_eq!(subject.claim("nope"), None);
        assert_eq!(
            (subject.consumer(), subject.credential_param()),
            (None, None)
        );
        assert_eq!(cache.borrow().len(), 1, "the verification is cached");
        let kept = jwt_policy(false);
        let Flow::Continue(subject) = authenticate(&kept, raw.as_bytes(), &cache) else {
            panic!("refused");
        };
        assert!(!subject.strips_authorization());
    }

    /// Each way of presenting no usable token, with its 401 message and challenge.
    #[test]
    fn refusals_are_401s_with_their_challenge() {
        let policy = jwt_policy(false);
        let good = token(serde_json::json!({"sub": "a", "exp": NOW + 60}));
        let expired = token(serde_json::json!({"sub": "a", "exp": NOW - 1}));
        let bare = r#"Bearer realm="dispatch""#;
        let cases: Vec<(String, (u16, &str, bool))> = vec![
            (String::new(), (401, "Missing authentication token", true)),
            (
                "Authorization: Basic YTpi\r\n".into(),
                (401, "Missing authentication token", true),
            ),
            (
                "Authorization: Bearer \r\n".into(),
                (401, "Missing authentication token", true),
            ),
            (
                format!("Authorization: Bearer {good}\r\nAuthorization: Bearer {good}\r\n"),
                (401, "Invalid token", false),
            ),
            (
                format!("Authorization: Bearer {expired}\r\n"),
                (401, "Token expired", false),
            ),
            (
                "Authorization: Bearer a.b.c\r\n".into(),
                (401, "Invalid token", false),
            ),
        ];
        for (field, (status, text, bare_challenge)) in cases {
            let raw = format!("GET / HTTP/1.1\r\nHost: g\r\n{field}\r\n");
            let (s, m, challenge) = refused(authenticate(
                &policy,
                raw.as_bytes(),
                &std::cell::RefCell::new(TokenCache::new(4)),
            ));
            assert_eq!((s, m.as_str()), (status, text), "{field}");
            assert_eq!(challenge == bare, bare_challenge, "{field}: {challenge}");
        }
    }

    #[test]
    fn an_api_key_in_the_query_names_its_consumer_and_is_marked_for_removal() {
        let dir = std::env::temp_dir().join(format!("dispatch-phase-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = dir.join("keys.toml");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"k-1");
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            &keys,
            format!("[keys.\"{hex}\"]\nconsumer = \"acme\"\nplan = \"gold\"\n"),
        )
        .unwrap();
        let verifier = ApiKeyVerifier::new(&crate::policy::auth::ApiKeySpec {
            from: KeyFrom::Query("api_key".into()),
            keys_file: keys.clone(),
            forward: vec![(
                crate::policy::auth::ApiKeyField::Consumer,
                "x-consumer-id".into(),
            )],
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let policy = Verifier::ApiKey(verifier);
        let cache = std::cell::RefCell::new(TokenCache::new(4));
        let Flow::Continue(subject) = authenticate(
            &policy,
            b"GET /x?a=1&api_key=k-1 HTTP/1.1\r\nHost: g\r\n\r\n",
            &cache,
        ) else {
            panic!("refused");
        };
        assert_eq!(subject.consumer(), Some("acme"));
        assert_eq!(subject.credential_param(), Some("api_key"));
        assert_eq!(subject.forwarded().as_slice(), &[("x-consumer-id", "acme")]);
        let (_, m, _) = refused(authenticate(
            &policy,
            b"GET /x?api_key=k-2 HTTP/1.1\r\nHost: g\r\n\r\n",
            &cache,
        ));
        assert_eq!(m, "Invalid token");
        let (_, m, _) = refused(authenticate(
            &policy,
            b"GET /x HTTP/1.1\r\nHost: g\r\n\r\n",
            &cache,
        ));
        assert_eq!(m, "Missing authentication token");
    }
}
