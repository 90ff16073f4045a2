//! The executor: runs a [`Compiled`] aggregate for one request and composes the answer
//! (BEHAVIOR.md "Aggregation").
//!
//! Key items: [`execute`] (one request's run), [`Transport`] (the one seam to the network: an
//! upstream id, a request head and a deadline in, a status and a body out, or a
//! [`CallError`]), [`Request`] (what the executor reads of the client's request), [`Answer`].
//!
//! How a run goes: every call whose dependencies are done
//! ([`Plan::ready`](super::Plan::ready)) starts at once, as a future in one
//! [`FuturesUnordered`] polled by the request's own future: no task is
//! spawned and nothing needs `'static`, so dropping the request's future (the client left, the
//! connection's deadline) drops every call in flight, and the transport closes their
//! connections. A call starts the moment its last dependency ends. Before it starts:
//! - a dependency that failed, or was skipped, skips it (`_meta.skipped`); a required call
//!   skipped because a call it waits on failed fails the aggregate (503 naming it);
//! - its `when` false or null skips it; a `when` that fails at run time is the call's failure
//!   (`when: <message>`). Its input is the object of the results of the calls it names (its
//!   [`Call::when_deps`], all ended by then) and nothing else, so the same results give the
//!   same answer whatever else happened to end first; a `when` naming no call reads `{}`;
//! - its path (each item's, for `foreach`) is rendered; a missing value is its failure.
//!
//! Deadlines: a call must end by its own `timeout` from its start, and by the aggregate's
//! `timeout` from the request's start, whichever comes first; the transport gets that instant
//! (retries included) and the executor drops the call 20 ms after it, so the transport's own
//! timeout fires first and is recorded as one (breaker, metrics). A required call that fails
//! (its own timeout included) ends the run at once with 503 naming it, dropping the calls
//! still in flight; one cut by the aggregate's deadline gives 504. An optional call that fails
//! takes its `default` (null without one).
//!
//! A result is a call's answer when its status is 2xx and its body JSON (else `status N`,
//! `not json`), after `select`. A result that nothing but the composite reads (no `foreach`,
//! no call waiting for it, no `shape`) is checked as a parse would check it and kept as the
//! upstream's text ([`super::text`]), whitespace around it trimmed, its `select` read off the
//! text when it is a path of keys (`.transactions`): it is copied into the composite as sent,
//! never parsed into a tree and written back.
//!
//! A `foreach` call sends one request per element of its source array (at most `max_items`,
//! at most `concurrency` in flight), in the array's order; `select` applies to each item's
//! result; a failed item is null. The call's deadline cuts only what has not come back: the
//! items that ended keep their values, in place, and the rest are null (`timeout`). When some
//! items failed the call still succeeded, required or not: its value is the array with nulls,
//! `available` says true, and `_meta.errors` has its reason (`2 of 5 items failed: [1] status
//! 503; [3] timeout`: item indices in the source array, at most [`ITEM_REASONS`] reasons, then
//! `...`), which makes the composite `partial`. When every item failed, the call failed with
//! that reason (a required one: 503, or 504 when the aggregate's deadline cut its items). An
//! empty source array is an empty result, no request.
//!
//! The composite: the object of every call's value by name (a skipped call's is its `default`,
//! or null), `shape` applied when present, and `_meta` added to it when it is an object:
//! `partial` (an optional call failed, or some items of a `foreach` call), `available` (per
//! call: whether the value is the call's own result), `ms` (per call that ran: whole
//! milliseconds from its start to its end), `errors` (per failed call, or `foreach` call with
//! failed items: its reason), `skipped` and `truncated` (call names, start order). `errors`,
//! `skipped` and `truncated` are always present, empty or not, so a client reads one shape.
//! Keys are in name order (bytewise, `_meta` among them), as a JSON object map orders them. A
//! `shape` that fails or gives no output is a 502.

use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{Map, Value};

use super::{text, Call, Compiled, Plan, Values};
use crate::compose::jq::Program;

