//! The two error types of authentication: [`AuthError`], a request refused (always a 401,
//! BEHAVIOR.md "Statuses"), and [`AuthConfigError`], a policy that cannot be compiled at load.
//!
//! A refusal carries a static reason, never the claim or token text, so it costs nothing to
//! build and never echoes attacker-chosen bytes into a response header.

use std::path::PathBuf;

/// Why a request was refused. Every variant maps to a 401 with `WWW-Authenticate: Bearer`
/// ([`AuthError::www_authenticate`]) and one of BEHAVIOR.md's three messages
/// ([`AuthError::message`]). All come from the client: none may be retried, none feeds a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401 `Missing authentication token`: no credential in the request.
    #[error("missing authentication token")]
    Missing,
    /// 401 `Token expired`: an authentic token whose `exp` has passed (leeway included).
    #[error("token expired")]
    Expired,
    /// 401 `Invalid token`: any other refusal, with the reason.
    #[error("invalid token: {0}")]
    Invalid(Invalid),
}

/// Why a presented credential is not accepted (the `error_description` of RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Longer than [`super::jwt::MAX_TOKEN_LEN`]: refused before any decoding.
    Oversized,
    /// Not three base64url (RFC 7515 §2, no padding) segments of JSON objects.
    Malformed,
    /// `alg` is `none` or not in the policy's `algorithms` (algorithm confusion included).
    Algorithm,
    /// The header names a `crit` extension (RFC 7515 §4.1.11): none is understood.
    Critical,
    /// No key for the token's `kid` (or, without `kid`, no single key for its `alg`).
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// No `exp` claim, or one that is not a number.
    NoExpiry,
    /// `nbf` is later than now (plus leeway).
    NotYetValid,
    /// `iat` is later than now (plus leeway).
    IssuedInFuture,
    /// `iss` differs from the policy's `issuer`.
    Issuer,
    /// `aud` names none of the policy's `audience`.
    Audience,
    /// A claim of `required_claims` is absent (or null).
    MissingClaim,
    /// A claim to forward holds bytes a header value cannot carry (RFC 9110 §5.5).
    ForwardedValue,
    /// An API key that is in no `keys_file` entry.
    UnknownApiKey,
    /// The API key query parameter appears more than once.
    AmbiguousApiKey,
}

impl Invalid {
    /// The human-readable `error_description` (RFC 6750 §3): fixed text, no client bytes.
    pub fn description(self) -> &'static str {
        match self {
            Invalid::Oversized => "The token is too large",
            Invalid::Malformed => "The token is malformed",
            Invalid::Algorithm => "The token algorithm is not allowed",
            Invalid::Critical => "The token has unsupported critical headers",
            Invalid::UnknownKey => "The token key is unknown",
            Invalid::Signature => "The token signature is invalid",
            Invalid::NoExpiry => "The token has no expiry",
            Invalid::NotYetValid => "The token is not valid yet",
            Invalid::IssuedInFuture => "The token is issued in the future",
            Invalid::Issuer => "The token issuer is not accepted",
            Invalid::Audience => "The token audience is not accepted",
            Invalid::MissingClaim => "The token lacks a required claim",
            Invalid::ForwardedValue => "The token has a claim that cannot be forwarded",
            Invalid::UnknownApiKey => "The API key is unknown",
            Invalid::AmbiguousApiKey => "The API key is given more than once",
        }
    }

    /// The whole `WWW-Authenticate` value for this reason.
    fn challenge(self) -> &'static str {
        macro_rules! challenge {
            ($($variant:ident => $text:literal),* $(,)?) => {
                match self {
                    $(Invalid::$variant => concat!(
                        r#"Bearer realm="dispatch", error="invalid_token", error_description=""#,
                        $text,
                        '"'
                    ),)*
                }
            };
        }
        // The texts repeat `description` so the header is a `&'static str` (no formatting per
        // refusal); `challenge_repeats_the_description` pins that the two agree.
        challenge! {
            Oversized => "The token is too large",
            Malformed => "The token is malformed",
            Algorithm => "The token algorithm is not allowed",
            Critical => "The token has unsupported critical headers",
            UnknownKey => "The token key is unknown",
            Signature => "The token signature is invalid",
            NoExpiry => "The token has no expiry",
            NotYetValid => "The token is not valid yet",
            IssuedInFuture => "The token is issued in the future",
            Issuer => "The token issuer is not accepted",
            Audience => "The token audience is not accepted",
            MissingClaim => "The token lacks a required claim",
            ForwardedValue => "The token has a claim that cannot be forwarded",
            UnknownApiKey => "The API key is unknown",
            AmbiguousApiKey => "The API key is given more than once",
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.description())
    }
}

impl AuthError {
    /// The status every refusal is answered with.
    pub const STATUS: u16 = 401;

    /// The JSON error body's message, exactly as BEHAVIOR.md's status table words it.
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "Missing authentication token",
            AuthError::Expired => "Token expired",
            AuthError::Invalid(_) => "Invalid token",
        }
    }

    /// The `WWW-Authenticate` value. RFC 6750 §3.1: a request without credentials gets the
    /// bare challenge (no error code); a refused token gets `error="invalid_token"` (expiry
    /// included) with a fixed description.
    pub fn www_authenticate(self) -> &'static str {
        match self {
            AuthError::Missing => r#"Bearer realm="dispatch""#,
            AuthError::Expired => {
                r#"Bearer realm="dispatch", error="invalid_token", error_description="The token expired""#
            }
            AuthError::Invalid(reason) => reason.challenge(),
        }
    }
}

/// A policy that cannot be compiled: named file, what is wrong with it. Reported by the
/// config layer at load (and reload, which then keeps the running config).
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A key file or keys file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key file's content is not usable key material.
    #[error("{}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    /// The HMAC secret is too short for an algorithm of the policy (RFC 7518 §3.2).
    #[error("the secret is {len} bytes; {algorithm} needs at least {min} (RFC 7518 §3.2)")]
    ShortSecret {
        algorithm: &'static str,
        len: usize,
        min: usize,
    },
    /// The policy's algorithms and key source do not fit together.
    #[error("{0}")]
    Algorithms(String),
    /// A header named in `forward` cannot be set.
    #[error("forward header {name:?}: {reason}")]
    ForwardHeader { name: String, reason: &'static str },
}
