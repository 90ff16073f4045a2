//! Composition (issue 11): answering one client request by calling several upstreams, and
//! shaping what each kind of client sees.
//!
//! [`bff`]: the backend-for-frontend request phase (which `[bff.clients.*]` a request belongs
//! to, by prefix or header; the prefix removed before routing), wired in `pipeline::stack`.
//!
//! Aggregation: [`aggregate`], the plain-data specs of an
//! aggregate's calls and the compiler that turns them into a [`aggregate::Plan`] (dependency
//! graph, start order, critical path, path templates). Like `policy::ratelimit` before its
//! wiring, nothing reads it yet: the config keys `[aggregates.*]` are still refused at load
//! ("not supported yet"), and the executor that runs a plan through `upstream::call` comes next.

pub mod aggregate;
pub mod bff;
