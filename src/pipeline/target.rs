//! The request target (RFC 9112 §3.2): origin-form and absolute-form, path normalisation, and
//! the path sent upstream after `strip_prefix` / `rewrite`.
//!
//! Normalisation happens once, before routing, so that the path that was routed is the path
//! that is forwarded: `.` and `..` segments are resolved (RFC 3986 §5.2.4, also in their
//! percent-encoded forms) and repeated slashes merged, as nginx does. A `..` that would climb
//! above the root is a 400. Paths that need none of this are not copied.

use std::borrow::Cow;

#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// Normalised path, always starting with '/'.
    pub path: Cow<'a, str>,
    /// Query string without the '?', if any.
    pub query: Option<&'a str>,
    /// Authority of an absolute-form target (it replaces the Host header, RFC 9112 §3.2.2).
    pub authority: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// 400: not origin-form or absolute-form http(s).
    #[error("invalid request target")]
    Invalid,
    /// 400: `..` above the root.
    #[error("invalid request path")]
    EscapesRoot,
}

pub fn parse(raw: &[u8]) -> Result<Target<'_>, TargetError> {
    let raw = std::str::from_utf8(raw).map_err(|_| TargetError::Invalid)?;
    let (authority, rest) = if raw.starts_with('/') {
        (None, raw)
    } else {
        let lower_scheme = raw
            .get(..7)
            .map(|s| s.eq_ignore_ascii_case("http://"))
            .unwrap_or(false);
        let lower_scheme_s = raw
            .get(..8)
            .map(|s| s.eq_ignore_ascii_case("https://"))
            .unwrap_or(false);
        let after = if lower_scheme {
            &raw[7..]
        } else if lower_scheme_s {
            &raw[8..]
        } else {
            return Err(TargetError::Invalid);
        };
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let authority = &after[..end];
        if authority.is_empty() || authority.contains('@') {
            return Err(TargetError::Invalid);
        }
        let rest = &after[end..];
        (Some(authority), if rest.is_empty() { "/" } else { rest })
    };
    let (path, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let path = if path.is_empty() {
        Cow::Borrowed("/")
    } else {
        normalize(path)?
    };
    Ok(Target {
        path,
        query,
        authority,
    })
}

fn is_dot(seg: &str) -> bool {
    strip_dot(seg.as_bytes()).is_some_and(<[u8]>::is_empty)
}

/// One `.` of a dot segment, raw or percent-encoded; returns the rest of the segment.
fn strip_dot(seg: &[u8]) -> Option<&[u8]> {
    match seg {
        [b'.', rest @ ..] => Some(rest),
        [b'%', b'2', e, rest @ ..] if e.eq_ignore_ascii_case(&b'e') => Some(rest),
        _ => None,
    }
}

fn is_dotdot(seg: &str) -> bool {
    strip_dot(seg.as_bytes())
        .and_then(strip_dot)
        .is_some_and(<[u8]>::is_empty)
}

fn normalize(path: &str) -> Result<Cow<'_, str>, TargetError> {
    let needs = path.contains("//") || path.split('/').any(|s| is_dot(s) || is_dotdot(s));
    if !needs {
        return Ok(Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    for seg in path.split('/') {
        if seg.is_empty() || is_dot(seg) {
            continue;
        }
        if is_dotdot(seg) {
            if out.pop().is_none() {
                return Err(TargetError::EscapesRoot);
            }
            continue;
        }
        out.push(seg);
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() || trailing {
        s.push('/');
    }
    Ok(Cow::Owned(s))
}

/// The path+query sent upstream: `matched` bytes of `path` are replaced by `rewrite`, or
/// removed when `strip` (an empty result becomes "/"); the rest and the query are kept.
pub fn upstream_target(
    out: &mut Vec<u8>,
    path: &str,
    query: Option<&str>,
    matched: usize,
    strip: bool,
    rewrite: Option<&str>,
) {
    let rest = &path[matched.min(path.len())..];
    match (rewrite, strip) {
        (Some(new), _) => {
            out.extend_from_slice(new.as_bytes());
            let rest = if new.ends_with('/') {
                rest.strip_prefix('/').unwrap_or(rest)
            } else {
                rest
            };
            out.extend_from_slice(rest.as_bytes());
        }
        (None, true) => {
            if !rest.starts_with('/') {
                out.push(b'/');
            }
            out.extend_from_slice(rest.as_bytes());
        }
        (None, false) => out.extend_from_slice(path.as_bytes()),
    }
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str) -> Result<(String, Option<String>, Option<String>), TargetError> {
        parse(raw.as_bytes()).map(|t| {
            (
                t.path.into_owned(),
                t.query.map(Into::into),
                t.authority.map(Into::into),
            )
        })
    }

    type Want = Result<(&'static str, Option<&'static str>, Option<&'static str>), TargetError>;

    #[test]
    fn targets() {
        let cases: &[(&str, Want)] = &[
            ("/a/b?x=1", Ok(("/a/b", Some("x=1"), None))),
            ("/", Ok(("/", None, None))),
            ("/a//b", Ok(("/a/b", None, None))),
            ("/a/./b/../c", Ok(("/a/c", None, None))),
            ("/a/%2e%2E/c", Ok(("/c", None, None))),
            ("/a/b/..", Ok(("/a/", None, None))),
            ("/..", Err(TargetError::EscapesRoot)),
            ("/a/../../etc/passwd", Err(TargetError::EscapesRoot)),
            (
                "http://api.example.com/x?y",
                Ok(("/x", Some("y"), Some("api.example.com"))),
            ),
            ("HTTP://h:8080", Ok(("/", None, Some("h:8080")))),
            ("*", Err(TargetError::Invalid)),
            ("example.com:443", Err(TargetError::Invalid)),
            ("http://u@h/", Err(TargetError::Invalid)),
            ("/a..b/.c", Ok(("/a..b/.c", None, None))),
        ];
        for (raw, want) in cases {
            let got = p(raw);
            let want = want
                .clone()
                .map(|(a, b, c)| (a.to_string(), b.map(Into::into), c.map(Into::into)));
            assert_eq!(got, want, "{raw}");
        }
    }

    #[test]
    fn upstream_targets() {
        let t = |path, q, m, strip, rw| {
            let mut out = Vec::new();
            upstream_target(&mut out, path, q, m, strip, rw);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            t("/api/v1/users/7", Some("a=1"), 13, false, None),
            "/api/v1/users/7?a=1"
        );
        assert_eq!(t("/api/v1/users/7", None, 13, true, None), "/7");
        assert_eq!(t("/api/v1/users", None, 13, true, None), "/");
        assert_eq!(
            t(
                "/api/v1/transfers",
                Some("x"),
                17,
                false,
                Some("/v2/transfers")
            ),
            "/v2/transfers?x"
        );
        assert_eq!(t("/old/a/b", None, 4, false, Some("/new/")), "/new/a/b");
        assert_eq!(t("/old/a/b", None, 4, false, Some("/new")), "/new/a/b");
    }
}
