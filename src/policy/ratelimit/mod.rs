//! Rate limits (BEHAVIOR.md "Rate limits"): the five algorithms, each exact across every
//! worker, over bounded memory. This module is the core: it decides; the config layer fills a
//! [`LimitSpec`] per limit (and per tier), the request phase resolves the key's bytes and the
//! tier, and the response phase turns a [`Decision`] into `RateLimit-*` / `Retry-After`.
//!
//! Key types: [`LimitSpec`] (plain data, validated by [`LimitSpec::validate`]), [`Limiter`]
//! (one limit: its compiled rule and its shared [`Table`], a cheap `Arc` handle every worker
//! clones), [`Policy`] (a limit and its tiers), [`Decision`] (allow, delay until an instant,
//! or reject), [`Ticket`] (a delayed request's place in a leaky bucket, returnable).
//!
//! The one thing to know: every limit is ONE table of per-key atomic words shared by all
//! workers ([`global`]), so there is no per-worker share of a limit to drift: admissions never
//! exceed what the algorithm allows, under any number of workers and however hot a key is.
//! Time is always a parameter (`now_ms`, milliseconds since a monotonic origin the caller
//! owns: [`crate::clock::now_ms`] in the gateway), never read here.
//!
//! The algorithms, one file each:
//! - [`fixed_window`]: at most `limit` per window of `window` (windows aligned on the clock's
//!   origin); a burst at a window's end and another at the next window's start can admit up to
//!   `2 * limit` within one `window`-long span, as the algorithm implies.
//! - [`sliding_window_log`]: at most `limit` in ANY `window`-long span, exactly: a ring of the
//!   last `limit` admission times per key, so it costs `8 * (limit + 3)` bytes per key; `limit` is
//!   capped at [`MAX_LOG_LIMIT`] and its default `max_keys` is lowered to fit
//!   [`DEFAULT_LOG_TABLE_BYTES`].
//! - [`sliding_window_counter`]: this window's count plus the previous window's weighted by
//!   how much of it the sliding window still covers (assumes the previous window's requests
//!   were spread evenly); never more than `limit` in one fixed window.
//! - [`token_bucket`]: `burst` tokens, refilled at `rate` per second (GCRA: one timestamp).
//! - [`leaky_bucket`]: shaping: requests leave at `rate` per second; at most `burst` wait
//!   ([`Decision::Delay`] gives the instant to wait until: no timer per request); more are
//!   rejected. A delayed request that gives up returns its place with [`Limiter::cancel`].
//!
//! Headers ([`Decision::headers`]): `RateLimit-Limit` is `limit` (buckets: `burst`),
//! `RateLimit-Remaining` what could still be admitted now (leaky bucket: the free places in
//! its queue), `RateLimit-Reset` the seconds until the key is fully restored; `Retry-After`
//! the seconds until a rejected request would be admitted.
//!
//! Memory: each limit's table (each tier has its own) is allocated whole when the limit is
//! built and never grows ([`Limiter::heap_bytes`], [`LimitSpec::table_bytes`]); the process
//! bound is the sum over limits and tiers. With the default `max_keys` ([`DEFAULT_MAX_KEYS`] =
//! 100,000: 131,072 slots of 16 bytes) a limit holds 2 MiB, and a flood of 1,000,000 (or any
//! number of) distinct keys leaves it at 2 MiB. A key gives up its slot only once its state
//! has fully recovered, and only when a new key needs the slot; a key in debt is never
//! evicted, so a flood cannot reset a client's count (that would be over-admission). A new key
//! (or a recovered one coming back) that finds its 16-slot window all in debt is rejected
//! until one recovers ([`Table::overflows`] counts these): the table errs on the side of
//! rejecting. So `max_keys` is the number of distinct keys that can be in debt at once:
//! 100,000 on one instance is well above what a 2-core edge gateway serves at once, for 2 MiB
//! a limit; 1,000,000 costs 32 MiB.
//!
//! Reload: a [`Limiter`] built with [`Limiter::rebuild`] from an equal spec IS the previous
//! one (the same `Arc`), so its keys' state survives a reload of an unchanged policy.

use std::sync::Arc;
use std::time::Duration;

pub mod fixed_window;
pub mod global;
pub mod leaky_bucket;
pub mod sliding_window_counter;
pub mod sliding_window_log;
pub mod token_bucket;

pub use global::Table;

use global::{Found, Slot};

