//! Capabilities the config format describes but this build does not have yet: TLS (termination
//! in `[server.tls]`, `https://` upstream endpoints and their `tls_*` keys).
//!
//! Their keys are parsed ([`super::file`]) and their values checked here like any other, so a
//! file written against the full format gets its typos reported now. Then [`reject`] refuses
//! the config at the first such key in the file: a gateway that silently ignored an `auth` or
//! `rate_limits` key would look protected and not be. As each capability lands, its checks move
//! from here into `validate` and its key leaves [`reject`].
//!
//! TLS values are checked for their shape only: certificate and key files are not read here
//! (reading and parsing them, at start and at reload, is the TLS capability's job).

use std::net::{IpAddr, SocketAddr};

use super::error::ConfigError;
use super::file::{self, default};
use super::source::{KeyPath, Source};
use super::units::Duration;
use super::validate::{endpoint_url, is_dns_name, listen_addr, Section};

/// ALPN protocol IDs (RFC 7301 §6, IANA registry) of the HTTP versions this gateway speaks.
/// Offering another one (`h2`) would have a client that picks it send a protocol the
/// HTTP/1.1 codec cannot read.
const ALPN_SPOKEN: [&str; 2] = ["http/1.1", "http/1.0"];

/// Checks the values of every not-yet-supported section.
pub(super) fn check(file: &file::File, src: &Source) -> Result<(), ConfigError> {
    let c = Checker { file, src };
    if let Some(tls) = &file.server.tls {
        c.server_tls(tls)?;
    }
    for (name, upstream) in file.upstreams.iter() {
        c.upstream_tls(upstream, &KeyPath::of(&["upstreams", name]))?;
    }
    Ok(())
}

/// Rejects the config at the first key, in file order, of a capability not built yet.
pub(super) fn reject(file: &file::File, src: &Source) -> Result<(), ConfigError> {
    // (key, what the key stands for when its path does not say it).
    let mut keys: Vec<(KeyPath, Option<&str>)> = Vec::new();
    if file.server.tls.is_some() {
        keys.push((KeyPath::of(&["server", "tls"]), None));
    }
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
    file: &'a file::File,
    src: &'a Source<'a>,
}

impl Checker<'_> {
    fn server_tls(&self, tls: &file::Tls) -> Result<(), ConfigError> {
        let at = KeyPath::of(&["server", "tls"]);
        if tls.listen.is_empty() {
            return Err(self
                .src
                .error(&at.key("listen"), "must list at least one address"));
        }
        // Every worker binds every address with SO_REUSEPORT: an address bound by two
        // listeners would split its connections between them at random.
        let plaintext: Vec<SocketAddr> = match &self.file.server.listen {
            None => vec![default::LISTEN
                .parse()
                .expect("default listen address parses")],
            Some(list) => list.iter().filter_map(|a| listen_addr(a).ok()).collect(),
        };
        let admin: Option<SocketAddr> = self.file.admin.as_ref().and_then(|a| match &a.listen {
            None => default::ADMIN_LISTEN.parse().ok(),
            Some(text) => listen_addr(text).ok(),
        });
        let mut addrs: Vec<SocketAddr> = Vec::with_capacity(tls.listen.len());
        for (i, text) in tls.listen.iter().enumerate() {
            let here = at.key("listen").index(i);
            let addr = listen_addr(text).map_err(|m| self.src.error(&here, m))?;
            let clash = if addrs.contains(&addr) {
                Some(format!("duplicate address {text:?}"))
            } else if plaintext.contains(&addr) {
                Some(match self.file.server.listen {
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
                return Err(self.src.error(&here, message));
            }
            addrs.push(addr);
        }
        if tls.certificates.is_empty() {
            return Err(self.src.error(
                &at.key("certificates"),
                "must list at least one { cert, key } pair",
            ));
        }
        for (i, pair) in tls.certificates.iter().enumerate() {
            let here = at.key("certificates").index(i);
            self.file_path(&here.key("cert"), &pair.cert)?;
            self.file_path(&here.key("key"), &pair.key)?;
        }
        if let Some(list) = &tls.alpn {
            self.alpn(&at.key("alpn"), list)?;
        }
        self.positive(&at, "handshake_timeout", tls.handshake_timeout)?;
        if let Some(ca) = &tls.client_ca {
            self.file_path(&at.key("client_ca"), ca)?;
        }
        Ok(())
    }

    /// RFC 7301 §3.1: a protocol ID is 1 to 255 bytes; the registered ones are printable ASCII.
    fn alpn(&self, at: &KeyPath, list: &[String]) -> Result<(), ConfigError> {
        if list.is_empty() {
            return Err(self
                .src
                .error(at, "must list at least one protocol, as in [\"http/1.1\"]"));
        }
        for (i, id) in list.iter().enumerate() {
            let here = at.index(i);
            let printable = id.bytes().all(|b| b.is_ascii_graphic());
            if id.is_empty() || id.len() > 255 || !printable {
                return Err(self.src.error(
                    &here,
                    format!("invalid ALPN protocol ID {id:?}: expected 1 to 255 printable ASCII characters, as in \"http/1.1\""),
                ));
            }
            if !ALPN_SPOKEN.contains(&id.as_str()) {
                return Err(self.src.error(
                    &here,
                    format!("{id:?} is not a protocol this gateway speaks: it serves HTTP/1.1 only, so offer \"http/1.1\" (or \"http/1.0\")"),
                ));
            }
            if list[..i].contains(id) {
                return Err(self.src.error(&here, format!("duplicate protocol {id:?}")));
            }
        }
        Ok(())
    }

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

    fn positive(
        &self,
        table: &KeyPath,
        key: &str,
        value: Option<Duration>,
    ) -> Result<(), ConfigError> {
        Section::new(self.src, table).positive(key, value).map(drop)
    }
}
