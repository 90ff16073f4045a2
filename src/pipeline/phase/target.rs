//! Phase 3: what the request asks for. Host and the target form are checked (RFC 9112 §3.2),
//! CONNECT is refused (the gateway never tunnels) and `OPTIONS *` answered here, then the path
//! is normalised once ([`crate::pipeline::target`]), so the path that is routed is the path
//! that is forwarded. `Max-Forwards` of an OPTIONS or TRACE is read here too, for the route
//! phase (last hop) and the upstream phase (decremented).

use crate::http::{Header, RequestHead};
use crate::pipeline::ctx::RequestId;
use crate::pipeline::target::{self as parser, Target};
use crate::pipeline::Response;
use crate::router::Router;

use super::framing::Framing;
use super::Flow;

/// This phase's part of the per-request state.
#[derive(Debug)]
pub struct Resource<'h> {
    /// The authority asked for: the absolute-form target's, else the Host field's.
    pub host: Option<&'h [u8]>,
    /// The normalised target.
    pub target: Target<'h>,
    /// `Max-Forwards` of an OPTIONS or TRACE (RFC 9110 §7.6.2).
    pub max_forwards: Option<u64>,
}

/// `headers`: the request's fields after phase 0.
#[inline]
pub fn run<'h>(
    head: &RequestHead<'h>,
    headers: &[Header<'h>],
    router: &Router,
    framing: &Framing,
    id: &RequestId,
) -> Flow<Resource<'h>> {
    let bad = |msg: String| Flow::Respond(Response::error(400, msg, *id).closing());
    // The codec owns the Host rules (RFC 9112 §3.2): exactly one in HTTP/1.1, a valid
    // authority; an absolute-form target's authority wins.
    let host = match head.host() {
        Ok(host) => host,
        Err(e) => return bad(e.to_string()),
    };
    if head.method == "CONNECT" {
        // RFC 9110 §9.3.6: CONNECT asks for a tunnel, which the gateway never opens; its
        // target must be authority-form (RFC 9112 §3.2.3), and no route serves it.
        if !parser::is_authority_form(head.target) {
            return bad("CONNECT needs an authority-form target".into());
        }
        let mut r = framing.close_if_body(Response::error(
            405,
            "CONNECT is not served: the gateway does not tunnel",
            *id,
        ));
        // RFC 9110 §10.2.1: an empty Allow, the resource allows no method.
        r.allow = Some(String::new());
        return Flow::Respond(r);
    }
    let max_forwards = match head.method {
        "OPTIONS" | "TRACE" => match max_forwards(headers) {
            Ok(n) => n,
            Err(msg) => return bad(msg.into()),
        },
        _ => None,
    };
    if head.target == "*" {
        // RFC 9112 §3.2.4: asterisk-form is for a server-wide OPTIONS only, answered here.
        if head.method != "OPTIONS" {
            return bad("asterisk-form target is only for OPTIONS".into());
        }
        let allow = router.allow_all().to_string();
        return Flow::Respond(framing.close_if_body(Response::options(allow, *id)));
    }
    match parser::parse(head.target) {
        Ok(target) => Flow::Continue(Resource {
            host,
            target,
            max_forwards,
        }),
        Err(e) => bad(e.to_string()),
    }
}

