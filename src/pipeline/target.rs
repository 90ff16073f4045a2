//! The request target (RFC 9112 §3.2): origin-form and absolute-form, byte checks, path
//! normalisation, and the path sent upstream after `strip_prefix` / `rewrite`.
//!
//! Normalisation happens once, before routing, so that the path that was routed is the path
//! that is forwarded (RFC 3986 §6.2.2): percent-encoded unreserved characters are decoded
//! (`%61` is `a`, `%2E` is `.`), the hex of the escapes kept is upper-cased (`%2f` -> `%2F`),
//! `.` and `..` segments are resolved (§5.2.4) and repeated slashes merged, as nginx does.
//! `%2F` and `%5C` stay encoded: decoding them would change which segments the path has. A
//! `..` that would climb above the root is a 400 (nginx does the same; §5.2.4 would drop it).
//! The query is forwarded verbatim.
//!
//! Bytes are checked against RFC 3986: the path takes `pchar` and `/` only, with every `%`
//! starting a valid escape; the query takes `pchar`, `/`, `?`, and also `[` and `]`, which
//! browsers send unencoded in queries (WHATWG URL) and JSON:API-style APIs use
//! (`filter[name]=x`); its escapes are the upstream's to read. A fragment, whitespace, a
//! control byte, a byte above 0x7F, or any of `"<>\^`{|}` is a 400.
//!
//! Cost: one pass over the target with a byte-class table (the target is already text:
//! httparse checked it); a path that needs no normalisation (the common case) is not copied.

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

/// A request target that cannot be served. All are 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// 400: not origin-form or absolute-form http(s), or an invalid authority.
    #[error("invalid request target")]
    Invalid,
    /// 400: a `#fragment` (RFC 9112 §3.2: never sent in a request).
    #[error("request target with a fragment")]
    Fragment,
    /// 400: a byte RFC 3986 does not allow where it stands.
    #[error("invalid character in request target")]
    InvalidByte,
    /// 400: `%` not followed by two hex digits in the path.
    #[error("malformed percent-encoding in request path")]
    MalformedEscape,
    /// 400: `..` above the root.
    #[error("invalid request path")]
    EscapesRoot,
}

/// Byte classes: bit 0 allowed in the path, bit 1 allowed in the query.
const PATH: u8 = 1;
const QUERY: u8 = 2;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        // `%` starts an escape (checked by the scanner) and `/` separates segments.
        let pchar = crate::http::is_pchar(c) || c == b'%' || c == b'/';
        if pchar {
            t[b] = PATH | QUERY;
        } else if matches!(c, b'?' | b'[' | b']') {
            t[b] = QUERY;
        }
        b += 1;
    }
    t
};

/// RFC 3986 §2.3 unreserved: what a `%XX` escape may be decoded to.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Parses an origin-form or absolute-form target. `*` and authority-form are the caller's
/// (they belong to OPTIONS and CONNECT).
pub fn parse(raw: &str) -> Result<Target<'_>, TargetError> {
    let (authority, rest) = if raw.starts_with('/') {
        (None, raw)
    } else {
        let has_prefix = |p: &str| {
            raw.as_bytes()
                .get(..p.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(p.as_bytes()))
        };
        let after = if has_prefix("http://") {
            &raw[7..]
        } else if has_prefix("https://") {
            &raw[8..]
        } else {
            return Err(TargetError::Invalid);
        };
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let authority = &after[..end];
        if authority.is_empty() || !crate::http::parse::is_authority(authority.as_bytes()) {
            return Err(TargetError::Invalid);
        }
        let rest = &after[end..];
        (Some(authority), rest)
    };
    let (path_len, needs) = scan_path(rest.as_bytes())?;
    let query = match rest.as_bytes().get(path_len) {
        Some(b'?') => {
            let query = &rest[path_len + 1..];
            if let Some(&b) = query
                .as_bytes()
                .iter()
                .find(|&&b| CLASS[usize::from(b)] & QUERY == 0)
            {
                return Err(refused(b));
            }
            Some(query)
        }
        _ => None,
    };
    let path = &rest[..path_len];
    let path = if path.is_empty() {
        Cow::Borrowed("/")
    } else if needs {
        normalize(path)?
    } else {
        Cow::Borrowed(path)
    };
    Ok(Target {
        path,
        query,
        authority,
    })
}

