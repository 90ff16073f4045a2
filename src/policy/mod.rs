//! Edge policies: what a request must satisfy before it reaches an upstream. Each policy is a
//! pure decision core here, driven by a request phase of [`crate::pipeline`].
//!
//! - [`ratelimit`]: the five rate-limit algorithms, global across workers (one shared table
//!   of atomic words per limit), over memory fixed when the limit is built.

pub mod ratelimit;
