//! Capabilities the config format describes but this build does not have yet: BFF clients,
//! transforms, aggregates, compression and websockets.
//!
//! Their keys are parsed ([`super::file`]) and their values checked here like any other, so a
//! file written against the full format gets its typos reported now. Then [`reject`] refuses
//! the config at the first such key in the file: a gateway that silently ignored an `auth` or
//! `rate_limits` key would look protected and not be. As each capability lands, its checks move
//! from here into `validate` and its key leaves [`reject`].

use super::error::ConfigError;
use super::file::{self, Named};
use super::source::{KeyPath, Source};
use super::units::Duration;
use super::validate::{header_name, header_value, is_token, methods, suggestion, Section};

/// Checks the values of every not-yet-supported section.
pub(super) fn check(file: &file::File, src: &Source) -> Result<(), ConfigError> {
    let c = Checker { file, src };
    for (name, route) in file.routes.iter() {
        c.route(route, &KeyPath::of(&["routes", name]))?;
    }
    if let Some(bff) = &file.bff {
        c.bff(bff)?;
    }
    for (name, transform) in named(&file.transforms) {
        c.transform(transform, &KeyPath::of(&["transforms", name]))?;
    }
    for (name, aggregate) in named(&file.aggregates) {
        c.aggregate(aggregate, &KeyPath::of(&["aggregates", name]))?;
    }
    if let Some(compression) = &file.compression {
        c.compression(compression)?;
    }
    Ok(())
}

/// Rejects the config at the first key, in file order, of a capability not built yet.
pub(super) fn reject(file: &file::File, src: &Source) -> Result<(), ConfigError> {
    let mut keys: Vec<KeyPath> = Vec::new();
    for (name, route) in file.routes.iter() {
        let at = KeyPath::of(&["routes", name]);
        for (key, present) in [
            ("transform", route.transform.is_some()),
            ("websocket", route.websocket.is_some()),
            ("client", route.client.is_some()),
        ] {
            if present {
                keys.push(at.key(key));
            }
        }
    }
    for (key, present) in [
        ("bff", file.bff.is_some()),
        ("transforms", file.transforms.is_some()),
        ("aggregates", file.aggregates.is_some()),
        ("compression", file.compression.is_some()),
    ] {
        if present {
            keys.push(KeyPath::of(&[key]));
        }
    }
    let errors: Vec<(usize, ConfigError)> = keys
        .into_iter()
        .map(|key| {
            (
                src.key_offset(&key),
                src.key_error(&key, format!("not supported yet: {key}")),
            )
        })
        .collect();
    match errors.into_iter().min_by_key(|(offset, _)| *offset) {
        Some((_, error)) => Err(error),
        None => Ok(()),
    }
}

/// The entries of an optional section such as `[auth.*]`.
fn named<T>(table: &Option<Named<T>>) -> impl Iterator<Item = (&str, &T)> {
    table.iter().flat_map(|t| t.iter())
}

fn names<T>(table: &Option<Named<T>>) -> impl Iterator<Item = &str> {
    named(table).map(|(name, _)| name)
}

struct Checker<'a> {
    file: &'a file::File,
    src: &'a Source<'a>,
}

