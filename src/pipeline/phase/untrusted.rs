//! Phase 0: header fields the gateway never trusts from a client are dropped before any phase
//! can read them:
//! - names holding `_`, as nginx does by default (`underscores_in_headers off`): CGI-style
//!   upstreams read `X_Forwarded_For` as `X-Forwarded-For`, so forwarding it would let a client
//!   forge the headers the gateway sets;
//! - the identity headers any auth policy sets (`forward`), on every route, whether or not it
//!   has auth (BEHAVIOR.md "Authentication"): only the auth phase may say who the client is, and
//!   no later phase (a route's header predicate, a `header:` rate-limit key) may read a forged one.
//!
//! Cost: one scan of the names (plus a compare per identity header when a config has any);
//! the fields are copied (inline, no allocation up to the codec's inline field count) only when
//! one must go.

use crate::http::{Header, Headers};

/// The fields of `headers` without those whose name holds `_` or is one of `identity`
/// (lower-case names): `headers` itself when none is, else the kept fields, stored in `kept`.
#[inline]
pub fn strip<'a, 'h>(
    headers: &'a [Header<'h>],
    identity: &[Box<str>],
    kept: &'a mut Option<Headers<'h>>,
) -> &'a [Header<'h>] {
    let untrusted = |h: &Header<'_>| {
        h.name.contains('_') || identity.iter().any(|i| h.name.eq_ignore_ascii_case(i))
    };
    if !headers.iter().any(untrusted) {
        return headers;
    }
    kept.insert(headers.iter().filter(|h| !untrusted(h)).copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::phase::testing::head;

    #[test]
    fn fields_with_underscores_are_dropped_and_the_rest_kept_in_order() {
        let h = head(
            b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nX-A: 1\r\nx_b: 2\r\n\r\n",
        );
        let mut kept = None;
        let names: Vec<&str> = strip(&h.headers, &[], &mut kept)
            .iter()
            .map(|h| h.name)
            .collect();
        assert_eq!(names, ["Host", "X-A"]);
    }

    /// A client cannot supply an identity header an auth policy sets, in any letter case.
    #[test]
    fn identity_headers_are_dropped_in_any_case() {
        let h = head(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-User-Id: admin\r\nX-A: 1\r\nx-user-ID: root\r\nX-Consumer-Id: c\r\n\r\n",
        );
        let identity: Vec<Box<str>> = vec!["x-user-id".into(), "x-consumer-id".into()];
        let mut kept = None;
        let names: Vec<&str> = strip(&h.headers, &identity, &mut kept)
            .iter()
            .map(|h| h.name)
            .collect();
        assert_eq!(names, ["Host", "X-A"]);
    }

    #[test]
    fn fields_without_underscores_are_not_copied() {
        let h = head(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n");
        let mut kept = None;
        let identity: Vec<Box<str>> = vec!["x-user-id".into()];
        let out = strip(&h.headers, &identity, &mut kept);
        assert!(std::ptr::eq(out, &h.headers[..]));
        assert!(kept.is_none());
    }
}
