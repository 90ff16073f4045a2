//! JWT verification (RFC 7519 over the JWS compact form, RFC 7515): [`JwtSpec`] is what the
//! config layer fills; [`JwtVerifier::new`] reads and parses the keys once; [`JwtVerifier::verify`]
//! checks a token against a clock it is given.
//!
//! Keys: a PEM public key (RSA, EC P-256/P-384, Ed25519), a JWKS file (keys selected by `kid`),
//! or an HMAC secret. jsonwebtoken (aws-lc-rs backend) reads the PEM and JWK formats; each key is
//! then held as an aws-lc-rs `ParsedPublicKey` (or HMAC key) per algorithm it may verify, so a
//! verification never re-parses key material (jsonwebtoken's own `decode` re-parses the DER key
//! and copies it on every call, which is most of the cost of an ES256 check).
//!
//! The one thing to know: a key is compiled for one algorithm family, and the token's `alg`
//! picks among the policy's compiled keys only. An HMAC token can never be checked against a
//! public key's bytes (algorithm confusion), and `none` has no key at all. Public-key sources
//! and HMAC secrets cannot be mixed in one policy.
//!
//! Order of checks, cheapest and least trusting first: size (8 KiB), three base64url segments
//! decoded (no padding, canonical), header JSON (`alg` allowed, no `crit`), key by `kid`,
//! signature, then the claims: `exp` (required), `nbf`, `iat`, `iss`, `aud`, required claims,
//! and the values to forward. `Token expired` is only ever said of an authentic token.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{DecodingKey, DecodingKeyKind};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{AuthConfigError, AuthError, Invalid};

/// Tokens longer than this are refused before any decoding: a JWT carrying an identity fits in
/// a few hundred bytes, and the bound caps the work (base64, JSON, hashing) a client can ask for.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The smallest RSA modulus accepted (NIST SP 800-131A; aws-lc-rs verifies 2048..=8192 bits).
const MIN_RSA_BITS: usize = 2048;

/// The signature algorithms a policy may allow (RFC 7518 §3.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
    Hmac,
}

impl Algorithm {
    /// Every algorithm, in the order the config reference lists them.
    pub const ALL: [Algorithm; 10] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
    ];

    /// The algorithm of a JWS `alg` value (case-sensitive, RFC 7515 §4.1.1); `none` and
    /// anything else is `None`.
    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
        }
    }

    fn family(self) -> Family {
        match self {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
                Family::Rsa
            }
            Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
            Algorithm::EdDSA => Family::Ed,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    fn rsa_params(self) -> &'static signature::RsaParameters {
        match self {
            Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            _ => &signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }

    fn hmac(self) -> (hmac::Algorithm, usize) {
        // RFC 7518 §3.2: the key must be at least as long as the hash output.
        match self {
            Algorithm::HS384 => (hmac::HMAC_SHA384, 48),
            Algorithm::HS512 => (hmac::HMAC_SHA512, 64),
            _ => (hmac::HMAC_SHA256, 32),
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a policy's keys come from. `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A PEM public key (`-----BEGIN PUBLIC KEY-----`): RSA, EC P-256/P-384 or Ed25519.
    Pem(PathBuf),
    /// A JWKS file (RFC 7517 §5): `{"keys": [...]}`, keys matched by `kid`.
    Jwks(PathBuf),
    /// An HMAC secret (the bytes of `secret_env`'s variable): HS256/384/512 only.
    Secret(Vec<u8>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Pem(path) => f.debug_tuple("Pem").field(path).finish(),
            KeySource::Jwks(path) => f.debug_tuple("Jwks").field(path).finish(),
            KeySource::Secret(secret) => write!(f, "Secret(<{} bytes>)", secret.len()),
        }
    }
}

impl KeySource {
    /// The source for a `keys` file: a JWKS when its content is a JSON object, PEM otherwise.
    pub fn file(path: &Path) -> Result<KeySource, AuthConfigError> {
        let text = read(path)?;
        let json = text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let path = path.to_path_buf();
        Ok(if json {
            KeySource::Jwks(path)
        } else {
            KeySource::Pem(path)
        })
    }
}

/// One `[auth.NAME]` policy of `type = "jwt"`, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSpec {
    /// The `alg` values accepted; a token with any other is `Invalid token`.
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When not empty, `aud` (a string or an array) must contain one of them.
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (whole seconds count).
    pub leeway: Duration,
    /// Claims that must be present and not null.
    pub required_claims: Vec<String>,
    /// `(claim, header)`: the claims set as request headers on success.
    pub forward: Vec<(String, String)>,
    /// Remove `Authorization` before forwarding (applied by the request phase).
    pub strip_authorization: bool,
}

