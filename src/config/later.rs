//! Capabilities the config format describes but this build does not have yet: TLS termination
//! (`[server.tls]`), compression and websockets. (`https://` upstreams and their `tls_*` keys
//! have landed: `upstream_tls`.)
//!
//! Their keys are parsed ([`super::file`]) and their values checked here like any other, so a
//! file written against the full format gets its typos reported now. Then [`reject`] refuses
//! the config at the first such key in the file: a gateway that silently ignored an `auth` or
//! `rate_limits` key would look protected and not be. As each capability lands, its checks move
//! from here into `validate` and its key leaves [`reject`].
//!
//! TLS values are checked for their shape only: certificate and key files are not read here
//! (reading and parsing them, at start and at reload, is the TLS capability's job).

use std::net::SocketAddr;

use super::error::ConfigError;
use super::file::{self, default};
use super::source::{KeyPath, Source};
use super::units::Duration;
use super::validate::{is_token, listen_addr, Section};

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
    if let Some(compression) = &file.compression {
        c.compression(compression)?;
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
    for (name, route) in file.routes.iter() {
        let at = KeyPath::of(&["routes", name]);
        for (key, present) in [("websocket", route.websocket.is_some())] {
            if present {
                keys.push((at.key(key), None));
            }
        }
    }
    for (key, present) in [("compression", file.compression.is_some())] {
        if present {
            keys.push((KeyPath::of(&[key]), None));
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

    fn compression(&self, c: &file::Compression) -> Result<(), ConfigError> {
        let at = KeyPath::of(&["compression"]);
        if c.algorithms.as_ref().is_some_and(Vec::is_empty) {
            return Err(self.src.error(
                &at.key("algorithms"),
                "must list at least one of \"br\", \"gzip\"",
            ));
        }
        for (i, media) in c.types.iter().flatten().enumerate() {
            let valid = media
                .split_once('/')
                .is_some_and(|(kind, sub)| is_token(kind) && (sub == "*" || is_token(sub)));
            if !valid {
                return Err(self.src.error(
                    &at.key("types").index(i),
                    format!(
                        "invalid media type {media:?}: expected \"type/subtype\" or \"type/*\""
                    ),
                ));
            }
        }
        Ok(())
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
