//! The cost of authenticating a request.
//!
//! What is compared, and why:
//! - `jwt_verify/{rs256,es256,hs256}`: one full verification of a typical ~700-byte token
//!   (decode, header, key, signature, claims, forwarded headers), uncached. RS256 is what most
//!   identity providers issue and the cost the cache exists to avoid; ES256 and HS256 show the
//!   other families. Keys are parsed at load, so this is signature plus JSON, nothing else.
//! - `jwt_cache/{hit,miss}` (RS256): the per-worker cache answering a reused token (SHA-256
//!   of the token plus a map probe) against a miss (the same plus the verification and the
//!   insert). The hit is the warm edge request of perf/compare.sh, the miss its cold one.
//! - `api_key/lookup`: an API key's SHA-256 and the constant-time digest comparison.

use std::hint::black_box;
use std::io::Write as _;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use dispatch::policy::auth::{
    Algorithm, ApiKeyField, ApiKeySpec, ApiKeyVerifier, JwtSpec, JwtVerifier, KeyFrom, KeySource,
    TokenCache,
};

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"a bench secret of at least thirty-two bytes for HS256";

fn claims(i: usize) -> String {
    format!(
        r#"{{"sub":"user-{i}","iss":"auth.example.com","aud":"dispatch","iat":{},"exp":{},"roles":["reader","writer"],"email":"user-{i}@example.com","plan":"business","jti":"{i:08}"}}"#,
        NOW - 60,
        NOW + 3600
    )
}

fn jws(alg: &str, claims: &str, sign: &dyn Fn(&[u8]) -> Vec<u8>) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn pem_file(name: &str, der: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("dispatch-bench-{}-{name}", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "-----BEGIN PUBLIC KEY-----").unwrap();
    for line in STANDARD.encode(der).as_bytes().chunks(64) {
        f.write_all(line).unwrap();
        f.write_all(b"\n").unwrap();
    }
    writeln!(f, "-----END PUBLIC KEY-----").unwrap();
    path
}

fn spec(algorithm: Algorithm, keys: KeySource) -> JwtSpec {
    JwtSpec {
        algorithms: vec![algorithm],
        keys,
        issuer: Some("auth.example.com".into()),
        audience: vec!["dispatch".into()],
        leeway: Duration::from_secs(30),
        required_claims: vec!["sub".into()],
        forward: vec![
            ("sub".into(), "x-user-id".into()),
            ("roles".into(), "x-user-roles".into()),
            ("email".into(), "x-user-email".into()),
            ("plan".into(), "x-user-plan".into()),
        ],
        strip_authorization: true,
    }
}

fn bench(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let rs_sign = |msg: &[u8]| {
        let mut sig = vec![0; rsa.public_modulus_len()];
        rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
            .unwrap();
        sig
    };
    let rs_pem = pem_file("rsa.pem", rsa.public_key().as_der().unwrap().as_ref());
    let rs = JwtVerifier::new(&spec(Algorithm::RS256, KeySource::Pem(rs_pem.clone()))).unwrap();
    // Keys are read once, when a verifier is built: the bench's files go at once.
    let _ = std::fs::remove_file(&rs_pem);
    let rs_token = jws("RS256", &claims(0), &rs_sign);

    let ec = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let ec_pem = pem_file("p256.pem", ec.public_key().as_der().unwrap().as_ref());
    let es = JwtVerifier::new(&spec(Algorithm::ES256, KeySource::Pem(ec_pem.clone()))).unwrap();
    let _ = std::fs::remove_file(&ec_pem);
    let es_token = jws("ES256", &claims(0), &|msg| {
        ec.sign(&rng, msg).unwrap().as_ref().to_vec()
    });

    let hs = JwtVerifier::new(&spec(Algorithm::HS256, KeySource::Secret(SECRET.into()))).unwrap();
    let hs_key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
    let hs_token = jws("HS256", &claims(0), &|msg| {
        hmac::sign(&hs_key, msg).as_ref().to_vec()
    });

    let mut group = c.benchmark_group("jwt_verify");
    for (name, verifier, token) in [
        ("rs256", &rs, &rs_token),
        ("es256", &es, &es_token),
        ("hs256", &hs, &hs_token),
    ] {
        assert!(verifier.verify(token.as_bytes(), NOW).is_ok());
        group.bench_function(name, |b| {
            b.iter(|| {
                let claims = verifier.verify(black_box(token.as_bytes()), NOW).unwrap();
                black_box(verifier.forwarded(&claims).unwrap())
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("jwt_cache");
    let mut cache = TokenCache::new(256);
    group.bench_function("hit", |b| {
        b.iter(|| {
            black_box(
                cache
                    .verify(&rs, black_box(rs_token.as_bytes()), NOW)
                    .unwrap(),
            )
        })
    });
    // A fresh cache per iteration (made outside the timing): a token cycled through a full
    // cache is not a pure miss, since S3-FIFO keeps part of a cyclic working set.
    group.bench_function("miss", |b| {
        b.iter_batched(
            || TokenCache::new(256),
            |mut cache| black_box(cache.verify(&rs, rs_token.as_bytes(), NOW).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let key = b"k-3f9a1c2e7b8d4f6a0c5e9b1d3f7a2c4e";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let keys_path =
        std::env::temp_dir().join(format!("dispatch-bench-{}-keys.toml", std::process::id()));
    let mut text = String::new();
    for i in 0..1000 {
        text.push_str(&format!(
            "[keys.\"{:064x}\"]\nconsumer = \"c{i}\"\n",
            i as u128 * 0x9e37_79b9_7f4a_7c15
        ));
    }
    text.push_str(&format!(
        "[keys.\"{hex}\"]\nconsumer = \"acme\"\nplan = \"business\"\n"
    ));
    std::fs::write(&keys_path, text).unwrap();
    let api = ApiKeyVerifier::new(&ApiKeySpec {
        from: KeyFrom::Header("x-api-key".into()),
        keys_file: keys_path.clone(),
        forward: vec![(ApiKeyField::Consumer, "x-consumer-id".into())],
    })
    .unwrap();
    let _ = std::fs::remove_file(&keys_path);
    c.bench_function("api_key/lookup", |b| {
        b.iter(|| black_box(api.lookup(black_box(key)).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