/// A compiled JWT policy: shared by every worker (`Send + Sync`), immutable, replaced whole on
/// reload (a new [`JwtVerifier::id`]).
pub struct JwtVerifier {
    id: u64,
    allowed: u16,
    keys: Vec<Key>,
    /// JWKS: keys are selected by `kid`. PEM or secret: one key per algorithm, `kid` ignored.
    by_kid: bool,
    issuer: Option<Box<str>>,
    audience: Box<[Box<str>]>,
    leeway: u64,
    required: Box<[Box<str>]>,
    forward: Box<[(Box<str>, Box<str>)]>,
    strip_authorization: bool,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithms: Vec<_> = Algorithm::ALL
            .into_iter()
            .filter(|a| self.allowed & a.bit() != 0)
            .collect();
        f.debug_struct("JwtVerifier")
            .field("id", &self.id)
            .field("algorithms", &algorithms)
            .field("keys", &self.keys.len())
            .field("by_kid", &self.by_kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("required", &self.required)
            .field("forward", &self.forward)
            .finish_non_exhaustive()
    }
}

struct Key {
    kid: Option<Box<str>>,
    algorithm: Algorithm,
    check: Check,
}

enum Check {
    Public(ParsedPublicKey),
    // Boxed: an HMAC key holds its precomputed inner and outer states (over 1 KiB).
    Hmac(Box<hmac::Key>),
}

/// The header of a JWS (RFC 7515 §4.1): only what verification reads.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    map: Map<String, Value>,
    exp: f64,
    nbf: Option<f64>,
}

impl Claims {
    /// A claim's JSON value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// The claims as a JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// `exp` in whole seconds, rounded down: the last moment a cached verification may be used.
    pub fn expires_at(&self) -> u64 {
        self.exp.floor() as u64
    }

    /// `nbf`, when the token has one.
    pub fn not_before(&self) -> Option<f64> {
        self.nbf
    }

    /// A claim as header text: strings as they are, numbers and booleans as JSON text, arrays
    /// joined with ",", objects as JSON text; `None` when absent or null. `Err` when the text
    /// could not be forwarded unchanged (see [`JwtVerifier::forwarded`]).
    pub fn text(&self, name: &str) -> Option<Result<Cow<'_, str>, Invalid>> {
        let text = match self.map.get(name)? {
            Value::Null => return None,
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Array(items) => {
                let mut joined = String::new();
                for (i, item) in items.iter().enumerate() {
                    let item = scalar_text(item);
                    // RFC 9110 §5.6.1: the joined value is read as a list; an element with a
                    // comma would be read as two.
                    if item.contains(',') {
                        return Some(Err(Invalid::ForwardedValue));
                    }
                    if i > 0 {
                        joined.push(',');
                    }
                    joined.push_str(&item);
                }
                Cow::Owned(joined)
            }
            other => scalar_text(other),
        };
        if super::is_forwardable(text.as_bytes()) {
            Some(Ok(text))
        } else {
            Some(Err(Invalid::ForwardedValue))
        }
    }
}

fn scalar_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        other => Cow::Owned(other.to_string()),
    }
}

