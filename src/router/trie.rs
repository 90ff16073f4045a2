//! The compiled path trie: one node per distinct pattern prefix, walked once per lookup.
//!
//! Key types: [`TrieBuilder`] (mutable, used while compiling), [`Trie`] (flat arrays, read-only).
//!
//! The one thing to know: the walk is a depth-first search that at every node tries the literal
//! child, then the parameter child, then the prefix routes ending at the node, so candidates
//! come out in precedence order (literal > `:param` > end of pattern, segment by segment) and
//! the first whose predicates hold is the answer, with one exception: exact (`=`) routes beat
//! all others, and sit where the path ends, possibly after a prefix candidate in that order.
//! So after a prefix hit the walk goes on only into unexplored subtrees that hold exact routes
//! (`exact_below`), usually none. Each node sits at one depth and is reached by one chain of
//! edges, so a lookup visits a node at most once: the cost is bounded by the trie's size even
//! with backtracking, and is the path's depth in practice.
//!
//! A request path is split like a pattern: the bytes after the leading '/' split on '/', so
//! `/` is one empty segment and `/a/` is `a` then an empty segment. Only an exact pattern's
//! trailing '/' becomes an empty literal edge; a parameter never matches an empty segment.

use std::collections::BTreeMap;

use super::pattern::Segment;

/// "No node" in [`Node::param`].
const NONE: u32 = u32::MAX;

/// A trie node. Hot: one is read per path segment, so it stays small (asserted below).
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Literal children: `edges[edges..edges + edges_len]`, sorted by (length, bytes).
    edges: u32,
    edges_len: u32,
    /// The `:param` child, or [`NONE`].
    param: u32,
    /// Routes whose pattern ends here, best first: `exact_len` exact ones, then `prefix_len`
    /// prefix ones, from `cands[cands..]`.
    cands: u32,
    exact_len: u32,
    prefix_len: u32,
    /// This node or a descendant has exact routes.
    exact_below: bool,
}

const _: () = assert!(std::mem::size_of::<Node>() == 28);

/// A literal child edge; the label is `labels[label..label + label_len]`.
///
/// Edges sort by (length, [`head`] of the label, rest of the label): a probe of the binary
/// search is two integer compares, and reads label bytes only for labels longer than 8 bytes
/// whose first 8 bytes equal the segment's.
#[derive(Debug, Clone, Copy)]
struct Edge {
    head: u64,
    label_len: u32,
    label: u32,
    child: u32,
}

const _: () = assert!(std::mem::size_of::<Edge>() == 24);

/// The first 8 bytes of `s`, big-endian and zero-padded: for strings of equal length,
/// comparing heads orders them like comparing their first 8 bytes.
fn head(s: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = s.len().min(8);
    buf[..n].copy_from_slice(&s[..n]);
    u64::from_be_bytes(buf)
}

/// Up to 8 bytes of `path` from `at`, little-endian, zero past the end: one or two loads
/// rather than a byte loop, since this runs once per segment.
#[inline]
fn load8(path: &[u8], at: usize) -> u64 {
    if let Some(chunk) = path.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        return u64::from_le_bytes(*chunk);
    }
    let avail = path.len().saturating_sub(at);
    if avail == 0 {
        return 0;
    }
    if let Some(tail) = path.last_chunk::<8>() {
        // The wanted bytes are the top `avail` of the last 8: shift them down.
        return u64::from_le_bytes(*tail) >> (8 * (8 - avail));
    }
    path[at..]
        .iter()
        .rev()
        .fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// The segment of `path` starting at `start` (just after a '/'): its end offset and [`head`].
