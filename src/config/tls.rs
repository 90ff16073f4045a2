//! `[server.tls]`: checked, and compiled into the rustls server config that every TLS
//! connection of this config generation starts from ([`model::ServerTls`]).
//!
//! Certificate and key files are read and parsed here, at every load (start, reload, `check`):
//! a file that is missing, unreadable, empty or not PEM, a key its certificate does not match,
//! or a `client_ca` with no certificate is a config error at the key that names the file. So a
//! reload with a bad certificate is refused like any bad config, and a connection never finds
//! out at handshake time.
//!
//! What the compiled config holds: the SNI resolver ([`crate::io::sni`]) over the certificates
//! in file order, the TLS versions from `min_version` (rustls's modern cipher suites only),
//! `alpn` in order, the client verifier when `client_ca` is set, and session resumption by
//! tickets whose keys every worker derives alike ([`crate::io::tickets`]). rustls's stateful
//! session cache is turned off: it is a mutex every core would take.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;

use super::error::ConfigError;
use super::file::{self, default, TlsVersion};
use super::model;
use super::source::{KeyPath, Source};
use super::validate::{listen_addr, Section};

/// ALPN protocol IDs (RFC 7301 §6, IANA registry) of the HTTP versions this gateway speaks.
/// Offering another one (`h2`) would have a client that picks it send a protocol the
/// HTTP/1.1 codec cannot read.
const ALPN_SPOKEN: [&str; 2] = ["http/1.1", "http/1.0"];

/// Without `alpn`: HTTP/1.1 is offered, so a client offering `h2` and `http/1.1` (curl,
/// browsers) settles on the protocol spoken here.
const DEFAULT_ALPN: &str = "http/1.1";

/// Without `handshake_timeout`.
const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `[server.tls]` checked and compiled; `None` without the section.
pub(super) fn server_tls(
    file: &file::File,
    src: &Source,
) -> Result<Option<model::ServerTls>, ConfigError> {
    let Some(tls) = &file.server.tls else {
        return Ok(None);
    };
    let at = KeyPath::of(&["server", "tls"]);
    let listen = listen(file, tls, &at, src)?;
    if tls.certificates.is_empty() {
        return Err(src.error(
            &at.key("certificates"),
            "must list at least one { cert, key } pair",
        ));
    }
    // Every value is checked before any file is read, so a typo is reported as such.
    let mut pairs = Vec::with_capacity(tls.certificates.len());
    for (i, pair) in tls.certificates.iter().enumerate() {
        let here = at.key("certificates").index(i);
        let (cert_at, key_at) = (here.key("cert"), here.key("key"));
        let cert = path_of(src, &pair.cert, &cert_at)?;
        let key = path_of(src, &pair.key, &key_at)?;
        pairs.push(((cert, cert_at), (key, key_at)));
    }
    let alpn = match &tls.alpn {
        Some(list) => alpn(&at.key("alpn"), list, src)?,
        None => vec![DEFAULT_ALPN.to_string()],
    };
    let handshake_timeout = Section::new(src, &at)
        .positive("handshake_timeout", tls.handshake_timeout)?
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
    let min_version = tls.min_version.unwrap_or(TlsVersion::Tls12);
    let client_ca = match &tls.client_ca {
        None => None,
        Some(path) => Some(path_of(src, path, &at.key("client_ca"))?),
    };

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut infos = Vec::with_capacity(pairs.len());
    let mut named = Vec::with_capacity(pairs.len());
    for (cert, key) in &pairs {
        let (key, info) = certified_key(cert, key, &provider, src)?;
        named.push(crate::io::sni::Named::new(Arc::new(key), &info.dns_names));
        infos.push(info);
    }

    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| src.error(&at.key("min_version"), e.to_string()))?;
    // What a session ticket is bound to: the client CAs trusted when it was issued.
    let mut auth = b"no client authentication".to_vec();
    let builder = match &client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let here = at.key("client_ca");
            let mut roots = rustls::RootCertStore::empty();
            auth.clear();
            for cert in read_certs(path, &here, src)? {
                auth.extend_from_slice(&(cert.len() as u64).to_be_bytes());
                auth.extend_from_slice(&cert);
                roots.add(cert).map_err(|e| {
                    src.error(
                        &here,
                        format!("{}: not a usable CA certificate: {e}", path.display()),
                    )
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| src.error(&here, format!("{}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(crate::io::sni::Certificates::new(named)));
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.ticketer = crate::io::tickets::process(&auth);
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});

    Ok(Some(model::ServerTls {
        listen,
        certificates: infos,
        min_version: match min_version {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        },
        alpn,
        handshake_timeout,
        client_ca,
        rustls: Arc::new(config),
    }))
}

/// `listen`: at least one address, none served by another listener of this config. Every
/// worker binds every address with SO_REUSEPORT: an address bound by two listeners would
/// split its connections between them at random.
fn listen(
    file: &file::File,
    tls: &file::Tls,
    at: &KeyPath,
    src: &Source,
) -> Result<Vec<SocketAddr>, ConfigError> {
    if tls.listen.is_empty() {
        return Err(src.error(&at.key("listen"), "must list at least one address"));
    }
    let plaintext: Vec<SocketAddr> = match &file.server.listen {
        None => vec![default::LISTEN
            .parse()
            .expect("default listen address parses")],
        Some(list) => list.iter().filter_map(|a| listen_addr(a).ok()).collect(),
    };
    let admin: Option<SocketAddr> = file.admin.as_ref().and_then(|a| match &a.listen {
        None => default::ADMIN_LISTEN.parse().ok(),
        Some(text) => listen_addr(text).ok(),
    });
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(tls.listen.len());
    for (i, text) in tls.listen.iter().enumerate() {
        let here = at.key("listen").index(i);
        let addr = listen_addr(text).map_err(|m| src.error(&here, m))?;
        let clash = if addrs.contains(&addr) {
            Some(format!("duplicate address {text:?}"))
        } else if plaintext.contains(&addr) {
            Some(match file.server.listen {
                Some(_) => format!(
                    "{text:?} is also in server.listen (one address serves either plaintext or TLS)"
                ),
                None => format!(
                    "{text:?} is server.listen's default, served in plaintext: one address serves either plaintext or TLS"
                ),
            })
        } else if admin == Some(addr) {
            Some(format!("{text:?} is also admin.listen"))
        } else {
            None
        };
        if let Some(message) = clash {
            return Err(src.error(&here, message));
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

/// RFC 7301 §3.1: a protocol ID is 1 to 255 bytes; the registered ones are printable ASCII.
fn alpn(at: &KeyPath, list: &[String], src: &Source) -> Result<Vec<String>, ConfigError> {
    if list.is_empty() {
        return Err(src.error(at, "must list at least one protocol, as in [\"http/1.1\"]"));
    }
    for (i, id) in list.iter().enumerate() {
        let here = at.index(i);
        let printable = id.bytes().all(|b| b.is_ascii_graphic());
        if id.is_empty() || id.len() > 255 || !printable {
            return Err(src.error(
                &here,
                format!("invalid ALPN protocol ID {id:?}: expected 1 to 255 printable ASCII characters, as in \"http/1.1\""),
            ));
        }
        if !ALPN_SPOKEN.contains(&id.as_str()) {
            return Err(src.error(
                &here,
                format!("{id:?} is not a protocol this gateway speaks: it serves HTTP/1.1 only, so offer \"http/1.1\" (or \"http/1.0\")"),
            ));
        }
        if list[..i].contains(id) {
            return Err(src.error(&here, format!("duplicate protocol {id:?}")));
        }
    }
    Ok(list.to_vec())
}

/// A `{ cert, key }` pair read, parsed and matched: the chain with its signing key, and what
/// `check` reports about the leaf certificate.
fn certified_key(
    (cert_path, cert_at): &(PathBuf, KeyPath),
    (key_path, key_at): &(PathBuf, KeyPath),
    provider: &CryptoProvider,
    src: &Source,
) -> Result<(CertifiedKey, model::CertificateInfo), ConfigError> {
    let chain = read_certs(cert_path, cert_at, src)?;
    let info = describe(cert_path, &chain[0])
        .map_err(|m| src.error(cert_at, format!("{}: {m}", cert_path.display())))?;
    readable(key_path, key_at, src)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        src.error(
            key_at,
            format!(
                "{}: no private key read ({e}): expected a PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\" block",
                key_path.display()
            ),
        )
    })?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        src.error(
            key_at,
            format!("{}: unusable private key: {e}", key_path.display()),
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        // aws-lc-rs exposes every key's public half; "unknown" would be a key type it
        // cannot describe, which it also could not have loaded.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(src.error(
                key_at,
                format!(
                    "{}: this key does not belong to the certificate in {}",
                    key_path.display(),
                    cert_path.display()
                ),
            ))
        }
    }
    Ok((certified, info))
}