/// `(header, value)` pairs to set on a request, in the policy's `forward` order.
pub type ForwardHeaders = Vec<(Box<str>, Box<str>)>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl JwtVerifier {
    /// Compiles a policy: reads and parses its keys, checks that every allowed algorithm has a
    /// key and that the forwarded header names can be set.
    pub fn new(spec: &JwtSpec) -> Result<JwtVerifier, AuthConfigError> {
        if spec.algorithms.is_empty() {
            return Err(AuthConfigError::Algorithms(
                "`algorithms` is empty: no token could be accepted".into(),
            ));
        }
        let allowed = spec.algorithms.iter().fold(0, |set, a| set | a.bit());
        let hmac = spec.algorithms.iter().any(|a| a.family() == Family::Hmac);
        let public = spec.algorithms.iter().any(|a| a.family() != Family::Hmac);
        let names = |family: fn(&Algorithm) -> bool| {
            spec.algorithms
                .iter()
                .filter(|a| family(a))
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (keys, by_kid) = match &spec.keys {
            KeySource::Secret(secret) => {
                if public {
                    return Err(AuthConfigError::Algorithms(format!(
                        "{} need a public key (`keys`), not a secret",
                        names(|a| a.family() != Family::Hmac)
                    )));
                }
                (secret_keys(secret, &spec.algorithms)?, false)
            }
            KeySource::Pem(path) | KeySource::Jwks(path) if hmac => {
                // Algorithm confusion (RFC 8725 §2.1): a public key's bytes must never serve
                // as an HMAC secret, so HS* cannot share a policy with a key file.
                return Err(AuthConfigError::Algorithms(format!(
                    "{} take a secret (`secret_env`), not the key file {}",
                    names(|a| a.family() == Family::Hmac),
                    path.display()
                )));
            }
            KeySource::Pem(path) => (pem_keys(path, &spec.algorithms)?, false),
            KeySource::Jwks(path) => (jwks_keys(path, &spec.algorithms)?, true),
        };
        let mut forward = Vec::with_capacity(spec.forward.len());
        for (claim, header) in &spec.forward {
            forward.push((claim.as_str().into(), super::forward_header(header)?));
        }
        Ok(JwtVerifier {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            allowed,
            keys,
            by_kid,
            issuer: spec.issuer.as_deref().map(Into::into),
            audience: spec.audience.iter().map(|a| a.as_str().into()).collect(),
            leeway: spec.leeway.as_secs(),
            required: spec
                .required_claims
                .iter()
                .map(|c| c.as_str().into())
                .collect(),
            forward: forward.into(),
            strip_authorization: spec.strip_authorization,
        })
    }

    /// This compilation's identity: a [`super::TokenCache`] drops its entries when it sees
    /// another (a reload swapped the keys).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The clock skew allowed, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway
    }

    /// Whether `Authorization` is removed before forwarding.
    pub fn strip_authorization(&self) -> bool {
        self.strip_authorization
    }

    /// The header names this policy sets (lower-case): removed from every incoming request.
    pub fn forward_headers(&self) -> impl Iterator<Item = &str> {
        self.forward.iter().map(|(_, header)| &**header)
    }

    /// Verifies a compact JWS token at `now_unix` (seconds since the epoch).
    pub fn verify(&self, token: &[u8], now_unix: u64) -> Result<Claims, AuthError> {
        let invalid = AuthError::Invalid;
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid(Invalid::Oversized));
        }
        // RFC 7515 §7.1: BASE64URL(header) '.' BASE64URL(payload) '.' BASE64URL(signature).
        let mut parts = token.splitn(3, |&b| b == b'.');
        let (Some(head64), Some(body64), Some(sig64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(Invalid::Malformed));
        };
        let signed = &token[..head64.len() + 1 + body64.len()];
        // Everything is decoded before any crypto: a malformed segment costs no signature check.
        let head = b64(head64)?;
        let body = b64(body64)?;
        let sig = b64(sig64)?;

        let header: Header<'_> =
            serde_json::from_slice(&head).map_err(|_| invalid(Invalid::Malformed))?;
        let algorithm = Algorithm::parse(&header.alg)
            .filter(|a| self.allowed & a.bit() != 0)
            .ok_or(invalid(Invalid::Algorithm))?;
        if header.crit.is_some() {
            return Err(invalid(Invalid::Critical));
        }
        let key = self.key(algorithm, header.kid.as_deref())?;
        let verified = match &key.check {
            Check::Public(public) => public.verify_sig(signed, &sig).is_ok(),
            Check::Hmac(secret) => hmac::verify(secret, signed, &sig).is_ok(),
        };
        if !verified {
            return Err(invalid(Invalid::Signature));
        }

        let map: Map<String, Value> =
            serde_json::from_slice(&body).map_err(|_| invalid(Invalid::Malformed))?;
        self.check_claims(map, now_unix)
    }

    fn key(&self, algorithm: Algorithm, kid: Option<&str>) -> Result<&Key, AuthError> {
        let mut of_alg = self.keys.iter().filter(|k| k.algorithm == algorithm);
        let key = match (self.by_kid, kid) {
            (true, Some(kid)) => of_alg.find(|k| k.kid.as_deref() == Some(kid)),
            // A JWKS token without `kid`: only unambiguous when one key fits the algorithm;
            // trying each key in turn would multiply the work a forged token costs.
            (true, None) => match (of_alg.next(), of_alg.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            },
            (false, _) => of_alg.next(),
        };
        key.ok_or(AuthError::Invalid(Invalid::UnknownKey))
    }

    fn check_claims(&self, map: Map<String, Value>, now_unix: u64) -> Result<Claims, AuthError> {
        let invalid = AuthError::Invalid;
        let now = now_unix as f64;
        let leeway = self.leeway as f64;
        // RFC 7519 §4.1.4: the token is valid only *before* `exp`.
        let exp = match map.get("exp") {
            None => return Err(invalid(Invalid::NoExpiry)),
            Some(v) => v.as_f64().ok_or(invalid(Invalid::NoExpiry))?,
        };
        if now >= exp + leeway {
            return Err(AuthError::Expired);
        }
        // RFC 7519 §4.1.5: valid from `nbf` on.
        let nbf = numeric_date(&map, "nbf")?;
        if nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(invalid(Invalid::NotYetValid));
        }
        if numeric_date(&map, "iat")?.is_some_and(|iat| iat > now + leeway) {
            return Err(invalid(Invalid::IssuedInFuture));
        }
        if let Some(issuer) = &self.issuer {
            if map.get("iss").and_then(Value::as_str) != Some(&**issuer) {
                return Err(invalid(Invalid::Issuer));
            }
        }
        if !self.audience.is_empty() {
            // RFC 7519 §4.1.3: `aud` is a string or an array of strings.
            let accepted = |aud: &Value| aud.as_str().is_some_and(|a| self.accepts_audience(a));
            let ok = match map.get("aud") {
                Some(Value::Array(auds)) => auds.iter().any(accepted),
                Some(aud) => accepted(aud),
                None => false,
            };
            if !ok {
                return Err(invalid(Invalid::Audience));
            }
        }
        if self
            .required
            .iter()
            .any(|c| map.get(&**c).is_none_or(Value::is_null))
        {
            return Err(invalid(Invalid::MissingClaim));
        }
        Ok(Claims { map, exp, nbf })
    }

    fn accepts_audience(&self, aud: &str) -> bool {
        self.audience.iter().any(|a| **a == *aud)
    }

    /// The `(header, value)` pairs to set for verified `claims`, in `forward` order; an absent
    /// or null claim sets nothing. A value a header could not carry unchanged (a control byte
    /// such as CR or LF, leading or trailing whitespace, an array element with a comma) refuses
    /// the whole token rather than dropping the header: an upstream reading a missing identity
    /// header as "anonymous" or a default would be a silently wrong answer, and an issuer
    /// signing such a value is misconfigured or attacked, which the operator should see.
    pub fn forwarded(&self, claims: &Claims) -> Result<ForwardHeaders, AuthError> {
        let mut out = Vec::with_capacity(self.forward.len());
        for (claim, header) in self.forward.iter() {
            match claims.text(claim) {
                None => {}
                Some(Ok(text)) => out.push((header.clone(), text.into())),
                Some(Err(reason)) => return Err(AuthError::Invalid(reason)),
            }
        }
        Ok(out)
    }
}

