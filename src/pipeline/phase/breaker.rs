//! Phase 10: the upstream's circuit breaker, last before the upstream phase, so that requests
//! answered by an earlier phase take no permit. An open breaker answers before the body is
//! read or an upstream contacted: 503 with `Retry-After`, or the upstream's configured
//! fallback (its status and JSON body, `Retry-After` kept). A half-open one admits a bounded
//! number of probes. The permit travels in the request's context until the outcome is known;
//! one dropped unused (as by a later 413) frees its probe slot.
//!
//! Takes this worker's replica of the breaker and the clock reading (milliseconds of
//! [`crate::clock`]), so a unit test drives time itself.

use crate::pipeline::ctx::RequestId;
use crate::pipeline::{Body, Response};
use crate::upstream::breaker::{BreakerReplica, Permit};
use crate::upstream::call;

use super::framing::Framing;
use super::{Destination, Flow};

/// `replica`: this worker's replica of `to.upstream`'s breaker, None when it has none.
#[inline]
pub fn run(
    replica: Option<&BreakerReplica>,
    to: &Destination<'_>,
    now_ms: u64,
    framing: &Framing,
    id: &RequestId,
) -> Flow<Option<Permit>> {
    match call::admit(replica, now_ms) {
        Ok(permit) => Flow::Continue(permit),
        Err(refused) => {
            let mut r = framing.close_if_body(open(to, refused.retry_after_secs, id));
            r.routed = Some(to.ids());
            Flow::Respond(r)
        }
    }
}

/// The response of an open breaker: the configured fallback, or 503 with the standard body.
fn open(to: &Destination<'_>, retry_after: u64, id: &RequestId) -> Response {
    let upstream = to.upstream;
    let fallback = upstream.breaker.as_ref().and_then(|b| b.fallback.as_ref());
    let mut r = Response::error(
        fallback.map_or(503, |f| f.status),
        format!("Circuit breaker open for upstream {}", upstream.name),
        *id,
    );
    r.retry_after = Some(retry_after);
    if let Some(json) = fallback.and_then(|f| f.json.clone()) {
        r.body = Body::Json(json);
    }
    r
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::model::Config;
    use crate::http::BodyKind;
    use crate::pipeline::phase::testing::{config, id, message};
    use crate::upstream::breaker::{Breaker, FailureKind, Outcome};
    use crate::upstream::shared::breaker_config;

    const NO_BODY: Framing = Framing {
        body: BodyKind::None,
        keep_alive: true,
        expect_continue: false,
    };

    /// Upstream `users` with breaker keys `keys` (1 failure opens it, 30 s recovery, one
    /// probe), behind route `r`.
    fn cfg(keys: &str) -> Config {
        config(&format!(
            r#"
[upstreams.users]
endpoints = ["http://127.0.0.1:9001"]

[upstreams.users.breaker]
failure_threshold = 1
recovery_timeout = "30s"
half_open_probes = 1
{keys}

[routes.r]
paths = ["/"]
upstream = "users"
"#
        ))
    }

    fn to(cfg: &Config) -> Destination<'_> {
        Destination {
            route_id: 0,
            route: &cfg.routes[0],
            matched: 0,
            upstream_id: 0,
            upstream: &cfg.upstreams[0],
        }
    }

    /// A replica of `cfg`'s breaker, created at 0 ms and opened by one failure at `at` ms.
    fn opened(cfg: &Config, at: u64) -> BreakerReplica {
        let settings = breaker_config(cfg.upstreams[0].breaker.as_ref().unwrap());
        let replica = BreakerReplica::new(Arc::new(Breaker::new(&settings, 0)));
        let Flow::Continue(Some(permit)) = run(Some(&replica), &to(cfg), at, &NO_BODY, &id())
        else {
            panic!("a closed breaker admits");
        };
        assert!(!permit.is_probe());
        replica.record(permit, Outcome::Failure(FailureKind::Connect), at);
        replica
    }

    fn answer(replica: &BreakerReplica, cfg: &Config, now: u64, framing: &Framing) -> Response {
        match run(Some(replica), &to(cfg), now, framing, &id()) {
            Flow::Respond(r) => r,
            Flow::Continue(p) => panic!("admitted at {now}: {p:?}"),
        }
    }

    #[test]
    fn no_breaker_admits_without_a_permit() {
        let cfg = cfg("");
        assert!(matches!(
            run(None, &to(&cfg), 0, &NO_BODY, &id()),
            Flow::Continue(None)
        ));
    }

    #[test]
    fn an_open_breaker_answers_503_with_retry_after() {
        let cfg = cfg("");
        let replica = opened(&cfg, 1_000);
        let r = answer(&replica, &cfg, 11_000, &NO_BODY);
        assert_eq!((r.status, r.retry_after, r.close), (503, Some(20), false));
        assert_eq!(message(&r), "Circuit breaker open for upstream users");
        assert_eq!((r.routed, r.id.as_str()), (Some((0, 0)), "test-id"));
        let body = Framing {
            body: BodyKind::Chunked,
            ..NO_BODY
        };
        assert!(
            answer(&replica, &cfg, 11_000, &body).close,
            "the unread body closes"
        );
    }

    #[test]
    fn an_open_breaker_answers_with_the_configured_fallback() {
        let cfg = cfg("fallback = { status = 200, json = { degraded = true } }");
        let r = answer(&opened(&cfg, 0), &cfg, 1_000, &NO_BODY);
        assert_eq!((r.status, r.retry_after), (200, Some(29)));
        match &r.body {
            Body::Json(json) => {
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                assert_eq!(v, serde_json::json!({ "degraded": true }));
            }
            other => panic!("not the fallback body: {other:?}"),
        }
        // A fallback without a body keeps the standard one, with the fallback's status.
        let cfg = self::cfg("fallback = { status = 502 }");
        let r = answer(&opened(&cfg, 0), &cfg, 1_000, &NO_BODY);
        assert_eq!(
            (r.status, message(&r)),
            (502, "Circuit breaker open for upstream users")
        );
    }

    #[test]
    fn a_half_open_breaker_admits_one_probe_and_a_dropped_probe_frees_its_slot() {
        let cfg = cfg("");
        let replica = opened(&cfg, 0);
        let Flow::Continue(Some(probe)) = run(Some(&replica), &to(&cfg), 30_000, &NO_BODY, &id())
        else {
            panic!("the recovery timeout passed: a probe is admitted");
        };
        assert!(probe.is_probe());
        let r = answer(&replica, &cfg, 30_000, &NO_BODY);
        assert_eq!(r.status, 503, "the one probe slot is taken");
        // As when a later phase answers (a 413): the unused permit goes back.
        drop(probe);
        let Flow::Continue(Some(probe)) = run(Some(&replica), &to(&cfg), 30_001, &NO_BODY, &id())
        else {
            panic!("the freed slot admits the next probe");
        };
        assert!(probe.is_probe());
        replica.record(probe, Outcome::Success, 30_002);
        assert!(matches!(
            run(Some(&replica), &to(&cfg), 30_003, &NO_BODY, &id()),
            Flow::Continue(Some(p)) if !p.is_probe()
        ));
    }
}
