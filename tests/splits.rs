//! Traffic splits (`routes.*.split` and `sticky`, issue 3 contract): requests are shared
//! between upstreams by weight, at random per request; a sticky key (header, cookie or client
//! IP) pins a caller to one side, the same side on every worker and after a restart; a route
//! with a header predicate still wins over the split route on the same path.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use support::*;

/// An upstream answering its own name.
fn named(name: &'static str) -> Upstream {
    Upstream::start(move |_| Reply::text(200, name))
}

/// Config: 2 workers, upstreams `stable` (on `a`) and `canary` (on `b`), and route `r` on `/`
/// with `route_keys` (its split, sticky, ...) and `extra` top-level TOML.
fn config(a: &Upstream, b: &Upstream, route_keys: &str, extra: &str) -> String {
    format!(
        r#"
[server]
workers = 2

[upstreams.stable]
endpoints = ["{}"]

[upstreams.canary]
endpoints = ["{}"]

[routes.r]
paths = ["/"]
{route_keys}

{extra}
"#,
        a.url(),
        b.url()
    )
}

const SPLIT_80_20: &str =
    r#"split = [{ upstream = "stable", weight = 80 }, { upstream = "canary", weight = 20 }]"#;
const SPLIT_50_50: &str =
    r#"split = [{ upstream = "stable", weight = 50 }, { upstream = "canary", weight = 50 }]"#;

/// Which side served a request with `X-User-Id: id`, on a new connection.
fn side_for_user(gw: &Gateway, id: &str) -> String {
    let r = send_request(gw.addr(), &Req::get("/").header("X-User-Id", id));
    assert_eq!(r.status, 200, "{r:?}");
    r.text()
}

#[test]
fn split_shares_requests_by_weight_80_20() {
    let a = named("stable");
    let b = named("canary");
    let gw = Gateway::start(&config(&a, &b, SPLIT_80_20, ""));
    // One keep-alive connection: the side is picked per request, not per connection.
    let mut c = Client::connect(gw.addr());
    let n = 1000;
    let mut canary = 0;
    for _ in 0..n {
        let r = c.request(&Req::get("/"));
        assert_eq!(r.status, 200, "{r:?}");
        if r.text() == "canary" {
            canary += 1;
        }
    }
    // Expected 200, standard deviation about 12.6: the bounds are about 5 deviations out.
    assert!(
        (140..=260).contains(&canary),
        "{canary} of {n} requests on the 20% side"
    );
    assert_eq!(a.request_count() + b.request_count(), n);
}

/// `split` wins over `upstream` on the same route, and a side of weight 0 gets nothing.
#[test]
fn split_100_0_sends_everything_to_one_side_and_wins_over_upstream() {
    let a = named("stable");
    let b = named("canary");
    let other = named("other");
    let gw = Gateway::start(&config(
        &a,
        &b,
        r#"upstream = "other"
split = [{ upstream = "stable", weight = 100 }, { upstream = "canary", weight = 0 }]"#,
        &format!("[upstreams.other]\nendpoints = [\"{}\"]\n", other.url()),
    ));
    for i in 0..100 {
        let r = get(gw.addr(), &format!("/r{i}"));
        assert_eq!(r.text(), "stable", "request {i}: {r:?}");
    }
    assert_eq!(b.request_count(), 0);
    assert_eq!(other.request_count(), 0);
}

/// A sticky header pins each user to one side: on new connections (both workers), after a
/// restart (a second gateway on the same config), and with the users spread by weight.
#[test]
fn sticky_header_keeps_a_user_on_one_side_across_connections_and_restarts() {
    let a = named("stable");
    let b = named("canary");
    let toml = config(
        &a,
        &b,
        &format!("{SPLIT_80_20}\nsticky = \"header:x-user-id\""),
        "",
    );
    let gw = Gateway::start(&toml);
    let users = 200;
    let mut sides = HashMap::new();
    for u in 0..users {
        let id = format!("user-{u}");
        let first = side_for_user(&gw, &id);
        let again = side_for_user(&gw, &id);
        assert_eq!(again, first, "{id} moved between sides");
        sides.insert(id, first);
    }
    let canary = sides.values().filter(|s| *s == "canary").count();
    // Expected 40, standard deviation about 5.7.
    assert!(
        (20..=65).contains(&canary),
        "{canary} of {users} users on the 20% side"
    );
    drop(gw);

    let restarted = Gateway::start(&toml);
    for (id, side) in &sides {
        assert_eq!(
            &side_for_user(&restarted, id),
            side,
            "{id} changed sides across a restart"
        );
    }
}