fn numeric_date(map: &Map<String, Value>, name: &str) -> Result<Option<f64>, AuthError> {
    match map.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or(AuthError::Invalid(Invalid::Malformed)),
    }
}

/// RFC 7515 §2: base64url without padding; non-canonical trailing bits are refused too, so
/// one token has exactly one spelling (and one cache entry).
fn b64(segment: &[u8]) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Invalid(Invalid::Malformed))
}

fn read(path: &Path) -> Result<Vec<u8>, AuthConfigError> {
    std::fs::read(path).map_err(|source| AuthConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn key_error(path: &Path, reason: impl Into<String>) -> AuthConfigError {
    AuthConfigError::KeyFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn secret_keys(secret: &[u8], algorithms: &[Algorithm]) -> Result<Vec<Key>, AuthConfigError> {
    algorithms
        .iter()
        .map(|&algorithm| {
            let (hmac_alg, min) = algorithm.hmac();
            if secret.len() < min {
                return Err(AuthConfigError::ShortSecret {
                    algorithm: algorithm.as_str(),
                    len: secret.len(),
                    min,
                });
            }
            Ok(Key {
                kid: None,
                algorithm,
                check: Check::Hmac(Box::new(hmac::Key::new(hmac_alg, secret))),
            })
        })
        .collect()
}

/// The public key material of one PEM or JWK, before it is bound to algorithms.
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    RsaDer(Vec<u8>),
    /// An uncompressed point (0x04 || x || y), P-256 or P-384 by its length.
    Ec(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl Material {
    fn describe(&self) -> &'static str {
        match self {
            Material::Rsa { .. } | Material::RsaDer(_) => "an RSA key",
            Material::Ec(point) if point.len() == 65 => "an EC P-256 key",
            Material::Ec(_) => "an EC P-384 key",
            Material::Ed25519(_) => "an Ed25519 key",
        }
    }

    /// Whether this key can verify `algorithm` (curve included).
    fn fits(&self, algorithm: Algorithm) -> bool {
        match (self, algorithm) {
            (Material::Rsa { .. } | Material::RsaDer(_), a) => a.family() == Family::Rsa,
            (Material::Ec(point), Algorithm::ES256) => point.len() == 65,
            (Material::Ec(point), Algorithm::ES384) => point.len() == 97,
            (Material::Ed25519(_), Algorithm::EdDSA) => true,
            _ => false,
        }
    }

    fn rsa_bits(&self) -> Option<usize> {
        match self {
            Material::Rsa { n, .. } => {
                let n = &n[n.iter().take_while(|&&b| b == 0).count()..];
                let top = n.first().map_or(0, |b| 8 - b.leading_zeros() as usize);
                Some(n.len().saturating_sub(1) * 8 + top)
            }
            Material::RsaDer(der) => aws_lc_rs::rsa::PublicKey::from_der(der)
                .ok()
                .map(|k| k.modulus_len() * 8),
            _ => None,
        }
    }

    fn parse(&self, algorithm: Algorithm) -> Result<ParsedPublicKey, String> {
        let parsed = match self {
            Material::Rsa { n, e } => {
                RsaPublicKeyComponents { n, e }.to_parsed_public_key(algorithm.rsa_params())
            }
            Material::RsaDer(der) => ParsedPublicKey::new(algorithm.rsa_params(), der),
            Material::Ec(point) if algorithm == Algorithm::ES384 => {
                ParsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
            }
            Material::Ec(point) => ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point),
            Material::Ed25519(x) => ParsedPublicKey::new(&signature::ED25519, x),
        };
        parsed.map_err(|e| format!("{} is not usable for {algorithm}: {e}", self.describe()))
    }

    /// The keys this material yields for the policy's algorithms it fits.
    fn bind(
        &self,
        kid: Option<&str>,
        algorithms: impl Iterator<Item = Algorithm>,
    ) -> Result<Vec<Key>, String> {
        if let Some(bits) = self.rsa_bits() {
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
                ));
            }
        }
        algorithms
            .filter(|&a| self.fits(a))
            .map(|algorithm| {
                Ok(Key {
                    kid: kid.map(Into::into),
                    algorithm,
                    check: Check::Public(self.parse(algorithm)?),
                })
            })
            .collect()
    }
}

