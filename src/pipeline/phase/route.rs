//! Phase 4: which route serves the request: path, then method, host, headers and BFF client
//! (BEHAVIOR.md precedence), by the compiled [`Router`]. No route is a 404; a route for the path but not
//! the method is a 405 with `Allow`.
//!
//! `Max-Forwards: 0` on an OPTIONS or TRACE is answered here, once the resource is known:
//! the gateway is then the last hop (RFC 9110 §7.6.2).

use crate::config::model::ClientId;
use crate::http::{Header, RequestHead};
use crate::pipeline::ctx::RequestId;
use crate::pipeline::Response;
use crate::router::{Lookup, Match, RequestView, Router};

use super::framing::Framing;
use super::target::Resource;
use super::Flow;

/// `headers`: the request's fields after phase 0, for header predicates; `client`: the BFF
/// phase's.
#[inline]
#[allow(clippy::too_many_arguments)] // the phase's narrow context, spelled out
pub fn run<'r, 'p>(
    head: &'p RequestHead<'_>,
    headers: &'p [Header<'_>],
    resource: &'p Resource<'_>,
    client: Option<ClientId>,
    router: &'r Router,
    framing: &Framing,
    id: &RequestId,
) -> Flow<Match<'r, 'p>> {
    let view = RequestView {
        path: &resource.target.path,
        method: head.method,
        host: resource.host,
        headers,
        client,
    };
    if resource.max_forwards == Some(0) {
        return Flow::Respond(framing.close_if_body(last_hop(&view, router, id)));
    }
    match router.lookup(&view) {
        Lookup::Found(m) => Flow::Continue(m),
        Lookup::MethodNotAllowed { allow } => {
            let mut r = framing.close_if_body(Response::error(405, "Method not allowed", *id));
            r.allow = Some(allow);
            Flow::Respond(r)
        }
        Lookup::NotFound => Flow::Respond(framing.close_if_body(Response::error(
            404,
            "No route matches the request",
            *id,
        ))),
    }
}

/// The answer to an OPTIONS or TRACE with `Max-Forwards: 0`: the gateway is the last hop
/// (RFC 9110 §7.6.2). OPTIONS gets 204 with the resource's `Allow`. TRACE gets 405: the
/// gateway never reflects a request, since the echo would hand a page's cookies and
/// credentials to a script (cross-site tracing), which is why nginx refuses TRACE outright.
fn last_hop(view: &RequestView<'_, [Header<'_>]>, router: &Router, id: &RequestId) -> Response {
    let Some(allow) = router.allowed(view) else {
        return Response::error(404, "No route matches the request", *id);
    };
    if view.method == "OPTIONS" {
        return Response::options(allow, *id);
    }
    let mut r = Response::error(
        405,
        "TRACE with Max-Forwards: 0 is not answered: the gateway does not reflect requests",
        *id,
    );
    let without_trace: Vec<&str> = allow.split(", ").filter(|m| *m != "TRACE").collect();
    r.allow = Some(without_trace.join(", "));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::BodyKind;
    use crate::pipeline::phase::testing::{config, head, id, message, router};
    use crate::pipeline::phase::{target, Flow};
    use crate::pipeline::Body;

    const CONFIG: &str = r#"
[upstreams.users]
endpoints = ["http://127.0.0.1:9001"]

[routes.users]
paths = ["/users", "/users/:id"]
methods = ["GET", "PUT", "TRACE"]
upstream = "users"

[routes.admin]
paths = ["/admin"]
hosts = ["admin.example.com"]
upstream = "users"

[routes.beta]
paths = ["/beta"]
headers = { "x-beta" = "1" }
upstream = "users"
"#;

    const NO_BODY: Framing = Framing {
        body: BodyKind::None,
        keep_alive: true,
        expect_continue: false,
    };

    /// Runs the target and route phases on `raw` with `framing`: the matched route's name and
    /// prefix length, or the answer.
    #[allow(clippy::result_large_err)] // a test helper: the answer is inspected whole
    fn route(raw: &[u8], framing: &Framing) -> Result<(String, usize), Response> {
        let cfg = config(CONFIG);
        let router = router(&cfg);
        let h = head(raw);
        let Flow::Continue(res) = target::run(&h, &h.headers, &router, framing, &id()) else {
            panic!("the target phase answered");
        };
        let out = match run(&h, &h.headers, &res, None, &router, framing, &id()) {
            Flow::Continue(m) => Ok((cfg.routes[m.route].name.clone(), m.prefix_len)),
            Flow::Respond(r) => Err(r),
        };
        out
    }

    fn answer(raw: &[u8], framing: &Framing) -> Response {
        route(raw, framing).expect_err("answered")
    }

    #[test]
    fn routes_by_path_host_and_header() {
        let cases: [(&[u8], &str); 3] = [
            (b"GET /users/7 HTTP/1.1\r\nHost: a\r\n\r\n", "users"),
            (
                b"POST /admin HTTP/1.1\r\nHost: Admin.Example.com:8080\r\n\r\n",
                "admin",
            ),
            (
                b"GET /beta HTTP/1.1\r\nHost: a\r\nX-Beta: 1\r\n\r\n",
                "beta",
            ),
        ];
        for (raw, want) in cases {
            let got = route(raw, &NO_BODY).unwrap_or_else(|r| panic!("answered {r:?}"));
            assert_eq!(got.0, want, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn no_route_is_404() {
        for raw in [
            &b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /admin HTTP/1.1\r\nHost: other.example.com\r\n\r\n",
            b"GET /beta HTTP/1.1\r\nHost: a\r\nX-Beta: 2\r\n\r\n",
        ] {
            let r = answer(raw, &NO_BODY);
            assert_eq!(
                (r.status, message(&r), r.close),
                (404, "No route matches the request", false)
            );
            assert_eq!(r.id.as_str(), "test-id");
        }
    }

    #[test]
    fn wrong_method_is_405_with_allow_and_closes_over_an_unread_body() {
        let body = Framing {
            body: BodyKind::Length(2),
            ..NO_BODY
        };
        let r = answer(
            b"POST /users HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n",
            &body,
        );
        assert_eq!((r.status, message(&r)), (405, "Method not allowed"));
        assert_eq!(r.allow.as_deref(), Some("GET, HEAD, PUT, TRACE"));
        assert!(r.close, "the unread body closes the connection");
    }

    #[test]
    fn max_forwards_zero_is_answered_as_the_last_hop() {
        let r = answer(
            b"OPTIONS /users HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n",
            &NO_BODY,
        );
        assert_eq!(
            (r.status, r.allow.as_deref()),
            (204, Some("GET, HEAD, PUT, TRACE"))
        );
        assert!(matches!(r.body, Body::Empty));
        let r = answer(
            b"TRACE /users HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n",
            &NO_BODY,
        );
        assert_eq!(
            (r.status, r.allow.as_deref()),
            (405, Some("GET, HEAD, PUT"))
        );
        let r = answer(
            b"OPTIONS /nope HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n",
            &NO_BODY,
        );
        assert_eq!(r.status, 404);
        // A hop limit left is forwarded (decremented by the upstream phase), not answered.
        let got = route(
            b"TRACE /users HTTP/1.1\r\nHost: a\r\nMax-Forwards: 1\r\n\r\n",
            &NO_BODY,
        );
        assert_eq!(got.unwrap().0, "users");
    }
}
