//! Composition (issue 11): answering one client request by calling several upstreams.
//!
//! [`jq`] is the jq engine (jaq) that transforms and aggregates share: programs compiled once at
//! load, run per request. [`transform`] is the logic of a route's `transform` (bodies through
//! jq, header edits), which the proxy stage drives.
//!
//! Today this holds the core of aggregation: [`aggregate`], the plain-data specs of an
//! aggregate's calls and the compiler that turns them into a [`aggregate::Plan`] (dependency
//! graph, start order, critical path, path templates). Like `policy::ratelimit` before its
//! wiring, nothing reads it yet: the config keys `[aggregates.*]` are still refused at load
//! ("not supported yet"), and the executor that runs a plan through `upstream::call` comes next.

pub mod aggregate;
pub mod jq;
pub mod transform;
