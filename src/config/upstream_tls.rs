//! `https://` upstreams: an upstream's scheme and `tls_*` keys checked, its files read and
//! parsed, and the result compiled into [`model::UpstreamTls`] (the rustls client config the
//! connects use), at start and at every reload.
//!
//! Errors are reported at the key's value: a missing or unreadable file, a bundle without a
//! certificate, a certificate rustls cannot use as a root, a key that is not the client
//! certificate's. A config that loads has every file read: a connect reads none.
//!
//! Decisions:
//! - One scheme per upstream: a retry or the balancer would otherwise move one request between
//!   TLS and plaintext.
//! - `tls_*` keys on an upstream with no `https://` endpoint are an error, not a warning: they
//!   would do nothing while the operator believes the traffic is encrypted (or verified), and
//!   since schemes cannot mix, no registration could ever make them apply.
//! - Without `tls_ca` the roots are the system's store (rustls-native-certs): what the
//!   operator's other tools trust, including a private CA they installed there, and updated by
//!   the OS's packages rather than by rebuilding the gateway (webpki-roots is a snapshot
//!   compiled in). It is read at most once per load, shared by every upstream that needs it.
//! - ALPN offers `http/1.1` only: the upstream side speaks HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::error::ConfigError;
use super::file;
use super::model;
use super::policy::relative_to;
use super::source::{KeyPath, Source};
use super::validate::is_dns_name;

/// The system's roots, read on first need during one load (never when no upstream uses them).
#[derive(Default)]
pub(super) struct SystemRoots {
    loaded: Option<Result<Arc<RootCertStore>, String>>,
}

impl SystemRoots {
    fn get(&mut self) -> Result<Arc<RootCertStore>, String> {
        self.loaded.get_or_insert_with(load_system_roots).clone()
    }
}

fn load_system_roots() -> Result<Arc<RootCertStore>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    // Certificates the store holds that webpki cannot parse are skipped, as every TLS client
    // does with its system store; only an empty result is an error.
    let (_added, _skipped) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = match found.errors.first() {
            Some(e) => format!(": {e}"),
            None => String::new(),
        };
        return Err(format!(
            "no root certificates found in the system store{why}; install the system's CA \
             certificates or set tls_ca"
        ));
    }
    Ok(Arc::new(roots))
}

/// The upstream's TLS settings when its endpoints are `https://`, after checking that its
/// endpoints use one scheme and that its `tls_*` keys fit (see the module's decisions).
pub(super) fn compile(
    u: &file::Upstream,
    at: &KeyPath,
    src: &Source,
    system: &mut SystemRoots,
) -> Result<Option<model::UpstreamTls>, ConfigError> {
    let https = schemes(u, at, src)?;
    check_keys(u, at, https, src)?;
    if !https {
        return Ok(None);
    }
    let mut fingerprint = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let (roots, source) = match &u.tls_ca {
        Some(path) => {
            let here = at.key("tls_ca");
            let (resolved, pem) = read(src, &here, path)?;
            fingerprint.update(b"ca\0");
            fingerprint.update(&pem);
            let certs = certificates(&pem, path).map_err(|m| src.error(&here, m))?;
            let mut roots = RootCertStore::empty();
            for (i, cert) in certs.into_iter().enumerate() {
                roots.add(cert).map_err(|e| {
                    src.error(
                        &here,
                        format!("certificate #{} in {path:?} cannot be a root: {e}", i + 1),
                    )
                })?;
            }
            let n = roots.len();
            (Arc::new(roots), model::TlsRoots::File(resolved, n))
        }
        None => {
            fingerprint.update(b"system\0");
            let roots = system
                .get()
                .map_err(|m| src.error(&first_endpoint(u, at), m))?;
            let n = roots.len();
            (roots, model::TlsRoots::System(n))
        }
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| src.error(at, format!("TLS setup failed: {e}")))?
    .with_root_certificates(roots);
    let mut client_cert = None;
    let mut config = match (&u.tls_client_cert, &u.tls_client_key) {
        (Some(cert), Some(key)) => {
            let cert_at = at.key("tls_client_cert");
            let key_at = at.key("tls_client_key");
            let (cert_path, cert_pem) = read(src, &cert_at, cert)?;
            let (_, key_pem) = read(src, &key_at, key)?;
            fingerprint.update(b"\0cert\0");
            fingerprint.update(&cert_pem);
            fingerprint.update(b"\0key\0");
            fingerprint.update(&key_pem);
            let chain = certificates(&cert_pem, cert).map_err(|m| src.error(&cert_at, m))?;
            let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                src.error(&key_at, format!("{key:?} holds no usable private key: {e}"))
            })?;
            client_cert = Some(cert_path);
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                src.error(
                    &key_at,
                    format!("{key:?} cannot sign for the certificate in {cert:?}: {e}"),
                )
            })?
        }
        // `check_keys` admits only both or neither.
        _ => builder.with_no_client_auth(),
    };
    // RFC 7301: the one protocol this side speaks.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = match &u.tls_server_name {
        Some(name) => {
            fingerprint.update(b"\0name\0");
            fingerprint.update(name.as_bytes());
            Some(ServerName::try_from(name.clone()).map_err(|e| {
                src.error(
                    &at.key("tls_server_name"),
                    format!("invalid server name {name:?}: {e}"),
                )
            })?)
        }
        None => None,
    };
    let mut digest = [0u8; 32];
    digest.copy_from_slice(fingerprint.finish().as_ref());
    Ok(Some(model::UpstreamTls {
        client: Arc::new(config),
        server_name,
        roots: source,
        client_cert,
        fingerprint: digest,
    }))
}

