//! The HTTP rules of a shared cache, as pure functions: what may be looked up
//! ([`request_bypass`], [`request_refresh`]), what may be stored and for how long
//! ([`storable`]), how old an entry is and what it may still serve ([`AgeClock`],
//! [`Freshness::state`]), what the key is ([`vary`], [`key`]), and when a client's conditional
//! request is answered 304 ([`not_modified`], [`not_modified_headers`]).
//!
//! Choices where the RFCs leave one (each repeated at its function):
//! - A request's `no-cache` (or `max-age=0`, or `Pragma: no-cache` without `Cache-Control`)
//!   is a miss that may store: the request goes upstream and its response replaces the entry.
//! - A response's `no-cache` is not stored: this cache does not send conditional requests
//!   upstream, so an entry that must be revalidated before every use would never serve.
//! - `Expires` minus `Date` is honoured when neither `s-maxage` nor `max-age` is present; an
//!   invalid `Expires` means already expired (RFC 9111 §5.3).
//! - Serving stale is forbidden by `no-cache`, `must-revalidate` and `proxy-revalidate`
//!   (RFC 9111 §4.2.4); `s-maxage` implies `proxy-revalidate` (§5.2.2.10), so it switches off
//!   the rule's default stale windows but keeps the stale windows the same response grants
//!   explicitly (RFC 5861: the origin's own permission).
//! - A malformed or conflicting delta-seconds directive (`max-age=abc`, two different
//!   `max-age`s) or a malformed field makes a response not storable (RFC 9111 §4.2.1: "considered
//!   stale"), and makes a request a refresh.
//!
//! Times are Unix seconds (`u64`), supplied by the caller; arithmetic saturates.

use crate::http::parse::Header;

/// RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31.
const DELTA_SECONDS_MAX: u64 = 1 << 31;

// ---------------------------------------------------------------------------------------------
// Cache-Control
// ---------------------------------------------------------------------------------------------

/// The directives of a message's `Cache-Control` field lines, merged (RFC 9110 §5.3: several
/// lines are one comma-separated list). Unknown directives are ignored (RFC 9111 §5.2.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache`, qualified (`no-cache="Set-Cookie"`) or not: a qualified one is taken as
    /// unqualified, which RFC 9111 §5.2.2.4 allows.
    pub no_cache: bool,
    /// `private`, qualified or not (a shared cache storing none of it is the stricter reading
    /// of §5.2.2.7).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `max-age`, seconds.
    pub max_age: Option<u64>,
    /// `s-maxage`, seconds.
    pub s_maxage: Option<u64>,
    /// RFC 5861 `stale-while-revalidate`, seconds.
    pub stale_while_revalidate: Option<u64>,
    /// RFC 5861 `stale-if-error`, seconds.
    pub stale_if_error: Option<u64>,
    /// The field was malformed (bad syntax, an unterminated quoted string) or a delta-seconds
    /// directive had no value, a non-numeric one, or two different values.
    pub invalid: bool,
}

