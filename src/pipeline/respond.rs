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
//! 2. rate limits: `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` on every answer
//!    of a rate-limited route whose limits were checked (the gateway's values replace an
//!    upstream's: the client is limited here);
//! 3. cache: `X-Cache` on every answer of a cached route, and `Age` on a stored answer (the
//!    gateway's values replace an upstream's: the answer is the cache's; a MISS keeps the
//!    upstream's own `Age`, the age its own cache gave it);
//! 4. the response transform's header edits (the proxy stage, `compose::transform`), then
//!    compression ([`super::compress`]), last: it reads the head as the client would get it
//!    (its type, `Cache-Control`, `Content-Encoding`) and rewrites its framing.
//!
//! Cost: a few borrowed slices in an inline list; nothing is allocated per answer (the rate
//! numbers are formatted once, into inline buffers, by the rate-limit phase).

use smallvec::SmallVec;

use super::ctx::RequestId;
use crate::metrics::CacheResult;

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
pub type AddedHeaders<'a> = SmallVec<[Added<'a>; 6]>;

/// What the response phases know of the request being answered.
pub struct Answering<'a> {
    pub id: &'a RequestId,
    /// The route's rate-limit values, formatted (the rate-limit phase's).
    pub rate: Option<&'a RateText>,
    /// The cache's result and a stored answer's age, formatted (the cache phase's).
    pub cache: Option<&'a CacheText>,
}

/// What the cache phase says of an answer: `X-Cache`, and `Age` when a stored response
/// answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheMark {
    pub result: CacheResult,
    pub age: Option<u64>,
}

impl CacheMark {
    pub fn text(&self) -> CacheText {
        CacheText {
            result: self.result.header(),
            age: self.age.map(Number::new),
        }
    }
}

/// [`CacheMark`] formatted (no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheText {
    result: &'static str,
    age: Option<Number>,
}

/// The `RateLimit-*` values of a request (draft-ietf-httpapi-ratelimit-headers: the most
/// restrictive of the route's limits). Plain numbers: formatted only when an answer is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the key is fully restored.
    pub reset: u64,
}

impl RateHeaders {
    pub fn new(h: &crate::policy::ratelimit::Headers) -> RateHeaders {
        RateHeaders {
            limit: h.limit,
            remaining: h.remaining,
            reset: h.reset_secs,
        }
    }

    /// Whether these leave the client less than `other` (less remaining; on a tie, the later
    /// reset).
    pub fn tighter_than(&self, other: &RateHeaders) -> bool {
        (self.remaining, std::cmp::Reverse(self.reset))
            < (other.remaining, std::cmp::Reverse(other.reset))
    }

    /// The three values as header text.
    pub fn text(&self) -> RateText {
        RateText {
            limit: Number::new(self.limit),
            remaining: Number::new(self.remaining),
            reset: Number::new(self.reset),
        }
    }
}

/// [`RateHeaders`] formatted, in inline buffers (no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateText {
    limit: Number,
    remaining: Number,
    reset: Number,
}

/// A decimal number in an inline buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Number {
    digits: [u8; 20],
    len: u8,
}

impl Number {
    fn new(mut n: u64) -> Number {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        digits.copy_within(i.., 0);
        Number {
            digits,
            len: (20 - i) as u8,
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits are stored.
        std::str::from_utf8(&self.digits[..self.len as usize]).unwrap_or("0")
    }
}

impl std::fmt::Debug for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    // 2. rate limits
    if let Some(rate) = a.rate {
        for (name, n) in [
            ("RateLimit-Limit", &rate.limit),
            ("RateLimit-Remaining", &rate.remaining),
            ("RateLimit-Reset", &rate.reset),
        ] {
            added.push(Added {
                name,
                value: n.as_str(),
                upstream_wins: false,
            });
        }
    }
    // 3. cache
    if let Some(cache) = a.cache {
        added.push(Added {
            name: "X-Cache",
            value: cache.result,
            upstream_wins: false,
        });
        if let Some(age) = &cache.age {
            added.push(Added {
                name: "Age",
                value: age.as_str(),
                upstream_wins: false,
            });
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every answer carries the request id; an upstream's own id is kept.
    #[test]
    fn identity_adds_the_request_id_and_lets_the_upstream_keep_its_own() {
        let id = RequestId::from_client(b"abc-123").unwrap();
        let added = phases(&Answering {
            id: &id,
            rate: None,
            cache: None,
        });
        assert_eq!(
            added.as_slice(),
            &[Added {
                name: "X-Request-Id",
                value: "abc-123",
                upstream_wins: true
            }]
        );
    }

    /// A rate-limited route's answers carry the three `RateLimit-*` fields, replacing an
    /// upstream's own.
    #[test]
    fn rate_limit_headers_follow_the_request_id() {
        let id = RequestId::from_client(b"r").unwrap();
        let rate = RateHeaders::new(&crate::policy::ratelimit::Headers {
            limit: 100,
            remaining: 0,
            reset_secs: 18_446_744_073_709_551_615,
            retry_after_secs: Some(3),
        })
        .text();
        let added = phases(&Answering {
            id: &id,
            rate: Some(&rate),
            cache: None,
        });
        let fields: Vec<(&str, &str, bool)> = added
            .iter()
            .map(|a| (a.name, a.value, a.upstream_wins))
            .collect();
        assert_eq!(
            fields,
            [
                ("X-Request-Id", "r", true),
                ("RateLimit-Limit", "100", false),
                ("RateLimit-Remaining", "0", false),
                ("RateLimit-Reset", "18446744073709551615", false),
            ]
        );
        assert!(!added.spilled(), "four fields stay inline");
        let cache = CacheMark {
            result: CacheResult::Hit,
            age: Some(42),
        }
        .text();
        let added = phases(&Answering {
            id: &id,
            rate: Some(&rate),
            cache: Some(&cache),
        });
        let tail: Vec<(&str, &str)> = added[4..].iter().map(|a| (a.name, a.value)).collect();
        assert_eq!(tail, [("X-Cache", "HIT"), ("Age", "42")]);
        assert!(!added.spilled(), "six fields stay inline");
    }
}
