//! Table tests of the plan compiler and the path renderer.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn call(name: &str, path: &str) -> CallSpec {
    CallSpec {
        name: name.into(),
        upstream: "up".into(),
        path: path.into(),
        ..CallSpec::default()
    }
}

fn agg(calls: Vec<CallSpec>) -> AggregateSpec {
    AggregateSpec {
        name: "a".into(),
        timeout: ms(3000),
        calls,
    }
}

/// The reference's `order_details` (dispatch.example.toml), as the config layer will fill it.
fn order_details() -> AggregateSpec {
    AggregateSpec {
        name: "order_details".into(),
        timeout: ms(3000),
        calls: vec![
            CallSpec {
                upstream: "accounts".into(),
                required: true,
                ..call("order", "/orders/{orderId}")
            },
            CallSpec {
                upstream: "users".into(),
                required: true,
                ..call("user", "/users/{order.userId}")
            },
            CallSpec {
                upstream: "users".into(),
                default: Some(json!([])),
                ..call("products", "/products?ids={order.productIds}")
            },
            CallSpec {
                upstream: "transactions".into(),
                ..call("shipment", "/shipments/{orderId}")
            },
            CallSpec {
                upstream: "users".into(),
                foreach: Some("order.productIds".into()),
                max_items: Some(20),
                concurrency: Some(4),
                default: Some(json!([])),
                ..call("reviews", "/reviews/{each}")
            },
            CallSpec {
                upstream: "accounts".into(),
                when: Some(r#".user.plan == "business""#.into()),
                ..call("loyalty", "/loyalty/{user.id}")
            },
        ],
    }
}

/// The reference's `dashboard`.
fn dashboard() -> AggregateSpec {
    AggregateSpec {
        name: "dashboard".into(),
        timeout: ms(3000),
        calls: vec![
            CallSpec {
                upstream: "users".into(),
                required: true,
                timeout: Some(ms(500)),
                ..call("profile", "/users/{userId}")
            },
            CallSpec {
                upstream: "accounts".into(),
                default: Some(json!({"currency": "USD", "available": 0, "pending": 0})),
                ..call("balance", "/accounts/{userId}/balance")
            },
            CallSpec {
                upstream: "transactions".into(),
                select: Some(".transactions".into()),
                default: Some(json!([])),
                timeout: Some(ms(2000)),
                ..call(
                    "recentTransactions",
                    "/transactions?userId={userId}&limit=5",
                )
            },
        ],
    }
}

fn names(plan: &Plan, set: impl IntoIterator<Item = usize>) -> Vec<&str> {
    set.into_iter()
        .map(|i| plan.calls[i].name.as_str())
        .collect()
}

fn bits(plan: &Plan, set: u64) -> Vec<&str> {
    names(plan, (0..plan.calls.len()).filter(|i| set & (1 << i) != 0))
}

#[test]
fn reference_aggregates_compile_to_their_start_order_deps_and_critical_path() {
    struct Case {
        spec: AggregateSpec,
        order: &'static [&'static str],
        deps: &'static [(&'static str, &'static [&'static str])],
        critical: &'static str,
        sum: Duration,
        worst: Duration,
    }
    let cases = [
        Case {
            spec: order_details(),
            order: &[
                "order", "user", "products", "shipment", "reviews", "loyalty",
            ],
            deps: &[
                ("order", &[]),
                ("user", &["order"]),
                ("products", &["order"]),
                ("shipment", &[]),
                ("reviews", &["order"]),
                ("loyalty", &["user"]),
            ],
            critical: "order -> user -> loyalty",
            sum: ms(9000),
            worst: ms(3000),
        },
        Case {
            spec: dashboard(),
            order: &["profile", "balance", "recentTransactions"],
            deps: &[
                ("profile", &[]),
                ("balance", &[]),
                ("recentTransactions", &[]),
            ],
            critical: "balance",
            sum: ms(3000),
            worst: ms(3000),
        },
    ];
    for case in cases {
        let plan = Plan::compile(&case.spec).unwrap();
        assert_eq!(
            names(&plan, 0..plan.calls.len()),
            case.order,
            "{}",
            plan.name
        );
        for (name, want) in case.deps {
            let i = plan.index_of(name).unwrap();
            assert_eq!(bits(&plan, plan.calls[i].deps), *want, "deps of {name}");
            for d in plan.calls[i].dependents.iter() {
                assert!(plan.calls[*d].deps & (1 << i) != 0, "{name} -> dependent");
            }
        }
        assert_eq!(plan.critical_path_text(), case.critical, "{}", plan.name);
        assert_eq!(plan.critical_sum, case.sum, "{}", plan.name);
        assert_eq!(plan.worst_case(), case.worst, "{}", plan.name);
    }
    let plan = Plan::compile(&order_details()).unwrap();
    let order = plan.index_of("order").unwrap();
    assert_eq!(
        names(&plan, plan.calls[order].dependents.iter().copied()),
        ["user", "products", "reviews"]
    );
    let reviews = &plan.calls[plan.index_of("reviews").unwrap()];
    assert_eq!(
        reviews.foreach,
        Some(Foreach {
            call: order,
            fields: vec!["productIds".into()],
            max_items: 20,
            concurrency: 4
        })
    );
}