#[test]
fn sticky_cookie_keeps_a_session_on_one_side() {
    let a = named("stable");
    let b = named("canary");
    let gw = Gateway::start(&config(
        &a,
        &b,
        &format!("{SPLIT_50_50}\nsticky = \"cookie:session\""),
        "",
    ));
    let mut used = HashSet::new();
    for s in 0..40 {
        let cookie = format!("theme=dark; session=s{s}-abc; lang=en");
        let mut seen = HashSet::new();
        for _ in 0..3 {
            let r = send_request(gw.addr(), &Req::get("/").header("Cookie", &cookie));
            assert_eq!(r.status, 200, "{r:?}");
            seen.insert(r.text());
        }
        assert_eq!(seen.len(), 1, "session s{s} moved between sides: {seen:?}");
        used.extend(seen);
    }
    assert_eq!(used.len(), 2, "40 sessions all on {used:?}");
}

#[test]
fn sticky_ip_keeps_a_client_ip_on_one_side() {
    let a = named("stable");
    let b = named("canary");
    let gw = Gateway::start(&config(
        &a,
        &b,
        &format!("{SPLIT_50_50}\nsticky = \"ip\""),
        "",
    ));
    let mut used = HashSet::new();
    for last in 10..40u8 {
        let ip = Ipv4Addr::new(127, 0, 0, last);
        let mut seen = HashSet::new();
        for _ in 0..3 {
            // A new connection (new source port) every time: only the IP is shared.
            let mut c = Client::connect_from(ip, gw.addr());
            seen.insert(c.request(&Req::get("/")).text());
        }
        assert_eq!(seen.len(), 1, "client {ip} moved between sides: {seen:?}");
        used.extend(seen);
    }
    assert_eq!(used.len(), 2, "30 client IPs all on {used:?}");
}

/// Route precedence is unchanged by splits: on the same path, the route with a header
/// predicate wins over the split route.
#[test]
fn header_predicate_route_wins_over_the_split_route() {
    let a = named("stable");
    let b = named("canary");
    let pinned = named("pinned");
    let gw = Gateway::start(&config(
        &a,
        &b,
        &format!("{SPLIT_50_50}\nsticky = \"header:x-user-id\""),
        &format!(
            "[upstreams.pinned]\nendpoints = [\"{}\"]\n\n[routes.canary_header]\npaths = [\"/\"]\nheaders = {{ \"x-canary\" = \"1\" }}\nupstream = \"pinned\"\n",
            pinned.url()
        ),
    ));
    for u in 0..20 {
        let id = format!("user-{u}");
        let r = send_request(
            gw.addr(),
            &Req::get("/")
                .header("X-Canary", "1")
                .header("X-User-Id", &id),
        );
        assert_eq!(r.text(), "pinned", "{id} with x-canary: 1");
        let r = send_request(
            gw.addr(),
            &Req::get("/")
                .header("X-Canary", "0")
                .header("X-User-Id", &id),
        );
        assert_ne!(r.text(), "pinned", "{id} with x-canary: 0");
    }
    assert_eq!(pinned.request_count(), 20);
    assert_eq!(a.request_count() + b.request_count(), 20);
}

/// A request without the sticky key picks a side at random by weight, per request (not, say,
/// always the side the empty key hashes to).
#[test]
fn missing_sticky_key_falls_back_to_weighted_random() {
    let a = named("stable");
    let b = named("canary");
    let gw = Gateway::start(&config(
        &a,
        &b,
        &format!("{SPLIT_50_50}\nsticky = \"header:x-user-id\""),
        "",
    ));
    let mut c = Client::connect(gw.addr());
    let n = 200;
    let mut canary = 0;
    for _ in 0..n {
        if c.request(&Req::get("/")).text() == "canary" {
            canary += 1;
        }
    }
    // Expected 100, standard deviation about 7.
    assert!(
        (60..=140).contains(&canary),
        "{canary} of {n} keyless requests on one side of a 50/50 split"
    );
}
