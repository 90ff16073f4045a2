//! The demo's credentials, new at every start: an ES256 (P-256) key pair and a token it signs,
//! and an API key. [`Credentials::generate`] makes them; [`KeyFiles::write`] puts what the
//! gateway verifies them with (the public key as PEM, the API key's SHA-256 in a keys file)
//! in the `demo-keys/` directory beside the demo config, where its `[auth.*]` policies read
//! them.
//!
//! The TLS listener's certificate is made here too: self-signed (rcgen, ECDSA P-256) for
//! `localhost` and `127.0.0.1`, written with its key as `tls.crt` / `tls.key` in the same
//! directory; `curl --cacert` trusts it for the run. That key is on disk (the gateway reads
//! it), and removed with the rest.
//!
//! The one thing to know: the JWT private key never leaves this process, not even to disk. It signs
//! the one token printed in the tour and is dropped, so a token from an earlier run stops
//! working at the next start, and nothing secret is committed or left behind. [`KeyFiles`]
//! removes the files it wrote when dropped.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::DemoError;

/// Directory, beside the demo config, that holds the files the demo writes at start.
pub const KEYS_DIR: &str = "demo-keys";
/// The JWT policy's public key (PEM), in [`KEYS_DIR`].
pub const JWT_KEY_FILE: &str = "jwt.pub.pem";
/// The API-key policy's keys file, in [`KEYS_DIR`].
pub const API_KEYS_FILE: &str = "api_keys.toml";

/// The TLS listener's self-signed certificate (PEM), in [`KEYS_DIR`].
pub const TLS_CERT_FILE: &str = "tls.crt";
/// Its private key (PKCS#8 PEM), in [`KEYS_DIR`].
pub const TLS_KEY_FILE: &str = "tls.key";

/// `iss` of the token; the demo config's JWT policy requires it.
pub const ISSUER: &str = "dispatch-demo";
/// `aud` of the token; the demo config's JWT policy requires it.
pub const AUDIENCE: &str = "dispatch";
/// How long the printed token is valid.
pub const TOKEN_LIFETIME_SECS: u64 = 3600;

/// Who the token says the caller is: user `u_1` of the sample users service.
pub const SUBJECT: &str = "u_1";
pub const PLAN: &str = "business";
pub const ROLES: [&str; 2] = ["reader", "billing"];
/// Whom the API key belongs to, as its keys-file entry says.
pub const CONSUMER: &str = "acme-corp";
pub const CONSUMER_PLAN: &str = "partner";

/// This run's token and API key, and the public material that verifies them.
pub struct Credentials {
    /// An ES256 JWT (compact form) with `sub`, `plan`, `roles`, `iss`, `aud`, `iat`, `exp`.
    pub token: String,
    /// Unix time at which `token` expires.
    pub expires_at: u64,
    /// An API key: `demo_` and 32 hex digits (128 random bits).
    pub api_key: String,
    /// The token's verification key: a SubjectPublicKeyInfo PEM (RFC 7468 §13).
    public_key_pem: String,
    /// The TLS listener's self-signed certificate and its key, PEM.
    tls_cert_pem: String,
    tls_key_pem: String,
}

impl Credentials {
    /// A fresh key pair, a token signed with it at `now_unix` (valid for
    /// [`TOKEN_LIFETIME_SECS`]), and a fresh API key.
    pub fn generate(now_unix: u64) -> Result<Credentials, DemoError> {
        let fail = |what: &str| DemoError::Keys(what.to_string());
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| fail("cannot generate the P-256 key pair"))?;
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|_| fail("cannot encode the private key"))?;
        let public = pair
            .public_key()
            .as_der()
            .map_err(|_| fail("cannot encode the public key"))?;

        let expires_at = now_unix + TOKEN_LIFETIME_SECS;
        let claims = serde_json::json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": SUBJECT,
            "plan": PLAN,
            "roles": ROLES,
            "iat": now_unix,
            "exp": expires_at,
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
        .map_err(|e| DemoError::Keys(format!("cannot sign the demo token: {e}")))?;

        let mut random = [0u8; 16];
        SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| fail("no randomness for the API key"))?;
        let tls_key = rcgen::KeyPair::generate()
            .map_err(|e| DemoError::Keys(format!("cannot generate the TLS key: {e}")))?;
        let tls_cert =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .and_then(|params| params.self_signed(&tls_key))
                .map_err(|e| DemoError::Keys(format!("cannot make the TLS certificate: {e}")))?;
        Ok(Credentials {
            token,
            expires_at,
            api_key: format!("demo_{}", hex(&random)),
            public_key_pem: pem("PUBLIC KEY", public.as_ref()),
            tls_cert_pem: tls_cert.pem(),
            tls_key_pem: tls_key.serialize_pem(),
        })
    }

    /// The keys file of the API-key policy: the key's SHA-256, never the key (BEHAVIOR.md
    /// "Authentication").
    fn api_keys_toml(&self) -> String {
        let hex = hex(digest::digest(&digest::SHA256, self.api_key.as_bytes()).as_ref());
        format!(
            "# Written by `dispatch demo` at start and removed when it exits: the SHA-256 of the\n\
             # API key it printed.\n\
             [keys.\"{hex}\"]\nconsumer = \"{CONSUMER}\"\nplan = \"{CONSUMER_PLAN}\"\n"
        )
    }
}

