//! Sliding window counter: the count of the current fixed window plus the previous window's
//! count weighted by the part of it the sliding window still covers. A request at `e` ms into
//! window `n` is admitted when `prev * (window - e) / window + cur + 1 <= limit` (integer
//! arithmetic: no rounding in the request's favour), so the estimate never exceeds `limit`
//! and no fixed window ever holds more than `limit`. The estimate assumes the previous
//! window's requests were spread evenly (use `sliding_window_log` for an exact sliding
//! window, at `8 * limit` bytes per key).
//!
//! Payload: the window number's low bits above two counts (`prev`, `cur`) of the bits `limit`
//! needs each; `limit` is at most [`super::MAX_COUNTER_LIMIT`] so the window number keeps at
//! least 15 bits (the same reading rules as [`super::fixed_window`]).

use std::sync::atomic::AtomicU64;

use super::fixed_window::absolute;
use super::global::{Slot, Step, PAYLOAD_BITS};
use super::{Decision, LimitSpec};

#[derive(Debug)]
pub struct SlidingWindowCounter {
    pub(super) limit: u64,
    window_ms: u64,
    count_bits: u32,
    index_bits: u32,
}

impl SlidingWindowCounter {
    pub(super) fn new(spec: &LimitSpec) -> SlidingWindowCounter {
        let count_bits = 64 - spec.limit.leading_zeros();
        SlidingWindowCounter {
            limit: spec.limit,
            window_ms: spec.window.as_millis() as u64,
            count_bits,
            index_bits: PAYLOAD_BITS - 2 * count_bits,
        }
    }

    /// (window number, previous window's count, its own count) read at window `current`,
    /// rolled forward to `current` (unless it is already the next one).
    fn unpack(&self, payload: u64, current: u64) -> (u64, u64, u64) {
        let mask = (1 << self.count_bits) - 1;
        let cur = payload & mask;
        let prev = (payload >> self.count_bits) & mask;
        let index = absolute(payload >> (2 * self.count_bits), current, self.index_bits);
        if index >= current {
            (index, prev, cur)
        } else if index + 1 == current {
            (current, cur, 0)
        } else {
            (current, 0, 0)
        }
    }

    fn pack(&self, index: u64, prev: u64, cur: u64) -> u64 {
        let index = index & ((1 << self.index_bits) - 1);
        (((index << self.count_bits) | prev) << self.count_bits) | cur
    }

    pub(super) fn decide(&self, slot: &Slot<'_>, now_ms: u64) -> Option<Decision> {
        let w = self.window_ms;
        let current = now_ms / w;
        let (decision, _, _) = slot.update(|payload| {
            let (index, prev, cur) = self.unpack(payload, current);
            let start = index * w;
            // A reading a hair behind a window another worker opened counts at its start.
            let e = now_ms.saturating_sub(start);
            let cap = u128::from(self.limit) * u128::from(w);
            let used = u128::from(prev) * u128::from(w - e) + u128::from(cur) * u128::from(w);
            let reset_ms = |cur: u64, prev: u64| {
                if cur > 0 {
                    start + 2 * w - now_ms
                } else if prev > 0 {
                    start + w - now_ms
                } else {
                    0
                }
            };
            if used + u128::from(w) <= cap {
                let remaining = ((cap - used - u128::from(w)) / u128::from(w)) as u64;
                return Step::Write(
                    self.pack(index, prev, cur + 1),
                    Decision::Allow {
                        limit: self.limit,
                        remaining,
                        reset_ms: reset_ms(cur + 1, prev),
                    },
                );
            }
            Step::Keep(Decision::Reject {
                limit: self.limit,
                retry_after_ms: self
                    .admitted_at(start, prev, cur)
                    .saturating_sub(now_ms)
                    .max(1),
                reset_ms: reset_ms(cur, prev),
            })
        })?;
        Some(decision)
    }