/// An upstream's answer to one call's request: its status and its whole body (decoded from
/// its framing, at most [`Compiled::max_body`] bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a call's request got no answer. The text is what `_meta.errors` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// No connection could be made (refused, unreachable, connect timeout).
    Connect,
    /// The call's deadline passed (its own `timeout` or the aggregate's).
    Timeout,
    /// The connection was reset or closed before a complete answer.
    Reset,
    /// An answer that cannot be framed.
    BadResponse,
    /// A body over [`Compiled::max_body`].
    TooLarge,
    /// A body that would take the bytes the request's calls have read past
    /// [`Compiled::budget`] (this many bytes).
    OverBudget(usize),
    /// The upstream's circuit breaker is open.
    BreakerOpen,
    /// A final status the transport reports without a body (its retries spent on 502-504).
    Status(u16),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallError::Connect => "connect",
            CallError::Timeout => "timeout",
            CallError::Reset => "reset",
            CallError::BadResponse => "bad response",
            CallError::TooLarge => "too large",
            CallError::BreakerOpen => "breaker open",
            CallError::Status(status) => return write!(f, "status {status}"),
            CallError::OverBudget(budget) => {
                return write!(f, "over the aggregate's max_body of {budget} bytes")
            }
        })
    }
}

/// Which call a request is for: what a transport may want to know besides the head (its
/// metrics and spans).
#[derive(Debug, Clone, Copy)]
pub struct CallInfo<'a> {
    /// The call's index in [`Plan::calls`](super::Plan::calls).
    pub index: usize,
    /// The call's name.
    pub name: &'a str,
    /// The upstream's index in the config.
    pub upstream: usize,
}

/// The network, as the executor sees it.
// The runtime is single-threaded (monoio): these futures never cross threads.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// Sends one GET to `call.upstream` and reads its whole answer, all of it (retries
    /// included) by `deadline`. `head` is the request line and its header fields, each line
    /// ending in CRLF, without the blank line that ends the head: the transport adds its own
    /// fields (`traceparent` of the call's span) and that line.
    async fn call(
        &self,
        call: CallInfo<'_>,
        head: Vec<u8>,
        deadline: Instant,
    ) -> Result<Reply, CallError>;
}

/// What the executor reads of the client's request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Parameters by name: the route's first, then the query's (decoded); the first pair
    /// with a name is its value.
    pub params: &'a [(String, String)],
    /// The client's `Host` (None: each upstream's fallback, [`super::CallRun::fallback_host`]).
    pub host: Option<&'a [u8]>,
    /// The header fields every call carries after `Host`, each line ending in CRLF (the
    /// client's identity, the forwarded fields, `X-Request-Id`, `Via`, `Accept`).
    pub fields: &'a [u8],
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 with this JSON body.
    Composite(String),
    /// The gateway's error answer: its status (503, 504, 502) and message.
    Error { status: u16, message: String },
}

/// A call's state during a run.
#[derive(Debug, Clone)]
enum State {
    Waiting,
    Running,
    Done(Value),
    /// A result only the composite reads ([`passes_through`]): its JSON text as sent (the
    /// part its `select` takes).
    Raw(Vec<u8>),
    /// A `foreach` call some of whose items failed: its array (those items null) and why.
    Partial(Value, String),
    Failed(String),
    Skipped,
}

impl State {
    /// The call's own result as a value, if it has one that others read.
    fn value(&self) -> Option<&Value> {
        match self {
            State::Done(v) | State::Partial(v, _) => Some(v),
            _ => None,
        }
    }

    /// Whether the call has its own result (`_meta.available`).
    fn available(&self) -> bool {
        matches!(self, State::Done(_) | State::Raw(_) | State::Partial(..))
    }
}

/// What a call's future brings back.
pub(crate) enum Fetched {
    One(Result<Reply, CallError>),
    /// Per item, in the source's order: the reply, or why there is none.
    Items(Vec<Result<Reply, String>>),
}

/// How a call ended, from what came back.
enum Ended {
    Done(Value),
    Raw(Vec<u8>),
    Partial(Value, String),
    /// `timeout`: a deadline cut it (all of it, or one of its items).
    Failed {
        reason: String,
        timeout: bool,
    },
}

/// At most this many item failures are spelled out in a `foreach` call's reason.
pub const ITEM_REASONS: usize = 3;

/// A call's requests, rendered before it starts.
pub(crate) enum Work {
    One(Vec<u8>),
    /// Per item: its head, or why its path could not be rendered.
    Items(Vec<Result<Vec<u8>, String>>, usize),
}

