//! Table tests: request -> route, and route table -> compile error.

use super::*;
use crate::config::model::Location;

fn route(name: &str, paths: &[&str]) -> Route {
    Route {
        name: name.to_string(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        methods: None,
        hosts: None,
        headers: Vec::new(),
        upstream: 0,
        split: Vec::new(),
        sticky: None,
        strip_prefix: false,
        rewrite: None,
        timeout: None,
        auth: None,
        rate_limits: Vec::new(),
        cache: None,
        location: Location::default(),
        client: None,
        aggregate: None,
        transform: None,
        websocket: false,
    }
}

trait With {
    fn methods(self, m: &[&str]) -> Self;
    fn hosts(self, h: &[&str]) -> Self;
    fn header(self, name: &str, value: &str) -> Self;
}

impl With for Route {
    fn methods(mut self, m: &[&str]) -> Route {
        self.methods = Some(m.iter().map(|s| s.to_string()).collect());
        self
    }
    fn hosts(mut self, h: &[&str]) -> Route {
        self.hosts = Some(h.iter().map(|s| s.to_string()).collect());
        self
    }
    fn header(mut self, name: &str, value: &str) -> Route {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// Runs one request written as `"METHOD /path [host=H] [client=N] [name=value]..."` and
/// returns the matched route's name, `"405 <Allow>"` or `"404"`.
fn outcome(routes: &[Route], router: &Router, request: &str) -> String {
    let mut words = request.split_whitespace();
    let method = words.next().unwrap();
    let path = words.next().unwrap();
    let mut host = None;
    let mut client = None;
    let mut headers: Vec<(&str, &[u8])> = Vec::new();
    for w in words {
        let (k, v) = w.split_once('=').unwrap();
        if k == "host" {
            host = Some(v.as_bytes());
        } else if k == "client" {
            client = Some(v.parse().unwrap());
        } else {
            headers.push((k, v.as_bytes()));
        }
    }
    let req = RequestView {
        path,
        method,
        host,
        headers: headers.as_slice(),
        client,
    };
    let got = match router.lookup(&req) {
        Lookup::Found(m) => routes[m.route].name.clone(),
        Lookup::MethodNotAllowed { allow } => format!("405 {allow}"),
        Lookup::NotFound => "404".to_string(),
    };
    got
}

/// Compiles `routes` and checks each (request, expected outcome).
fn table(routes: &[Route], cases: &[(&str, &str)]) {
    let router = Router::compile(routes).unwrap_or_else(|e| panic!("compile: {e}"));
    let mut failures = Vec::new();
    for (request, want) in cases {
        let got = outcome(routes, &router, request);
        if got != *want {
            failures.push(format!("{request:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn get<'r, 'p>(router: &'r Router, path: &'p str) -> Match<'r, 'p> {
    let req = RequestView {
        path,
        method: "GET",
        host: None,
        headers: &[],
        client: None,
    };
    match router.lookup(&req) {
        Lookup::Found(m) => m,
        other => panic!("{path}: {other:?}"),
    }
}

#[test]
fn prefix_matches_on_segment_boundaries() {
    table(
        &[route("users", &["/api/v1/users"])],
        &[
            ("GET /api/v1/users", "users"),
            ("GET /api/v1/users/", "users"),
            ("GET /api/v1/users/42", "users"),
            ("GET /api/v1/users/42/orders/", "users"),
            ("GET /api/v1/usersx", "404"),
            ("GET /api/v1/user", "404"),
            ("GET /api/v1", "404"),
            ("GET /api/v1/", "404"),
            ("GET /API/v1/users", "404"), // paths are case-sensitive
            ("GET /", "404"),
        ],
    );
}

#[test]
fn root_matches_everything() {
    table(
        &[route("root", &["/"])],
        &[
            ("GET /", "root"),
            ("GET /a", "root"),
            ("GET /a/b/", "root"),
            ("GET *", "404"), // not an origin-form path
            ("GET x/y", "404"),
        ],
    );
}

#[test]
fn exact_means_exact() {
    table(
        &[
            route("health", &["=/health"]),
            route("slash", &["=/dir/"]),
            route("home", &["=/"]),
            route("root", &["/"]),
        ],
        &[
            ("GET /health", "health"),
            ("GET /health/", "root"),
            ("GET /health/x", "root"),
            ("GET /healthz", "root"),
            ("GET /dir/", "slash"),
            ("GET /dir", "root"),
            ("GET /dir/x", "root"),
            ("GET /", "home"),
            ("GET /x", "root"),
        ],
    );
}

#[test]
fn params_are_whole_nonempty_segments_and_prefixes() {
    table(
        &[route("user", &["/users/:id"])],
        &[
            ("GET /users/7", "user"),
            ("GET /users/7/", "user"),
            ("GET /users/7/orders", "user"),
            ("GET /users", "404"),
            ("GET /users/", "404"),
            ("GET /usersx/7", "404"),
        ],
    );
}

#[test]
fn match_reports_prefix_len_and_params() {
    let routes = [
        route("root", &["/"]),
        route("user", &["/users/:id"]),
        route("order", &["/users/:uid/orders/:oid"]),
        route("files", &["/files/*"]),
        route("exact", &["=/exact/:x/"]),
        route("many", &["/m/:a/:b/:c/:d/:e/:f"]),
    ];
    let router = Router::compile(&routes).unwrap();

    let m = get(&router, "/users/7/orders");
    assert_eq!((m.route, m.pattern, m.prefix_len), (1, "/users/:id", 8));
    assert_eq!(m.params.as_slice(), &[("id", "7")]);
    assert_eq!(m.param("id"), Some("7"));
    assert_eq!(m.param("uid"), None);

    let m = get(&router, "/users/42/orders/9/items");
    assert_eq!((m.route, m.prefix_len), (2, "/users/42/orders/9".len()));
    assert_eq!(m.params.as_slice(), &[("uid", "42"), ("oid", "9")]);

    let m = get(&router, "/files");
    assert_eq!((m.route, m.prefix_len), (3, 6));
    let m = get(&router, "/files/a/b.txt");
    assert_eq!((m.route, m.prefix_len), (3, 6));

    let m = get(&router, "/exact/abc/");
    assert_eq!((m.route, m.prefix_len), (4, 11));
    assert_eq!(m.param("x"), Some("abc"));

    let empty = RequestView {
        path: "",
        method: "GET",
        host: None,
        headers: &[],
        client: None,
    };
    assert_eq!(router.lookup(&empty), Lookup::NotFound);

    // The root consumes nothing, so `&path[prefix_len..]` is the whole path.
    let m = get(&router, "/other/x");
    assert_eq!((m.route, m.prefix_len), (0, 0));

    // More than 4 parameters spill to the heap but still work.
    let m = get(&router, "/m/1/2/3/4/5/6/rest");
    assert_eq!(m.route, 5);
    let values: Vec<&str> = m.params.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(m.param("f"), Some("6"));
}

#[test]
fn wildcard_means_the_same_as_without_it() {
    table(
        &[route("x", &["/x/*"]), route("all", &["/*"])],
        &[
            ("GET /x", "x"),
            ("GET /x/", "x"),
            ("GET /x/a/b", "x"),
            ("GET /xy", "all"),
            ("GET /", "all"),
        ],
    );
}

#[test]
fn wildcard_ranks_below_the_same_pattern_without_it() {
    table(
        &[
            // The wildcard comes first in the config; order must not matter.
            route("x_wild", &["/x/*"]),
            route("x", &["/x"]).methods(&["GET"]),
        ],
        &[
            ("GET /x", "x"),
            ("GET /x/a", "x"),
            ("POST /x/a", "x_wild"), // x skipped on its method, the wildcard is next
        ],
    );
}

#[test]
fn wildcard_shape_outranks_predicates() {
    // "then no wildcard beats wildcard" comes before the predicate count.
    table(
        &[
            route("wild_host", &["/x/*"]).hosts(&["a.example.com"]),
            route("plain", &["/x"]),
        ],
        &[("GET /x/1 host=a.example.com", "plain")],
    );
}

#[test]
fn precedence_examples() {
    table(
        &[
            route("api", &["/api"]),
            route("users", &["/api/v1/users"]),
            route("user", &["/api/v1/users/:id"]),
            route("me", &["/api/v1/users/me"]),
            route("user_orders", &["/api/v1/users/:id/orders"]),
            route("me_exact", &["=/api/v1/users/me/settings"]),
            route("any_settings", &["/api/v1/users/:id/settings"]),
        ],
        &[
            ("GET /api", "api"),
            ("GET /api/v2", "api"),
            ("GET /api/v1", "api"),
            ("GET /api/v1/users", "users"),
            ("GET /api/v1/users/", "users"),
            ("GET /api/v1/users/7", "user"),
            ("GET /api/v1/users/7/profile", "user"),
            ("GET /api/v1/users/me", "me"),
            ("GET /api/v1/users/me/orders", "me"), // literal `me` beats `:id` at segment 4
            ("GET /api/v1/users/7/orders", "user_orders"),
            ("GET /api/v1/users/me/settings", "me_exact"),
            ("GET /api/v1/users/me/settings/x", "me"),
            ("GET /api/v1/users/7/settings", "any_settings"),
        ],
    );
}

#[test]
fn longest_literal_prefix_wins() {
    table(
        &[
            route("ab", &["/a/b"]),
            route("a_param_c", &["/a/:x/c"]),
            route("a_param_d", &["/a/:x/d"]),
            route("abc", &["/a/b/c/e"]),
        ],
        &[
            ("GET /a/b/c", "ab"),    // "/a/b" has the longer literal prefix
            ("GET /a/b/d", "ab"),    // same
            ("GET /a/b/c/e", "abc"), // longer literal prefix still
            ("GET /a/z/c", "a_param_c"),
            ("GET /a/z/d/more", "a_param_d"),
            ("GET /a/z/e", "404"),
        ],
    );
}

#[test]
fn backtracks_from_a_dead_literal_branch() {
    table(
        &[
            route("abc", &["/a/b/c"]),
            route("a_param_d", &["/a/:x/d"]),
            route("a", &["/a"]),
        ],
        &[
            ("GET /a/b/c", "abc"),
            ("GET /a/b/d", "a_param_d"), // literal `b` leads nowhere for `d`
            ("GET /a/b/e", "a"),
            ("GET /a/b", "a"),
        ],
    );
}

#[test]
fn exact_beats_everything() {
    table(
        &[
            route("me", &["/users/me"]),
            route("exact_param", &["=/users/:id"]),
            route("exact_me", &["=/users/me/x"]),
            route("longer", &["/users/me/x/y"]),
        ],
        &[
            ("GET /users/me", "exact_param"), // exact with a param beats the literal prefix
            ("GET /users/7", "exact_param"),
            ("GET /users/me/x", "exact_me"),
            ("GET /users/me/x/y", "longer"),
            ("GET /users/7/x", "404"),
        ],
    );
}

#[test]
fn exact_falls_through_on_predicates() {
    table(
        &[
            route("exact_post", &["=/transfers"]).methods(&["POST"]),
            route("transfers", &["/transfers"]),
        ],
        &[
            ("POST /transfers", "exact_post"),
            ("GET /transfers", "transfers"),
        ],
    );
}

#[test]
fn more_predicates_win_on_the_same_shape() {
    table(
        &[
            route("users", &["/api/v1/users"]),
            route("canary", &["/api/v1/users"]).header("x-canary", "1"),
            route("host", &["/api/v1/users/:id"]).hosts(&["api.example.com"]),
            route("host_get", &["/api/v1/users/:id"])
                .hosts(&["api.example.com"])
                .methods(&["GET"]),
            route("plain_id", &["/api/v1/users/:id"]),
        ],
        &[
            ("GET /api/v1/users", "users"),
            ("GET /api/v1/users x-canary=1", "canary"),
            ("GET /api/v1/users x-canary=2", "users"),
            ("GET /api/v1/users x-canary=1x", "users"), // values compare exactly
            ("GET /api/v1/users/7 host=api.example.com", "host_get"),
            ("POST /api/v1/users/7 host=api.example.com", "host"),
            ("POST /api/v1/users/7 host=other.example.com", "plain_id"),
            ("GET /api/v1/users/7", "plain_id"),
        ],
    );
}

#[test]
fn hosts_ignore_case_port_and_trailing_dot() {
    table(
        &[
            route("exact", &["/"]).hosts(&["api.example.com"]),
            route("wild", &["/"])
                .hosts(&["*.example.com", "127.0.0.1"])
                .header("x-w", "1"),
            route("v6", &["/"]).hosts(&["[::1]"]).header("x-v6", "1"),
            route("upper", &["/"])
                .hosts(&["Mixed.Example.ORG"])
                .header("x-u", "1"),
            route("fallback", &["/fallback"]),
        ],
        &[
            ("GET / host=api.example.com", "exact"),
            ("GET / host=API.Example.COM", "exact"),
            ("GET / host=api.example.com:8080", "exact"),
            ("GET / host=api.example.com.", "exact"),
            ("GET / host=api.example.com.:443", "exact"),
            ("GET / host=a.example.com x-w=1", "wild"),
            ("GET / host=A.B.Example.Com:1 x-w=1", "wild"),
            ("GET / host=example.com x-w=1", "404"),
            ("GET / host=.example.com x-w=1", "404"),
            ("GET / host=badexample.com x-w=1", "404"),
            ("GET / host=127.0.0.1:8080 x-w=1", "wild"),
            ("GET / host=[::1]:8080 x-v6=1", "v6"),
            ("GET / host=[::1] x-v6=1", "v6"),
            ("GET / host=[::2]:8080 x-v6=1", "404"),
            ("GET / host=mixed.example.org x-u=1", "upper"),
            // Without Host only routes without `hosts` match.
            ("GET /", "404"),
            ("GET /fallback x-w=1", "fallback"),
            ("GET / host=", "404"),
        ],
    );
}

#[test]
fn methods_fall_through_to_the_next_candidate() {
    table(
        &[
            route("get_item", &["/items/:id"]).methods(&["GET"]),
            route("items", &["/items"]),
            route("ext", &["/ext"]).methods(&["PURGE"]),
        ],
        &[
            ("GET /items/1", "get_item"),
            ("POST /items/1", "items"),
            ("get /items/1", "items"), // methods are case-sensitive
            ("PURGE /ext", "ext"),
        ],
    );
}

#[test]
fn method_not_allowed_lists_every_route_that_matched_but_the_method() {
    table(
        &[
            route("p", &["/p"]).methods(&["POST", "GET", "GET"]),
            route("p_id", &["/p/:id"]).methods(&["DELETE", "PUT", "GET"]),
            route("p_id_host", &["/p/:id"])
                .methods(&["PATCH"])
                .hosts(&["a.example.com"]),
            route("p_id_hdr", &["/p/:id"])
                .methods(&["HEAD"])
                .header("x-h", "1"),
            route("purge", &["/p/:id/cache"]).methods(&["PURGE", "BAN"]),
            route("exact", &["=/p/1/cache"]).methods(&["OPTIONS"]),
        ],
        &[
            ("DELETE /p", "405 GET, HEAD, POST"),
            ("PATCH /p/1", "405 GET, HEAD, POST, PUT, DELETE"),
            ("PATCH /p/1 host=a.example.com", "p_id_host"),
            (
                "OPTIONS /p/1 host=a.example.com",
                "405 GET, HEAD, POST, PUT, DELETE, PATCH",
            ),
            (
                "OPTIONS /p/1 host=b.example.com x-h=1",
                "405 GET, HEAD, POST, PUT, DELETE",
            ),
            // Extension methods follow the standard ones, alphabetically; exact routes count.
            (
                "BREW /p/1/cache",
                "405 GET, HEAD, POST, PUT, DELETE, OPTIONS, BAN, PURGE",
            ),
            (
                "BREW /p/2/cache",
                "405 GET, HEAD, POST, PUT, DELETE, BAN, PURGE",
            ),
            ("GET /q", "404"),
        ],
    );
}

#[test]
fn a_match_anywhere_beats_method_not_allowed() {
    table(
        &[
            route("p_get", &["/p"]).methods(&["GET"]),
            route("root", &["/"]),
        ],
        &[("DELETE /p", "root"), ("GET /p", "p_get")],
    );
}

#[test]
fn not_found() {
    table(&[], &[("GET /", "404"), ("GET /x", "404")]);
    table(
        &[route("a", &["/a"]).hosts(&["a.example.com"])],
        &[("GET /a host=b.example.com", "404"), ("GET /b", "404")],
    );
}

#[test]
fn header_lookup_reads_lower_case_names() {
    // Configured names are lower-cased at compile time.
    table(
        &[route("c", &["/c"]).header("X-Canary", "1")],
        &[("GET /c x-canary=1", "c"), ("GET /c", "404")],
    );
}

// ---------------------------------------------------------------------------------------------
// Compile errors
// ---------------------------------------------------------------------------------------------

fn compile_err(routes: &[Route]) -> RouteError {
    match Router::compile(routes) {
        Ok(_) => panic!("compiled, want an error"),
        Err(e) => e,
    }
}

#[test]
fn invalid_patterns_are_rejected() {
    let cases: &[(&str, &str)] = &[
        ("", "must start with '/'"),
        ("api/v1", "must start with '/'"),
        ("=health", "must start with '/'"),
        ("//", "empty segment"),
        ("/a//b", "empty segment"),
        ("/a/", "may not end in '/'"),
        ("/:", "without a parameter name"),
        ("/a/:/b", "without a parameter name"),
        ("/:na-me", "parameter name"),
        ("/a/*/b", "'*' must be the last segment"),
        ("/*/*", "'*' must be the last segment"),
        ("/a*", "whole segment"),
        ("/*a", "whole segment"),
        ("/a/b*c", "whole segment"),
        ("/:id/x/:id", "duplicate parameter name"),
        ("/a b", "not allowed in a path"),
        ("/a?q=1", "not allowed in a path"),
        ("/a#frag", "not allowed in a path"),
        ("/caf\u{e9}", "not allowed in a path"),
        ("/a\\b", "not allowed in a path"),
        ("/%zz", "two hex digits"),
        ("/a%2", "two hex digits"),
        ("/%61dmin", "normalized, write 'a'"),
        ("/a%2fb", "normalized, write \"%2F\""),
        ("/./a", "dot segment"),
        ("/a/..", "dot segment"),
        ("=/a/*", "cannot end in '/*'"),
        ("=/*", "cannot end in '/*'"),
    ];
    for (pattern, reason) in cases {
        let routes = [
            route("ok", &["/fine"]),
            route("bad", &["/also-fine", pattern]),
        ];
        match compile_err(&routes) {
            RouteError::InvalidPattern {
                route,
                name,
                path,
                reason: got,
                ..
            } => {
                assert_eq!((route, name.as_str(), path.as_str()), (1, "bad", *pattern));
                assert!(
                    got.contains(reason),
                    "{pattern:?}: {got:?} lacks {reason:?}"
                );
            }
            other => panic!("{pattern:?}: {other:?}"),
        }
    }
}

#[test]
fn valid_unusual_patterns_compile() {
    let routes = [route(
        "ok",
        &[
            "/",
            "/*",
            "=/",
            "=/a/",
            "/v1/files:batch",
            "/a/%2F/b",
            "/~user/@me/a+b/c=d/(x)/!$&',;",
            "/:a/:b_2/:C",
            "/.well-known/x",
        ],
    )];
    Router::compile(&routes).unwrap();
}

#[test]
fn invalid_hosts_and_methods_are_rejected() {
    for (host, reason) in [
        ("api.example.com:8080", "port"),
        ("a.*.example.com", "'*'"),
        ("*", "'*'"),
        ("*.", "'*'"),
        ("", "empty host"),
        ("[::1]:80", "IPv6"),
        ("a..b", "empty label"),
        ("a b", "not allowed"),
    ] {
        match compile_err(&[route("h", &["/"]).hosts(&["ok.example.com", host])]) {
            RouteError::InvalidHost {
                route,
                host: h,
                reason: got,
                ..
            } => {
                assert_eq!((route, h.as_str()), (0, host));
                assert!(got.contains(reason), "{host:?}: {got:?} lacks {reason:?}");
            }
            other => panic!("{host:?}: {other:?}"),
        }
    }
    match compile_err(&[route("m", &["/"]).methods(&["GET", "GE T"])]) {
        RouteError::InvalidMethod { method, .. } => assert_eq!(method, "GE T"),
        other => panic!("{other:?}"),
    }
}

/// Asserts that `routes` fail with `Ambiguous` naming routes `a` and `b`.
fn assert_ambiguous(routes: &[Route], a: usize, b: usize) -> String {
    match compile_err(routes) {
        RouteError::Ambiguous {
            a: got_a,
            b: got_b,
            ref reason,
            ..
        } if (got_a, got_b) == (a, b) => reason.clone(),
        other => panic!("want Ambiguous({a}, {b}), got {other:?}"),
    }
}

#[test]
fn ambiguous_tables_are_rejected() {
    let cases: Vec<(&str, Vec<Route>)> = vec![
        (
            "same pattern",
            vec![route("a", &["/x"]), route("b", &["/x"])],
        ),
        (
            "param names don't matter",
            vec![route("a", &["/u/:id"]), route("b", &["/u/:uid"])],
        ),
        (
            "both exact",
            vec![route("a", &["=/x"]), route("b", &["=/x"])],
        ),
        (
            "both wildcard",
            vec![route("a", &["/x/*"]), route("b", &["/x/*"])],
        ),
        ("root", vec![route("a", &["/"]), route("b", &["/"])]),
        (
            "a common method",
            vec![
                route("a", &["/x"]).methods(&["GET", "PUT"]),
                route("b", &["/x"]).methods(&["POST", "PUT"]),
            ],
        ),
        (
            "equal hosts",
            vec![
                route("a", &["/x"]).hosts(&["a.example.com"]),
                route("b", &["/x"]).hosts(&["b.example.com", "A.example.com"]),
            ],
        ),
        (
            "a wildcard host covering an exact one",
            vec![
                route("a", &["/x"]).hosts(&["*.example.com"]),
                route("b", &["/x"]).hosts(&["a.b.example.com"]),
            ],
        ),
        (
            "nested wildcard hosts",
            vec![
                route("a", &["/x"]).hosts(&["*.a.example.com"]),
                route("b", &["/x"]).hosts(&["*.example.com"]),
            ],
        ),
        (
            "an unrestricted predicate on either side",
            vec![
                route("a", &["/x"]).hosts(&["a.example.com"]),
                route("b", &["/x"]).methods(&["GET"]),
            ],
        ),
        (
            "different header names can both be present",
            vec![
                route("a", &["/x"]).header("x-a", "1"),
                route("b", &["/x"]).header("x-b", "1"),
            ],
        ),
        (
            "same header, same value",
            vec![
                route("a", &["/x"]).header("x-a", "1").methods(&["GET"]),
                route("b", &["/x"])
                    .header("x-a", "1")
                    .hosts(&["h.example.com"]),
            ],
        ),
    ];
    for (what, routes) in cases {
        match Router::compile(&routes) {
            Err(RouteError::Ambiguous { a: 0, b: 1, .. }) => {}
            other => panic!(
                "{what}: want Ambiguous(0, 1), got {:?}",
                other.map(|_| "a router")
            ),
        }
    }
}

#[test]
fn ambiguity_is_found_among_other_routes() {
    let routes = [
        route("a", &["/api"]),
        route("b", &["/api/v1/users/:id"]).methods(&["GET"]),
        route("c", &["/other"]),
        route("d", &["/api/v1/users/:uid"]).methods(&["GET", "HEAD"]),
    ];
    assert_ambiguous(&routes, 1, 3);
}

#[test]
fn one_route_listing_one_shape_twice_is_ambiguous() {
    let reason = assert_ambiguous(&[route("a", &["/x", "/y", "/x"])], 0, 0);
    assert!(reason.contains("same shape"), "{reason}");
    assert_ambiguous(
        &[route("a", &["/u/:a/v", "/u/:b/v"]).methods(&["GET"])],
        0,
        0,
    );
}

#[test]
fn near_misses_compile() {
    let cases: Vec<(&str, Vec<Route>)> = vec![
        (
            "different methods",
            vec![
                route("a", &["/x"]).methods(&["GET", "HEAD"]),
                route("b", &["/x"]).methods(&["POST"]),
            ],
        ),
        (
            "different hosts",
            vec![
                route("a", &["/x"]).hosts(&["a.example.com"]),
                route("b", &["/x"]).hosts(&["b.example.com"]),
            ],
        ),
        (
            "a wildcard host does not cover its bare domain",
            vec![
                route("a", &["/x"]).hosts(&["*.example.com"]),
                route("b", &["/x"]).hosts(&["example.com"]),
            ],
        ),
        (
            "disjoint wildcard hosts",
            vec![
                route("a", &["/x"]).hosts(&["*.a.example.com"]),
                route("b", &["/x"]).hosts(&["*.b.example.com"]),
            ],
        ),
        (
            "different header values",
            vec![
                route("a", &["/x"]).header("x-canary", "1"),
                route("b", &["/x"]).header("x-canary", "2"),
            ],
        ),
        (
            "different predicate counts",
            vec![
                route("a", &["/x"]).methods(&["GET"]),
                route("b", &["/x"])
                    .methods(&["GET"])
                    .hosts(&["a.example.com"]),
                route("c", &["/x"]),
            ],
        ),
        (
            "wildcard and plain are different shapes",
            vec![route("a", &["/x"]), route("b", &["/x/*"])],
        ),
        (
            "exact and prefix",
            vec![route("a", &["=/x"]), route("b", &["/x"])],
        ),
        (
            "literal and param",
            vec![route("a", &["/u/me"]), route("b", &["/u/:id"])],
        ),
        (
            "one route, two shapes",
            vec![route("a", &["/x", "/x/*", "=/x", "/x/:id"])],
        ),
    ];
    for (what, routes) in cases {
        if let Err(e) = Router::compile(&routes) {
            panic!("{what}: {e}");
        }
    }
}

#[test]
fn error_messages_name_the_routes() {
    let e = compile_err(&[
        route("users", &["/u/:id"]).methods(&["GET"]),
        route("users_v2", &["/u/:uid"]).methods(&["GET", "POST"]),
    ]);
    assert_eq!(
        e.to_string(),
        "routes.users and routes.users_v2 can match the same request with equal precedence \
         (path \"/u/:id\"): same shape as \"/u/:uid\", 1 predicate(s) each; methods: GET,HEAD; \
         hosts: any host; headers compatible"
    );
    let e = compile_err(&[route("users", &["/u//x"])]);
    assert_eq!(
        e.to_string(),
        "routes.users: invalid path pattern \"/u//x\": empty segment (\"//\")"
    );
}

#[test]
fn describe_lists_rows_in_precedence_order() {
    let routes = [
        route("api", &["/api"]),
        route("users", &["/api/users", "/api/users/*"]).methods(&["POST", "GET"]),
        route("user", &["/api/users/:id"]),
        route("canary", &["/api/users"])
            .header("x-canary", "1")
            .methods(&["GET"])
            .hosts(&["*.Example.com"]),
        route("health", &["=/health"]),
        route("root", &["/"]),
    ];
    let rows = Router::compile(&routes).unwrap().describe();
    let order: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.name.as_str(), r.pattern.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("health", "=/health"),
            ("user", "/api/users/:id"),
            ("canary", "/api/users"),
            ("users", "/api/users"),
            ("users", "/api/users/*"),
            ("api", "/api"),
            ("root", "/"),
        ]
    );
    let canary = &rows[2];
    // The compiled set: HEAD comes with GET.
    assert_eq!(
        canary.methods.as_deref(),
        Some(&["GET".to_string(), "HEAD".to_string()][..])
    );
    assert_eq!(
        canary.hosts.as_deref(),
        Some(&["*.example.com".to_string()][..])
    );
    assert_eq!(rows[3].methods.as_deref().unwrap(), ["GET", "HEAD", "POST"]);
    assert!(rows[2].to_string().contains("x-canary: 1"));
}

#[test]
fn lookups_agree_with_describe_order() {
    // For every path, the route found is the first row whose pattern and predicates accept it.
    let routes = [
        route("a", &["/a"]),
        route("ab", &["/a/b"]),
        route("ap", &["/a/:p"]),
        route("apc", &["/a/:p/c"]),
        route("abw", &["/a/b/*"]).methods(&["GET"]),
        route("e", &["=/a/b/c"]),
    ];
    table(
        &routes,
        &[
            ("GET /a/b/c", "e"),
            ("GET /a/b/c/d", "ab"),
            ("GET /a/x/c", "apc"),
            ("GET /a/x/d", "ap"),
            ("GET /a", "a"),
            ("GET /a/", "a"),
        ],
    );
}

#[test]
fn exact_route_behind_an_earlier_prefix_hit_still_wins() {
    // The walk meets "/a/b" (literal branch) before "=/a/:x/c" (param branch).
    table(
        &[
            route("ab", &["/a/b"]),
            route("exact", &["=/a/:x/c"]),
            route("deep_exact", &["=/a/:x/:y/d/"]),
        ],
        &[
            ("GET /a/b/c", "exact"),
            ("GET /a/b/c/", "ab"),
            ("GET /a/b/d", "ab"),
            ("GET /a/b/c/d/", "deep_exact"),
            ("GET /a/b/c/d", "ab"),
            ("GET /a/z/c", "exact"),
            ("GET /a/z/d", "404"),
        ],
    );
}

#[test]
fn long_literals_sharing_their_first_8_bytes() {
    table(
        &[
            route("one", &["/abcdefgh-one/x"]),
            route("two", &["/abcdefgh-two"]),
            route("six", &["/abcdefgh-six"]),
            route("short", &["/abcdefgh"]),
            route("seven", &["/abcdefg"]),
        ],
        &[
            ("GET /abcdefgh-one/x/y", "one"),
            ("GET /abcdefgh-one", "404"),
            ("GET /abcdefgh-two/", "two"),
            ("GET /abcdefgh-six", "six"),
            ("GET /abcdefgh-sex", "404"),
            ("GET /abcdefgh", "short"),
            ("GET /abcdefgh/x", "short"),
            ("GET /abcdefg", "seven"),
            ("GET /abcdefgi", "404"),
            ("GET /abcdef", "404"),
        ],
    );
}

#[test]
fn segment_end_finds_every_slash() {
    let paths = [
        "/",
        "//",
        "/a",
        "/a/",
        "/abcdefg",
        "/abcdefgh",
        "/abcdefghi",
        "/abcdefgh/",
        "/abcdefghijklmnopq/r",
        "/a/bcdefghij/k",
        "/1234567/12345678/123456789/",
    ];
    for path in paths {
        let bytes = path.as_bytes();
        let mut want = Vec::new();
        let mut got = Vec::new();
        for (i, _) in path.match_indices('/') {
            let end = path[i + 1..].find('/').map_or(path.len(), |j| i + 1 + j);
            want.push(end);
            got.push(trie::segment_end(bytes, i + 1));
        }
        assert_eq!(got, want, "{path:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Differential test: the trie against a plain reading of the rules over `describe()` order.
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const WORDS: [&str; 9] = [
    "a",
    "b",
    "me",
    "1234567",
    "12345678",
    "12345679",
    "123456789",
    "abcdefgh-1",
    "abcdefgh-2",
];

/// Path pattern matching as the module doc states it: (prefix_len, params) when it matches.
fn reference_match(pattern: &str, path: &str) -> Option<(usize, Vec<(String, String)>)> {
    let (exact, p) = match pattern.strip_prefix('=') {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let p = p.strip_suffix("/*").unwrap_or(p);
    let pattern_segments: Vec<&str> = if !exact && (p.is_empty() || p == "/") {
        Vec::new()
    } else {
        p[1..].split('/').collect()
    };
    let path_segments: Vec<&str> = path[1..].split('/').collect();
    let n = pattern_segments.len();
    if n > path_segments.len() || (exact && n != path_segments.len()) {
        return None;
    }
    let mut params = Vec::new();
    for (want, got) in pattern_segments.iter().zip(&path_segments) {
        match want.strip_prefix(':') {
            Some(name) if !got.is_empty() => params.push((name.to_string(), got.to_string())),
            Some(_) => return None,
            None if want == got => {}
            None => return None,
        }
    }
    let prefix_len = path_segments[..n].iter().map(|s| s.len() + 1).sum();
    Some((prefix_len, params))
}

fn reference_host_ok(hosts: &Option<Vec<String>>, host: Option<&str>) -> bool {
    let Some(hosts) = hosts else { return true };
    let Some(host) = host else { return false };
    let host = host.split(':').next().unwrap().to_ascii_lowercase();
    hosts.iter().any(|h| match h.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => *h == host,
    })
}

#[test]
fn trie_agrees_with_the_rules_on_random_tables() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for table_no in 0..400 {
        let mut routes: Vec<Route> = Vec::new();
        for r in 0..rng.below(12) + 1 {
            let mut pattern = String::new();
            if rng.chance(20) {
                pattern.push('=');
            }
            let len = rng.below(4);
            for i in 0..len {
                pattern.push('/');
                if rng.chance(25) {
                    pattern.push_str(&format!(":p{i}"));
                } else {
                    pattern.push_str(rng.pick(&WORDS));
                }
            }
            let exact = pattern.starts_with('=');
            if exact && rng.chance(15) || pattern.len() <= 1 {
                pattern.push('/');
            } else if !exact && rng.chance(20) {
                pattern.push_str("/*");
            }
            let mut route = route(&format!("r{r}"), &[&pattern]);
            if rng.chance(40) {
                let all = ["GET", "POST", "PUT"];
                let methods: Vec<&str> = all.iter().copied().filter(|_| rng.chance(50)).collect();
                route = route.methods(if methods.is_empty() {
                    &["GET"]
                } else {
                    &methods
                });
            }
            if rng.chance(20) {
                route = route.hosts(&[rng.pick(&["a.example.com", "*.example.com"])]);
            }
            if rng.chance(20) {
                route = route.header("x-h", rng.pick(&["1", "2"]));
            }
            // Keep the table compilable: drop a route that makes it ambiguous.
            routes.push(route);
            if let Err(RouteError::Ambiguous { .. }) = Router::compile(&routes) {
                routes.pop();
            }
        }
        let router = Router::compile(&routes).unwrap();
        let rows = router.describe();
        for _ in 0..60 {
            let mut path = String::new();
            for _ in 0..rng.below(5) {
                path.push('/');
                path.push_str(rng.pick(&WORDS));
            }
            if path.is_empty() || rng.chance(15) {
                path.push('/');
            }
            let method = rng.pick(&["GET", "POST", "DELETE"]);
            let host = [
                None,
                Some("a.example.com"),
                Some("B.example.com:80"),
                Some("example.com"),
            ][rng.below(4)];
            let header = [None, Some("1"), Some("2")][rng.below(3)];
            let headers: Vec<(&str, &[u8])> =
                header.map(|v| ("x-h", v.as_bytes())).into_iter().collect();

            // The reference: the first row, in precedence order, whose pattern and predicates
            // accept the request; else 405 from the rows that failed on the method only.
            let mut want = None;
            let mut allow: Vec<&str> = Vec::new();
            for row in &rows {
                let r = &routes[row.route];
                let Some((prefix_len, params)) = reference_match(&row.pattern, &path) else {
                    continue;
                };
                let headers_ok = r
                    .headers
                    .iter()
                    .all(|(n, v)| header == Some(v.as_str()) && n == "x-h");
                if !reference_host_ok(&r.hosts, host) || !headers_ok {
                    continue;
                }
                match &r.methods {
                    Some(m) if !m.iter().any(|m| m == method) => {
                        allow.extend(m.iter().map(String::as_str));
                        // HEAD is allowed wherever GET is (RFC 9110 §9.3.2).
                        if m.iter().any(|m| m == "GET") {
                            allow.push("HEAD");
                        }
                    }
                    _ => {
                        want = Some((row.route, prefix_len, params));
                        break;
                    }
                }
            }
            let want = match want {
                Some(found) => format!("{found:?}"),
                None if !allow.is_empty() => {
                    let order = ["GET", "HEAD", "POST", "PUT"];
                    let allow: Vec<&str> = order
                        .iter()
                        .copied()
                        .filter(|m| allow.contains(m))
                        .collect();
                    format!("405 {}", allow.join(", "))
                }
                None => "404".to_string(),
            };

            let req = RequestView {
                path: &path,
                method,
                host: host.map(str::as_bytes),
                headers: headers.as_slice(),
                client: None,
            };
            let got = match router.lookup(&req) {
                Lookup::Found(m) => {
                    let params: Vec<(String, String)> = m
                        .params
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect();
                    format!("{:?}", (m.route, m.prefix_len, params))
                }
                Lookup::MethodNotAllowed { allow } => format!("405 {allow}"),
                Lookup::NotFound => "404".to_string(),
            };
            assert_eq!(
                got,
                want,
                "table {table_no}: {method} {path} host={host:?} x-h={header:?}\n{}",
                rows.iter().map(|r| format!("  {r}\n")).collect::<String>()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 400 * 60);
}

/// HEAD got 405 on a route whose `methods` allow GET: HEAD is allowed wherever GET is (RFC 9110
/// §9.3.2), and an `Allow` that lists GET lists HEAD.
#[test]
fn head_is_allowed_wherever_get_is() {
    let routes = [
        route("read", &["/a"]).methods(&["GET"]),
        route("write", &["/b"]).methods(&["POST"]),
        route("any", &["/c"]),
    ];
    table(
        &routes,
        &[
            ("HEAD /a", "read"),
            ("GET /a", "read"),
            ("DELETE /a", "405 GET, HEAD"),
            ("HEAD /b", "405 POST"),
            ("HEAD /c", "any"),
        ],
    );
    let router = Router::compile(&routes).unwrap();
    assert_eq!(
        router.describe()[0].methods.as_deref(),
        Some(&["GET".to_string(), "HEAD".to_string()][..])
    );
}

#[test]
fn connect_is_refused_in_methods() {
    let err = Router::compile(&[route("t", &["/t"]).methods(&["GET", "CONNECT"])]).unwrap_err();
    match err {
        RouteError::InvalidMethod { method, reason, .. } => {
            assert_eq!(method, "CONNECT");
            assert!(reason.contains("never tunnels"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn allow_for_options() {
    let routes = [
        route("read", &["/a"]).methods(&["GET"]),
        route("write", &["/a"])
            .methods(&["POST"])
            .header("x-w", "1"),
        route("ext", &["/e"]).methods(&["PURGE"]),
    ];
    let router = Router::compile(&routes).unwrap();
    assert_eq!(router.allow_all(), "GET, HEAD, POST, OPTIONS, PURGE");
    let view = |path, headers: &'static [(&'static str, &'static [u8])]| RequestView {
        path,
        method: "OPTIONS",
        host: None,
        headers,
        client: None,
    };
    assert_eq!(
        router.allowed(&view("/a/1", &[])).as_deref(),
        Some("GET, HEAD")
    );
    assert_eq!(
        router.allowed(&view("/a", &[("x-w", b"1")])).as_deref(),
        Some("GET, HEAD, POST")
    );
    assert_eq!(router.allowed(&view("/x", &[])), None);
    // A route without `methods` serves every method but CONNECT.
    let any = Router::compile(&[route("all", &["/"])]).unwrap();
    assert_eq!(
        any.allow_all(),
        "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"
    );
    assert_eq!(
        any.allowed(&view("/z", &[])).as_deref(),
        Some("GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH")
    );
}

fn for_client(mut r: Route, client: usize) -> Route {
    r.client = Some(client);
    r
}

/// A route with `client` matches only that client's requests and outranks a route without
/// one on the same path (one more predicate); routes of two clients never overlap.
#[test]
fn client_routes_match_their_client_only_and_rank_first() {
    let routes = [
        route("any", &["/tx"]),
        for_client(route("mobile", &["/tx"]), 0),
        for_client(route("web", &["/tx"]), 1),
        for_client(route("mobile_only", &["/m"]), 0),
    ];
    table(
        &routes,
        &[
            ("GET /tx client=0", "mobile"),
            ("GET /tx/7 client=1", "web"),
            ("GET /tx client=2", "any"),
            ("GET /tx", "any"),
            ("GET /m client=0", "mobile_only"),
            ("GET /m client=1", "404"),
            ("GET /m", "404"),
        ],
    );
    // The same client on one shape is ambiguous; a client against a method predicate too.
    let twice = [
        for_client(route("a", &["/x"]), 0),
        for_client(route("b", &["/x"]), 0),
    ];
    assert_ambiguous_pair(&twice);
    let mixed = [
        for_client(route("a", &["/x"]), 0),
        route("b", &["/x"]).methods(&["GET"]),
    ];
    let RouteError::Ambiguous { reason, .. } = compile_err(&mixed) else {
        panic!("want Ambiguous");
    };
    assert_eq!(
        reason,
        "same pattern, 1 predicate(s) each; methods: GET,HEAD; hosts: any host; headers compatible; a client on one of them"
    );
}

fn assert_ambiguous_pair(routes: &[Route]) {
    let RouteError::Ambiguous { reason, .. } = compile_err(routes) else {
        panic!("want Ambiguous");
    };
    assert!(
        reason.ends_with("headers compatible; the same client"),
        "{reason}"
    );
}
