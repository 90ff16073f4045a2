//! The aggregate compiler: [`Plan::compile`] turns an [`AggregateSpec`] into a [`Plan`], once,
//! at load; the executor then asks the plan what may start ([`Plan::ready`]), what a failure
//! skips ([`Plan::downstream`]), and renders each request's path ([`Call::render_path`],
//! [`Call::items`]). Pure: no I/O, no clock.
//!
//! ## Path templates
//! A call's `path` is literal text (kept exactly as written: it must start with `/` and be
//! visible ASCII without `#`) and placeholders, parsed once into [`Segment`]s:
//! - `{name}`: a parameter (route parameter, then query parameter: the executor's lookup
//!   decides) unless `name` is a call's name, in which case it is that call's whole result.
//! - `{call.field.sub}`: a placeholder whose head (the text before the first `.`) contains a
//!   dot MUST name a call: an unknown head is an error, never a parameter. A field that is a
//!   decimal number indexes an array (`{order.items.0.id}`).
//! - `{each}` / `{each.field}`: the current element of a `foreach` call; an error elsewhere.
//!   So `each` is reserved and cannot be a call's name.
//! - `{{` and `}}` are a literal `{` and `}`. Anything else malformed (an unclosed `{`, a stray
//!   `}`, an empty name or field, a character other than `A-Z a-z 0-9 _ -` in a name) is an
//!   error naming the call and the byte position in its `path`.
//!
//! Rendering: a string is used as is, a number or boolean as its JSON text, an array as its
//! elements rendered and joined with `,`; a missing or null value is
//! [`RenderError::MissingValue`], an object (or an array holding one) is
//! [`RenderError::NotScalar`]. Every rendered value is percent-encoded (RFC 3986 §2.1,
//! uppercase hex) except the unreserved characters (§2.3: `A-Z a-z 0-9 - . _ ~`), in the path
//! and in the query alike, so a value can never add a path segment, a query parameter or a
//! fragment; the joining `,` (a sub-delim, §2.2) is the template's, not the value's.
//!
//! ## Dependencies
//! A call depends on the calls its placeholders name, on its `foreach` head (which must be a
//! call), and on the calls its `when` names. `when` is jq text, treated as opaque except for
//! this rule: outside string literals and `#` comments, every `.ident` that starts a path
//! (the `.` is not preceded by an identifier character, `.`, `)`, `]`, `}`, `?` or a closing
//! quote) names the call `ident`, and an `ident` that is not a call is an error. A bare `.`
//! not followed by an identifier (`.`, `.[...]`, `."x"`, but not `..`) is an error too: it
//! would read results without naming which, so the plan could not know what to wait for. So
//! write conditions as paths from the results' root (`.user.plan == "business"`, not
//! `.user | .plan`, whose `.plan` would be read as a call). String interpolation `\(...)` is
//! code and is scanned like the rest. The calls a `when` names ([`Call::when_deps`]) are also
//! all it reads: its input is the object of their results alone, whatever else has ended by
//! then, so its answer never depends on timing; a `when` that names no call (`has("user")`,
//! `true`) reads `{}`.
//!
//! A dependency cycle (self-reference included) is an error naming it (`a -> b -> a`: `a`
//! waits for `b`, which waits for `a`).
//!
//! ## Start order and critical path
//! [`Plan::calls`] is in start order: a topological order where each call follows the calls
//! it waits for, ties in file order. A call's worst case is its own `timeout` (or the
//! aggregate's), for a `foreach` call too (its timeout bounds the whole call, every item);
//! a chain's is the sum; the critical path is the chain with the largest sum (ties: the one
//! ending, then branching, earliest in start order), and the aggregate's `timeout` caps it
//! ([`Plan::worst_case`]).

use std::fmt::{self, Write as _};
use std::time::Duration;

use serde_json::Value;

use super::{AggregateSpec, CallSpec, DEFAULT_CONCURRENCY, DEFAULT_MAX_ITEMS, MAX_CALLS};

