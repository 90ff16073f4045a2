//! Path pattern syntax: parses one string of `routes.*.paths` into segments.
//!
//! Key type: [`Pattern`]. The one thing to know: a pattern is a list of segments of the path
//! *after* its leading '/', split on '/', exactly as [`super::trie`] splits a request path, so
//! `"/a/b"` is `[a, b]`, `"=/a/"` is `[a, ""]` and `"=/"` is `[""]`. The prefix pattern `"/"` is
//! the empty list (it matches every path), and a trailing `"/*"` is a flag, not a segment.
//!
//! Grammar (RFC 3986 §3.3 `pchar` for literal characters):
//! ```text
//! pattern  = [ "=" ] "/" [ segment *( "/" segment ) ] [ "/*" ]   ; "/*" alone is allowed too
//! segment  = literal / ":" name
//! literal  = 1*( unreserved / pct-encoded / sub-delims-but-"*" / ":" / "@" )   ; not "." or ".."
//!            ; pct-encoded in normalized form: upper-case hex, never an unreserved character
//! name     = 1*( ALPHA / DIGIT / "_" )
//! ```
//! An exact pattern (`=`) may end in `/` (then the request path must end in `/` too: exact means
//! exact) and may not end in `/*`. A prefix pattern may not end in `/`: `"/x"` already matches
//! `/x/`, and `"/x/"` would read as if it did not match `/x`.

/// One segment of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Matches a request segment with exactly these bytes (case-sensitive).
    /// Empty only as the last segment of an exact pattern with a trailing '/'.
    Literal(String),
    /// `:name`: matches any non-empty request segment; holds the name without the ':'.
    Param(String),
}

/// A parsed, validated path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    /// `=`: the request path must end where the pattern ends.
    pub exact: bool,
    /// Ends in `/*`: same paths as without it, ranked just below it.
    pub wildcard: bool,
    pub segments: Vec<Segment>,
}

/// Parses `src`; the error is the reason, for [`super::RouteError::InvalidPattern`].
pub(crate) fn parse(src: &str) -> Result<Pattern, String> {
    let (exact, rest) = match src.strip_prefix('=') {
        Some(rest) => (true, rest),
        None => (false, src),
    };
    let Some(body) = rest.strip_prefix('/') else {
        return Err("a path pattern must start with '/' (or '=/' for an exact path)".into());
    };
    let mut pattern = Pattern {
        exact,
        wildcard: false,
        segments: Vec::new(),
    };
    if body.is_empty() && !exact {
        return Ok(pattern); // "/": the root prefix, matches every path
    }
    let raw: Vec<&str> = body.split('/').collect();
    let last = raw.len() - 1;
    for (i, seg) in raw.iter().copied().enumerate() {
        if seg.is_empty() {
            if i == last && exact {
                pattern.segments.push(Segment::Literal(String::new()));
                continue;
            }
            if i == last {
                return Err(
                    "a prefix pattern may not end in '/': \"/x\" already matches /x/ and /x/..."
                        .into(),
                );
            }
            return Err("empty segment (\"//\")".into());
        }
        if seg == "*" {
            if i != last {
                return Err("'*' must be the last segment".into());
            }
            if exact {
                return Err("an exact ('=') pattern cannot end in '/*'".into());
            }
            pattern.wildcard = true;
            continue;
        }
        if let Some(name) = seg.strip_prefix(':') {
            check_param_name(name)?;
            if pattern
                .segments
                .iter()
                .any(|s| matches!(s, Segment::Param(n) if n == name))
            {
                return Err(format!("duplicate parameter name \":{name}\""));
            }
            pattern.segments.push(Segment::Param(name.to_string()));
            continue;
        }
        check_literal(seg)?;
        pattern.segments.push(Segment::Literal(seg.to_string()));
    }
    Ok(pattern)
}

fn check_param_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("':' without a parameter name".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!(
            "character {c:?} in parameter name \":{name}\" (letters, digits and '_' only)"
        ));
    }
    Ok(())
}

fn check_literal(seg: &str) -> Result<(), String> {
    // The request path arrives normalized (RFC 3986 §6.2.2.3): dot segments are gone.
    if seg == "." || seg == ".." {
        return Err(format!(
            "dot segment {seg:?} never matches a normalized path"
        ));
    }
    let bytes = seg.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'*' => return Err("'*' must be a whole segment ('/*') at the end".into()),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3);
                let Some(hex) = hex.filter(|h| h.iter().all(u8::is_ascii_hexdigit)) else {
                    return Err("'%' must be followed by two hex digits".into());
                };
                // Request paths are normalized before routing (see pipeline::target): an
                // escape in any other form could never match.
                let text = std::str::from_utf8(hex).unwrap_or("00");
                let value = u8::from_str_radix(text, 16).unwrap_or(0);
                if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                    return Err(format!(
                        "\"%{text}\" never matches: request paths are normalized, write {:?}",
                        char::from(value)
                    ));
                }
                if hex.iter().any(u8::is_ascii_lowercase) {
                    return Err(format!(
                        "\"%{text}\" never matches: request paths are normalized, write \"%{}\"",
                        text.to_ascii_uppercase()
                    ));
                }
                i += 3;
                continue;
            }
            _ if crate::http::is_pchar(b) => {}
            _ => {
                let c = seg[i..].chars().next().unwrap_or('?');
                return Err(format!(
                    "character {c:?} is not allowed in a path (RFC 3986 pchar)"
                ));
            }
        }
        i += 1;
    }
    Ok(())
}
