//! Phase 0: header fields whose name holds `_` are dropped before any phase can read them, as
//! nginx does by default (`underscores_in_headers off`). CGI-style upstreams read
//! `X_Forwarded_For` as `X-Forwarded-For`, so forwarding it would let a client forge the
//! headers the gateway sets; no phase decides anything on such a field either.
//!
//! Cost: one scan of the names; the fields are copied (inline, no allocation up to the
//! codec's inline field count) only when one must go.

use crate::http::{Header, Headers};

/// The fields of `headers` without those whose name holds `_`: `headers` itself when none
/// does, else the kept fields, stored in `kept`.
#[inline]
pub fn strip<'a, 'h>(
    headers: &'a [Header<'h>],
    kept: &'a mut Option<Headers<'h>>,
) -> &'a [Header<'h>] {
    if !headers.iter().any(|h| h.name.contains('_')) {
        return headers;
    }
    kept.insert(
        headers
            .iter()
            .filter(|h| !h.name.contains('_'))
            .copied()
            .collect(),
    )
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
        let names: Vec<&str> = strip(&h.headers, &mut kept)
            .iter()
            .map(|h| h.name)
            .collect();
        assert_eq!(names, ["Host", "X-A"]);
    }

    #[test]
    fn fields_without_underscores_are_not_copied() {
        let h = head(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n");
        let mut kept = None;
        let out = strip(&h.headers, &mut kept);
        assert!(std::ptr::eq(out, &h.headers[..]));
        assert!(kept.is_none());
    }
}
