//! The cross-core scheme: one sharded, fixed-size, open-addressing table of per-key atomic
//! state, shared by every worker, so a limit is enforced once for the whole process and is
//! exact whatever the number of workers.
//!
//! Design (chosen over leasing token batches to workers, which must either strand tokens on
//! idle workers or over-admit by the batches in flight, and whose error grows with the number
//! of workers):
//! - A key's whole rate state is ONE packed `u64` (a log keeps its timestamps beside it, but
//!   its admissions are still decided by one word, its head). A request is one
//!   compare-exchange loop on that word: decide from the word, CAS the next word in. Two
//!   workers can never both take the last unit, so admissions never exceed the algorithm's
//!   own bound at all (the 1% / 1 request allowance of BEHAVIOR.md is not used). A rejection
//!   writes nothing: a key over its limit is a shared read-only cache line, and hammering it
//!   costs loads only.
//! - Lookup of an existing key is lock-free: hash the key's bytes (SipHash with a random key
//!   per table), scan a window of [`PROBE`] slots for the fingerprint, load the state word and
//!   re-check the tag (a seqlock-style check against a concurrent re-keying). Inserting a NEW
//!   key, or re-using a slot for one, takes the short lock of the key's shard (a shard is a
//!   run of `SHARD_SLOTS` slots holding whole probe windows): it makes duplicate slots for
//!   one key impossible. The request path of a known key takes no lock.
//! - Contention trade-off: one hot key across N cores is one contended cache line; each
//!   admission costs a CAS that may retry under contention (lock-free: some worker always
//!   wins). That is the price of exactness; the rejections that follow once a key is over its
//!   limit are loads only. Slots are 16 bytes (4 to a line), so two hot keys that land on one
//!   line contend as one; padding slots to a line would quadruple memory.
//!
//! State word: bit 63 `FROZEN`, bits 55..63 a generation, bits 0..55 the algorithm's payload.
//! A slot is re-used for a new key only when its state has fully recovered: from then on it
//! decides exactly as a fresh key's would, so the new key inherits it as is and re-use loses
//! nothing (a reading from before the recovery, by a late worker, finds it stricter than
//! fresh, never looser). Re-use, under the shard lock: CAS the word to FROZEN (fails if the
//! owner just spent from it: the slot is kept), write the new tag, then publish the word again
//! with the generation bumped. An accessor that raced it sees FROZEN, a generation it did not
//! start from, or a new tag; it then redoes the lookup under the shard lock, so it never spins
//! on a pre-empted re-keyer. A CAS that began on the old key's word cannot land on the new
//! key's: the generation differs (it would take 256 re-keyings of that one slot while one CAS
//! loop is pre-empted, and an equal payload, to confuse it).
//!
//! Identity is the key's 64-bit keyed hash: two keys with the same hash share one state (both
//! are limited together, never more than the limit); with one million live keys the chance
//! that any two collide is about 3e-8.
//!
//! Memory is fixed when the table is built and never grows, whatever the number of distinct
//! keys: [`Table::bytes_for`] bytes for `max_keys` keys (slots = `max_keys * 5/4` rounded up
//! to a power of two, 8 bytes of tag and 8 of state each, plus a log's `done` word and
//! timestamps; one lock per 1024 slots). When a new key finds no empty or recovered slot
//! in its window, the table does NOT evict a key that is still in debt (that would reset its
//! count: over-admission); the new key is rejected until a slot in its window recovers, and
//! [`Table::overflows`] counts it. So a flood of distinct keys can fill the table, but it can
//! never push an active client out of it or make any key's limit looser: it errs on the side
//! of rejecting keys the table has no room for.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Slots scanned for a key: its home slot and the 15 after it (four cache lines of 16-byte
/// slots), wrapping inside its shard.
pub const PROBE: usize = 16;
/// Slots per shard (one insert lock each), for tables at least that big.
const SHARD_SLOTS: usize = 1024;
/// The word of a slot being re-keyed; see the module doc.
pub(super) const FROZEN: u64 = 1 << 63;
const GEN_SHIFT: u32 = 55;
const GEN_MASK: u64 = 0xff << GEN_SHIFT;
/// Bits of a state word an algorithm may use.
pub(super) const PAYLOAD_BITS: u32 = 55;
pub(super) const PAYLOAD_MASK: u64 = (1 << PAYLOAD_BITS) - 1;
/// The tag of a slot that never held a key.
const EMPTY: u64 = 0;

