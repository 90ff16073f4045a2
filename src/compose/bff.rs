//! Backend-for-frontend client profiles: the request phase that says which `[bff.clients.*]`
//! a request belongs to, after the target is normalised and before routing (ARCHITECTURE.md).
//!
//! - By prefix: the normalised path equals a client's `prefix` or continues it with `/`
//!   (segment boundary: `/mobile/v1x` is not under `/mobile/v1`). The prefix is removed from
//!   the path before routing (`/mobile/v1` alone becomes `/`), and the path forwarded
//!   upstream is the one without it: a route's `strip_prefix` / `rewrite` then apply to the
//!   rest as usual. The query is untouched. Prefixes never nest (config), so at most one
//!   client claims a path.
//! - Else by `bff.header`: its value equal to a client's name, compared exactly (names are
//!   config keys). A value that names no client leaves the request without a client (routes
//!   without `client` still serve it); two fields with different values are a 400, since
//!   which one names the client would be a guess. A prefix match wins over the header, which
//!   is then not read.
//! - The client decided is the client forwarded: the incoming `bff.header` is removed (phase 0
//!   drops it like an identity header) and, when the request has a client, set to its name
//!   ([`forwarded`]), so an upstream never sees `x-client-type: admin` on a request the
//!   gateway served as `web`.
//!
//! What the client means downstream: routes with `client = "C"` match only C's requests (the
//! router's client predicate), and a route reached by C's request that has no `auth`, or
//! lists no `rate_limits`, takes C's ([`crate::config::model::Route::effective_auth`],
//! [`crate::config::model::Route::effective_rate_limits`]: a route's own list replaces the
//! client's, not merged). Client defaults are per request: a route without `client` reached
//! by a mobile request gets mobile's auth, and reached by a request of no client only its own
//! (so a route that must always authenticate needs its own `auth`, or `client`). A request
//! under a prefix that no route matches is a 404 like any other.
//!
//! Cost: without `[bff]` one branch; with it, one compare per client prefix and, when no
//! prefix matched, one pass over the header fields. The path is shortened in place: a
//! borrowed path is re-borrowed, an already normalised (owned) one is shifted.

use std::borrow::Cow;

use crate::config::model::{Bff, ClientId};
use crate::http::Header;
use crate::pipeline::ctx::RequestId;
use crate::pipeline::phase::framing::Framing;
use crate::pipeline::phase::target::Resource;
use crate::pipeline::phase::Flow;
use crate::pipeline::Response;

/// The client of the request (None: no client), its prefix removed from `resource`'s path.
/// `headers`: the request's fields after phase 0.
#[inline]
pub fn run(
    bff: Option<&Bff>,
    headers: &[Header<'_>],
    resource: &mut Resource<'_>,
    framing: &Framing,
    id: &RequestId,
) -> Flow<Option<ClientId>> {
    let Some(bff) = bff else {
        return Flow::Continue(None);
    };
    for (client, c) in bff.clients.iter().enumerate() {
        let Some(prefix) = c.prefix.as_deref() else {
            continue;
        };
        if let Some(rest) = under(&resource.target.path, prefix) {
            remove_prefix(&mut resource.target.path, rest);
            return Flow::Continue(Some(client));
        }
    }
    let Some(name) = bff.header.as_deref() else {
        return Flow::Continue(None);
    };
    let mut value: Option<&[u8]> = None;
    for h in headers {
        if !h.name.eq_ignore_ascii_case(name) {
            continue;
        }
        match value {
            Some(v) if v != h.value => {
                let r = Response::error(
                    400,
                    format!("more than one {name} field, with different values: which names the client is ambiguous"),
                    *id,
                );
                return Flow::Respond(framing.close_if_body(r));
            }
            _ => value = Some(h.value),
        }
    }
    Flow::Continue(value.and_then(|v| bff.clients.iter().position(|c| c.name.as_bytes() == v)))
}

/// The BFF header and the name of the request's client, as sent upstream (None: no header
/// configured, or no client).
pub fn forwarded(bff: Option<&Bff>, client: Option<ClientId>) -> Option<(&str, &str)> {
    let bff = bff?;
    Some((
        bff.header.as_deref()?,
        bff.clients.get(client?)?.name.as_str(),
    ))
}

/// The length of what follows `prefix` in `path` when `path` is under it on a segment
/// boundary: 0 for the prefix itself, else the length of a rest starting with `/`.
fn under(path: &str, prefix: &str) -> Option<usize> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest.len())
}

