//! Edge policies: what a request must satisfy before it reaches an upstream. Each policy is a
//! pure decision core here, driven by a request phase of [`crate::pipeline`]
//! (`phase::auth`, `phase::ratelimit`).
//!
//! - [`auth`]: JWT verification (keys compiled at load, a per-worker verified-token cache) and
//!   API keys (SHA-256 digests compared in constant time).
//! - [`ratelimit`]: the five rate-limit algorithms, global across workers (one shared table
//!   of atomic words per limit), over memory fixed when the limit is built.
//! - [`compiled`]: [`Policies`], every policy of a config generation compiled by [`compile`]
//!   (keys read, limits built or carried over from the previous generation).

pub mod auth;
pub mod compiled;
pub mod ratelimit;

pub use compiled::{check, compile, Policies};