impl CacheControl {
    /// Parses and merges every `Cache-Control` line of `headers`.
    pub fn parse(headers: &[Header<'_>]) -> CacheControl {
        let mut cc = CacheControl::default();
        for h in headers {
            if h.name.eq_ignore_ascii_case("cache-control")
                && parse_directives(h.value, &mut cc).is_err()
            {
                cc.invalid = true;
            }
        }
        cc
    }

    /// Whether any `Cache-Control` line is present in `headers`.
    fn present(headers: &[Header<'_>]) -> bool {
        headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("cache-control"))
    }
}

/// A syntax error in a field value.
struct Malformed;

/// RFC 9111 §5.2: `Cache-Control = #cache-directive`,
/// `cache-directive = token [ "=" ( token / quoted-string ) ]`.
fn parse_directives(value: &[u8], cc: &mut CacheControl) -> Result<(), Malformed> {
    let mut rest = value;
    loop {
        rest = skip_ows(rest);
        // RFC 9110 §5.6.1: empty list elements are ignored.
        if let [b',', tail @ ..] = rest {
            rest = tail;
            continue;
        }
        if rest.is_empty() {
            return Ok(());
        }
        let name_len = rest.iter().take_while(|&&b| is_tchar(b)).count();
        if name_len == 0 {
            return Err(Malformed);
        }
        let name = &rest[..name_len];
        rest = skip_ows(&rest[name_len..]);
        let mut arg: Option<Vec<u8>> = None;
        if let [b'=', tail @ ..] = rest {
            let tail = skip_ows(tail);
            let (value, after) = if let [b'"', q @ ..] = tail {
                quoted_string(q)?
            } else {
                let n = tail.iter().take_while(|&&b| is_tchar(b)).count();
                (tail[..n].to_vec(), &tail[n..])
            };
            arg = Some(value);
            rest = skip_ows(after);
        }
        match rest {
            [] => {}
            [b',', tail @ ..] => rest = tail,
            _ => return Err(Malformed),
        }
        apply(cc, name, arg.as_deref());
    }
}

/// The content of a quoted-string whose opening quote has been consumed, and what follows its
/// closing quote (RFC 9110 §5.6.4: `\` escapes the next octet).
fn quoted_string(mut s: &[u8]) -> Result<(Vec<u8>, &[u8]), Malformed> {
    let mut out = Vec::new();
    loop {
        match s {
            [b'"', tail @ ..] => return Ok((out, tail)),
            [b'\\', c, tail @ ..] => {
                out.push(*c);
                s = tail;
            }
            [c, tail @ ..] if *c != b'\\' => {
                out.push(*c);
                s = tail;
            }
            _ => return Err(Malformed),
        }
    }
}

fn apply(cc: &mut CacheControl, name: &[u8], arg: Option<&[u8]>) {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("no-store") {
        cc.no_store = true;
    } else if is("no-cache") {
        cc.no_cache = true;
    } else if is("private") {
        cc.private = true;
    } else if is("public") {
        cc.public = true;
    } else if is("must-revalidate") {
        cc.must_revalidate = true;
    } else if is("proxy-revalidate") {
        cc.proxy_revalidate = true;
    } else {
        let slot = if is("max-age") {
            &mut cc.max_age
        } else if is("s-maxage") {
            &mut cc.s_maxage
        } else if is("stale-while-revalidate") {
            &mut cc.stale_while_revalidate
        } else if is("stale-if-error") {
            &mut cc.stale_if_error
        } else {
            return;
        };
        match arg.and_then(delta_seconds) {
            // RFC 9111 §4.2.1: several values for one directive: the response is stale.
            Some(v) if slot.is_some_and(|old| old != v) => cc.invalid = true,
            Some(v) => *slot = Some(v),
            None => cc.invalid = true,
        }
    }
}

/// RFC 9111 §1.2.2: `delta-seconds = 1*DIGIT`, saturating at 2^31.
fn delta_seconds(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in s {
        n = n * 10 + u64::from(d - b'0');
        if n >= DELTA_SECONDS_MAX {
            return Some(DELTA_SECONDS_MAX);
        }
    }
    Some(n)
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn skip_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', tail @ ..] = s {
        s = tail;
    }
    s
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let mut s = skip_ows(s);
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The non-empty elements of a comma-separated list (no quoted strings expected in them).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn fields<'h, 'b>(headers: &'h [Header<'b>], name: &'h str) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

// ---------------------------------------------------------------------------------------------
// Request side
// ---------------------------------------------------------------------------------------------

/// Why a request skips the cache entirely (no lookup, no store): `X-Cache: BYPASS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bypass {
    /// Not GET or HEAD.
    Method,
    /// The request's `Cache-Control: no-store` (RFC 9111 §5.2.1.5).
    NoStore,
    /// An `Authorization` field and the rule is not `per_user` (RFC 9111 §3.5).
    Authorization,
    /// A `Cookie` field and the rule is not `per_user`: the response may depend on it.
    Cookie,
}

