//! Routing (BEHAVIOR.md "Route precedence" and the `[routes.*]` keys): path patterns, methods,
//! hosts, headers, precedence between routes, 404/405, `strip_prefix`, `rewrite` and the
//! per-route `timeout`.
//!
//! Every route in a fixture has its own upstream, which answers with the route's name in the
//! body and the request-target it received in `X-Target`, so a test sees both which route
//! matched and what path was forwarded.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::*;

struct Fixture {
    gw: Gateway,
    _upstreams: Vec<Upstream>,
}

/// What a request came back as: the route name (or the error status) and the forwarded target.
#[derive(Debug, PartialEq, Eq)]
enum Hit {
    Route(String, String),
    Status(u16),
}

fn route(name: &str, target: &str) -> Hit {
    Hit::Route(name.to_string(), target.to_string())
}

/// A gateway with one route per `(name, toml lines)`; each gets `upstream = "<name>"`.
fn fixture(routes: &[(&str, &str)]) -> Fixture {
    let mut toml = String::new();
    let mut upstreams = Vec::new();
    for (name, lines) in routes {
        let n = name.to_string();
        let up = Upstream::start(move |req| Reply::text(200, &n).header("X-Target", &req.target));
        toml.push_str(&format!(
            "[upstreams.{name}]\nendpoints = [\"{}\"]\nretries = 0\n\n[routes.{name}]\nupstream = \"{name}\"\n{lines}\n\n",
            up.url()
        ));
        upstreams.push(up);
    }
    Fixture {
        gw: Gateway::start(&toml),
        _upstreams: upstreams,
    }
}

impl Fixture {
    fn send(&self, req: &Req) -> Response {
        send_request(self.gw.addr(), req)
    }

    fn hit(&self, req: &Req) -> Hit {
        let r = self.send(req);
        if r.status == 200 {
            Hit::Route(r.text(), r.header("x-target").unwrap_or("").to_string())
        } else {
            Hit::Status(r.status)
        }
    }

    fn get(&self, target: &str) -> Hit {
        self.hit(&Req::get(target))
    }
}

