//! Leaky bucket as a shaper: requests leave at `rate` per second, one every `T = 1 / rate`
//! (whole microseconds, rounded up); a request that cannot leave now waits for its turn, at
//! most `burst` wait at once, and one that would be the `burst + 1`-th waiting is rejected.
//!
//! The payload is one timestamp: the earliest instant the next request may leave (µs). A
//! request at `now` takes `leave = max(next, now)` and moves `next` to `leave + T`; it waits
//! `leave - now`, and is rejected if that is more than `burst * T` (the queue holds `burst`).
//! No timer is kept per waiting request: [`Decision::Delay`] carries the instant to wait
//! until, and the caller sleeps on its own timer. Departures are `T` apart whatever the number
//! of workers, since every one of them is scheduled by one CAS on one word.
//!
//! A caller that gives up before its turn returns it with [`super::Limiter::cancel`]: exact
//! when it is the last one queued (the word goes back to what it was before it came); when
//! others queued behind it, its turn stays spent (the queue moves no faster than `rate`).

use std::sync::atomic::AtomicU64;

use super::global::{Slot, Step};
use super::token_bucket::ms_ceil;
use super::{Decision, LimitSpec, Ticket};

#[derive(Debug)]
pub struct LeakyBucket {
    pub(super) burst: u64,
    interval_us: u64,
    /// `burst * interval_us`: the longest wait.
    tolerance_us: u64,
}

impl LeakyBucket {
    pub(super) fn new(spec: &LimitSpec) -> LeakyBucket {
        let interval_us = 1_000_000u64.div_ceil(spec.rate);
        LeakyBucket {
            burst: spec.burst,
            interval_us,
            tolerance_us: spec.burst * interval_us,
        }
    }

    pub(super) fn decide(&self, slot: &Slot<'_>, now_ms: u64) -> Option<Decision> {
        let now = now_ms * 1000;
        let (decision, before, after) = slot.update(|next| {
            let leave = next.max(now);
            let wait = leave - now;
            if wait > self.tolerance_us {
                return Step::Keep(Decision::Reject {
                    limit: self.burst,
                    retry_after_ms: ms_ceil(wait - self.tolerance_us).max(1),
                    reset_ms: ms_ceil(wait),
                });
            }
            let after = leave + self.interval_us;
            // The next request would wait `after - now`; each place in the queue is `T`.
            let queued = (after - now).div_ceil(self.interval_us) - 1;
            let remaining = self.burst.saturating_sub(queued);
            let reset_ms = ms_ceil(after - now);
            Step::Write(
                after,
                if wait == 0 {
                    Decision::Allow {
                        limit: self.burst,
                        remaining,
                        reset_ms,
                    }
                } else {
                    Decision::Delay {
                        until_ms: ms_ceil(leave),
                        limit: self.burst,
                        remaining,
                        reset_ms,
                        ticket: Ticket {
                            slot: 0,
                            before: 0,
                            after: 0,
                        },
                    }
                },
            )
        })?;
        Some(match decision {
            Decision::Delay {
                until_ms,
                limit,
                remaining,
                reset_ms,
                ..
            } => Decision::Delay {
                until_ms,
                limit,
                remaining,
                reset_ms,
                ticket: Ticket {
                    slot: slot.index,
                    before,
                    after,
                },
            },
            d => d,
        })
    }

    pub(super) fn recovered_at(&self, next: u64, _: &[AtomicU64], _now_ms: u64) -> u64 {
        ms_ceil(next)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Algorithm, Decision, LimitSpec, Limiter};

    fn limiter(rate: u64, burst: u64) -> Limiter {
        Limiter::new(LimitSpec {
            algorithm: Algorithm::LeakyBucket,
            limit: 0,
            window: Default::default(),
            rate,
            burst,
            max_keys: Some(64),
        })
        .unwrap()
    }

    fn until(d: Decision) -> Option<u64> {
        match d {
            Decision::Allow { .. } => Some(0),
            Decision::Delay { until_ms, .. } => Some(until_ms),
            Decision::Reject { .. } => None,
        }
    }

    /// Simultaneous requests leave `1 / rate` apart: the first now, `burst` waiting in turn,
    /// the next rejected.
    #[test]
    fn simultaneous_requests_leave_at_rate_burst_wait_rest_rejected() {
        let l = limiter(20, 3);
        let got: Vec<_> = (0..5).map(|_| until(l.check(b"k", 1000))).collect();
        assert_eq!(got, [Some(0), Some(1050), Some(1100), Some(1150), None]);
        // Once the first waiting one has left, one place is free again.
        assert_eq!(until(l.check(b"k", 1050)), Some(1200));
        assert_eq!(until(l.check(b"k", 1050)), None);
    }

    /// Requests that arrive slower than the rate are never delayed.
    #[test]
    fn slow_arrivals_pass_undelayed() {
        let l = limiter(10, 2);
        for t in (0..2000).step_by(100) {
            assert!(matches!(l.check(b"k", t), Decision::Allow { .. }), "{t}");
        }
    }

    /// `remaining` is the free places in the queue; a rejection says when one frees.
    #[test]
    fn remaining_counts_free_places_and_reject_says_when_one_frees() {
        let l = limiter(10, 2);
        assert!(matches!(
            l.check(b"k", 0),
            Decision::Allow { remaining: 2, .. }
        ));
        assert!(matches!(
            l.check(b"k", 0),
            Decision::Delay {
                remaining: 1,
                until_ms: 100,
                ..
            }
        ));
        assert!(matches!(
            l.check(b"k", 0),
            Decision::Delay {
                remaining: 0,
                until_ms: 200,
                ..
            }
        ));
        assert_eq!(
            l.check(b"k", 30),
            Decision::Reject {
                limit: 2,
                retry_after_ms: 70,
                reset_ms: 270
            }
        );
    }

    /// The last request queued that gives up returns its turn exactly: the next one takes it.
    #[test]
    fn cancel_of_last_queued_returns_its_turn() {
        let l = limiter(10, 5);
        l.check(b"k", 0);
        let Decision::Delay { ticket, .. } = l.check(b"k", 0) else {
            panic!()
        };
        assert!(l.cancel(&ticket));
        assert_eq!(until(l.check(b"k", 0)), Some(100));
    }

    /// A request that gives up with others queued behind it cannot take their turns back:
    /// the queue keeps its pace (cancel says false).
    #[test]
    fn cancel_with_others_behind_keeps_the_pace() {
        let l = limiter(10, 5);
        l.check(b"k", 0);
        let Decision::Delay { ticket, .. } = l.check(b"k", 0) else {
            panic!()
        };
        assert_eq!(until(l.check(b"k", 0)), Some(200));
        assert!(!l.cancel(&ticket));
        assert_eq!(until(l.check(b"k", 0)), Some(300));
    }

    /// `burst = 0` polices at `rate`: anything that would wait is rejected.
    #[test]
    fn zero_burst_polices() {
        let l = limiter(10, 0);
        assert!(matches!(l.check(b"k", 0), Decision::Allow { .. }));
        assert!(!l.check(b"k", 50).admitted());
        assert!(matches!(l.check(b"k", 100), Decision::Allow { .. }));
    }
}
