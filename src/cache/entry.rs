//! [`Entry`]: one stored response, as a hit writes it back: its status and reason, its
//! end-to-end header fields (hop-by-hop fields, framing, `Age` and the fields the gateway
//! sets on every answer removed), its decoded body, and the times its freshness and `Age`
//! are computed from. [`EntryHead`] is an entry whose body is still arriving.
//!
//! An entry is immutable once stored and shared as `Rc<Entry>`: a hit holds it while it is
//! written to a slow client, so an eviction or a purge meanwhile frees nothing under it.

use crate::http::{self, Header, ResponseHead, VIA};

use super::rules::{AgeClock, Freshness};

/// Fields of the upstream's head that a stored response never keeps: the framing (a hit
/// writes its own `Content-Length`), `Age` (a hit computes its own, RFC 9111 §4.2.3), and the
/// fields whose value belongs to one answer (`X-Request-Id`: the hit's own request id is
/// added by the response phases; `X-Cache`, `RateLimit-*`: likewise).
const NOT_KEPT: [&str; 8] = [
    "content-length",
    "age",
    "x-request-id",
    "x-cache",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "retry-after",
];

/// A response head on its way into the cache, its body not read yet.
#[derive(Debug)]
pub struct EntryHead {
    status: u16,
    reason: Vec<u8>,
    fields: OwnedFields,
    /// The fields as a hit writes them (see [`Entry::block`]).
    block: Vec<u8>,
    freshness: Freshness,
    age: AgeClock,
    /// The response's `Vary` names (lower-case, sorted): they are part of its key.
    pub vary: Vec<String>,
}

impl EntryHead {
    /// Copies what a stored response keeps of `head` (RFC 9111 §3.1: hop-by-hop fields and
    /// those `Connection` names are not stored).
    pub fn new(
        head: &ResponseHead<'_>,
        freshness: Freshness,
        age: AgeClock,
        vary: Vec<String>,
    ) -> EntryHead {
        let listed = connection_listed(&head.headers);
        let mut fields = OwnedFields::default();
        let mut block = Vec::with_capacity(256);
        let mut via: smallvec::SmallVec<[&[u8]; 2]> = smallvec::SmallVec::new();
        for h in head.headers.iter() {
            let lower = h.name;
            if http::is_hop_by_hop(lower)
                || NOT_KEPT.iter().any(|n| lower.eq_ignore_ascii_case(n))
                || listed
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case(lower.as_bytes()))
            {
                continue;
            }
            fields.push(h);
            // The relayed head's rules (`pipeline::headers::write_response_head`): earlier
            // hops' `Via` values are merged into one field, this gateway last.
            if h.name.eq_ignore_ascii_case("via") {
                via.push(h.value);
                continue;
            }
            block.extend_from_slice(h.name.as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(h.value);
            block.extend_from_slice(b"\r\n");
        }
        block.extend_from_slice(b"Via: ");
        for v in via {
            block.extend_from_slice(v);
            block.extend_from_slice(b", ");
        }
        block.extend_from_slice(VIA);
        block.extend_from_slice(b"\r\n");
        EntryHead {
            status: head.status,
            reason: head.reason.to_vec(),
            fields,
            block,
            freshness,
            age,
            vary,
        }
    }

    /// The stored response, with its whole decoded body, for purge generation `generation`.
    pub fn finish(self, body: Vec<u8>, generation: u64) -> Entry {
        Entry {
            status: self.status,
            reason: self.reason,
            fields: self.fields,
            block: self.block,
            body,
            freshness: self.freshness,
            age: self.age,
            generation,
            vary: self.vary,
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }
}

/// A stored response.
#[derive(Debug)]
pub struct Entry {
    pub status: u16,
    reason: Vec<u8>,
    fields: OwnedFields,
    block: Vec<u8>,
    pub body: Vec<u8>,
    pub freshness: Freshness,
    pub age: AgeClock,
    /// The purge generation of its rule when the request that stored it began: a later
    /// purge makes the entry invisible at once, on every worker.
    pub generation: u64,
    /// The response's `Vary` names.
    pub vary: Vec<String>,
}

impl Entry {
    /// The stored fields, borrowed, in the order received.
    pub fn headers(&self) -> http::Headers<'_> {
        self.fields.headers()
    }

    pub fn reason(&self) -> &[u8] {
        &self.reason
    }

    /// The stored fields serialised as a hit writes them, `Via` (this gateway's appended)
    /// included: `Name: value\r\n` each. A hit copies it whole instead of walking the fields.
    pub fn block(&self) -> &[u8] {
        &self.block
    }

    /// What the entry costs its shard: its bytes plus a fixed allowance for its bookkeeping.
    pub fn weight(&self) -> u64 {
        (self.reason.len()
            + self.fields.bytes()
            + self.block.len()
            + self.body.len()
            + self.vary.iter().map(|v| v.len() + 24).sum::<usize>()
            + ENTRY_OVERHEAD) as u64
    }
}

/// Bytes an entry costs beyond its heads and body (the struct, its `Rc`, the shard's slot).
pub const ENTRY_OVERHEAD: usize = 256;

/// Header fields copied out of a parse buffer: every name in one `String`, every value in
/// one `Vec`, so a stored head (or a request's fields kept for its key) is three allocations
/// whatever its number of fields, and is lent back as [`Header`]s.
#[derive(Debug, Default)]
pub struct OwnedFields {
    /// Names, concatenated: ASCII tokens (httparse's, or the config's), so every range on a
    /// name boundary is a `str`.
    names: String,
    values: Vec<u8>,
    /// (name end, value end) of each field, in order.
    ends: Vec<(u32, u32)>,
}

impl OwnedFields {
    pub fn push(&mut self, h: &Header<'_>) {
        self.names.push_str(h.name);
        self.values.extend_from_slice(h.value);
        self.ends
            .push((self.names.len() as u32, self.values.len() as u32));
    }

    /// The fields, borrowed, in the order pushed.
    pub fn headers(&self) -> http::Headers<'_> {
        let mut out = http::Headers::new();
        let (mut n0, mut v0) = (0usize, 0usize);
        for &(n1, v1) in &self.ends {
            let (n1, v1) = (n1 as usize, v1 as usize);
            out.push(Header {
                name: &self.names[n0..n1],
                value: &self.values[v0..v1],
            });
            (n0, v0) = (n1, v1);
        }
        out
    }

    /// The bytes they hold.
    pub fn bytes(&self) -> usize {
        self.names.len() + self.values.len() + self.ends.len() * 8
    }
}

/// The lower-case-insensitive names listed in the `Connection` fields.
fn connection_listed<'h>(headers: &[Header<'h>]) -> smallvec::SmallVec<[&'h [u8]; 4]> {
    let mut out = smallvec::SmallVec::new();
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        for t in h.value.split(|&b| b == b',') {
            let t = t.trim_ascii();
            if !t.is_empty() {
                out.push(t);
            }
        }
    }
    out
}