/// Whether the request skips the cache: only GET and HEAD are looked up; `no-store` bypasses;
/// `Authorization` or `Cookie` bypass unless the rule is `per_user` (whose key carries the
/// authenticated subject, so one user's entry never answers another).
pub fn request_bypass(method: &str, headers: &[Header<'_>], per_user: bool) -> Option<Bypass> {
    if method != "GET" && method != "HEAD" {
        return Some(Bypass::Method);
    }
    if CacheControl::parse(headers).no_store {
        return Some(Bypass::NoStore);
    }
    if !per_user {
        if fields(headers, "authorization").next().is_some() {
            return Some(Bypass::Authorization);
        }
        if fields(headers, "cookie").next().is_some() {
            return Some(Bypass::Cookie);
        }
    }
    None
}

/// Whether a request that does not bypass must not be answered from a stored entry: its
/// `Cache-Control` has `no-cache` or `max-age=0` (RFC 9111 §5.2.1.4, §5.2.1.1), is malformed,
/// or it has no `Cache-Control` and has `Pragma: no-cache` (§5.4, kept for HTTP/1.0 clients).
/// Such a request is a miss that may store: it goes upstream (`X-Cache: MISS`) and the
/// response replaces the entry, so a client can refresh what everyone is served.
pub fn request_refresh(headers: &[Header<'_>]) -> bool {
    if !CacheControl::present(headers) {
        return fields(headers, "pragma")
            .any(|v| list_elements(v).any(|e| e.eq_ignore_ascii_case(b"no-cache")));
    }
    let cc = CacheControl::parse(headers);
    cc.no_cache || cc.max_age == Some(0) || cc.invalid
}

// ---------------------------------------------------------------------------------------------
// Response side
// ---------------------------------------------------------------------------------------------

/// A cache rule's configured times, in seconds: the defaults a response's own directives
/// override.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleTimes {
    /// The freshness lifetime when the response gives none (`ttl`).
    pub ttl: u64,
    /// How long past its lifetime an entry is served stale while one refresh runs.
    pub stale_while_revalidate: u64,
    /// How long past its lifetime an entry is served when the upstream fails.
    pub stale_if_error: u64,
}

/// Where a stored response's freshness lifetime came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifetimeSource {
    /// `Cache-Control: s-maxage`.
    SMaxage,
    /// `Cache-Control: max-age`.
    MaxAge,
    /// `Expires` minus `Date`.
    Expires,
    /// The rule's `ttl`.
    Rule,
}

/// How long a stored response is fresh, and how long past that it may still be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// The freshness lifetime, seconds (RFC 9111 §4.2.1).
    pub lifetime: u64,
    /// Where `lifetime` came from.
    pub source: LifetimeSource,
    /// Seconds past `lifetime` served stale while one refresh runs (RFC 5861 §3).
    pub stale_while_revalidate: u64,
    /// Seconds past `lifetime` served when the upstream fails (RFC 5861 §4).
    pub stale_if_error: u64,
}

/// Why a response is not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    /// A status outside 200, 203, 204, 300, 301, 308, 404, 410.
    Status(u16),
    /// A `Set-Cookie` field: it belongs to one client.
    SetCookie,
    /// `Cache-Control: private` (RFC 9111 §5.2.2.7).
    Private,
    /// `Cache-Control: no-store` (RFC 9111 §5.2.2.5).
    NoStore,
    /// `Cache-Control: no-cache`: it could never be served without revalidating upstream,
    /// which this cache does not do.
    NoCache,
    /// `Vary: *` (RFC 9111 §4.1: never matches).
    VaryAny,
    /// A malformed `Cache-Control` or conflicting directive values (RFC 9111 §4.2.1).
    InvalidCacheControl,
    /// Stale on arrival with no stale window: it could never be served.
    NeverServable,
}

/// The statuses BEHAVIOR.md allows to be stored.
const STORABLE_STATUSES: [u16; 8] = [200, 203, 204, 300, 301, 308, 404, 410];

