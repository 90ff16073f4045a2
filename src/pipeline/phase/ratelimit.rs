//! Phases 5 and 7: rate limits, on routes with `rate_limits` ([`crate::policy::ratelimit`]),
//! in two stages around auth ([`Stage`]): limits keyed on the client's address (`ip`) before
//! auth, so a flood of bad credentials from one address is throttled before each costs a
//! signature check; every other limit after it: those keyed on who the client is (`jwt:CLAIM`,
//! `consumer`, a header auth sets) need the subject, and a client without credentials must
//! not spend a shared quota (`route`, `global`, a tenant's `header:`) the authenticated depend
//! on. Each of the stage's limits, in the order written, counts the request under its key (a
//! missing one is `"<missing>"`, never a pass) in the tier its `tier` key picks. All must
//! admit it:
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
use crate::pipeline::ctx::RequestId;
use crate::pipeline::respond::RateHeaders;
use crate::pipeline::Response;
use crate::policy::ratelimit::{Decision, Headers, Limiter, Ticket};
use crate::policy::Policies;

use super::auth::Subject;
use super::framing::Framing;
use super::{Destination, Fields, Flow};

/// The key of a request that lacks the header or claim its limit keys on (BEHAVIOR.md).
pub const MISSING: &[u8] = b"<missing>";

/// Which of a route's limits a run checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Limits keyed (and tiered, if at all) on the client's address.
    BeforeAuth,
    /// Every other limit.
    AfterAuth,
}

/// What the rate-limit phase decided for an admitted request.
#[derive(Default)]
pub struct Limited {
    /// The answer's `RateLimit-*` values (None: the route has no limits).
    pub headers: Option<RateHeaders>,
    /// A leaky bucket shapes the request: go on at `until_ms`.
    pub delay: Option<Box<Delay>>,
}

impl Limited {
    /// Both stages' decisions as one: the tighter headers, every leaky-bucket place.
    pub fn and(mut self, other: Limited) -> Limited {
        let headers = match (self.headers, other.headers) {
            (Some(a), Some(b)) => Some(if b.tighter_than(&a) { b } else { a }),
            (a, b) => a.or(b),
        };
        let delay = match (self.delay.take(), other.delay) {
            (Some(mut a), Some(mut b)) => {
                a.until_ms = a.until_ms.max(b.until_ms);
                a.places.extend(b.places.drain(..));
                Some(a)
            }
            (a, b) => a.or(b),
        };
        Limited { headers, delay }
    }
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
    /// The fields after phase 0, with the identity headers auth set (none before auth).
    pub fields: Fields<'a, 'h>,
    pub client_ip: IpAddr,
    pub subject: &'a Subject<'a>,
}

