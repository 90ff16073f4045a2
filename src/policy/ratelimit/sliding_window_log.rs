//! Sliding window log: at most `limit` admissions per key in ANY span of `window`, exactly.
//! Each key keeps the times of its last `limit` admissions in a ring; a request is admitted
//! when the admission `limit` places back is at least `window` old.
//!
//! Memory is per request by nature: a key costs `8 * (limit + 3)` bytes whatever its traffic,
//! so `limit` is capped at [`super::MAX_LOG_LIMIT`] and the default `max_keys` is lowered to
//! keep the table within [`super::DEFAULT_LOG_TABLE_BYTES`].
//!
//! Across workers: the state word's payload is the admission counter `head`. Admission number
//! `h` is taken by CAS `h -> h + 1` after reading ring entry `h % limit`, which must hold
//! admission `h - limit` (entries are `seq:24 | time+1:40`). Then the winner writes its own
//! entry. If the entry read is not yet admission `h - limit`'s (its writer is between its CAS
//! and its store), that admission is happening now, so the request is rejected: exact, and
//! nobody waits on a pre-empted writer. A third word, `done:24 | newest time+1:40`, counts
//! finished writes and keeps the newest time: a slot is recovered (may change hands) only
//! when no write is in flight and its newest admission is `window` old. A slot keeps its
//! `head` and entries when it changes hands: they are all expired, so they read as a fresh
//! key's.

use std::sync::atomic::{AtomicU64, Ordering};

use super::global::{Slot, Step};
use super::{Decision, LimitSpec};

const SEQ_SHIFT: u32 = 40;
const SEQ_MASK: u64 = (1 << 24) - 1;
const TIME_MASK: u64 = (1 << SEQ_SHIFT) - 1;

#[derive(Debug)]
pub struct SlidingWindowLog {
    pub(super) limit: u64,
    window_ms: u64,
}

/// An entry or the `done` word: a 24-bit sequence and a time (+1: 0 is "never").
fn pack(seq: u64, time_ms: u64) -> u64 {
    ((seq & SEQ_MASK) << SEQ_SHIFT) | ((time_ms + 1) & TIME_MASK)
}

fn unpack(word: u64) -> (u64, Option<u64>) {
    let time = word & TIME_MASK;
    (word >> SEQ_SHIFT, time.checked_sub(1))
}

enum Outcome {
    Admit(u64),
    Reject(Decision),
}

impl SlidingWindowLog {
    pub(super) fn new(spec: &LimitSpec) -> SlidingWindowLog {
        SlidingWindowLog {
            limit: spec.limit,
            window_ms: spec.window.as_millis() as u64,
        }
    }

    /// The time of admission `n`, or `None` while its writer has not stored it.
    fn time_of(&self, ring: &[AtomicU64], n: u64) -> Option<u64> {
        match unpack(ring[(n % self.limit) as usize].load(Ordering::Acquire)) {
            (seq, Some(t)) if seq == n & SEQ_MASK => Some(t),
            _ => None,
        }
    }

    pub(super) fn decide(&self, slot: &Slot<'_>, now_ms: u64) -> Option<Decision> {
        let (done, ring) = (&slot.extra[0], &slot.extra[1..]);
        let newest = || unpack(done.load(Ordering::Acquire)).1;
        let (outcome, _, _) = slot.update(|head| {
            if head >= self.limit {
                let expires = match self.time_of(ring, head - self.limit) {
                    Some(t) => t + self.window_ms,
                    // Admission `head - limit` is being written: it happened just now.
                    None => now_ms + self.window_ms,
                };
                if expires > now_ms {
                    let newest = newest().map_or(expires, |t| (t + self.window_ms).max(expires));
                    return Step::Keep(Outcome::Reject(Decision::Reject {
                        limit: self.limit,
                        retry_after_ms: expires - now_ms,
                        reset_ms: newest - now_ms,
                    }));
                }
            }
            Step::Write(head + 1, Outcome::Admit(head))
        })?;
        let head = match outcome {
            Outcome::Reject(d) => return Some(d),
            Outcome::Admit(head) => head,
        };
        ring[(head % self.limit) as usize].store(pack(head, now_ms), Ordering::Release);
        let mut word = done.load(Ordering::Acquire);
        loop {
            let (count, time) = unpack(word);
            let next = pack(count + 1, time.map_or(now_ms, |t| t.max(now_ms)));
            match done.compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(seen) => word = seen,
            }
        }
        Some(Decision::Allow {
            limit: self.limit,
            remaining: self.limit - self.in_window(ring, head, now_ms),
            reset_ms: self.window_ms,
        })
    }

    /// Admissions among the last `limit` up to `head` (included) still inside the window: a
    /// binary search over the ring (times rise with the admission number, up to the small
    /// disorder of concurrent writers: a header value, never a decision).
    fn in_window(&self, ring: &[AtomicU64], head: u64, now_ms: u64) -> u64 {
        let inside = |n| {
            self.time_of(ring, n)
                .is_none_or(|t| t + self.window_ms > now_ms)
        };
        let (mut lo, mut hi) = ((head + 1).saturating_sub(self.limit), head);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if inside(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        head + 1 - lo
    }

    pub(super) fn recovered_at(&self, head: u64, extra: &[AtomicU64], now_ms: u64) -> u64 {
        match unpack(extra[0].load(Ordering::Acquire)) {
            (_, None) if head == 0 => 0,
            (done, Some(t)) if done == head & SEQ_MASK => t + self.window_ms,
            // A write in flight: an admission made just now.
            _ => now_ms + self.window_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Algorithm, Decision, LimitSpec, Limiter};

    fn limiter(limit: u64, window_ms: u64) -> Limiter {
        Limiter::new(LimitSpec {
            algorithm: Algorithm::SlidingWindowLog,
            limit,
            window: Duration::from_millis(window_ms),
            rate: 0,
            burst: 0,
            max_keys: Some(64),
        })
        .unwrap()
    }

    /// No span of `window` ever holds more than `limit` admissions: each frees exactly
    /// `window` after it was admitted.
    #[test]
    fn each_admission_frees_exactly_one_window_later() {
        let l = limiter(3, 1000);
        assert!(l.check(b"k", 0).admitted());
        assert!(l.check(b"k", 300).admitted());
        assert!(l.check(b"k", 600).admitted());
        assert_eq!(
            l.check(b"k", 900),
            Decision::Reject {
                limit: 3,
                retry_after_ms: 100,
                reset_ms: 700
            }
        );
        assert!(!l.check(b"k", 999).admitted());
        assert!(l.check(b"k", 1000).admitted());
        assert!(!l.check(b"k", 1299).admitted());
        assert!(l.check(b"k", 1300).admitted());
    }

    /// Unlike a fixed window, a burst at a window's end and one just after cannot add up to
    /// twice the limit.
    #[test]
    fn no_double_burst_across_a_boundary() {
        let l = limiter(5, 1000);
        let a = (0..10).filter(|_| l.check(b"k", 999).admitted()).count();
        let b = (0..10).filter(|_| l.check(b"k", 1001).admitted()).count();
        assert_eq!((a, b), (5, 0));
        assert_eq!(
            (0..10).filter(|_| l.check(b"k", 1999).admitted()).count(),
            5
        );
    }

    /// `remaining` counts the admissions still inside the window.
    #[test]
    fn remaining_counts_admissions_inside_the_window() {
        let l = limiter(4, 1000);
        l.check(b"k", 0);
        l.check(b"k", 500);
        match l.check(b"k", 1200) {
            Decision::Allow { remaining, .. } => assert_eq!(remaining, 2),
            d => panic!("{d:?}"),
        }
    }
}