/// Whether a response may be stored, and its [`Freshness`] (RFC 9111 §3, §4.2.1). The
/// lifetime is `s-maxage`, else `max-age`, else `Expires` minus `Date` (`Date` absent: minus
/// `received_at`; an invalid or repeated-and-differing `Expires`: 0, RFC 9111 §5.3), else the
/// rule's `ttl`. The stale windows are the response's `stale-while-revalidate` /
/// `stale-if-error`, else the rule's; `must-revalidate` / `proxy-revalidate` forbid both
/// (RFC 9111 §4.2.4), and `s-maxage` (which implies `proxy-revalidate`, §5.2.2.10) keeps only
/// those the response grants itself.
pub fn storable(
    status: u16,
    headers: &[Header<'_>],
    rule: &RuleTimes,
    received_at: u64,
) -> Result<Freshness, NotStored> {
    if !STORABLE_STATUSES.contains(&status) {
        return Err(NotStored::Status(status));
    }
    if fields(headers, "set-cookie").next().is_some() {
        return Err(NotStored::SetCookie);
    }
    let cc = CacheControl::parse(headers);
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if cc.invalid {
        return Err(NotStored::InvalidCacheControl);
    }
    if cc.no_cache {
        return Err(NotStored::NoCache);
    }
    if vary(headers) == Vary::Any {
        return Err(NotStored::VaryAny);
    }
    let (lifetime, source) = if let Some(s) = cc.s_maxage {
        (s, LifetimeSource::SMaxage)
    } else if let Some(m) = cc.max_age {
        (m, LifetimeSource::MaxAge)
    } else if let Some(expires) = expires_lifetime(headers, received_at) {
        (expires, LifetimeSource::Expires)
    } else {
        (rule.ttl, LifetimeSource::Rule)
    };
    let (swr, sie) = if cc.must_revalidate || cc.proxy_revalidate {
        (0, 0)
    } else if cc.s_maxage.is_some() {
        (
            cc.stale_while_revalidate.unwrap_or(0),
            cc.stale_if_error.unwrap_or(0),
        )
    } else {
        (
            cc.stale_while_revalidate
                .unwrap_or(rule.stale_while_revalidate),
            cc.stale_if_error.unwrap_or(rule.stale_if_error),
        )
    };
    if lifetime == 0 && swr == 0 && sie == 0 {
        return Err(NotStored::NeverServable);
    }
    Ok(Freshness {
        lifetime,
        source,
        stale_while_revalidate: swr,
        stale_if_error: sie,
    })
}

/// `Expires` minus `Date` (RFC 9111 §4.2.1), `None` without `Expires`. An invalid `Expires`
/// (`0` included) or several differing ones mean already expired (§5.3, §4.2.1).
fn expires_lifetime(headers: &[Header<'_>], received_at: u64) -> Option<u64> {
    let mut values = fields(headers, "expires");
    let first = values.next()?;
    if values.any(|v| v != first) {
        return Some(0);
    }
    let Some(expires) = http_date(first) else {
        return Some(0);
    };
    let date = single_date(headers, "date").unwrap_or(received_at);
    Some(expires.saturating_sub(date))
}

/// A field that must hold one HTTP-date: `None` when absent, repeated or invalid.
fn single_date(headers: &[Header<'_>], name: &str) -> Option<u64> {
    let mut values = fields(headers, name);
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    http_date(first)
}

// ---------------------------------------------------------------------------------------------
// Age and state
// ---------------------------------------------------------------------------------------------

/// The times a stored response's age is computed from (RFC 9111 §4.2.3), recorded when it
/// was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgeClock {
    /// `age_value`: the response's `Age` (0 when absent or invalid, §5.1).
    pub age_value: u64,
    /// `date_value`: the response's `Date`, or `response_time` without a valid one
    /// (RFC 9110 §6.6.1: a recipient records the time it received the message).
    pub date_value: u64,
    /// When the request was sent upstream.
    pub request_time: u64,
    /// When the response head was received.
    pub response_time: u64,
}

impl AgeClock {
    /// Records a response's age inputs: its `Age` (a list: its first member, §5.1), its `Date`.
    pub fn new(headers: &[Header<'_>], request_time: u64, response_time: u64) -> AgeClock {
        let age_value = fields(headers, "age")
            .next()
            .and_then(|v| list_elements(v).next())
            .and_then(delta_seconds)
            .unwrap_or(0);
        AgeClock {
            age_value,
            date_value: single_date(headers, "date").unwrap_or(response_time),
            request_time,
            response_time,
        }
    }

    /// `current_age` at `now` (RFC 9111 §4.2.3): the corrected initial age (the larger of
    /// the apparent age and the `Age` corrected by the response delay) plus the resident time.
    /// This is the `Age` a hit carries.
    pub fn current_age(&self, now: u64) -> u64 {
        let apparent_age = self.response_time.saturating_sub(self.date_value);
        let response_delay = self.response_time.saturating_sub(self.request_time);
        let corrected_age_value = self.age_value.saturating_add(response_delay);
        let corrected_initial_age = apparent_age.max(corrected_age_value);
        let resident_time = now.saturating_sub(self.response_time);
        corrected_initial_age.saturating_add(resident_time)
    }
}

/// What a stored entry may serve at a given age.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Fresh: a HIT.
    Fresh,
    /// Stale within the `stale-while-revalidate` window: served STALE while one refresh runs
    /// (and served on an upstream failure too).
    StaleWhileRevalidate,
    /// Past the revalidate window but within `stale-if-error`: goes upstream, and is served
    /// STALE only when the upstream fails.
    StaleIfError,
    /// Past every window: a miss; the entry can be dropped.
    Expired,
}

impl Freshness {
    /// The entry's state at `current_age` (RFC 9111 §4.2: fresh while age < lifetime; RFC 5861:
    /// both stale windows start when freshness ends).
    pub fn state(&self, current_age: u64) -> State {
        let Some(staleness) = current_age.checked_sub(self.lifetime) else {
            return State::Fresh;
        };
        if staleness < self.stale_while_revalidate {
            State::StaleWhileRevalidate
        } else if staleness < self.stale_if_error {
            State::StaleIfError
        } else {
            State::Expired
        }
    }

    /// The age past which the entry serves nothing: how long a store may keep it.
    pub fn max_age(&self) -> u64 {
        self.lifetime
            .saturating_add(self.stale_while_revalidate.max(self.stale_if_error))
    }
}

// ---------------------------------------------------------------------------------------------
// Vary and the key
// ---------------------------------------------------------------------------------------------

/// A response's `Vary` (RFC 9110 §12.5.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vary {
    /// The request fields whose values must match, lower-case, sorted, without duplicates
    /// (empty: none).
    Names(Vec<String>),
    /// `Vary: *`: no later request matches.
    Any,
}

/// The merged `Vary` lines of a response; a member that is not a token counts as `*`.
pub fn vary(headers: &[Header<'_>]) -> Vary {
    let mut names = Vec::new();
    for value in fields(headers, "vary") {
        for e in list_elements(value) {
            if e == b"*" {
                return Vary::Any;
            }
            // A member that is not a field name (a token) names something this cache cannot
            // match on: taken as `*`, so such a response is never shared between requests.
            if !e.iter().all(|&b| is_tchar(b)) {
                return Vary::Any;
            }
            names.push(String::from_utf8_lossy(e).to_ascii_lowercase());
        }
    }
    names.sort_unstable();
    names.dedup();
    Vary::Names(names)
}

/// The parts of a request a cache key is built from.
#[derive(Clone, Copy, Debug)]
pub struct KeyParts<'a> {
    /// What decides which backend answers besides the request itself (the route and the
    /// upstream a split picked): two routes, or two sides of a split, never share entries.
    pub scope: &'a [u8],
    /// The `Host` (or authority); its port is dropped and it is compared case-insensitively.
    pub host: &'a [u8],
    /// The path, as normalised by the target phase.
    pub path: &'a [u8],
    /// The query, without `?` (`None`: no `?` at all, distinct from an empty query).
    pub query: Option<&'a [u8]>,
    /// The rule's `vary` request fields (any case).
    pub rule_vary: &'a [String],
    /// The stored response's `Vary` names (from [`vary`]; empty on the first lookup).
    pub response_vary: &'a [String],
    /// The request's fields.
    pub request_headers: &'a [Header<'a>],
    /// The authenticated subject when the rule is `per_user`.
    pub subject: Option<&'a [u8]>,
}