/// A parsed piece of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text kept as written (`{{`/`}}` already unescaped).
    Literal(String),
    /// `{name}`: a route or query parameter.
    Param(String),
    /// `{call.field...}`: a field of the result of the call at this index of [`Plan::calls`]
    /// (no fields: the whole result).
    Result {
        call: usize,
        name: String,
        fields: Vec<String>,
    },
    /// `{each}` / `{each.field...}`: the current `foreach` element.
    Each(Vec<String>),
}

/// A `foreach` call's fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreach {
    /// The call whose result holds the array (index in [`Plan::calls`]).
    pub call: usize,
    /// The fields leading to the array in that result (none: the result is the array).
    pub fields: Vec<String>,
    /// At most this many elements are requested; the rest are cut (`_meta.truncated`).
    pub max_items: usize,
    /// At most this many item requests in flight at once.
    pub concurrency: usize,
}

/// One compiled call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub upstream: String,
    pub required: bool,
    /// The effective timeout: the call's own, or the aggregate's.
    pub timeout: Duration,
    /// Whether `timeout` is the call's own (false: the aggregate's).
    pub own_timeout: bool,
    pub default: Option<Value>,
    pub select: Option<String>,
    pub when: Option<String>,
    pub foreach: Option<Foreach>,
    /// The path template, parsed.
    pub segments: Vec<Segment>,
    /// The calls it waits for: bit `i` is [`Plan::calls`]`[i]`.
    pub deps: u64,
    /// The calls its `when` names (a subset of `deps`): the only results `when` reads.
    pub when_deps: u64,
    /// The calls that wait for it (indices in [`Plan::calls`], ascending).
    pub dependents: Vec<usize>,
    /// Its position in the file (the spec's `calls`).
    pub file_index: usize,
}

/// An aggregate, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    /// The deadline for the whole aggregate.
    pub timeout: Duration,
    /// The calls in start order.
    pub calls: Vec<Call>,
    /// The critical path: indices in [`Plan::calls`], first to last.
    pub critical_path: Vec<usize>,
    /// Indices in [`Plan::calls`] in the order of the calls' names (bytewise, as a JSON
    /// object map orders its keys): the order of the composite's keys.
    pub by_name: Vec<usize>,
    /// The sum of the critical path's timeouts (uncapped).
    pub critical_sum: Duration,
}

/// Why a spec does not compile. Each is a config error (the config layer adds file:line:col).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("aggregate {aggregate}: has no calls")]
    NoCalls { aggregate: String },
    #[error("aggregate {aggregate}: {count} calls, at most {max} are allowed", max = MAX_CALLS)]
    TooManyCalls { aggregate: String, count: usize },
    #[error("aggregate {aggregate}: `timeout` must be more than 0")]
    ZeroTimeout { aggregate: String },
    #[error("aggregate {aggregate}: call name {call:?} {reason}")]
    BadCallName {
        aggregate: String,
        call: String,
        reason: &'static str,
    },
    #[error("aggregate {aggregate}: call {call} is defined twice")]
    DuplicateCall { aggregate: String, call: String },
    #[error("aggregate {aggregate}, call {call}: {field}: {reason}")]
    BadField {
        aggregate: String,
        call: String,
        field: &'static str,
        reason: String,
    },
    #[error("aggregate {aggregate}, call {call}: path, byte {pos}: {reason}")]
    Placeholder {
        aggregate: String,
        call: String,
        pos: usize,
        reason: String,
    },
    #[error("aggregate {aggregate}, call {call}: when, byte {pos}: {reason}")]
    When {
        aggregate: String,
        call: String,
        pos: usize,
        reason: String,
    },
    #[error(
        "aggregate {aggregate}, call {call}: {field} refers to {reference:?}, which is not a call"
    )]
    UnknownCall {
        aggregate: String,
        call: String,
        field: &'static str,
        reference: String,
    },
    #[error("aggregate {aggregate}: dependency cycle {cycle}")]
    Cycle { aggregate: String, cycle: String },
}