/// The error for a byte that is not allowed where it stands.
fn refused(b: u8) -> TargetError {
    if b == b'#' {
        TargetError::Fragment
    } else {
        TargetError::InvalidByte
    }
}

/// Whether `target` is the authority-form of a CONNECT request (RFC 9112 §3.2.3):
/// `uri-host ":" port`, the port present.
pub fn is_authority_form(target: &str) -> bool {
    let has_port = match target.rfind(':') {
        Some(colon) => colon + 1 < target.len() && !target[colon + 1..].contains(']'),
        None => false,
    };
    has_port && crate::http::parse::is_authority(target.as_bytes())
}

/// One pass over the path part of a target: checks every byte and escape, finds where the
/// path ends (its length: the end, or the '?' that starts the query), and says whether the
/// path needs normalising.
fn scan_path(path: &[u8]) -> Result<(usize, bool), TargetError> {
    let mut needs = false;
    let mut seg_start = 0;
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if CLASS[usize::from(b)] & PATH == 0 {
            if b == b'?' {
                break;
            }
            return Err(refused(b));
        }
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    path.get(i + 1).copied().and_then(hex),
                    path.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(TargetError::MalformedEscape);
                };
                // Decoded when unreserved, upper-cased when written in lower case.
                needs |= is_unreserved(hi << 4 | lo)
                    || path[i + 1].is_ascii_lowercase()
                    || path[i + 2].is_ascii_lowercase();
                i += 3;
                continue;
            }
            b'/' => {
                needs |= is_dot_segment(&path[seg_start..i]) || (i > 0 && path[i - 1] == b'/');
                seg_start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    Ok((i, needs || is_dot_segment(&path[seg_start..i])))
}

fn is_dot_segment(seg: &[u8]) -> bool {
    seg == b"." || seg == b".."
}