/// Checks the `stage`'s limits of `limits` (the route's) at `now_ms`. `rejected` is told the
/// id of a limit that rejects (the metric).
#[allow(clippy::too_many_arguments)] // the phase's narrow context, spelled out
pub fn run(
    stage: Stage,
    limits: &[RateLimitId],
    policies: &Policies,
    req: &Request<'_, '_>,
    now_ms: u64,
    rejected: impl FnOnce(RateLimitId),
    framing: &Framing,
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
        if limit.after_auth != (stage == Stage::AfterAuth) {
            continue;
        }
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
                // A body that follows is unread: the connection closes after the answer.
                let mut r = framing.close_if_body(Response::error(429, "Rate limit exceeded", *id));
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
        if tightest.is_none_or(|t| tighter(&headers, &t)) {
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

/// Whether `a` leaves the client less than `b` (less remaining; on a tie, the later reset).
fn tighter(a: &Headers, b: &Headers) -> bool {
    (a.remaining, std::cmp::Reverse(a.reset_secs)) < (b.remaining, std::cmp::Reverse(b.reset_secs))
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
        RateKey::Header(name) => req.fields.get(name).map(borrowed),
        RateKey::Jwt(claim) => req.subject.claim(claim).map(Key::Bytes),
        RateKey::Consumer => req.subject.consumer().map(|c| borrowed(c.as_bytes())),
        RateKey::Route => Some(borrowed(to.route.name.as_bytes())),
        RateKey::Global => Some(borrowed(&[])),
    }
}

/// An address as a key: an IPv4-mapped IPv6 address counts as its IPv4 address (one client,
/// one key, whichever socket family it came in on), and an IPv6 address by its /64, the
/// smallest prefix a site is given (RFC 6177): a client rotating through the addresses of its
/// own /64 is still one client.
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
            None => {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(&v6.octets()[..8]);
                Key::Addr(octets, 8)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::config::model::Config;
    use crate::pipeline::phase::testing::{config, head, id, message};

    fn cfg(limits: &str, route: &str) -> Config {
        config(&format!(
            "[upstreams.u]\nendpoints = [\"http://127.0.0.1:9001\"]\n[routes.r]\npaths = [\"/\"]\nupstream = \"u\"\n{route}\n{limits}"
        ))
    }

    fn to(cfg: &Config) -> Destination<'_> {
        Destination {
            route_id: 0,
            route: &cfg.routes[0],
            matched: 1,
            upstream_id: 0,
            upstream: &cfg.upstreams[0],
        }
    }

    /// Runs the phase for `raw` from 10.0.0.1 at `now`: the decision and the limit a
    /// rejection was counted under.
    fn check(
        cfg: &Config,
        policies: &Policies,
        raw: &[u8],
        now: u64,
    ) -> (Flow<Limited>, Option<RateLimitId>) {
        let h = head(raw);
        let req = Request {
            fields: Fields::plain(&h.headers),
            client_ip: [10, 0, 0, 1].into(),
            subject: &Subject::Anonymous,
        };
        let Flow::Continue(framing) = super::super::framing::run(h.version, &h.headers, &id())
        else {
            panic!("framing answered");
        };
        let counted = Cell::new(None);
        // Both stages, as the phase list runs them (no auth in between here).
        let stage = |stage| {
            run(
                stage,
                &cfg.routes[0].rate_limits,
                policies,
                &req,
                now,
                |l| counted.set(Some(l)),
                &framing,
                &to(cfg),
                &id(),
            )
        };
        let flow = match stage(Stage::BeforeAuth) {
            Flow::Continue(before) => match stage(Stage::AfterAuth) {
                Flow::Continue(after) => Flow::Continue(before.and(after)),
                answered => answered,
            },
            answered => answered,
        };
        (flow, counted.get())
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: g\r\n\r\n";

    #[test]
    fn a_route_without_limits_is_not_counted() {
        let cfg = cfg("", "");
        let policies = crate::policy::compile(&cfg, None).unwrap();
        let (Flow::Continue(l), None) = check(&cfg, &policies, GET, 0) else {
            panic!("limited");
        };
        assert!(l.headers.is_none() && l.delay.is_none());
    }

    /// The third request of a two-per-minute window is a 429 with Retry-After and the
    /// RateLimit fields, counted under its limit; the first two carry the fields too.
    #[test]
    fn over_the_limit_is_429_with_retry_after_and_the_fields() {
        let cfg = cfg(
            "[rate_limits.two]\nalgorithm = \"fixed_window\"\nkey = \"ip\"\nlimit = 2\nwindow = \"1m\"\n",
            "rate_limits = [\"two\"]",
        );
        let policies = crate::policy::compile(&cfg, None).unwrap();
        for remaining in [1, 0] {
            let (Flow::Continue(l), None) = check(&cfg, &policies, GET, 1_000) else {
                panic!("limited early");
            };
            let expected = RateHeaders::new(&Headers {
                limit: 2,
                remaining,
                reset_secs: 59,
                retry_after_secs: None,
            });
            assert_eq!(l.headers, Some(expected));
        }
        let (Flow::Respond(r), Some(0)) = check(&cfg, &policies, GET, 1_000) else {
            panic!("admitted over the limit");
        };
        assert_eq!((r.status, message(&r)), (429, "Rate limit exceeded"));
        assert_eq!(r.retry_after, Some(59));
        assert_eq!(r.routed, Some((0, 0)));
        assert!(r.rate.is_some());
    }

    /// Requests without the key's header share the `<missing>` budget; they are not let
    /// through.
    #[test]
    fn a_missing_key_is_limited_under_missing() {
        let cfg = cfg(
            "[rate_limits.h]\nalgorithm = \"fixed_window\"\nkey = \"header:x-key\"\nlimit = 1\nwindow = \"1m\"\n",
            "rate_limits = [\"h\"]",
        );
        let policies = crate::policy::compile(&cfg, None).unwrap();
        assert!(matches!(
            check(&cfg, &policies, GET, 0).0,
            Flow::Continue(_)
        ));
        assert!(matches!(check(&cfg, &policies, GET, 0).0, Flow::Respond(_)));
        let keyed = b"GET / HTTP/1.1\r\nHost: g\r\nX-Key: a\r\n\r\n";
        assert!(matches!(
            check(&cfg, &policies, keyed, 0).0,
            Flow::Continue(_)
        ));
        let limiter = policies.rate_limits[0].limits.limiter(None);
        assert!(
            !limiter.check(MISSING, 0).admitted(),
            "<missing> is the key"
        );
    }

    /// With two limits the answer reports the one with less left.
    #[test]
    fn the_most_restrictive_limit_is_reported() {
        let cfg = cfg(
            "[rate_limits.wide]\nalgorithm = \"fixed_window\"\nkey = \"global\"\nlimit = 100\nwindow = \"1m\"\n\
             [rate_limits.narrow]\nalgorithm = \"token_bucket\"\nkey = \"ip\"\nrate = 1\nburst = 5\n",
            "rate_limits = [\"wide\", \"narrow\"]",
        );
        let policies = crate::policy::compile(&cfg, None).unwrap();
        let (Flow::Continue(l), None) = check(&cfg, &policies, GET, 0) else {
            panic!("limited");
        };
        let narrow = RateHeaders::new(&Headers {
            limit: 5,
            remaining: 4,
            reset_secs: 1,
            retry_after_secs: None,
        });
        assert_eq!(l.headers, Some(narrow));
    }

    /// A leaky bucket delays a request to its place; a request dropped while it waits gives
    /// the place back, one that waited keeps it.
    #[test]
    fn a_leaky_bucket_delays_and_a_dropped_wait_gives_its_place_back() {
        let cfg = cfg(
            "[rate_limits.shape]\nalgorithm = \"leaky_bucket\"\nkey = \"global\"\nrate = 10\nburst = 1\n",
            "rate_limits = [\"shape\"]",
        );
        let policies = crate::policy::compile(&cfg, None).unwrap();
        let (Flow::Continue(first), None) = check(&cfg, &policies, GET, 0) else {
            panic!("limited");
        };
        assert!(first.delay.is_none(), "the first leaves at once");
        let (Flow::Continue(second), None) = check(&cfg, &policies, GET, 0) else {
            panic!("limited");
        };
        let delay = second.delay.expect("the second waits");
        assert_eq!(delay.until_ms, 100);
        assert!(
            matches!(check(&cfg, &policies, GET, 0).0, Flow::Respond(_)),
            "queue full"
        );
        drop(delay);
        let (Flow::Continue(again), None) = check(&cfg, &policies, GET, 0) else {
            panic!("the dropped place was not given back");
        };
        let mut kept = again.delay.expect("waits for the same place");
        assert_eq!(kept.until_ms, 100);
        kept.admit();
        drop(kept);
        assert!(
            matches!(check(&cfg, &policies, GET, 0).0, Flow::Respond(_)),
            "an admitted place stays taken"
        );
    }
}
