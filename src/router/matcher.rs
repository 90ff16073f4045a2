//! Route predicates beyond the path: method, host, headers and BFF client.
//!
//! Key types: [`Predicates`] (one per route, compiled), [`MethodTable`] (method name <-> bit),
//! [`HostPattern`]. The one thing to know: everything the request contributes is prepared once
//! per lookup in [`Prepared`] (method bit, host without port), so checking a candidate route is a
//! mask test, a few byte compares and header lookups, never an allocation.
//!
//! Decisions:
//! - Methods are case-sensitive tokens (RFC 9110 §9.1). `GET` implies `HEAD` (RFC 9110 §9.3.2:
//!   HEAD is GET without the content), so a route listing GET serves HEAD and an `Allow` that
//!   lists GET lists HEAD. `CONNECT` is refused in `methods`: the gateway never tunnels, and
//!   answers every CONNECT before routing. The `Allow` order is RFC 9110's (GET, HEAD, POST,
//!   PUT, DELETE, CONNECT, OPTIONS, TRACE), then PATCH, then extension methods alphabetically.
//! - Hosts compare ASCII case-insensitively, without the port (`[v6]:port` understood) and
//!   without one trailing '.'. `*.example.com` needs at least one label before `.example.com`.
//!   A request without Host (or with an empty one) matches only routes without `hosts`.
//! - Headers compare by exact value bytes; the name is looked up lower-case.
//! - A route with `client` matches only requests the BFF phase gave that client; two routes
//!   with different clients never match one request.

use super::HeaderLookup;
use crate::config::model::{ClientId, Route};

/// Standard methods in `Allow` order; bit i of a [`MethodSet`] is `STANDARD[i]`.
const STANDARD: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
/// The bit for a request method that no route names: only [`MethodSet::ANY`] contains it.
const OTHER: u64 = 1 << 63;
/// Method bits available to extension methods.
const MAX_EXTENSIONS: usize = 63 - STANDARD.len();

/// A set of methods as bits of a [`MethodTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodSet(pub u64);

impl MethodSet {
    /// No `methods` key: every method, including ones no route names.
    pub const ANY: MethodSet = MethodSet(u64::MAX);

    pub fn is_any(self) -> bool {
        self == Self::ANY
    }
}

/// The methods named anywhere in the route table, each given one bit.
#[derive(Debug, Default)]
pub(crate) struct MethodTable {
    /// Extension methods, sorted; `ext[i]` is bit `STANDARD.len() + i`.
    ext: Vec<Box<str>>,
}

impl MethodTable {
    /// Collects the methods of `routes`. Err: (route, method, reason).
    pub fn build(routes: &[Route]) -> Result<MethodTable, (usize, String, String)> {
        let mut ext: Vec<Box<str>> = Vec::new();
        for (id, route) in routes.iter().enumerate() {
            for m in route.methods.iter().flatten() {
                if m.is_empty() || !m.bytes().all(is_tchar) {
                    return Err((id, m.clone(), "not an HTTP method token".into()));
                }
                if m == "CONNECT" {
                    return Err((
                        id,
                        m.clone(),
                        "the gateway never tunnels: every CONNECT is answered 400 or 405 before routing"
                            .into(),
                    ));
                }
                if !STANDARD.contains(&m.as_str()) && !ext.iter().any(|e| **e == **m) {
                    if ext.len() == MAX_EXTENSIONS {
                        return Err((
                            id,
                            m.clone(),
                            format!("more than {MAX_EXTENSIONS} distinct extension methods"),
                        ));
                    }
                    ext.push(m.as_str().into());
                }
            }
        }
        ext.sort();
        Ok(MethodTable { ext })
    }

    /// The bit of a request method; [`OTHER`] when no route names it.
    #[inline]
    pub fn bit(&self, method: &str) -> u64 {
        let standard = match method {
            "GET" => 0,
            "HEAD" => 1,
            "POST" => 2,
            "PUT" => 3,
            "DELETE" => 4,
            "CONNECT" => 5,
            "OPTIONS" => 6,
            "TRACE" => 7,
            "PATCH" => 8,
            _ => STANDARD.len(),
        };
        if standard < STANDARD.len() {
            return 1 << standard;
        }
        match self.ext.binary_search_by(|e| (**e).cmp(method)) {
            Ok(i) => 1 << (STANDARD.len() + i),
            Err(_) => OTHER,
        }
    }

