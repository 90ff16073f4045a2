//! Composition (issue 11): answering one client request by calling several upstreams, and
//! shaping what each kind of client sees.
//!
//! [`bff`]: the backend-for-frontend request phase (which `[bff.clients.*]` a request belongs
//! to, by prefix or header; the prefix removed before routing), wired in `pipeline::stack`.
//!
//! [`jq`] is the jq engine (jaq) that transforms and aggregates share: programs compiled once at
//! load, run per request. [`transform`] is the logic of a route's `transform` (bodies through
//! jq, header edits), which the proxy stage drives.
//!
//! [`aggregate`] is aggregation: the specs of an aggregate's calls, the compiler that turns
//! them into a [`aggregate::Plan`] (dependency graph, start order, critical path, path
//! templates) at load, and the executor ([`aggregate::run`]) that runs a plan for a request
//! through a transport (the pipeline's is `upstream::call`: `pipeline::aggregate`).

pub mod aggregate;
pub mod bff;
pub mod jq;
pub mod transform;