#[test]
fn prefix_matches_on_segment_boundaries_only() {
    let f = fixture(&[("users", r#"paths = ["/api/v1/users"]"#)]);
    assert_eq!(f.get("/api/v1/users"), route("users", "/api/v1/users"));
    assert_eq!(
        f.get("/api/v1/users/42"),
        route("users", "/api/v1/users/42")
    );
    assert_eq!(f.get("/api/v1/users/"), route("users", "/api/v1/users/"));
    assert_eq!(
        f.get("/api/v1/users?page=2"),
        route("users", "/api/v1/users?page=2")
    );
    assert_eq!(f.get("/api/v1/usersx"), Hit::Status(404));
    assert_eq!(f.get("/api/v1"), Hit::Status(404));
    assert_eq!(f.get("/"), Hit::Status(404));
}

#[test]
fn a_route_matches_any_of_its_paths() {
    let f = fixture(&[("users", r#"paths = ["/api/v1/users", "/api/v1/profiles"]"#)]);
    assert_eq!(f.get("/api/v1/users/1"), route("users", "/api/v1/users/1"));
    assert_eq!(
        f.get("/api/v1/profiles/1"),
        route("users", "/api/v1/profiles/1")
    );
    assert_eq!(f.get("/api/v1/other"), Hit::Status(404));
}

#[test]
fn query_string_does_not_take_part_in_matching() {
    let f = fixture(&[("a", r#"paths = ["/a"]"#), ("b", r#"paths = ["/b"]"#)]);
    assert_eq!(f.get("/a?next=/b"), route("a", "/a?next=/b"));
    assert_eq!(f.get("/b?x=/a/y"), route("b", "/b?x=/a/y"));
}

#[test]
fn exact_path_matches_only_itself() {
    let f = fixture(&[("health", r#"paths = ["=/health"]"#)]);
    assert_eq!(f.get("/health"), route("health", "/health"));
    assert_eq!(
        f.get("/health?verbose=1"),
        route("health", "/health?verbose=1")
    );
    assert_eq!(f.get("/health/x"), Hit::Status(404));
    assert_eq!(f.get("/healthz"), Hit::Status(404));
}

#[test]
fn exact_beats_every_pattern_then_segments_decide() {
    let f = fixture(&[
        ("exact", r#"paths = ["=/api/v1/users"]"#),
        ("prefix", r#"paths = ["/api/v1/users"]"#),
        ("param", r#"paths = ["/api/v1/:thing"]"#),
        ("wild", r#"paths = ["/api/*"]"#),
    ]);
    assert_eq!(f.get("/api/v1/users"), route("exact", "/api/v1/users"));
    // Segment 3: literal "users" beats ":thing".
    assert_eq!(f.get("/api/v1/users/1"), route("prefix", "/api/v1/users/1"));
    // Segment 2: literal "v1" beats the end of "/api/*".
    assert_eq!(f.get("/api/v1/orders"), route("param", "/api/v1/orders"));
    assert_eq!(f.get("/api/v2/users"), route("wild", "/api/v2/users"));
    assert_eq!(f.get("/api"), route("wild", "/api"));
}

#[test]
fn literal_segment_beats_param() {
    let f = fixture(&[
        ("me", r#"paths = ["/users/me"]"#),
        ("by_id", r#"paths = ["/users/:id"]"#),
    ]);
    assert_eq!(f.get("/users/me"), route("me", "/users/me"));
    assert_eq!(f.get("/users/7"), route("by_id", "/users/7"));
    assert_eq!(
        f.get("/users/me/settings"),
        route("me", "/users/me/settings")
    );
    assert_eq!(f.get("/users/7/orders"), route("by_id", "/users/7/orders"));
    assert_eq!(f.get("/users/meme"), route("by_id", "/users/meme"));
}

#[test]
fn param_beats_end_of_pattern() {
    let f = fixture(&[
        ("list", r#"paths = ["/api/v1/users"]"#),
        ("one", r#"paths = ["/api/v1/users/:id"]"#),
    ]);
    assert_eq!(f.get("/api/v1/users/7"), route("one", "/api/v1/users/7"));
    assert_eq!(
        f.get("/api/v1/users/7/orders"),
        route("one", "/api/v1/users/7/orders")
    );
    assert_eq!(f.get("/api/v1/users"), route("list", "/api/v1/users"));
}

#[test]
fn param_pattern_needs_its_segment() {
    let f = fixture(&[("by_id", r#"paths = ["/users/:id"]"#)]);
    assert_eq!(f.get("/users/7"), route("by_id", "/users/7"));
    assert_eq!(f.get("/users"), Hit::Status(404));
}

#[test]
fn longer_literal_prefix_wins() {
    let f = fixture(&[
        ("api", r#"paths = ["/api"]"#),
        ("v1", r#"paths = ["/api/v1"]"#),
        ("versioned", r#"paths = ["/api/:version/users"]"#),
    ]);
    assert_eq!(f.get("/api/v1/x"), route("v1", "/api/v1/x"));
    // "/api/v1" is literal one segment further than "/api/:version/users".
    assert_eq!(f.get("/api/v1/users"), route("v1", "/api/v1/users"));
    assert_eq!(f.get("/api/v2/users"), route("versioned", "/api/v2/users"));
    assert_eq!(f.get("/api/v2"), route("api", "/api/v2"));
    assert_eq!(f.get("/api"), route("api", "/api"));
}

#[test]
fn wildcard_matches_its_prefix_and_everything_below() {
    let f = fixture(&[("files", r#"paths = ["/files/*"]"#)]);
    assert_eq!(f.get("/files"), route("files", "/files"));
    assert_eq!(
        f.get("/files/a/b/c.txt"),
        route("files", "/files/a/b/c.txt")
    );
    assert_eq!(f.get("/filesx"), Hit::Status(404));
}

#[test]
fn non_wildcard_beats_wildcard_on_the_same_pattern() {
    let f = fixture(&[
        ("wild", r#"paths = ["/files/*"]"#),
        ("plain", r#"paths = ["/files"]"#),
    ]);
    assert_eq!(f.get("/files/a"), route("plain", "/files/a"));
    assert_eq!(f.get("/files"), route("plain", "/files"));
}

#[test]
fn more_predicates_win_on_the_same_pattern() {
    let f = fixture(&[
        ("base", r#"paths = ["/api"]"#),
        (
            "canary",
            "paths = [\"/api\"]\nheaders = { \"x-canary\" = \"1\" }",
        ),
        (
            "canary_host",
            "paths = [\"/api\"]\nheaders = { \"x-canary\" = \"1\" }\nhosts = [\"a.example.com\"]",
        ),
    ]);
    assert_eq!(f.get("/api/x"), route("base", "/api/x"));
    assert_eq!(
        f.hit(&Req::get("/api/x").header("X-Canary", "1")),
        route("canary", "/api/x")
    );
    assert_eq!(
        f.hit(
            &Req::get("/api/x")
                .header("X-Canary", "1")
                .host("a.example.com")
        ),
        route("canary_host", "/api/x")
    );
    assert_eq!(
        f.hit(&Req::get("/api/x").host("a.example.com")),
        route("base", "/api/x")
    );
}

#[test]
fn method_mismatch_falls_through_to_the_next_matching_route() {
    let f = fixture(&[
        (
            "one",
            "paths = [\"/api/v1/users/:id\"]\nmethods = [\"GET\"]",
        ),
        ("users", r#"paths = ["/api/v1/users"]"#),
    ]);
    assert_eq!(f.get("/api/v1/users/7"), route("one", "/api/v1/users/7"));
    assert_eq!(
        f.hit(&Req::new("DELETE", "/api/v1/users/7")),
        route("users", "/api/v1/users/7")
    );
}

#[test]
fn methods_split_one_path_between_routes() {
    let f = fixture(&[
        ("reads", "paths = [\"/items\"]\nmethods = [\"GET\"]"),
        (
            "writes",
            "paths = [\"/items\"]\nmethods = [\"POST\", \"PUT\"]",
        ),
    ]);
    assert_eq!(f.get("/items"), route("reads", "/items"));
    assert_eq!(f.hit(&Req::post("/items", b"x")), route("writes", "/items"));
    assert_eq!(
        f.hit(&Req::new("PUT", "/items/3")),
        route("writes", "/items/3")
    );
}

fn allow_set(r: &Response) -> BTreeSet<String> {
    r.header_all("allow")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn method_not_allowed_is_405_with_allow() {
    let f = fixture(&[(
        "items",
        "paths = [\"/items\"]\nmethods = [\"GET\", \"POST\"]",
    )]);
    let r = f.send(&Req::new("DELETE", "/items"));
    assert_error(&r, 405);
    let allow = allow_set(&r);
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow:?}"
    );
    assert!(!allow.contains("DELETE"), "Allow: {allow:?}");
    assert_eq!(f.get("/items"), route("items", "/items"));
    // A path no route matches is a 404, not a 405.
    assert_eq!(f.hit(&Req::new("DELETE", "/other")), Hit::Status(404));
}

#[test]
fn allow_lists_the_methods_of_every_route_the_path_matches() {
    let f = fixture(&[
        ("list", "paths = [\"/items\"]\nmethods = [\"GET\"]"),
        (
            "one",
            "paths = [\"/items/:id\"]\nmethods = [\"PUT\", \"DELETE\"]",
        ),
    ]);
    let r = f.send(&Req::post("/items/3", b"x"));
    assert_error(&r, 405);
    let allow = allow_set(&r);
    for m in ["GET", "PUT", "DELETE"] {
        assert!(allow.contains(m), "Allow {allow:?} lacks {m}");
    }
    assert!(!allow.contains("POST"));
}

#[test]
fn no_route_is_404_with_the_json_error_body() {
    let f = fixture(&[("api", r#"paths = ["/api"]"#)]);
    let r = f.send(&Req::get("/nothing/here"));
    assert_error(&r, 404);
}

#[test]
fn host_predicate_ignores_port_and_case() {
    let f = fixture(&[("api", "paths = [\"/\"]\nhosts = [\"api.example.com\"]")]);
    assert_eq!(
        f.hit(&Req::get("/x").host("api.example.com")),
        route("api", "/x")
    );
    assert_eq!(
        f.hit(&Req::get("/x").host("api.example.com:8080")),
        route("api", "/x")
    );
    assert_eq!(
        f.hit(&Req::get("/x").host("API.Example.COM")),
        route("api", "/x")
    );
    assert_eq!(
        f.hit(&Req::get("/x").host("other.example.com")),
        Hit::Status(404)
    );
    assert_eq!(
        f.hit(&Req::get("/x").host("api.example.com.evil")),
        Hit::Status(404)
    );
}

#[test]
fn host_wildcard_matches_subdomains_at_any_depth_but_not_the_apex() {
    let f = fixture(&[("wild", "paths = [\"/\"]\nhosts = [\"*.example.com\"]")]);
    assert_eq!(
        f.hit(&Req::get("/").host("a.example.com")),
        route("wild", "/")
    );
    assert_eq!(
        f.hit(&Req::get("/").host("a.b.example.com:81")),
        route("wild", "/")
    );
    assert_eq!(f.hit(&Req::get("/").host("example.com")), Hit::Status(404));
    assert_eq!(
        f.hit(&Req::get("/").host("badexample.com")),
        Hit::Status(404)
    );
}

#[test]
fn host_predicate_with_ip_address() {
    let f = fixture(&[("local", "paths = [\"/\"]\nhosts = [\"127.0.0.1\"]")]);
    assert_eq!(
        f.hit(&Req::get("/").host("127.0.0.1:9999")),
        route("local", "/")
    );
    assert_eq!(f.hit(&Req::get("/").host("127.0.0.2")), Hit::Status(404));
}

#[test]
fn header_predicate_requires_the_exact_value() {
    let f = fixture(&[
        ("base", r#"paths = ["/api"]"#),
        (
            "canary",
            "paths = [\"/api\"]\nheaders = { \"x-canary\" = \"1\" }",
        ),
    ]);
    assert_eq!(
        f.hit(&Req::get("/api").header("x-canary", "1")),
        route("canary", "/api")
    );
    assert_eq!(
        f.hit(&Req::get("/api").header("X-CANARY", "1")),
        route("canary", "/api")
    );
    assert_eq!(
        f.hit(&Req::get("/api").header("x-canary", "2")),
        route("base", "/api")
    );
    assert_eq!(
        f.hit(&Req::get("/api").header("x-canary", "10")),
        route("base", "/api")
    );
    assert_eq!(f.get("/api"), route("base", "/api"));
}

#[test]
fn all_listed_headers_must_match() {
    let f = fixture(&[
        ("base", r#"paths = ["/"]"#),
        (
            "both",
            "paths = [\"/\"]\nheaders = { \"x-a\" = \"1\", \"x-b\" = \"2\" }",
        ),
    ]);
    let both = Req::get("/").header("x-a", "1").header("x-b", "2");
    assert_eq!(f.hit(&both), route("both", "/"));
    assert_eq!(f.hit(&Req::get("/").header("x-a", "1")), route("base", "/"));
    assert_eq!(f.hit(&Req::get("/").header("x-b", "2")), route("base", "/"));
}

#[test]
fn strip_prefix_removes_the_matched_prefix() {
    let f = fixture(&[("svc", "paths = [\"/svc\"]\nstrip_prefix = true")]);
    assert_eq!(f.get("/svc/a/b?x=1"), route("svc", "/a/b?x=1"));
    assert_eq!(f.get("/svc"), route("svc", "/"));
    assert_eq!(f.get("/svc?q=1"), route("svc", "/?q=1"));
    assert_eq!(f.get("/svc/"), route("svc", "/"));
}

#[test]
fn strip_prefix_on_a_wildcard_pattern() {
    let f = fixture(&[("static", "paths = [\"/static/*\"]\nstrip_prefix = true")]);
    assert_eq!(
        f.get("/static/css/site.css"),
        route("static", "/css/site.css")
    );
    assert_eq!(f.get("/static"), route("static", "/"));
}

#[test]
fn without_strip_prefix_the_path_is_forwarded_unchanged() {
    let f = fixture(&[("svc", "paths = [\"/svc\"]\nstrip_prefix = false")]);
    assert_eq!(f.get("/svc/a?b=c"), route("svc", "/svc/a?b=c"));
}

#[test]
fn rewrite_replaces_the_matched_prefix_and_keeps_the_rest() {
    let f = fixture(&[(
        "transfers",
        "paths = [\"/api/v1/transfers\"]\nrewrite = \"/v2/transfers\"",
    )]);
    assert_eq!(
        f.get("/api/v1/transfers"),
        route("transfers", "/v2/transfers")
    );
    assert_eq!(
        f.get("/api/v1/transfers/5?expand=1"),
        route("transfers", "/v2/transfers/5?expand=1")
    );
}

#[test]
fn rewrite_of_an_exact_path_keeps_the_query() {
    let f = fixture(&[(
        "legacy",
        "paths = [\"=/legacy\"]\nmethods = [\"POST\"]\nrewrite = \"/new/place\"",
    )]);
    assert_eq!(
        f.hit(&Req::post("/legacy?a=b", b"{}")),
        route("legacy", "/new/place?a=b")
    );
}

fn timeout_fixture(read_timeout: &str, route_timeout: &str, delay_ms: u64) -> (Gateway, Upstream) {
    let up =
        Upstream::start(move |_| Reply::text(200, "slow").delay(Duration::from_millis(delay_ms)));
    let gw = Gateway::start(&format!(
        r#"
[upstreams.app]
endpoints = ["{}"]
read_timeout = "{read_timeout}"
retries = 0

[routes.timed]
paths = ["/timed"]
upstream = "app"
timeout = "{route_timeout}"

[routes.plain]
paths = ["/plain"]
upstream = "app"
"#,
        up.url()
    ));
    (gw, up)
}

#[test]
fn route_timeout_shorter_than_read_timeout_gives_504() {
    let (gw, _up) = timeout_fixture("5s", "300ms", 1500);
    let start = Instant::now();
    let r = get(gw.addr(), "/timed");
    let waited = start.elapsed();
    assert_error(&r, 504);
    assert!(
        waited < Duration::from_millis(1200),
        "504 after {waited:?} (route timeout 300ms)"
    );
    // The same upstream without the route timeout waits for the answer.
    assert_eq!(get(gw.addr(), "/plain").status, 200);
}

#[test]
fn route_timeout_longer_than_read_timeout_waits() {
    let (gw, _up) = timeout_fixture("200ms", "3s", 600);
    assert_eq!(get(gw.addr(), "/timed").status, 200);
    assert_error(&get(gw.addr(), "/plain"), 504);
}