/// `max_keys` when the spec sets none (see the module doc for the reasoning).
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// The most `max_keys` one limit may have.
pub const MAX_MAX_KEYS: usize = 1 << 26;
/// The most heap one limit's table may take; a larger `max_keys` (or log `limit`) is refused.
pub const MAX_TABLE_BYTES: usize = 1 << 30;
/// The heap a sliding-window log's table is sized to when its `max_keys` is not set.
pub const DEFAULT_LOG_TABLE_BYTES: usize = 64 << 20;
/// The largest `limit` of a sliding-window log (it stores one timestamp per unit of limit).
pub const MAX_LOG_LIMIT: u64 = 10_000;
/// The largest `limit` of a fixed window (its count shares a word with the window number).
pub const MAX_FIXED_LIMIT: u64 = (1 << 31) - 1;
/// The largest `limit` of a sliding-window counter (two counts share a word with the window).
pub const MAX_COUNTER_LIMIT: u64 = (1 << 20) - 1;
/// The largest `rate` of the buckets (their clock ticks in microseconds).
pub const MAX_RATE: u64 = 1_000_000;
/// The largest `burst` of the buckets.
pub const MAX_BURST: u64 = 1 << 32;
/// The longest `window`.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 86_400);

/// The five algorithms (`algorithm = "..."`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    FixedWindow,
    SlidingWindowLog,
    SlidingWindowCounter,
    TokenBucket,
    LeakyBucket,
}

impl Algorithm {
    /// Every algorithm with its config name.
    pub const ALL: [(Algorithm, &'static str); 5] = [
        (Algorithm::FixedWindow, "fixed_window"),
        (Algorithm::SlidingWindowLog, "sliding_window_log"),
        (Algorithm::SlidingWindowCounter, "sliding_window_counter"),
        (Algorithm::TokenBucket, "token_bucket"),
        (Algorithm::LeakyBucket, "leaky_bucket"),
    ];

    /// The algorithm a config name names.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(a, _)| *a)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(a, _)| *a == self)
            .map_or("", |(_, n)| n)
    }

    /// Whether the algorithm counts `limit` per `window` (else `rate` and `burst`).
    pub fn is_windowed(self) -> bool {
        matches!(
            self,
            Algorithm::FixedWindow | Algorithm::SlidingWindowLog | Algorithm::SlidingWindowCounter
        )
    }
}

/// One limit as configured (one `[rate_limits.NAME]`, or one of its tiers): plain data.
/// Windowed algorithms use `limit` and `window`; buckets `rate` and `burst`; the fields the
/// algorithm does not use must be zero.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LimitSpec {
    pub algorithm: Algorithm,
    /// Requests per window.
    pub limit: u64,
    /// The window, in whole milliseconds.
    pub window: Duration,
    /// Tokens (buckets) or departures (leaky) per second.
    pub rate: u64,
    /// Token bucket: its size. Leaky bucket: how many requests may wait (0: none, pure
    /// policing at `rate`).
    pub burst: u64,
    /// Distinct keys the table has room for; `None`: [`DEFAULT_MAX_KEYS`] (a log: fewer, to
    /// fit [`DEFAULT_LOG_TABLE_BYTES`]).
    pub max_keys: Option<usize>,
}

/// Why a [`LimitSpec`] cannot be built (the config layer adds the limit's name and location).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A required field is zero or missing.
    #[error("{algorithm} needs `{field}` greater than 0")]
    Missing {
        algorithm: &'static str,
        field: &'static str,
    },
    /// A field the algorithm does not use is set.
    #[error("`{field}` does not apply to {algorithm}")]
    NotApplicable {
        algorithm: &'static str,
        field: &'static str,
    },
    /// A field is above what the algorithm can hold.
    #[error("{algorithm}: `{field}` = {value} is above the maximum {max}")]
    TooLarge {
        algorithm: &'static str,
        field: &'static str,
        value: u64,
        max: u64,
    },
    /// The window is not a whole number of milliseconds.
    #[error("`window` must be a whole number of milliseconds")]
    WindowPrecision,
    /// The table for `max_keys` keys would exceed [`MAX_TABLE_BYTES`].
    #[error("{algorithm}: max_keys = {max_keys} needs {bytes} bytes, above the maximum {max} (lower max_keys)")]
    TableTooLarge {
        algorithm: &'static str,
        max_keys: usize,
        bytes: usize,
        max: usize,
    },
}