/// Lower-case hex digits of `bytes`.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// RFC 7468 textual encoding: base64 in lines of 64 characters between the labels.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

/// The files [`KeyFiles::write`] wrote; dropping it removes them (and [`KEYS_DIR`] when it is
/// left empty).
pub struct KeyFiles {
    dir: PathBuf,
    written: Vec<PathBuf>,
}

impl KeyFiles {
    /// `<config dir>/demo-keys/`: where the demo config's key paths point.
    pub fn dir_for(config_path: &Path) -> PathBuf {
        config_path.parent().unwrap_or(Path::new("")).join(KEYS_DIR)
    }

    /// Writes the public key and the API keys file of `credentials` into [`KeyFiles::dir_for`]
    /// `config_path`, replacing the files an earlier run left there.
    pub fn write(config_path: &Path, credentials: &Credentials) -> Result<KeyFiles, DemoError> {
        let mut files = KeyFiles::new(config_path)?;
        files.write_all(credentials)?;
        Ok(files)
    }

    /// The directory created, nothing written yet.
    pub fn new(config_path: &Path) -> Result<KeyFiles, DemoError> {
        let dir = KeyFiles::dir_for(config_path);
        std::fs::create_dir_all(&dir).map_err(|source| DemoError::Files {
            path: dir.clone(),
            source,
        })?;
        Ok(KeyFiles {
            dir,
            written: Vec::new(),
        })
    }

    /// Writes every file of `credentials`, replacing what is there.
    pub fn write_all(&mut self, credentials: &Credentials) -> Result<(), DemoError> {
        for (name, contents) in [
            (JWT_KEY_FILE, credentials.public_key_pem.clone()),
            (API_KEYS_FILE, credentials.api_keys_toml()),
            (TLS_CERT_FILE, credentials.tls_cert_pem.clone()),
            (TLS_KEY_FILE, credentials.tls_key_pem.clone()),
        ] {
            self.write_one(name, &contents)?;
        }
        Ok(())
    }

    /// Writes the TLS certificate and key when no certificate is there: loading the config
    /// reads them, and a demo already running on this config keeps its own.
    pub fn write_tls_if_missing(&mut self, credentials: &Credentials) -> Result<(), DemoError> {
        if self.tls_cert().exists() {
            return Ok(());
        }
        self.write_one(TLS_CERT_FILE, &credentials.tls_cert_pem)?;
        self.write_one(TLS_KEY_FILE, &credentials.tls_key_pem)
    }

    fn write_one(&mut self, name: &str, contents: &str) -> Result<(), DemoError> {
        let path = self.dir.join(name);
        write_whole(&path, contents.as_bytes()).map_err(|source| DemoError::Files {
            path: path.clone(),
            source,
        })?;
        if !self.written.contains(&path) {
            self.written.push(path);
        }
        Ok(())
    }

    /// The path of the TLS listener's certificate (what `curl --cacert` takes).
    pub fn tls_cert(&self) -> PathBuf {
        self.dir.join(TLS_CERT_FILE)
    }

    /// The path of the JWT public key.
    pub fn jwt_key(&self) -> PathBuf {
        self.dir.join(JWT_KEY_FILE)
    }

