//! [`Certificates`]: which of `server.tls.certificates` a handshake presents, by the name the
//! client asked for in SNI (RFC 6066 §3).
//!
//! A certificate answers for the DNS names of its subjectAltName (RFC 6125 §6.4; the subject's
//! CN is not consulted, as clients no longer do). An exact name wins over a wildcard, in any
//! certificate; among equals the first in file order wins. A `*.example.com` wildcard covers
//! exactly one label: `a.example.com`, not `example.com` nor `a.b.example.com` (RFC 6125
//! §6.4.3). No SNI, or a name no certificate has, gets the first certificate.
//!
//! The lists are built at config load; a handshake only compares strings.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One certificate and the names it answers for (lower-case).
#[derive(Debug)]
pub struct Named {
    pub key: Arc<CertifiedKey>,
    /// Exact DNS names.
    pub exact: Vec<String>,
    /// For each `*.rest` wildcard, `rest`.
    pub wildcard: Vec<String>,
}

impl Named {
    /// Sorts `names` (SAN DNS entries as written) into exact names and wildcards.
    pub fn new(key: Arc<CertifiedKey>, names: &[String]) -> Named {
        let mut exact = Vec::new();
        let mut wildcard = Vec::new();
        for name in names {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(rest) if !rest.is_empty() => wildcard.push(rest.to_string()),
                _ => exact.push(name),
            }
        }
        Named {
            key,
            exact,
            wildcard,
        }
    }
}

/// The configured certificates, the first being the default.
#[derive(Debug)]
pub struct Certificates {
    list: Vec<Named>,
}

impl Certificates {
    /// `list` must not be empty (the config requires one certificate).
    pub fn new(list: Vec<Named>) -> Certificates {
        debug_assert!(!list.is_empty());
        Certificates { list }
    }

    /// The index of the certificate presented for `name` (None: no SNI).
    pub fn pick(&self, name: Option<&str>) -> usize {
        let Some(name) = name else { return 0 };
        let name = name.trim_end_matches('.');
        if let Some(i) = self
            .list
            .iter()
            .position(|c| c.exact.iter().any(|n| n.eq_ignore_ascii_case(name)))
        {
            return i;
        }
        // The wildcard's label is the name's first one, and it must not be empty.
        if let Some((label, rest)) = name.split_once('.') {
            if !label.is_empty() {
                if let Some(i) = self
                    .list
                    .iter()
                    .position(|c| c.wildcard.iter().any(|w| w.eq_ignore_ascii_case(rest)))
                {
                    return i;
                }
            }
        }
        0
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = self.pick(hello.server_name());
        self.list.get(i).map(|c| c.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs(names: &[&[&str]]) -> Certificates {
        // The key is not looked at by `pick`; any key will do.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let signing = provider.key_provider.load_private_key(der).unwrap();
        let certified = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing));
        Certificates::new(
            names
                .iter()
                .map(|n| {
                    let n: Vec<String> = n.iter().map(|s| s.to_string()).collect();
                    Named::new(certified.clone(), &n)
                })
                .collect(),
        )
    }

    /// Exact names beat wildcards in any certificate; a wildcard covers one label only; no
    /// SNI or no match is the first certificate.
    #[test]
    fn sni_picks_exact_then_one_label_wildcard_then_the_first() {
        let c = certs(&[
            &["default.test"],
            &["*.example.com"],
            &["api.example.com", "API2.example.com"],
            &["*.b.example.com"],
        ]);
        assert_eq!(c.pick(None), 0);
        assert_eq!(c.pick(Some("api.example.com")), 2);
        assert_eq!(c.pick(Some("Api2.Example.COM")), 2);
        assert_eq!(c.pick(Some("www.example.com")), 1);
        assert_eq!(c.pick(Some("www.example.com.")), 1);
        assert_eq!(c.pick(Some("example.com")), 0, "a wildcard needs its label");
        assert_eq!(c.pick(Some("a.b.example.com")), 3);
        assert_eq!(c.pick(Some("x.a.b.example.com")), 0, "one label only");
        assert_eq!(c.pick(Some("other.test")), 0);
    }
}