impl LimitSpec {
    /// Checks every field against what its algorithm uses and can hold.
    pub fn validate(&self) -> Result<(), SpecError> {
        let algorithm = self.algorithm.name();
        let missing = |field| SpecError::Missing { algorithm, field };
        let not_applicable = |field| SpecError::NotApplicable { algorithm, field };
        let too_large = |field, value, max| SpecError::TooLarge {
            algorithm,
            field,
            value,
            max,
        };
        if self.algorithm.is_windowed() {
            if self.limit == 0 {
                return Err(missing("limit"));
            }
            if self.window.is_zero() {
                return Err(missing("window"));
            }
            if !self.window.subsec_nanos().is_multiple_of(1_000_000) {
                return Err(SpecError::WindowPrecision);
            }
            if self.window > MAX_WINDOW {
                return Err(too_large(
                    "window",
                    self.window.as_millis() as u64,
                    MAX_WINDOW.as_millis() as u64,
                ));
            }
            let max = match self.algorithm {
                Algorithm::FixedWindow => MAX_FIXED_LIMIT,
                Algorithm::SlidingWindowLog => MAX_LOG_LIMIT,
                _ => MAX_COUNTER_LIMIT,
            };
            if self.limit > max {
                return Err(too_large("limit", self.limit, max));
            }
            if self.rate != 0 {
                return Err(not_applicable("rate"));
            }
            if self.burst != 0 {
                return Err(not_applicable("burst"));
            }
        } else {
            if self.rate == 0 {
                return Err(missing("rate"));
            }
            if self.rate > MAX_RATE {
                return Err(too_large("rate", self.rate, MAX_RATE));
            }
            if self.algorithm == Algorithm::TokenBucket && self.burst == 0 {
                return Err(missing("burst"));
            }
            if self.burst > MAX_BURST {
                return Err(too_large("burst", self.burst, MAX_BURST));
            }
            if self.limit != 0 {
                return Err(not_applicable("limit"));
            }
            if !self.window.is_zero() {
                return Err(not_applicable("window"));
            }
        }
        let max_keys = self.max_keys();
        if max_keys == 0 {
            return Err(missing("max_keys"));
        }
        if max_keys > MAX_MAX_KEYS {
            return Err(too_large("max_keys", max_keys as u64, MAX_MAX_KEYS as u64));
        }
        let bytes = self.table_bytes();
        if bytes > MAX_TABLE_BYTES {
            return Err(SpecError::TableTooLarge {
                algorithm,
                max_keys,
                bytes,
                max: MAX_TABLE_BYTES,
            });
        }
        Ok(())
    }

    /// `max_keys`, or its default for this algorithm.
    pub fn max_keys(&self) -> usize {
        self.max_keys.unwrap_or_else(|| match self.algorithm {
            Algorithm::SlidingWindowLog => {
                let per_slot = (2 + self.extra_words()) * 8;
                // Slots are max_keys * 5/4 rounded up to a power of two: sizing for 4/5 of
                // the slots that fit keeps the rounding inside the budget.
                let slots = (DEFAULT_LOG_TABLE_BYTES / per_slot).max(global::PROBE);
                let slots = if slots.is_power_of_two() {
                    slots
                } else {
                    slots.next_power_of_two() / 2
                };
                (slots * 4 / 5).clamp(1, DEFAULT_MAX_KEYS)
            }
            _ => DEFAULT_MAX_KEYS,
        })
    }

    /// The heap bytes this limit's table takes, whatever the number of keys it sees.
    pub fn table_bytes(&self) -> usize {
        Table::bytes_for(self.max_keys(), self.extra_words())
    }

    fn extra_words(&self) -> usize {
        match self.algorithm {
            // The `done` word and the ring.
            Algorithm::SlidingWindowLog => 1 + self.limit.min(MAX_LOG_LIMIT) as usize,
            _ => 0,
        }
    }
}

/// What a limit decides for one request. Times are milliseconds on the caller's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on now.
    Allow {
        limit: u64,
        remaining: u64,
        reset_ms: u64,
    },
    /// Leaky bucket: go on at `until_ms` (the request keeps its place; no timer is armed
    /// here). A caller that gives up first returns the place with [`Limiter::cancel`].
    Delay {
        until_ms: u64,
        limit: u64,
        remaining: u64,
        reset_ms: u64,
        ticket: Ticket,
    },
    /// 429: admitted again after `retry_after_ms` (at least 1).
    Reject {
        limit: u64,
        retry_after_ms: u64,
        reset_ms: u64,
    },
}

/// The values of the `RateLimit-*` and `Retry-After` headers for a [`Decision`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    pub limit: u64,
    pub remaining: u64,
    /// Whole seconds, rounded up.
    pub reset_secs: u64,
    /// Whole seconds, rounded up, at least 1; only for a rejection.
    pub retry_after_secs: Option<u64>,
}