/// Normalises a path that [`scan_path`] accepted and found in need of it.
fn normalize(path: &str) -> Result<Cow<'_, str>, TargetError> {
    // 1. Decode unreserved escapes, upper-case the others (all escapes are valid here).
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (hi, lo) = (bytes[i + 1], bytes[i + 2]);
            let value = hex(hi).unwrap_or(0) << 4 | hex(lo).unwrap_or(0);
            if is_unreserved(value) {
                decoded.push(char::from(value));
            } else {
                decoded.push('%');
                decoded.push(char::from(hi.to_ascii_uppercase()));
                decoded.push(char::from(lo.to_ascii_uppercase()));
            }
            i += 3;
        } else {
            decoded.push(char::from(bytes[i]));
            i += 1;
        }
    }
    // 2. Dot segments and empty segments. '/' is a separator only where it was sent as one:
    //    %2F stayed encoded above.
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(TargetError::EscapesRoot);
                }
            }
            _ => out.push(seg),
        }
    }
    let mut s = String::with_capacity(decoded.len());
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
        parse(raw).map(|t| {
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
            ("http://a b/", Err(TargetError::Invalid)),
            ("http://a#x/", Err(TargetError::Fragment)),
            ("http://h?x", Ok(("/", Some("x"), Some("h")))),
            ("http://[::1]:8080/p", Ok(("/p", None, Some("[::1]:8080")))),
            ("http://h:99999/", Err(TargetError::Invalid)),
            ("/a..b/.c", Ok(("/a..b/.c", None, None))),
            // Percent-encoded unreserved characters are decoded, the rest upper-cased.
            ("/%61dmin", Ok(("/admin", None, None))),
            ("/%41%5a%7e%2D%5F%30", Ok(("/AZ~-_0", None, None))),
            ("/a%2fb", Ok(("/a%2Fb", None, None))),
            ("/a%2Fb/%5c/%5C", Ok(("/a%2Fb/%5C/%5C", None, None))),
            ("/caf%c3%a9", Ok(("/caf%C3%A9", None, None))),
            ("/%20x", Ok(("/%20x", None, None))),
            ("/%2e%2E/x", Err(TargetError::EscapesRoot)),
            ("/a/%2e/b", Ok(("/a/b", None, None))),
            ("/a/.%2e/b", Ok(("/b", None, None))),
            ("/a/%2e%2e%2f/b", Ok(("/a/..%2F/b", None, None))),
            ("/a/b/%2E", Ok(("/a/b/", None, None))),
            ("//a///b//", Ok(("/a/b/", None, None))),
            ("/%2F%2F", Ok(("/%2F%2F", None, None))),
            // The query is forwarded verbatim, escapes and all.
            (
                "/%61?q=%61%zz&a[]=1",
                Ok(("/a", Some("q=%61%zz&a[]=1"), None)),
            ),
            ("/a?b?c/d", Ok(("/a", Some("b?c/d"), None))),
            // Malformed escapes in the path.
            ("/%zz", Err(TargetError::MalformedEscape)),
            ("/%4", Err(TargetError::MalformedEscape)),
            ("/a%", Err(TargetError::MalformedEscape)),
            ("/%4g", Err(TargetError::MalformedEscape)),
            // Bytes RFC 3986 does not allow.
            ("/x#frag", Err(TargetError::Fragment)),
            ("/x?a#frag", Err(TargetError::Fragment)),
            ("/a\\b", Err(TargetError::InvalidByte)),
            ("/a\"b", Err(TargetError::InvalidByte)),
            ("/a{b", Err(TargetError::InvalidByte)),
            ("/a}b", Err(TargetError::InvalidByte)),
            ("/a<b", Err(TargetError::InvalidByte)),
            ("/a>b", Err(TargetError::InvalidByte)),
            ("/a|b", Err(TargetError::InvalidByte)),
            ("/a^b", Err(TargetError::InvalidByte)),
            ("/a`b", Err(TargetError::InvalidByte)),
            ("/a[b", Err(TargetError::InvalidByte)),
            ("/a]b", Err(TargetError::InvalidByte)),
            ("/caf\u{e9}", Err(TargetError::InvalidByte)),
            ("/a?b c", Err(TargetError::InvalidByte)),
            ("/a?b|c", Err(TargetError::InvalidByte)),
            ("/a?b\\c", Err(TargetError::InvalidByte)),
        ];
        for (raw, want) in cases {
            let got = p(raw);
            let want = want
                .clone()
                .map(|(a, b, c)| (a.to_string(), b.map(Into::into), c.map(Into::into)));
            assert_eq!(got, want, "{raw}");
        }
    }

    /// A path with nothing to normalise is borrowed, not copied.
    #[test]
    fn clean_paths_are_not_copied() {
        for raw in [
            "/",
            "/api/v1/users/12345/orders",
            "/a%2Fb%C3%A9",
            "/a.b/.c/..d",
        ] {
            let t = parse(raw).unwrap();
            assert!(matches!(t.path, Cow::Borrowed(_)), "{raw}");
        }
        let t = parse("/api/v1/users?status=open&x=%zz").unwrap();
        assert!(matches!(t.path, Cow::Borrowed(_)));
    }

    #[test]
    fn authority_form() {
        for ok in ["a.example:443", "10.0.0.1:5432", "[::1]:8080", "db:1"] {
            assert!(is_authority_form(ok), "{ok}");
        }
        for bad in [
            "a.example",
            "a.example:",
            "/x",
            "[::1]",
            "a b:1",
            "u@h:1",
            "h:1/x",
            "*",
            "",
        ] {
            assert!(!is_authority_form(bad), "{bad}");
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