/// Why a call's path could not be rendered: that call fails (and its dependents are skipped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The placeholder's value is absent or null.
    #[error("no value for {{{placeholder}}}")]
    MissingValue { placeholder: String },
    /// The value is an object, or an array holding an array or an object.
    #[error("{{{placeholder}}} is not a scalar or an array of scalars")]
    NotScalar { placeholder: String },
    /// A `foreach` source that is not an array.
    #[error("foreach {path} is not an array")]
    NotArray { path: String },
    /// In the path, a value that is exactly `.` or `..` (RFC 3986 §3.3 dot segments): sent,
    /// the upstream (or anything between) would resolve it to another resource (§5.2.4).
    #[error("bad value for {{{placeholder}}}: {value:?} is a dot segment")]
    DotSegment { placeholder: String, value: String },
}

/// What rendering reads: the request's parameters and the results so far.
pub trait Values {
    /// A route parameter, else a query parameter (already decoded).
    fn param(&self, name: &str) -> Option<&str>;
    /// The JSON result of [`Plan::calls`]`[call]`, if it has one.
    fn result(&self, call: usize) -> Option<&Value>;
}

const EACH: &str = "each";
/// The key of the composite's metadata: no call may take it.
const META: &str = "_meta";

/// A set of calls with the bits of `0..n` set.
fn all(n: usize) -> u64 {
    if n == 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

impl Plan {
    /// Compiles `spec` (see the module doc for the rules).
    pub fn compile(spec: &AggregateSpec) -> Result<Plan, PlanError> {
        let agg = || spec.name.clone();
        let n = spec.calls.len();
        if n == 0 {
            return Err(PlanError::NoCalls { aggregate: agg() });
        }
        if n > MAX_CALLS {
            return Err(PlanError::TooManyCalls {
                aggregate: agg(),
                count: n,
            });
        }
        if spec.timeout.is_zero() {
            return Err(PlanError::ZeroTimeout { aggregate: agg() });
        }
        for (i, c) in spec.calls.iter().enumerate() {
            check_call_name(&spec.name, &c.name)?;
            if spec.calls[..i].iter().any(|p| p.name == c.name) {
                return Err(PlanError::DuplicateCall {
                    aggregate: agg(),
                    call: c.name.clone(),
                });
            }
        }
        let index_of = |name: &str| spec.calls.iter().position(|c| c.name == name);

        // Pass 1, in file order: parse, with call references as file indices.
        let mut parsed = Vec::with_capacity(n);
        for c in &spec.calls {
            parsed.push(parse_call(spec, c, &index_of)?);
        }

        // Start order: Kahn's algorithm, always taking the earliest call in file order whose
        // dependencies are all placed (n <= 64: quadratic is nothing).
        let mut order: Vec<usize> = Vec::with_capacity(n);
        let mut placed = 0u64;
        while order.len() < n {
            let next = (0..n).find(|&i| placed & (1 << i) == 0 && parsed[i].deps & !placed == 0);
            match next {
                Some(i) => {
                    placed |= 1 << i;
                    order.push(i);
                }
                None => {
                    return Err(PlanError::Cycle {
                        aggregate: agg(),
                        cycle: find_cycle(spec, &parsed, placed),
                    })
                }
            }
        }
        let mut position = vec![0usize; n];
        for (p, &f) in order.iter().enumerate() {
            position[f] = p;
        }

        // Pass 2: renumber every reference from file index to start-order index.
        let remap = |set: u64| -> u64 {
            (0..n)
                .filter(|&f| set & (1 << f) != 0)
                .fold(0u64, |acc, f| acc | (1 << position[f]))
        };
        let mut parsed: Vec<Option<Parsed>> = parsed.into_iter().map(Some).collect();
        let mut calls: Vec<Call> = Vec::with_capacity(n);
        for &f in &order {
            let p = parsed[f].take().expect("each call is placed once");
            let c = &spec.calls[f];
            let segments = p
                .segments
                .into_iter()
                .map(|s| match s {
                    Segment::Result { call, name, fields } => Segment::Result {
                        call: position[call],
                        name,
                        fields,
                    },
                    other => other,
                })
                .collect();
            let foreach = p.foreach.map(|fe| Foreach {
                call: position[fe.call],
                ..fe
            });
            calls.push(Call {
                name: c.name.clone(),
                upstream: c.upstream.clone(),
                required: c.required,
                timeout: c.timeout.unwrap_or(spec.timeout),
                own_timeout: c.timeout.is_some(),
                default: c.default.clone(),
                select: c.select.clone(),
                when: c.when.clone(),
                foreach,
                segments,
                deps: remap(p.deps),
                when_deps: remap(p.when_deps),
                dependents: Vec::new(),
                file_index: f,
            });
        }
        for i in 0..n {
            for d in 0..n {
                if calls[i].deps & (1 << d) != 0 {
                    calls[d].dependents.push(i);
                }
            }
        }

        // Critical path: the longest chain by timeouts, over the start order (each call's
        // dependencies come before it).
        let mut finish = vec![Duration::ZERO; n];
        let mut via: Vec<Option<usize>> = vec![None; n];
        for i in 0..n {
            let mut best: Option<usize> = None;
            for d in 0..i {
                if calls[i].deps & (1 << d) != 0 && best.is_none_or(|b| finish[d] > finish[b]) {
                    best = Some(d);
                }
            }
            via[i] = best;
            finish[i] = best.map_or(Duration::ZERO, |b| finish[b]) + calls[i].timeout;
        }
        let mut end = 0;
        for i in 1..n {
            if finish[i] > finish[end] {
                end = i;
            }
        }
        let mut critical_path = vec![end];
        while let Some(prev) = via[*critical_path.last().expect("not empty")] {
            critical_path.push(prev);
        }
        critical_path.reverse();
        let mut by_name: Vec<usize> = (0..n).collect();
        by_name.sort_by(|&a, &b| calls[a].name.cmp(&calls[b].name));

        Ok(Plan {
            name: spec.name.clone(),
            timeout: spec.timeout,
            calls,
            critical_path,
            by_name,
            critical_sum: finish[end],
        })
    }

    /// The calls that may start now: not in `started`, and every call they wait for in
    /// `done` (finished: succeeded, failed or skipped; the executor decides what a failed
    /// dependency means, see [`Plan::downstream`]). Bits index [`Plan::calls`], in start order.
    pub fn ready(&self, done: u64, started: u64) -> impl Iterator<Item = usize> + '_ {
        self.calls
            .iter()
            .enumerate()
            .filter(move |(i, c)| started & (1 << i) == 0 && c.deps & !done == 0)
            .map(|(i, _)| i)
    }

    /// Every call that waits, directly or not, on `call`: the calls a failure of `call` skips.
    pub fn downstream(&self, call: usize) -> u64 {
        // Dependents always come later in start order, so one forward pass closes the set.
        let mut set = 1u64 << call;
        for (i, c) in self.calls.iter().enumerate().skip(call + 1) {
            if c.deps & set != 0 {
                set |= 1 << i;
            }
        }
        set & !(1u64 << call)
    }

    /// The set of every call.
    pub fn all(&self) -> u64 {
        all(self.calls.len())
    }

    /// The index in [`Plan::calls`] of the call named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.calls.iter().position(|c| c.name == name)
    }

    /// The worst-case time: the critical path's sum, capped by the aggregate's `timeout`.
    pub fn worst_case(&self) -> Duration {
        self.critical_sum.min(self.timeout)
    }

    /// The critical path as `a -> b -> c`.
    pub fn critical_path_text(&self) -> String {
        let names: Vec<&str> = self
            .critical_path
            .iter()
            .map(|&i| self.calls[i].name.as_str())
            .collect();
        names.join(" -> ")
    }

    /// What `dispatch explain AGGREGATE` prints: the calls in start order, what each waits
    /// for, the critical path and the worst-case time.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "aggregate {}: {} call{}, timeout {}",
            self.name,
            self.calls.len(),
            if self.calls.len() == 1 { "" } else { "s" },
            Dur(self.timeout)
        );
        out.push_str("start order:\n");
        let width = self.calls.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for (i, c) in self.calls.iter().enumerate() {
            let waits: Vec<&str> = (0..self.calls.len())
                .filter(|&d| c.deps & (1 << d) != 0)
                .map(|d| self.calls[d].name.as_str())
                .collect();
            let waits = if waits.is_empty() {
                "starts at once".to_string()
            } else {
                format!("waits for {}", waits.join(", "))
            };
            let _ = write!(
                out,
                "  {:>2}. {:<width$}  {}; {} {}; timeout {}{}",
                i + 1,
                c.name,
                waits,
                if c.required { "required," } else { "optional," },
                c.upstream,
                Dur(c.timeout),
                if c.own_timeout { "" } else { " (aggregate's)" },
            );
            if let Some(fe) = &c.foreach {
                let _ = write!(
                    out,
                    "; foreach {}{}{} (at most {} items, {} at once)",
                    self.calls[fe.call].name,
                    if fe.fields.is_empty() { "" } else { "." },
                    fe.fields.join("."),
                    fe.max_items,
                    fe.concurrency
                );
            }
            if let Some(w) = &c.when {
                let _ = write!(out, "; when {w}");
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "critical path: {} ({} by the calls' timeouts)",
            self.critical_path_text(),
            Dur(self.critical_sum)
        );
        if self.critical_sum > self.timeout {
            let _ = writeln!(
                out,
                "worst case: {} (the aggregate's timeout caps the path's {})",
                Dur(self.worst_case()),
                Dur(self.critical_sum)
            );
        } else {
            let _ = writeln!(out, "worst case: {}", Dur(self.worst_case()));
        }
        out
    }
}

