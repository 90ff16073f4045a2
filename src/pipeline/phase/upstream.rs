//! Phase 11: the request leaves for its upstream. A declared body over `max_body` is a 413
//! before anything is sent; the balance key is taken (`hash_header`, `hash_ip`); then the
//! upstream request head is written into the connection's upstream buffer
//! ([`crate::pipeline::headers::write_request_head`]: the routed path after `strip_prefix` /
//! `rewrite`, hop-by-hop fields dropped, the gateway's own fields added). The exchange itself
//! (endpoint, pool, retries, body streaming) is [`crate::pipeline::proxy`]'s, run by
//! [`super::super::stack::run`].

use std::net::IpAddr;

use crate::config::model::Balance;
use crate::http::{BodyKind, Header, RequestHead};
use crate::pipeline::headers::{write_request_head, ForwardHead};
use crate::pipeline::Response;
use crate::upstream::balance::{hash_key, Key};

use super::auth::Subject;
use super::framing::Framing;
use super::identity::Identity;
use super::target::Resource;
use super::{Destination, Fields, Flow};

/// What the upstream phase reads of the request: the parsed head and what earlier phases
/// made of it.
pub struct Request<'a, 'h> {
    pub head: &'a RequestHead<'h>,
    /// The fields after phase 0.
    pub headers: &'a [Header<'h>],
    pub client_ip: IpAddr,
    /// The request came over TLS (`X-Forwarded-Proto`).
    pub https: bool,
    pub identity: &'a Identity,
    pub framing: &'a Framing,
    pub resource: &'a Resource<'h>,
    /// Who the auth phase found the client to be.
    pub subject: &'a Subject<'a>,
    /// The identity fields set upstream: the subject's forwarded claims and the BFF client
    /// (`pipeline::stack` assembles them once).
    pub forwarded: &'a [(&'a str, &'a str)],
}

