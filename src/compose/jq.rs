//! The jq engine of composition: transforms' `request` / `response` programs and aggregates'
//! `select`, `shape` and `when`, compiled once at load and run per request (jaq: jaq-core,
//! jaq-std, jaq-json).
//!
//! Key types: [`Program`] (a compiled filter behind an `Arc`: `Clone + Send + Sync`, shared by
//! every worker of a config generation), [`CompileError`] (the byte offset in the program text
//! of the failing token, so the config layer reports `file:line:col` inside the program),
//! [`BodyError`] (what [`Program::run_body`] gets wrong: the input, or the program).
//!
//! The things to know:
//! - A run yields the program's FIRST output (jq's `first(f)`); none is `Ok(None)`. Values
//!   cross as JSON: integers stay exact (no `f64` round trip for `i64` / `u64`), object keys keep
//!   their order. A number jq computes as a float that is not finite becomes what jq prints:
//!   NaN is `null`, infinities are `±f64::MAX`.
//! - A program that is a path alone (`.`, `.a.b`, `.a[0]`, `.["k"]`: an aggregate's usual
//!   `select`) is answered by [`Program::run`] on the `serde_json::Value` itself, moving the
//!   selected part out without converting anything (~100x cheaper than through jaq). It answers
//!   only where jq's answer is a part of the input or null (a missing key or index, anything of
//!   null); a type error or a too-deep output goes through jaq, for jaq's own message. An
//!   object built of such paths (`{a: .x.y, b: .z, c}`: an aggregate's usual `shape`) is built
//!   the same way, each value cloned out of the input, under the same conditions for every
//!   value (else jaq runs the whole program).
//! - The whole jq builtin library is available except `env` (the gateway's environment holds
//!   its secrets: a program that names it does not compile) and that `halt` / `halt_error`
//!   (which would end a jq process) end the run with an error instead, and `input` / `inputs`
//!   do not exist (one input per run).
//! - A program's output nests at most [`MAX_DEPTH`] levels deep (serde_json's own parse limit),
//!   and an error message quoting a value is cut at [`MAX_MESSAGE`] bytes: a message ends up in
//!   a client's error body and the log, and must neither echo a whole body nor overflow a stack.
//! - Programs are operator configuration and run to completion on the worker: jq has no step
//!   budget, so a program that never ends (`until(false; .)`) stalls its worker. Config review
//!   is the guard, as for any gateway script (nginx's njs, Envoy's Lua).

use std::fmt;
use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data::JustLut, Ctx, Native, Vars};
use jaq_json::{Num, Val};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde_json::Value;

type Data = JustLut<Val>;
type Filter = jaq_core::compile::Filter<Native<Data>>;

/// The deepest nesting a program's output may have (serde_json's default parse limit).
pub const MAX_DEPTH: usize = 128;
/// The longest error message a run returns, in bytes (cut at a char boundary, `…` appended).
pub const MAX_MESSAGE: usize = 240;

/// A compiled jq program. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Program {
    compiled: Arc<Compiled>,
}

struct Compiled {
    filter: Filter,
    /// How many global variables `run` expects, in the order given to `compile`.
    vars: usize,
    /// The program's steps when it is a path alone (`.`, `.a.b`, `.a[0]`): [`Program::run`]
    /// then walks the `serde_json::Value` itself (see [`path`]).
    path: Option<Vec<Step>>,
    /// The keys when the program is a path of object keys alone (`.a.b`): [`Program::keys`].
    keys: Option<Vec<String>>,
    /// The entries when the program builds an object of paths alone (`{a: .x.y, c}`): run as
    /// [`Program::run`]'s path fast path does, per value (see [`object`]).
    object: Option<Vec<(String, Vec<Step>)>>,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("vars", &self.compiled.vars)
            .field("path", &self.compiled.path.is_some())
            .finish_non_exhaustive()
    }
}