impl Call {
    /// The path (and query) of one request of this call: `each` is the current element of a
    /// `foreach` call (ignored otherwise).
    pub fn render_path(
        &self,
        values: &impl Values,
        each: Option<&Value>,
    ) -> Result<String, RenderError> {
        // Room for the literals and a few short values: one allocation, as a rule.
        let mut out = String::with_capacity(64);
        let mut in_path = true;
        for s in &self.segments {
            let from = out.len();
            match s {
                Segment::Literal(text) => out.push_str(text),
                Segment::Param(name) => match values.param(name) {
                    Some(v) => encode_into(&mut out, v),
                    None => {
                        return Err(RenderError::MissingValue {
                            placeholder: name.clone(),
                        })
                    }
                },
                Segment::Result { call, fields, .. } => {
                    let v = values.result(*call).and_then(|v| walk(v, fields));
                    render_value(&mut out, v, || self.placeholder_text(s))?;
                }
                Segment::Each(fields) => {
                    let v = each.and_then(|v| walk(v, fields));
                    render_value(&mut out, v, || self.placeholder_text(s))?;
                }
            }
            // `encode_into` keeps `.`, so a value of `.` or `..` (decoded `%2E` too) renders as
            // itself. In the query it is harmless.
            let value = &out[from..];
            if in_path && !matches!(s, Segment::Literal(_)) && matches!(value, "." | "..") {
                return Err(RenderError::DotSegment {
                    placeholder: self.placeholder_text(s),
                    value: value.to_string(),
                });
            }
            // Values are encoded, so a `?` can only be a literal's: after it, the query.
            in_path = in_path && !(matches!(s, Segment::Literal(_)) && value.contains('?'));
        }
        Ok(out)
    }

