//! Backend-for-frontend client profiles over real sockets (issue 11, `[bff]`): a gateway in
//! front of echoing upstreams, one per route family, tagged so the test sees which route
//! answered and the target it forwarded. A request belongs to a client by its path prefix
//! (removed before routing and upstream, on segment boundaries) or by `bff.header`; a prefix
//! wins over the header; routes with `client` match only their client's requests and outrank
//! a route without one on the same path; a client's `auth` and `rate_limits` are defaults a
//! route's own settings override (a route's list replaces the client's); `strip_prefix` and
//! `rewrite` apply to the path under the prefix; HEAD and keep-alive are unaffected; an
//! unknown client is refused by `dispatch check` at its key, whose summary lists the clients.

mod support;

use serde_json::Value;
use support::auth::{seen, sha256_hex};
use support::*;

/// An echoing upstream whose answers carry `X-Upstream: <tag>`.
fn tagged(tag: &'static str) -> Upstream {
    Upstream::start(move |req| Reply::echo(req).header("X-Upstream", tag))
}

/// The tag of the upstream that answered and the target it received.
#[track_caller]
fn answered_by(resp: &Response) -> (String, String) {
    let tag = resp.header("x-upstream").unwrap_or_default().to_string();
    (tag, seen(resp).target)
}

/// Clients `mobile` (`/mobile/v1`), `web` (`/web/v1`) and `tv` (header only); `/transactions`
/// served by a route without client (`any`), one for web and one for tv; `/api` with
/// `strip_prefix`, `/v1/transfers` with `rewrite`, and `/mobile/v1x` (a path that only looks
/// like mobile's prefix).
fn routing_gateway(any: &Upstream, web: &Upstream, tv: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"
[upstreams.any]
endpoints = ["{any}"]
retries = 0

[upstreams.web]
endpoints = ["{web}"]
retries = 0

[upstreams.tv]
endpoints = ["{tv}"]
retries = 0

[bff]
header = "X-Client-Type"

[bff.clients.mobile]
prefix = "/mobile/v1"

[bff.clients.web]
prefix = "/web/v1"

[bff.clients.tv]

[routes.tx]
paths = ["/transactions"]
upstream = "any"

[routes.tx_web]
client = "web"
paths = ["/transactions"]
upstream = "web"

[routes.tx_tv]
client = "tv"
paths = ["/transactions"]
upstream = "tv"

[routes.api]
paths = ["/api"]
upstream = "any"
strip_prefix = true

[routes.transfers]
paths = ["/v1/transfers"]
upstream = "any"
rewrite = "/v2/transfers"

[routes.lookalike]
paths = ["/mobile/v1x"]
upstream = "any"
"#,
        any = any.url(),
        web = web.url(),
        tv = tv.url(),
    ))
}

/// By prefix (removed upstream, query kept, segment boundary), by header, prefix over header;
/// a client's route outranks the route without client on the same path, and the route
/// without client serves every other request.
#[test]
fn requests_belong_to_clients_by_prefix_or_header_and_reach_their_routes() {
    let (any, web, tv) = (tagged("any"), tagged("web"), tagged("tv"));
    let gw = routing_gateway(&any, &web, &tv);
    let cases: [(Req, (&str, &str)); 9] = [
        // Mobile has no route of its own: the route without client serves it, prefix removed.
        (
            Req::get("/mobile/v1/transactions?page=2"),
            ("any", "/transactions?page=2"),
        ),
        (Req::get("/web/v1/transactions"), ("web", "/transactions")),
        (
            Req::get("/web/v1/transactions/42"),
            ("web", "/transactions/42"),
        ),
        (
            Req::get("/transactions").header("X-Client-Type", "tv"),
            ("tv", "/transactions"),
        ),
        (Req::get("/transactions"), ("any", "/transactions")),
        // Names are compared exactly; an unknown one is no client.
        (
            Req::get("/transactions").header("X-Client-Type", "TV"),
            ("any", "/transactions"),
        ),
        (
            Req::get("/transactions").header("X-Client-Type", "watch"),
            ("any", "/transactions"),
        ),
        // The prefix wins over the header.
        (
            Req::get("/web/v1/transactions").header("X-Client-Type", "tv"),
            ("web", "/transactions"),
        ),
        // Segment boundary: `/mobile/v1x` is not under `/mobile/v1`, and keeps its path.
        (
            Req::get("/mobile/v1x/transactions"),
            ("any", "/mobile/v1x/transactions"),
        ),
    ];
    for (req, (tag, target)) in cases {
        let resp = send_request(gw.addr(), &req);
        assert_eq!(
            answered_by(&resp),
            (tag.to_string(), target.to_string()),
            "{} {}",
            req.method,
            req.target
        );
    }
    // The tv route is tv's only: by prefix the same path goes elsewhere.
    assert_eq!(
        any.request_count() + web.request_count() + tv.request_count(),
        9
    );
}