#[inline]
fn segment(path: &[u8], start: usize) -> (usize, u64) {
    let word = load8(path, start);
    // SWAR: the lowest 0x80 bit of `found` marks the first '/' byte (higher ones may be false).
    let x = word ^ 0x2f2f_2f2f_2f2f_2f2f;
    let found = x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080;
    let avail = path.len() - start;
    let len = if found != 0 {
        (found.trailing_zeros() / 8) as usize
    } else if avail <= 8 {
        avail
    } else {
        path[start + 8..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(avail, |i| 8 + i)
    };
    let head = match len {
        0 => 0,
        1..=7 => (word & (u64::MAX >> (64 - 8 * len))).swap_bytes(),
        _ => word.swap_bytes(),
    };
    (start + len, head)
}

/// The end offset of the segment of `path` starting at `start` (just after a '/').
#[inline]
pub(crate) fn segment_end(path: &[u8], start: usize) -> usize {
    segment(path, start).0
}

/// A candidate accepted by the walk; 12 bytes, so `Option<Hit>` returns in registers.
#[derive(Debug, Clone, Copy)]
struct Hit {
    entry: u32,
    /// Bytes of the path the pattern consumed.
    end: u32,
    exact: bool,
}

/// The read-only trie. Candidates are opaque `u32`s (the router's entry ids).
#[derive(Debug)]
pub(crate) struct Trie {
    nodes: Box<[Node]>,
    edges: Box<[Edge]>,
    labels: Box<str>,
    cands: Box<[u32]>,
}

impl Trie {
    /// Walks `path` (starts with '/'), offering candidates to `accept` in precedence order;
    /// returns the best accepted candidate and the byte length of `path` its pattern consumed.
    /// `accept` may see candidates after a prefix one it accepted (exact ones, which win).
    #[inline]
    pub fn find<F: FnMut(u32) -> bool>(&self, path: &[u8], accept: &mut F) -> Option<(u32, usize)> {
        debug_assert_eq!(path.first(), Some(&b'/'));
        if u32::try_from(path.len()).is_err() {
            return None; // far beyond any request line limit
        }
        self.walk(0, 0, path, false, accept)
            .map(|hit| (hit.entry, hit.end as usize))
    }

    /// `pos`: the byte offset in `path` where the segments below `node` start (a '/' or the
    /// end). `exact_only`: a prefix hit is already in hand; look for exact routes only.
    fn walk<F: FnMut(u32) -> bool>(
        &self,
        mut node: u32,
        mut pos: usize,
        path: &[u8],
        exact_only: bool,
        accept: &mut F,
    ) -> Option<Hit> {
        loop {
            let n = &self.nodes[node as usize];
            let cands = &self.cands[n.cands as usize..][..(n.exact_len + n.prefix_len) as usize];
            let (exact, prefix) = cands.split_at(n.exact_len as usize);
            let hit = |entry: u32, exact: bool| Hit {
                entry,
                end: pos as u32,
                exact,
            };
            if pos == path.len() {
                if let Some(&e) = exact.iter().find(|&&e| accept(e)) {
                    return Some(hit(e, true));
                }
                if exact_only {
                    return None;
                }
                return prefix.iter().find(|&&e| accept(e)).map(|&e| hit(e, false));
            }

            let start = pos + 1;
            let (end, head) = segment(path, start);
            let has_param = n.param != NONE && end > start;
            let literal = match n.edges_len {
                0 => None,
                _ => self.literal_child(n, &path[start..end], head),
            };
            let worth = |child: u32| !exact_only || self.nodes[child as usize].exact_below;
            if let Some(child) = literal.filter(|&c| worth(c)) {
                if !has_param && (exact_only || prefix.is_empty()) {
                    // Nothing to come back to here: continue below without recursing (the
                    // common case on the literal spine of a path, e.g. `/api/v1`).
                    node = child;
                    pos = end;
                    continue;
                }
                match self.walk(child, end, path, exact_only, accept) {
                    Some(h) if h.exact || exact_only => return Some(h),
                    Some(h) => {
                        // A prefix hit: the best unless an exact route hides further on.
                        if has_param && self.nodes[n.param as usize].exact_below {
                            if let Some(x) = self.walk(n.param, end, path, true, accept) {
                                return Some(x);
                            }
                        }
                        return Some(h);
                    }
                    None => {}
                }
            }
            if has_param && worth(n.param) {
                if let Some(h) = self.walk(n.param, end, path, exact_only, accept) {
                    return Some(h); // exact, or the best prefix hit (it beats ours below)
                }
            }
            if exact_only {
                return None;
            }
            return prefix.iter().find(|&&e| accept(e)).map(|&e| hit(e, false));
        }
    }

    #[inline]
    fn literal_child(&self, n: &Node, seg: &[u8], head: u64) -> Option<u32> {
        let edges = &self.edges[n.edges as usize..][..n.edges_len as usize];
        let key = edge_key(seg.len(), head);
        // Lower bound over the sorted keys; written out because a plain integer compare is
        // cheaper than `binary_search_by`'s `Ordering` chain, and this runs once per segment.
        let mut base = 0;
        let mut size = edges.len();
        while size > 1 {
            let half = size / 2;
            if edges[base + half].key() < key {
                base += half;
            }
            size -= half;
        }
        let first = base + usize::from(edges.get(base)?.key() < key);
        let labels = self.labels.as_bytes();
        // Labels longer than 8 bytes may share a key: compare the rest.
        edges[first..]
            .iter()
            .take_while(|e| e.key() == key)
            .find(|e| seg.len() <= 8 || labels[e.label as usize + 8..][..seg.len() - 8] == seg[8..])
            .map(|e| e.child)
    }
}

/// Orders edges by (label length, label head); see [`Edge`].
#[inline]
fn edge_key(len: usize, head: u64) -> u128 {
    ((len as u128) << 64) | u128::from(head)
}

impl Edge {
    #[inline]
    fn key(&self) -> u128 {
        edge_key(self.label_len as usize, self.head)
    }
}

/// A node while compiling.
#[derive(Debug, Default)]
struct BuildNode {
    literals: BTreeMap<String, u32>,
    param: Option<u32>,
    exact: Vec<u32>,
    prefix: Vec<u32>,
}

/// Builds a [`Trie`]: insert every pattern, order each node's entries, finish.
#[derive(Debug)]
pub(crate) struct TrieBuilder {
    nodes: Vec<BuildNode>,
}

impl TrieBuilder {
    pub fn new() -> TrieBuilder {
        TrieBuilder {
            nodes: vec![BuildNode::default()],
        }
    }

    /// Adds `entry` at the node for `segments` (param names do not matter: `/u/:id` and
    /// `/u/:uid` end at the same node), among the node's exact or prefix entries.
    pub fn insert(&mut self, segments: &[Segment], exact: bool, entry: u32) {
        let mut node = 0usize;
        for seg in segments {
            let next = self.nodes.len() as u32;
            let slot = match seg {
                Segment::Literal(lit) => {
                    self.nodes[node].literals.entry(lit.clone()).or_insert(next)
                }
                Segment::Param(_) => self.nodes[node].param.get_or_insert(next),
            };
            let child = *slot as usize;
            if child == self.nodes.len() {
                self.nodes.push(BuildNode::default());
            }
            node = child;
        }
        let n = &mut self.nodes[node];
        if exact {
            n.exact.push(entry);
        } else {
            n.prefix.push(entry);
        }
    }

    /// The entries of each (node, exact or prefix), for ambiguity checks and for ordering them
    /// best first before [`finish`]. Entries in one group share a shape but for the wildcard.
    ///
    /// [`finish`]: TrieBuilder::finish
    pub fn entry_groups_mut(&mut self) -> impl Iterator<Item = &mut Vec<u32>> {
        self.nodes
            .iter_mut()
            .flat_map(|n| [&mut n.exact, &mut n.prefix])
    }

    pub fn finish(self) -> Trie {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut edges = Vec::new();
        let mut labels = String::new();
        let mut cands = Vec::new();
        for b in &self.nodes {
            let mut lits: Vec<(&String, u32)> = b.literals.iter().map(|(l, &c)| (l, c)).collect();
            // `literal_child`'s order: (length, head, rest) is the same as (length, bytes).
            lits.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
            nodes.push(Node {
                edges: edges.len() as u32,
                edges_len: lits.len() as u32,
                param: b.param.unwrap_or(NONE),
                cands: cands.len() as u32,
                exact_len: b.exact.len() as u32,
                prefix_len: b.prefix.len() as u32,
                exact_below: !b.exact.is_empty(),
            });
            for (label, child) in lits {
                edges.push(Edge {
                    head: head(label.as_bytes()),
                    label_len: label.len() as u32,
                    label: labels.len() as u32,
                    child,
                });
                labels.push_str(label);
            }
            cands.extend_from_slice(&b.exact);
            cands.extend_from_slice(&b.prefix);
        }
        // Children are created after their parent: one backward pass sees every child first.
        for i in (0..self.nodes.len()).rev() {
            let b = &self.nodes[i];
            let below = b
                .literals
                .values()
                .chain(&b.param)
                .any(|&c| nodes[c as usize].exact_below);
            nodes[i].exact_below |= below;
        }
        Trie {
            nodes: nodes.into(),
            edges: edges.into(),
            labels: labels.into(),
            cands: cands.into(),
        }
    }
}