/// Keeps the last `rest` bytes of `path` (a rest starting with `/`, or `/` when none).
fn remove_prefix(path: &mut Cow<'_, str>, rest: usize) {
    let cut = path.len() - rest;
    match path {
        Cow::Borrowed(p) => *p = if rest == 0 { "/" } else { &p[cut..] },
        Cow::Owned(p) if rest == 0 => *p = String::from("/"),
        Cow::Owned(p) => {
            p.drain(..cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::BodyKind;
    use crate::pipeline::phase::target;
    use crate::pipeline::phase::testing::{config, head, id, message, router};

    const CONFIG: &str = r#"
[upstreams.u]
endpoints = ["http://127.0.0.1:9001"]

[bff]
header = "X-Client-Type"

[bff.clients.mobile]
prefix = "/mobile/v1"

[bff.clients.web]
prefix = "/web"

[bff.clients.tv]

[routes.all]
paths = ["/"]
upstream = "u"
"#;

    const NO_BODY: Framing = Framing {
        body: BodyKind::None,
        keep_alive: true,
        expect_continue: false,
    };

    /// Runs the target phase and this one on `raw`: the client's name and the path routed,
    /// or the answer.
    #[allow(clippy::result_large_err)] // a test helper: the answer is inspected whole
    fn client(raw: &[u8]) -> Result<(Option<String>, String), Response> {
        let cfg = config(CONFIG);
        let router = router(&cfg);
        let h = head(raw);
        let Flow::Continue(mut res) = target::run(&h, &h.headers, &router, &NO_BODY, &id()) else {
            panic!("the target phase answered");
        };
        match run(cfg.bff.as_ref(), &h.headers, &mut res, &NO_BODY, &id()) {
            Flow::Continue(c) => {
                let name = c.map(|c| cfg.bff.as_ref().unwrap().clients[c].name.clone());
                Ok((name, res.target.path.into_owned()))
            }
            Flow::Respond(r) => Err(r),
        }
    }

    fn ok(raw: &[u8]) -> (Option<String>, String) {
        client(raw).unwrap_or_else(|r| panic!("answered {r:?}"))
    }

    #[test]
    fn a_prefix_names_the_client_and_is_removed_on_segment_boundaries() {
        for (raw, want) in [
            (
                &b"GET /mobile/v1/accounts/7?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
                (Some("mobile"), "/accounts/7"),
            ),
            (
                b"GET /mobile/v1 HTTP/1.1\r\nHost: a\r\n\r\n",
                (Some("mobile"), "/"),
            ),
            (
                b"GET /mobile/v1/ HTTP/1.1\r\nHost: a\r\n\r\n",
                (Some("mobile"), "/"),
            ),
            (
                b"GET /mobile/v1x/a HTTP/1.1\r\nHost: a\r\n\r\n",
                (None, "/mobile/v1x/a"),
            ),
            (
                b"GET /mobile HTTP/1.1\r\nHost: a\r\n\r\n",
                (None, "/mobile"),
            ),
            (
                b"GET /web/x HTTP/1.1\r\nHost: a\r\n\r\n",
                (Some("web"), "/x"),
            ),
            // The prefix is compared with the normalised path, and what is left stays so.
            (
                b"GET /%6Dobile/./v1//a/../b HTTP/1.1\r\nHost: a\r\n\r\n",
                (Some("mobile"), "/b"),
            ),
            (
                b"GET /%6Dobile/v1 HTTP/1.1\r\nHost: a\r\n\r\n",
                (Some("mobile"), "/"),
            ),
            (
                b"GET http://h/web/y HTTP/1.1\r\nHost: a\r\n\r\n",
                (Some("web"), "/y"),
            ),
        ] {
            let (name, path) = ok(raw);
            assert_eq!(
                (name.as_deref(), path.as_str()),
                want,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn the_header_names_a_client_when_no_prefix_does() {
        for (raw, want) in [
            (&b"GET /a HTTP/1.1\r\nHost: a\r\nX-Client-Type: tv\r\n\r\n"[..], Some("tv")),
            (b"GET /a HTTP/1.1\r\nHost: a\r\nx-client-type: mobile\r\n\r\n", Some("mobile")),
            // Compared exactly: names are config keys.
            (b"GET /a HTTP/1.1\r\nHost: a\r\nX-Client-Type: Mobile\r\n\r\n", None),
            (b"GET /a HTTP/1.1\r\nHost: a\r\nX-Client-Type: watch\r\n\r\n", None),
            (b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", None),
            // The same value twice names the client once.
            (b"GET /a HTTP/1.1\r\nHost: a\r\nX-Client-Type: tv\r\nX-Client-Type: tv\r\n\r\n", Some("tv")),
            // A prefix wins over the header, which is not read then.
            (b"GET /web/a HTTP/1.1\r\nHost: a\r\nX-Client-Type: tv\r\nX-Client-Type: mobile\r\n\r\n", Some("web")),
        ] {
            assert_eq!(ok(raw).0.as_deref(), want, "{}", String::from_utf8_lossy(raw));
        }
        let (_, path) = ok(b"GET /mobile/v1/a HTTP/1.1\r\nHost: a\r\nX-Client-Type: tv\r\n\r\n");
        assert_eq!(path, "/a");
    }

    #[test]
    fn two_header_fields_with_different_values_are_400() {
        let r = client(
            b"GET /a HTTP/1.1\r\nHost: a\r\nX-Client-Type: tv\r\nX-Client-Type: mobile\r\n\r\n",
        )
        .expect_err("answered");
        assert_eq!(
            (r.status, message(&r), r.close),
            (
                400,
                "more than one x-client-type field, with different values: which names the client is ambiguous",
                false
            )
        );
        assert_eq!(r.id.as_str(), "test-id");
    }

    #[test]
    fn without_bff_no_request_has_a_client() {
        let cfg = config("[upstreams.u]\nendpoints = [\"http://127.0.0.1:9001\"]\n");
        let router = router(&cfg);
        let h = head(b"GET /mobile/v1/a HTTP/1.1\r\nHost: a\r\nX-Client-Type: tv\r\n\r\n");
        let Flow::Continue(mut res) = target::run(&h, &h.headers, &router, &NO_BODY, &id()) else {
            panic!("the target phase answered");
        };
        let got = run(None, &h.headers, &mut res, &NO_BODY, &id());
        assert!(matches!(got, Flow::Continue(None)), "{got:?}");
        assert_eq!(res.target.path, "/mobile/v1/a");
    }
}