#[test]
fn start_order_follows_dependencies_with_ties_in_file_order() {
    // c waits for b, declared before it; a and d wait for nothing.
    let spec = agg(vec![
        call("c", "/c/{b.id}"),
        call("a", "/a"),
        call("b", "/b"),
        call("d", "/d/{a}"),
    ]);
    let plan = Plan::compile(&spec).unwrap();
    assert_eq!(names(&plan, 0..4), ["a", "b", "c", "d"]);
    assert_eq!(plan.calls[2].file_index, 0);
    // `{a}` without a dot is the whole result of call a, not a parameter.
    assert_eq!(bits(&plan, plan.calls[3].deps), ["a"]);
}

#[test]
fn critical_path_weighs_own_timeouts_and_is_capped_by_the_aggregate() {
    let spec = AggregateSpec {
        name: "t".into(),
        timeout: ms(1000),
        calls: vec![
            CallSpec {
                timeout: Some(ms(100)),
                ..call("a", "/a")
            },
            CallSpec {
                timeout: Some(ms(700)),
                ..call("b", "/b")
            },
            CallSpec {
                timeout: Some(ms(200)),
                ..call("c", "/c/{a.x}")
            },
            CallSpec {
                timeout: Some(ms(50)),
                ..call("d", "/d/{b.x}/{c.y}")
            },
        ],
    };
    let plan = Plan::compile(&spec).unwrap();
    assert_eq!(plan.critical_path_text(), "b -> d");
    assert_eq!(plan.critical_sum, ms(750));
    assert_eq!(plan.worst_case(), ms(750));
    let spec = AggregateSpec {
        timeout: ms(600),
        ..spec
    };
    let plan = Plan::compile(&spec).unwrap();
    assert_eq!(plan.critical_sum, ms(750));
    assert_eq!(plan.worst_case(), ms(600));
}

#[test]
fn cycles_are_errors_naming_the_cycle() {
    let cases: [(Vec<CallSpec>, &str); 5] = [
        (vec![call("a", "/{a.x}")], "a -> a"),
        (
            vec![call("a", "/{b.x}"), call("b", "/{a.x}")],
            "a -> b -> a",
        ),
        (
            vec![
                call("z", "/"),
                call("a", "/{b.x}"),
                call("b", "/{c.x}"),
                call("c", "/{a}"),
            ],
            "a -> b -> c -> a",
        ),
        // A call that only waits on a cycle is not part of the cycle named.
        (
            vec![
                call("x", "/{a.x}"),
                call("a", "/{b.x}"),
                call("b", "/{a.x}"),
            ],
            "a -> b -> a",
        ),
        (
            vec![
                CallSpec {
                    when: Some(".b.ok".into()),
                    ..call("a", "/")
                },
                CallSpec {
                    foreach: Some("a.list".into()),
                    ..call("b", "/{each}")
                },
            ],
            "a -> b -> a",
        ),
    ];
    for (calls, cycle) in cases {
        match Plan::compile(&agg(calls)) {
            Err(PlanError::Cycle { cycle: got, .. }) => assert_eq!(got, cycle),
            other => panic!("{cycle}: {other:?}"),
        }
    }
}

