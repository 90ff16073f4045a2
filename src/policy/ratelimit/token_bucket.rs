//! Token bucket: `burst` tokens, refilled continuously at `rate` per second; a request takes
//! one or is rejected.
//!
//! Kept as GCRA: the payload is one timestamp, the theoretical arrival time `tat` (in
//! microseconds on the caller's clock) at which the bucket would be full again. A request at
//! `now` is admitted when `max(tat, now) + T - now <= burst * T` (`T = 1 / rate`, rounded up
//! to whole microseconds so the rate is never exceeded), and moves `tat` by `T`. This is
//! exactly a token bucket with `burst` tokens, held in one word: one CAS per admission.

use std::sync::atomic::AtomicU64;

use super::global::{Slot, Step};
use super::{Decision, LimitSpec};

#[derive(Debug)]
pub struct TokenBucket {
    pub(super) burst: u64,
    /// Microseconds per token.
    interval_us: u64,
    /// `burst * interval_us`: how far ahead of now `tat` may run.
    tolerance_us: u64,
}

/// Microseconds rounded up to milliseconds.
pub(super) fn ms_ceil(us: u64) -> u64 {
    us.div_ceil(1000)
}

impl TokenBucket {
    pub(super) fn new(spec: &LimitSpec) -> TokenBucket {
        let interval_us = 1_000_000u64.div_ceil(spec.rate);
        TokenBucket {
            burst: spec.burst,
            interval_us,
            tolerance_us: spec.burst * interval_us,
        }
    }

    pub(super) fn decide(&self, slot: &Slot<'_>, now_ms: u64) -> Option<Decision> {
        let now = now_ms * 1000;
        let (decision, _, _) = slot.update(|tat| {
            let next = tat.max(now) + self.interval_us;
            if next - now <= self.tolerance_us {
                Step::Write(
                    next,
                    Decision::Allow {
                        limit: self.burst,
                        remaining: (self.tolerance_us - (next - now)) / self.interval_us,
                        reset_ms: ms_ceil(next - now),
                    },
                )
            } else {
                Step::Keep(Decision::Reject {
                    limit: self.burst,
                    retry_after_ms: ms_ceil(next - now - self.tolerance_us).max(1),
                    reset_ms: ms_ceil(tat - now),
                })
            }
        })?;
        Some(decision)
    }

    pub(super) fn recovered_at(&self, tat: u64, _: &[AtomicU64], _now_ms: u64) -> u64 {
        ms_ceil(tat)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Algorithm, Decision, LimitSpec, Limiter};

    fn limiter(rate: u64, burst: u64) -> Limiter {
        Limiter::new(LimitSpec {
            algorithm: Algorithm::TokenBucket,
            limit: 0,
            window: Default::default(),
            rate,
            burst,
            max_keys: Some(64),
        })
        .unwrap()
    }

    /// A full bucket admits `burst` at once, then one more per `1 / rate`, never earlier.
    #[test]
    fn burst_then_refill_at_rate() {
        let l = limiter(10, 5);
        for remaining in (0..5).rev() {
            match l.check(b"k", 1000) {
                Decision::Allow {
                    limit: 5,
                    remaining: r,
                    ..
                } => assert_eq!(r, remaining),
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(
            l.check(b"k", 1000),
            Decision::Reject {
                limit: 5,
                retry_after_ms: 100,
                reset_ms: 500
            }
        );
        assert!(!l.check(b"k", 1099).admitted());
        assert!(l.check(b"k", 1100).admitted());
        assert!(!l.check(b"k", 1100).admitted());
        // 350 ms later: 3.5 tokens back, 3 whole ones.
        for _ in 0..3 {
            assert!(l.check(b"k", 1450).admitted());
        }
        assert!(!l.check(b"k", 1450).admitted());
    }

    /// An idle bucket refills to `burst` and no further.
    #[test]
    fn refill_caps_at_burst() {
        let l = limiter(100, 3);
        assert!(l.check(b"k", 0).admitted());
        let admitted = (0..10).filter(|_| l.check(b"k", 60_000).admitted()).count();
        assert_eq!(admitted, 3);
    }

    /// `reset` is the time until the bucket is full again.
    #[test]
    fn reset_is_time_until_full() {
        let l = limiter(2, 4);
        l.check(b"k", 0);
        match l.check(b"k", 0) {
            Decision::Allow {
                remaining: 2,
                reset_ms: 1000,
                ..
            } => {}
            d => panic!("{d:?}"),
        }
    }

    /// A rate that does not divide a second is rounded so the bucket never runs fast: 3 per
    /// second admits 3, not 4, in the second after the burst.
    #[test]
    fn uneven_rate_never_runs_fast() {
        let l = limiter(3, 1);
        assert!(l.check(b"k", 0).admitted());
        let admitted = (1..=1000).filter(|&t| l.check(b"k", t).admitted()).count();
        assert_eq!(admitted, 2);
        // The third second's token comes 1001.002 ms after the first: 2 µs late, never early.
        assert!(!l.check(b"k", 1001).admitted());
        assert!(l.check(b"k", 1002).admitted());
    }
}