/// The results so far, for rendering paths.
struct Seen<'a> {
    params: &'a [(String, String)],
    states: &'a [State],
}

impl Values for Seen<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn result(&self, call: usize) -> Option<&Value> {
        self.states[call].value()
    }
}

/// Runs `c` for one request through `transport` and composes the answer.
pub async fn execute<T: Transport>(c: &Compiled, req: &Request<'_>, transport: &T) -> Answer {
    let plan = &c.plan;
    let n = plan.calls.len();
    let begun = Instant::now();
    let deadline = begun + plan.timeout;
    let mut states: Vec<State> = vec![State::Waiting; n];
    let mut ms: Vec<Option<u64>> = vec![None; n];
    let mut truncated = 0u64;
    // Calls that ended (any way), calls started (or decided), calls whose dependents skip,
    // and among those the ones that failed (directly, or skipped for a failed dependency).
    let (mut done, mut started, mut blocked, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut pending = FuturesUnordered::new();
    loop {
        // Start what may start; a call decided without running (skipped, failed) may free
        // others, so look again until nothing more is ready.
        let mut now = None;
        loop {
            // As a set: the loop below changes what `ready` reads.
            let ready = plan.ready(done, started).fold(0u64, |set, i| set | 1 << i);
            if ready == 0 {
                break;
            }
            for i in (0..n).filter(|i| ready & (1 << i) != 0) {
                started |= 1 << i;
                let call = &plan.calls[i];
                let decided = if call.deps & failed != 0 {
                    if call.required {
                        let dep = first_bit(call.deps & failed);
                        // A dependency cut by the aggregate's deadline: the aggregate timed out.
                        return failure(
                            status_at(deadline),
                            call,
                            &format!("it waits for {:?}, which failed", plan.calls[dep].name),
                        );
                    }
                    Some(State::Skipped)
                } else if call.deps & blocked != 0 {
                    Some(State::Skipped)
                } else {
                    match admit(c, i, &states) {
                        Ok(true) => None,
                        Ok(false) => Some(State::Skipped),
                        Err(reason) => Some(State::Failed(reason)),
                    }
                };
                let work = match decided {
                    Some(state) => Err(state),
                    None => render(c, i, req, &states, &mut truncated).map_err(State::Failed),
                };
                match work {
                    Ok(work) => {
                        states[i] = State::Running;
                        // One clock reading for the calls that start together.
                        let now = *now.get_or_insert_with(Instant::now);
                        let own = now + call.timeout;
                        let info = CallInfo {
                            index: i,
                            name: &call.name,
                            upstream: c.calls[i].upstream,
                        };
                        pending.push(run_call(
                            transport,
                            info,
                            (i, now),
                            work,
                            own.min(deadline),
                            deadline,
                        ));
                    }
                    Err(state) => {
                        if let State::Failed(reason) = &state {
                            if call.required {
                                return failure(503, call, reason);
                            }
                            failed |= 1 << i;
                        }
                        if matches!(state, State::Skipped) && call.deps & failed != 0 {
                            failed |= 1 << i;
                        }
                        states[i] = state;
                        done |= 1 << i;
                        blocked |= 1 << i;
                    }
                }
            }
        }
        if done == plan.all() {
            break;
        }
        let Some((i, fetched, took, cut)) = pending.next().await else {
            // Every call is decided or in flight, and none is in flight: all are done.
            break;
        };
        let call = &plan.calls[i];
        ms[i] = Some(took.as_millis() as u64);
        done |= 1 << i;
        match result_of(c, i, fetched) {
            Ended::Done(value) => states[i] = State::Done(value),
            Ended::Raw(text) => states[i] = State::Raw(text),
            Ended::Partial(value, reason) => states[i] = State::Partial(value, reason),
            Ended::Failed { reason, timeout } => {
                if call.required {
                    let status = if cut && timeout { 504 } else { 503 };
                    return failure(status, call, &reason);
                }
                states[i] = State::Failed(reason);
                failed |= 1 << i;
                blocked |= 1 << i;
            }
        }
    }
    compose(c, states, &ms, truncated)
}

/// A required call's failure status: 504 once the aggregate's `deadline` has passed (it cut
/// the run), else 503.
fn status_at(deadline: Instant) -> u16 {
    if Instant::now() >= deadline {
        504
    } else {
        503
    }
}

/// How long after a call's deadline the executor drops it: the transport's own timeout, set
/// to the same instant, fires first and is recorded as one (breaker, metrics) rather than the
/// call being dropped mid-exchange.
const GRACE: Duration = Duration::from_millis(20);

/// The request's answer when a required call fails: 503 naming it, or 504 when the
/// aggregate's deadline cut it.
fn failure(status: u16, call: &Call, reason: &str) -> Answer {
    let message = if status == 504 {
        format!(
            "Aggregate timed out waiting for required call {:?}",
            call.name
        )
    } else {
        format!("Required call {:?} failed: {reason}", call.name)
    };
    Answer::Error { status, message }
}

fn first_bit(set: u64) -> usize {
    set.trailing_zeros() as usize
}

/// Whether call `i` runs: its `when` over the results of the calls it names (jq
/// truthiness: anything but false and null, and no output at all is false). Err: the program
/// failed.
fn admit(c: &Compiled, i: usize, states: &[State]) -> Result<bool, String> {
    let Some(when) = &c.calls[i].when else {
        return Ok(true);
    };
    // Each named call has ended with a result: one that failed or was skipped skips this call
    // before `when` is asked.
    let mut named = c.plan.calls[i].when_deps;
    let mut input = Map::new();
    while named != 0 {
        let d = first_bit(named);
        named &= named - 1;
        if let Some(v) = states[d].value() {
            input.insert(c.plan.calls[d].name.clone(), v.clone());
        }
    }
    let input = Value::Object(input);
    match when.run(input, &[]) {
        Ok(Some(Value::Bool(false) | Value::Null) | None) => Ok(false),
        Ok(Some(_)) => Ok(true),
        Err(message) => Err(format!("when: {message}")),
    }
}

/// Renders call `i`'s request heads. Err: why it cannot be sent (its failure).
fn render(
    c: &Compiled,
    i: usize,
    req: &Request<'_>,
    states: &[State],
    truncated: &mut u64,
) -> Result<Work, String> {
    let call = &c.plan.calls[i];
    let run = &c.calls[i];
    let seen = Seen {
        params: req.params,
        states,
    };
    let head = |path: &str| {
        let host = req.host.unwrap_or(run.fallback_host.as_bytes());
        // The transport adds a `traceparent` line (70 bytes) and the blank line.
        let mut h = Vec::with_capacity(112 + path.len() + host.len() + req.fields.len());
        h.extend_from_slice(b"GET ");
        h.extend_from_slice(path.as_bytes());
        h.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        h.extend_from_slice(host);
        h.extend_from_slice(b"\r\n");
        h.extend_from_slice(req.fields);
        h
    };
    match call.items(&seen, &c.plan) {
        None => {
            let path = call.render_path(&seen, None).map_err(|e| e.to_string())?;
            Ok(Work::One(head(&path)))
        }
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok((items, cut))) => {
            if cut {
                *truncated |= 1 << i;
            }
            let heads = items
                .iter()
                .map(|item| {
                    call.render_path(&seen, Some(item))
                        .map(|p| head(&p))
                        .map_err(|e| e.to_string())
                })
                .collect();
            let concurrency = call.foreach.as_ref().map_or(1, |f| f.concurrency);
            Ok(Work::Items(heads, concurrency))
        }
    }
}

