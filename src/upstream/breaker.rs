//! Circuit breakers (BEHAVIOR.md "Circuit breakers"): closed -> open after `failure_threshold`
//! upstream failures inside `window`, counted across ALL workers; open -> half-open after
//! `recovery_timeout`; in half-open at most `half_open_probes` probes in flight across all
//! workers, that many consecutive successes close it and one failure reopens it.
//!
//! Key types: [`Breaker`] (one per upstream, in an `Arc`, shared by every worker: atomics only),
//! [`BreakerReplica`] (one per worker per upstream: the fast path), [`Admission`] / [`Permit`]
//! (what a request gets), [`Outcome`] (what it reports back), [`Snapshot`] (for `GET /health` and
//! metrics).
//!
//! The one thing to know: the shared state is a single packed word (state, epoch, since) that is
//! written only on transitions, and every transition is a compare-exchange from the exact old
//! word, so exactly one worker performs each one. The closed fast path is one Acquire load of
//! that word (a plain `mov` on x86, and the line stays in every core's cache in the Shared state
//! because nothing writes it while closed) plus a worker-local store; a success writes nothing
//! shared. Failures add to a sliding window of time buckets (its own cache lines) and are the only
//! shared writes while closed.
//!
//! Decisions:
//! - Only failures whose kind is in `failure_on` count. Any other failure, and
//!   [`Outcome::Ignored`] (client aborts and other client-caused errors), is neither a success nor
//!   a failure: in half-open it frees the probe slot without adding to the success streak.
//! - A probe [`Permit`] dropped without [`BreakerReplica::record`] frees its slot (like
//!   `Ignored`): a dropped request future is a cancelled request, not an upstream failure.
//! - A permit carries the epoch it was admitted in; a result reported after the state moved on
//!   (a slow request admitted before the breaker opened) does not count towards the new state.
//! - Rejections carry whole seconds until half-open, at least 1 (`Retry-After`); a rejection in
//!   half-open (all probe slots taken) says 1.
//! - The window is [`BUCKETS`] buckets of `window / BUCKETS`: a failure never counts once it is
//!   older than `window`, and always counts while younger than `window - window / BUCKETS`.
//! - Time is a parameter everywhere: `now` in milliseconds from a monotonic origin the caller
//!   owns (fits 40 bits: 34 years). `since` is in that clock; [`Snapshot::since_unix_ms`] turns
//!   it into unix time given the origin's unix time.
//!
//! Suggested mapping from `UpstreamError`: `Connect` -> `Connect`, `ConnectTimeout` /
//! `ReadTimeout` -> `Timeout`, a 5xx response (and `Reset`/`BadResponse`, answered 502) ->
//! `Status5xx`, `ClientAborted` -> `Ignored`.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Number of time buckets in the failure window.
pub const BUCKETS: usize = 16;
/// The largest `failure_threshold` and `half_open_probes` the breaker's packed words hold;
/// config validation refuses larger values (the limits live with the model).
pub use crate::config::model::{
    MAX_BREAKER_PROBES as MAX_PROBES, MAX_BREAKER_THRESHOLD as MAX_THRESHOLD,
};

/// An upstream-caused failure, as named in `failure_on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// `"connect"`: the connection could not be established.
    Connect,
    /// `"timeout"`: connect or read timed out.
    Timeout,
    /// `"5xx"`: the upstream answered 5xx (or a broken response the gateway answers 502).
    Status5xx,
}

impl FailureKind {
    const fn bit(self) -> u8 {
        match self {
            FailureKind::Connect => 1,
            FailureKind::Timeout => 2,
            FailureKind::Status5xx => 4,
        }
    }
}

/// The set of [`FailureKind`]s that count (`failure_on`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FailureSet(u8);

impl FailureSet {
    pub const NONE: Self = Self(0);
    pub const ALL: Self = Self(0b111);

    pub const fn with(self, kind: FailureKind) -> Self {
        Self(self.0 | kind.bit())
    }

    pub const fn contains(self, kind: FailureKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

impl Default for FailureSet {
    fn default() -> Self {
        Self::ALL
    }
}

impl FromIterator<FailureKind> for FailureSet {
    fn from_iter<I: IntoIterator<Item = FailureKind>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl fmt::Debug for FailureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds = [
            FailureKind::Connect,
            FailureKind::Timeout,
            FailureKind::Status5xx,
        ];
        f.debug_set()
            .entries(kinds.iter().filter(|k| self.contains(**k)))
            .finish()
    }
}

/// `[upstreams.NAME.breaker]`, validated. Out-of-range values are clamped by [`Breaker::new`]
/// (threshold and probes to `1..=MAX_*`, window and recovery to at least 1 ms); rejecting them
/// with a message is the config layer's job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub window: Duration,
    pub recovery_timeout: Duration,
    pub half_open_probes: u32,
    pub failure_on: FailureSet,
}

