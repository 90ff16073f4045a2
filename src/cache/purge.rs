//! Purging, across cores, without a lock: each cache rule has a purge generation, an atomic
//! word in [`Rules`] shared by every worker. An entry records the generation its request saw
//! when it began; a lookup serves it only while the rule still has that generation. A purge
//! (admin `DELETE /cache`, or a successful `invalidate_on` request) stores a new generation:
//! every worker's next lookup misses, with nothing sent between threads. Each worker then
//! drops the dead entries from its shard at its next sweep ([`Rules::epoch`] says one is due).
//!
//! Generations are unique in the process ([`next_generation`]), so an entry of a rule that a
//! reload changed (a new [`RuleState`]) can never match the new rule's generation; an
//! unchanged rule keeps its state and its entries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::model::{self, CacheRuleId, Invalidation, PathSeg};

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// A generation no other rule state or purge has had.
pub fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// One rule's cross-core state.
#[derive(Debug)]
pub struct RuleState {
    /// The rule as compiled, less its location: equal specs keep their state across reloads.
    spec: model::CacheRule,
    generation: AtomicU64,
}

/// Every rule's state, indexed like `Cache::rules`; a reload carries over unchanged rules'.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Arc<RuleState>>,
    /// Bumped by every purge: a worker sweeps its shard when it sees a new value.
    epoch: Arc<AtomicU64>,
}

impl Rules {
    /// The states for `cache`'s rules; a rule equal to one of `previous` (same name and
    /// settings) keeps its state, so its stored entries stay valid.
    pub fn compile(cache: Option<&model::Cache>, previous: Option<&Rules>) -> Rules {
        let rules = cache
            .map(|c| &c.rules[..])
            .unwrap_or_default()
            .iter()
            .map(|rule| {
                let spec = model::CacheRule {
                    location: model::Location::default(),
                    ..rule.clone()
                };
                previous
                    .and_then(|p| p.rules.iter().find(|s| s.spec == spec))
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(RuleState {
                            spec,
                            generation: AtomicU64::new(next_generation()),
                        })
                    })
            })
            .collect();
        Rules {
            rules,
            epoch: previous.map_or_else(Default::default, |p| p.epoch.clone()),
        }
    }

    /// Rule `id`'s current generation.
    #[inline]
    pub fn generation(&self, id: CacheRuleId) -> u64 {
        self.rules[id].generation.load(Ordering::Acquire)
    }

    /// Makes every entry of rule `id` invisible on every worker.
    pub fn purge(&self, id: CacheRuleId) {
        self.rules[id]
            .generation
            .store(next_generation(), Ordering::Release);
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// Purges every rule.
    pub fn purge_all(&self) {
        for id in 0..self.rules.len() {
            self.purge(id);
        }
    }

    /// Counts purges: a worker whose last sweep saw another value sweeps its shard.
    #[inline]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether `generation` is the current one of some rule (a live entry's).
    pub fn is_live(&self, generation: u64) -> bool {
        self.rules
            .iter()
            .any(|r| r.generation.load(Ordering::Acquire) == generation)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Whether a request (`method`, its normalised path) is one of `inv`'s: the method equal,
/// each literal segment equal, `:name` any one non-empty segment, a final `*` any rest.
pub fn matches(inv: &Invalidation, method: &str, path: &[u8]) -> bool {
    if !inv.method.eq_ignore_ascii_case(method) {
        return false;
    }
    let Some(rest) = path.strip_prefix(b"/") else {
        return false;
    };
    let mut parts = rest.split(|&b| b == b'/');
    for seg in &inv.segments {
        match seg {
            PathSeg::Rest => return true,
            PathSeg::Param => match parts.next() {
                Some(p) if !p.is_empty() => {}
                _ => return false,
            },
            PathSeg::Literal(l) => match parts.next() {
                Some(p) if p == l.as_bytes() => {}
                _ => return false,
            },
        }
    }
    parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(method: &str, segments: Vec<PathSeg>) -> Invalidation {
        Invalidation {
            method: method.into(),
            segments,
            text: String::new(),
        }
    }

    fn lit(s: &str) -> PathSeg {
        PathSeg::Literal(s.into())
    }

    /// Literal segments match exactly, `:name` one segment, a final `*` anything below.
    #[test]
    fn invalidation_patterns_match_segment_by_segment() {
        let exact = inv("POST", vec![lit("api"), lit("categories")]);
        assert!(matches(&exact, "POST", b"/api/categories"));
        assert!(matches(&exact, "post", b"/api/categories"));
        assert!(!matches(&exact, "PUT", b"/api/categories"));
        assert!(!matches(&exact, "POST", b"/api/categories/1"));
        assert!(!matches(&exact, "POST", b"/api/categorie"));
        assert!(!matches(&exact, "POST", b"/api"));
        let star = inv("PUT", vec![lit("api"), lit("categories"), PathSeg::Rest]);
        assert!(matches(&star, "PUT", b"/api/categories/7"));
        assert!(matches(&star, "PUT", b"/api/categories/7/x"));
        assert!(matches(&star, "PUT", b"/api/categories"));
        assert!(!matches(&star, "PUT", b"/api/other/7"));
        let param = inv("DELETE", vec![lit("a"), PathSeg::Param, lit("b")]);
        assert!(matches(&param, "DELETE", b"/a/1/b"));
        assert!(!matches(&param, "DELETE", b"/a//b"));
        assert!(!matches(&param, "DELETE", b"/a/1/c"));
        let root = inv("POST", vec![lit("")]);
        assert!(matches(&root, "POST", b"/"));
        assert!(!matches(&root, "POST", b"/x"));
    }

    fn cache(ttl: u64) -> model::Cache {
        model::Cache {
            max_bytes_per_worker: 1 << 20,
            max_object: 1 << 10,
            rules: vec![model::CacheRule {
                name: "c".into(),
                ttl,
                vary: vec![],
                stale_while_revalidate: 0,
                stale_if_error: 0,
                invalidate_on: vec![],
                per_user: false,
                location: model::Location::default(),
            }],
        }
    }

    /// An unchanged rule keeps its generation across a reload (its entries stay valid); a
    /// changed one gets a new one; a purge changes it and moves the epoch.
    #[test]
    fn reload_keeps_an_unchanged_rules_generation_and_purge_moves_it() {
        let first = Rules::compile(Some(&cache(60)), None);
        let g = first.generation(0);
        let same = Rules::compile(Some(&cache(60)), Some(&first));
        assert_eq!(same.generation(0), g);
        let changed = Rules::compile(Some(&cache(61)), Some(&same));
        assert_ne!(changed.generation(0), g);
        let epoch = same.epoch();
        same.purge(0);
        assert_ne!(same.generation(0), g);
        assert!(
            !first.is_live(g),
            "the state is shared: the old entry is dead"
        );
        assert_eq!(
            changed.epoch(),
            epoch + 1,
            "the epoch is shared across reloads"
        );
    }
}