/// The client decided is the client forwarded: the upstream's `X-Client-Type` names the
/// client the gateway served the request as (a prefix's, over a conflicting header), and is
/// absent when the request has none (a value naming no client is not passed on).
#[test]
fn the_bff_header_upstream_names_the_client_the_gateway_decided() {
    let (any, web, tv) = (tagged("any"), tagged("web"), tagged("tv"));
    let gw = routing_gateway(&any, &web, &tv);
    for (req, want) in [
        (
            Req::get("/web/v1/transactions").header("X-Client-Type", "tv"),
            Some("web"),
        ),
        (Req::get("/mobile/v1/transactions"), Some("mobile")),
        (
            Req::get("/transactions").header("x-client-type", "tv"),
            Some("tv"),
        ),
        (
            Req::get("/transactions").header("X-Client-Type", "admin"),
            None,
        ),
        (Req::get("/transactions"), None),
    ] {
        let resp = send_request(gw.addr(), &req);
        assert_eq!(seen(&resp).one("x-client-type"), want, "{}", req.target);
    }
}

/// Under a prefix, the route's `strip_prefix` and `rewrite` apply to the path that is left.
#[test]
fn strip_prefix_and_rewrite_apply_to_the_path_under_the_client_prefix() {
    let (any, web, tv) = (tagged("any"), tagged("web"), tagged("tv"));
    let gw = routing_gateway(&any, &web, &tv);
    for (target, want) in [
        ("/mobile/v1/api/users/7?x=1", "/users/7?x=1"),
        ("/mobile/v1/api", "/"),
        ("/web/v1/v1/transfers/9?dry=1", "/v2/transfers/9?dry=1"),
        ("/v1/transfers", "/v2/transfers"),
    ] {
        let resp = get(gw.addr(), target);
        assert_eq!(answered_by(&resp).1, want, "{target}");
    }
}

/// A prefix that no route matches under is a 404; two header fields naming different clients
/// are a 400; both are the JSON error, and neither reaches an upstream.
#[test]
fn unmatched_prefix_is_404_and_conflicting_client_headers_are_400() {
    let (any, web, tv) = (tagged("any"), tagged("web"), tagged("tv"));
    let gw = routing_gateway(&any, &web, &tv);
    for target in ["/mobile/v1", "/mobile/v1/", "/web/v1/nothing"] {
        assert_error(&get(gw.addr(), target), 404);
    }
    let resp = send_request(
        gw.addr(),
        &Req::get("/transactions")
            .header("X-Client-Type", "tv")
            .header("X-Client-Type", "web"),
    );
    assert_error(&resp, 400);
    assert_eq!(
        resp.json()["error"]["message"],
        "more than one x-client-type field, with different values: which names the client is ambiguous"
    );
    // The same value twice names one client.
    let resp = send_request(
        gw.addr(),
        &Req::get("/transactions")
            .header("X-Client-Type", "tv")
            .header("X-Client-Type", "tv"),
    );
    assert_eq!(answered_by(&resp).0, "tv");
    assert_eq!(any.request_count() + web.request_count(), 0);
    assert_eq!(tv.request_count(), 1);
}

/// HEAD and keep-alive through a prefix: one connection carries GET, HEAD (no body) and GET.
#[test]
fn head_and_keep_alive_work_through_a_client_prefix() {
    let (any, web, tv) = (tagged("any"), tagged("web"), tagged("tv"));
    let gw = routing_gateway(&any, &web, &tv);
    let mut c = Client::connect(gw.addr());
    let first = c.request(&Req::get("/web/v1/transactions"));
    assert_eq!(answered_by(&first).0, "web");
    assert!(first.keeps_alive());
    let head = c.request(&Req::head("/web/v1/transactions"));
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD got a body");
    assert_eq!(head.header("x-upstream"), Some("web"));
    let last = c.request(&Req::get("/mobile/v1/transactions"));
    assert_eq!(
        answered_by(&last),
        ("any".to_string(), "/transactions".to_string())
    );
    assert_eq!(web.requests()[1].method, "HEAD");
    assert_eq!(web.requests()[1].path(), "/transactions");
    assert_eq!(any.connections() + web.connections() + tv.connections(), 2);
}

/// Admin `GET /routes` names each route's client.
#[test]
fn admin_routes_show_the_client() {
    let (any, web, tv) = (tagged("any"), tagged("web"), tagged("tv"));
    let gw = routing_gateway(&any, &web, &tv);
    let v = get(gw.admin_addr(), "/routes").json();
    let client = |name: &str| -> Value {
        v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .unwrap_or_else(|| panic!("no route {name} in {v}"))["client"]
            .clone()
    };
    assert_eq!(client("tx_web"), "web");
    assert_eq!(client("tx_tv"), "tv");
    assert_eq!(client("tx"), Value::Null);
}