/// What an algorithm tells the table about its slots.
pub(super) trait Rule {
    /// The time (ms) at which a slot with this payload is fully recovered, i.e. would decide
    /// exactly as a fresh slot: at or after it, the slot may be handed to another key.
    fn recovered_at(&self, payload: u64, extra: &[AtomicU64], now_ms: u64) -> u64;
}

/// One step of an update: write a new payload (admission), or decide without writing.
pub(super) enum Step<T> {
    Write(u64, T),
    Keep(T),
}

/// A key's slot, as found: its state word, its extra words, and the word as first loaded.
pub(super) struct Slot<'a> {
    pub index: usize,
    pub state: &'a AtomicU64,
    pub extra: &'a [AtomicU64],
    first: u64,
}

impl Slot<'_> {
    /// Runs `step` on the payload until its write lands (a CAS loop) or it decides without
    /// writing. `None`: the slot was re-keyed under us; redo the lookup under the shard lock.
    /// `step` gets the full word too (tickets restore it exactly).
    pub fn update<T>(&self, mut step: impl FnMut(u64) -> Step<T>) -> Option<(T, u64, u64)> {
        let mut cur = self.first;
        if cur & FROZEN != 0 {
            return None;
        }
        let gen = cur & GEN_MASK;
        loop {
            match step(cur & PAYLOAD_MASK) {
                Step::Keep(t) => return Some((t, cur, cur)),
                Step::Write(payload, t) => {
                    debug_assert!(payload <= PAYLOAD_MASK);
                    let next = gen | payload;
                    match self.state.compare_exchange_weak(
                        cur,
                        next,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Some((t, cur, next)),
                        Err(seen) if seen & (FROZEN | GEN_MASK) == gen => cur = seen,
                        Err(_) => return None,
                    }
                }
            }
        }
    }
}

/// Where a key stands in the table.
pub(super) enum Found<'a> {
    Slot(Slot<'a>),
    /// No empty or recovered slot in the key's window: rejected until `retry_at_ms`.
    Full {
        retry_at_ms: u64,
    },
}

/// The shared table of one limit (one per tier). See the module doc.
pub struct Table {
    words: Box<[AtomicU64]>,
    stride: usize,
    shard_slots: usize,
    locks: Box<[Mutex<()>]>,
    hasher: RandomState,
    overflows: AtomicU64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("slots", &self.slots())
            .field("bytes", &self.heap_bytes())
            .finish()
    }
}

impl Table {
    /// Slots for `max_keys` keys: room for 25% slack so windows rarely fill before the table
    /// does, rounded up to a power of two, never fewer than one probe window.
    pub fn slots_for(max_keys: usize) -> usize {
        max_keys
            .saturating_add(max_keys / 4)
            .max(PROBE)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
    }

    /// The heap bytes of a table for `max_keys` keys with `extra_words` per slot: fixed at
    /// construction, whatever the number of distinct keys seen afterwards.
    pub fn bytes_for(max_keys: usize, extra_words: usize) -> usize {
        let slots = Self::slots_for(max_keys);
        let shards = slots / SHARD_SLOTS.min(slots);
        slots
            .saturating_mul((2 + extra_words) * 8)
            .saturating_add(shards * std::mem::size_of::<Mutex<()>>())
    }

    pub(super) fn new(max_keys: usize, extra_words: usize) -> Table {
        let slots = Self::slots_for(max_keys);
        let shard_slots = SHARD_SLOTS.min(slots);
        let stride = 2 + extra_words;
        Table {
            words: (0..slots * stride).map(|_| AtomicU64::new(0)).collect(),
            stride,
            shard_slots,
            locks: (0..slots / shard_slots).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
            overflows: AtomicU64::new(0),
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.words.len() / self.stride
    }

    /// Heap bytes held (slots and locks).
    pub fn heap_bytes(&self) -> usize {
        self.words.len() * 8 + self.locks.len() * std::mem::size_of::<Mutex<()>>()
    }

    /// Keys currently holding a slot (a scan: for tests and the admin API, not the request
    /// path).
    pub fn keys(&self) -> usize {
        (0..self.slots())
            .filter(|&i| self.tag(i).load(Ordering::Relaxed) != EMPTY)
            .count()
    }

    /// New keys rejected because their window had no free or recovered slot.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    pub(super) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn tag(&self, slot: usize) -> &AtomicU64 {
        &self.words[slot * self.stride]
    }

