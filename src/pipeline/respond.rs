//! The response phases: what every answer gets on its way out, whoever made it: a request
//! phase's [`Response`](super::Response) (404, 401, 429, a breaker's fallback), the gateway's
//! 502/504 after a failed call, or the upstream's head relayed by the proxy phase.
//!
//! [`phases`] runs them in order and returns the header fields they add; both writers (the
//! gateway's, `ClientIo::send_response`, and the relayed head's, `headers::write_response_head`)
//! put exactly that list on the wire, so a capability that adds to every answer (`RateLimit-*`,
//! a cache status, an identity or trace header) is one line here, not one per writer.
//!
//! The order, one line per constraint:
//! 1. identity: `X-Request-Id`, so a client can quote any answer (the upstream's own value is
//!    kept: it may be the id the upstream logged);
//! 2. (later capabilities, in this order: rate-limit headers -> cache store -> response
//!    transform -> compression; each is refused at config load until it lands.)
//!
//! Cost: a few borrowed slices in an inline list; nothing is allocated per answer.

use smallvec::SmallVec;

use super::ctx::RequestId;

/// A header field a response phase adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Added<'a> {
    pub name: &'static str,
    pub value: &'a str,
    /// An upstream response that carries this field keeps its own value; otherwise the
    /// upstream's field is replaced by this one.
    pub upstream_wins: bool,
}

/// What the response phases add, in order.
pub type AddedHeaders<'a> = SmallVec<[Added<'a>; 4]>;

/// What the response phases know of the request being answered.
pub struct Answering<'a> {
    pub id: &'a RequestId,
}

/// Runs the response phases for one answer.
pub fn phases<'a>(a: &Answering<'a>) -> AddedHeaders<'a> {
    let mut added = AddedHeaders::new();
    // 1. identity
    added.push(Added {
        name: "X-Request-Id",
        value: a.id.as_str(),
        upstream_wins: true,
    });
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every answer carries the request id; an upstream's own id is kept.
    #[test]
    fn identity_adds_the_request_id_and_lets_the_upstream_keep_its_own() {
        let id = RequestId::from_client(b"abc-123").unwrap();
        let added = phases(&Answering { id: &id });
        assert_eq!(
            added.as_slice(),
            &[Added {
                name: "X-Request-Id",
                value: "abc-123",
                upstream_wins: true
            }]
        );
    }
}
