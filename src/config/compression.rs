//! `[compression]`, from what was written to [`model::Compression`]: the codings in the
//! gateway's order of preference, the smallest body worth compressing, and the media types
//! (`type/subtype` or `type/*`, lower-cased; matched on a response's type without its
//! parameters, [`crate::http::encoding::compressible`]).
//!
//! An absent section is no compression: a response is never altered unless asked for.

use super::error::ConfigError;
use super::file;
use super::model;
use super::source::{KeyPath, Source};
use super::validate::{is_token, Section};
use crate::http::encoding::Coding;

/// `algorithms` when not written: brotli first (a better ratio than gzip at the levels used,
/// for about the same CPU; see `benches/compress.rs`), gzip for every other client.
pub const DEFAULT_ALGORITHMS: [Coding; 2] = [Coding::Br, Coding::Gzip];
/// `min_size` when not written: below about 1 KiB the coding's header and the CPU spent
/// outweigh the bytes saved (one TCP segment either way).
pub const DEFAULT_MIN_SIZE: u64 = 1024;
/// `types` when not written: the text formats an API gateway carries.
pub const DEFAULT_TYPES: [&str; 6] = [
    "application/json",
    "application/problem+json",
    "application/javascript",
    "application/xml",
    "image/svg+xml",
    "text/*",
];

/// The `[compression]` section, `None` without one.
pub(super) fn compression(
    written: &Option<file::Compression>,
    src: &Source,
) -> Result<Option<model::Compression>, ConfigError> {
    let Some(c) = written else { return Ok(None) };
    let at = KeyPath::of(&["compression"]);
    let section = Section::new(src, &at);
    let algorithms = match &c.algorithms {
        None => DEFAULT_ALGORITHMS.to_vec(),
        Some(list) if list.is_empty() => {
            return Err(section.error("algorithms", "must list at least one of \"br\", \"gzip\""))
        }
        Some(list) => {
            let mut out: Vec<Coding> = Vec::with_capacity(list.len());
            for (i, e) in list.iter().enumerate() {
                let coding = match e {
                    file::Encoding::Br => Coding::Br,
                    file::Encoding::Gzip => Coding::Gzip,
                };
                if out.contains(&coding) {
                    return Err(src.error(
                        &at.key("algorithms").index(i),
                        format!("duplicate algorithm {:?}", coding.token()),
                    ));
                }
                out.push(coding);
            }
            out
        }
    };
    let min_size = section
        .size("min_size", c.min_size, 0)?
        .unwrap_or(DEFAULT_MIN_SIZE);
    let types = match &c.types {
        None => DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
        Some(list) if list.is_empty() => {
            return Err(section.error(
                "types",
                "must list at least one media type, as in [\"application/json\", \"text/*\"]",
            ))
        }
        Some(list) => {
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for (i, media) in list.iter().enumerate() {
                let here = at.key("types").index(i);
                let valid = media.split_once('/').is_some_and(|(kind, sub)| {
                    kind != "*" && is_token(kind) && (sub == "*" || is_token(sub))
                });
                if !valid {
                    let message = if media.starts_with("*/") {
                        format!("{media:?} would compress every type, images and archives included (already compressed): list the types, as in \"text/*\"")
                    } else {
                        format!(
                            "invalid media type {media:?}: expected \"type/subtype\" or \"type/*\""
                        )
                    };
                    return Err(src.error(&here, message));
                }
                // Media types are case-insensitive (RFC 9110 §8.3.1).
                let lower = media.to_ascii_lowercase();
                if out.contains(&lower) {
                    return Err(src.error(&here, format!("duplicate media type {media:?}")));
                }
                out.push(lower);
            }
            out
        }
    };
    Ok(Some(model::Compression {
        algorithms,
        min_size,
        types,
    }))
}
