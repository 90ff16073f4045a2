//! [`ConfigError`]: why a config file was rejected, and where.
//!
//! Every rejection except an unreadable file carries a position and a key path, so that
//! `dispatch check`, `dispatch run` and admin `POST /reload` all report the same single line:
//! `FILE:LINE:COL: KEY.PATH: message`.

use std::fmt;
use std::path::PathBuf;

use super::model::Location;

/// A config that cannot be used. `dispatch run` and `dispatch check` exit 1 with it; a reload
/// reports it and keeps the running config. No variant maps to an HTTP status of its own.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all (missing, unreadable, not UTF-8).
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but is not a valid config: a TOML syntax error, an unknown key, a
    /// value of the wrong type or form, a dangling reference, or a capability not built yet.
    #[error("{location}: {}", KeyAndMessage { key, message })]
    Invalid {
        /// 1-based line and column of the offending value (of the key, for an unknown key;
        /// of the enclosing table's header, for a missing key).
        location: Location,
        /// Dotted key path, e.g. `routes.users.upstream` or `upstreams.users.endpoints[1].weight`.
        /// Empty only for TOML syntax errors, where no key path is known.
        key: String,
        /// One line, without the location or key path.
        message: String,
    },
}

impl ConfigError {
    /// The position of the problem, where there is one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { location, .. } => Some(location),
        }
    }
}

/// `key: message`, or just `message` when the key path is unknown (syntax errors).
struct KeyAndMessage<'a> {
    key: &'a str,
    message: &'a str,
}

impl fmt::Display for KeyAndMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// The candidate closest to `name` when it is close enough to be a likely typo.
///
/// Optimal string alignment distance (edits and adjacent swaps), compared case-insensitively;
/// "close enough" is at most one edit per three characters (and at least one), or one name
/// being a prefix of the other (`max_body_size` -> `max_body`). The closest wins.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let lower = candidate.to_ascii_lowercase();
            let distance = edit_distance(&name, &lower);
            let prefix = name.len().min(lower.len()) >= 4
                && (name.starts_with(&lower) || lower.starts_with(&name));
            (distance <= limit || prefix).then_some((distance, candidate))
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance between `a` and `b`, over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_table() {
        let keys = ["endpoints", "balance", "upstream", "users", "users_v2"];
        for (name, expected) in [
            ("upstrem", Some("upstream")),
            ("upsteram", Some("upstream")),
            ("user", Some("users")),
            ("Users", Some("users")),
            ("balanse", Some("balance")),
            ("endpoint", Some("endpoints")),
            ("endpoints_list", Some("endpoints")),
            ("bal", None),
            ("xyz", None),
            ("weight", None),
        ] {
            assert_eq!(did_you_mean(name, keys), expected, "{name}");
        }
    }

    #[test]
    fn display_is_one_line() {
        let err = ConfigError::Invalid {
            location: Location {
                file: "config/dispatch.toml".into(),
                line: 42,
                col: 9,
            },
            key: "routes.users.upstream".into(),
            message: "no upstream named \"user\" (did you mean \"users\"?)".into(),
        };
        assert_eq!(
            err.to_string(),
            "config/dispatch.toml:42:9: routes.users.upstream: no upstream named \"user\" (did you mean \"users\"?)"
        );
        let read = ConfigError::Read {
            path: "missing.toml".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(
            read.to_string(),
            "missing.toml: cannot read: entity not found"
        );
    }
}
