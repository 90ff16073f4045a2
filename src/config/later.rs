//! Capabilities the config format describes but this build does not have yet: upstream TLS
//! (`https://` endpoints and their `tls_*` keys). (TLS termination, `[server.tls]`, is built:
//! `super::tls`.)
//!
//! Their keys are parsed ([`super::file`]) and their values checked here like any other, so a
//! file written against the full format gets its typos reported now. Then [`reject`] refuses
//! the config at the first such key in the file: a gateway that silently ignored an `auth` or
//! `rate_limits` key would look protected and not be. As each capability lands, its checks move
//! from here into `validate` and its key leaves [`reject`].
//!
//! Upstream TLS values are checked for their shape only: certificate and key files are not read
//! here (reading and parsing them, at start and at reload, is that capability's job).

use std::net::IpAddr;

use super::error::ConfigError;
use super::file;
use super::source::{KeyPath, Source};
use super::validate::{endpoint_url, is_dns_name};

/// Checks the values of every not-yet-supported section.
pub(super) fn check(file: &file::File, src: &Source) -> Result<(), ConfigError> {
    let c = Checker { src };
    for (name, upstream) in file.upstreams.iter() {
        c.upstream_tls(upstream, &KeyPath::of(&["upstreams", name]))?;
    }
    Ok(())
}

/// Rejects the config at the first key, in file order, of a capability not built yet.
pub(super) fn reject(file: &file::File, src: &Source) -> Result<(), ConfigError> {
    // (key, what the key stands for when its path does not say it).
    let mut keys: Vec<(KeyPath, Option<&str>)> = Vec::new();
    for (name, upstream) in file.upstreams.iter() {
        let at = KeyPath::of(&["upstreams", name]);
        for (i, endpoint) in upstream.endpoints.iter().enumerate() {
            let (url, url_at) = endpoint_at(endpoint, &at.key("endpoints").index(i));
            if is_https(url) {
                keys.push((url_at, Some("https endpoints")));
            }
        }
        for (key, present) in [
            ("tls_ca", upstream.tls_ca.is_some()),
            ("tls_server_name", upstream.tls_server_name.is_some()),
            ("tls_client_cert", upstream.tls_client_cert.is_some()),
            ("tls_client_key", upstream.tls_client_key.is_some()),
        ] {
            if present {
                keys.push((at.key(key), None));
            }
        }
    }
    let first = keys.into_iter().min_by_key(|(key, _)| src.key_offset(key));
    match first {
        Some((key, None)) => Err(src.key_error(&key, format!("not supported yet: {key}"))),
        Some((key, Some(what))) => {
            Err(src.key_error(&key, format!("not supported yet: {key} ({what})")))
        }
        None => Ok(()),
    }
}

/// An endpoint's URL and the key path of that URL (`endpoints[i]` or `endpoints[i].url`).
fn endpoint_at<'e>(endpoint: &'e file::Endpoint, entry: &KeyPath) -> (&'e str, KeyPath) {
    match endpoint {
        file::Endpoint::Url(url) => (url, entry.clone()),
        file::Endpoint::Weighted(w) => (&w.url, entry.key("url")),
    }
}

/// The scheme is case-insensitive (RFC 3986 §3.1).
fn is_https(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("https"))
}

fn mixed_schemes(url: &str) -> String {
    format!(
        "{url:?} mixes http:// and https:// endpoints in one upstream: a retry or the balancer \
         would move a request between TLS and plaintext; use one scheme per upstream"
    )
}

struct Checker<'a> {
    src: &'a Source<'a>,
}

impl Checker<'_> {
    /// An upstream's `https://` endpoints (their shape) and its `tls_*` keys.
    fn upstream_tls(&self, u: &file::Upstream, at: &KeyPath) -> Result<(), ConfigError> {
        // Whether the first endpoint with a scheme this layer knows is https.
        let mut first_https: Option<bool> = None;
        for (i, endpoint) in u.endpoints.iter().enumerate() {
            let (url, url_at) = endpoint_at(endpoint, &at.key("endpoints").index(i));
            let https = match url.split_once("://") {
                Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => true,
                Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => false,
                // Other schemes, and http:// URLs below, are `validate`'s.
                _ => continue,
            };
            if https {
                endpoint_url(url).map_err(|m| self.src.error(&url_at, m))?;
            }
            if *first_https.get_or_insert(https) != https {
                return Err(self.src.error(&url_at, mixed_schemes(url)));
            }
        }
        let https = first_https == Some(true);
        for (key, value) in [
            ("tls_ca", &u.tls_ca),
            ("tls_server_name", &u.tls_server_name),
            ("tls_client_cert", &u.tls_client_cert),
            ("tls_client_key", &u.tls_client_key),
        ] {
            if value.is_some() && !https {
                return Err(self.src.key_error(
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
            if let Some(path) = value {
                self.file_path(&at.key(key), path)?;
            }
        }
        if let Some(name) = &u.tls_server_name {
            // Checked against the certificate's names (RFC 6125), and sent in SNI when it is
            // a DNS name (RFC 6066 §3 carries no IP literals).
            if name.parse::<IpAddr>().is_err() && !is_dns_name(name) {
                return Err(self.src.error(
                    &at.key("tls_server_name"),
                    format!("invalid server name {name:?}: expected a DNS name or an IP address"),
                ));
            }
        }
        match (&u.tls_client_cert, &u.tls_client_key) {
            (Some(_), None) => Err(self.src.key_error(
                &at.key("tls_client_cert"),
                "needs tls_client_key: a client certificate is presented with its private key",
            )),
            (None, Some(_)) => Err(self.src.key_error(
                &at.key("tls_client_key"),
                "needs tls_client_cert: a private key without its certificate presents nothing",
            )),
            _ => Ok(()),
        }
    }

    /// A file the capability reads (certificates, keys, CA bundles); only its presence here.
    fn file_path(&self, at: &KeyPath, path: &str) -> Result<(), ConfigError> {
        if path.trim().is_empty() {
            Err(self
                .src
                .error(at, "must not be empty: expected a file path"))
        } else {
            Ok(())
        }
    }
}