impl Default for BreakerConfig {
    /// The values of `dispatch.example.toml`.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            window: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(30),
            half_open_probes: 3,
            failure_on: FailureSet::ALL,
        }
    }
}

/// Breaker state. The discriminant is the metric value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl State {
    /// The name at `GET /health`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half_open",
            State::Open => "open",
        }
    }

    /// The metric value: 0 closed, 1 half-open, 2 open.
    pub fn metric_value(self) -> u8 {
        self as u8
    }

    fn from_bits(bits: u64) -> Self {
        match bits & STATE_MASK {
            0 => State::Closed,
            1 => State::HalfOpen,
            _ => State::Open,
        }
    }
}

/// What a request reports back through [`BreakerReplica::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Counts only when the kind is in `failure_on`; otherwise it is `Ignored`.
    Failure(FailureKind),
    /// Neither success nor failure: client aborts, client-caused errors.
    Ignored,
}

/// The answer to [`BreakerReplica::admit`].
#[must_use = "a permit must be given back to `record`"]
#[derive(Debug)]
pub enum Admission {
    /// Closed: go ahead, then `record` the outcome.
    Allowed(Permit),
    /// Half-open and this request holds one of the probe slots: go ahead, then `record` the
    /// outcome. Dropping the permit frees the slot.
    Probe(Permit),
    /// Open (or half-open with every probe slot taken): answer with `Retry-After`.
    Rejected { retry_after_secs: u64 },
}

/// The right to send one request, to be handed to [`BreakerReplica::record`]. Closed-state
/// permits are plain data; a probe permit holds its breaker and frees its slot on drop.
#[must_use = "a permit must be given back to `record`"]
pub struct Permit {
    epoch: u32,
    probe: Option<Arc<Breaker>>,
}

impl Permit {
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(breaker) = self.probe.take() {
            breaker.release_probe(self.epoch);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("epoch", &self.epoch)
            .field("probe", &self.is_probe())
            .finish()
    }
}

/// One breaker's state for `GET /health` and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub state: State,
    /// Failures inside the window: since the last close when closed; the recent ones (those
    /// that opened it, and failed probes) otherwise.
    pub failures: u32,
    /// Time of the last transition (or of creation), in the caller's monotonic milliseconds.
    pub since_ms: u64,
}

impl Snapshot {
    /// `since` as unix milliseconds, given the unix time of the clock's origin.
    pub fn since_unix_ms(&self, origin_unix_ms: u64) -> u64 {
        origin_unix_ms + self.since_ms
    }
}

// The state word: | since_ms: 40 | epoch: 22 | state: 2 |. The epoch changes on every
// transition, so while a state lasts its word is constant and a compare-exchange from it
// succeeds only if no other worker has moved the breaker on.
const STATE_MASK: u64 = 0b11;
const EPOCH_SHIFT: u32 = 2;
const EPOCH_MASK: u64 = (1 << 22) - 1;
const SINCE_SHIFT: u32 = 24;
const SINCE_MASK: u64 = (1 << 40) - 1;

fn word(state: State, epoch: u32, since_ms: u64) -> u64 {
    ((since_ms & SINCE_MASK) << SINCE_SHIFT)
        | ((epoch as u64 & EPOCH_MASK) << EPOCH_SHIFT)
        | state as u64
}

fn epoch_of(w: u64) -> u32 {
    ((w >> EPOCH_SHIFT) & EPOCH_MASK) as u32
}

fn since_of(w: u64) -> u64 {
    w >> SINCE_SHIFT
}

/// The word after `w`: next epoch, new state, new since.
fn next_word(w: u64, state: State, since_ms: u64) -> u64 {
    word(state, epoch_of(w).wrapping_add(1), since_ms)
}

// The probe word: | epoch: 22 | in_flight: 21 | successes: 21 |, valid for the half-open
// state of that epoch only; a worker that finds an older epoch there starts from zero.
const PROBE_FIELD: u64 = (1 << 21) - 1;

fn probe_word(epoch: u32, in_flight: u64, successes: u64) -> u64 {
    ((epoch as u64 & EPOCH_MASK) << 42) | (in_flight << 21) | successes
}

fn probe_fields(p: u64) -> (u32, u64, u64) {
    ((p >> 42) as u32, (p >> 21) & PROBE_FIELD, p & PROBE_FIELD)
}