    /// A `foreach` call's elements to request, in order, cut at `max_items`, and whether the
    /// array was longer (`_meta.truncated`). `None` for a call without `foreach`.
    pub fn items<'v>(
        &self,
        values: &'v impl Values,
        plan: &Plan,
    ) -> Option<Result<(&'v [Value], bool), RenderError>> {
        let fe = self.foreach.as_ref()?;
        let source = || {
            let mut s = plan.calls[fe.call].name.clone();
            for f in &fe.fields {
                s.push('.');
                s.push_str(f);
            }
            s
        };
        Some(
            match values.result(fe.call).and_then(|v| walk(v, &fe.fields)) {
                None | Some(Value::Null) => Err(RenderError::MissingValue {
                    placeholder: source(),
                }),
                Some(Value::Array(items)) => {
                    let cut = items.len().min(fe.max_items);
                    Ok((&items[..cut], items.len() > fe.max_items))
                }
                Some(_) => Err(RenderError::NotArray { path: source() }),
            },
        )
    }

    /// A placeholder written back as its text (without braces), for error messages.
    fn placeholder_text(&self, s: &Segment) -> String {
        let (head, fields) = match s {
            Segment::Each(fields) => (EACH, fields),
            Segment::Result { name, fields, .. } => (name.as_str(), fields),
            Segment::Param(p) => return p.clone(),
            Segment::Literal(l) => return l.clone(),
        };
        let mut t = head.to_string();
        for f in fields {
            t.push('.');
            t.push_str(f);
        }
        t
    }
}

