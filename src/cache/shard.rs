//! [`Shard`]: one worker's stored responses, bounded in bytes (quick_cache's `unsync` cache,
//! weighted by [`Entry::weight`], so `max_bytes_per_worker` holds whatever the mix of sizes),
//! and its coalescing table ([`Flight`]): the misses for one key that one request is already
//! fetching wait for it instead of going upstream too.
//!
//! A response with a `Vary` is stored under its variant key (the request's values of those
//! fields), with a marker under the URL's primary key naming the fields, so several
//! variants of a URL live side by side and a lookup needs no more than two probes.
//!
//! Single-threaded by design (thread-per-core): nothing here is shared or locked; cross-core
//! purges arrive as generations ([`super::purge::Rules`]).

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use quick_cache::unsync::{Cache, DefaultLifecycle};
use quick_cache::Weighter;

use super::entry::Entry;
use super::purge::Rules;
use super::rules::{Key, State};

/// What the shard holds under a key.
#[derive(Clone)]
enum Slot {
    Entry(Rc<Entry>),
    /// The URL's responses vary on these request fields (lower-case, sorted): its entries
    /// are under the variant keys.
    Vary {
        names: Rc<[String]>,
        generation: u64,
    },
}

#[derive(Clone, Copy)]
struct Weigh;

impl Weighter<Key, Slot> for Weigh {
    fn weight(&self, key: &Key, slot: &Slot) -> u64 {
        key.0.len() as u64
            + match slot {
                Slot::Entry(e) => e.weight(),
                Slot::Vary { names, .. } => {
                    64 + names.iter().map(|n| n.len() as u64 + 24).sum::<u64>()
                }
            }
    }
}

/// A stored response found for a request.
pub struct Found {
    pub entry: Rc<Entry>,
    /// Its current age, seconds (RFC 9111 §4.2.3): the `Age` it is served with.
    pub age: u64,
    /// Fresh, or stale within one of its windows (an expired entry is not found).
    pub state: State,
}

pub struct Shard {
    map: Cache<Key, Slot, Weigh, RandomState, DefaultLifecycle<Key, Slot>>,
    flights: HashMap<Key, Rc<Flight>>,
    /// The purge epoch of the last sweep.
    swept: u64,
}

impl Shard {
    /// A shard of at most `capacity` bytes.
    pub fn new(capacity: u64) -> Shard {
        Shard {
            map: Cache::with(
                (capacity / 4096).clamp(16, 1 << 20) as usize,
                capacity,
                Weigh,
                RandomState::new(),
                DefaultLifecycle::default(),
            ),
            flights: HashMap::new(),
            swept: 0,
        }
    }

    pub fn capacity(&self) -> u64 {
        self.map.capacity()
    }

    /// A reload changed `max_bytes_per_worker`: the shard shrinks (evicting) or grows.
    pub fn set_capacity(&mut self, capacity: u64) {
        self.map.set_capacity(capacity);
    }

    /// The entry for a request whose primary key is `primary`, if one of generation
    /// `generation` can still serve at `now` (Unix seconds). `variant` gives the request's
    /// key for a URL whose responses vary on the fields it is handed. Dead entries met on
    /// the way (purged, expired) are dropped.
    pub fn find(
        &mut self,
        primary: &Key,
        variant: impl FnOnce(&[String]) -> Key,
        generation: u64,
        now: u64,
    ) -> Option<Found> {
        let (key, entry) = match self.map.get(primary)?.clone() {
            Slot::Entry(e) => (None, e),
            Slot::Vary {
                names,
                generation: g,
            } => {
                if g != generation {
                    return None;
                }
                let key = variant(&names);
                match self.map.get(&key)? {
                    Slot::Entry(e) => (Some(key), e.clone()),
                    Slot::Vary { .. } => return None,
                }
            }
        };
        // Another generation: purged (the sweep drops it), or newer than the caller's
        // (a request that began before a purge): not the caller's either way.
        if entry.generation != generation {
            return None;
        }
        let age = entry.age.current_age(now);
        let state = entry.freshness.state(age);
        if state == State::Expired {
            self.map.remove(key.as_ref().unwrap_or(primary));
            return None;
        }
        Some(Found { entry, age, state })
    }