// A bucket word: | slot: 40 | tag: 8 | count: 16 |. `slot` is `now / bucket_ms`; `tag` is the
// low byte of the epoch the failures were counted in, so a breaker that closes again starts
// with an empty window. One compare-exchange resets and counts, so no failure is lost to a reset.
fn bucket_word(slot: u64, tag: u8, count: u16) -> u64 {
    (slot << 24) | ((tag as u64) << 16) | count as u64
}

fn bucket_fields(b: u64) -> (u64, u8, u16) {
    (b >> 24, (b >> 16) as u8, b as u16)
}

/// Read on every request, written only on transitions: kept apart from the failure counters so
/// failures do not invalidate it in other cores' caches.
#[repr(align(64))]
struct Hot {
    word: AtomicU64,
    recovery_ms: u64,
    bucket_ms: u64,
    /// Buckets that make up the window (`BUCKETS`, fewer for a window under `BUCKETS` ms).
    span: u64,
    threshold: u32,
    probes: u32,
    failure_on: FailureSet,
}

#[repr(align(64))]
struct Cold {
    probe: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// One upstream's breaker, shared by every worker (in an `Arc`). Atomics only.
pub struct Breaker {
    hot: Hot,
    cold: Cold,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.hot.word.load(Ordering::Acquire);
        f.debug_struct("Breaker")
            .field("state", &State::from_bits(w))
            .field("epoch", &epoch_of(w))
            .field("since_ms", &since_of(w))
            .finish()
    }
}

impl Breaker {
    /// A closed breaker; `now` is its first `since`.
    pub fn new(config: &BreakerConfig, now: u64) -> Self {
        let window_ms = (config.window.as_millis() as u64).max(1);
        let bucket_ms = (window_ms / BUCKETS as u64).max(1);
        Self {
            hot: Hot {
                word: AtomicU64::new(word(State::Closed, 0, now)),
                recovery_ms: (config.recovery_timeout.as_millis() as u64).max(1),
                bucket_ms,
                span: (window_ms / bucket_ms).min(BUCKETS as u64),
                threshold: config.failure_threshold.clamp(1, MAX_THRESHOLD),
                probes: config.half_open_probes.clamp(1, MAX_PROBES),
                failure_on: config.failure_on,
            },
            cold: Cold {
                probe: AtomicU64::new(0),
                buckets: Default::default(),
            },
        }
    }

    /// State, failures and time of the last transition. An open breaker whose recovery timeout
    /// has passed reads as half-open from then, whether or not a request has come since.
    pub fn snapshot(&self, now: u64) -> Snapshot {
        let w = self.hot.word.load(Ordering::Acquire);
        let (mut state, mut since_ms) = (State::from_bits(w), since_of(w));
        let failures = match state {
            State::Closed => self.window_count(now, Some(epoch_of(w) as u8)),
            _ => self.window_count(now, None),
        };
        if state == State::Open && now >= since_ms + self.hot.recovery_ms {
            state = State::HalfOpen;
            since_ms += self.hot.recovery_ms;
        }
        Snapshot {
            state,
            failures,
            since_ms,
        }
    }

    /// Admission when the breaker is not closed (or turned not closed under us).
    fn admit_slow(self: &Arc<Self>, mut w: u64, now: u64) -> (Admission, u64) {
        loop {
            match State::from_bits(w) {
                State::Closed => {
                    let permit = Permit {
                        epoch: epoch_of(w),
                        probe: None,
                    };
                    return (Admission::Allowed(permit), w);
                }
                State::Open => {
                    let due = since_of(w) + self.hot.recovery_ms;
                    if now < due {
                        let retry_after_secs = (due - now).div_ceil(1000).max(1);
                        return (Admission::Rejected { retry_after_secs }, w);
                    }
                    // `since` of half-open is when it became due, so /health reads the same
                    // before and after some worker performs the transition. Win or lose, the
                    // word has moved on: look again.
                    let half = next_word(w, State::HalfOpen, due);
                    w = match self.hot.word.compare_exchange(
                        w,
                        half,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => half,
                        Err(current) => current,
                    };
                }
                State::HalfOpen => match self.try_probe(w) {
                    Ok(Some(permit)) => return (Admission::Probe(permit), w),
                    Ok(None) => {
                        return (
                            Admission::Rejected {
                                retry_after_secs: 1,
                            },
                            w,
                        )
                    }
                    Err(current) => w = current,
                },
            }
        }
    }