impl Decision {
    /// Whether the request goes on (now or after its delay).
    pub fn admitted(&self) -> bool {
        !matches!(self, Decision::Reject { .. })
    }

    /// The header values, in whole seconds rounded up (a client that waits that long is
    /// never early).
    pub fn headers(&self) -> Headers {
        let secs = |ms: u64| ms.div_ceil(1000);
        match *self {
            Decision::Allow {
                limit,
                remaining,
                reset_ms,
            }
            | Decision::Delay {
                limit,
                remaining,
                reset_ms,
                ..
            } => Headers {
                limit,
                remaining,
                reset_secs: secs(reset_ms),
                retry_after_secs: None,
            },
            Decision::Reject {
                limit,
                retry_after_ms,
                reset_ms,
            } => Headers {
                limit,
                remaining: 0,
                reset_secs: secs(reset_ms.max(retry_after_ms)),
                retry_after_secs: Some(secs(retry_after_ms).max(1)),
            },
        }
    }
}

/// A delayed request's place in a leaky bucket: the exact state word its admission wrote and
/// the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    slot: usize,
    before: u64,
    after: u64,
}

/// The compiled rule of one limit.
#[derive(Debug)]
enum Compiled {
    Fixed(fixed_window::FixedWindow),
    Log(sliding_window_log::SlidingWindowLog),
    Counter(sliding_window_counter::SlidingWindowCounter),
    Token(token_bucket::TokenBucket),
    Leaky(leaky_bucket::LeakyBucket),
}

#[derive(Debug)]
struct Inner {
    spec: LimitSpec,
    rule: Compiled,
    table: Table,
}

/// One limit, shared by every worker: clone the handle, not the state.
#[derive(Clone, Debug)]
pub struct Limiter {
    inner: Arc<Inner>,
}

impl Limiter {
    /// Builds a limit with a new, empty table.
    pub fn new(spec: LimitSpec) -> Result<Limiter, SpecError> {
        spec.validate()?;
        let rule = match spec.algorithm {
            Algorithm::FixedWindow => Compiled::Fixed(fixed_window::FixedWindow::new(&spec)),
            Algorithm::SlidingWindowLog => {
                Compiled::Log(sliding_window_log::SlidingWindowLog::new(&spec))
            }
            Algorithm::SlidingWindowCounter => {
                Compiled::Counter(sliding_window_counter::SlidingWindowCounter::new(&spec))
            }
            Algorithm::TokenBucket => Compiled::Token(token_bucket::TokenBucket::new(&spec)),
            Algorithm::LeakyBucket => Compiled::Leaky(leaky_bucket::LeakyBucket::new(&spec)),
        };
        let table = Table::new(spec.max_keys(), spec.extra_words());
        Ok(Limiter {
            inner: Arc::new(Inner { spec, rule, table }),
        })
    }

    /// The limit for `spec` on a reload: `previous` itself (its keys' state kept) when its
    /// spec is equal, else a new one.
    pub fn rebuild(spec: LimitSpec, previous: Option<&Limiter>) -> Result<Limiter, SpecError> {
        match previous {
            Some(p) if p.inner.spec == spec => Ok(p.clone()),
            _ => Limiter::new(spec),
        }
    }

    /// Whether two handles share one state (a reload carried it over).
    pub fn same_state(&self, other: &Limiter) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn spec(&self) -> &LimitSpec {
        &self.inner.spec
    }

    /// The shared table (its size, key count and overflow count).
    pub fn table(&self) -> &Table {
        &self.inner.table
    }

    /// Heap bytes of this limit's state: fixed at construction.
    pub fn heap_bytes(&self) -> usize {
        self.inner.table.heap_bytes()
    }

    /// Decides one request of `key` at `now_ms` and records it if admitted.
    pub fn check(&self, key: &[u8], now_ms: u64) -> Decision {
        let inner = &*self.inner;
        let hash = inner.table.hash(key);
        // The lock-free path for a key already in the table.
        if let Some(slot) = inner.table.find(hash) {
            if let Some(decision) = inner.decide(&slot, now_ms) {
                return decision;
            }
        }
        // A new key, or one being re-keyed under us: under the shard lock no slot of the
        // shard changes hands, so the update below cannot be overtaken by a re-keying.
        let guard = inner.table.lock(hash);
        loop {
            match inner
                .table
                .find_or_insert(&guard, hash, now_ms, &inner.rule)
            {
                Found::Slot(slot) => {
                    if let Some(decision) = inner.decide(&slot, now_ms) {
                        return decision;
                    }
                }
                Found::Full { retry_at_ms } => {
                    let wait = retry_at_ms.saturating_sub(now_ms).max(1);
                    return Decision::Reject {
                        limit: inner.rule.limit(),
                        retry_after_ms: wait,
                        reset_ms: wait,
                    };
                }
            }
        }
    }

