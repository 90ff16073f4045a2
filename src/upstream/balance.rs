//! Endpoint selection for one upstream, one worker.
//!
//! Owns the per-worker balancing state: smooth weighted round robin (nginx's algorithm: every
//! pick adds each endpoint's weight to its current weight, takes the largest and subtracts the
//! total), least request by power of two choices over this worker's in-flight counts, and a
//! consistent-hash ring for `hash:header:NAME` / `hash:ip`.
//!
//! Every pick takes the set of endpoints already tried for this request, so a retry goes to
//! another endpoint whenever one exists. The ring hash is FNV-1a with a splitmix finaliser:
//! fixed, so a key maps to the same endpoint on every worker and across restarts.

use crate::config::model::{Balance, Endpoint};

/// The most endpoints one upstream may have (defined with the model, which every source of
/// endpoints is held to), so every endpoint index fits an [`EndpointSet`].
pub use crate::config::model::MAX_ENDPOINTS;

const SET_WORDS: usize = MAX_ENDPOINTS / 64;

/// A set of endpoint indices of one upstream (bit i = endpoint i), for every index below
/// [`MAX_ENDPOINTS`]: endpoints out of rotation, or already tried by one request. A fixed
/// 128-byte bitset rather than an inline-or-heap one: it stays `Copy` and allocation-free, and
/// the few word operations a request does on it (one union, one emptiness test) cost nothing
/// next to a proxied exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointSet([u64; SET_WORDS]);

/// The endpoints one request has tried.
pub type Tried = EndpointSet;