fn pem_keys(path: &Path, algorithms: &[Algorithm]) -> Result<Vec<Key>, AuthConfigError> {
    let text = read(path)?;
    if text.windows(11).any(|w| w == b"PRIVATE KEY") {
        return Err(key_error(
            path,
            "holds a private key; give the public key (`openssl pkey -pubout`)",
        ));
    }
    let material = DecodingKey::from_rsa_pem(&text)
        .ok()
        .and_then(|k| der_of(&k).map(Material::RsaDer))
        .or_else(|| {
            let k = DecodingKey::from_ec_pem(&text).ok()?;
            der_of(&k).map(Material::Ec)
        })
        .or_else(|| {
            let k = DecodingKey::from_ed_pem(&text).ok()?;
            der_of(&k).map(Material::Ed25519)
        })
        .ok_or_else(|| {
            key_error(
                path,
                "is not a PEM public key (RSA, EC P-256/P-384 or Ed25519)",
            )
        })?;
    let keys = material
        .bind(None, algorithms.iter().copied())
        .map_err(|reason| key_error(path, reason))?;
    if let Some(missing) = algorithms
        .iter()
        .find(|a| !keys.iter().any(|k| k.algorithm == **a))
    {
        return Err(key_error(
            path,
            format!(
                "holds {}, which cannot verify {missing} (listed in `algorithms`)",
                material.describe()
            ),
        ));
    }
    Ok(keys)
}