/// One call's requests (call `i`, started at `begun`), all of them done by `deadline` (the
/// transport's; the executor drops them [`GRACE`] later). Yields the call's index, what came
/// back, how long it took, and `cut`: it ended after `aggregate`'s deadline (the aggregate's
/// timeout, not the call's own, ended it).
pub(crate) async fn run_call<T: Transport>(
    transport: &T,
    info: CallInfo<'_>,
    (i, begun): (usize, Instant),
    work: Work,
    deadline: Instant,
    aggregate: Instant,
) -> (usize, Fetched, Duration, bool) {
    let until = deadline + GRACE;
    let fetched = match work {
        Work::One(head) => {
            // Boxed once here: a transport's call is kilobytes of nested state, and unboxed it
            // would be copied whole into this future, then with it into the set that runs it.
            let call = Box::pin(transport.call(info, head, deadline));
            Fetched::One(match crate::io::timeout::timeout_at(until, call).await {
                Ok(r) => r,
                Err(_) => Err(CallError::Timeout),
            })
        }
        Work::Items(heads, concurrency) => {
            Fetched::Items(fan_out(transport, info, heads, concurrency, deadline, until).await)
        }
    };
    let ended = Instant::now();
    (i, fetched, ended - begun, ended >= aggregate)
}

/// A `foreach` call's item requests, at most `concurrency` in flight, results in order. At
/// `until` the items still in flight are dropped and, with those not yet sent, are `timeout`;
/// the items that came back keep their replies.
async fn fan_out<T: Transport>(
    transport: &T,
    info: CallInfo<'_>,
    heads: Vec<Result<Vec<u8>, String>>,
    concurrency: usize,
    deadline: Instant,
    until: Instant,
) -> Vec<Result<Reply, String>> {
    let mut out: Vec<Result<Reply, String>> = Vec::with_capacity(heads.len());
    let mut queue = Vec::with_capacity(heads.len());
    for (k, head) in heads.into_iter().enumerate() {
        match head {
            Ok(head) => {
                // What an item that never comes back ends as.
                out.push(Err(CallError::Timeout.to_string()));
                queue.push((k, head));
            }
            Err(reason) => out.push(Err(reason)),
        }
    }
    let mut queue = queue.into_iter();
    let mut flight = FuturesUnordered::new();
    let item = |(k, head): (usize, Vec<u8>)| async move {
        (
            k,
            transport
                .call(info, head, deadline)
                .await
                .map_err(|e| e.to_string()),
        )
    };
    for next in queue.by_ref().take(concurrency) {
        flight.push(item(next));
    }
    while let Ok(Some((k, r))) = crate::io::timeout::timeout_at(until, flight.next()).await {
        out[k] = r;
        if let Some(next) = queue.next() {
            flight.push(item(next));
        }
    }
    out
}

