//! Fixed window: at most `limit` requests per key in each window of `window`, windows aligned
//! on the clock's origin (window `n` is `[n * window, (n + 1) * window)`).
//!
//! State word payload: the window number's low bits above the count. The count takes the bits
//! `limit` needs; the window number keeps the rest (at least 24 bits). A reading behind the
//! stored window (another worker's reading was later) counts in the stored, newer window: a
//! window's count is never reset by a late reader. A key whose slot sat idle for about 2^24
//! windows or more could read its old count as current (or as up to `AHEAD` windows ahead):
//! only ever fewer admissions, never more.
//!
//! Once a key is at its limit, rejections write nothing (a load each).

use std::sync::atomic::AtomicU64;

use super::global::{Slot, Step, PAYLOAD_BITS};
use super::{Decision, LimitSpec};

#[derive(Debug)]
pub struct FixedWindow {
    pub(super) limit: u64,
    window_ms: u64,
    count_bits: u32,
    index_bits: u32,
}

/// How many windows ahead of a reading a stored window may be and still be taken as newer
/// (a worker whose reading is older than another's, or that was pre-empted between reading
/// the clock and deciding): the count is never moved back to an older window, which would
/// reset it.
pub(super) const AHEAD: u64 = 1024;

/// The absolute window number stored as its low `bits` bits, read at window `current`: up to
/// [`AHEAD`] windows ahead of it, or behind it.
pub(super) fn absolute(low: u64, current: u64, bits: u32) -> u64 {
    let mask = (1u64 << bits) - 1;
    let ahead = low.wrapping_sub(current) & mask;
    if ahead <= AHEAD {
        current + ahead
    } else {
        current.saturating_sub(current.wrapping_sub(low) & mask)
    }
}

impl FixedWindow {
    pub(super) fn new(spec: &LimitSpec) -> FixedWindow {
        let count_bits = 64 - spec.limit.leading_zeros();
        FixedWindow {
            limit: spec.limit,
            window_ms: spec.window.as_millis() as u64,
            count_bits,
            index_bits: PAYLOAD_BITS - count_bits,
        }
    }

    /// (window number, count) of a payload read at window `current`.
    fn unpack(&self, payload: u64, current: u64) -> (u64, u64) {
        let count = payload & ((1 << self.count_bits) - 1);
        let index = absolute(payload >> self.count_bits, current, self.index_bits);
        (index, count)
    }

    fn pack(&self, index: u64, count: u64) -> u64 {
        ((index & ((1 << self.index_bits) - 1)) << self.count_bits) | count
    }

    pub(super) fn decide(&self, slot: &Slot<'_>, now_ms: u64) -> Option<Decision> {
        let current = now_ms / self.window_ms;
        let (decision, _, _) = slot.update(|payload| {
            let (index, count) = match self.unpack(payload, current) {
                (index, count) if index >= current => (index, count),
                _ => (current, 0),
            };
            let reset_ms = (index + 1) * self.window_ms - now_ms;
            if count < self.limit {
                Step::Write(
                    self.pack(index, count + 1),
                    Decision::Allow {
                        limit: self.limit,
                        remaining: self.limit - count - 1,
                        reset_ms,
                    },
                )
            } else {
                Step::Keep(Decision::Reject {
                    limit: self.limit,
                    retry_after_ms: reset_ms,
                    reset_ms,
                })
            }
        })?;
        Some(decision)
    }

    pub(super) fn recovered_at(&self, payload: u64, _: &[AtomicU64], now_ms: u64) -> u64 {
        match self.unpack(payload, now_ms / self.window_ms) {
            (_, 0) => 0,
            (index, _) => (index + 1) * self.window_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Algorithm, Decision, LimitSpec, Limiter};

    fn limiter(limit: u64, window_ms: u64) -> Limiter {
        Limiter::new(LimitSpec {
            algorithm: Algorithm::FixedWindow,
            limit,
            window: Duration::from_millis(window_ms),
            rate: 0,
            burst: 0,
            max_keys: Some(64),
        })
        .unwrap()
    }

    /// `limit` admitted per window, the next rejected until the window's end, then a fresh
    /// count at the boundary exactly.
    #[test]
    fn limit_per_window_then_reset_at_boundary() {
        let l = limiter(3, 1000);
        for (i, remaining) in [2, 1, 0].into_iter().enumerate() {
            assert_eq!(
                l.check(b"k", 10_000 + i as u64),
                Decision::Allow {
                    limit: 3,
                    remaining,
                    reset_ms: 1000 - i as u64
                }
            );
        }
        assert_eq!(
            l.check(b"k", 10_400),
            Decision::Reject {
                limit: 3,
                retry_after_ms: 600,
                reset_ms: 600
            }
        );
        assert!(!l.check(b"k", 10_999).admitted());
        assert_eq!(
            l.check(b"k", 11_000),
            Decision::Allow {
                limit: 3,
                remaining: 2,
                reset_ms: 1000
            }
        );
    }

    /// Keys count separately.
    #[test]
    fn keys_are_independent() {
        let l = limiter(1, 1000);
        assert!(l.check(b"a", 5).admitted());
        assert!(!l.check(b"a", 6).admitted());
        assert!(l.check(b"b", 7).admitted());
    }

    /// A worker whose clock reads behind one that already opened a later window counts in that
    /// newer window, never in a reset old one.
    #[test]
    fn reading_behind_counts_in_the_newer_window() {
        let l = limiter(2, 1000);
        assert!(l.check(b"k", 2_000).admitted());
        assert!(l.check(b"k", 1_999).admitted());
        assert!(!l.check(b"k", 1_999).admitted());
        assert!(!l.check(b"k", 2_500).admitted());
        // Far behind (pre-empted for seconds): still the newer window's count.
        assert!(!l.check(b"k", 0).admitted());
        assert!(l.check(b"k", 3_000).admitted());
    }

    /// A key idle for many windows starts from zero.
    #[test]
    fn idle_key_starts_fresh() {
        let l = limiter(1, 10);
        assert!(l.check(b"k", 5).admitted());
        assert!(l.check(b"k", 1_000_005).admitted());
        assert!(!l.check(b"k", 1_000_006).admitted());
    }
}