    /// Takes a probe slot of half-open word `w`: `Ok(None)` when all are taken, `Err(word)` when
    /// the state moved on meanwhile.
    fn try_probe(self: &Arc<Self>, w: u64) -> Result<Option<Permit>, u64> {
        let epoch = epoch_of(w);
        let mut p = self.cold.probe.load(Ordering::Acquire);
        loop {
            let (tag, in_flight, successes) = probe_fields(p);
            let (in_flight, successes) = if tag == epoch {
                (in_flight, successes)
            } else {
                // Left over from an earlier half-open. Reset it only while the state is still
                // ours: then no newer epoch can have written it, and we never clobber one.
                let current = self.hot.word.load(Ordering::Acquire);
                if current != w {
                    return Err(current);
                }
                (0, 0)
            };
            if in_flight >= self.hot.probes as u64 {
                return Ok(None);
            }
            let next = probe_word(epoch, in_flight + 1, successes);
            match self.cold.probe.compare_exchange_weak(
                p,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(current) => p = current,
            }
        }
        // The state may have moved on between reading `w` and taking the slot: give it back
        // rather than send a request the breaker no longer allows.
        let current = self.hot.word.load(Ordering::Acquire);
        if current != w {
            self.release_probe(epoch);
            return Err(current);
        }
        Ok(Some(Permit {
            epoch,
            probe: Some(Arc::clone(self)),
        }))
    }

    /// Frees a probe slot of half-open `epoch` without a success; a no-op once it is stale.
    fn release_probe(&self, epoch: u32) {
        let _ = self
            .cold
            .probe
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                let (tag, in_flight, successes) = probe_fields(p);
                (tag == epoch && in_flight > 0).then(|| probe_word(epoch, in_flight - 1, successes))
            });
    }

    /// A probe of `epoch` succeeded: frees its slot, and closes the breaker on the
    /// `half_open_probes`-th success.
    fn probe_success(&self, epoch: u32, now: u64) -> Option<State> {
        let before = self
            .cold
            .probe
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                let (tag, in_flight, successes) = probe_fields(p);
                (tag == epoch)
                    .then(|| probe_word(epoch, in_flight.saturating_sub(1), successes + 1))
            })
            .ok()?;
        // The probe word is one location, so exactly one success reads `probes - 1` here.
        let (_, _, successes) = probe_fields(before);
        if successes + 1 == self.hot.probes as u64 {
            self.transition(State::HalfOpen, epoch, State::Closed, now)
        } else {
            None
        }
    }

    /// Moves `from` of `epoch` to `to`, if the breaker is still there. While a state lasts its
    /// word does not change, so one compare-exchange decides: the loser's state has moved on.
    fn transition(&self, from: State, epoch: u32, to: State, now: u64) -> Option<State> {
        let w = self.hot.word.load(Ordering::Acquire);
        if State::from_bits(w) != from || epoch_of(w) != epoch {
            return None;
        }
        self.hot
            .word
            .compare_exchange(
                w,
                next_word(w, to, now),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .ok()
            .map(|_| to)
    }

    /// Counts a failure of `epoch` at `now`; returns the window's count for that epoch,
    /// this failure included.
    ///
    /// SeqCst: two failures landing in different buckets at once must not both miss the other
    /// (each writes one bucket then reads the rest), or the threshold-th failure could go
    /// unnoticed. Failures are rare; the cost does not matter.
    fn add_failure(&self, epoch: u32, now: u64) -> u32 {
        let slot = now / self.hot.bucket_ms;
        let tag = epoch as u8;
        let index = (slot % BUCKETS as u64) as usize;
        let before = self.cold.buckets[index]
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                let (s, t, count) = bucket_fields(b);
                // `s > slot`: the bucket is newer than this `now` (one read long ago): count into
                // it rather than wipe newer failures.
                Some(if t == tag && s >= slot {
                    bucket_word(s, t, count.saturating_add(1))
                } else {
                    bucket_word(slot, tag, 1)
                })
            })
            .unwrap_or_else(|b| b);
        let (s, t, count) = bucket_fields(before);
        let mine = if t == tag && s >= slot {
            count as u32 + 1
        } else {
            1
        };
        let others: u32 = (0..BUCKETS)
            .filter(|&i| i != index)
            .map(|i| self.bucket_count(i, slot, Some(tag)))
            .sum();
        mine + others
    }

    /// The window's failures at `now`, of one epoch's tag or of any.
    fn window_count(&self, now: u64, tag: Option<u8>) -> u32 {
        let slot = now / self.hot.bucket_ms;
        (0..BUCKETS).map(|i| self.bucket_count(i, slot, tag)).sum()
    }

    fn bucket_count(&self, index: usize, slot: u64, tag: Option<u8>) -> u32 {
        let (s, t, count) = bucket_fields(self.cold.buckets[index].load(Ordering::SeqCst));
        let live = s + self.hot.span > slot && tag.is_none_or(|tag| tag == t);
        if live {
            count as u32
        } else {
            0
        }
    }
}