/// How call `i` ended, from what came back (module doc: a `foreach` call's items).
fn result_of(c: &Compiled, i: usize, fetched: Fetched) -> Ended {
    let select = c.calls[i].select.as_ref();
    match fetched {
        Fetched::One(r) => match r {
            Ok(reply) if passes_through(c, i) => match text_of(reply, select) {
                Ok(ended) => ended,
                Err(reason) => Ended::Failed {
                    reason,
                    timeout: false,
                },
            },
            Ok(reply) => match value_of(reply, select) {
                Ok(v) => Ended::Done(v),
                Err(reason) => Ended::Failed {
                    reason,
                    timeout: false,
                },
            },
            Err(e) => Ended::Failed {
                reason: e.to_string(),
                timeout: e == CallError::Timeout,
            },
        },
        Fetched::Items(items) => {
            let total = items.len();
            let mut failed: Vec<(usize, String)> = Vec::new();
            let values = items
                .into_iter()
                .enumerate()
                .map(|(k, r)| match r.and_then(|reply| value_of(reply, select)) {
                    Ok(v) => v,
                    Err(reason) => {
                        failed.push((k, reason));
                        Value::Null
                    }
                })
                .collect();
            if failed.is_empty() {
                return Ended::Done(Value::Array(values));
            }
            let reason = item_failures(&failed, total);
            if failed.len() < total {
                Ended::Partial(Value::Array(values), reason)
            } else {
                let timeout = failed.iter().any(|(_, r)| r == "timeout");
                Ended::Failed { reason, timeout }
            }
        }
    }
}

/// `2 of 5 items failed: [1] status 503; [3] timeout`, at most [`ITEM_REASONS`] of them.
fn item_failures(failed: &[(usize, String)], total: usize) -> String {
    let mut out = format!("{} of {total} items failed: ", failed.len());
    for (n, (k, reason)) in failed.iter().take(ITEM_REASONS).enumerate() {
        if n > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "[{k}] {reason}");
    }
    if failed.len() > ITEM_REASONS {
        out.push_str("; ...");
    }
    out
}

/// Whether call `i`'s result is read by nothing but the composite: no `foreach`, no call
/// waits for it (placeholders, `when`, `foreach` read results), no `shape`.
fn passes_through(c: &Compiled, i: usize) -> bool {
    let call = &c.plan.calls[i];
    c.shape.is_none() && call.dependents.is_empty() && call.foreach.is_none()
}