/// The value of `Max-Forwards` (RFC 9110 §7.6.2: `1*DIGIT`), saturating at u64::MAX. Err: the
/// 400's message, for an invalid value or more than one field.
fn max_forwards(headers: &[Header<'_>]) -> Result<Option<u64>, &'static str> {
    let value =
        super::single(headers, "max-forwards").map_err(|()| "more than one Max-Forwards field")?;
    let Some(value) = value else {
        return Ok(None);
    };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err("invalid Max-Forwards value");
    }
    Ok(Some(value.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::BodyKind;
    use crate::pipeline::phase::testing::{config, head, id, message, router};
    use crate::pipeline::Body;

    const CONFIG: &str = r#"
[upstreams.users]
endpoints = ["http://127.0.0.1:9001"]

[routes.users]
paths = ["/users"]
methods = ["GET", "POST"]
upstream = "users"
"#;

    const NO_BODY: Framing = Framing {
        body: BodyKind::None,
        keep_alive: true,
        expect_continue: false,
    };

    fn target<'a>(raw: &'a [u8], framing: &Framing) -> Flow<Resource<'a>> {
        let h = head(raw);
        let router = router(&config(CONFIG));
        run(&h, &h.headers, &router, framing, &id())
    }

    fn answer(raw: &[u8], framing: &Framing) -> Response {
        match target(raw, framing) {
            Flow::Respond(r) => r,
            Flow::Continue(res) => panic!("not answered: {res:?}"),
        }
    }

    fn resource(raw: &[u8]) -> Resource<'_> {
        match target(raw, &NO_BODY) {
            Flow::Continue(res) => res,
            Flow::Respond(r) => panic!("answered: {r:?}"),
        }
    }

    #[test]
    fn connect_is_refused_with_an_empty_allow() {
        let r = answer(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            &NO_BODY,
        );
        assert_eq!(
            (r.status, r.allow.as_deref(), r.close),
            (405, Some(""), false)
        );
        assert_eq!(
            message(&r),
            "CONNECT is not served: the gateway does not tunnel"
        );
        let body = Framing {
            body: BodyKind::Length(2),
            ..NO_BODY
        };
        let r = answer(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n",
            &body,
        );
        assert!(r.close, "the unread body closes the connection");
        let r = answer(b"CONNECT /path HTTP/1.1\r\nHost: a\r\n\r\n", &NO_BODY);
        assert_eq!(
            (r.status, message(&r), r.close),
            (400, "CONNECT needs an authority-form target", true)
        );
    }

    #[test]
    fn options_asterisk_is_answered_with_every_served_method() {
        let r = answer(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &NO_BODY);
        assert_eq!(
            (r.status, r.allow.as_deref(), r.close),
            (204, Some("GET, HEAD, POST, OPTIONS"), false)
        );
        assert!(matches!(r.body, Body::Empty));
        let r = answer(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", &NO_BODY);
        assert_eq!(
            (r.status, message(&r)),
            (400, "asterisk-form target is only for OPTIONS")
        );
    }

    #[test]
    fn host_errors_are_400_and_close() {
        let cases: [&[u8]; 4] = [
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            b"GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for raw in cases {
            let r = answer(raw, &NO_BODY);
            assert_eq!(
                (r.status, r.close),
                (400, true),
                "{}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(r.id.as_str(), "test-id");
        }
        // HTTP/1.0 may omit Host.
        assert_eq!(resource(b"GET / HTTP/1.0\r\n\r\n").host, None);
    }

    #[test]
    fn the_path_is_normalised_once_and_the_absolute_form_authority_wins() {
        let res = resource(b"GET /a/./b/../%61%2f//c?x=%2e HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            (&*res.target.path, res.target.query),
            ("/a/a%2F/c", Some("x=%2e"))
        );
        assert_eq!(res.host, Some(&b"h"[..]));
        let res = resource(b"GET http://other:8080/p HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            (&*res.target.path, res.host),
            ("/p", Some(&b"other:8080"[..]))
        );
        let r = answer(b"GET /../x HTTP/1.1\r\nHost: h\r\n\r\n", &NO_BODY);
        assert_eq!((r.status, message(&r)), (400, "invalid request path"));
    }

    #[test]
    fn max_forwards_is_read_for_options_and_trace_only() {
        let res = resource(b"OPTIONS /users HTTP/1.1\r\nHost: h\r\nMax-Forwards: 07\r\n\r\n");
        assert_eq!(res.max_forwards, Some(7));
        let res = resource(b"GET /users HTTP/1.1\r\nHost: h\r\nMax-Forwards: x\r\n\r\n");
        assert_eq!(res.max_forwards, None);
        let r = answer(
            b"TRACE /users HTTP/1.1\r\nHost: h\r\nMax-Forwards: 1\r\nMax-Forwards: 2\r\n\r\n",
            &NO_BODY,
        );
        assert_eq!(
            (r.status, message(&r)),
            (400, "more than one Max-Forwards field")
        );
        let r = answer(
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\nMax-Forwards: -1\r\n\r\n",
            &NO_BODY,
        );
        assert_eq!((r.status, message(&r)), (400, "invalid Max-Forwards value"));
    }
}
