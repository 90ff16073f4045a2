//! Aggregates (BEHAVIOR.md "Aggregation"): the specs of an aggregate's calls, as the config
//! layer fills them, [`plan`], their compiled form, [`run`], the executor, and [`text`], a
//! call's JSON answer kept as text when only the composite reads it.
//!
//! Key types: [`AggregateSpec`] and [`CallSpec`] (plain data, durations already parsed),
//! [`Plan`] (compiled once at load: the calls in start order, each with its dependencies as a
//! `u64` bitset, its parsed path template, its fan-out), [`PlanError`] (what a bad spec gets),
//! [`Compiled`] (a plan with its jq programs and upstream ids: what a config holds and the
//! executor runs), [`run::Transport`] (the one seam between the executor and the network).
//!
//! The one thing to know: an aggregate has at most [`MAX_CALLS`] (64) calls, so a set of calls
//! (done, started, failed) is one `u64` and the executor's "what may start now" is
//! [`Plan::ready`], a scan of at most 64 words with no allocation.

use std::time::Duration;

use serde_json::Value;

pub mod plan;
pub mod run;
pub mod text;

#[cfg(test)]
mod run_tests;
#[cfg(test)]
mod tests;

pub use plan::{Call, Foreach, Plan, PlanError, RenderError, Segment, Values};

use super::jq::Program;

/// At most this many calls in one aggregate: a set of calls is one `u64` bitset.
pub const MAX_CALLS: usize = 64;
/// `max_items` of a `foreach` call that does not set it.
pub const DEFAULT_MAX_ITEMS: usize = 100;
/// `concurrency` of a `foreach` call that does not set it.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// One `[aggregates.NAME]` as the compiler takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateSpec {
    /// The aggregate's name (the TOML key).
    pub name: String,
    /// The deadline for the whole aggregate; also the timeout of a call that sets none.
    pub timeout: Duration,
    /// The calls, in file order (the order ties are broken in).
    pub calls: Vec<CallSpec>,
}

/// One `[aggregates.NAME.calls.CALL]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallSpec {
    /// The call's name: the key of its result, and how placeholders and `when` name it.
    pub name: String,
    /// The upstream it goes to (checked to exist by the config layer, not here).
    pub upstream: String,
    /// The path template (with an optional query): literal text and `{...}` placeholders.
    pub path: String,
    /// A failure of a required call fails the aggregate (503).
    pub required: bool,
    /// This call's own timeout, retries included; `None`: the aggregate's.
    pub timeout: Option<Duration>,
    /// The result a failed optional call takes (`None`: null).
    pub default: Option<Value>,
    /// A jq program applied to the call's JSON result; carried as text.
    pub select: Option<String>,
    /// `call.field...`: the array of an earlier result to send one request per element of.
    pub foreach: Option<String>,
    /// At most this many elements of `foreach` are requested (only with `foreach`).
    pub max_items: Option<usize>,
    /// At most this many of those requests in flight at once (only with `foreach`).
    pub concurrency: Option<usize>,
    /// A jq condition over the results so far; false skips the call. Carried as text, read
    /// only for the calls it names (see [`plan`]).
    pub when: Option<String>,
}

/// An aggregate ready to run: its plan, and per call (by index in [`Plan::calls`], start
/// order) what the executor needs besides the plan. Built once at load by the config layer.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub plan: Plan,
    /// By index in [`Plan::calls`].
    pub calls: Vec<CallRun>,
    /// `shape`: applied to the object of results.
    pub shape: Option<Program>,
    /// The largest body a call's answer may have (`server.limits.max_body`); a larger one is
    /// that call's failure (`too large`).
    pub max_body: usize,
    /// The aggregate's `max_body`: the most bytes of call bodies one request of it reads, all
    /// its calls and items together. Every body counts from its first byte until the answer
    /// is sent (the results are held until then), and the call whose body would cross it
    /// fails ([`run::CallError::OverBudget`]).
    pub budget: usize,
}

/// An aggregate's `max_body` when not written: this, or `server.limits.max_body` when that is
/// larger (so one call the server's limit allows always fits).
pub const DEFAULT_BUDGET: u64 = 32 << 20;

/// What one call needs at run time besides its [`Call`].
#[derive(Debug, Clone)]
pub struct CallRun {
    /// The upstream's index in the config.
    pub upstream: usize,
    /// `Host` for a client request without one (HTTP/1.0): the upstream's first endpoint's
    /// authority, as the upstream phase sends it.
    pub fallback_host: String,
    /// `select`, applied to each JSON result (each item's, for a `foreach` call).
    pub select: Option<Program>,
    /// `when`, over the object of the results so far.
    pub when: Option<Program>,
}

/// What `dispatch explain AGGREGATE` prints for `cfg`'s aggregate `name` ([`Plan::explain`]).
/// Err: there is no such aggregate; the message lists the names there are.
pub fn explain(cfg: &crate::config::model::Config, name: &str) -> Result<String, String> {
    match cfg.aggregates.iter().find(|a| a.name == name) {
        Some(a) => Ok(a.compiled.plan.explain()),
        None if cfg.aggregates.is_empty() => Err(format!(
            "no aggregate named {name:?}: {} has no [aggregates.*]",
            cfg.path.display()
        )),
        None => {
            let names: Vec<&str> = cfg.aggregates.iter().map(|a| a.name.as_str()).collect();
            Err(format!(
                "no aggregate named {name:?}; the aggregates are: {}",
                names.join(", ")
            ))
        }
    }
}
