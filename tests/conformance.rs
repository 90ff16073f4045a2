//! Protocol conformance at the request side (BEHAVIOR.md "Proxying", RFC 9110/9112): line
//! endings, request targets and their normalisation, CONNECT, `OPTIONS *`, Max-Forwards, Host,
//! header names with underscores, HEAD. Every test runs the real gateway over loopback sockets
//! in front of a real upstream, and checks what the upstream received as well as what the
//! client got.

mod support;

use std::time::Duration;
use support::conformance::*;
use support::*;

/// RFC 9112 §2.2: a bare LF ending the request line or a header line was refused with 400;
/// it reads as CRLF, and the upstream gets the head re-serialized with CRLF only.
#[test]
fn bare_lf_line_endings_are_read_as_crlf() {
    let up = Upstream::echo();
    let gw = catch_all_gateway(&up, "");
    let (r, mut c) = exchange(
        gw.addr(),
        b"GET /a?x=1 HTTP/1.1\nHost: example.com\nX-A: one\r\nX-B: two\n\n",
        "GET",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = up.last_request();
    assert_eq!(seen.target, "/a?x=1");
    assert_eq!(seen.header("x-a"), Some("one"));
    assert_eq!(seen.header("x-b"), Some("two"));
    assert_eq!(seen.header("host"), Some("example.com"));
    assert!(
        !has_bare_lf(&seen.head_raw),
        "the upstream saw a bare LF: {:?}",
        String::from_utf8_lossy(&seen.head_raw)
    );
    // The connection stays in sync: a pipelined bare-LF POST with a body, then a CRLF GET.
    c.send(
        b"POST /b HTTP/1.1\nHost: x\nContent-Length: 5\n\nhelloGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let rs = c.read_responses(2);
    assert_eq!((rs[0].status, rs[1].status), (200, 200), "{rs:?}");
    let reqs = up.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        (reqs[1].target.as_str(), reqs[1].body.as_slice()),
        ("/b", &b"hello"[..])
    );
    assert_eq!(reqs[2].target, "/c");
    assert!(reqs.iter().all(|q| !has_bare_lf(&q.head_raw)));
}

/// The response side of RFC 9112 §2.2: an upstream status line or header line ending in a
/// bare LF was a 502; it reads as CRLF and the client gets CRLF only.
#[test]
fn bare_lf_in_upstream_response_head_is_read_as_crlf() {
    let up =
        Upstream::start(|_| Reply::raw(b"HTTP/1.1 200 Fine\nX-Up: 1\r\nContent-Length: 2\n\nhi"));
    let gw = catch_all_gateway(&up, "");
    let r = get(gw.addr(), "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.reason, "Fine");
    assert_eq!(r.header("x-up"), Some("1"));
    assert_eq!(r.body, b"hi");
    assert!(
        !has_bare_lf(&r.head_raw),
        "the client saw a bare LF: {:?}",
        String::from_utf8_lossy(&r.head_raw)
    );
}

/// A bare CR is still a 400 (RFC 9112 §2.2), and chunked framing lines still need CRLF.
#[test]
fn bare_cr_and_bare_lf_in_chunk_lines_are_still_refused() {
    let up = Upstream::echo();
    let gw = catch_all_gateway(&up, "");
    for raw in [
        &b"GET / HTTP/1.1\rHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\rX-B: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\r\n",
    ] {
        assert_400_and_close(gw.addr(), raw);
    }
    assert_eq!(up.request_count(), 0, "{:?}", up.requests());
    // The head is accepted, the bad chunk line is not: the body is read (for replay) before
    // the upstream is contacted, so it never sees the request.
    let (r, mut c) = exchange(
        gw.addr(),
        b"POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n5\nhello\r\n0\r\n\r\n",
        "POST",
    );
    assert_error(&r, 400);
    c.assert_closed(Duration::from_secs(3));
    assert_eq!(up.request_count(), 0, "{:?}", up.requests());
}

/// A CONNECT was forwarded to the upstream like any request. The gateway never tunnels: an
/// authority-form CONNECT is a 405 (with an empty `Allow`), any other CONNECT a 400.
#[test]
fn connect_is_never_tunnelled() {
    let up = Upstream::echo();
    let gw = catch_all_gateway(&up, "");
    let target = up.addr().to_string();
    let (r, mut c) = exchange(
        gw.addr(),
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
        "CONNECT",
    );
    assert_error(&r, 405);
    assert_eq!(r.header("allow"), Some(""), "{r:?}");
    // No tunnel: the connection still speaks HTTP.
    let again = c.request(&Req::get("/after"));
    assert_eq!(again.status, 200);
    assert_eq!(up.last_request().target, "/after");

    for bad in [
        "CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT a.example HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT u@a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT * HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert_400_and_close(gw.addr(), bad.as_bytes());
    }
    assert_eq!(up.request_count(), 1, "{:?}", up.requests());
}

/// `OPTIONS *` was a 400. The gateway answers it itself: 204, `Allow` listing the methods its
/// routes serve (HEAD with GET, and OPTIONS), no body, the connection kept.
#[test]
fn options_asterisk_is_answered_by_the_gateway() {
    let up = Upstream::echo();
    let gw = gateway_with_routes(
        &up,
        "[routes.read]\npaths = [\"/r\"]\nmethods = [\"GET\"]\nupstream = \"app\"\n\n\
         [routes.write]\npaths = [\"/w\"]\nmethods = [\"POST\", \"PURGE\"]\nupstream = \"app\"\n",
    );
    let (r, mut c) = exchange(
        gw.addr(),
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "OPTIONS",
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, OPTIONS, PURGE"));
    assert!(r.header("x-request-id").is_some());
    assert!(
        !r.has_header("content-length") && r.body.is_empty(),
        "{r:?}"
    );
    let again = c.request(&Req::get("/r"));
    assert_eq!(again.status, 200);
    // Asterisk-form belongs to OPTIONS alone.
    assert_400_and_close(gw.addr(), b"GET * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(up.request_count(), 1);
}

/// RFC 9110 §7.6.2: OPTIONS or TRACE with `Max-Forwards: 0` went to the upstream. The gateway
/// is then the last hop: OPTIONS gets 204 with the resource's `Allow`; TRACE gets 405 and
/// never an echo of the request (cross-site tracing would read its cookies).
#[test]
fn max_forwards_zero_is_answered_by_the_gateway() {
    let up = Upstream::echo();
    let gw = gateway_with_routes(
        &up,
        "[routes.api]\npaths = [\"/api\"]\nmethods = [\"GET\", \"POST\", \"OPTIONS\", \"TRACE\"]\nupstream = \"app\"\n",
    );
    let r = send_request(
        gw.addr(),
        &Req::new("OPTIONS", "/api/x").header("Max-Forwards", "0"),
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, OPTIONS, TRACE"));
    assert!(r.body.is_empty());

    let r = send_request(
        gw.addr(),
        &Req::new("TRACE", "/api/x")
            .header("Max-Forwards", "0")
            .header("Cookie", "session=s3cr3t"),
    );
    assert_error(&r, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, OPTIONS"));
    assert!(
        !r.text().contains("s3cr3t"),
        "TRACE echoed the request: {r:?}"
    );

    let r = send_request(
        gw.addr(),
        &Req::new("OPTIONS", "/nowhere").header("Max-Forwards", "0"),
    );
    assert_error(&r, 404);
    assert_eq!(up.request_count(), 0, "{:?}", up.requests());
}

/// A Max-Forwards above 0 on OPTIONS / TRACE is decremented when forwarded (RFC 9110 §7.6.2);
/// on other methods it passes through untouched.
#[test]
fn max_forwards_is_decremented_when_forwarded() {
    let up = Upstream::echo();
    let gw = catch_all_gateway(&up, "");
    let mut c = Client::connect(gw.addr());
    for (method, sent, forwarded) in [
        ("OPTIONS", "5", "4"),
        ("TRACE", "1", "0"),
        ("OPTIONS", "99999999999999999999999", "18446744073709551614"),
        ("GET", "5", "5"),
    ] {
        let r = c.request(&Req::new(method, "/x").header("Max-Forwards", sent));
        assert_eq!(r.status, 200, "{method} {sent}: {r:?}");
        let seen = up.last_request();
        assert_eq!(seen.method, method);
        assert_eq!(
            seen.header_all("max-forwards"),
            vec![forwarded],
            "{method} {sent}"
        );
    }
}

/// An invalid Max-Forwards on OPTIONS / TRACE is a 400 (RFC 9110 §7.6.2: `1*DIGIT`).
#[test]
fn invalid_max_forwards_is_a_400() {
    let up = Upstream::echo();
    let gw = catch_all_gateway(&up, "");
    for raw in [
        "OPTIONS /x HTTP/1.1\r\nHost: a\r\nMax-Forwards: abc\r\n\r\n",
        "OPTIONS /x HTTP/1.1\r\nHost: a\r\nMax-Forwards: -1\r\n\r\n",
        "TRACE /x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 1.5\r\n\r\n",
        "TRACE /x HTTP/1.1\r\nHost: a\r\nMax-Forwards:\r\n\r\n",
        "OPTIONS /x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 1\r\nMax-Forwards: 2\r\n\r\n",
    ] {
        assert_400_and_close(gw.addr(), raw.as_bytes());
    }
    assert_eq!(up.request_count(), 0, "{:?}", up.requests());
}

/// `Host: a b` was forwarded. A Host that is not a valid authority (RFC 9112 §3.2, RFC 3986
/// §3.2) is a 400; so is a second Host; valid forms pass.
#[test]
fn host_with_invalid_authority_is_a_400() {
    let up = Upstream::echo();
    let gw = catch_all_gateway(&up, "");
    for host in [
        "a b", "a/b", "u@a", "a:99999", "a:x", "[::1", "a\"b", "a,b c",
    ] {
        assert_400_and_close(
            gw.addr(),
            format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        );
    }
    assert_400_and_close(gw.addr(), b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n");
    // The authority of an absolute-form target is held to the same grammar.
    assert_400_and_close(gw.addr(), b"GET http://a%zz/ HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(up.request_count(), 0, "{:?}", up.requests());
    let mut c = Client::connect(gw.addr());
    for host in [
        "api.example.com",
        "[::1]:8080",
        "10.0.0.1:80",
        "xn--bcher-kva.example",
    ] {
        let r = c.request(&Req::get("/").host(host));
        assert_eq!(r.status, 200, "{host}: {r:?}");
        assert_eq!(up.last_request().header("host"), Some(host));
    }
}

/// `/%61dmin` missed the `/admin` route and reached the catch-all. Escapes of unreserved
/// characters are decoded, dot segments (`%2E` too) removed and slashes merged before routing,
/// and the upstream gets that same path; `%2F` stays encoded (upper-cased), the query verbatim.
#[test]
fn percent_encoded_path_is_normalized_before_routing() {
    let admin = Upstream::echo();
    let public = Upstream::echo();
    let gw = Gateway::start(&format!(
        "[upstreams.admin]\nendpoints = [\"{}\"]\nretries = 0\n\n\
         [upstreams.public]\nendpoints = [\"{}\"]\nretries = 0\n\n\
         [routes.admin]\npaths = [\"/admin\"]\nupstream = \"admin\"\n\n\
         [routes.api]\npaths = [\"/api\"]\nupstream = \"public\"\nstrip_prefix = true\n\n\
         [routes.all]\npaths = [\"/\"]\nupstream = \"public\"\n",
        admin.url(),
        public.url()
    ));
    let mut c = Client::connect(gw.addr());
    for (sent, to_admin, forwarded) in [
        ("/%61dmin", true, "/admin"),
        ("/%41dmin", false, "/Admin"),
        ("/public/../admin/x", true, "/admin/x"),
        ("/public/%2E%2e/admin", true, "/admin"),
        ("//admin//x/./", true, "/admin/x/"),
        ("/admin%2fx", false, "/admin%2Fx"),
        (
            "/%61pi//users/./7?q=%61&b=%2f",
            false,
            "/users/7?q=%61&b=%2f",
        ),
        ("/api/a%2fb%5c", false, "/a%2Fb%5C"),
        ("/files/caf%c3%a9?x", false, "/files/caf%C3%A9?x"),
    ] {
        let (before_admin, before_public) = (admin.request_count(), public.request_count());
        let r = c.request(&Req::get(sent));
        assert_eq!(r.status, 200, "{sent}: {r:?}");
        let (up, other) = if to_admin {
            (&admin, public.request_count() - before_public)
        } else {
            (&public, admin.request_count() - before_admin)
        };
        assert_eq!(other, 0, "{sent} reached the wrong upstream");
        assert_eq!(up.last_request().target, forwarded, "{sent}");
    }
    for bad in ["/%zz", "/%4", "/a%", "/x/../../admin", "/%2e%2e/admin"] {
        assert_400_and_close(
            gw.addr(),
            format!("GET {bad} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        );
    }
}

/// `X_Forwarded_For` and `Transfer_Encoding` reached the upstream, where CGI-style servers read
/// them as the dashed names. Header names with `_` are dropped on the way upstream and play no
/// part in any gateway decision (framing, forwarding headers).
#[test]
fn header_names_with_underscores_are_dropped() {
    let up = Upstream::echo();
    let gw = catch_all_gateway(&up, "");
    let (r, mut c) = exchange(
        gw.addr(),
        b"POST /u HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nTransfer_Encoding: chunked\r\n\
          X_Custom: 1\r\nX-Custom: 2\r\nContent-Length: 5\r\n\r\nhello",
        "POST",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = up.last_request();
    let names: Vec<&str> = seen.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.iter().all(|n| !n.contains('_')), "{names:?}");
    assert_eq!(seen.header("x-custom"), Some("2"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.body, b"hello");
    assert!(!seen.chunked);
    // The connection is in sync: the body was framed by Content-Length alone.
    assert_eq!(c.request(&Req::get("/next")).status, 200);
    assert_eq!(up.last_request().target, "/next");

    // A config that would read such a header is refused at load.
    let out = check(&format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\n\n[routes.r]\npaths = [\"/\"]\nupstream = \"app\"\nheaders = {{ \"x_canary\" = \"1\" }}\n",
        up.url()
    ));
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.all().contains("holds '_'"), "{}", out.all());
}

/// A fragment or a byte RFC 3986 forbids in the target was forwarded (or answered by
/// the route); each is a 400 and the connection is closed.
#[test]
fn targets_with_fragments_or_forbidden_bytes_are_400() {
    let up = Upstream::echo();
    let gw = catch_all_gateway(&up, "");
    for target in [
        &b"/x#frag"[..],
        b"/x?y#frag",
        b"/a\\b",
        b"/a\"b",
        b"/a{b",
        b"/a}b",
        b"/a<b",
        b"/a>b",
        b"/a|b",
        b"/a^b",
        b"/a`b",
        b"/a[b]",
        b"/caf\xc3\xa9",
        b"/a?b|c",
        b"/a?b\"c",
        b"/a?b\\c",
        b"/a?\x7f",
    ] {
        let mut raw = b"GET ".to_vec();
        raw.extend_from_slice(target);
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_400_and_close(gw.addr(), &raw);
    }
    assert_eq!(up.request_count(), 0, "{:?}", up.requests());
    // Square brackets in the query pass (browsers send them unencoded), verbatim.
    let r = get(gw.addr(), "/list?filter[name]=a&page[size]=2");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        up.last_request().target,
        "/list?filter[name]=a&page[size]=2"
    );
}

/// HEAD got 405 on a route whose `methods` allow GET. HEAD is allowed wherever GET is (RFC
/// 9110 §9.3.2), and the 405's `Allow` lists HEAD with GET.
#[test]
fn head_is_allowed_wherever_get_is() {
    let up = Upstream::start(|req| Reply::text(200, &format!("{} body", req.method)));
    let gw = gateway_with_routes(
        &up,
        "[routes.read]\npaths = [\"/r\"]\nmethods = [\"GET\"]\nupstream = \"app\"\n",
    );
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::head("/r"));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(up.last_request().method, "HEAD");
    let r = c.request(&Req::new("DELETE", "/r"));
    assert_error(&r, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // The connection is still in sync after the bodiless HEAD response.
    let r = c.request(&Req::get("/r"));
    assert_eq!(r.text(), "GET body");
}