/// A reply's result kept as text where it can be ([`super::text`]): its JSON text, or the part
/// a key-path `select` takes (a null it selects is a value); a `select` that is not a key path,
/// or that the text cannot answer as jq would, runs on the parsed value ([`value_of`]). Err as
/// [`value_of`]'s.
fn text_of(reply: Reply, select: Option<&Program>) -> Result<Ended, String> {
    if !(200..300).contains(&reply.status) {
        return Err(format!("status {}", reply.status));
    }
    let keys = select.map(Program::keys);
    let range = match keys {
        None => text::check(&reply.body).ok_or("not json")?,
        // A path of keys is read off the text in the pass that checks it.
        Some(Some(keys)) => match text::check_select(&reply.body, keys).ok_or("not json")? {
            (_, Some(Some(part))) => part,
            (_, Some(None)) => return Ok(Ended::Done(Value::Null)),
            (_, None) => return value_of(reply, select).map(Ended::Done),
        },
        Some(None) => {
            text::check(&reply.body).ok_or("not json")?;
            return value_of(reply, select).map(Ended::Done);
        }
    };
    let mut body = reply.body;
    body.truncate(range.end);
    body.drain(..range.start);
    Ok(Ended::Raw(body))
}

/// A reply's JSON value after `select`. Err: a non-2xx status, a body that is not JSON, or
/// `select` failing.
fn value_of(reply: Reply, select: Option<&Program>) -> Result<Value, String> {
    if !(200..300).contains(&reply.status) {
        return Err(format!("status {}", reply.status));
    }
    let value: Value = serde_json::from_slice(&reply.body).map_err(|_| "not json".to_string())?;
    match select {
        None => Ok(value),
        Some(p) => match p.run(value, &[]) {
            Ok(v) => Ok(v.unwrap_or(Value::Null)),
            Err(message) => Err(format!("select: {message}")),
        },
    }
}

/// The composite answer (module doc), written straight to its JSON text: the values (a
/// result kept as text copied as it is), and `_meta` at its key's place among them.
fn compose(c: &Compiled, states: Vec<State>, ms: &[Option<u64>], truncated: u64) -> Answer {
    let plan = &c.plan;
    let meta = match meta(c, &states, ms, truncated) {
        Ok(meta) => meta,
        Err(e) => return unwritable(&e),
    };
    let results: usize = states
        .iter()
        .map(|s| match s {
            State::Raw(text) => text.len(),
            _ => 64,
        })
        .sum();
    let mut out = Vec::with_capacity(32 * states.len() + results + meta.len());
    let written = match &c.shape {
        None => {
            let entries = plan.by_name.iter().map(|&i| {
                let call = &plan.calls[i];
                let piece = match &states[i] {
                    State::Done(v) | State::Partial(v, _) => Piece::Value(v),
                    State::Raw(text) => Piece::Raw(text),
                    _ => call.default.as_ref().map_or(Piece::Null, Piece::Value),
                };
                (call.name.as_str(), piece)
            });
            write_object(&mut out, entries, &meta)
        }
        Some(shape) => {
            // The values move into shape's input: nothing reads the states after this.
            let mut results = Map::new();
            for (call, state) in plan.calls.iter().zip(states) {
                let value = match state {
                    State::Done(v) | State::Partial(v, _) => v,
                    // Not kept as text under a shape (`passes_through`); read it if it were.
                    State::Raw(text) => serde_json::from_slice(&text).unwrap_or(Value::Null),
                    _ => call.default.clone().unwrap_or(Value::Null),
                };
                results.insert(call.name.clone(), value);
            }
            match shape.run(Value::Object(results), &[]) {
                Ok(Some(Value::Object(map))) => {
                    let entries = map
                        .iter()
                        .filter(|(k, _)| k.as_str() != META)
                        .map(|(k, v)| (k.as_str(), Piece::Value(v)));
                    write_object(&mut out, entries, &meta)
                }
                // Not an object: no `_meta`.
                Ok(Some(v)) => serde_json::to_writer(&mut out, &v),
                Ok(None) => {
                    return Answer::Error {
                        status: 502,
                        message: "Aggregate shape gave no output".into(),
                    }
                }
                Err(message) => {
                    return Answer::Error {
                        status: 502,
                        message: format!("Aggregate shape failed: {message}"),
                    }
                }
            }
        }
    };
    if let Err(e) = written {
        return unwritable(&e);
    }
    match String::from_utf8(out) {
        Ok(body) => Answer::Composite(body),
        Err(_) => unwritable(&"not UTF-8"),
    }
}