/// Follows `fields` into `v`: an object by key, an array by a decimal index.
fn walk<'v>(mut v: &'v Value, fields: &[String]) -> Option<&'v Value> {
    for f in fields {
        v = match v {
            Value::Object(m) => m.get(f)?,
            Value::Array(a) => a.get(f.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Appends `v` rendered and encoded (module doc: "Rendering").
fn render_value(
    out: &mut String,
    v: Option<&Value>,
    placeholder: impl Fn() -> String,
) -> Result<(), RenderError> {
    match v {
        None | Some(Value::Null) => Err(RenderError::MissingValue {
            placeholder: placeholder(),
        }),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !render_scalar(out, item) {
                    return Err(RenderError::NotScalar {
                        placeholder: placeholder(),
                    });
                }
            }
            Ok(())
        }
        Some(v) => {
            if render_scalar(out, v) {
                Ok(())
            } else {
                Err(RenderError::NotScalar {
                    placeholder: placeholder(),
                })
            }
        }
    }
}

/// Appends a string, number or boolean encoded; false for anything else. A null element of
/// an array renders empty (the array itself is present).
fn render_scalar(out: &mut String, v: &Value) -> bool {
    match v {
        Value::String(s) => encode_into(out, s),
        Value::Number(n) => encode_into(out, &n.to_string()),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => {}
        Value::Array(_) | Value::Object(_) => return false,
    }
    true
}

/// RFC 3986 §2.1/§2.3: unreserved bytes kept, every other byte `%XX` (uppercase).
fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// A duration as an operator writes it: `3s`, `500ms`, `1.5ms`.
struct Dur(Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{d:?}")
        }
    }
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn check_call_name(aggregate: &str, name: &str) -> Result<(), PlanError> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if !name.bytes().all(is_name_char) {
        Some("may only hold A-Z a-z 0-9 _ - (placeholders name calls by it)")
    } else if name == EACH {
        Some("is reserved for the foreach element ({each})")
    } else if name == META {
        Some("is reserved for the composite's metadata (_meta)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PlanError::BadCallName {
            aggregate: aggregate.to_string(),
            call: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A call after pass 1: call references are file indices.
struct Parsed {
    segments: Vec<Segment>,
    foreach: Option<Foreach>,
    deps: u64,
    when_deps: u64,
}

fn parse_call(
    spec: &AggregateSpec,
    c: &CallSpec,
    index_of: &impl Fn(&str) -> Option<usize>,
) -> Result<Parsed, PlanError> {
    let bad = |field: &'static str, reason: String| PlanError::BadField {
        aggregate: spec.name.clone(),
        call: c.name.clone(),
        field,
        reason,
    };
    let unknown = |field: &'static str, reference: &str| PlanError::UnknownCall {
        aggregate: spec.name.clone(),
        call: c.name.clone(),
        field,
        reference: reference.to_string(),
    };
    if c.upstream.is_empty() {
        return Err(bad("upstream", "is empty".into()));
    }
    if c.timeout.is_some_and(|t| t.is_zero()) {
        return Err(bad("timeout", "must be more than 0".into()));
    }
    let mut deps = 0u64;

    let segments = parse_template(&c.path, c.foreach.is_some()).map_err(|(pos, reason)| {
        PlanError::Placeholder {
            aggregate: spec.name.clone(),
            call: c.name.clone(),
            pos,
            reason,
        }
    })?;
    let mut resolved = Vec::with_capacity(segments.len());
    for s in segments {
        resolved.push(match s {
            Raw::Literal(t) => Segment::Literal(t),
            Raw::Each(fields) => Segment::Each(fields),
            Raw::Ref(mut parts) => {
                let head = parts.remove(0);
                match index_of(&head) {
                    Some(i) => {
                        deps |= 1 << i;
                        Segment::Result {
                            call: i,
                            name: head,
                            fields: parts,
                        }
                    }
                    None if parts.is_empty() => Segment::Param(head),
                    None => return Err(unknown("path", &head)),
                }
            }
        });
    }

    let foreach = match &c.foreach {
        None => {
            if c.max_items.is_some() {
                return Err(bad("max_items", "is only meaningful with foreach".into()));
            }
            if c.concurrency.is_some() {
                return Err(bad("concurrency", "is only meaningful with foreach".into()));
            }
            None
        }
        Some(source) => {
            let parts: Vec<&str> = source.split('.').collect();
            if parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(is_name_char))
            {
                return Err(bad(
                    "foreach",
                    format!(
                        "{source:?} is not a path like call.field (A-Z a-z 0-9 _ - between dots)"
                    ),
                ));
            }
            let call = index_of(parts[0]).ok_or_else(|| unknown("foreach", parts[0]))?;
            deps |= 1 << call;
            let max_items = c.max_items.unwrap_or(DEFAULT_MAX_ITEMS);
            let concurrency = c.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
            if max_items == 0 {
                return Err(bad("max_items", "must be at least 1".into()));
            }
            if concurrency == 0 {
                return Err(bad("concurrency", "must be at least 1".into()));
            }
            Some(Foreach {
                call,
                fields: parts[1..].iter().map(|p| p.to_string()).collect(),
                max_items,
                concurrency,
            })
        }
    };

    let mut when_deps = 0u64;
    if let Some(w) = &c.when {
        for (pos, name) in when_refs(w).map_err(|(pos, reason)| PlanError::When {
            aggregate: spec.name.clone(),
            call: c.name.clone(),
            pos,
            reason,
        })? {
            match index_of(&name) {
                Some(i) => when_deps |= 1 << i,
                None => {
                    return Err(PlanError::When {
                        aggregate: spec.name.clone(),
                        call: c.name.clone(),
                        pos,
                        reason: format!(
                            ".{name} is not a call (a condition reads results as .call.field from the root)"
                        ),
                    })
                }
            }
        }
    }
    Ok(Parsed {
        segments: resolved,
        foreach,
        deps: deps | when_deps,
        when_deps,
    })
}