/// One worker's view of one upstream's breaker. Plain fields: it is owned by one worker and
/// never crosses threads (`!Sync`).
pub struct BreakerReplica {
    shared: Arc<Breaker>,
    /// The state word this worker saw last (on `admit` or on a transition it made).
    seen: Cell<u64>,
}

// Hot struct: a pointer and the cached word.
const _: () = assert!(std::mem::size_of::<BreakerReplica>() == 16);

impl BreakerReplica {
    pub fn new(shared: Arc<Breaker>) -> Self {
        let seen = shared.hot.word.load(Ordering::Acquire);
        Self {
            shared,
            seen: Cell::new(seen),
        }
    }

    pub fn shared(&self) -> &Arc<Breaker> {
        &self.shared
    }

    /// May a request go to this upstream at `now`?
    ///
    /// Cost while closed: one Acquire load of the shared state word (a plain load on x86 and
    /// ARMv8 `ldar`; the line is only written on transitions, so it stays cached in every core)
    /// and one store to this worker's own `Cell`. No shared write, no read-modify-write.
    #[inline]
    pub fn admit(&self, now: u64) -> Admission {
        let w = self.shared.hot.word.load(Ordering::Acquire);
        self.seen.set(w);
        if w & STATE_MASK == State::Closed as u64 {
            return Admission::Allowed(Permit {
                epoch: epoch_of(w),
                probe: None,
            });
        }
        let (admission, w) = self.shared.admit_slow(w, now);
        self.seen.set(w);
        admission
    }

    /// Reports the outcome of an admitted request. Returns the new state when this call
    /// performed a transition (closed -> open, half-open -> open or -> closed), for logs.
    ///
    /// A success or an ignored outcome of a closed-state permit touches nothing shared.
    pub fn record(&self, mut permit: Permit, outcome: Outcome, now: u64) -> Option<State> {
        let shared = &self.shared;
        let probe = permit.probe.take();
        debug_assert!(probe.as_ref().is_none_or(|b| Arc::ptr_eq(b, shared)));
        let counted =
            matches!(outcome, Outcome::Failure(kind) if shared.hot.failure_on.contains(kind));
        let epoch = permit.epoch;
        let transition = if probe.is_some() {
            if counted {
                shared.release_probe(epoch);
                shared.add_failure(epoch, now);
                shared.transition(State::HalfOpen, epoch, State::Open, now)
            } else if outcome == Outcome::Success {
                shared.probe_success(epoch, now)
            } else {
                shared.release_probe(epoch);
                None
            }
        } else if counted {
            let w = shared.hot.word.load(Ordering::Acquire);
            // A failure of a request admitted before the breaker last moved is stale.
            if w & STATE_MASK != State::Closed as u64 || epoch_of(w) != epoch {
                return None;
            }
            if shared.add_failure(epoch, now) >= shared.hot.threshold {
                shared.transition(State::Closed, epoch, State::Open, now)
            } else {
                None
            }
        } else {
            None
        };
        if transition.is_some() {
            self.seen.set(shared.hot.word.load(Ordering::Acquire));
        }
        transition
    }

    /// The state this worker saw last, without touching shared memory (for example for the
    /// cache's stale-if-error decision right after an admission).
    pub fn last_seen_state(&self) -> State {
        State::from_bits(self.seen.get())
    }

    pub fn snapshot(&self, now: u64) -> Snapshot {
        self.shared.snapshot(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::thread;

    const CONNECT: Outcome = Outcome::Failure(FailureKind::Connect);

    fn config(threshold: u32, window_s: u64, recovery_s: u64, probes: u32) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: threshold,
            window: Duration::from_secs(window_s),
            recovery_timeout: Duration::from_secs(recovery_s),
            half_open_probes: probes,
            failure_on: FailureSet::ALL,
        }
    }

    fn replica(config: &BreakerConfig, now: u64) -> BreakerReplica {
        BreakerReplica::new(Arc::new(Breaker::new(config, now)))
    }

    fn permit(r: &BreakerReplica, now: u64) -> Permit {
        match r.admit(now) {
            Admission::Allowed(p) | Admission::Probe(p) => p,
            Admission::Rejected { retry_after_secs } => {
                panic!("rejected at {now}, retry after {retry_after_secs}")
            }
        }
    }

