//! Phase 8, after auth (so a sticky key on an identity header is the verified value): which
//! upstream serves the matched route. A route with a
//! `split` (canary, A/B) picks a side by weight: by the sticky key's hash when the request has
//! one, so the same caller lands on the same side on every worker and across restarts, and
//! changing the weights only moves the keys between the old and new boundaries; else at
//! random.
//!
//! Never answers. A route without a split costs one branch; the random draw is taken only
//! when a split has no sticky key to go by.

use std::net::IpAddr;

use crate::config::model::{Config, Route, Sticky, UpstreamId};
use crate::http::Header;
use crate::router::Match;
use crate::upstream::balance::hash_key;

use super::{Destination, Fields};

/// `fields`: the request's fields after phase 0 with the verified identity headers; `rand`: a
/// uniform 64-bit draw.
#[inline]
pub fn run<'c>(
    cfg: &'c Config,
    m: &Match<'_, '_>,
    fields: &Fields<'_, '_>,
    peer: IpAddr,
    rand: impl FnOnce() -> u64,
) -> Destination<'c> {
    let route = &cfg.routes[m.route];
    let upstream_id = if route.split.is_empty() {
        route.upstream
    } else {
        side(route, fields, peer, rand)
    };
    Destination {
        route_id: m.route,
        route,
        matched: m.prefix_len,
        upstream_id,
        upstream: &cfg.upstreams[upstream_id],
    }
}

/// The matched route with its own upstream: what answers made before the split name.
pub fn routed<'c>(cfg: &'c Config, m: &Match<'_, '_>) -> Destination<'c> {
    let route = &cfg.routes[m.route];
    Destination {
        route_id: m.route,
        route,
        matched: m.prefix_len,
        upstream_id: route.upstream,
        upstream: &cfg.upstreams[route.upstream],
    }
}

fn side(
    route: &Route,
    fields: &Fields<'_, '_>,
    peer: IpAddr,
    rand: impl FnOnce() -> u64,
) -> UpstreamId {
    let total: u64 = route.split.iter().map(|s| u64::from(s.weight)).sum();
    let key = route.sticky.as_ref().and_then(|sticky| match sticky {
        Sticky::Header(name) => fields.get(name).map(hash_key),
        Sticky::Cookie(name) => cookie(fields.headers, name).map(hash_key),
        Sticky::Ip => Some(super::hash_ip(peer)),
    });
    let draw = key.unwrap_or_else(rand);
    // Multiply-shift maps the 64-bit draw onto [0, total) preserving order.
    let mut point = ((u128::from(draw) * u128::from(total)) >> 64) as u64;
    for side in &route.split {
        if point < u64::from(side.weight) {
            return side.upstream;
        }
        point -= u64::from(side.weight);
    }
    route.upstream
}

