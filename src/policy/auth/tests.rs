//! JWT verification and the token cache, with keys generated here (aws-lc-rs) and tokens
//! signed here: the JWS compact form is spelled out by hand so every malformation can be made.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

use super::*;

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Keys {
    rsa: RsaKeyPair,
    rsa2: RsaKeyPair,
    p256: EcdsaKeyPair,
    p384: EcdsaKeyPair,
    ed: Ed25519KeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        rsa2: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        p256: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        p384: EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(),
        ed: Ed25519KeyPair::generate().unwrap(),
    })
}

#[derive(Clone, Copy)]
enum Signer<'a> {
    Rsa(&'a RsaKeyPair, &'static dyn signature::RsaEncoding),
    Ec(&'a EcdsaKeyPair),
    Ed(&'a Ed25519KeyPair),
    Hmac(&'a [u8], hmac::Algorithm),
    /// An empty signature (`alg: none`).
    Unsigned,
}

impl Signer<'_> {
    fn sign(self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(key, encoding) => {
                let mut sig = vec![0; key.public_modulus_len()];
                key.sign(encoding, &rng, msg, &mut sig).unwrap();
                sig
            }
            Signer::Ec(key) => key.sign(&rng, msg).unwrap().as_ref().to_vec(),
            Signer::Ed(key) => key.sign(msg).as_ref().to_vec(),
            Signer::Hmac(secret, alg) => hmac::sign(&hmac::Key::new(alg, secret), msg)
                .as_ref()
                .to_vec(),
            Signer::Unsigned => Vec::new(),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS of `header` and `claims`, signed by `signer`.
fn jws(header: &Value, claims: &Value, signer: Signer<'_>) -> String {
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = signer.sign(signed.as_bytes());
    format!("{signed}.{}", b64(&sig))
}

fn rs256(claims: &Value) -> String {
    jws(
        &json!({"alg": "RS256", "typ": "JWT"}),
        claims,
        Signer::Rsa(&keys().rsa, &signature::RSA_PKCS1_SHA256),
    )
}

fn claims() -> Value {
    json!({"sub": "user-1", "iss": "auth.example.com", "aud": "dispatch", "iat": NOW - 10, "exp": NOW + 600})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().unwrap().remove(key);
    base
}

/// A key file a test wrote, removed when dropped: a verifier reads its keys once, when it is
/// built, so the file only has to outlive that.
struct TempFile(PathBuf);

impl TempFile {
    fn path(&self) -> PathBuf {
        self.0.clone()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_file(name: &str, content: &[u8]) -> TempFile {
    // One shared directory, never one per run: the files go when their test is done.
    let dir = std::env::temp_dir().join("dispatch-auth-tests");
    std::fs::create_dir_all(&dir).unwrap();
    // Tests (and test processes) run in parallel: each file gets its own name, so none reads
    // another's half-write.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}-{name}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    TempFile(path)
}

fn pem(der: &[u8]) -> Vec<u8> {
    let body = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out.into_bytes()
}

fn rsa_pem(key: &RsaKeyPair) -> Vec<u8> {
    pem(key.public_key().as_der().unwrap().as_ref())
}

fn spec(algorithms: &[Algorithm], keys: KeySource) -> JwtSpec {
    JwtSpec {
        algorithms: algorithms.to_vec(),
        keys,
        issuer: Some("auth.example.com".into()),
        audience: vec!["dispatch".into(), "other".into()],
        leeway: Duration::from_secs(30),
        required_claims: vec!["sub".into()],
        forward: vec![
            ("sub".into(), "X-User-Id".into()),
            ("roles".into(), "x-user-roles".into()),
        ],
        strip_authorization: true,
    }
}

fn rsa_verifier() -> JwtVerifier {
    let path = temp_file("rsa.pem", &rsa_pem(&keys().rsa));
    JwtVerifier::new(&spec(&[Algorithm::RS256], KeySource::Pem(path.path()))).unwrap()
}

fn invalid(reason: Invalid) -> Result<Claims, AuthError> {
    Err(AuthError::Invalid(reason))
}

/// Every algorithm family verifies a token its key signed: RSA (PKCS#1 and PSS), EC P-256 and
/// P-384, Ed25519 from PEM files, and HMAC from a secret.
#[test]
fn each_algorithm_family_is_accepted() {
    let k = keys();
    let rsa = temp_file("family-rsa.pem", &rsa_pem(&k.rsa));
    let rsa_algs = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
    ];
    let v = JwtVerifier::new(&spec(&rsa_algs, KeySource::Pem(rsa.path()))).unwrap();
    let encodings: [&'static dyn signature::RsaEncoding; 4] = [
        &signature::RSA_PKCS1_SHA256,
        &signature::RSA_PKCS1_SHA384,
        &signature::RSA_PKCS1_SHA512,
        &signature::RSA_PSS_SHA256,
    ];
    for (alg, encoding) in rsa_algs.into_iter().zip(encodings) {
        let t = jws(
            &json!({"alg": alg.as_str()}),
            &claims(),
            Signer::Rsa(&k.rsa, encoding),
        );
        assert!(v.verify(t.as_bytes(), NOW).is_ok(), "{alg}");
    }

    let cases: [(&str, Vec<u8>, Algorithm, Signer<'_>); 3] = [
        (
            "p256.pem",
            pem(k.p256.public_key().as_der().unwrap().as_ref()),
            Algorithm::ES256,
            Signer::Ec(&k.p256),
        ),
        (
            "p384.pem",
            pem(k.p384.public_key().as_der().unwrap().as_ref()),
            Algorithm::ES384,
            Signer::Ec(&k.p384),
        ),
        (
            "ed.pem",
            pem(k.ed.public_key().as_der().unwrap().as_ref()),
            Algorithm::EdDSA,
            Signer::Ed(&k.ed),
        ),
    ];
    for (name, pem, alg, signer) in cases {
        let v =
            JwtVerifier::new(&spec(&[alg], KeySource::Pem(temp_file(name, &pem).path()))).unwrap();
        let t = jws(&json!({"alg": alg.as_str()}), &claims(), signer);
        let got = v.verify(t.as_bytes(), NOW).unwrap();
        assert_eq!(got.get("sub"), Some(&json!("user-1")), "{alg}");
    }

    let hs = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
    let v = JwtVerifier::new(&spec(&hs, KeySource::Secret(SECRET.to_vec()))).unwrap();
    for (alg, h) in hs
        .into_iter()
        .zip([hmac::HMAC_SHA256, hmac::HMAC_SHA384, hmac::HMAC_SHA512])
    {
        let t = jws(
            &json!({"alg": alg.as_str()}),
            &claims(),
            Signer::Hmac(SECRET, h),
        );
        assert!(v.verify(t.as_bytes(), NOW).is_ok(), "{alg}");
    }
}

/// A token made by jsonwebtoken's own encoder (another implementation of the JWS form) verifies.
#[test]
fn a_token_from_jsonwebtoken_verifies() {
    let k = keys();
    let pkcs8 = k.p256.to_pkcs8v1().unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims(),
        &key,
    )
    .unwrap();
    let path = temp_file(
        "jwt-p256.pem",
        &pem(k.p256.public_key().as_der().unwrap().as_ref()),
    );
    let v = JwtVerifier::new(&spec(&[Algorithm::ES256], KeySource::Pem(path.path()))).unwrap();
    assert!(v.verify(t.as_bytes(), NOW).is_ok());
}

/// `alg: none` is refused, with or without a signature segment, and whatever its case.
#[test]
fn alg_none_is_refused() {
    let v = rsa_verifier();
    for alg in ["none", "None", "NONE"] {
        let t = jws(&json!({"alg": alg}), &claims(), Signer::Unsigned);
        assert_eq!(
            v.verify(t.as_bytes(), NOW),
            invalid(Invalid::Algorithm),
            "{alg}"
        );
        let forged = format!("{t}{}", b64(b"sig"));
        assert_eq!(
            v.verify(forged.as_bytes(), NOW),
            invalid(Invalid::Algorithm)
        );
    }
    let no_alg = jws(&json!({"typ": "JWT"}), &claims(), Signer::Unsigned);
    assert_eq!(
        v.verify(no_alg.as_bytes(), NOW),
        invalid(Invalid::Malformed)
    );
}

/// Algorithm confusion: an HS256 token whose secret is the RSA public key's own bytes is
/// refused by an RS256 policy, and a policy cannot pair HS* with a key file.
#[test]
fn hmac_with_the_public_key_as_secret_is_refused() {
    let v = rsa_verifier();
    let pem = rsa_pem(&keys().rsa);
    let der = keys().rsa.public_key().as_der().unwrap();
    for secret in [&pem[..], der.as_ref()] {
        let t = jws(
            &json!({"alg": "HS256"}),
            &claims(),
            Signer::Hmac(secret, hmac::HMAC_SHA256),
        );
        assert_eq!(v.verify(t.as_bytes(), NOW), invalid(Invalid::Algorithm));
    }
    let path = temp_file("confusion.pem", &pem);
    let err = JwtVerifier::new(&spec(
        &[Algorithm::RS256, Algorithm::HS256],
        KeySource::Pem(path.path()),
    ))
    .err()
    .unwrap();
    assert!(err.to_string().contains("HS256 take a secret"), "{err}");
    let err = JwtVerifier::new(&spec(&[Algorithm::RS256], KeySource::Secret(SECRET.into())))
        .err()
        .unwrap();
    assert!(err.to_string().contains("RS256 need a public key"), "{err}");
}

/// An algorithm the policy does not list is refused even when its signature is good.
#[test]
fn an_algorithm_outside_the_list_is_refused() {
    let v = rsa_verifier();
    let t = jws(
        &json!({"alg": "RS512"}),
        &claims(),
        Signer::Rsa(&keys().rsa, &signature::RSA_PKCS1_SHA512),
    );
    assert_eq!(v.verify(t.as_bytes(), NOW), invalid(Invalid::Algorithm));
}

/// `exp` is required; past it (plus leeway) an authentic token is `Token expired`.
#[test]
fn expiry_is_required_and_checked_with_leeway() {
    let v = rsa_verifier();
    let exp = NOW + 600;
    let t = rs256(&claims());
    assert!(v.verify(t.as_bytes(), exp - 1).is_ok());
    // Within the 30 s leeway.
    assert!(v.verify(t.as_bytes(), exp + 29).is_ok());
    assert_eq!(v.verify(t.as_bytes(), exp + 30), Err(AuthError::Expired));
    assert_eq!(v.verify(t.as_bytes(), exp + 3600), Err(AuthError::Expired));

    let no_exp = rs256(&without(claims(), "exp"));
    assert_eq!(v.verify(no_exp.as_bytes(), NOW), invalid(Invalid::NoExpiry));
    let text_exp = rs256(&with(claims(), "exp", json!("9999999999")));
    assert_eq!(
        v.verify(text_exp.as_bytes(), NOW),
        invalid(Invalid::NoExpiry)
    );
    // A fractional NumericDate (RFC 7519 §2) is a number like any other.
    let frac = rs256(&with(claims(), "exp", json!(NOW as f64 + 0.5)));
    assert!(v.verify(frac.as_bytes(), NOW).is_ok());
}

/// An expired token whose signature is bad is `Invalid token`, not `Token expired`: the
/// expiry of a forgery is not reported.
#[test]
fn an_expired_forgery_is_invalid_not_expired() {
    let v = rsa_verifier();
    let t = jws(
        &json!({"alg": "RS256"}),
        &with(claims(), "exp", json!(NOW - 3600)),
        Signer::Rsa(&keys().rsa2, &signature::RSA_PKCS1_SHA256),
    );
    assert_eq!(v.verify(t.as_bytes(), NOW), invalid(Invalid::Signature));
}

/// `nbf` in the future (beyond leeway) is refused; within leeway it is accepted.
#[test]
fn nbf_in_the_future_is_refused() {
    let v = rsa_verifier();
    let t = rs256(&with(claims(), "nbf", json!(NOW + 60)));
    assert_eq!(v.verify(t.as_bytes(), NOW), invalid(Invalid::NotYetValid));
    assert!(v.verify(t.as_bytes(), NOW + 30).is_ok());
    let bad = rs256(&with(claims(), "nbf", json!("soon")));
    assert_eq!(v.verify(bad.as_bytes(), NOW), invalid(Invalid::Malformed));
}

/// `iat` later than now plus leeway is refused.
#[test]
fn iat_in_the_future_is_refused() {
    let v = rsa_verifier();
    let t = rs256(&with(claims(), "iat", json!(NOW + 31)));
    assert_eq!(
        v.verify(t.as_bytes(), NOW),
        invalid(Invalid::IssuedInFuture)
    );
    let t = rs256(&with(claims(), "iat", json!(NOW + 30)));
    assert!(v.verify(t.as_bytes(), NOW).is_ok());
}

/// A wrong or missing `iss` is refused.
#[test]
fn a_wrong_issuer_is_refused() {
    let v = rsa_verifier();
    for c in [
        with(claims(), "iss", json!("evil.example.com")),
        with(claims(), "iss", json!(["auth.example.com"])),
        without(claims(), "iss"),
    ] {
        assert_eq!(
            v.verify(rs256(&c).as_bytes(), NOW),
            invalid(Invalid::Issuer),
            "{c}"
        );
    }
}

/// `aud` must name one of the policy's audiences, as a string or in an array.
#[test]
fn the_audience_must_match_one_of_the_list() {
    let v = rsa_verifier();
    for ok in [json!("other"), json!(["x", "dispatch"]), json!(["other"])] {
        let t = rs256(&with(claims(), "aud", ok.clone()));
        assert!(v.verify(t.as_bytes(), NOW).is_ok(), "{ok}");
    }
    for bad in [json!("dispatcher"), json!(["x", "y"]), json!([]), json!(7)] {
        let t = rs256(&with(claims(), "aud", bad.clone()));
        assert_eq!(
            v.verify(t.as_bytes(), NOW),
            invalid(Invalid::Audience),
            "{bad}"
        );
    }
    let t = rs256(&without(claims(), "aud"));
    assert_eq!(v.verify(t.as_bytes(), NOW), invalid(Invalid::Audience));
}

/// A required claim that is absent or null is refused.
#[test]
fn a_missing_required_claim_is_refused() {
    let v = rsa_verifier();
    for c in [without(claims(), "sub"), with(claims(), "sub", Value::Null)] {
        assert_eq!(
            v.verify(rs256(&c).as_bytes(), NOW),
            invalid(Invalid::MissingClaim)
        );
    }
}

/// A signature by another key, a flipped signature byte, or a payload changed after signing
/// is refused.
#[test]
fn a_bad_signature_is_refused() {
    let v = rsa_verifier();
    let other = jws(
        &json!({"alg": "RS256"}),
        &claims(),
        Signer::Rsa(&keys().rsa2, &signature::RSA_PKCS1_SHA256),
    );
    assert_eq!(v.verify(other.as_bytes(), NOW), invalid(Invalid::Signature));

    let t = rs256(&claims());
    let dot = t.rfind('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(&t[dot + 1..]).unwrap();
    sig[10] ^= 1;
    let flipped = format!("{}.{}", &t[..dot], b64(&sig));
    assert_eq!(
        v.verify(flipped.as_bytes(), NOW),
        invalid(Invalid::Signature)
    );

    let parts: Vec<&str> = t.split('.').collect();
    let admin = b64(with(claims(), "sub", json!("admin")).to_string().as_bytes());
    let swapped = format!("{}.{admin}.{}", parts[0], parts[2]);
    assert_eq!(
        v.verify(swapped.as_bytes(), NOW),
        invalid(Invalid::Signature)
    );
    // A truncated signature.
    let short = format!("{}.{}", &t[..dot], b64(&sig[..100]));
    assert_eq!(v.verify(short.as_bytes(), NOW), invalid(Invalid::Signature));
}

fn jwk_rsa(key: &RsaKeyPair, kid: Option<&str>) -> Value {
    let public = key.public_key();
    let mut jwk = json!({
        "kty": "RSA",
        "use": "sig",
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero()),
    });
    if let Some(kid) = kid {
        jwk["kid"] = json!(kid);
    }
    jwk
}

fn jwks_verifier(
    name: &str,
    keys: Value,
    algorithms: &[Algorithm],
) -> Result<JwtVerifier, AuthConfigError> {
    let path = temp_file(name, json!({ "keys": keys }).to_string().as_bytes());
    assert!(matches!(
        KeySource::file(&path.path()),
        Ok(KeySource::Jwks(_))
    ));
    JwtVerifier::new(&spec(algorithms, KeySource::Jwks(path.path())))
}

fn signed_by(key: &RsaKeyPair, kid: Option<&str>) -> String {
    let header = match kid {
        Some(kid) => json!({"alg": "RS256", "kid": kid}),
        None => json!({"alg": "RS256"}),
    };
    jws(
        &header,
        &claims(),
        Signer::Rsa(key, &signature::RSA_PKCS1_SHA256),
    )
}

/// JWKS: the key is chosen by `kid`; an unknown `kid` is refused; a token signed by one key
/// but naming the other's `kid` fails its signature.
#[test]
fn jwks_selects_the_key_by_kid() {
    let k = keys();
    let ec = k.p256.public_key().as_ref();
    let set = json!([
        jwk_rsa(&k.rsa, Some("one")),
        jwk_rsa(&k.rsa2, Some("two")),
        {"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(&ec[1..33]), "y": b64(&ec[33..])},
        {"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "future-kty", "kid": "f"},
    ]);
    let v = jwks_verifier("kid.jwks", set, &[Algorithm::RS256, Algorithm::ES256]).unwrap();
    assert!(v
        .verify(signed_by(&k.rsa, Some("one")).as_bytes(), NOW)
        .is_ok());
    assert!(v
        .verify(signed_by(&k.rsa2, Some("two")).as_bytes(), NOW)
        .is_ok());
    let ec_token = jws(
        &json!({"alg": "ES256", "kid": "ec"}),
        &claims(),
        Signer::Ec(&k.p256),
    );
    assert!(v.verify(ec_token.as_bytes(), NOW).is_ok());
    assert_eq!(
        v.verify(signed_by(&k.rsa2, Some("one")).as_bytes(), NOW),
        invalid(Invalid::Signature)
    );
    for kid in ["three", "enc", "ec"] {
        assert_eq!(
            v.verify(signed_by(&k.rsa, Some(kid)).as_bytes(), NOW),
            invalid(Invalid::UnknownKey),
            "{kid}"
        );
    }
    // Two RSA keys: a token without `kid` is ambiguous.
    assert_eq!(
        v.verify(signed_by(&k.rsa, None).as_bytes(), NOW),
        invalid(Invalid::UnknownKey)
    );
}

/// A JWKS with one key for the algorithm accepts a token without `kid`; a key's own `alg`
/// restricts it.
#[test]
fn jwks_without_kid_uses_the_only_key() {
    let k = keys();
    let v = jwks_verifier(
        "single.jwks",
        json!([jwk_rsa(&k.rsa, None)]),
        &[Algorithm::RS256],
    )
    .unwrap();
    assert!(v.verify(signed_by(&k.rsa, None).as_bytes(), NOW).is_ok());
    assert_eq!(
        v.verify(signed_by(&k.rsa, Some("x")).as_bytes(), NOW),
        invalid(Invalid::UnknownKey)
    );

    let mut restricted = jwk_rsa(&k.rsa, Some("ps"));
    restricted["alg"] = json!("PS256");
    let v = jwks_verifier(
        "restricted.jwks",
        json!([restricted]),
        &[Algorithm::RS256, Algorithm::PS256],
    )
    .unwrap();
    assert_eq!(
        v.verify(signed_by(&k.rsa, Some("ps")).as_bytes(), NOW),
        invalid(Invalid::UnknownKey)
    );
    let ps = jws(
        &json!({"alg": "PS256", "kid": "ps"}),
        &claims(),
        Signer::Rsa(&k.rsa, &signature::RSA_PSS_SHA256),
    );
    assert!(v.verify(ps.as_bytes(), NOW).is_ok());
}

/// Bad base64 (padding, a foreign character, non-canonical trailing bits), the wrong number
/// of segments and non-JSON segments are `Invalid token` before any signature is checked.
#[test]
fn malformed_tokens_are_refused_before_crypto() {
    let v = rsa_verifier();
    let t = rs256(&claims());
    let parts: Vec<&str> = t.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let not_json = b64(b"{not json");
    let array = b64(b"[1,2]");
    let cases = [
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}*.{s}"),
        format!("{h}.{p}.{s}=="),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}.{p}.{s}.{s}.{s}"),
        format!("{not_json}.{p}.{s}"),
        String::new(),
        "Bearer".into(),
        // A payload with a bad character is refused as malformed, not as a bad signature:
        // decoding happens first.
        format!("{h}.{}+.{s}", &p[..p.len() - 1]),
    ];
    for case in &cases {
        assert_eq!(
            v.verify(case.as_bytes(), NOW),
            invalid(Invalid::Malformed),
            "{case}"
        );
    }
    // An empty payload is well-formed base64: its signature decides.
    let empty = format!("{h}..{s}");
    assert_eq!(v.verify(empty.as_bytes(), NOW), invalid(Invalid::Signature));
    // Non-canonical: the last character of a 2-byte tail carries bits that must be zero.
    let head = b64(br#"{"alg":"RS256" }"#);
    assert_eq!(head.len() % 4, 2);
    let mut chars: Vec<u8> = head.into_bytes();
    let last = chars.last_mut().unwrap();
    *last = if *last == b'A' { b'B' } else { b'A' };
    let loose = format!("{}.{p}.{s}", String::from_utf8(chars).unwrap());
    assert_eq!(v.verify(loose.as_bytes(), NOW), invalid(Invalid::Malformed));
    // Claims that are JSON but not an object, under a valid signature.
    let signed = format!("{h}.{array}");
    let sig = Signer::Rsa(&keys().rsa, &signature::RSA_PKCS1_SHA256).sign(signed.as_bytes());
    let t = format!("{signed}.{}", b64(&sig));
    assert_eq!(v.verify(t.as_bytes(), NOW), invalid(Invalid::Malformed));
}

/// A token over 8 KiB is refused as oversized, whatever it holds; one at the limit is read.
#[test]
fn oversized_tokens_are_refused() {
    let v = rsa_verifier();
    let garbage = vec![b'A'; jwt::MAX_TOKEN_LEN + 1];
    assert_eq!(v.verify(&garbage, NOW), invalid(Invalid::Oversized));
    let pad = "x".repeat(5400);
    let big = rs256(&with(claims(), "pad", json!(pad)));
    assert!(big.len() <= jwt::MAX_TOKEN_LEN);
    assert!(v.verify(big.as_bytes(), NOW).is_ok());
    let too_big = rs256(&with(claims(), "pad", json!("x".repeat(6200))));
    assert!(too_big.len() > jwt::MAX_TOKEN_LEN);
    assert_eq!(
        v.verify(too_big.as_bytes(), NOW),
        invalid(Invalid::Oversized)
    );
}

/// A `crit` header names an extension this verifier does not understand (RFC 7515 §4.1.11).
#[test]
fn critical_header_extensions_are_refused() {
    let v = rsa_verifier();
    let t = jws(
        &json!({"alg": "RS256", "crit": ["b64"], "b64": false}),
        &claims(),
        Signer::Rsa(&keys().rsa, &signature::RSA_PKCS1_SHA256),
    );
    assert_eq!(v.verify(t.as_bytes(), NOW), invalid(Invalid::Critical));
}

/// Forwarded claims: strings as they are, arrays joined with ",", numbers and booleans as JSON
/// text, null or absent claims not set; header names lower-cased.
#[test]
fn forwarded_claims_follow_the_value_rules() {
    let mut s = spec(&[Algorithm::HS256], KeySource::Secret(SECRET.into()));
    s.forward = vec![
        ("sub".into(), "X-User-Id".into()),
        ("roles".into(), "x-user-roles".into()),
        ("level".into(), "x-level".into()),
        ("admin".into(), "x-admin".into()),
        ("none".into(), "x-none".into()),
        ("absent".into(), "x-absent".into()),
        ("org".into(), "x-org".into()),
        ("name".into(), "x-name".into()),
    ];
    let v = JwtVerifier::new(&s).unwrap();
    let c = json!({
        "sub": "u-1", "aud": "dispatch", "iss": "auth.example.com", "exp": NOW + 60,
        "roles": ["admin", "ops", 7], "level": 2.5, "admin": false, "none": null,
        "org": {"id": 1}, "name": "Zoë Ünal",
    });
    let t = jws(
        &json!({"alg": "HS256"}),
        &c,
        Signer::Hmac(SECRET, hmac::HMAC_SHA256),
    );
    let claims = v.verify(t.as_bytes(), NOW).unwrap();
    let got = v.forwarded(&claims).unwrap();
    let got: Vec<(&str, &str)> = got.iter().map(|(h, v)| (&**h, &**v)).collect();
    assert_eq!(
        got,
        [
            ("x-user-id", "u-1"),
            ("x-user-roles", "admin,ops,7"),
            ("x-level", "2.5"),
            ("x-admin", "false"),
            ("x-org", r#"{"id":1}"#),
            ("x-name", "Zoë Ünal"),
        ]
    );
    assert_eq!(
        v.forward_headers().collect::<Vec<_>>(),
        [
            "x-user-id",
            "x-user-roles",
            "x-level",
            "x-admin",
            "x-none",
            "x-absent",
            "x-org",
            "x-name"
        ]
    );
}

/// A claim to forward with CR/LF, another control byte, edge whitespace or a comma inside an
/// array element refuses the token: it is never forwarded, nor silently dropped.
#[test]
fn a_claim_that_cannot_be_a_header_value_refuses_the_token() {
    let v = JwtVerifier::new(&spec(&[Algorithm::HS256], KeySource::Secret(SECRET.into()))).unwrap();
    let mut cache = TokenCache::new(16);
    for (claim, value) in [
        ("sub", json!("u\r\nx-admin: 1")),
        ("sub", json!("u\n")),
        ("sub", json!("u\u{0}")),
        ("sub", json!("u\u{7f}")),
        ("sub", json!(" admin")),
        ("sub", json!("admin\t")),
        ("roles", json!(["a,b", "c"])),
        ("roles", json!(["a", "b\r\n"])),
    ] {
        let c = with(claims(), claim, value.clone());
        let t = jws(
            &json!({"alg": "HS256"}),
            &c,
            Signer::Hmac(SECRET, hmac::HMAC_SHA256),
        );
        let verified = v.verify(t.as_bytes(), NOW).unwrap();
        assert_eq!(
            v.forwarded(&verified),
            Err(AuthError::Invalid(Invalid::ForwardedValue)),
            "{value}"
        );
        assert_eq!(
            cache.verify(&v, t.as_bytes(), NOW),
            Err(AuthError::Invalid(Invalid::ForwardedValue))
        );
    }
    assert!(cache.is_empty());
}

/// The three messages of BEHAVIOR.md and their RFC 6750 challenges.
#[test]
fn errors_carry_the_messages_and_challenges() {
    assert_eq!(AuthError::Missing.message(), "Missing authentication token");
    assert_eq!(AuthError::Expired.message(), "Token expired");
    assert_eq!(
        AuthError::Invalid(Invalid::Signature).message(),
        "Invalid token"
    );
    assert_eq!(
        AuthError::Missing.www_authenticate(),
        r#"Bearer realm="dispatch""#
    );
    assert_eq!(
        AuthError::Expired.www_authenticate(),
        r#"Bearer realm="dispatch", error="invalid_token", error_description="The token expired""#
    );
    assert_eq!(
        AuthError::Invalid(Invalid::UnknownKey).www_authenticate(),
        r#"Bearer realm="dispatch", error="invalid_token", error_description="The token key is unknown""#
    );
}

/// Each reason's challenge quotes exactly its description (the two lists are kept by hand).
#[test]
fn challenge_repeats_the_description() {
    use Invalid::*;
    for reason in [
        Oversized,
        Malformed,
        Algorithm,
        Critical,
        UnknownKey,
        Signature,
        NoExpiry,
        NotYetValid,
        IssuedInFuture,
        Issuer,
        Audience,
        MissingClaim,
        ForwardedValue,
        UnknownApiKey,
        AmbiguousApiKey,
    ] {
        let expect = format!(
            r#"Bearer realm="dispatch", error="invalid_token", error_description="{}""#,
            reason.description()
        );
        assert_eq!(AuthError::Invalid(reason).www_authenticate(), expect);
    }
}

/// Policies that cannot work fail at load with a message naming the file or the setting.
#[test]
fn bad_policies_fail_at_load() {
    let k = keys();
    let err = |s: JwtSpec| JwtVerifier::new(&s).err().unwrap().to_string();

    assert!(err(spec(&[], KeySource::Secret(SECRET.into()))).contains("`algorithms` is empty"));
    let short = err(spec(
        &[Algorithm::HS512],
        KeySource::Secret(SECRET[..48].into()),
    ));
    assert!(short.contains("HS512 needs at least 64"), "{short}");

    let missing = err(spec(
        &[Algorithm::RS256],
        KeySource::Pem("/nonexistent/k.pem".into()),
    ));
    assert!(missing.contains("/nonexistent/k.pem"), "{missing}");

    let private = temp_file(
        "private.pem",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let e = err(spec(&[Algorithm::RS256], KeySource::Pem(private.path())));
    assert!(
        e.contains("private.pem") && e.contains("private key"),
        "{e}"
    );

    let junk = temp_file("junk.pem", b"not a key");
    let e = err(spec(&[Algorithm::RS256], KeySource::Pem(junk.path())));
    assert!(
        e.contains("junk.pem") && e.contains("not a PEM public key"),
        "{e}"
    );

    let ec = temp_file(
        "ec-for-rsa.pem",
        &pem(k.p256.public_key().as_der().unwrap().as_ref()),
    );
    let e = err(spec(&[Algorithm::RS256], KeySource::Pem(ec.path())));
    assert!(e.contains("EC P-256 key, which cannot verify RS256"), "{e}");
    let e = err(spec(&[Algorithm::ES384], KeySource::Pem(ec.path())));
    assert!(e.contains("cannot verify ES384"), "{e}");

    let oct = jwks_verifier(
        "oct.jwks",
        json!([{"kty": "oct", "k": b64(SECRET)}]),
        &[Algorithm::RS256],
    );
    assert!(oct.err().unwrap().to_string().contains("symmetric (oct)"));

    let mut weak = jwk_rsa(&k.rsa, Some("weak"));
    let n = k
        .rsa
        .public_key()
        .modulus()
        .big_endian_without_leading_zero()[..128]
        .to_vec();
    weak["n"] = json!(b64(&n));
    let e = jwks_verifier("weak.jwks", json!([weak]), &[Algorithm::RS256])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("1024 bits"), "{e}");

    let dup = json!([jwk_rsa(&k.rsa, Some("a")), jwk_rsa(&k.rsa2, Some("a"))]);
    let e = jwks_verifier("dup.jwks", dup, &[Algorithm::RS256])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("same kid"), "{e}");

    let none = jwks_verifier(
        "none.jwks",
        json!([jwk_rsa(&k.rsa, None)]),
        &[Algorithm::ES256],
    );
    assert!(none
        .err()
        .unwrap()
        .to_string()
        .contains("no signature key for ES256"));

    for (header, why) in [
        ("x user", "not a valid header name"),
        ("Content-Length", "framing"),
        ("authorization", "credential"),
    ] {
        let mut s = spec(&[Algorithm::HS256], KeySource::Secret(SECRET.into()));
        s.forward = vec![("sub".into(), header.into())];
        let e = err(s);
        assert!(e.contains(header) && e.contains(why), "{e}");
    }
}

fn hs_token(c: &Value) -> String {
    jws(
        &json!({"alg": "HS256"}),
        c,
        Signer::Hmac(SECRET, hmac::HMAC_SHA256),
    )
}

fn hs_verifier() -> JwtVerifier {
    JwtVerifier::new(&spec(&[Algorithm::HS256], KeySource::Secret(SECRET.into()))).unwrap()
}

/// A cache hit returns the very verification of the first request (same claims and headers).
#[test]
fn cache_hit_returns_the_same_verification() {
    let v = rsa_verifier();
    let mut cache = TokenCache::new(64);
    let t = rs256(&with(claims(), "roles", json!(["a", "b"])));
    let first = cache.verify(&v, t.as_bytes(), NOW).unwrap();
    let again = cache.verify(&v, t.as_bytes(), NOW + 1).unwrap();
    assert!(Rc::ptr_eq(&first, &again));
    assert_eq!(first.claims, v.verify(t.as_bytes(), NOW).unwrap());
    assert_eq!(
        first.forward,
        vec![
            ("x-user-id".into(), "user-1".into()),
            ("x-user-roles".into(), "a,b".into())
        ]
    );
    assert_eq!(cache.len(), 1);
}

/// A cached token stops being served at its `exp`: from then on each request verifies again
/// (leeway applying, nothing stored) until it is `Token expired`.
#[test]
fn cache_entry_expires_at_exp() {
    let v = hs_verifier();
    let mut cache = TokenCache::new(64);
    let exp = NOW + 600;
    let t = hs_token(&claims());
    let first = cache.verify(&v, t.as_bytes(), NOW).unwrap();
    let hit = cache.verify(&v, t.as_bytes(), exp - 1).unwrap();
    assert!(Rc::ptr_eq(&first, &hit));
    let after = cache.verify(&v, t.as_bytes(), exp).unwrap();
    assert!(!Rc::ptr_eq(&first, &after), "served from the cache at exp");
    assert!(cache.is_empty());
    assert_eq!(
        cache.verify(&v, t.as_bytes(), exp + 30),
        Err(AuthError::Expired)
    );
    // A token first seen inside its leeway is verified, not stored.
    let late = hs_token(&with(claims(), "exp", json!(NOW - 5)));
    assert!(cache.verify(&v, late.as_bytes(), NOW).is_ok());
    assert!(cache.is_empty());
}

/// A hit is re-checked against `nbf`: should the clock step back, the cache does not vouch
/// for a token that is not valid yet.
#[test]
fn cache_hit_is_rechecked_against_nbf() {
    let v = hs_verifier();
    let mut cache = TokenCache::new(64);
    let t = hs_token(&with(claims(), "nbf", json!(NOW)));
    assert!(cache.verify(&v, t.as_bytes(), NOW).is_ok());
    assert_eq!(
        cache.verify(&v, t.as_bytes(), NOW - 31),
        Err(AuthError::Invalid(Invalid::NotYetValid))
    );
}

/// Refusals are not cached, a reloaded verifier empties the cache, capacity bounds it, and
/// capacity 0 verifies every time.
#[test]
fn cache_is_bounded_and_tied_to_its_verifier() {
    let v = hs_verifier();
    let mut cache = TokenCache::new(8);
    let bad = format!("{}x", hs_token(&claims()));
    assert!(cache.verify(&v, bad.as_bytes(), NOW).is_err());
    assert!(cache.is_empty());

    for i in 0..100 {
        let t = hs_token(&with(claims(), "jti", json!(i)));
        cache.verify(&v, t.as_bytes(), NOW).unwrap();
        assert!(cache.len() <= 8, "{} entries", cache.len());
    }
    let t = hs_token(&claims());
    let first = cache.verify(&v, t.as_bytes(), NOW).unwrap();
    let reloaded = hs_verifier();
    let after = cache.verify(&reloaded, t.as_bytes(), NOW).unwrap();
    assert!(!Rc::ptr_eq(&first, &after));
    assert_eq!(cache.len(), 1);

    let mut off = TokenCache::new(0);
    let a = off.verify(&v, t.as_bytes(), NOW).unwrap();
    let b = off.verify(&v, t.as_bytes(), NOW).unwrap();
    assert!(!Rc::ptr_eq(&a, &b));
    assert!(off.is_empty());
}

/// The secret never shows in debug output (a config dump, a panic message), the key files do.
#[test]
fn debug_output_hides_the_secret() {
    let s = spec(&[Algorithm::HS256], KeySource::Secret(SECRET.into()));
    let text = format!("{s:?} {:?}", JwtVerifier::new(&s).unwrap());
    assert!(text.contains("Secret(<64 bytes>)"), "{text}");
    assert!(!text.contains("0123456789abcdef"), "{text}");
}

/// Compiled policies are shared by every worker through the config snapshot.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<JwtVerifier>();
    shared::<ApiKeyVerifier>();
};