/// A template piece before call names are resolved.
#[derive(Debug)]
enum Raw {
    Literal(String),
    /// `{a.b.c}`: its dot-separated parts.
    Ref(Vec<String>),
    Each(Vec<String>),
}

/// Parses a path template (module doc: "Path templates"); errors are `(byte, reason)`.
fn parse_template(path: &str, in_foreach: bool) -> Result<Vec<Raw>, (usize, String)> {
    if !path.starts_with('/') {
        return Err((0, "must start with /".into()));
    }
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                lit.push('{');
                i += 2;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                lit.push('}');
                i += 2;
            }
            b'}' => return Err((i, "stray } (write }} for a literal })".into())),
            b'{' => {
                let close = path[i + 1..]
                    .find(['{', '}'])
                    .map(|o| i + 1 + o)
                    .filter(|&c| bytes[c] == b'}')
                    .ok_or((i, "unclosed { (write {{ for a literal {)".to_string()))?;
                let inner = &path[i + 1..close];
                if inner.is_empty() {
                    return Err((i, "empty placeholder {}".into()));
                }
                let mut parts = Vec::new();
                let mut at = i + 1;
                for part in inner.split('.') {
                    if part.is_empty() {
                        return Err((at, format!("empty name in {{{inner}}}")));
                    }
                    if let Some(o) = part.bytes().position(|b| !is_name_char(b)) {
                        return Err((
                            at + o,
                            format!("{{{inner}}}: only A-Z a-z 0-9 _ - and . are allowed"),
                        ));
                    }
                    parts.push(part.to_string());
                    at += part.len() + 1;
                }
                if !lit.is_empty() {
                    out.push(Raw::Literal(std::mem::take(&mut lit)));
                }
                if parts[0] == EACH {
                    if !in_foreach {
                        return Err((i, format!("{{{inner}}} outside a foreach call")));
                    }
                    parts.remove(0);
                    out.push(Raw::Each(parts));
                } else {
                    out.push(Raw::Ref(parts));
                }
                i = close + 1;
            }
            b if b <= b' ' || b >= 0x7f || b == b'#' => {
                return Err((
                    i,
                    "literal text must be visible ASCII without # (percent-encode it)".into(),
                ))
            }
            b => {
                lit.push(b as char);
                i += 1;
            }
        }
    }
    if !lit.is_empty() {
        out.push(Raw::Literal(lit));
    }
    Ok(out)
}