/// Every certificate of a PEM file, in order; at least one.
fn read_certs(
    path: &Path,
    at: &KeyPath,
    src: &Source,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    readable(path, at, src)?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            src.error(
                at,
                format!("{}: not a PEM certificate file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(src.error(
            at,
            format!(
                "{}: no certificate in it: expected a PEM \"CERTIFICATE\" block",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// A file that can be opened and is not empty (the PEM readers say less about these).
fn readable(path: &Path, at: &KeyPath, src: &Source) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Err(e) => Err(src.error(at, format!("cannot read {}: {e}", path.display()))),
        Ok(m) if m.is_dir() => {
            Err(src.error(at, format!("{} is a directory, not a file", path.display())))
        }
        Ok(m) if m.len() == 0 => Err(src.error(at, format!("{} is empty", path.display()))),
        Ok(_) => std::fs::File::open(path)
            .map(drop)
            .map_err(|e| src.error(at, format!("cannot read {}: {e}", path.display()))),
    }
}

/// A file path as written, relative to the config file's directory (BEHAVIOR.md "Command
/// line").
fn path_of(src: &Source, written: &str, at: &KeyPath) -> Result<PathBuf, ConfigError> {
    if written.trim().is_empty() {
        return Err(src.error(at, "must not be empty: expected a file path"));
    }
    let path = Path::new(written);
    Ok(match src.path.parent() {
        Some(dir) if !path.is_absolute() => dir.join(path),
        _ => path.to_path_buf(),
    })
}

/// The names (subjectAltName) and expiry of a leaf certificate, from its DER (x509-parser).
fn describe(path: &Path, der: &CertificateDer<'_>) -> Result<model::CertificateInfo, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut dns_names = Vec::new();
    let mut ip_names = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subjectAltName: {e}"))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns_names.push(n.to_string()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes)
                            .ok()
                            .map(|b| std::net::IpAddr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(|b| std::net::IpAddr::from(b).to_string()),
                        _ => None,
                    };
                    ip_names.extend(ip);
                }
                _ => {}
            }
        }
    }
    Ok(model::CertificateInfo {
        cert: path.to_path_buf(),
        dns_names,
        ip_names,
        not_after: cert.validity().not_after.timestamp(),
    })
}
