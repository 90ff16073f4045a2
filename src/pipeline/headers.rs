//! What the gateway adds to and removes from headers between client and upstream
//! (RFC 9110 §7.6, BEHAVIOR.md "Proxying").
//!
//! Owns the two head writers: [`write_request_head`] (client request -> upstream request) and
//! [`write_response_head`] (upstream response -> client response). Both copy the header bytes
//! once, straight from the parse buffer into the outgoing buffer, dropping hop-by-hop fields
//! (the fixed set and every name listed in `Connection`) and re-framing the body themselves.

use std::net::IpAddr;

use smallvec::SmallVec;

use crate::http::{self, Header};

use super::ctx::RequestId;

/// How the body leaves the gateway towards the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFraming {
    /// No body follows (HEAD, 1xx, 204, 304): the upstream's Content-Length is passed through.
    NoBody,
    Length(u64),
    Chunked,
    /// HTTP/1.0 client and no known length: the body ends when the connection closes.
    UntilClose,
}

/// The `Connection` header the client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnDirective {
    /// HTTP/1.1 persistent by default: nothing to say.
    Default,
    /// HTTP/1.0 client that asked for keep-alive.
    KeepAlive,
    Close,
    /// A `101` on a websocket route: the connection switches to the WebSocket protocol
    /// ([`UPGRADE_WEBSOCKET`]).
    Upgrade,
}

/// The hop-by-hop fields of a WebSocket upgrade, both ways (RFC 6455 §4.1, §4.2.2; RFC 9110
/// §7.8: `Upgrade` is listed in `Connection`). Only the websocket protocol is ever tunnelled,
/// so the fields are written as this constant, never copied from the other side: a client
/// that offered `websocket, h2c` must not get an upstream's switch to anything else.
pub const UPGRADE_WEBSOCKET: &[u8] = b"Connection: upgrade\r\nUpgrade: websocket\r\n";

use crate::http::VIA;

/// The tokens of all `Connection` fields, lower-cased on comparison.
pub fn connection_tokens<'h>(headers: &[Header<'h>]) -> SmallVec<[&'h [u8]; 4]> {
    let mut tokens = SmallVec::new();
    for h in headers {
        if h.name.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|&b| b == b',') {
                let t = t.trim_ascii();
                if !t.is_empty() {
                    tokens.push(t);
                }
            }
        }
    }
    tokens
}

fn listed(tokens: &[&[u8]], name: &str) -> bool {
    tokens
        .iter()
        .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub struct ForwardHead<'a, 'h> {
    pub method: &'a str,
    /// The routed target; written upstream after strip_prefix / rewrite.
    pub target: &'a super::target::Target<'a>,
    /// The query written upstream (the target's, less an API-key parameter).
    pub query: Option<&'a str>,
    /// Bytes of the path the route pattern matched.
    pub matched: usize,
    pub strip_prefix: bool,
    pub rewrite: Option<&'a str>,
    pub headers: &'a [Header<'h>],
    /// The request's host (absolute-form authority, else the Host header).
    pub host: Option<&'a [u8]>,
    /// Host to send when the client sent none (HTTP/1.0): the endpoint authority.
    pub fallback_host: &'a str,
    pub client_ip: IpAddr,
    /// The client connection is TLS: `X-Forwarded-Proto: https`.
    pub https: bool,
    pub request_id: &'a RequestId,
    /// Framing of the body as sent upstream.
    pub body: http::BodyKind,
    /// The trace context to send (tracing.propagate); None passes the client's through.
    pub trace: Option<&'a super::trace::TraceContext>,
    /// `Max-Forwards` to send instead of the client's (OPTIONS / TRACE: decremented, RFC 9110
    /// §7.6.2); None passes the client's through.
    pub max_forwards: Option<u64>,
    /// The identity headers the auth phase set (the client's own were dropped in phase 0).
    pub identity: &'a [(&'a str, &'a str)],
    /// The auth policy removes `Authorization` (`strip_authorization`).
    pub strip_authorization: bool,
    /// A WebSocket upgrade on a websocket route: `Connection: upgrade` and `Upgrade:
    /// websocket` are sent (every other request has its `Upgrade` removed as hop-by-hop).
    pub upgrade: bool,
}