impl Checker<'_> {
    fn route(&self, r: &file::Route, at: &KeyPath) -> Result<(), ConfigError> {
        if let Some(name) = &r.transform {
            self.reference(
                &at.key("transform"),
                name,
                "transform",
                names(&self.file.transforms),
            )?;
        }
        if let Some(name) = &r.client {
            let clients = self.file.bff.iter().flat_map(|b| b.clients.names());
            self.reference(&at.key("client"), name, "bff client", clients)?;
        }
        Ok(())
    }

    fn bff(&self, bff: &file::Bff) -> Result<(), ConfigError> {
        let at = KeyPath::of(&["bff"]);
        if let Some(header) = &bff.header {
            header_name(header).map_err(|m| self.src.error(&at.key("header"), m))?;
        }
        for (name, client) in bff.clients.iter() {
            let here = at.key("clients").key(name);
            self.path(&here.key("prefix"), &client.prefix)?;
            if let Some(auth) = &client.auth {
                self.reference(
                    &here.key("auth"),
                    auth,
                    "auth policy",
                    names(&self.file.auth),
                )?;
            }
            if let Some(names) = &client.rate_limits {
                self.rate_limit_names(&here.key("rate_limits"), names)?;
            }
        }
        Ok(())
    }

    fn transform(&self, t: &file::Transform, at: &KeyPath) -> Result<(), ConfigError> {
        self.program(&at.key("request"), t.request.as_deref())?;
        self.program(&at.key("response"), t.response.as_deref())?;
        for (key, edits) in [
            ("request_headers", &t.request_headers),
            ("response_headers", &t.response_headers),
        ] {
            let Some(edits) = edits else { continue };
            let here = at.key(key);
            for (name, value) in edits.set.iter().flat_map(|s| s.iter()) {
                let path = here.key("set").key(name);
                header_name(name).map_err(|m| self.src.key_error(&path, m))?;
                header_value(value).map_err(|m| self.src.error(&path, m))?;
            }
            for (i, name) in edits.remove.iter().flatten().enumerate() {
                header_name(name).map_err(|m| self.src.error(&here.key("remove").index(i), m))?;
            }
        }
        Ok(())
    }

    fn aggregate(&self, a: &file::Aggregate, at: &KeyPath) -> Result<(), ConfigError> {
        self.path(&at.key("path"), &a.path)?;
        if let Some(list) = &a.methods {
            methods(list, &at.key("methods"), self.src)?;
        }
        if let Some(name) = &a.auth {
            self.reference(&at.key("auth"), name, "auth policy", names(&self.file.auth))?;
        }
        self.positive(at, "timeout", a.timeout)?;
        self.program(&at.key("shape"), a.shape.as_deref())?;
        if a.calls.0.is_empty() {
            return Err(self
                .src
                .error(&at.key("calls"), "an aggregate needs at least one call"));
        }
        for (name, call) in a.calls.iter() {
            let here = at.key("calls").key(name);
            self.reference(
                &here.key("upstream"),
                &call.upstream,
                "upstream",
                self.file.upstreams.names(),
            )?;
            self.path(&here.key("path"), &call.path)?;
            self.positive(&here, "timeout", call.timeout)?;
            self.program(&here.key("select"), call.select.as_deref())?;
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

    fn rate_limit_names(&self, at: &KeyPath, list: &[String]) -> Result<(), ConfigError> {
        if list.is_empty() {
            return Err(self.src.error(
                at,
                "must name at least one rate limit; omit the key for none",
            ));
        }
        for (i, name) in list.iter().enumerate() {
            self.reference(
                &at.index(i),
                name,
                "rate limit",
                names(&self.file.rate_limits),
            )?;
        }
        Ok(())
    }

    fn reference<'n>(
        &self,
        at: &KeyPath,
        name: &str,
        kind: &str,
        defined: impl IntoIterator<Item = &'n str>,
    ) -> Result<(), ConfigError> {
        let defined: Vec<&str> = defined.into_iter().collect();
        if defined.contains(&name) {
            Ok(())
        } else {
            Err(self.src.error(
                at,
                format!("no {kind} named {name:?}{}", suggestion(name, defined)),
            ))
        }
    }

    /// A jq program; compiling it is the transform capability's job.
    fn program(&self, at: &KeyPath, program: Option<&str>) -> Result<(), ConfigError> {
        match program {
            Some(p) if p.trim().is_empty() => Err(self.src.error(at, "empty jq program")),
            _ => Ok(()),
        }
    }

    fn path(&self, at: &KeyPath, path: &str) -> Result<(), ConfigError> {
        if path.starts_with('/') {
            Ok(())
        } else {
            Err(self
                .src
                .error(at, format!("invalid path {path:?}: must start with \"/\"")))
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
