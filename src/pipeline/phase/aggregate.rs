//! Phase 8: an aggregate's request (a route with [`Route::aggregate`]) leaves the phase list
//! here, after route, auth and rate limits, to be answered by composing its calls
//! ([`crate::compose::aggregate::run`], driven by [`crate::pipeline::aggregate`]). This phase
//! copies what the calls need off the connection's read buffer into a [`Pending`]: the
//! parameters their paths read, the client's `Host`, and the header fields every call carries.
//!
//! What a call carries (and nothing else of the client's request): `Host` (the client's, as
//! the upstream phase sends it), `Authorization` (unless the route's auth policy strips it),
//! the identity headers auth forwards, `X-Forwarded-For` (earlier hops kept, the client
//! appended), `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Request-Id`, `Via`, `Accept:
//! application/json`, and `traceparent` (a child span of the request's, per call). Other
//! client fields (cookies, content negotiation, conditionals) are not sent: each call is the
//! gateway's own GET, not a forward of the client's request.
//!
//! A request with a body: the body goes nowhere; the answer closes the connection instead of
//! reading it (as every answer made before a body is read does, `Framing::close_if_body`).

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Instant;

use crate::config::model::{AggregateId, Balance, Config, Route, RouteId};
use crate::http::{BodyKind, Header, Version};
use crate::pipeline::ctx::RequestId;
use crate::pipeline::headers::{connection_tokens, write_forward_fields, ForwardHead};
use crate::pipeline::respond::RateHeaders;
use crate::pipeline::trace::TraceContext;
use crate::router::Match;
use crate::upstream::balance::{hash_key, Key};

use super::auth::Subject;
use super::framing::Framing;
use super::target::Resource;
use super::Fields;

/// The client fields a call may carry (the writer drops `Authorization` when the policy
/// strips it, and merges `X-Forwarded-For` and `Via` with the gateway's).
const FORWARDED: [&str; 3] = ["authorization", "x-forwarded-for", "via"];

/// An aggregate's request, copied off the read buffer: what [`crate::pipeline::aggregate`]
/// runs it with.
#[derive(Debug)]
pub struct Pending {
    pub aggregate: AggregateId,
    pub route: RouteId,
    pub id: RequestId,
    pub trace: Option<TraceContext>,
    pub version: Version,
    pub is_head: bool,
    /// The connection may stay open after the answer (no body follows the head, and the
    /// client did not ask to close).
    pub keep_alive: bool,
    pub rate: Option<RateHeaders>,
    pub started: Instant,
    /// Route parameters, then query parameters, percent-decoded.
    pub params: Vec<(String, String)>,
    /// The client's `Host` (None: each upstream's fallback).
    pub host: Option<Vec<u8>>,
    /// The fields every call carries after `Host` (module doc), each line ending in CRLF.
    pub fields: Vec<u8>,
    pub client_ip: IpAddr,
    /// Per call (index in the plan): its upstream's balance key (`hash_header`, `hash_ip`).
    pub balance: Vec<Key>,
    /// A leaky bucket's place: the calls start at its time (`pipeline::aggregate::serve`).
    pub delay: Option<Box<super::ratelimit::Delay>>,
}

impl std::fmt::Debug for super::ratelimit::Delay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delay")
            .field("until_ms", &self.until_ms)
            .finish_non_exhaustive()
    }
}

/// What the phase reads of the request.
pub struct Request<'a, 'h> {
    pub headers: &'a [Header<'h>],
    pub resource: &'a Resource<'h>,
    pub framing: &'a Framing,
    pub subject: &'a Subject<'a>,
    /// The identity fields every call carries: the subject's forwarded claims and the BFF
    /// client (`pipeline::stack` assembles them once).
    pub forwarded: &'a [(&'a str, &'a str)],
    pub client_ip: IpAddr,
    /// The request came over TLS (`X-Forwarded-Proto`).
    pub https: bool,
    pub id: RequestId,
    pub trace: Option<TraceContext>,
    pub version: Version,
    pub is_head: bool,
}

/// The pending aggregate request for a route that is an aggregate; None for any other route.
pub fn run(
    cfg: &Config,
    route: &Route,
    route_id: RouteId,
    m: &Match<'_, '_>,
    req: &Request<'_, '_>,
    rate: Option<RateHeaders>,
    started: Instant,
) -> Option<Box<Pending>> {
    let aggregate = route.aggregate?;
    let mut params: Vec<(String, String)> = m
        .params
        .iter()
        .map(|(name, value)| (name.to_string(), decode(value, false)))
        .collect();
    // An API key presented in the query never reaches an upstream, through a placeholder
    // neither.
    let credential = req.subject.credential_param();
    if let Some(query) = req.resource.target.query {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name, true);
            if Some(name.as_str()) != credential {
                params.push((name, decode(value, true)));
            }
        }
    }
    let tokens = connection_tokens(req.headers);
    let kept: smallvec::SmallVec<[Header<'_>; 4]> = req
        .headers
        .iter()
        .copied()
        .filter(|h| {
            FORWARDED.iter().any(|n| h.name.eq_ignore_ascii_case(n))
                && !tokens
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(h.name.as_bytes()))
        })
        .collect();
    let identity = req.forwarded;
    let target = crate::pipeline::target::Target {
        path: Cow::Borrowed("/"),
        query: None,
        authority: None,
    };
    let mut fields = Vec::with_capacity(256);
    write_forward_fields(
        &mut fields,
        &ForwardHead {
            method: "GET",
            target: &target,
            query: None,
            matched: 0,
            strip_prefix: false,
            rewrite: None,
            headers: &kept,
            host: req.resource.host,
            fallback_host: "",
            client_ip: req.client_ip,
            https: req.https,
            request_id: &req.id,
            body: BodyKind::None,
            // Each call writes its own child span's.
            trace: None,
            max_forwards: None,
            identity,
            strip_authorization: req.subject.strips_authorization(),
            upgrade: false,
        },
    );
    fields.extend_from_slice(b"Accept: application/json\r\n");
    let read = Fields {
        headers: req.headers,
        identity,
    };
    let balance = cfg.aggregates[aggregate]
        .compiled
        .calls
        .iter()
        .map(|c| match &cfg.upstreams[c.upstream].balance {
            Balance::HashHeader(name) => {
                read.get(name).map_or(Key::None, |v| Key::Hash(hash_key(v)))
            }
            Balance::HashIp => Key::Hash(super::hash_ip(req.client_ip)),
            _ => Key::None,
        })
        .collect();
    Some(Box::new(Pending {
        aggregate,
        route: route_id,
        id: req.id,
        trace: req.trace,
        version: req.version,
        is_head: req.is_head,
        keep_alive: req.framing.keep_alive && req.framing.body == BodyKind::None,
        rate,
        started,
        params,
        host: req.resource.host.map(<[u8]>::to_vec),
        fields,
        client_ip: req.client_ip,
        balance,
        delay: None,
    }))
}

/// Percent-decodes `s` (`plus`: `+` is a space, as in a form-encoded query; in a path it is
/// itself); invalid escapes are kept as written, invalid UTF-8 replaced.
fn decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                out.push(hex(b[i + 1]).unwrap_or(0) << 4 | hex(b[i + 2]).unwrap_or(0));
                i += 3;
                continue;
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn parameters_are_percent_decoded() {
        assert_eq!(decode("a%20b+c", true), "a b c");
        assert_eq!(decode("a+b", false), "a+b");
        assert_eq!(decode("%E2%82%AC", false), "€");
        assert_eq!(decode("100%", true), "100%");
        assert_eq!(decode("%zz%4", true), "%zz%4");
    }
}