    /// Stores `entry` for a request whose primary key is `primary`; `variant` is its key
    /// when the response varies (`entry.vary` not empty), computed from the request's fields.
    pub fn store(&mut self, primary: Key, variant: Option<Key>, entry: Entry) {
        match variant {
            None => self.map.insert(primary, Slot::Entry(Rc::new(entry))),
            Some(key) => {
                let marker = Slot::Vary {
                    names: entry.vary.clone().into(),
                    generation: entry.generation,
                };
                self.map.insert(primary, marker);
                self.map.insert(key, Slot::Entry(Rc::new(entry)));
            }
        }
    }

    /// Drops every entry of a purged generation, once per purge epoch (a purge elsewhere
    /// made them invisible already; this gives their bytes back).
    pub fn sweep(&mut self, rules: &Rules) {
        let epoch = rules.epoch();
        if epoch == self.swept {
            return;
        }
        self.swept = epoch;
        self.map.retain(|_, slot| {
            let generation = match slot {
                Slot::Entry(e) => e.generation,
                Slot::Vary { generation, .. } => *generation,
            };
            rules.is_live(generation)
        });
    }

    /// Slots held (entries and variant markers).
    pub fn entries(&self) -> usize {
        self.map.len()
    }

    /// Bytes held, as weighed: never more than the capacity.
    pub fn bytes(&self) -> u64 {
        self.map.weight()
    }

    /// The fetch in flight for `primary` in purge generation `generation`, if a request is
    /// already getting it (a fetch begun before a purge stores nothing a later request may
    /// use: it is not waited for).
    pub fn flight(&mut self, primary: &Key, generation: u64) -> Option<Rc<Flight>> {
        let f = self.flights.get(primary)?;
        if f.done.get() {
            self.flights.remove(primary);
            return None;
        }
        (f.generation == generation).then(|| f.clone())
    }

    /// Makes the caller the fetcher of `primary`: later misses wait for its [`Leader`] to be
    /// dropped (stored or not).
    pub fn lead(shard: &Rc<RefCell<Shard>>, primary: Key, generation: u64) -> Leader {
        let flight = Rc::new(Flight {
            generation,
            ..Flight::default()
        });
        shard
            .borrow_mut()
            .flights
            .insert(primary.clone(), flight.clone());
        Leader {
            shard: shard.clone(),
            key: primary,
            flight,
        }
    }
}

/// A fetch others may wait for.
#[derive(Default)]
pub struct Flight {
    /// The purge generation of the fetch's request.
    generation: u64,
    done: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Flight {
    /// Resolves when the fetch ended (its response stored, or not).
    pub fn done(self: &Rc<Self>) -> Done {
        Done(self.clone())
    }

    fn finish(&self) {
        self.done.set(true);
        for w in self.waiters.take() {
            w.wake();
        }
    }
}

/// See [`Flight::done`].
pub struct Done(Rc<Flight>);

impl Future for Done {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.done.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.0.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The one request fetching a key: dropped (whatever became of its response), it releases
/// the waiters, who look the key up again.
pub struct Leader {
    shard: Rc<RefCell<Shard>>,
    key: Key,
    flight: Rc<Flight>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Borrowed elsewhere (never across an await): the finished flight is dropped by the
        // next lookup of its key instead.
        if let Ok(mut shard) = self.shard.try_borrow_mut() {
            if shard
                .flights
                .get(&self.key)
                .is_some_and(|f| Rc::ptr_eq(f, &self.flight))
            {
                shard.flights.remove(&self.key);
            }
        }
        self.flight.finish();
    }
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leader")
    }
}