/// API keys: `mobile-key` for the mobile client's default policy, `route-key` for `/own`'s.
fn auth_gateway(dir: &TempDir, up: &Upstream) -> Gateway {
    for (file, key) in [("mobile.toml", "mobile-key"), ("route.toml", "route-key")] {
        dir.write(
            file,
            &format!(
                "[keys.\"{}\"]\nconsumer = \"c\"\n",
                sha256_hex(key.as_bytes())
            ),
        );
    }
    let d = dir.path().display();
    Gateway::start(&format!(
        r#"
[upstreams.app]
endpoints = ["{up}"]
retries = 0

[auth.mobile_keys]
type = "api_key"
header = "x-api-key"
keys_file = "{d}/mobile.toml"

[auth.route_keys]
type = "api_key"
header = "x-api-key"
keys_file = "{d}/route.toml"

[bff.clients.mobile]
prefix = "/mobile/v1"
auth = "mobile_keys"

[routes.open]
paths = ["/open"]
upstream = "app"

[routes.own]
paths = ["/own"]
upstream = "app"
auth = "route_keys"
"#,
        up = up.url()
    ))
}

/// A route without `auth` reached through the mobile prefix takes mobile's auth (401 without
/// a key), and without a client only its own (none); a route's own `auth` overrides the
/// client's (mobile's key refused, the route's accepted).
#[test]
fn a_client_auth_is_the_default_that_a_route_auth_overrides() {
    let (dir, up) = (TempDir::new(), tagged("app"));
    let gw = auth_gateway(&dir, &up);
    let key = |target: &str, key: &str| Req::get(target).header("x-api-key", key);
    assert_error(&get(gw.addr(), "/mobile/v1/open"), 401);
    let ok = send_request(gw.addr(), &key("/mobile/v1/open", "mobile-key"));
    assert_eq!(answered_by(&ok).1, "/open");
    assert_eq!(answered_by(&get(gw.addr(), "/open")).1, "/open");
    assert_error(
        &send_request(gw.addr(), &key("/mobile/v1/own", "mobile-key")),
        401,
    );
    let ok = send_request(gw.addr(), &key("/mobile/v1/own", "route-key"));
    assert_eq!(answered_by(&ok).1, "/own");
    assert_eq!(up.request_count(), 3);
}

/// The mobile client's limit (2 per minute) is the default of a route without limits; a
/// route's own list replaces it (not merged: it still admits once mobile's is spent); a
/// request of no client on a route without limits is not limited.
#[test]
fn client_rate_limits_are_the_default_that_a_route_list_replaces() {
    let up = tagged("app");
    let gw = Gateway::start(&format!(
        r#"
[upstreams.app]
endpoints = ["{up}"]
retries = 0

[rate_limits.mobile]
algorithm = "fixed_window"
key = "ip"
limit = 2
window = "1m"

[rate_limits.own]
algorithm = "fixed_window"
key = "ip"
limit = 5
window = "1m"

[bff.clients.mobile]
prefix = "/mobile/v1"
rate_limits = ["mobile"]

[routes.open]
paths = ["/open"]
upstream = "app"

[routes.limited]
paths = ["/limited"]
upstream = "app"
rate_limits = ["own"]
"#,
        up = up.url()
    ));
    for remaining in ["1", "0"] {
        let resp = get(gw.addr(), "/mobile/v1/open");
        assert_eq!(resp.status, 200);
        assert_eq!(
            (
                resp.header("ratelimit-limit"),
                resp.header("ratelimit-remaining")
            ),
            (Some("2"), Some(remaining))
        );
    }
    assert_error_retry_after(&get(gw.addr(), "/mobile/v1/open"), 429);
    let own = get(gw.addr(), "/mobile/v1/limited");
    assert_eq!(own.status, 200);
    assert_eq!(
        (
            own.header("ratelimit-limit"),
            own.header("ratelimit-remaining")
        ),
        (Some("5"), Some("4"))
    );
    let plain = get(gw.addr(), "/open");
    assert_eq!(plain.status, 200);
    assert!(!plain.has_header("ratelimit-limit"), "{:?}", plain.headers);
    assert_eq!(up.request_count(), 4);
}

const CHECKED: &str = r#"
[upstreams.app]
endpoints = ["http://127.0.0.1:9"]

[bff]
header = "x-client-type"

[bff.clients.mobile]
prefix = "/mobile/v1"

[routes.r]
paths = ["/r"]
upstream = "app"
client = "mobile"
"#;

/// `dispatch check` lists the clients and each route's client, and refuses an unknown client
/// at its key with a suggestion.
#[test]
fn check_lists_clients_and_refuses_an_unknown_one() {
    let out = check(CHECKED);
    assert_eq!(out.code, Some(0), "{}", out.all());
    for expected in [
        "bff (1 client, header x-client-type):\n  mobile: prefix /mobile/v1 (removed before routing)\n",
        "    client: mobile\n",
    ] {
        assert!(out.stdout.contains(expected), "missing {expected:?} in:\n{}", out.stdout);
    }
    let out = check(&CHECKED.replace("client = \"mobile\"", "client = \"mobil\""));
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.all().contains(
            ":14:10: routes.r.client: no bff client named \"mobil\" (did you mean \"mobile\"?)"
        ),
        "{}",
        out.all()
    );
}