/// Writes the upstream request head into `out`.
pub fn write_request_head(out: &mut Vec<u8>, f: &ForwardHead<'_, '_>) {
    out.extend_from_slice(f.method.as_bytes());
    out.push(b' ');
    super::target::upstream_target(
        out,
        &f.target.path,
        f.query,
        f.matched,
        f.strip_prefix,
        f.rewrite,
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_header(out, b"Host", f.host.unwrap_or(f.fallback_host.as_bytes()));
    write_forward_fields(out, f);
    out.extend_from_slice(b"\r\n");
}

/// Writes the fields of the upstream request head after `Host`, without the blank line that
/// ends the head: the client's end-to-end fields less hop-by-hop ones, the identity headers,
/// `X-Forwarded-*`, `X-Request-Id`, `traceparent`, `Max-Forwards`, `Via` and the body's
/// framing. An aggregate's calls share these (`f.headers` holding only what they forward).
pub fn write_forward_fields(out: &mut Vec<u8>, f: &ForwardHead<'_, '_>) {
    let tokens = connection_tokens(f.headers);
    let mut xff: SmallVec<[&[u8]; 2]> = SmallVec::new();
    let mut via: SmallVec<[&[u8]; 2]> = SmallVec::new();
    for h in f.headers {
        let name = h.name;
        if http::is_hop_by_hop(name) || listed(&tokens, name) {
            continue;
        }
        match name.len() {
            4 if name.eq_ignore_ascii_case("host") => continue,
            3 if name.eq_ignore_ascii_case("via") => {
                via.push(h.value);
                continue;
            }
            6 if name.eq_ignore_ascii_case("expect") => continue,
            11 if f.trace.is_some() && name.eq_ignore_ascii_case("traceparent") => continue,
            12 if name.eq_ignore_ascii_case("x-request-id") => continue,
            12 if f.max_forwards.is_some() && name.eq_ignore_ascii_case("max-forwards") => continue,
            13 if f.strip_authorization && name.eq_ignore_ascii_case("authorization") => continue,
            14 if name.eq_ignore_ascii_case("content-length") => continue,
            15 if name.eq_ignore_ascii_case("x-forwarded-for") => {
                xff.push(h.value);
                continue;
            }
            16 if name.eq_ignore_ascii_case("x-forwarded-host") => continue,
            17 if name.eq_ignore_ascii_case("x-forwarded-proto") => continue,
            _ => {}
        }
        push_header(out, name.as_bytes(), h.value);
    }
    for (name, value) in f.identity {
        push_header(out, name.as_bytes(), value.as_bytes());
    }

    // X-Forwarded-For: earlier hops kept, this client appended.
    out.extend_from_slice(b"X-Forwarded-For: ");
    for v in &xff {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    write_ip(out, f.client_ip);
    out.extend_from_slice(if f.https {
        b"\r\nX-Forwarded-Proto: https\r\n"
    } else {
        b"\r\nX-Forwarded-Proto: http\r\n"
    });
    if let Some(host) = f.host {
        push_header(out, b"X-Forwarded-Host", host);
    }
    push_header(out, b"X-Request-Id", f.request_id.as_bytes());
    if let Some(trace) = f.trace {
        trace.write_header(out);
    }
    if let Some(n) = f.max_forwards {
        out.extend_from_slice(b"Max-Forwards: ");
        http::write::write_u64(out, n);
        out.extend_from_slice(b"\r\n");
    }
    write_via(out, &via);
    if f.upgrade {
        out.extend_from_slice(UPGRADE_WEBSOCKET);
    }
    match f.body {
        http::BodyKind::None => {}
        http::BodyKind::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            http::write::write_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        _ => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
}

fn write_via(out: &mut Vec<u8>, earlier: &[&[u8]]) {
    out.extend_from_slice(b"Via: ");
    for v in earlier {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(VIA);
    out.extend_from_slice(b"\r\n");
}

fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    use std::io::Write;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let _ = write!(out, "{ip}");
}

pub struct ResponseHeadOut<'a, 'h> {
    pub status: u16,
    pub reason: &'a [u8],
    pub headers: &'a [Header<'h>],
    pub framing: OutFraming,
    /// What the response phases add ([`super::respond::phases`]).
    pub added: &'a [super::respond::Added<'a>],
    pub connection: ConnDirective,
}

/// Writes the client response head into `out`.
pub fn write_response_head(out: &mut Vec<u8>, r: &ResponseHeadOut<'_, '_>) {
    let tokens = connection_tokens(r.headers);
    out.extend_from_slice(b"HTTP/1.1 ");
    http::write::write_u64(out, r.status as u64);
    out.push(b' ');
    out.extend_from_slice(r.reason);
    out.extend_from_slice(b"\r\n");
    let mut via: SmallVec<[&[u8]; 2]> = SmallVec::new();
    // Bit i: the upstream sent added[i]'s field and keeps it.
    let mut kept: u32 = 0;
    for h in r.headers {
        let name = h.name;
        if http::is_hop_by_hop(name) || listed(&tokens, name) {
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            // For bodiless responses (HEAD, 304) the upstream's length describes the entity and
            // is passed on; otherwise the gateway writes the framing itself.
            // RFC 9110 §8.6: never on 1xx or 204.
            if r.framing != OutFraming::NoBody || r.status < 200 || r.status == 204 {
                continue;
            }
        } else if name.eq_ignore_ascii_case("via") {
            via.push(h.value);
            continue;
        } else if let Some(i) = r
            .added
            .iter()
            .position(|a| name.eq_ignore_ascii_case(a.name))
        {
            if !r.added[i].upstream_wins {
                continue;
            }
            kept |= 1 << (i % 32);
        }
        push_header(out, name.as_bytes(), h.value);
    }
    write_via(out, &via);
    for (i, a) in r.added.iter().enumerate() {
        if kept & (1 << (i % 32)) == 0 {
            push_header(out, a.name.as_bytes(), a.value.as_bytes());
        }
    }
    match r.framing {
        OutFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            http::write::write_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        OutFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        OutFraming::NoBody | OutFraming::UntilClose => {}
    }
    match r.connection {
        ConnDirective::Default => {}
        ConnDirective::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnDirective::Close => out.extend_from_slice(b"Connection: close\r\n"),
        ConnDirective::Upgrade => out.extend_from_slice(UPGRADE_WEBSOCKET),
    }
    out.extend_from_slice(b"\r\n");
}
