//! Authentication offloading: the compiled verifiers of `[auth.*]` policies, as a library the
//! request phase calls.
//!
//! - [`jwt`]: [`JwtSpec`] (plain data the config layer fills) compiles into a [`JwtVerifier`]:
//!   keys read and parsed once (PEM, JWKS by `kid`, or an HMAC secret), the allowed `alg` list,
//!   issuer, audience, leeway, required claims and the claims to forward as headers.
//!   [`JwtVerifier::verify`] takes the clock as a parameter.
//! - [`cache`]: [`TokenCache`], a per-worker bounded map from a token's SHA-256 to what its
//!   verification produced, each entry dropped at the token's `exp`. Verifying RS256 is the
//!   dominant cost of an edge request, and clients reuse a token for minutes.
//! - [`api_key`]: [`ApiKeySpec`] compiles into an [`ApiKeyVerifier`]: keys stored as SHA-256
//!   digests (`keys_file`), compared in constant time; the `api_key` query parameter's
//!   extraction and removal from a target.
//! - [`error`]: [`AuthError`] (a 401: message and `WWW-Authenticate` value) and
//!   [`AuthConfigError`] (a policy that cannot be compiled, naming the file).
//!
//! The one thing to know: a verifier never hands back bytes that cannot go into a header. A
//! claim value or a consumer name with a control byte is refused (the token) or rejected at
//! load (the keys file), so the phase that sets the identity headers can copy them as they are.

pub mod api_key;
pub mod cache;
pub mod error;
pub mod jwt;

#[cfg(test)]
mod tests;

pub use api_key::{ApiKeyField, ApiKeySpec, ApiKeyVerifier, Consumer, KeyFrom};
pub use cache::{TokenCache, Verified};
pub use error::{AuthConfigError, AuthError, Invalid};
pub use jwt::{Algorithm, Claims, ForwardHeaders, JwtSpec, JwtVerifier, KeySource, MAX_TOKEN_LEN};

/// A header name the verifiers may set, lower-cased, checked at load.
fn forward_header(name: &str) -> Result<Box<str>, AuthConfigError> {
    let fail = |reason| AuthConfigError::ForwardHeader {
        name: name.to_owned(),
        reason,
    };
    // RFC 9110 §5.1: a field name is a token (§5.6.2).
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(fail("not a valid header name (RFC 9110 §5.1)"));
    }
    let lower = name.to_ascii_lowercase();
    // Headers that frame, route or authenticate the request itself: setting one from a claim
    // would change how the request is read, not who sent it.
    const RESERVED: [&str; 11] = [
        "authorization",
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    if RESERVED.contains(&lower.as_str()) {
        return Err(fail(
            "is a framing, routing or credential header and cannot carry an identity",
        ));
    }
    Ok(lower.into_boxed_str())
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `value` can be sent as a header value exactly as it is (RFC 9110 §5.5): no control
/// bytes (CR, LF and NUL included; HTAB only inside), and no leading or trailing whitespace,
/// which a recipient strips as OWS and so would read a different value than was signed.
/// Bytes >= 0x80 (obs-text) pass: a UTF-8 name or e-mail address is a legitimate identity.
fn is_forwardable(value: &[u8]) -> bool {
    let edge_ok = |b: Option<&u8>| !matches!(b, Some(b' ' | b'\t'));
    edge_ok(value.first())
        && edge_ok(value.last())
        && value
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}
