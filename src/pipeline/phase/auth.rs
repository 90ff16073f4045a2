//! Phase 5: authentication, on routes with `auth` ([`crate::policy::auth`]). A JWT comes as
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

/// Authenticates the request with `policy`, the route's. `cache` is this worker's
/// verified-token cache for the policy (used by JWT policies).
pub fn run<'c>(
    policy: &'c Verifier,
    req: &Credentials<'_, '_>,
    cache: &mut TokenCache,
    to: &Destination<'_>,
    framing: &Framing,
    id: &RequestId,
) -> Flow<Subject<'c>> {
    let result = match policy {
        Verifier::Jwt(verifier) => bearer(req.headers).and_then(|token| {
            Ok(Subject::Jwt {
                verified: cache.verify(verifier, token, req.now_unix)?,
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
        Err(e) => Flow::Respond(refusal(e, to, framing, id)),
    }
}

/// The 401 for `e` (BEHAVIOR.md "Errors sent to clients"). It is made before the body is
/// read, so it closes the connection when a body follows the head: kept open, the body would
/// be read as the next request.
pub fn refusal(e: AuthError, to: &Destination<'_>, framing: &Framing, id: &RequestId) -> Response {
    let mut r = framing.close_if_body(Response::error(AuthError::STATUS, e.message(), *id));
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