    fn fail(r: &BreakerReplica, now: u64) -> Option<State> {
        let p = permit(r, now);
        r.record(p, CONNECT, now)
    }

    fn retry_after(r: &BreakerReplica, now: u64) -> Option<u64> {
        match r.admit(now) {
            Admission::Rejected { retry_after_secs } => Some(retry_after_secs),
            _ => None,
        }
    }

    fn probe(r: &BreakerReplica, now: u64) -> Permit {
        match r.admit(now) {
            Admission::Probe(p) => p,
            other => panic!("expected a probe at {now}, got {other:?}"),
        }
    }

    /// Opens `r` at `now` with `threshold` failures.
    fn open(r: &BreakerReplica, threshold: u32, now: u64) {
        for _ in 1..threshold {
            assert_eq!(fail(r, now), None);
        }
        assert_eq!(fail(r, now), Some(State::Open));
    }

    #[test]
    fn opens_at_threshold_and_successes_write_nothing() {
        let r = replica(&config(5, 60, 30, 3), 0);
        for t in 0..4 {
            assert_eq!(fail(&r, 1000 + t), None);
        }
        let word_before = r.shared.hot.word.load(Ordering::Relaxed);
        for _ in 0..100 {
            let p = permit(&r, 2000);
            assert!(!p.is_probe());
            assert_eq!(r.record(p, Outcome::Success, 2000), None);
        }
        assert_eq!(r.shared.hot.word.load(Ordering::Relaxed), word_before);
        let snap = r.snapshot(2500);
        assert_eq!(
            (snap.state, snap.failures, snap.since_ms),
            (State::Closed, 4, 0)
        );

        assert_eq!(fail(&r, 3000), Some(State::Open));
        assert_eq!(r.last_seen_state(), State::Open);
        assert_eq!(retry_after(&r, 3000), Some(30));
        let snap = r.snapshot(3000);
        assert_eq!(
            (snap.state, snap.failures, snap.since_ms),
            (State::Open, 5, 3000)
        );
        assert_eq!(snap.state.as_str(), "open");
        assert_eq!(snap.state.metric_value(), 2);
        assert_eq!(snap.since_unix_ms(1_700_000_000_000), 1_700_000_003_000);
    }

    #[test]
    fn failures_older_than_window_expire() {
        // window 10 s: 16 buckets of 625 ms
        let r = replica(&config(5, 10, 30, 3), 0);
        for _ in 0..4 {
            assert_eq!(fail(&r, 0), None);
        }
        assert_eq!(r.snapshot(9_000).failures, 4);
        assert_eq!(r.snapshot(10_000).failures, 0, "older than the window");
        assert_eq!(fail(&r, 10_000), None, "the 4 old ones no longer count");
        for t in [10_100, 12_000, 15_000] {
            assert_eq!(fail(&r, t), None);
        }
        // 4 inside the window (10.0 .. 15.0 s): a 5th within it opens
        assert_eq!(fail(&r, 19_000), Some(State::Open));
    }

    #[test]
    fn failure_inside_window_but_in_an_old_bucket_still_counts() {
        let r = replica(&config(2, 10, 30, 3), 0);
        assert_eq!(fail(&r, 700), None);
        assert_eq!(fail(&r, 9_999), Some(State::Open));
    }

    #[test]
    fn unlisted_failures_and_ignored_do_not_count() {
        let mut c = config(2, 60, 30, 3);
        c.failure_on = [FailureKind::Connect].into_iter().collect();
        assert_eq!(format!("{:?}", c.failure_on), "{Connect}");
        let r = replica(&c, 0);
        for _ in 0..10 {
            let p = permit(&r, 5);
            assert_eq!(r.record(p, Outcome::Failure(FailureKind::Timeout), 5), None);
            let p = permit(&r, 5);
            assert_eq!(
                r.record(p, Outcome::Failure(FailureKind::Status5xx), 5),
                None
            );
            let p = permit(&r, 5);
            assert_eq!(r.record(p, Outcome::Ignored, 5), None);
        }
        assert_eq!(r.snapshot(5).failures, 0);
        assert_eq!(fail(&r, 5), None);
        assert_eq!(fail(&r, 5), Some(State::Open));
    }