/// The value of cookie `name` (RFC 6265 §5.4: `Cookie: a=1; b=2`, possibly several fields).
fn cookie<'h>(headers: &[Header<'h>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .flat_map(|h| h.value.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::phase::testing::{config, head};
    use crate::router::Params;

    /// Upstreams `a` (0) and `b` (1); route 0 splits 50/50 with `sticky`, route 1 has no split.
    fn cfg(sticky: &str) -> Config {
        config(&format!(
            r#"
[upstreams.a]
endpoints = ["http://127.0.0.1:9001"]

[upstreams.b]
endpoints = ["http://127.0.0.1:9002"]

[routes.split]
paths = ["/s"]
split = [{{ upstream = "a", weight = 50 }}, {{ upstream = "b", weight = 50 }}]
{sticky}

[routes.plain]
paths = ["/p"]
upstream = "b"
"#
        ))
    }

    fn matched(route: usize) -> Match<'static, 'static> {
        Match {
            route,
            pattern: "/s",
            prefix_len: 2,
            params: Params::new(),
        }
    }

    /// The upstream name route 0 sends `raw` from `peer` to, with the draw `rand`.
    fn side_of(cfg: &Config, raw: &[u8], peer: &str, rand: impl FnOnce() -> u64) -> String {
        let h = head(raw);
        let to = run(
            cfg,
            &matched(0),
            &Fields::plain(&h.headers),
            peer.parse().unwrap(),
            rand,
        );
        assert_eq!((to.route_id, to.matched), (0, 2));
        to.upstream.name.clone()
    }

    /// The side a sticky key lands on: the lower half of the hash space is `a`.
    fn by_hash(key: &[u8]) -> &'static str {
        if hash_key(key) < 1 << 63 {
            "a"
        } else {
            "b"
        }
    }

    const NO_DRAW: fn() -> u64 = || panic!("a sticky key decides without a draw");

    #[test]
    fn a_route_without_split_goes_to_its_upstream_without_a_draw() {
        let cfg = cfg("");
        let h = head(b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n");
        let to = run(
            &cfg,
            &matched(1),
            &Fields::plain(&h.headers),
            "10.0.0.1".parse().unwrap(),
            NO_DRAW,
        );
        assert_eq!(
            (to.route_id, to.upstream_id, to.upstream.name.as_str()),
            (1, 1, "b")
        );
        assert_eq!(to.ids(), (1, 1));
    }

    #[test]
    fn without_a_sticky_key_the_draw_picks_the_side_by_weight() {
        let cfg = cfg("sticky = \"header:x-user\"");
        let raw = b"GET /s HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(side_of(&cfg, raw, "10.0.0.1", || 0), "a");
        assert_eq!(side_of(&cfg, raw, "10.0.0.1", || (1 << 63) - 1), "a");
        assert_eq!(side_of(&cfg, raw, "10.0.0.1", || 1 << 63), "b");
        assert_eq!(side_of(&cfg, raw, "10.0.0.1", || u64::MAX), "b");
    }

    #[test]
    fn a_sticky_header_always_lands_on_the_same_side() {
        let cfg = cfg("sticky = \"header:x-user\"");
        let users = ["1", "2", "alice", "bob", "carol", "42"];
        let sides: Vec<&str> = users.iter().map(|u| by_hash(u.as_bytes())).collect();
        assert!(
            sides.contains(&"a") && sides.contains(&"b"),
            "the keys cover both sides"
        );
        for user in users {
            let raw = format!("GET /s HTTP/1.1\r\nHost: a\r\nX-User: {user}\r\n\r\n");
            let want = by_hash(user.as_bytes());
            for peer in ["10.0.0.1", "10.0.0.2"] {
                assert_eq!(
                    side_of(&cfg, raw.as_bytes(), peer, NO_DRAW),
                    want,
                    "user {user}"
                );
            }
        }
    }

    #[test]
    fn a_sticky_cookie_always_lands_on_the_same_side() {
        let cfg = cfg("sticky = \"cookie:uid\"");
        for uid in ["1", "2", "alice", "bob", "carol", "42"] {
            let raw = format!(
                "GET /s HTTP/1.1\r\nHost: a\r\nCookie: theme=dark\r\nCookie: x=1;  uid={uid}; y=2\r\n\r\n"
            );
            assert_eq!(
                side_of(&cfg, raw.as_bytes(), "10.0.0.1", NO_DRAW),
                by_hash(uid.as_bytes())
            );
        }
        // A cookie whose name only ends in the sticky name is not it: the draw decides.
        let raw = b"GET /s HTTP/1.1\r\nHost: a\r\nCookie: xuid=1\r\n\r\n";
        assert_eq!(side_of(&cfg, raw, "10.0.0.1", || u64::MAX), "b");
        assert_eq!(side_of(&cfg, raw, "10.0.0.1", || 0), "a");
    }

    #[test]
    fn a_sticky_ip_always_lands_on_the_same_side() {
        let cfg = cfg("sticky = \"ip\"");
        let raw = b"GET /s HTTP/1.1\r\nHost: a\r\n\r\n";
        for ip in ["10.0.0.1", "10.0.0.2", "192.168.7.9", "::1", "2001:db8::5"] {
            let want = match ip.parse::<IpAddr>().unwrap() {
                IpAddr::V4(v4) => by_hash(&v4.octets()),
                IpAddr::V6(v6) => by_hash(&v6.octets()),
            };
            assert_eq!(side_of(&cfg, raw, ip, NO_DRAW), want, "{ip}");
        }
    }
}