#[test]
fn unknown_calls_and_bad_specs_are_errors() {
    let cases: Vec<(Vec<CallSpec>, &str)> = vec![
        (vec![call("a", "/{nope.id}")], "aggregate a, call a: path refers to \"nope\", which is not a call"),
        (
            vec![CallSpec { foreach: Some("nope.ids".into()), ..call("a", "/{each}") }],
            "aggregate a, call a: foreach refers to \"nope\", which is not a call",
        ),
        (
            vec![CallSpec { foreach: Some("a..b".into()), ..call("a", "/{each}") }],
            "aggregate a, call a: foreach: \"a..b\" is not a path like call.field (A-Z a-z 0-9 _ - between dots)",
        ),
        (
            vec![CallSpec { max_items: Some(3), ..call("a", "/") }],
            "aggregate a, call a: max_items: is only meaningful with foreach",
        ),
        (
            vec![call("b", "/"), CallSpec { foreach: Some("b".into()), concurrency: Some(0), ..call("a", "/{each}") }],
            "aggregate a, call a: concurrency: must be at least 1",
        ),
        (
            vec![CallSpec { timeout: Some(Duration::ZERO), ..call("a", "/") }],
            "aggregate a, call a: timeout: must be more than 0",
        ),
        (vec![call("a", "/"), call("a", "/")], "aggregate a: call a is defined twice"),
        (
            vec![call("each", "/")],
            "aggregate a: call name \"each\" is reserved for the foreach element ({each})",
        ),
        (
            vec![call("a.b", "/")],
            "aggregate a: call name \"a.b\" may only hold A-Z a-z 0-9 _ - (placeholders name calls by it)",
        ),
        (vec![], "aggregate a: has no calls"),
        (
            (0..65).map(|i| call(&format!("c{i}"), "/")).collect(),
            "aggregate a: 65 calls, at most 64 are allowed",
        ),
    ];
    for (calls, want) in cases {
        let err = Plan::compile(&agg(calls)).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
    let zero = AggregateSpec {
        timeout: Duration::ZERO,
        ..agg(vec![call("a", "/")])
    };
    assert_eq!(
        Plan::compile(&zero).unwrap_err().to_string(),
        "aggregate a: `timeout` must be more than 0"
    );
    // 64 calls is the limit, not over it: the full bitset works.
    let calls: Vec<CallSpec> = (0..64)
        .map(|i| {
            if i == 0 {
                call("c0", "/")
            } else {
                call(&format!("c{i}"), &format!("/{{c{}.x}}", i - 1))
            }
        })
        .collect();
    let plan = Plan::compile(&agg(calls)).unwrap();
    assert_eq!(plan.all(), u64::MAX);
    assert_eq!(plan.downstream(0), !1);
    assert_eq!(
        plan.ready(u64::MAX >> 1, u64::MAX >> 1).collect::<Vec<_>>(),
        [63]
    );
}

#[test]
fn malformed_placeholders_are_errors_naming_call_and_byte() {
    let cases: [(&str, usize, &str); 11] = [
        ("/a/{id", 3, "unclosed { (write {{ for a literal {)"),
        ("/a/{id/{x}", 3, "unclosed { (write {{ for a literal {)"),
        ("/a/}", 3, "stray } (write }} for a literal })"),
        ("/a/{}", 3, "empty placeholder {}"),
        ("/a/{.id}", 4, "empty name in {.id}"),
        ("/a/{x.}", 6, "empty name in {x.}"),
        ("/a/{x..y}", 6, "empty name in {x..y}"),
        (
            "/a/{u id}",
            5,
            "{u id}: only A-Z a-z 0-9 _ - and . are allowed",
        ),
        ("/a/{each}", 3, "{each} outside a foreach call"),
        ("a/{id}", 0, "must start with /"),
        (
            "/a b",
            2,
            "literal text must be visible ASCII without # (percent-encode it)",
        ),
    ];
    for (path, pos, reason) in cases {
        match Plan::compile(&agg(vec![call("c", path)])) {
            Err(PlanError::Placeholder {
                call,
                pos: p,
                reason: r,
                ..
            }) => {
                assert_eq!((call.as_str(), p, r.as_str()), ("c", pos, reason), "{path}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    assert_eq!(
        Plan::compile(&agg(vec![call("c", "/a/{")]))
            .unwrap_err()
            .to_string(),
        "aggregate a, call c: path, byte 3: unclosed { (write {{ for a literal {)"
    );
}

#[test]
fn templates_parse_into_segments_with_escapes() {
    let spec = agg(vec![
        call("order", "/o"),
        CallSpec {
            foreach: Some("order.items".into()),
            ..call(
                "item",
                "/x/{{lit}}/{id}?o={order.a.0}&e={each.sku}&w={each}",
            )
        },
    ]);
    let plan = Plan::compile(&spec).unwrap();
    use Segment::*;
    assert_eq!(
        plan.calls[1].segments,
        [
            Literal("/x/{lit}/".into()),
            Param("id".into()),
            Literal("?o=".into()),
            Result {
                call: 0,
                name: "order".into(),
                fields: vec!["a".into(), "0".into()]
            },
            Literal("&e=".into()),
            Each(vec!["sku".into()]),
            Literal("&w=".into()),
            Each(vec![]),
        ]
    );
}

#[test]
fn when_references_are_dependencies() {
    let base = || vec![call("user", "/u"), call("order", "/o")];
    /// Ok: the calls `w` waits for; Err: (byte, reason).
    type Want = Result<&'static [&'static str], (usize, &'static str)>;
    let cases: [(&str, Want); 10] = [
        (r#".user.plan == "business""#, Ok(&["user"])),
        (
            r#".user.plan == "x" and (.order.total > 10)"#,
            Ok(&["user", "order"]),
        ),
        // Field accesses after a call's result, inside strings and comments, are not heads.
        (r#"(.user).plan == ".order" # .order too"#, Ok(&["user"])),
        (r#".user.tags[0].name == "a""#, Ok(&["user"])),
        // String interpolation is code.
        (r#""\(.order.id)-x" == .user.ref"#, Ok(&["user", "order"])),
        (".user | length > 0", Ok(&["user"])),
        (
            ".plan == 1",
            Err((
                0,
                ".plan is not a call (a condition reads results as .call.field from the root)",
            )),
        ),
        (
            ".user | .plan == 1",
            Err((
                8,
                ".plan is not a call (a condition reads results as .call.field from the root)",
            )),
        ),
        (
            r#".["user"] != null"#,
            Err((
                0,
                "a bare `.` reads the results as a whole; name the calls: .call.field",
            )),
        ),
        (r#".user == "x"#, Err((11, "unterminated string"))),
    ];
    for (when, want) in cases {
        let mut calls = base();
        calls.push(CallSpec {
            when: Some(when.into()),
            ..call("w", "/w")
        });
        let got = Plan::compile(&agg(calls));
        match (want, got) {
            (Ok(deps), Ok(plan)) => {
                let w = plan.index_of("w").unwrap();
                assert_eq!(bits(&plan, plan.calls[w].deps), deps, "{when}");
            }
            (
                Err((pos, reason)),
                Err(PlanError::When {
                    call,
                    pos: p,
                    reason: r,
                    ..
                }),
            ) => {
                assert_eq!((call.as_str(), p, r.as_str()), ("w", pos, reason), "{when}");
            }
            (want, got) => panic!("{when}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn ready_and_downstream_drive_the_order_details_graph() {
    let plan = Plan::compile(&order_details()).unwrap();
    let i = |n: &str| plan.index_of(n).unwrap();
    let set = |ns: &[&str]| ns.iter().fold(0u64, |acc, n| acc | (1 << i(n)));
    assert_eq!(names(&plan, plan.ready(0, 0)), ["order", "shipment"]);
    let started = set(&["order", "shipment"]);
    assert_eq!(names(&plan, plan.ready(0, started)), Vec::<&str>::new());
    let done = set(&["order"]);
    assert_eq!(
        names(&plan, plan.ready(done, started)),
        ["user", "products", "reviews"]
    );
    let started = started | set(&["user", "products", "reviews"]);
    assert_eq!(
        names(&plan, plan.ready(done | set(&["user"]), started)),
        ["loyalty"]
    );
    assert_eq!(
        bits(&plan, plan.downstream(i("order"))),
        ["user", "products", "reviews", "loyalty"]
    );
    assert_eq!(bits(&plan, plan.downstream(i("user"))), ["loyalty"]);
    assert_eq!(plan.downstream(i("shipment")), 0);
}

struct Vals {
    params: HashMap<&'static str, &'static str>,
    results: Vec<Option<Value>>,
}

impl Values for Vals {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).copied()
    }
    fn result(&self, call: usize) -> Option<&Value> {
        self.results.get(call)?.as_ref()
    }
}

#[test]
fn rendering_joins_arrays_encodes_values_and_names_missing_ones() {
    let spec = agg(vec![
        call("order", "/o"),
        call(
            "p",
            "/p/{id}?q={q}&ids={order.ids}&n={order.n}&b={order.flag}",
        ),
        call("m", "/m/{order.user.name}"),
        call("idx", "/i/{order.ids.1}"),
        call("whole", "/w/{order}"),
        call("nested", "/n/{order.nested}"),
        call("nul", "/n/{order.gone}"),
        call("raw", "/r%20a/{{x}}/{id}"),
    ]);
    let plan = Plan::compile(&spec).unwrap();
    let vals = Vals {
        params: HashMap::from([("id", "a b/c"), ("q", "x&y=z#f?é")]),
        results: vec![
            Some(json!({
                "ids": ["p 1", 2, true, "a,b"],
                "n": 1.5,
                "flag": false,
                "user": {"name": "Zoë ~-._"},
                "nested": [[1]],
                "gone": null,
            })),
            None,
        ],
    };
    let render = |name: &str| plan.calls[plan.index_of(name).unwrap()].render_path(&vals, None);
    assert_eq!(
        render("p").unwrap(),
        "/p/a%20b%2Fc?q=x%26y%3Dz%23f%3F%C3%A9&ids=p%201,2,true,a%2Cb&n=1.5&b=false"
    );
    assert_eq!(render("m").unwrap(), "/m/Zo%C3%AB%20~-._");
    assert_eq!(render("idx").unwrap(), "/i/2");
    assert_eq!(render("raw").unwrap(), "/r%20a/{x}/a%20b%2Fc");
    assert_eq!(
        render("whole"),
        Err(RenderError::NotScalar {
            placeholder: "order".into()
        })
    );
    assert_eq!(
        render("nested"),
        Err(RenderError::NotScalar {
            placeholder: "order.nested".into()
        })
    );
    assert_eq!(
        render("nul"),
        Err(RenderError::MissingValue {
            placeholder: "order.gone".into()
        })
    );
    let no_params = Vals {
        params: HashMap::new(),
        results: vals.results.clone(),
    };
    assert_eq!(
        plan.calls[1].render_path(&no_params, None),
        Err(RenderError::MissingValue {
            placeholder: "id".into()
        })
    );
    let no_result = Vals {
        params: vals.params.clone(),
        results: vec![],
    };
    assert_eq!(
        plan.calls[plan.index_of("m").unwrap()]
            .render_path(&no_result, None)
            .unwrap_err()
            .to_string(),
        "no value for {order.user.name}"
    );
}

#[test]
fn foreach_items_are_cut_at_max_items_and_render_each() {
    let spec = agg(vec![
        call("order", "/o"),
        CallSpec {
            foreach: Some("order.lines".into()),
            max_items: Some(2),
            ..call("line", "/l/{each.sku}?o={order.id}")
        },
        CallSpec {
            foreach: Some("order.ids".into()),
            ..call("byid", "/r/{each}")
        },
        CallSpec {
            foreach: Some("order.id".into()),
            ..call("notarray", "/r/{each}")
        },
        CallSpec {
            foreach: Some("order.none".into()),
            ..call("missing", "/r/{each}")
        },
    ]);
    let plan = Plan::compile(&spec).unwrap();
    let vals = Vals {
        params: HashMap::new(),
        results: vec![Some(json!({
            "id": 7,
            "ids": ["a/1", "b"],
            "lines": [{"sku": "s 1"}, {"sku": "s2"}, {"sku": "s3"}],
        }))],
    };
    let c = |n: &str| &plan.calls[plan.index_of(n).unwrap()];
    let (items, truncated) = c("line").items(&vals, &plan).unwrap().unwrap();
    assert!(truncated);
    let paths: Vec<String> = items
        .iter()
        .map(|e| c("line").render_path(&vals, Some(e)).unwrap())
        .collect();
    assert_eq!(paths, ["/l/s%201?o=7", "/l/s2?o=7"]);
    let (items, truncated) = c("byid").items(&vals, &plan).unwrap().unwrap();
    assert!(!truncated);
    let paths: Vec<String> = items
        .iter()
        .map(|e| c("byid").render_path(&vals, Some(e)).unwrap())
        .collect();
    assert_eq!(paths, ["/r/a%2F1", "/r/b"]);
    assert_eq!(
        c("line").render_path(&vals, Some(&json!({"other": 1}))),
        Err(RenderError::MissingValue {
            placeholder: "each.sku".into()
        })
    );
    assert_eq!(
        c("notarray").items(&vals, &plan),
        Some(Err(RenderError::NotArray {
            path: "order.id".into()
        }))
    );
    assert_eq!(
        c("missing").items(&vals, &plan),
        Some(Err(RenderError::MissingValue {
            placeholder: "order.none".into()
        }))
    );
    assert_eq!(c("order").items(&vals, &plan), None);
    assert_eq!(
        c("byid").foreach.as_ref().unwrap().max_items,
        DEFAULT_MAX_ITEMS
    );
    assert_eq!(
        c("byid").foreach.as_ref().unwrap().concurrency,
        DEFAULT_CONCURRENCY
    );
}

#[test]
fn explain_prints_start_order_waits_critical_path_and_worst_case() {
    let plan = Plan::compile(&order_details()).unwrap();
    let want = "\
aggregate order_details: 6 calls, timeout 3s
start order:
   1. order     starts at once; required, accounts; timeout 3s (aggregate's)
   2. user      waits for order; required, users; timeout 3s (aggregate's)
   3. products  waits for order; optional, users; timeout 3s (aggregate's)
   4. shipment  starts at once; optional, transactions; timeout 3s (aggregate's)
   5. reviews   waits for order; optional, users; timeout 3s (aggregate's); foreach order.productIds (at most 20 items, 4 at once)
   6. loyalty   waits for user; optional, accounts; timeout 3s (aggregate's); when .user.plan == \"business\"
critical path: order -> user -> loyalty (9s by the calls' timeouts)
worst case: 3s (the aggregate's timeout caps the path's 9s)
";
    assert_eq!(plan.explain(), want);
    let plan = Plan::compile(&dashboard()).unwrap();
    let text = plan.explain();
    assert!(
        text.contains("   1. profile             starts at once; required, users; timeout 500ms\n"),
        "{text}"
    );
    assert!(
        text.ends_with("critical path: balance (3s by the calls' timeouts)\nworst case: 3s\n"),
        "{text}"
    );
}

/// Regression: a placeholder value of `.` or `..` rendered `/users/..`, a path traversal
/// upstream; now it fails the call in the path, and is kept in the query.
#[test]
fn dot_segment_placeholder_values_fail_in_the_path_only() {
    let spec = agg(vec![
        call("order", "/o"),
        call("p", "/users/{id}/x?q={id}"),
        call("q", "/users?q={id}"),
        call("r", "/r/{order.up}"),
        call("a", "/a/{order.list}"),
        call("s", "/s/{id}x"),
    ]);
    let plan = Plan::compile(&spec).unwrap();
    let with = |id: &'static str| Vals {
        params: HashMap::from([("id", id)]),
        results: vec![Some(json!({"up": "..", "list": ["."]}))],
    };
    let render =
        |name: &str, vals: &Vals| plan.calls[plan.index_of(name).unwrap()].render_path(vals, None);
    for dots in [".", ".."] {
        let vals = with(dots);
        assert_eq!(
            render("p", &vals),
            Err(RenderError::DotSegment {
                placeholder: "id".into(),
                value: dots.into()
            })
        );
        assert_eq!(render("q", &vals).unwrap(), format!("/users?q={dots}"));
        // The value is judged, not the segment: `..x` would be harmless, but refusing it is.
        assert!(render("s", &vals).is_err());
    }
    let vals = with("...");
    assert_eq!(render("p", &vals).unwrap(), "/users/.../x?q=...");
    assert_eq!(
        render("r", &vals).unwrap_err().to_string(),
        "bad value for {order.up}: \"..\" is a dot segment"
    );
    assert!(matches!(
        render("a", &vals),
        Err(RenderError::DotSegment { .. })
    ));
}