/// A program that does not compile: where in its text, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Byte offset of the failing token in the program text (the text's length at its end).
    pub offset: usize,
    /// What is wrong, e.g. `expected term, found "}"`, `undefined filter "foo/0"`.
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

/// What [`Program::run_body`] gets wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The input bytes are not one JSON value (serde_json's message).
    NotJson(String),
    /// The program raised an error, or its output cannot be written as JSON.
    Failed(String),
}

impl Program {
    /// Compiles `text`; `vars` are global variable names without `$` (e.g. `["now"]`).
    pub fn compile(text: &str, vars: &[&str]) -> Result<Program, CompileError> {
        let names: Vec<String> = vars.iter().map(|v| format!("${v}")).collect();
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let arena = Arena::default();
        let program = File {
            code: text,
            path: (),
        };
        let modules = Loader::new(defs)
            .load(&arena, program)
            .map_err(|errors| load_error(text, errors))?;
        let filter = jaq_core::Compiler::default()
            .with_funs(funs())
            .with_global_vars(names.iter().map(String::as_str))
            .compile(modules)
            .map_err(|errors| {
                let first = errors.into_iter().flat_map(|(_, errs)| errs).next();
                match first {
                    Some((name, undefined)) => {
                        let what = match undefined {
                            jaq_core::compile::Undefined::Filter(arity) => {
                                format!("undefined filter \"{name}/{arity}\"")
                            }
                            other => format!("undefined {} \"{name}\"", other.as_str()),
                        };
                        CompileError {
                            offset: offset_in(text, name),
                            message: what,
                        }
                    }
                    None => CompileError {
                        offset: 0,
                        message: "the program does not compile".into(),
                    },
                }
            })?;
        let path = path(text);
        let keys = path
            .as_ref()
            .filter(|steps| !steps.is_empty())
            .and_then(|steps| {
                steps
                    .iter()
                    .map(|step| match step {
                        Step::Key(k) => Some(k.clone()),
                        Step::Index(_) => None,
                    })
                    .collect()
            });
        Ok(Program {
            compiled: Arc::new(Compiled {
                filter,
                vars: vars.len(),
                path,
                keys,
                object: object(text),
            }),
        })
    }

    /// The keys of a program that is a path of object keys alone (`.a`, `.a.b`, `."k"`; not
    /// `.`, no index), with no variables: what an aggregate's `select` takes from a body's
    /// text without parsing it ([`crate::compose::aggregate::text::select`]).
    pub fn keys(&self) -> Option<&[String]> {
        match self.compiled.vars {
            0 => self.compiled.keys.as_deref(),
            _ => None,
        }
    }

    /// Runs on one input; the FIRST output is the result (jq's `first(...)`): none -> `Ok(None)`;
    /// an error -> `Err(message)`. `vars` values in the order given at compile.
    pub fn run(&self, input: Value, vars: &[Value]) -> Result<Option<Value>, String> {
        if let (Some(steps), true) = (&self.compiled.path, vars.len() == self.compiled.vars) {
            // The fast path answers only where jq's answer is a value of the input; anything
            // else (a type error, an output too deep) is left to jaq, for jaq's own message.
            if lookup(&input, steps).is_some_and(|out| fits(out, 0)) {
                let mut input = input;
                return Ok(Some(
                    lookup_mut(&mut input, steps)
                        .map(std::mem::take)
                        .unwrap_or_default(),
                ));
            }
        }
        if let (Some(entries), true) = (&self.compiled.object, vars.len() == self.compiled.vars) {
            // Each value as the path fast path answers it; any that jaq must answer (a type
            // error, an output too deep) sends the whole program to jaq.
            let mut out = serde_json::Map::new();
            let whole = entries
                .iter()
                .all(|(key, steps)| match lookup(&input, steps) {
                    Some(v) if fits(v, 1) => {
                        out.insert(key.clone(), v.clone());
                        true
                    }
                    _ => false,
                });
            if whole {
                return Ok(Some(Value::Object(out)));
            }
        }
        let vars = vars.iter().map(value_to_val).collect::<Vec<_>>();
        match self.first(value_to_val(&input), vars)? {
            None => Ok(None),
            Some(out) => val_to_value(&out, 0).map(Some),
        }
    }