    #[test]
    fn retry_after_counts_down_then_half_open() {
        let r = replica(&config(1, 60, 30, 3), 0);
        open(&r, 1, 1_000);
        assert_eq!(retry_after(&r, 1_000), Some(30));
        assert_eq!(retry_after(&r, 1_500), Some(30), "29.5 s rounds up");
        assert_eq!(retry_after(&r, 2_001), Some(29));
        assert_eq!(retry_after(&r, 16_000), Some(15));
        assert_eq!(retry_after(&r, 30_999), Some(1));
        assert_eq!(r.snapshot(30_999).state, State::Open);
        // due at 31 s: reads half-open from then, even before any request
        let snap = r.snapshot(40_000);
        assert_eq!((snap.state, snap.since_ms), (State::HalfOpen, 31_000));
        let p = probe(&r, 40_000);
        assert!(p.is_probe());
        assert_eq!(r.last_seen_state(), State::HalfOpen);
        assert_eq!(r.snapshot(40_000).since_ms, 31_000, "same before and after");
        drop(p);
    }

    #[test]
    fn half_open_admits_at_most_probes_and_closes_after_that_many_successes() {
        let r = replica(&config(1, 60, 30, 3), 0);
        open(&r, 1, 0);
        let probes: Vec<_> = (0..3).map(|_| probe(&r, 30_000)).collect();
        assert_eq!(retry_after(&r, 30_000), Some(1), "all slots taken");
        let mut probes = probes.into_iter();
        assert_eq!(
            r.record(probes.next().unwrap(), Outcome::Success, 30_100),
            None
        );
        // a slot is free again; the streak is 1
        let fourth = probe(&r, 30_100);
        assert_eq!(retry_after(&r, 30_100), Some(1));
        assert_eq!(
            r.record(probes.next().unwrap(), Outcome::Success, 30_200),
            None
        );
        assert_eq!(
            r.record(probes.next().unwrap(), Outcome::Success, 30_300),
            Some(State::Closed)
        );
        let snap = r.snapshot(30_300);
        assert_eq!(
            (snap.state, snap.failures, snap.since_ms),
            (State::Closed, 0, 30_300)
        );
        assert_eq!(snap.state.metric_value(), 0);
        // late probe result after closing: counts for nothing
        assert_eq!(r.record(fourth, CONNECT, 30_400), None);
        assert_eq!(r.snapshot(30_400).failures, 0);
        assert!(matches!(r.admit(30_400), Admission::Allowed(_)));
        // the new closed period starts from an empty window
        assert_eq!(fail(&r, 30_500), Some(State::Open));
    }

    #[test]
    fn one_failure_in_half_open_reopens_and_restarts_recovery() {
        let r = replica(&config(1, 60, 30, 3), 0);
        open(&r, 1, 0);
        let a = probe(&r, 30_000);
        let b = probe(&r, 30_000);
        assert_eq!(r.record(a, Outcome::Success, 30_500), None);
        assert_eq!(r.record(b, CONNECT, 31_000), Some(State::Open));
        let snap = r.snapshot(31_000);
        assert_eq!((snap.state, snap.since_ms), (State::Open, 31_000));
        assert_eq!(retry_after(&r, 31_000), Some(30));
        assert_eq!(retry_after(&r, 60_999), Some(1));
        // the streak of the previous half-open does not carry over
        let probes: Vec<_> = (0..3).map(|_| probe(&r, 61_000)).collect();
        let mut closed = None;
        for (i, p) in probes.into_iter().enumerate() {
            closed = r.record(p, Outcome::Success, 61_000 + i as u64);
        }
        assert_eq!(closed, Some(State::Closed));
    }

    #[test]
    fn dropped_or_ignored_probe_frees_its_slot_without_counting() {
        let r = replica(&config(1, 60, 30, 1), 0);
        open(&r, 1, 0);
        let p = probe(&r, 30_000);
        assert_eq!(retry_after(&r, 30_000), Some(1));
        drop(p);
        let p = probe(&r, 30_001);
        assert_eq!(r.record(p, Outcome::Ignored, 30_002), None);
        let p = probe(&r, 30_003);
        assert_eq!(r.record(p, Outcome::Success, 30_004), Some(State::Closed));
    }

    #[test]
    fn stale_failure_from_before_a_transition_is_ignored() {
        let r = replica(&config(2, 60, 30, 1), 0);
        let slow = permit(&r, 0);
        open(&r, 2, 10);
        let p = probe(&r, 30_010);
        assert_eq!(r.record(p, Outcome::Success, 30_011), Some(State::Closed));
        assert_eq!(r.record(slow, CONNECT, 30_012), None);
        assert_eq!(r.snapshot(30_012).failures, 0);
        assert_eq!(
            fail(&r, 30_013),
            None,
            "one failure of the new period, not two"
        );
    }