fn der_of(key: &DecodingKey) -> Option<Vec<u8>> {
    match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => Some(bytes.clone()),
        DecodingKeyKind::RsaModulusExponent { .. } => None,
    }
}

fn jwks_keys(path: &Path, algorithms: &[Algorithm]) -> Result<Vec<Key>, AuthConfigError> {
    #[derive(Deserialize)]
    struct Jwks {
        keys: Vec<Value>,
    }
    let text = read(path)?;
    let set: Jwks = serde_json::from_slice(&text)
        .map_err(|e| key_error(path, format!("is not a JWKS (RFC 7517 §5): {e}")))?;
    let mut keys: Vec<Key> = Vec::new();
    for (index, raw) in set.keys.into_iter().enumerate() {
        let jwk: Jwk = serde_json::from_value(raw)
            .map_err(|e| key_error(path, format!("key #{index}: {e}")))?;
        let kid = jwk.common.key_id.as_deref();
        let name = || match kid {
            Some(kid) => format!("key #{index} (kid {kid:?})"),
            None => format!("key #{index}"),
        };
        // RFC 7517 §4.2: a key marked for encryption is not a signature key.
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let material = match &jwk.algorithm {
            // RFC 7517 §5: keys of a type not understood are ignored.
            AlgorithmParameters::Other(_) => continue,
            AlgorithmParameters::OctetKey(_) => {
                return Err(key_error(
                    path,
                    format!(
                        "{} is a symmetric (oct) key; HMAC secrets come from `secret_env`",
                        name()
                    ),
                ));
            }
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P521 => continue,
            AlgorithmParameters::OctetKeyPair(p) if p.curve != EllipticCurve::Ed25519 => continue,
            params => {
                let decoded = DecodingKey::from_jwk(&jwk)
                    .map_err(|e| key_error(path, format!("{}: {e}", name())))?;
                match (params, decoded.kind()) {
                    (_, DecodingKeyKind::RsaModulusExponent { n, e }) => Material::Rsa {
                        n: n.clone(),
                        e: e.clone(),
                    },
                    (AlgorithmParameters::EllipticCurve(_), DecodingKeyKind::SecretOrDer(p)) => {
                        Material::Ec(p.clone())
                    }
                    (_, DecodingKeyKind::SecretOrDer(x)) => Material::Ed25519(x.clone()),
                }
            }
        };
        // RFC 7517 §4.4: a key's `alg` restricts it to that algorithm.
        let only = match &jwk.common.key_algorithm {
            None => None,
            Some(alg) => match Algorithm::parse(&alg.to_string()) {
                Some(a) => Some(a),
                None => continue,
            },
        };
        let usable = algorithms
            .iter()
            .copied()
            .filter(|a| only.is_none_or(|only| only == *a));
        let bound = material
            .bind(kid, usable)
            .map_err(|reason| key_error(path, format!("{}: {reason}", name())))?;
        for key in bound {
            if keys
                .iter()
                .any(|k| k.algorithm == key.algorithm && k.kid == key.kid)
            {
                return Err(key_error(
                    path,
                    format!("{}: another key has the same kid", name()),
                ));
            }
            keys.push(key);
        }
    }
    if keys.is_empty() {
        let names: Vec<_> = algorithms.iter().map(|a| a.as_str()).collect();
        return Err(key_error(
            path,
            format!("has no signature key for {}", names.join(", ")),
        ));
    }
    Ok(keys)
}