/// A cache key: its bytes are unambiguous (every part tagged and length-prefixed, so no two
/// different requests give the same bytes), and [`Key::hash`] is stable across runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key(pub Vec<u8>);

impl Key {
    /// FNV-1a over the key bytes: deterministic, for sharding and metrics, never for equality.
    pub fn hash(&self) -> u64 {
        self.0.iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }
}

/// The key of a GET or HEAD request (one method class: a HEAD is answered from a GET's entry,
/// RFC 9110 §9.3.2). Vary fields (the rule's and the response's, merged, lower-cased, sorted)
/// are keyed by name and by the request's values: several lines joined with `, ` (RFC 9110
/// §5.3), each value's whitespace around commas removed (the normalisation RFC 9111 §4.1
/// allows); an absent field differs from an empty one. Because HEAD shares GET's class, only
/// a GET's response (with its body) may be stored under a key.
pub fn key(parts: &KeyParts<'_>) -> Key {
    let mut out = Vec::with_capacity(64 + parts.path.len());
    out.push(b'G');
    push_part(&mut out, b'r', parts.scope);
    let host = host_without_port(parts.host).to_ascii_lowercase();
    push_part(&mut out, b'h', &host);
    push_part(&mut out, b'p', parts.path);
    match parts.query {
        Some(q) => push_part(&mut out, b'q', q),
        None => out.push(b'Q'),
    }
    let mut names: Vec<String> = parts
        .rule_vary
        .iter()
        .chain(parts.response_vary)
        .map(|n| n.to_ascii_lowercase())
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in &names {
        push_part(&mut out, b'v', name.as_bytes());
        let mut lines = fields(parts.request_headers, name).peekable();
        if lines.peek().is_none() {
            out.push(b'-');
            continue;
        }
        let mut value = Vec::new();
        for (i, line) in lines.enumerate() {
            if i > 0 {
                value.push(b',');
            }
            for (j, e) in line.split(|&b| b == b',').map(trim_ows).enumerate() {
                if j > 0 {
                    value.push(b',');
                }
                value.extend_from_slice(e);
            }
        }
        push_part(&mut out, b'=', &value);
    }
    match parts.subject {
        Some(s) => push_part(&mut out, b's', s),
        None => out.push(b'S'),
    }
    Key(out)
}