    /// Runs on a JSON body: parsed straight into jq's value (serde_json's parser: strict JSON,
    /// depth at most 128), the first output written back as compact JSON. No output is
    /// `Ok(None)`. `vars` values in the order given at compile. The transform's hot path: no
    /// `serde_json::Value` in between.
    pub fn run_body(&self, body: &[u8], vars: &[Value]) -> Result<Option<Vec<u8>>, BodyError> {
        let input: Val =
            serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
        let vars = vars.iter().map(value_to_val).collect::<Vec<_>>();
        let Some(out) = self.first(input, vars).map_err(BodyError::Failed)? else {
            return Ok(None);
        };
        // A body is usually a little larger than its input: start there.
        let mut bytes = Vec::with_capacity(body.len() + 64);
        serde_json::to_writer(
            &mut bytes,
            &Out {
                val: &out,
                depth: 0,
            },
        )
        .map_err(|e| BodyError::Failed(e.to_string()))?;
        Ok(Some(bytes))
    }

    /// The first output of the program on `input`, or the first error.
    fn first(&self, input: Val, vars: Vec<Val>) -> Result<Option<Val>, String> {
        let compiled = &*self.compiled;
        if vars.len() != compiled.vars {
            // A caller bug, not a request's fault: say so rather than run with unbound names.
            return Err(format!(
                "the program takes {} variable(s), {} given",
                compiled.vars,
                vars.len()
            ));
        }
        let ctx = Ctx::<Data>::new(&compiled.filter.lut, Vars::new(vars));
        let mut outputs = compiled.filter.id.run((ctx, input));
        match outputs.next() {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(exn)) => Err(match exn.get_err() {
                Ok(error) => cut(error_text(error.into_val())),
                // `halt` ends a jq process; here it ends the run (jaq would exit ours).
                Err(exn) => match exn.get_halt() {
                    Ok(code) => format!("the program called halt({code})"),
                    Err(_) => "the program failed".into(),
                },
            }),
        }
    }
}

/// One step of a path-only program.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `.name` or `."name"` / `.["name"]`: an object's value, null where the key is missing.
    Key(String),
    /// `.[n]`: an array's element, counted from the end when negative, null out of range.
    Index(i64),
}

/// The steps of `text` when it is a path alone: `.` followed by `.name`, `."name"`, `[n]`,
/// `["name"]` (each `[...]` optionally after a `.`), no spaces, no escapes in a name. Anything
/// else (`?`, slices, pipes, variables) is `None`: jaq runs it. Called after jaq compiled
/// `text`, so a name that jq reads otherwise never gets here as a path.
fn path(text: &str) -> Option<Vec<Step>> {
    let t = text.trim().as_bytes();
    if t.first() != Some(&b'.') {
        return None;
    }
    let mut steps = Vec::new();
    let mut i = 0;
    // `.` alone: the identity, no steps.
    if t.len() == 1 {
        return Some(steps);
    }
    while i < t.len() {
        let dot = t[i] == b'.';
        if dot {
            i += 1;
        }
        match t.get(i) {
            Some(b'[') => {
                let close = i + t[i..].iter().position(|&b| b == b']')?;
                let inner = &t[i + 1..close];
                steps.push(match inner.first() {
                    Some(b'"') => Step::Key(quoted(inner)?),
                    _ => Step::Index(integer(inner)?),
                });
                i = close + 1;
            }
            Some(b'"') if dot => {
                let close = i + 1 + t[i + 1..].iter().position(|&b| b == b'"')?;
                steps.push(Step::Key(quoted(&t[i..=close])?));
                i = close + 1;
            }
            Some(&b) if dot && (b.is_ascii_alphabetic() || b == b'_') => {
                let end = t[i..]
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
                    .map_or(t.len(), |n| i + n);
                steps.push(Step::Key(std::str::from_utf8(&t[i..end]).ok()?.to_string()));
                i = end;
            }
            _ => return None,
        }
    }
    Some(steps)
}

