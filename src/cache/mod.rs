//! The response cache (BEHAVIOR.md "Cache", issue 12). This step is its core: [`rules`], the
//! HTTP rules of a shared cache (RFC 9111, RFC 9110 §13, RFC 5861) as pure functions. The
//! per-worker shard, coalescing, purge and the `[cache]` config are not wired yet: the config
//! keys are still refused at load, so nothing on the request path calls this module.
//!
//! Key types: [`rules::CacheControl`] (a message's merged `Cache-Control`), [`rules::Bypass`]
//! (why a request skips the cache), [`rules::Freshness`] / [`rules::NotStored`] (whether a
//! response may be stored, and for how long), [`rules::AgeClock`] (the times an entry's
//! `Age` is computed from), [`rules::State`] (fresh, stale-while-revalidate, stale-if-error,
//! expired), [`rules::Key`] (an entry's unambiguous key bytes).
//!
//! The one thing to know: time is always a parameter (Unix seconds the caller reads), never
//! read here, so every rule is a table test.

pub mod rules;

#[cfg(test)]
mod tests;