    /// The path of the API keys file.
    pub fn api_keys(&self) -> PathBuf {
        self.dir.join(API_KEYS_FILE)
    }
}

/// Writes `bytes` to a sibling temp file and renames it over `path`: a reload that reads the
/// file meanwhile sees the old or the new contents, never half of one.
fn write_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

impl Drop for KeyFiles {
    fn drop(&mut self) {
        for path in &self.written {
            let _ = std::fs::remove_file(path);
        }
        // Only if empty: anything else there is not ours.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::auth::{Algorithm, ApiKeySpec, ApiKeyVerifier, JwtSpec, JwtVerifier};
    use crate::policy::auth::{AuthError, Invalid, KeyFrom, KeySource};

    const NOW: u64 = 1_800_000_000;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "dispatch-demo-credentials-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("demo.toml")
    }

    fn verifier(files: &KeyFiles) -> JwtVerifier {
        JwtVerifier::new(&JwtSpec {
            algorithms: vec![Algorithm::ES256],
            keys: KeySource::file(&files.jwt_key()).unwrap(),
            issuer: Some(ISSUER.into()),
            audience: vec![AUDIENCE.into()],
            leeway: std::time::Duration::ZERO,
            required_claims: vec!["sub".into()],
            forward: vec![("sub".into(), "x-user-id".into())],
            strip_authorization: true,
        })
        .unwrap()
    }

    /// The token verifies against the public key written for it, with the claims the tour
    /// promises, until it expires; the written keys file knows the API key by its digest.
    #[test]
    fn the_written_files_verify_this_runs_credentials() {
        let config = scratch("verify");
        let creds = Credentials::generate(NOW).unwrap();
        let files = KeyFiles::write(&config, &creds).unwrap();
        assert_eq!(
            files.jwt_key(),
            config.parent().unwrap().join("demo-keys/jwt.pub.pem")
        );

        let claims = verifier(&files)
            .verify(creds.token.as_bytes(), NOW)
            .unwrap();
        assert_eq!(claims.get("sub").unwrap(), "u_1");
        assert_eq!(claims.get("plan").unwrap(), "business");
        assert_eq!(claims.text("roles").unwrap().unwrap(), "reader,billing");
        assert_eq!(claims.expires_at(), NOW + 3600);
        assert_eq!(creds.expires_at, NOW + 3600);
        assert_eq!(
            verifier(&files)
                .verify(creds.token.as_bytes(), NOW + 3601)
                .map(|_| ()),
            Err(AuthError::Expired)
        );

        let keys = ApiKeyVerifier::new(&ApiKeySpec {
            from: KeyFrom::Header("x-api-key".into()),
            keys_file: files.api_keys(),
            forward: Vec::new(),
        })
        .unwrap();
        assert_eq!(
            &*keys.lookup(creds.api_key.as_bytes()).unwrap().consumer,
            "acme-corp"
        );
        assert_eq!(
            keys.lookup(b"demo_not-the-key").map(|c| c.consumer.clone()),
            Err(AuthError::Invalid(Invalid::UnknownApiKey))
        );
        let text = std::fs::read_to_string(files.api_keys()).unwrap();
        assert!(!text.contains(&creds.api_key), "the keys file holds no key");
    }

    /// Every start is a new key pair: a token of an earlier run does not verify.
    #[test]
    fn a_token_from_another_run_is_refused() {
        let config = scratch("rerun");
        let first = Credentials::generate(NOW).unwrap();
        let second = Credentials::generate(NOW).unwrap();
        let files = KeyFiles::write(&config, &second).unwrap();
        assert_ne!(first.api_key, second.api_key);
        assert_eq!(
            verifier(&files)
                .verify(first.token.as_bytes(), NOW)
                .map(|_| ()),
            Err(AuthError::Invalid(Invalid::Signature))
        );
    }

    /// Dropping the files removes them and the directory they were put in.
    #[test]
    fn key_files_are_removed_on_drop() {
        let config = scratch("drop");
        let files = KeyFiles::write(&config, &Credentials::generate(NOW).unwrap()).unwrap();
        let (key, dir) = (files.jwt_key(), KeyFiles::dir_for(&config));
        assert!(key.is_file());
        drop(files);
        assert!(!key.exists() && !dir.exists());
    }
}