/// Whether the upstream's endpoints are `https://`; an error at the first endpoint whose
/// scheme differs from the first one's.
fn schemes(u: &file::Upstream, at: &KeyPath, src: &Source) -> Result<bool, ConfigError> {
    let mut first: Option<bool> = None;
    for (i, endpoint) in u.endpoints.iter().enumerate() {
        let (url, url_at) = endpoint_at(endpoint, &at.key("endpoints").index(i));
        // `validate` has parsed every URL: the scheme is http or https.
        let https = url
            .split_once("://")
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("https"));
        if *first.get_or_insert(https) != https {
            return Err(src.error(
                &url_at,
                format!(
                    "{url:?} mixes http:// and https:// endpoints in one upstream: a retry or \
                     the balancer would move a request between TLS and plaintext; use one \
                     scheme per upstream"
                ),
            ));
        }
    }
    Ok(first == Some(true))
}

/// The `tls_*` keys' shapes: only on an https upstream, no empty path, a valid server name,
/// the client certificate and key together.
fn check_keys(
    u: &file::Upstream,
    at: &KeyPath,
    https: bool,
    src: &Source,
) -> Result<(), ConfigError> {
    for (key, value) in [
        ("tls_ca", &u.tls_ca),
        ("tls_server_name", &u.tls_server_name),
        ("tls_client_cert", &u.tls_client_cert),
        ("tls_client_key", &u.tls_client_key),
    ] {
        if value.is_some() && !https {
            return Err(src.key_error(
                &at.key(key),
                "only applies to https:// endpoints, and this upstream has none",
            ));
        }
    }
    for (key, value) in [
        ("tls_ca", &u.tls_ca),
        ("tls_client_cert", &u.tls_client_cert),
        ("tls_client_key", &u.tls_client_key),
    ] {
        if value.as_ref().is_some_and(|p| p.trim().is_empty()) {
            return Err(src.error(&at.key(key), "must not be empty: expected a file path"));
        }
    }
    if let Some(name) = &u.tls_server_name {
        // Checked against the certificate's names (RFC 6125), and sent in SNI when it is a
        // DNS name (RFC 6066 §3 carries no IP literals).
        if name.parse::<std::net::IpAddr>().is_err() && !is_dns_name(name) {
            return Err(src.error(
                &at.key("tls_server_name"),
                format!("invalid server name {name:?}: expected a DNS name or an IP address"),
            ));
        }
    }
    match (&u.tls_client_cert, &u.tls_client_key) {
        (Some(_), None) => Err(src.key_error(
            &at.key("tls_client_cert"),
            "needs tls_client_key: a client certificate is presented with its private key",
        )),
        (None, Some(_)) => Err(src.key_error(
            &at.key("tls_client_key"),
            "needs tls_client_cert: a private key without its certificate presents nothing",
        )),
        _ => Ok(()),
    }
}

/// The file at `path` (relative to the config file's directory), read whole.
fn read(src: &Source, at: &KeyPath, path: &str) -> Result<(PathBuf, Vec<u8>), ConfigError> {
    let resolved = relative_to(src.path, path);
    match std::fs::read(&resolved) {
        Ok(bytes) => Ok((resolved, bytes)),
        Err(e) => Err(src.error(at, format!("cannot read {}: {e}", quoted(&resolved)))),
    }
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Every CERTIFICATE block of the PEM file read from `path` (as written); an error when the
/// file is not PEM or holds none.
fn certificates(pem: &[u8], path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path:?} is not a valid PEM file: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{path:?} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)"
        ));
    }
    Ok(certs)
}

/// The key path of the upstream's first endpoint URL (where a problem with the roots of every
/// endpoint is reported).
fn first_endpoint(u: &file::Upstream, at: &KeyPath) -> KeyPath {
    match u.endpoints.first() {
        Some(e) => endpoint_at(e, &at.key("endpoints").index(0)).1,
        None => at.key("endpoints"),
    }
}

/// An endpoint's URL and the key path of that URL (`endpoints[i]` or `endpoints[i].url`).
fn endpoint_at<'e>(endpoint: &'e file::Endpoint, entry: &KeyPath) -> (&'e str, KeyPath) {
    match endpoint {
        file::Endpoint::Url(url) => (url, entry.clone()),
        file::Endpoint::Weighted(w) => (&w.url, entry.key("url")),
    }
}
