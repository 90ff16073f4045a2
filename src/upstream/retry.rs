//! Retry rules and the process-wide retry budget (BEHAVIOR.md "Retries").
//!
//! What counts as an attempt, and when a failed one is a free replay on a stale pooled
//! connection instead, is the upstream stage's rule (see `pipeline::proxy`).
//!
//! Owns two things: which failures may be retried for which requests ([`may_retry`]), and the
//! budget that keeps retries under 20% of an upstream's requests over the last 10 s while
//! always allowing 3 retries per second, so an outage does not multiply load and a quiet
//! gateway can still retry.
//!
//! The budget is cross-core state: ten one-second buckets of atomics, shared by every worker.
//! Workers batch their request counts locally and add them at most every few hundred
//! milliseconds (and right before asking for a retry), so the request path does not write a
//! shared cache line per request. The budget takes the time as a parameter (seconds), so tests
//! drive it without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};

use super::UpstreamError;

/// Share of an upstream's requests that may be retries, over [`WINDOW_SECS`].
pub const RETRY_RATIO: f64 = 0.2;
pub const WINDOW_SECS: u64 = 10;
/// Retries per second always allowed, whatever the request count.
pub const MIN_RETRIES_PER_SEC: u64 = 3;

/// Whether an attempt that failed with `err` may be retried, before budget and attempt count.
/// `idempotent`: GET, HEAD, OPTIONS, PUT, DELETE (RFC 9110 §9.2.2, minus TRACE which we do not
/// retry). `untouched`: no body byte went upstream beyond what the gateway still holds, so a new
/// attempt can start over. `replayable`: untouched, and the whole body is held.
pub fn may_retry(err: &UpstreamError, idempotent: bool, untouched: bool, replayable: bool) -> bool {
    match err {
        // Nothing reached the upstream: safe for any method, whatever the body's size.
        UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. } => untouched,
        UpstreamError::ReadTimeout { .. }
        | UpstreamError::Reset { .. }
        | UpstreamError::Status { .. } => idempotent && replayable,
        UpstreamError::BadResponse { .. }
        | UpstreamError::ClientAborted { .. }
        | UpstreamError::BreakerOpen { .. } => false,
    }
}

/// Whether a response status from the upstream is retried (idempotent, replayable requests only).
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 502..=504)
}

pub fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE")
}

#[derive(Default)]
struct Bucket {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// One upstream's retry budget, shared by all workers.
#[derive(Default)]
pub struct RetryBudget {
    buckets: [Bucket; WINDOW_SECS as usize],
}

impl RetryBudget {
    pub fn new() -> Self {
        Self::default()
    }

    /// The bucket for `now`, reset when it last held an older second. Two workers racing on the
    /// reset may lose a few counts of that second; the budget stays conservative enough.
    fn bucket(&self, now: u64) -> &Bucket {
        let b = &self.buckets[(now % WINDOW_SECS) as usize];
        let seen = b.second.load(Ordering::Acquire);
        if seen != now
            && b.second
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Release);
            b.retries.store(0, Ordering::Release);
        }
        b
    }

    /// Adds `n` original (non-retry) requests seen at second `now`.
    pub fn add_requests(&self, now: u64, n: u64) {
        if n > 0 {
            self.bucket(now).requests.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Takes one retry from the budget at second `now`, or refuses.
    pub fn try_retry(&self, now: u64) -> bool {
        let current = self.bucket(now);
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in &self.buckets {
            let s = b.second.load(Ordering::Acquire);
            if s + WINDOW_SECS > now && s != now {
                requests += b.requests.load(Ordering::Relaxed);
                retries += b.retries.load(Ordering::Relaxed);
            }
        }
        requests += current.requests.load(Ordering::Relaxed);
        // fetch_add first, then check: concurrent workers each see the others' claims, so the
        // budget is never overdrawn by a race.
        let before = current.retries.fetch_add(1, Ordering::AcqRel);
        let total = retries + before + 1;
        let allowed =
            before < MIN_RETRIES_PER_SEC || (total as f64) <= RETRY_RATIO * requests as f64;
        if !allowed {
            current.retries.fetch_sub(1, Ordering::AcqRel);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_gateway_gets_three_retries_per_second() {
        let b = RetryBudget::new();
        assert!(b.try_retry(100));
        assert!(b.try_retry(100));
        assert!(b.try_retry(100));
        assert!(!b.try_retry(100));
        // next second: three more
        assert!(b.try_retry(101));
        assert!(b.try_retry(101));
        assert!(b.try_retry(101));
        assert!(!b.try_retry(101));
    }

    #[test]
    fn retries_capped_at_twenty_percent_of_requests_over_window() {
        let b = RetryBudget::new();
        b.add_requests(200, 1000);
        let mut granted = 0;
        for _ in 0..1000 {
            if b.try_retry(200) {
                granted += 1;
            }
        }
        assert_eq!(granted, 200);
        // within the window the used budget still counts
        let mut later = 0;
        for _ in 0..100 {
            if b.try_retry(205) {
                later += 1;
            }
        }
        assert_eq!(later, 3, "only the per-second floor is left");
    }

    #[test]
    fn budget_recovers_after_window() {
        let b = RetryBudget::new();
        b.add_requests(300, 100);
        for _ in 0..50 {
            b.try_retry(300);
        }
        b.add_requests(311, 100);
        let mut granted = 0;
        for _ in 0..100 {
            if b.try_retry(311) {
                granted += 1;
            }
        }
        assert_eq!(granted, 20);
    }

    #[test]
    fn budget_is_exact_under_concurrency() {
        let b = std::sync::Arc::new(RetryBudget::new());
        b.add_requests(50, 10_000);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..2000).filter(|_| b.try_retry(50)).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 2000);
    }

    #[test]
    fn retry_rules_by_error_and_method() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let connect = UpstreamError::Connect {
            addr,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let timeout = UpstreamError::ReadTimeout { addr };
        assert!(may_retry(&connect, false, true, true));
        assert!(
            may_retry(&connect, false, true, false),
            "large bodies: connect failures still retry"
        );
        assert!(!may_retry(&connect, true, false, false));
        assert!(!may_retry(&timeout, false, true, true));
        assert!(may_retry(&timeout, true, true, true));
        assert!(!may_retry(&timeout, true, true, false));
        assert!(is_idempotent("PUT") && !is_idempotent("POST") && !is_idempotent("PATCH"));
    }
}
