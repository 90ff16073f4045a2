//! Phase 6: rate limits, on routes with `rate_limits` ([`crate::policy::ratelimit`]). Each of
//! the route's limits, in the order written, counts the request under its key (`ip`,
//! `header:NAME`, `jwt:CLAIM`, `consumer`, `route`, `global`; a missing one is `"<missing>"`,
//! never a pass) in the tier its `tier` key picks. All must admit it:
//! - one rejects: 429 with `Retry-After` (and `retryAfter`), counted in
//!   `dispatch_ratelimit_rejected_total{policy}`; places the request took in leaky buckets
//!   before are given back;
//! - a leaky bucket delays it: [`Limited::delay`] says until when; the request waits in
//!   [`crate::pipeline::stack::run`] (one timer for the request, none in the limiter) and gives
//!   its place back if its client leaves, or it is dropped, while waiting ([`Delay`]).
//!
//! A request that one limit admits and a later one rejects stays counted by the first: limits
//! that cannot give a unit back (all but the leaky bucket) err on the side of admitting less.
//!
//! The `RateLimit-*` values of the answer are those of the most restrictive limit (the least
//! remaining), formatted once here for the response phase.

use std::borrow::Cow;
use std::net::IpAddr;

use smallvec::SmallVec;

use crate::config::model::{RateKey, RateLimitId};
use crate::http::Header;
use crate::pipeline::ctx::RequestId;
use crate::pipeline::respond::RateHeaders;
use crate::pipeline::Response;
use crate::policy::ratelimit::{Decision, Headers, Limiter, Ticket};
use crate::policy::Policies;

use super::auth::Subject;
use super::{Destination, Flow};

/// The key of a request that lacks the header or claim its limit keys on (BEHAVIOR.md).
pub const MISSING: &[u8] = b"<missing>";

/// What the rate-limit phase decided for an admitted request.
#[derive(Default)]
pub struct Limited {
    /// The answer's `RateLimit-*` values (None: the route has no limits).
    pub headers: Option<RateHeaders>,
    /// A leaky bucket shapes the request: go on at `until_ms`.
    pub delay: Option<Box<Delay>>,
}

/// A request waiting in one or more leaky buckets. Dropped before [`Delay::admit`] (the client
/// left, the gateway drains), it gives its places back.
pub struct Delay {
    pub until_ms: u64,
    places: SmallVec<[(Limiter, Ticket); 1]>,
}

impl Delay {
    /// The wait is over: the places are used.
    pub fn admit(&mut self) {
        self.places.clear();
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        for (limiter, ticket) in &self.places {
            limiter.cancel(ticket);
        }
    }
}

/// What the rate-limit phase reads of the request.
pub struct Request<'a, 'h> {
    /// The fields after phase 0 (identity headers already removed).
    pub headers: &'a [Header<'h>],
    pub client_ip: IpAddr,
    pub subject: &'a Subject<'a>,
}

/// Checks `limits` (the route's) at `now_ms`. `rejected` is told the id of a limit that
/// rejects (the metric).
pub fn run(
    limits: &[RateLimitId],
    policies: &Policies,
    req: &Request<'_, '_>,
    now_ms: u64,
    rejected: impl FnOnce(RateLimitId),
    to: &Destination<'_>,
    id: &RequestId,
) -> Flow<Limited> {
    if limits.is_empty() {
        return Flow::Continue(Limited::default());
    }
    let mut tightest: Option<Headers> = None;
    let mut delay: Option<Box<Delay>> = None;
    for &lid in limits {
        let limit = &policies.rate_limits[lid];
        let key = key_of(&limit.key, req, to);
        let tier = limit.tier.as_ref().and_then(|t| key_of(t, req, to));
        let limiter = limit.limits.limiter(tier.as_ref().map(Key::bytes));
        let decision = limiter.check(key.as_ref().map_or(MISSING, Key::bytes), now_ms);
        let headers = decision.headers();
        match decision {
            Decision::Reject { retry_after_ms, .. } => {
                // The places taken so far go back (Delay's drop).
                drop(delay);
                rejected(lid);
                let mut r = Response::error(429, "Rate limit exceeded", *id);
                r.retry_after = Some(retry_after_ms.div_ceil(1000).max(1));
                r.rate = Some(RateHeaders::new(&headers));
                r.routed = Some(to.ids());
                return Flow::Respond(r);
            }
            Decision::Delay {
                until_ms, ticket, ..
            } => {
                let d = delay.get_or_insert_with(|| {
                    Box::new(Delay {
                        until_ms,
                        places: SmallVec::new(),
                    })
                });
                d.until_ms = d.until_ms.max(until_ms);
                d.places.push((limiter.clone(), ticket));
            }
            Decision::Allow { .. } => {}
        }
        let tighter = tightest.is_none_or(|t| {
            (headers.remaining, std::cmp::Reverse(headers.reset_secs))
                < (t.remaining, std::cmp::Reverse(t.reset_secs))
        });
        if tighter {
            tightest = Some(headers);
        }
    }
    // A place in a queue that is already due needs no wait.
    if let Some(d) = delay.take() {
        if d.until_ms > now_ms {
            delay = Some(d);
        } else {
            let mut d = d;
            d.admit();
        }
    }
    Flow::Continue(Limited {
        headers: tightest.as_ref().map(RateHeaders::new),
        delay,
    })
}

/// The bytes a request is counted under: borrowed from the request, or an address inline.
enum Key<'a> {
    Bytes(Cow<'a, [u8]>),
    Addr([u8; 16], usize),
}

impl Key<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Key::Bytes(b) => b,
            Key::Addr(octets, len) => &octets[..*len],
        }
    }
}

/// The key of the request for `key`; None when the request lacks it.
fn key_of<'a>(
    key: &'a RateKey,
    req: &'a Request<'_, '_>,
    to: &'a Destination<'_>,
) -> Option<Key<'a>> {
    let borrowed = |b: &'a [u8]| Key::Bytes(Cow::Borrowed(b));
    match key {
        RateKey::Ip => Some(ip_key(req.client_ip)),
        RateKey::Header(name) => req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| borrowed(h.value)),
        RateKey::Jwt(claim) => req.subject.claim(claim).map(Key::Bytes),
        RateKey::Consumer => req.subject.consumer().map(|c| borrowed(c.as_bytes())),
        RateKey::Route => Some(borrowed(to.route.name.as_bytes())),
        RateKey::Global => Some(borrowed(&[])),
    }
}

/// An address as a key: an IPv4-mapped IPv6 address counts as its IPv4 address (one client,
/// one key, whichever socket family it came in on).
fn ip_key(ip: IpAddr) -> Key<'static> {
    let v4 = |v4: std::net::Ipv4Addr| {
        let mut octets = [0u8; 16];
        octets[..4].copy_from_slice(&v4.octets());
        Key::Addr(octets, 4)
    };
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(a) => v4(a),
            None => Key::Addr(v6.octets(), 16),
        },
    }
}