/// The entries of `text` when it builds an object of paths alone: `{` then entries `key:
/// path` (the key an identifier or a `"..."` name, the path as [`path`] reads it) or `key`
/// alone (`{c}` is `{c: .c}`), separated by `,`, then `}`; spaces between tokens. Anything else
/// (a computed key, a variable, a value that is not a path, a jq keyword as a key) is `None`:
/// jaq runs it. Called after jaq compiled `text`. A later entry with the same key wins, as in
/// jq.
fn object(text: &str) -> Option<Vec<(String, Vec<Step>)>> {
    const KEYWORDS: [&str; 18] = [
        "and", "or", "not", "if", "then", "elif", "else", "end", "as", "def", "reduce", "foreach",
        "try", "catch", "label", "import", "include", "__loc__",
    ];
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let b = inner.as_bytes();
    let skip = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut entries = Vec::new();
    let mut i = skip(0);
    if i == b.len() {
        return Some(entries);
    }
    loop {
        let (key, alone) = match *b.get(i)? {
            b'"' => {
                let close = i + 1 + b[i + 1..].iter().position(|&c| c == b'"')?;
                let key = quoted(&b[i..=close])?;
                i = close + 1;
                (key, false)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = b[i..]
                    .iter()
                    .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
                    .map_or(b.len(), |n| i + n);
                let key = &inner[i..end];
                if KEYWORDS.contains(&key) {
                    return None;
                }
                i = end;
                (key.to_string(), true)
            }
            _ => return None,
        };
        i = skip(i);
        let steps = if b.get(i) == Some(&b':') {
            let start = skip(i + 1);
            i = start;
            let mut in_string = false;
            while let Some(&c) = b.get(i) {
                match c {
                    b'"' => in_string = !in_string,
                    b',' if !in_string => break,
                    _ => {}
                }
                i += 1;
            }
            path(&inner[start..i])?
        } else if alone {
            vec![Step::Key(key.clone())]
        } else {
            return None;
        };
        entries.push((key, steps));
        i = skip(i);
        match b.get(i) {
            None => return Some(entries),
            Some(b',') => i = skip(i + 1),
            Some(_) => return None,
        }
    }
}

/// A `"..."` name without escapes or interpolation (jq's strings have both: jaq runs those).
fn quoted(b: &[u8]) -> Option<String> {
    let inner = b.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20) {
        return None;
    }
    std::str::from_utf8(inner).ok().map(str::to_string)
}

/// A decimal integer index, `-` allowed, no leading `+`, spaces or leading zeros.
fn integer(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') || digits.len() > 15 {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// `steps` on `v` as jq walks them, where the answer is a value of `v` (null for a missing key
/// or index, and on null); `None` where jq raises an error (a key of an array, an index of an
/// object, anything of a string, number or boolean).
fn lookup<'v>(mut v: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    static NULL: Value = Value::Null;
    for step in steps {
        v = match (v, step) {
            (Value::Null, _) => &NULL,
            (Value::Object(map), Step::Key(k)) => map.get(k).unwrap_or(&NULL),
            (Value::Array(items), Step::Index(n)) => element(items.len(), *n)
                .and_then(|i| items.get(i))
                .unwrap_or(&NULL),
            _ => return None,
        };
    }
    Some(v)
}

