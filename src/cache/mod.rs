//! The response cache (BEHAVIOR.md "Cache"): one shard per worker, RFC 9111 for a shared
//! cache, stale-while-revalidate and stale-if-error (RFC 5861), coalescing, purge.
//!
//! - [`rules`]: the HTTP rules as pure functions (bypass, storability and freshness, age,
//!   stale windows, Vary and keys, 304s). Time is always a parameter.
//! - [`entry`]: a stored response ([`entry::Entry`]), shared as `Rc` while a hit writes it.
//! - [`shard`]: one worker's entries, bounded in bytes, and its coalescing table.
//! - [`purge`]: the per-rule purge generations shared by every worker (atomics only) and the
//!   `invalidate_on` patterns.
//!
//! The request path (lookup, store, refresh) is the cache phase's,
//! `pipeline::phase::cache`; this module never does I/O.
//!
//! The one thing to know: a hit touches only its worker's shard and one atomic load (its
//! rule's generation): no cross-core lock, no upstream, no breaker.

pub mod entry;
pub mod purge;
pub mod rules;
pub mod shard;

pub use entry::{Entry, EntryHead};
pub use purge::Rules;
pub use shard::{Found, Leader, Shard};

#[cfg(test)]
mod tests;