fn push_part(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// `host[:port]` or `[v6][:port]` without the port.
fn host_without_port(host: &[u8]) -> &[u8] {
    if let [b'[', ..] = host {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

// ---------------------------------------------------------------------------------------------
// Conditional requests
// ---------------------------------------------------------------------------------------------

/// Whether a client's conditional GET or HEAD is answered 304 from a stored response
/// (RFC 9110 §13.2.2, RFC 9111 §4.3.2). Only a stored 2xx is (preconditions apply to
/// responses that would be 2xx, §13.2.1). `If-None-Match` wins when present: `*` matches any
/// stored response, a list matches when one member weakly equals the stored `ETag` (§8.8.3.2;
/// a malformed field matches nothing, so the full response is sent). Without it,
/// `If-Modified-Since` (one valid HTTP-date, §13.1.3) is met when the stored `Last-Modified`,
/// else its `Date` (RFC 9111 §4.3.2), is not later than it.
pub fn not_modified(
    request_headers: &[Header<'_>],
    stored_status: u16,
    stored_headers: &[Header<'_>],
) -> bool {
    if !(200..300).contains(&stored_status) {
        return false;
    }
    let mut inm = fields(request_headers, "if-none-match").peekable();
    if inm.peek().is_some() {
        let stored = fields(stored_headers, "etag")
            .next()
            .and_then(|v| entity_tag(trim_ows(v)))
            .filter(|(_, rest)| trim_ows(rest).is_empty())
            .map(|(tag, _)| tag);
        return inm.any(|v| if_none_match_hits(v, stored));
    }
    let Some(since) = single_date(request_headers, "if-modified-since") else {
        return false;
    };
    let modified = single_date(stored_headers, "last-modified")
        .or_else(|| single_date(stored_headers, "date"));
    modified.is_some_and(|m| m <= since)
}

/// An entity tag (RFC 9110 §8.8.3): `[W/] DQUOTE *etagc DQUOTE`; returns (opaque-tag without
/// quotes, rest).
fn entity_tag(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = s.strip_prefix(b"W/").unwrap_or(s);
    let body = s.strip_prefix(b"\"")?;
    let end = body.iter().position(|&b| b == b'"')?;
    let tag = &body[..end];
    // etagc = %x21 / %x23-7E / obs-text
    if tag.iter().any(|&b| b < 0x21 || b == 0x7f) {
        return None;
    }
    Some((tag, &body[end + 1..]))
}

/// One `If-None-Match` line against the stored opaque tag (weak comparison: the `W/` prefix
/// is ignored on both sides).
fn if_none_match_hits(value: &[u8], stored: Option<&[u8]>) -> bool {
    let value = trim_ows(value);
    if value == b"*" {
        return true;
    }
    let Some(stored) = stored else {
        return false;
    };
    let mut rest = value;
    loop {
        rest = skip_ows(rest);
        if let [b',', tail @ ..] = rest {
            rest = tail;
            continue;
        }
        if rest.is_empty() {
            return false;
        }
        let Some((tag, tail)) = entity_tag(rest) else {
            return false;
        };
        if tag == stored {
            return true;
        }
        rest = skip_ows(tail);
        if !rest.is_empty() && rest[0] != b',' {
            return false;
        }
    }
}

/// The stored fields a 304 carries (RFC 9110 §15.4.5): `Cache-Control`, `Content-Location`,
/// `Date`, `ETag`, `Expires`, `Vary`, and `Last-Modified` when there is no `ETag` (it then
/// guides the client's cache). The caller adds `Age` and its own response phases' fields.
pub fn not_modified_headers<'h, 'b>(
    stored: &'h [Header<'b>],
) -> impl Iterator<Item = Header<'b>> + 'h {
    let has_etag = fields(stored, "etag").next().is_some();
    stored.iter().copied().filter(move |h| {
        [
            "cache-control",
            "content-location",
            "date",
            "etag",
            "expires",
            "vary",
        ]
        .iter()
        .any(|n| h.name.eq_ignore_ascii_case(n))
            || (!has_etag && h.name.eq_ignore_ascii_case("last-modified"))
    })
}

// ---------------------------------------------------------------------------------------------
// HTTP-date
// ---------------------------------------------------------------------------------------------

/// An HTTP-date (RFC 9110 §5.6.7) as Unix seconds: IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), and the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37
/// GMT`, two-digit years 70-99 in the 1900s, 00-69 in the 2000s) and asctime
/// (`Sun Nov  6 08:49:37 1994`) forms a recipient must accept. The day name is not checked
/// against the date (recipients need not). Dates before 1970 are `None`.
pub fn http_date(value: &[u8]) -> Option<u64> {
    let value = trim_ows(value);
    // ASCII only, so the fixed-position slices below fall on char boundaries.
    if !value.is_ascii() {
        return None;
    }
    let s = std::str::from_utf8(value).ok()?;
    let (day, month, year, time) = if let Some((_, rest)) = s.split_once(", ") {
        if rest.len() == 24 && rest.ends_with(" GMT") {
            // IMF-fixdate: "06 Nov 1994 08:49:37 GMT"
            let p: Vec<&str> = rest.split(' ').collect();
            if p.len() != 5 || p[0].len() != 2 || p[2].len() != 4 {
                return None;
            }
            (p[0], p[1], digits(p[2])?, p[3])
        } else {
            // rfc850-date: "06-Nov-94 08:49:37 GMT"
            let rest = rest.strip_suffix(" GMT")?;
            let (date, time) = rest.split_once(' ')?;
            let d: Vec<&str> = date.split('-').collect();
            if d.len() != 3 || d[0].len() != 2 || d[2].len() != 2 {
                return None;
            }
            let yy = digits(d[2])?;
            (
                d[0],
                d[1],
                if yy < 70 { 2000 + yy } else { 1900 + yy },
                time,
            )
        }
    } else {
        // asctime-date: "Sun Nov  6 08:49:37 1994"
        if s.len() != 24 {
            return None;
        }
        let month = &s[4..7];
        let day = s[8..10].trim_start_matches(' ');
        let b = s.as_bytes();
        if b[3] != b' ' || b[7] != b' ' || b[10] != b' ' || b[19] != b' ' {
            return None;
        }
        (day, month, digits(&s[20..24])?, &s[11..19])
    };
    let day = digits(day)?;
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let t: Vec<&str> = time.split(':').collect();
    if t.len() != 3 || t.iter().any(|p| p.len() != 2) {
        return None;
    }
    let (h, m, sec) = (digits(t[0])?, digits(t[1])?, digits(t[2])?);
    // RFC 9110 §5.6.7 allows a leap second (60).
    if h > 23 || m > 59 || sec > 60 || year < 1970 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year >= 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let days_before_year: u64 = (1970..y).map(|y| if is_leap(y) { 366 } else { 365 }).sum();
    let days_before_month: u64 = (1..m).map(|m| days_in_month(y, m)).sum();
    days_before_year + days_before_month + d - 1
}