    /// The methods a route serves: those listed, plus HEAD wherever GET is (RFC 9110 §9.3.2).
    pub fn set(&self, methods: Option<&[String]>) -> MethodSet {
        const GET: u64 = 1;
        const HEAD: u64 = 1 << 1;
        match methods {
            None => MethodSet::ANY,
            Some(list) => {
                let bits = list.iter().fold(0, |acc, m| acc | self.bit(m));
                MethodSet(if bits & GET != 0 { bits | HEAD } else { bits })
            }
        }
    }

    /// Names in `set`, in `Allow` order.
    pub fn names(&self, set: MethodSet) -> Vec<&str> {
        (0..STANDARD.len() + self.ext.len())
            .filter(|i| set.0 & (1 << i) != 0)
            .map(|i| {
                STANDARD
                    .get(i)
                    .copied()
                    .unwrap_or_else(|| &self.ext[i - STANDARD.len()])
            })
            .collect()
    }

    /// The value of an `Allow` header for `set`, e.g. "GET, HEAD, POST". CONNECT is never
    /// listed: no route serves it, not even one without `methods`.
    pub fn allow_header(&self, set: MethodSet) -> String {
        let without_connect = MethodSet(set.0 & !(1 << 5));
        self.names(without_connect).join(", ")
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One entry of a route's `hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// `api.example.com`, `127.0.0.1`, `[::1]` (lower-case, no trailing '.').
    Exact(Box<str>),
    /// "*.example.com", stored as ".example.com".
    Suffix(Box<str>),
}

impl HostPattern {
    /// Parses one configured host; the error is the reason.
    pub fn parse(src: &str) -> Result<HostPattern, String> {
        let lower = src.to_ascii_lowercase();
        let host = lower.strip_suffix('.').unwrap_or(&lower);
        let (wild, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if name.is_empty() {
            return Err("empty host".into());
        }
        if name.contains('*') {
            return Err("'*' is only allowed as a leading \"*.\" label".into());
        }
        if name.starts_with('[') {
            let ok = !wild
                && name.ends_with(']')
                && name[1..name.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !ok {
                return Err("an IPv6 host is written \"[addr]\", without a port".into());
            }
            return Ok(HostPattern::Exact(name.into()));
        }
        if name.contains(':') {
            return Err("hosts match without the port: remove \":port\"".into());
        }
        if name.starts_with('.') || name.contains("..") {
            return Err("empty label".into());
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
        {
            return Err(format!("character {c:?} is not allowed in a host name"));
        }
        Ok(if wild {
            HostPattern::Suffix(format!(".{name}").into())
        } else {
            HostPattern::Exact(name.into())
        })
    }

    /// `host` comes from [`normalize_host`].
    #[inline]
    pub fn matches(&self, host: &[u8]) -> bool {
        match self {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h.as_bytes()),
            HostPattern::Suffix(s) => {
                host.len() > s.len()
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }

    /// Whether some host matches both.
    pub fn overlaps(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Exact(h), p @ HostPattern::Suffix(_))
            | (p @ HostPattern::Suffix(_), HostPattern::Exact(h)) => p.matches(h.as_bytes()),
            // "*.a.example.com" and "*.example.com" share x.a.example.com.
            (HostPattern::Suffix(a), HostPattern::Suffix(b)) => {
                a.ends_with(&**b) || b.ends_with(&**a)
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// The host of a raw `Host` value: port and one trailing '.' removed; None when empty.
/// Case is left alone (matching ignores it).
#[inline]
pub(crate) fn normalize_host(raw: &[u8]) -> Option<&[u8]> {
    let host = if raw.first() == Some(&b'[') {
        // "[::1]:8080": the port follows the bracket.
        match raw.iter().position(|&b| b == b']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.iter().position(|&b| b == b':') {
            Some(colon) => &raw[..colon],
            None => raw,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// What a request contributes to predicate checks, computed once per lookup.
pub(crate) struct Prepared<'a, H: ?Sized> {
    pub method: u64,
    /// The raw Host value: normalized only when a candidate has `hosts`, since most don't.
    pub host: Option<&'a [u8]>,
    pub headers: &'a H,
    /// The BFF client the request belongs to.
    pub client: Option<ClientId>,
}

/// Result of checking one candidate route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    Match,
    /// Everything but the method matched: the route's methods go into `Allow`.
    MethodOnly,
    No,
}

/// A required header: (lower-case name, exact value).
pub(crate) type HeaderRule = (Box<str>, Box<[u8]>);

/// The compiled predicates of one route.
#[derive(Debug)]
pub(crate) struct Predicates {
    pub methods: MethodSet,
    /// None: any host (and requests without Host).
    pub hosts: Option<Box<[HostPattern]>>,
    pub headers: Box<[HeaderRule]>,
    /// None: any request, of any client or none.
    pub client: Option<ClientId>,
}

impl Predicates {
    /// Compiles a route's predicates. Err: (host, reason).
    pub fn compile(route: &Route, methods: &MethodTable) -> Result<Predicates, (String, String)> {
        let hosts = match &route.hosts {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|h| HostPattern::parse(h).map_err(|reason| (h.clone(), reason)))
                    .collect::<Result<Box<[_]>, _>>()?,
            ),
        };
        Ok(Predicates {
            methods: methods.set(route.methods.as_deref()),
            hosts,
            headers: route
                .headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase().into(), v.as_bytes().into()))
                .collect(),
            client: route.client,
        })
    }

    /// Precedence weight among routes of one path shape: 1 for methods, 1 for hosts, 1 per
    /// header, 1 for client.
    pub fn count(&self) -> usize {
        usize::from(!self.methods.is_any())
            + usize::from(self.hosts.is_some())
            + self.headers.len()
            + usize::from(self.client.is_some())
    }

    #[inline]
    pub fn check<H: HeaderLookup + ?Sized>(&self, req: &Prepared<'_, H>) -> Check {
        // Host and headers decide whether the route matched the request at all; the method then
        // decides between a match and a contribution to a 405's `Allow`.
        let method_ok = self.methods.0 & req.method != 0;
        let client_ok = self.client.is_none() || self.client == req.client;
        if !(client_ok && self.host_ok(req.host) && self.headers_ok(req.headers)) {
            return Check::No;
        }
        if method_ok {
            Check::Match
        } else {
            Check::MethodOnly
        }
    }

    #[inline]
    fn host_ok(&self, host: Option<&[u8]>) -> bool {
        match (&self.hosts, host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(list), Some(raw)) => match normalize_host(raw) {
                Some(host) => list.iter().any(|p| p.matches(host)),
                None => false,
            },
        }
    }

    #[inline]
    fn headers_ok<H: HeaderLookup + ?Sized>(&self, headers: &H) -> bool {
        self.headers
            .iter()
            .all(|(name, value)| headers.get(name) == Some(&**value))
    }

    /// Whether one request can satisfy both `self` and `other`; Some(why) when it can.
    pub fn overlap(&self, other: &Predicates, methods: &MethodTable) -> Option<String> {
        let common = self.methods.0 & other.methods.0;
        if common == 0 {
            return None;
        }
        // A request belongs to one client at most.
        let client_why = match (self.client, other.client) {
            (Some(a), Some(b)) if a != b => return None,
            (Some(_), Some(_)) => "; the same client",
            (Some(_), None) | (None, Some(_)) => "; a client on one of them",
            (None, None) => "",
        };
        let methods_why = if common == u64::MAX {
            "any method".to_string()
        } else {
            methods.names(MethodSet(common)).join(",")
        };
        let hosts_why = match (&self.hosts, &other.hosts) {
            (None, None) => "any host".to_string(),
            (Some(list), None) | (None, Some(list)) => host_list(list),
            (Some(a), Some(b)) => {
                let (x, y) = a
                    .iter()
                    .flat_map(|x| b.iter().map(move |y| (x, y)))
                    .find(|(x, y)| x.overlaps(y))?;
                if x == y {
                    x.to_string()
                } else {
                    format!("{x} and {y}")
                }
            }
        };
        for (name, value) in self.headers.iter() {
            if let Some((_, v)) = other.headers.iter().find(|(n, _)| n == name) {
                if v != value {
                    return None; // the same header can't hold two values
                }
            }
        }
        Some(format!(
            "methods: {methods_why}; hosts: {hosts_why}; headers compatible{client_why}"
        ))
    }
}

fn host_list(list: &[HostPattern]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