impl EndpointSet {
    /// Adds endpoint `i`. Indices at or above [`MAX_ENDPOINTS`] cannot occur (the cap is
    /// enforced wherever endpoints are added) and are ignored rather than aliased.
    #[inline]
    pub fn add(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    pub fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
    /// These endpoints plus those of `mask`.
    #[inline]
    pub fn with_mask(self, mask: &EndpointSet) -> EndpointSet {
        let mut out = self;
        for (o, m) in out.0.iter_mut().zip(&mask.0) {
            *o |= m;
        }
        out
    }
}

/// What a request offers the balancer: the hash key when the policy needs one.
#[derive(Debug, Clone, Copy)]
pub enum Key {
    None,
    Hash(u64),
}

pub struct Balancer {
    kind: Kind,
    weights: Vec<i64>,
    /// In-flight requests per endpoint on this worker (least_request; kept for all kinds so
    /// the admin view can show them later).
    inflight: Vec<u32>,
    rng: u64,
}

enum Kind {
    RoundRobin {
        current: Vec<i64>,
        total: i64,
    },
    LeastRequest,
    Hash {
        ring: Vec<(u64, u32)>,
        fallback: Box<Kind>,
    },
}

/// Virtual nodes per unit of weight on the hash ring: enough for an even spread (±10% with a
/// handful of endpoints) while the ring of a 100-endpoint upstream stays a few KiB.
const VNODES_PER_WEIGHT: u32 = 100;

impl Balancer {
    pub fn new(policy: &Balance, endpoints: &[Endpoint], seed: u64) -> Self {
        let weights: Vec<i64> = endpoints.iter().map(|e| e.weight.max(1) as i64).collect();
        let rr = || Kind::RoundRobin {
            current: vec![0; endpoints.len()],
            total: weights.iter().sum(),
        };
        let kind = match policy {
            Balance::RoundRobin => rr(),
            Balance::LeastRequest => Kind::LeastRequest,
            Balance::HashHeader(_) | Balance::HashIp => Kind::Hash {
                ring: build_ring(endpoints),
                fallback: Box::new(rr()),
            },
        };
        Balancer {
            kind,
            inflight: vec![0; endpoints.len()],
            weights,
            rng: seed | 1,
        }
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Picks an endpoint not in `tried` (or any endpoint when all were tried).
    pub fn pick(&mut self, key: Key, tried: Tried) -> usize {
        let n = self.weights.len();
        debug_assert!(n > 0);
        if n == 1 {
            return 0;
        }
        let all_tried = (0..n).all(|i| tried.contains(i));
        let tried = if all_tried { Tried::default() } else { tried };
        let rng = next_rand(&mut self.rng);
        pick_kind(
            &mut self.kind,
            &self.weights,
            &self.inflight,
            key,
            tried,
            rng,
        )
    }

    pub fn start(&mut self, i: usize) {
        self.inflight[i] += 1;
    }

    pub fn finish(&mut self, i: usize) {
        self.inflight[i] = self.inflight[i].saturating_sub(1);
    }

    pub fn inflight(&self, i: usize) -> u32 {
        self.inflight[i]
    }
}

fn pick_kind(
    kind: &mut Kind,
    weights: &[i64],
    inflight: &[u32],
    key: Key,
    tried: Tried,
    rng: u64,
) -> usize {
    let n = weights.len();
    match kind {
        Kind::RoundRobin { current, total } => {
            let mut best = usize::MAX;
            let mut excluded = 0;
            for i in 0..n {
                if tried.contains(i) {
                    excluded += weights[i];
                    continue;
                }
                current[i] += weights[i];
                if best == usize::MAX || current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= *total - excluded;
            best
        }
        Kind::LeastRequest => {
            // Power of two choices: two distinct random candidates among the untried, the one
            // with fewer in-flight requests relative to its weight wins.
            let free: smallvec::SmallVec<[usize; 16]> =
                (0..n).filter(|&i| !tried.contains(i)).collect();
            if free.len() == 1 {
                return free[0];
            }
            let a = free[(rng % free.len() as u64) as usize];
            let mut b = free[((rng >> 32) % (free.len() as u64 - 1)) as usize];
            if b == a {
                b = free[free.len() - 1];
            }
            // Compare inflight/weight without division.
            let la = inflight[a] as i64 * weights[b];
            let lb = inflight[b] as i64 * weights[a];
            if la < lb || (la == lb && weights[a] >= weights[b]) {
                a
            } else {
                b
            }
        }
        Kind::Hash { ring, fallback } => match key {
            Key::Hash(h) => {
                let start = ring.partition_point(|&(p, _)| p < h);
                for step in 0..ring.len() {
                    let (_, ep) = ring[(start + step) % ring.len()];
                    if !tried.contains(ep as usize) {
                        return ep as usize;
                    }
                }
                0
            }
            // No key on this request (header absent): spread like round robin.
            Key::None => pick_kind(fallback, weights, inflight, key, tried, rng),
        },
    }
}

fn build_ring(endpoints: &[Endpoint]) -> Vec<(u64, u32)> {
    let mut ring = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let key = ep.ring_key();
        // Config and admin registrations cap weights at 1000: at most 100,000 points here.
        for v in 0..ep.weight.max(1).saturating_mul(VNODES_PER_WEIGHT) {
            // The point depends on the endpoint's URL, not its index, so adding or removing an
            // endpoint only moves the keys next to its own points.
            let mut h = Fnv::new();
            h.write(key.as_bytes());
            h.write(&v.to_le_bytes());
            ring.push((h.finish(), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// FNV-1a 64 with a splitmix64 finaliser: stable across processes and releases.
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    pub fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.write(bytes);
    h.finish()
}

/// wyrand: a fast per-worker generator for P2C choices (not for anything secret).
pub fn next_rand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0xa076_1d64_78bd_642f);
    let t = (*state as u128).wrapping_mul((*state ^ 0xe703_7ed1_a0b4_28db) as u128);
    ((t >> 64) ^ t) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(weights: &[u32]) -> Vec<Endpoint> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Endpoint {
                url: format!("http://127.0.0.1:{}", 9000 + i),
                addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                authority: format!("127.0.0.1:{}", 9000 + i),
                weight: w,
                source: crate::config::model::EndpointSource::Config,
                dns: None,
                metadata: None,
                tls_name: None,
            })
            .collect()
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves_by_weight() {
        let mut b = Balancer::new(&Balance::RoundRobin, &eps(&[5, 1, 1]), 1);
        let picks: Vec<usize> = (0..7)
            .map(|_| b.pick(Key::None, Tried::default()))
            .collect();
        // nginx's documented sequence for weights 5,1,1: a a b a c a a
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_weights_one_to_three() {
        let mut b = Balancer::new(&Balance::RoundRobin, &eps(&[1, 3]), 1);
        let mut counts = [0; 2];
        for _ in 0..8 {
            counts[b.pick(Key::None, Tried::default())] += 1;
        }
        assert_eq!(counts, [2, 6]);
    }

    #[test]
    fn retry_avoids_tried_endpoint() {
        for policy in [Balance::RoundRobin, Balance::LeastRequest, Balance::HashIp] {
            let mut b = Balancer::new(&policy, &eps(&[1, 1, 1]), 7);
            for k in 0..50u64 {
                let mut tried = Tried::default();
                let first = b.pick(Key::Hash(k * 7919), tried);
                tried.add(first);
                let second = b.pick(Key::Hash(k * 7919), tried);
                assert_ne!(first, second, "{policy:?}");
                tried.add(second);
                let third = b.pick(Key::Hash(k * 7919), tried);
                assert!(third != first && third != second, "{policy:?}");
            }
        }
    }

    #[test]
    fn least_request_prefers_idle_endpoint() {
        let mut b = Balancer::new(&Balance::LeastRequest, &eps(&[1, 1]), 3);
        b.start(0);
        b.start(0);
        for _ in 0..20 {
            assert_eq!(b.pick(Key::None, Tried::default()), 1);
        }
    }

    #[test]
    fn hash_is_stable_and_spread() {
        let e = eps(&[1, 1, 1, 1]);
        let mut a = Balancer::new(&Balance::HashIp, &e, 1);
        let mut b = Balancer::new(&Balance::HashIp, &e, 99);
        let mut counts = [0; 4];
        for k in 0..4000u32 {
            let key = Key::Hash(hash_key(&k.to_le_bytes()));
            let x = a.pick(key, Tried::default());
            assert_eq!(x, b.pick(key, Tried::default()));
            counts[x] += 1;
        }
        for c in counts {
            assert!((700..1300).contains(&c), "{counts:?}");
        }
    }

    /// Retries past endpoint 64 used to alias: trying endpoint 3 marked 67 as tried too.
    #[test]
    fn tried_past_64_endpoints_used_to_alias() {
        let mut t = Tried::default();
        t.add(3);
        assert!(t.contains(3) && !t.contains(67) && !t.contains(131));
        t.add(MAX_ENDPOINTS - 1);
        assert!(t.contains(MAX_ENDPOINTS - 1) && t.count() == 2);
        // Beyond the cap nothing is added or found (never aliased onto a real endpoint).
        t.add(MAX_ENDPOINTS + 3);
        assert!(!t.contains(MAX_ENDPOINTS + 3) && t.count() == 2);
        let mut out = EndpointSet::default();
        out.add(200);
        let avoid = t.with_mask(&out);
        assert!(avoid.contains(200) && avoid.contains(3) && avoid.count() == 3);
        // A fixed 1,024-bit set: 128 bytes, copied and compared by the request path.
        assert_eq!(std::mem::size_of::<EndpointSet>(), 128);
        // 200 endpoints, 3 of them tried: round robin never picks a tried one.
        let mut b = Balancer::new(&Balance::RoundRobin, &eps(&[1; 200]), 1);
        let mut tried = Tried::default();
        for i in [3, 67, 131] {
            tried.add(i);
        }
        let picks: std::collections::HashSet<usize> =
            (0..197).map(|_| b.pick(Key::None, tried)).collect();
        assert_eq!(picks.len(), 197);
        assert!(!picks.contains(&3) && !picks.contains(&67) && !picks.contains(&131));
    }

    #[test]
    fn all_tried_falls_back_to_any() {
        let mut b = Balancer::new(&Balance::RoundRobin, &eps(&[1, 1]), 1);
        let mut t = Tried::default();
        t.add(0);
        t.add(1);
        assert!(b.pick(Key::None, t) < 2);
    }
}