    pub(super) fn state(&self, slot: usize) -> &AtomicU64 {
        &self.words[slot * self.stride + 1]
    }

    fn extra(&self, slot: usize) -> &[AtomicU64] {
        let at = slot * self.stride + 2;
        &self.words[at..at + self.stride - 2]
    }

    /// The key's shard and the first slot of its window; the tag it is stored under.
    fn place(&self, hash: u64) -> (usize, usize, u64) {
        let shards = self.locks.len();
        let shard = ((hash >> 32) as usize) & (shards - 1);
        let home = (hash as usize) & (self.shard_slots - 1);
        (shard, home, hash.max(1))
    }

    fn window(&self, shard: usize, home: usize) -> impl Iterator<Item = usize> {
        let base = shard * self.shard_slots;
        let mask = self.shard_slots - 1;
        (0..PROBE.min(self.shard_slots)).map(move |i| base + ((home + i) & mask))
    }

    fn slot(&self, index: usize, first: u64) -> Slot<'_> {
        Slot {
            index,
            state: self.state(index),
            extra: self.extra(index),
            first,
        }
    }

    /// The key's slot, lock-free, if the key holds one and is not being re-keyed.
    pub(super) fn find(&self, hash: u64) -> Option<Slot<'_>> {
        let (shard, home, tag) = self.place(hash);
        for i in self.window(shard, home) {
            if self.tag(i).load(Ordering::Acquire) == tag {
                let first = self.state(i).load(Ordering::Acquire);
                // The state word was loaded after the tag; a re-keying between the two
                // publishes its new tag before its new word, so this catches it.
                if self.tag(i).load(Ordering::Acquire) != tag {
                    return None;
                }
                return Some(self.slot(i, first));
            }
        }
        None
    }

    /// Takes the key's shard lock: while it is held, no slot of the shard is re-keyed.
    pub(super) fn lock(&self, hash: u64) -> MutexGuard<'_, ()> {
        let (shard, _, _) = self.place(hash);
        // A panic while holding the lock leaves no half-done state (every write is an
        // atomic word), so a poisoned lock is still good.
        self.locks[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The key's slot, inserting it if needed. The caller holds the shard lock.
    pub(super) fn find_or_insert(
        &self,
        _guard: &MutexGuard<'_, ()>,
        hash: u64,
        now_ms: u64,
        rule: &impl Rule,
    ) -> Found<'_> {
        let (shard, home, tag) = self.place(hash);
        let mut empty = None;
        for i in self.window(shard, home) {
            match self.tag(i).load(Ordering::Acquire) {
                t if t == tag => {
                    let first = self.state(i).load(Ordering::Acquire);
                    return Found::Slot(self.slot(i, first));
                }
                EMPTY if empty.is_none() => empty = Some(i),
                _ => {}
            }
        }
        if let Some(i) = empty {
            let first = Self::rekeyed(self.state(i).load(Ordering::Acquire));
            self.state(i).store(first, Ordering::Release);
            self.tag(i).store(tag, Ordering::Release);
            return Found::Slot(self.slot(i, first));
        }
        // Re-use the recovered slot idle the longest. Its owner may spend from it between the
        // choice and the freeze: the freeze then fails and the choice is made again.
        let mut earliest = u64::MAX;
        for _ in 0..PROBE {
            earliest = u64::MAX;
            let mut victim = None;
            for i in self.window(shard, home) {
                let word = self.state(i).load(Ordering::Acquire);
                let at = rule.recovered_at(word & PAYLOAD_MASK, self.extra(i), now_ms);
                if at <= now_ms && victim.is_none_or(|(_, best, _)| at < best) {
                    victim = Some((i, at, word));
                }
                earliest = earliest.min(at);
            }
            let Some((i, _, word)) = victim else { break };
            if self
                .state(i)
                .compare_exchange(word, word | FROZEN, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            self.tag(i).store(tag, Ordering::Release);
            let first = Self::rekeyed(word);
            self.state(i).store(first, Ordering::Release);
            return Found::Slot(self.slot(i, first));
        }
        self.overflows.fetch_add(1, Ordering::Relaxed);
        Found::Full {
            retry_at_ms: earliest.max(now_ms + 1),
        }
    }

    /// The word a slot starts a new key with: the next generation, the same payload (a
    /// recovered payload decides as a fresh one for any reading at or after its recovery, and
    /// more strictly for a reading from before it), not frozen.
    fn rekeyed(old: u64) -> u64 {
        ((old & GEN_MASK).wrapping_add(1 << GEN_SHIFT) & GEN_MASK) | (old & PAYLOAD_MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule whose payload is a count of admissions, recovered only at 0.
    struct Count;

    impl Rule for Count {
        fn recovered_at(&self, payload: u64, _: &[AtomicU64], _: u64) -> u64 {
            if payload == 0 {
                0
            } else {
                u64::MAX
            }
        }
    }

    fn insert(table: &Table, hash: u64) -> Slot<'_> {
        let guard = table.lock(hash);
        match table.find_or_insert(&guard, hash, 0, &Count) {
            Found::Slot(slot) => slot,
            Found::Full { .. } => panic!("full"),
        }
    }

    fn spend(slot: &Slot<'_>) -> Option<u64> {
        slot.update(|n| Step::Write(n + 1, n + 1))
            .map(|(n, _, _)| n)
    }

    /// One 16-slot window: keys 1..=15 in debt, key 16 recovered.
    fn full_window() -> Table {
        let table = Table::new(1, 0);
        assert_eq!(table.slots(), PROBE);
        for hash in 1..=15 {
            spend(&insert(&table, hash)).unwrap();
        }
        insert(&table, 16);
        table
    }

    /// A worker that found a key's slot lock-free, then lost it to a re-keying before its CAS,
    /// does not spend from the new key's state: it is told to redo the lookup.
    #[test]
    fn spend_started_before_a_rekeying_does_not_land_on_the_new_key() {
        let table = full_window();
        let stale = table.find(16).unwrap();
        let new = insert(&table, 99);
        assert_eq!(
            new.index, stale.index,
            "the recovered slot is the one re-used"
        );
        assert_eq!(spend(&stale), None);
        assert_eq!(new.state.load(Ordering::Relaxed) & PAYLOAD_MASK, 0);
        assert!(table.find(16).is_none());
        assert_eq!(spend(&table.find(99).unwrap()), Some(1));
    }

    /// A slot caught mid-re-keying (frozen) sends the reader to the locked path.
    #[test]
    fn frozen_slot_is_not_spent_from() {
        let table = full_window();
        let slot = table.find(16).unwrap();
        let word = slot.state.load(Ordering::Relaxed);
        slot.state.store(word | FROZEN, Ordering::Relaxed);
        assert_eq!(spend(&table.find(16).unwrap()), None);
    }

    /// A key in debt keeps its slot: with no recovered slot in its window a new key is turned
    /// away (and told no time, since no slot there will recover on its own), and the key's
    /// count goes on.
    #[test]
    fn key_in_debt_is_never_rekeyed() {
        let table = full_window();
        spend(&table.find(16).unwrap()).unwrap();
        let guard = table.lock(99);
        assert!(matches!(
            table.find_or_insert(&guard, 99, 5, &Count),
            Found::Full {
                retry_at_ms: u64::MAX
            }
        ));
        drop(guard);
        assert_eq!(table.overflows(), 1);
        assert_eq!(table.keys(), 16);
        assert_eq!(spend(&table.find(16).unwrap()), Some(2));
    }

    /// Inserting a key that another worker inserted meanwhile finds it: one slot per key.
    #[test]
    fn a_key_never_gets_two_slots() {
        let table = Table::new(1, 0);
        let a = insert(&table, 7);
        let b = insert(&table, 7);
        assert_eq!(a.index, b.index);
        assert_eq!(table.keys(), 1);
    }
}