/// The call names a `when` program reads, with their byte positions (module doc:
/// "Dependencies"). Errors are `(byte, reason)`.
fn when_refs(program: &str) -> Result<Vec<(usize, String)>, (usize, String)> {
    let b = program.as_bytes();
    let mut refs = Vec::new();
    // Each open string holds the paren depth of the code around it; each open `\(` the depth
    // at which its `)` returns to the string.
    let mut in_string = false;
    let mut interp: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' if b.get(i + 1) == Some(&b'(') => {
                    in_string = false;
                    depth += 1;
                    interp.push(depth);
                    i += 2;
                    continue;
                }
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => depth += 1,
            b')' => {
                if interp.last() == Some(&depth) {
                    interp.pop();
                    in_string = true;
                }
                depth = depth.saturating_sub(1);
            }
            b'.' => {
                let prev = if i == 0 { None } else { Some(b[i - 1]) };
                let continues = prev.is_some_and(|p| {
                    is_ident(p) || matches!(p, b'.' | b')' | b']' | b'}' | b'?' | b'"' | b'$')
                });
                if b.get(i + 1) == Some(&b'.') {
                    // `..`: recursive descent; reads everything below the current value.
                    if !continues {
                        return Err((
                            i,
                            "`..` reads every result; name the calls: .call.field".into(),
                        ));
                    }
                    i += 2;
                    continue;
                }
                if !continues {
                    let start = i + 1;
                    let mut end = start;
                    while end < b.len() && is_ident(b[end]) {
                        end += 1;
                    }
                    if end == start || b[start].is_ascii_digit() {
                        return Err((
                            i,
                            "a bare `.` reads the results as a whole; name the calls: .call.field"
                                .into(),
                        ));
                    }
                    refs.push((i, program[start..end].to_string()));
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if in_string || !interp.is_empty() {
        return Err((b.len(), "unterminated string".into()));
    }
    Ok(refs)
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A cycle among the calls not `placed` (each of them waits, directly or not, on one).
fn find_cycle(spec: &AggregateSpec, parsed: &[Parsed], placed: u64) -> String {
    let n = parsed.len();
    let stuck = |i: usize| placed & (1 << i) == 0;
    // Walk from the first stuck call along its first stuck dependency until a call repeats.
    let mut path: Vec<usize> = Vec::new();
    let mut at = (0..n)
        .find(|&i| stuck(i))
        .expect("a cycle leaves a call unplaced");
    while !path.contains(&at) {
        path.push(at);
        at = (0..n)
            .find(|&d| parsed[at].deps & (1 << d) != 0 && stuck(d))
            .expect("an unplaced call waits on an unplaced call");
    }
    let from = path.iter().position(|&p| p == at).expect("repeated");
    let mut names: Vec<&str> = path[from..]
        .iter()
        .map(|&i| spec.calls[i].name.as_str())
        .collect();
    names.push(&spec.calls[at].name);
    names.join(" -> ")
}
