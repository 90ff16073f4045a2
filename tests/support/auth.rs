//! Test support for tests/auth.rs: signing keys generated here with aws-lc-rs (two RSA 2048
//! keys and an EC P-256 key, made once per test binary), their public halves as PEM files and
//! JWKs, compact JWS tokens signed here (the form is spelled out by hand, so a test can make
//! any malformation: `alg: none`, a forged HMAC, a bad segment), API-key digests for a keys
//! file, what an echoing upstream saw, and the check of a 401.

use std::sync::OnceLock;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

use super::client::Response;

/// The keys every test of a binary signs with.
pub struct Keys {
    /// The RS256 signer of the PEM and JWKS policies.
    pub rsa: RsaKeyPair,
    /// Another RSA key: a token it signs has a bad signature for `rsa`'s policy, and a reload
    /// that installs its public key makes its tokens the good ones.
    pub rsa2: RsaKeyPair,
    /// The ES256 signer.
    pub p256: EcdsaKeyPair,
}

/// The binary's keys, generated on first use (RSA generation takes a while: once, not per test).
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: RsaKeyPair::generate(KeySize::Rsa2048).expect("generate RSA key"),
        rsa2: RsaKeyPair::generate(KeySize::Rsa2048).expect("generate RSA key"),
        p256: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("generate P-256 key"),
    })
}

/// What signs a token.
#[derive(Clone, Copy)]
pub enum Signer<'a> {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RS256).
    Rsa(&'a RsaKeyPair),
    /// ECDSA P-256 with SHA-256, fixed-size r || s (ES256, RFC 7518 §3.4).
    Ec(&'a EcdsaKeyPair),
    /// HMAC-SHA256 under these bytes (HS256).
    Hmac(&'a [u8]),
    /// No signature at all (`alg: none`, RFC 7519 §6.1: the third segment is empty).
    Unsigned,
}

impl Signer<'_> {
    fn sign(self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(key) => {
                let mut sig = vec![0; key.public_modulus_len()];
                key.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .expect("RSA sign");
                sig
            }
            Signer::Ec(key) => key.sign(&rng, msg).expect("EC sign").as_ref().to_vec(),
            Signer::Hmac(secret) => hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), msg)
                .as_ref()
                .to_vec(),
            Signer::Unsigned => Vec::new(),
        }
    }
}

/// base64url without padding (RFC 7515 §2).
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The compact JWS `b64(header).b64(claims).b64(signature)` (RFC 7515 §7.1).
pub fn jws(header: &Value, claims: &Value, signer: Signer<'_>) -> String {
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = signer.sign(signed.as_bytes());
    format!("{signed}.{}", b64(&sig))
}

/// An RS256 token of `claims` signed by `key`, with `kid` in the header when given.
pub fn rs256(key: &RsaKeyPair, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    jws(&header, claims, Signer::Rsa(key))
}

/// Seconds since the Unix epoch, now (the clock the gateway checks `exp`, `nbf`, `iat` on).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo) block of `der`.
fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

/// The PEM public key of an RSA key pair.
pub fn rsa_pem(key: &RsaKeyPair) -> String {
    pem(key.public_key().as_der().expect("RSA public DER").as_ref())
}

/// The PEM public key of an EC key pair.
pub fn ec_pem(key: &EcdsaKeyPair) -> String {
    pem(key.public_key().as_der().expect("EC public DER").as_ref())
}

/// The public JWK (RFC 7517 §4, RFC 7518 §6.3) of an RSA key, for signatures, with `kid`.
pub fn jwk_rsa(key: &RsaKeyPair, kid: &str) -> Value {
    let public = key.public_key();
    json!({
        "kty": "RSA",
        "use": "sig",
        "kid": kid,
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero()),
    })
}

/// Lower-case hex SHA-256 of `key`: how a keys file names an API key.
pub fn sha256_hex(key: &[u8]) -> String {
    digest::digest(&digest::SHA256, key)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What an `Upstream::echo()` upstream received, read from its answer: the target exactly as
/// it arrived and every header field in order.
pub struct Seen {
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The values of every field named `name` (any letter case), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of the one field named `name`; panics when there are several.
    pub fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "the upstream got {} {name} fields: {all:?}",
            all.len()
        );
        all.first().copied()
    }
}

/// What the echoing upstream saw for a request the gateway forwarded (`resp` must be its 200).
#[track_caller]
pub fn seen(resp: &Response) -> Seen {
    assert_eq!(
        resp.status,
        200,
        "expected the upstream's echo, got {} {:?} {}",
        resp.status,
        resp.headers,
        resp.text()
    );
    let v = resp.json();
    let target = v["target"].as_str().expect("echo target").to_string();
    let headers = v["headers"]
        .as_array()
        .expect("echo headers")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("header name").to_string(),
                pair[1].as_str().expect("header value").to_string(),
            )
        })
        .collect();
    Seen { target, headers }
}

/// `WWW-Authenticate` of a request without credentials (RFC 6750 §3.1: no error code).
pub const CHALLENGE_MISSING: &str = r#"Bearer realm="dispatch""#;

/// `WWW-Authenticate` of a refused credential whose reason reads `description`.
pub fn challenge(description: &str) -> String {
    format!(r#"Bearer realm="dispatch", error="invalid_token", error_description="{description}""#)
}

/// Asserts `resp` is the gateway's 401 (the JSON error body of BEHAVIOR.md) with exactly
/// `message` and exactly one `WWW-Authenticate: <challenge>`.
#[track_caller]
pub fn assert_refused(resp: &Response, message: &str, challenge: &str) {
    super::assert_error(resp, 401);
    assert_eq!(
        resp.json()["error"]["message"].as_str(),
        Some(message),
        "401 message: {}",
        resp.text()
    );
    assert_eq!(
        resp.header_all("www-authenticate"),
        vec![challenge],
        "WWW-Authenticate of a 401 with message {message:?}"
    );
}