    /// The first instant a request is admitted, for a key rejected in the window starting at
    /// `start` with counts `prev`, `cur`.
    fn admitted_at(&self, start: u64, prev: u64, cur: u64) -> u64 {
        let w = u128::from(self.window_ms);
        let limit = u128::from(self.limit);
        // Later in this window: prev * (w - e) <= (limit - cur - 1) * w.
        if u128::from(cur) < limit && prev > 0 {
            let room = (limit - u128::from(cur) - 1) * w;
            let e = w - (room / u128::from(prev)).min(w);
            if e < w {
                return start + e as u64;
            }
        }
        // The next window: cur becomes prev, so cur * (w - e) <= (limit - 1) * w.
        let next = start + self.window_ms;
        if cur == 0 {
            return next;
        }
        let e = w - (((limit - 1) * w) / u128::from(cur)).min(w);
        if e < w {
            next + e as u64
        } else {
            next + self.window_ms
        }
    }

    pub(super) fn recovered_at(&self, payload: u64, _: &[AtomicU64], now_ms: u64) -> u64 {
        let current = now_ms / self.window_ms;
        match self.unpack(payload, current) {
            (index, _, cur) if cur > 0 => (index + 2) * self.window_ms,
            (index, prev, _) if prev > 0 => (index + 1) * self.window_ms,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Algorithm, Decision, LimitSpec, Limiter};

    fn limiter(limit: u64, window_ms: u64) -> Limiter {
        Limiter::new(LimitSpec {
            algorithm: Algorithm::SlidingWindowCounter,
            limit,
            window: Duration::from_millis(window_ms),
            rate: 0,
            burst: 0,
            max_keys: Some(64),
        })
        .unwrap()
    }

    fn admitted(l: &Limiter, n: usize, at: u64) -> usize {
        (0..n).filter(|_| l.check(b"k", at).admitted()).count()
    }

    /// With an empty previous window it is a fixed window of `limit`.
    #[test]
    fn first_window_admits_limit() {
        let l = limiter(10, 1000);
        assert_eq!(admitted(&l, 20, 0), 10);
        assert_eq!(
            l.check(b"k", 400),
            Decision::Reject {
                limit: 10,
                // 10 * (1000 - e) + 1000 <= 10 * 1000 from e = 100 of the next window.
                retry_after_ms: 700,
                reset_ms: 1600
            }
        );
    }

    /// The previous window weighs by the part the sliding window still covers: 10 last window,
    /// 30% into this one, 70% of 10 = 7 still count, so 3 more are admitted.
    #[test]
    fn previous_window_weighs_by_overlap() {
        let l = limiter(10, 1000);
        assert_eq!(admitted(&l, 10, 500), 10);
        assert_eq!(admitted(&l, 10, 1300), 3);
        // At 60% in, 4 count: 3 already taken, so 3 more.
        assert_eq!(admitted(&l, 10, 1600), 3);
        // Two windows on, nothing of the first counts.
        assert_eq!(admitted(&l, 20, 3000), 10);
    }

    /// A rejection's Retry-After is when the weighted estimate first has room, to the
    /// millisecond.
    #[test]
    fn retry_after_is_when_the_estimate_first_has_room() {
        let l = limiter(10, 1000);
        assert_eq!(admitted(&l, 10, 0), 10);
        assert_eq!(admitted(&l, 5, 1000), 0);
        match l.check(b"k", 1000) {
            // 10 * (1000 - e) <= 9 * 1000 from e = 100.
            Decision::Reject { retry_after_ms, .. } => assert_eq!(retry_after_ms, 100),
            d => panic!("{d:?}"),
        }
        assert!(!l.check(b"k", 1099).admitted());
        assert!(l.check(b"k", 1100).admitted());
    }

    /// Rejections count nothing: a key hammered while over its limit recovers on time.
    #[test]
    fn rejections_are_not_counted() {
        let l = limiter(2, 100);
        assert_eq!(admitted(&l, 1000, 0), 2);
        assert_eq!(admitted(&l, 2, 200), 2);
    }
}
