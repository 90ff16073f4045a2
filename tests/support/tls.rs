//! A test certificate authority (rcgen) and rustls configs for the TLS tests: server
//! certificates for given names, client certificates for mTLS, PEM files written to a
//! [`TempDir`], and a client config that trusts the authority.
//!
//! Every certificate is ECDSA P-256 (rcgen's default key), signed by the authority.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TempDir;

/// A certificate authority whose files live in `dir`.
pub struct Pki {
    pub dir: TempDir,
    ca: Certificate,
    ca_key: KeyPair,
    /// The authority's certificate, PEM, written at `ca_path`.
    pub ca_pem: String,
    pub ca_path: PathBuf,
}

/// One issued certificate: its PEM files and DER forms.
pub struct Issued {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

impl Issued {
    /// The chain (this certificate alone) and key as rustls takes them.
    pub fn rustls(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.cert_der.clone()],
            PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
        )
    }
}

impl Pki {
    /// A new authority named `name`.
    pub fn new(name: &str) -> Pki {
        let dir = TempDir::new();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_pem = ca.pem();
        let ca_path = dir.write(&format!("{name}-ca.pem"), &ca_pem);
        Pki {
            dir,
            ca,
            ca_key,
            ca_pem,
            ca_path,
        }
    }

    /// A server certificate for `names` (DNS names, `*.` wildcards, or IP addresses), valid
    /// for `days` days from now, written as `<file>.crt` / `<file>.key`.
    pub fn server(&self, file: &str, names: &[&str], days: i64) -> Issued {
        self.issue(file, names, days, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (mTLS) with common name `cn`.
    pub fn client(&self, file: &str, cn: &str) -> Issued {
        self.issue(file, &[cn], 365, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        file: &str,
        names: &[&str],
        days: i64,
        usage: ExtendedKeyUsagePurpose,
    ) -> Issued {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let today = ::time::OffsetDateTime::now_utc();
        params.not_before = today - ::time::Duration::days(1);
        params.not_after = today + ::time::Duration::days(days);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Issued {
            cert_path: self.dir.write(&format!("{file}.crt"), &cert_pem),
            key_path: self.dir.write(&format!("{file}.key"), &key_pem),
            cert_pem,
            key_pem,
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A rustls client config trusting this authority alone, offering `alpn`, presenting
    /// `client` (mTLS) when given, restricted to `versions` (empty: TLS 1.2 and 1.3).
    pub fn client_config(
        &self,
        alpn: &[&str],
        client: Option<&Issued>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider);
        let builder = if versions.is_empty() {
            builder.with_safe_default_protocol_versions()
        } else {
            builder.with_protocol_versions(versions)
        }
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match client {
            Some(c) => {
                let (chain, key) = c.rustls();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}
