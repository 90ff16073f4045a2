//! Phase 2: body framing is validated before anything may read the body (RFC 9112 §6.3), and
//! the client's expectations met or refused (RFC 9110 §10.1.1).
//!
//! Its output, [`Framing`], also decides how every later answer ends the connection: an answer
//! made before the body was read closes it ([`Framing::close_if_body`]), since the unread body
//! would be misread as the next request.

use crate::http::{self, BodyKind, Header, Version};
use crate::pipeline::ctx::RequestId;
use crate::pipeline::Response;

use super::Flow;

/// This phase's part of the per-request state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// Request body framing (RFC 9112 §6.3).
    pub body: BodyKind,
    /// The client allows the connection to stay open after this response.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body.
    pub expect_continue: bool,
}

impl Framing {
    /// `r`, made before the body was read: it closes the connection when a body follows the
    /// head (anything after it would be misread as the next request) or the client asked to.
    pub fn close_if_body(&self, mut r: Response) -> Response {
        if self.body != BodyKind::None || !self.keep_alive {
            r.close = true;
        }
        r
    }
}

#[inline]
pub fn run(version: Version, headers: &[Header<'_>], id: &RequestId) -> Flow<Framing> {
    let body = match http::request_body(headers, version) {
        Ok(body) => body,
        Err(e) => return Flow::Respond(Response::error(e.status(), e.to_string(), *id).closing()),
    };
    let keep_alive = !http::wants_close(version, headers);
    let expect = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("expect"))
        .map(|h| h.value);
    let expect_continue = match expect {
        None => false,
        Some(v) if v.eq_ignore_ascii_case(b"100-continue") => {
            version == Version::Http11 && body != BodyKind::None
        }
        // RFC 9110 §10.1.1: an expectation we cannot meet.
        Some(_) => {
            return Flow::Respond(Response::error(417, "Unsupported expectation", *id).closing())
        }
    };
    Flow::Continue(Framing {
        body,
        keep_alive,
        expect_continue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::phase::testing::{head, id, message};

    fn framing(raw: &[u8]) -> Flow<Framing> {
        let h = head(raw);
        run(h.version, &h.headers, &id())
    }

    #[test]
    fn framing_of_valid_heads() {
        let cases: [(&[u8], Framing); 4] = [
            (
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Framing {
                    body: BodyKind::None,
                    keep_alive: true,
                    expect_continue: false,
                },
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n",
                Framing {
                    body: BodyKind::Length(3),
                    keep_alive: true,
                    expect_continue: true,
                },
            ),
            (
                // Nothing to continue without a body.
                b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
                Framing {
                    body: BodyKind::None,
                    keep_alive: true,
                    expect_continue: false,
                },
            ),
            (
                b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n",
                Framing {
                    body: BodyKind::Length(2),
                    keep_alive: false,
                    expect_continue: false,
                },
            ),
        ];
        for (raw, want) in cases {
            match framing(raw) {
                Flow::Continue(got) => assert_eq!(got, want, "{}", String::from_utf8_lossy(raw)),
                Flow::Respond(r) => panic!("answered {r:?}"),
            }
        }
    }

    #[test]
    fn conflicting_framing_and_unknown_expectations_are_answered_and_close() {
        let cases: [(&[u8], u16, &str); 2] = [
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
                "both Transfer-Encoding and Content-Length",
            ),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417, "Unsupported expectation"),
        ];
        for (raw, status, msg) in cases {
            let Flow::Respond(r) = framing(raw) else {
                panic!("not answered: {}", String::from_utf8_lossy(raw));
            };
            assert_eq!((r.status, message(&r), r.close), (status, msg, true));
            assert_eq!(r.id.as_str(), "test-id");
        }
    }

    #[test]
    fn an_answer_before_the_body_closes_only_when_a_body_or_close_follows() {
        let open = Framing {
            body: BodyKind::None,
            keep_alive: true,
            expect_continue: false,
        };
        assert!(!open.close_if_body(Response::error(404, "x", id())).close);
        let body = Framing {
            body: BodyKind::Length(1),
            ..open
        };
        assert!(body.close_if_body(Response::error(404, "x", id())).close);
        let closing = Framing {
            keep_alive: false,
            ..open
        };
        assert!(closing.close_if_body(Response::error(404, "x", id())).close);
    }
}