    /// Returns a delayed request's place (leaky bucket) when its caller gave up before
    /// `until_ms`. Exact when no request queued behind it since (the bucket is as if it had
    /// never come); otherwise its place stays taken (the bucket errs on the slow side) and
    /// this returns false.
    pub fn cancel(&self, ticket: &Ticket) -> bool {
        self.inner
            .table
            .state(ticket.slot)
            .compare_exchange(
                ticket.after,
                ticket.before,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    }
}

impl Inner {
    fn decide(&self, slot: &Slot<'_>, now_ms: u64) -> Option<Decision> {
        match &self.rule {
            Compiled::Fixed(r) => r.decide(slot, now_ms),
            Compiled::Log(r) => r.decide(slot, now_ms),
            Compiled::Counter(r) => r.decide(slot, now_ms),
            Compiled::Token(r) => r.decide(slot, now_ms),
            Compiled::Leaky(r) => r.decide(slot, now_ms),
        }
    }
}

impl Compiled {
    fn limit(&self) -> u64 {
        match self {
            Compiled::Fixed(r) => r.limit,
            Compiled::Log(r) => r.limit,
            Compiled::Counter(r) => r.limit,
            Compiled::Token(r) => r.burst,
            Compiled::Leaky(r) => r.burst,
        }
    }
}

impl global::Rule for Compiled {
    fn recovered_at(
        &self,
        payload: u64,
        extra: &[std::sync::atomic::AtomicU64],
        now_ms: u64,
    ) -> u64 {
        match self {
            Compiled::Fixed(r) => r.recovered_at(payload, extra, now_ms),
            Compiled::Log(r) => r.recovered_at(payload, extra, now_ms),
            Compiled::Counter(r) => r.recovered_at(payload, extra, now_ms),
            Compiled::Token(r) => r.recovered_at(payload, extra, now_ms),
            Compiled::Leaky(r) => r.recovered_at(payload, extra, now_ms),
        }
    }
}

/// A limit with its tiers (`tier = "jwt:plan"`, `tiers.NAME = {...}`): each tier is its own
/// limit with its own table; a key's tier value picks one, and a value that names no tier (or
/// no value) uses the base limit.
#[derive(Clone, Debug)]
pub struct Policy {
    base: Limiter,
    tiers: Vec<(Box<[u8]>, Limiter)>,
}

/// A limit and its tiers as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySpec {
    pub base: LimitSpec,
    pub tiers: Vec<(String, LimitSpec)>,
}

impl Policy {
    /// Builds the policy, carrying over the state of every limit of `previous` whose spec
    /// (and tier name) is unchanged.
    pub fn rebuild(spec: PolicySpec, previous: Option<&Policy>) -> Result<Policy, SpecError> {
        let base = Limiter::rebuild(spec.base, previous.map(|p| &p.base))?;
        let tiers = spec
            .tiers
            .into_iter()
            .map(|(name, spec)| {
                let old = previous.and_then(|p| p.tier(name.as_bytes()));
                Ok((name.into_bytes().into(), Limiter::rebuild(spec, old)?))
            })
            .collect::<Result<_, SpecError>>()?;
        Ok(Policy { base, tiers })
    }

    fn tier(&self, value: &[u8]) -> Option<&Limiter> {
        self.tiers
            .iter()
            .find(|(name, _)| &name[..] == value)
            .map(|(_, l)| l)
    }

    /// The limit for a key whose tier value is `tier`.
    pub fn limiter(&self, tier: Option<&[u8]>) -> &Limiter {
        tier.and_then(|t| self.tier(t)).unwrap_or(&self.base)
    }

    /// Decides one request of `key` in tier `tier`.
    pub fn check(&self, tier: Option<&[u8]>, key: &[u8], now_ms: u64) -> Decision {
        self.limiter(tier).check(key, now_ms)
    }

    /// Every limit of the policy: the base, then the tiers.
    pub fn limiters(&self) -> impl Iterator<Item = &Limiter> {
        std::iter::once(&self.base).chain(self.tiers.iter().map(|(_, l)| l))
    }
}

#[cfg(test)]
mod tests;