/// The composite's metadata key.
const META: &str = "_meta";

/// A composite that could not be written (a value serde_json refuses to write: none is
/// expected, the results being JSON it read).
fn unwritable(e: &dyn fmt::Display) -> Answer {
    Answer::Error {
        status: 502,
        message: format!("Aggregate composite could not be written: {e}"),
    }
}

/// A value of the composite.
enum Piece<'a> {
    Value(&'a Value),
    /// JSON text, checked.
    Raw(&'a [u8]),
    Null,
}

/// Writes the object of `entries` (in key order) with `"_meta": meta` at its key's place, as
/// a JSON object map orders its keys (bytewise).
fn write_object<'a>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (&'a str, Piece<'a>)>,
    meta: &[u8],
) -> serde_json::Result<()> {
    out.push(b'{');
    let mut meta_left = true;
    for (key, piece) in entries {
        if meta_left && key > META {
            out.extend_from_slice(b"\"_meta\":");
            out.extend_from_slice(meta);
            out.push(b',');
            meta_left = false;
        }
        serde_json::to_writer(&mut *out, key)?;
        out.push(b':');
        match piece {
            Piece::Value(v) => serde_json::to_writer(&mut *out, v)?,
            Piece::Raw(text) => out.extend_from_slice(text),
            Piece::Null => out.extend_from_slice(b"null"),
        }
        out.push(b',');
    }
    if meta_left {
        out.extend_from_slice(b"\"_meta\":");
        out.extend_from_slice(meta);
    } else {
        out.pop();
    }
    out.push(b'}');
    Ok(())
}

/// `_meta`'s JSON text (module doc), its keys in order as a JSON object map writes them; the
/// calls in `available`, `errors` and `ms` by name, in `skipped` and `truncated` in start
/// order.
fn meta(
    c: &Compiled,
    states: &[State],
    ms: &[Option<u64>],
    truncated: u64,
) -> serde_json::Result<Vec<u8>> {
    let plan = &c.plan;
    let mut out = Vec::with_capacity(64 + 48 * plan.calls.len());
    out.extend_from_slice(b"{\"available\":");
    by_name(&mut out, plan, |i| Some(states[i].available()))?;
    out.extend_from_slice(b",\"errors\":");
    by_name(&mut out, plan, |i| match &states[i] {
        State::Failed(reason) | State::Partial(_, reason) => Some(reason.as_str()),
        _ => None,
    })?;
    out.extend_from_slice(b",\"ms\":");
    by_name(&mut out, plan, |i| ms[i])?;
    let partial = states
        .iter()
        .any(|s| matches!(s, State::Failed(_) | State::Partial(..)));
    out.extend_from_slice(if partial {
        b",\"partial\":true"
    } else {
        b",\"partial\":false"
    });
    out.extend_from_slice(b",\"skipped\":");
    names(&mut out, plan, |i| matches!(states[i], State::Skipped))?;
    out.extend_from_slice(b",\"truncated\":");
    names(&mut out, plan, |i| truncated & (1 << i) != 0)?;
    out.push(b'}');
    Ok(out)
}

/// The object `{"<call>": value, ...}` of the calls `value` gives one for, in name order.
fn by_name<T: serde::Serialize>(
    out: &mut Vec<u8>,
    plan: &Plan,
    value: impl Fn(usize) -> Option<T>,
) -> serde_json::Result<()> {
    out.push(b'{');
    let mut first = true;
    for &i in &plan.by_name {
        let Some(v) = value(i) else { continue };
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &plan.calls[i].name)?;
        out.push(b':');
        serde_json::to_writer(&mut *out, &v)?;
    }
    out.push(b'}');
    Ok(())
}

/// The array of the names of the calls in `set`, in start order.
fn names(out: &mut Vec<u8>, plan: &Plan, set: impl Fn(usize) -> bool) -> serde_json::Result<()> {
    out.push(b'[');
    let mut first = true;
    for (_, call) in plan.calls.iter().enumerate().filter(|(i, _)| set(*i)) {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &call.name)?;
    }
    out.push(b']');
    Ok(())
}