/// Writes the upstream request head into `ubuf` (cleared first), with the WebSocket upgrade's
/// fields when `upgrade` (the tunnel's handshake check, `pipeline::tunnel::handshake`).
/// Continue: the balance key.
#[inline]
pub fn run(
    req: &Request<'_, '_>,
    to: &Destination<'_>,
    max_body: u64,
    upgrade: bool,
    ubuf: &mut Vec<u8>,
) -> Flow<Key> {
    if let BodyKind::Length(n) = req.framing.body {
        if n > max_body {
            let mut r = Response::error(413, "Request body too large", req.identity.id).closing();
            r.routed = Some(to.ids());
            return Flow::Respond(r);
        }
    }
    let identity = req.forwarded;
    let balance_key = match &to.upstream.balance {
        Balance::HashHeader(name) => Fields {
            headers: req.headers,
            identity,
        }
        .get(name)
        .map_or(Key::None, |v| Key::Hash(hash_key(v))),
        Balance::HashIp => Key::Hash(super::hash_ip(req.client_ip)),
        _ => Key::None,
    };
    let resource = req.resource;
    // An API key presented in the query never reaches the upstream.
    let without_key;
    let query = match req.subject.credential_param() {
        Some(name) => {
            without_key = resource
                .target
                .query
                .and_then(|q| crate::policy::auth::api_key::remove_from_query(q, name));
            without_key.as_deref()
        }
        None => resource.target.query,
    };
    ubuf.clear();
    write_request_head(
        ubuf,
        &ForwardHead {
            method: req.head.method,
            target: &resource.target,
            query,
            matched: to.matched,
            strip_prefix: to.route.strip_prefix,
            rewrite: to.route.rewrite.as_deref(),
            headers: req.headers,
            host: resource.host,
            fallback_host: &to.upstream.endpoints[0].authority,
            client_ip: req.client_ip,
            https: req.https,
            request_id: &req.identity.id,
            body: req.framing.body,
            trace: req.identity.trace.as_ref(),
            max_forwards: resource.max_forwards.map(|n| n - 1),
            identity,
            strip_authorization: req.subject.strips_authorization(),
            upgrade,
        },
    );
    Flow::Continue(balance_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Config;
    use crate::pipeline::ctx::RequestId;
    use crate::pipeline::phase::testing::{config, head, message};
    use crate::pipeline::phase::{framing, target};
    use crate::router::{Match, Params};

    fn cfg() -> Config {
        config(
            r#"
[server.limits]
max_body = "1KiB"

[upstreams.users]
endpoints = ["http://127.0.0.1:9001"]
balance = "hash:header:x-user"

[routes.users]
paths = ["/api/users"]
upstream = "users"
strip_prefix = true
"#,
        )
    }

    /// Runs framing, target and this phase on `raw` from 10.0.0.9 (route 0, whose prefix
    /// `/api/users` matched): the head written upstream and the balance key, or the answer.
    #[allow(clippy::result_large_err)] // a test helper: the answer is inspected whole
    fn upstream(raw: &[u8]) -> Result<(String, Key), Response> {
        let cfg = cfg();
        let router = crate::pipeline::phase::testing::router(&cfg);
        let h = head(raw);
        let identity = Identity {
            id: RequestId::from_client(b"rid").unwrap(),
            trace: None,
        };
        let Flow::Continue(framing) = framing::run(h.version, &h.headers, &identity.id) else {
            panic!("framing answered");
        };
        let Flow::Continue(resource) = target::run(&h, &h.headers, &router, &framing, &identity.id)
        else {
            panic!("target answered");
        };
        let m = Match {
            route: 0,
            pattern: "/api/users",
            prefix_len: "/api/users".len(),
            params: Params::new(),
        };
        let to = crate::pipeline::phase::split::run(
            &cfg,
            &m,
            &crate::pipeline::phase::Fields::plain(&h.headers),
            [10, 0, 0, 9].into(),
            || 0,
        );
        let req = Request {
            head: &h,
            headers: &h.headers,
            client_ip: [10, 0, 0, 9].into(),
            https: false,
            identity: &identity,
            framing: &framing,
            resource: &resource,
            subject: &crate::pipeline::phase::auth::Subject::Anonymous,
            forwarded: &[],
        };
        let mut ubuf = b"stale bytes".to_vec();
        match run(&req, &to, cfg.server.limits.max_body, false, &mut ubuf) {
            Flow::Continue(key) => Ok((String::from_utf8(ubuf).unwrap(), key)),
            Flow::Respond(r) => Err(r),
        }
    }

    #[test]
    fn the_upstream_head_carries_the_routed_path_and_the_gateway_fields() {
        let (out, key) = upstream(
            b"GET /api/users/7?x=1 HTTP/1.1\r\nHost: gw\r\nX-User: u1\r\nConnection: close\r\n\r\n",
        )
        .unwrap_or_else(|r| panic!("answered {r:?}"));
        assert!(
            out.starts_with("GET /7?x=1 HTTP/1.1\r\nHost: gw\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Request-Id: rid\r\n"), "{out}");
        assert!(out.contains("X-Forwarded-For: 10.0.0.9\r\n"), "{out}");
        assert!(!out.contains("stale"), "the buffer is cleared first: {out}");
        assert!(
            !out.to_ascii_lowercase().contains("connection: close"),
            "{out}"
        );
        assert!(out.ends_with("\r\n\r\n"), "{out}");
        assert!(
            matches!(key, Key::Hash(h) if h == hash_key(b"u1")),
            "{key:?}"
        );
        let (_, key) = upstream(b"GET /api/users HTTP/1.1\r\nHost: gw\r\n\r\n").unwrap();
        assert!(matches!(key, Key::None), "no x-user, no hash key: {key:?}");
    }

    #[test]
    fn a_declared_body_over_max_body_is_413_and_closes() {
        let r = upstream(b"POST /api/users HTTP/1.1\r\nHost: gw\r\nContent-Length: 1025\r\n\r\n")
            .expect_err("413");
        assert_eq!(
            (r.status, message(&r), r.close),
            (413, "Request body too large", true)
        );
        assert_eq!((r.routed, r.id.as_str()), (Some((0, 0)), "rid"));
        let ok = upstream(b"POST /api/users HTTP/1.1\r\nHost: gw\r\nContent-Length: 1024\r\n\r\n");
        assert!(ok.unwrap().0.contains("Content-Length: 1024\r\n"));
    }
}