/// [`lookup`] for a value to take out; `None` also where the answer is a null not in `v`.
fn lookup_mut<'v>(mut v: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    for step in steps {
        v = match (v, step) {
            (Value::Object(map), Step::Key(k)) => map.get_mut(k)?,
            (Value::Array(items), Step::Index(n)) => {
                let i = element(items.len(), *n)?;
                items.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(v)
}

/// The position of jq's index `n` in an array of `len`: negative counts from the end.
fn element(len: usize, n: i64) -> Option<usize> {
    if n >= 0 {
        usize::try_from(n).ok()
    } else {
        len.checked_sub(usize::try_from(n.unsigned_abs()).ok()?)
    }
}

/// Whether `v` nests within [`MAX_DEPTH`] as [`val_to_value`] counts (a container at depth
/// `MAX_DEPTH` is too deep).
fn fits(v: &Value, depth: usize) -> bool {
    match v {
        Value::Array(items) => depth < MAX_DEPTH && items.iter().all(|i| fits(i, depth + 1)),
        Value::Object(map) => depth < MAX_DEPTH && map.values().all(|i| fits(i, depth + 1)),
        _ => true,
    }
}

/// jaq's natives: core, std (all of jq's builtins) and json, with `halt` kept (it is caught at
/// the run's end: see [`Program::first`]).
fn funs() -> impl Iterator<Item = jaq_core::native::Fun<Data>> {
    jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        // `env` would hand a program the gateway's environment (the admin token, JWT secrets
        // named by `secret_env`): a body transform must never be one line from echoing them.
        .filter(|f| f.0 != "env")
}

/// The message of a load (lex, parse, module) error, at the failing token.
fn load_error(text: &str, errors: jaq_core::load::Errors<&str, ()>) -> CompileError {
    use jaq_core::load::Error;
    let first = errors.into_iter().next().map(|(_, e)| e);
    let (at, message) = match first {
        Some(Error::Lex(errs)) => match errs.into_iter().next() {
            Some((expected, found)) => (found, format!("expected {}", expected.as_str())),
            None => ("", "the program does not lex".into()),
        },
        Some(Error::Parse(errs)) => match errs.into_iter().next() {
            Some((expected, found)) => {
                let found_text = if found.is_empty() {
                    "end of program".to_string()
                } else {
                    format!("{:?}", first_chars(found))
                };
                (
                    found,
                    format!("expected {}, found {found_text}", expected.as_str()),
                )
            }
            None => ("", "the program does not parse".into()),
        },
        Some(Error::Io(errs)) => match errs.into_iter().next() {
            Some((path, _)) => (path, "modules cannot be imported or included".into()),
            None => ("", "modules cannot be imported or included".into()),
        },
        None => ("", "the program does not load".into()),
    };
    let offset = if at.is_empty() && message.ends_with("end of program") {
        text.len()
    } else {
        offset_in(text, at)
    };
    CompileError { offset, message }
}

/// The byte offset of `part` in `whole` when `part` is a slice of it (jaq's errors carry
/// slices of the program text); 0 when it is not (a slice of jaq's own prelude).
fn offset_in(whole: &str, part: &str) -> usize {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    if at >= start && at + part.len() <= start + whole.len() {
        at - start
    } else {
        0
    }
}

/// At most 20 chars of a token, for a message.
fn first_chars(s: &str) -> &str {
    match s.char_indices().nth(20) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A jq error's text: a string error is its text (`error("x")` says `x`), any other value its
/// JSON.
fn error_text(v: Val) -> String {
    match v {
        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(&b).into_owned(),
        other => other.to_string(),
    }
}

/// `s` cut at [`MAX_MESSAGE`] bytes (on a char boundary), `…` appended when cut.
fn cut(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// serde_json's value as jaq's (exact integers, key order kept).
fn value_to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(if let Some(i) = n.as_i64() {
            Num::from_integral(i)
        } else if let Some(u) = n.as_u64() {
            Num::from_integral(u)
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Val::utf8_str(s.clone()),
        Value::Array(items) => items.iter().map(value_to_val).collect(),
        Value::Object(map) => Val::obj(
            map.iter()
                .map(|(k, v)| (Val::utf8_str(k.clone()), value_to_val(v)))
                .collect(),
        ),
    }
}

/// jaq's value as serde_json's, at most [`MAX_DEPTH`] deep.
fn val_to_value(v: &Val, depth: usize) -> Result<Value, String> {
    Ok(match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_value(n),
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(items) => {
            too_deep(depth)?;
            Value::Array(
                items
                    .iter()
                    .map(|item| val_to_value(item, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        Val::Obj(map) => {
            too_deep(depth)?;
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map.iter() {
                out.insert(key_text(k)?, val_to_value(v, depth + 1)?);
            }
            Value::Object(out)
        }
    })
}

fn too_deep(depth: usize) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        Err(format!("the output nests deeper than {MAX_DEPTH} levels"))
    } else {
        Ok(())
    }
}

/// An object key as JSON text: jaq allows any value as a key, JSON only strings.
fn key_text(k: &Val) -> Result<String, String> {
    match k {
        Val::TStr(b) | Val::BStr(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        other => Err(cut(format!(
            "the output has an object key that is not a string: {other}"
        ))),
    }
}

/// A jq number as JSON: integers exact where they fit 64 bits, everything else as `f64`, with
/// NaN as `null` and infinities as `±f64::MAX` (what jq prints).
fn num_to_value(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i as i64),
        Num::Float(f) => float_to_value(*f),
        // A big integer or a decimal literal: serde_json's number parser keeps what fits
        // (i64 / u64 exactly, the rest as the nearest f64).
        Num::BigInt(_) | Num::Dec(_) => {
            let text = n.to_string();
            match serde_json::from_str::<serde_json::Number>(&text) {
                Ok(number) => Value::Number(number),
                Err(_) => float_to_value(text.parse::<f64>().unwrap_or(f64::NAN)),
            }
        }
    }
}

fn float_to_value(f: f64) -> Value {
    if f.is_nan() {
        Value::Null
    } else if f.is_infinite() {
        Value::from(if f > 0.0 { f64::MAX } else { f64::MIN })
    } else {
        Value::from(f)
    }
}

/// jaq's value written by serde_json's serializer directly (the body path), at most
/// [`MAX_DEPTH`] deep.
struct Out<'a> {
    val: &'a Val,
    depth: usize,
}

impl serde::Serialize for Out<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.val {
            Val::Null => s.serialize_unit(),
            Val::Bool(b) => s.serialize_bool(*b),
            Val::Num(Num::Int(i)) => s.serialize_i64(*i as i64),
            Val::Num(n) => num_to_value(n).serialize(s),
            Val::TStr(b) | Val::BStr(b) => match std::str::from_utf8(b) {
                Ok(text) => s.serialize_str(text),
                Err(_) => s.serialize_str(&String::from_utf8_lossy(b)),
            },
            Val::Arr(items) => {
                too_deep(self.depth).map_err(S::Error::custom)?;
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items.iter() {
                    seq.serialize_element(&Out {
                        val: item,
                        depth: self.depth + 1,
                    })?;
                }
                seq.end()
            }
            Val::Obj(map) => {
                too_deep(self.depth).map_err(S::Error::custom)?;
                let mut out = s.serialize_map(Some(map.len()))?;
                for (k, v) in map.iter() {
                    match k {
                        Val::TStr(b) | Val::BStr(b) => match std::str::from_utf8(b) {
                            Ok(text) => out.serialize_key(text)?,
                            Err(_) => out.serialize_key(&String::from_utf8_lossy(b))?,
                        },
                        other => {
                            return Err(S::Error::custom(key_text(other).unwrap_err()));
                        }
                    }
                    out.serialize_value(&Out {
                        val: v,
                        depth: self.depth + 1,
                    })?;
                }
                out.end()
            }
        }
    }
}

/// RFC 3339 UTC now (millisecond precision, `Z`), for `$now`.
pub fn now_rfc3339() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::clock::rfc3339(since.as_millis() as u64)
}

#[cfg(test)]
mod tests;