    #[test]
    fn global_threshold_across_threads() {
        // 4 workers, one failure each at the same instant, many rounds: threshold 4 opens
        // every time, exactly once (no failure lost, one transition); threshold 5 never.
        for (threshold, expect_open) in [(4, true), (5, false)] {
            for _ in 0..200 {
                let shared = Arc::new(Breaker::new(&config(threshold, 60, 30, 3), 0));
                let barrier = Arc::new(Barrier::new(4));
                let handles: Vec<_> = (0..4)
                    .map(|i| {
                        let (shared, barrier) = (shared.clone(), barrier.clone());
                        thread::spawn(move || {
                            let r = BreakerReplica::new(shared);
                            let p = permit(&r, 0);
                            barrier.wait();
                            // different buckets too: 3750 ms per bucket in a 60 s window
                            r.record(p, CONNECT, i * 4_000)
                        })
                    })
                    .collect();
                let opened = handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .filter(|t| *t == Some(State::Open))
                    .count();
                assert_eq!(opened, usize::from(expect_open), "threshold {threshold}");
                assert_eq!(shared.snapshot(12_000).failures, 4);
                let state = shared.snapshot(12_000).state;
                assert_eq!(state == State::Open, expect_open);
            }
        }
    }

    #[test]
    fn threshold_is_global_not_per_thread_and_transition_is_exactly_once() {
        // 4 threads x 3 failures: 12 in total; opening happens once, with threshold 5.
        let shared = Arc::new(Breaker::new(&config(5, 60, 30, 3), 0));
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (shared, barrier) = (shared.clone(), barrier.clone());
                thread::spawn(move || {
                    let r = BreakerReplica::new(shared);
                    let permits: Vec<_> = (0..3).map(|_| permit(&r, 100)).collect();
                    barrier.wait();
                    permits
                        .into_iter()
                        .map(|p| r.record(p, CONNECT, 100))
                        .filter(|t| t.is_some())
                        .count()
                })
            })
            .collect();
        let transitions: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(transitions, 1);
        let snap = shared.snapshot(100);
        assert_eq!(snap.state, State::Open);
        assert!((5..=12).contains(&snap.failures), "{}", snap.failures);
    }

    #[test]
    fn other_workers_see_open_on_their_next_admit() {
        let shared = Arc::new(Breaker::new(&config(5, 60, 30, 3), 0));
        let mine = BreakerReplica::new(shared.clone());
        assert!(matches!(mine.admit(10), Admission::Allowed(_)));
        let other = shared.clone();
        thread::spawn(move || open(&BreakerReplica::new(other), 5, 20))
            .join()
            .unwrap();
        assert_eq!(mine.last_seen_state(), State::Closed, "not looked yet");
        assert_eq!(retry_after(&mine, 21), Some(30));
        assert_eq!(mine.last_seen_state(), State::Open);
    }

    #[test]
    fn at_most_probes_in_flight_across_threads() {
        for _ in 0..100 {
            let shared = Arc::new(Breaker::new(&config(1, 60, 30, 3), 0));
            open(&BreakerReplica::new(shared.clone()), 1, 0);
            let (admitted, done) = (Arc::new(Barrier::new(8)), Arc::new(Barrier::new(8)));
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (shared, admitted, done) = (shared.clone(), admitted.clone(), done.clone());
                    thread::spawn(move || {
                        let r = BreakerReplica::new(shared);
                        admitted.wait();
                        let admission = r.admit(30_000);
                        let won = matches!(admission, Admission::Probe(_));
                        // hold the slot until every thread has asked
                        done.wait();
                        let closed = match admission {
                            Admission::Probe(p) => r.record(p, Outcome::Success, 30_001),
                            _ => None,
                        };
                        (won, closed)
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(results.iter().filter(|(won, _)| *won).count(), 3);
            let closes = results.iter().filter(|(_, c)| *c == Some(State::Closed));
            assert_eq!(closes.count(), 1, "consecutive successes close it once");
            assert_eq!(shared.snapshot(30_001).state, State::Closed);
        }
    }

    #[test]
    fn clamps_degenerate_config() {
        let c = BreakerConfig {
            failure_threshold: 0,
            window: Duration::ZERO,
            recovery_timeout: Duration::ZERO,
            half_open_probes: 0,
            failure_on: FailureSet::ALL,
        };
        let r = replica(&c, 0);
        assert_eq!(fail(&r, 0), Some(State::Open));
        assert_eq!(retry_after(&r, 0), Some(1));
        let p = probe(&r, 1);
        assert_eq!(r.record(p, Outcome::Success, 1), Some(State::Closed));
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<BreakerReplica>(), 16);
        assert_eq!(std::mem::size_of::<Permit>(), 16);
        assert_eq!(std::mem::align_of::<Breaker>(), 64);
    }
}
