//! The executor against an in-memory transport on a monoio runtime with its timer: start
//! order, the heads it sends, cancellation at the deadline and on a required failure, the
//! composite.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::run::{execute, Answer, CallError, CallInfo, Reply, Request, Transport};
use super::*;
use crate::compose::jq::Program;

/// Answers by path: after `delay`, `status` with `body`. Records each request's start offset
/// and head, and how many requests were dropped before their answer (cancelled).
#[derive(Default)]
struct Memory {
    routes: Vec<(&'static str, u64, u16, Value)>,
    began: RefCell<Option<Instant>>,
    log: RefCell<Vec<(String, Duration, Vec<u8>)>>,
    cancelled: Rc<RefCell<usize>>,
}

/// Counts a request as cancelled unless it was answered.
struct Pending(Rc<RefCell<usize>>, bool);

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.1 {
            *self.0.borrow_mut() += 1;
        }
    }
}

impl Transport for Memory {
    async fn call(
        &self,
        _call: CallInfo<'_>,
        head: Vec<u8>,
        _deadline: Instant,
    ) -> Result<Reply, CallError> {
        let text = String::from_utf8(head.clone()).unwrap();
        let path = text.split(' ').nth(1).unwrap().to_string();
        let began = self.began.borrow().expect("started");
        self.log
            .borrow_mut()
            .push((path.clone(), began.elapsed(), head));
        let (_, delay, status, body) = self
            .routes
            .iter()
            .find(|(p, ..)| path.starts_with(p))
            .unwrap_or_else(|| panic!("no route for {path}"))
            .clone();
        let mut guard = Pending(self.cancelled.clone(), false);
        monoio::time::sleep(Duration::from_millis(delay)).await;
        guard.1 = true;
        Ok(Reply {
            status,
            body: body.to_string().into_bytes(),
        })
    }
}

fn compiled(spec: &AggregateSpec, shape: Option<&str>) -> Compiled {
    let plan = Plan::compile(spec).expect("compiles");
    let calls = plan
        .calls
        .iter()
        .map(|c| CallRun {
            upstream: 0,
            fallback_host: "fallback:1".into(),
            select: c
                .select
                .as_deref()
                .map(|s| Program::compile(s, &[]).unwrap()),
            when: c.when.as_deref().map(|s| Program::compile(s, &[]).unwrap()),
        })
        .collect();
    Compiled {
        plan,
        calls,
        shape: shape.map(|s| Program::compile(s, &[]).unwrap()),
        max_body: 1 << 20,
        budget: 1 << 20,
    }
}

fn call(name: &str, path: &str) -> CallSpec {
    CallSpec {
        name: name.into(),
        upstream: "u".into(),
        path: path.into(),
        ..CallSpec::default()
    }
}

fn spec(timeout_ms: u64, calls: Vec<CallSpec>) -> AggregateSpec {
    AggregateSpec {
        name: "a".into(),
        timeout: Duration::from_millis(timeout_ms),
        calls,
    }
}

/// Runs `c` on a fresh runtime with `params`: the answer and how long it took.
fn run(c: &Compiled, t: &Memory, params: &[(String, String)]) -> (Answer, Duration) {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime");
    rt.block_on(async {
        *t.began.borrow_mut() = Some(Instant::now());
        let req = Request {
            params,
            host: Some(b"gw.example"),
            fields: b"X-Request-Id: r1\r\n",
        };
        let began = Instant::now();
        let answer = execute(c, &req, t).await;
        (answer, began.elapsed())
    })
}

fn composite(a: &Answer) -> Value {
    match a {
        Answer::Composite(body) => serde_json::from_str(body).unwrap(),
        other => panic!("not a composite: {other:?}"),
    }
}

#[test]
fn a_call_starts_when_its_dependencies_end_and_others_at_once() {
    let c = compiled(
        &spec(
            2000,
            vec![
                call("order", "/order"),
                call("user", "/user/{order.userId}"),
                call("shipment", "/ship"),
            ],
        ),
        None,
    );
    let t = Memory {
        routes: vec![
            ("/order", 80, 200, json!({"userId": "a/b"})),
            ("/user/", 10, 200, json!({"name": "n"})),
            ("/ship", 10, 200, json!("s")),
        ],
        ..Memory::default()
    };
    let (answer, took) = run(&c, &t, &[]);
    let v = composite(&answer);
    assert_eq!(v["user"], json!({"name": "n"}));
    let log = t.log.borrow();
    let at = |p: &str| log.iter().find(|(path, ..)| path.starts_with(p)).unwrap().1;
    assert!(at("/ship") < Duration::from_millis(30), "{:?}", at("/ship"));
    assert!(
        at("/user/") >= Duration::from_millis(80),
        "{:?}",
        at("/user/")
    );
    assert!(took < Duration::from_millis(300), "{took:?}");
    // The value is percent-encoded into the path; the head carries Host and the fields.
    let (_, _, head) = log.iter().find(|(p, ..)| p.starts_with("/user/")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(head),
        "GET /user/a%2Fb HTTP/1.1\r\nHost: gw.example\r\nX-Request-Id: r1\r\n"
    );
}

#[test]
fn the_aggregate_deadline_cancels_optional_calls_in_flight() {
    let c = compiled(
        &spec(100, vec![call("fast", "/fast"), call("slow", "/slow")]),
        None,
    );
    let t = Memory {
        routes: vec![("/fast", 5, 200, json!(1)), ("/slow", 5000, 200, json!(2))],
        ..Memory::default()
    };
    let (answer, took) = run(&c, &t, &[]);
    let v = composite(&answer);
    assert_eq!(v["_meta"]["errors"], json!({"slow": "timeout"}));
    assert_eq!(v["slow"], Value::Null);
    assert!(took < Duration::from_millis(400), "{took:?}");
    assert_eq!(*t.cancelled.borrow(), 1, "the slow call was dropped");
}

#[test]
fn a_failed_required_call_ends_the_run_and_cancels_the_rest() {
    let mut profile = call("profile", "/p");
    profile.required = true;
    let c = compiled(&spec(3000, vec![profile, call("slow", "/slow")]), None);
    let t = Memory {
        routes: vec![("/p", 5, 500, json!({})), ("/slow", 5000, 200, json!(2))],
        ..Memory::default()
    };
    let (answer, took) = run(&c, &t, &[]);
    assert_eq!(
        answer,
        Answer::Error {
            status: 503,
            message: "Required call \"profile\" failed: status 500".into()
        }
    );
    assert!(took < Duration::from_millis(400), "{took:?}");
    assert_eq!(*t.cancelled.borrow(), 1);
}

#[test]
fn shape_gets_the_results_and_meta_is_added_to_an_object() {
    let mut b = call("b", "/b/{id}");
    b.select = Some(".v".into());
    let c = compiled(
        &spec(1000, vec![call("a", "/a"), b]),
        Some("{both: [.a, .b]}"),
    );
    let t = Memory {
        routes: vec![("/a", 1, 200, json!("x")), ("/b/", 1, 200, json!({"v": 2}))],
        ..Memory::default()
    };
    let (answer, _) = run(&c, &t, &[("id".into(), "7".into())]);
    let v = composite(&answer);
    assert_eq!(v["both"], json!(["x", 2]));
    assert_eq!(v["_meta"]["partial"], json!(false));
    assert_eq!(t.log.borrow()[1].0, "/b/7");
    // A shape that is not an object gets no _meta.
    let c = compiled(&spec(1000, vec![call("a", "/a")]), Some(".a"));
    let (answer, _) = run(&c, &t, &[]);
    assert_eq!(answer, Answer::Composite("\"x\"".into()));
}

/// A call with `foreach` over `list.ids`, `concurrency` 8.
fn items(path: &str) -> CallSpec {
    CallSpec {
        foreach: Some("list.ids".into()),
        concurrency: Some(8),
        ..call("items", path)
    }
}

/// Regression: a `when` read every result ended so far, so `has("fast")` was true or false
/// by timing; it reads only the calls it names, and a `when` naming none reads `{}`.
#[test]
fn when_reads_only_the_calls_it_names_not_others_that_ended_first() {
    let mut gated = call("gated", "/gated");
    gated.when = Some(r#".slow.ok and (has("fast") | not)"#.into());
    let mut lone = call("lone", "/lone");
    lone.when = Some(r#"has("fast")"#.into());
    let c = compiled(
        &spec(
            2000,
            vec![call("fast", "/fast"), call("slow", "/slow"), gated, lone],
        ),
        None,
    );
    let t = Memory {
        routes: vec![
            ("/fast", 1, 200, json!(1)),
            ("/slow", 60, 200, json!({"ok": true})),
            ("/gated", 1, 200, json!("ran")),
            ("/lone", 1, 200, json!("ran")),
        ],
        ..Memory::default()
    };
    let (answer, _) = run(&c, &t, &[]);
    let v = composite(&answer);
    // `fast` had ended long before `slow`: the old input held it, and `gated` was skipped.
    assert_eq!(v["gated"], json!("ran"), "{v}");
    assert_eq!(v["lone"], Value::Null, "{v}");
    assert_eq!(v["_meta"]["skipped"], json!(["lone"]), "{v}");
}

/// Regression: a `foreach` call cut by its deadline lost every item, even those that had come
/// back; they keep their values in place, the rest are null, and the call (required here)
/// succeeds with its reason in `_meta.errors` and `partial` set.
#[test]
fn a_foreach_cut_by_its_timeout_keeps_the_items_that_came_back() {
    let mut each = items("/i/{each}");
    each.required = true;
    each.timeout = Some(Duration::from_millis(150));
    let c = compiled(&spec(2000, vec![call("list", "/list"), each]), None);
    let t = Memory {
        routes: vec![
            ("/list", 1, 200, json!({"ids": [1, 2, 3]})),
            ("/i/1", 5, 200, json!("one")),
            ("/i/2", 5000, 200, json!("two")),
            ("/i/3", 5, 200, json!("three")),
        ],
        ..Memory::default()
    };
    let (answer, took) = run(&c, &t, &[]);
    let v = composite(&answer);
    assert_eq!(v["items"], json!(["one", null, "three"]), "{v}");
    assert_eq!(
        v["_meta"]["errors"],
        json!({"items": "1 of 3 items failed: [1] timeout"})
    );
    assert_eq!(v["_meta"]["partial"], json!(true));
    assert_eq!(v["_meta"]["available"]["items"], json!(true));
    assert!(took < Duration::from_millis(1000), "{took:?}");
    assert_eq!(*t.cancelled.borrow(), 1, "the slow item was dropped");
}

/// Item failures are named by index with their reasons, at most three, then `...`; when
/// every item failed the call failed (a required one: 503 naming it; at the aggregate's
/// deadline: 504).
#[test]
fn foreach_item_failures_are_reported_bounded_and_all_failed_fails_the_call() {
    let c = compiled(
        &spec(2000, vec![call("list", "/list"), items("/i/{each}")]),
        None,
    );
    let t = Memory {
        routes: vec![
            ("/list", 1, 200, json!({"ids": [1, 2, 3, 4, 5]})),
            ("/i/3", 1, 200, json!("three")),
            ("/i/", 1, 503, json!({})),
        ],
        ..Memory::default()
    };
    let (answer, _) = run(&c, &t, &[]);
    let v = composite(&answer);
    assert_eq!(v["items"], json!([null, null, "three", null, null]), "{v}");
    assert_eq!(
        v["_meta"]["errors"]["items"],
        json!("4 of 5 items failed: [0] status 503; [1] status 503; [3] status 503; ...")
    );

    let mut each = items("/j/{each}");
    each.required = true;
    let c = compiled(&spec(2000, vec![call("list", "/list"), each]), None);
    let t = Memory {
        routes: vec![
            ("/list", 1, 200, json!({"ids": [1, 2]})),
            ("/j/", 1, 500, json!({})),
        ],
        ..Memory::default()
    };
    let (answer, _) = run(&c, &t, &[]);
    assert_eq!(
        answer,
        Answer::Error {
            status: 503,
            message: "Required call \"items\" failed: 2 of 2 items failed: [0] status 500; \
                      [1] status 500"
                .into()
        }
    );

    let mut each = items("/k/{each}");
    each.required = true;
    let c = compiled(&spec(100, vec![call("list", "/list"), each]), None);
    let t = Memory {
        routes: vec![
            ("/list", 1, 200, json!({"ids": [1, 2]})),
            ("/k/", 5000, 200, json!({})),
        ],
        ..Memory::default()
    };
    let (answer, took) = run(&c, &t, &[]);
    assert_eq!(
        answer,
        Answer::Error {
            status: 504,
            message: "Aggregate timed out waiting for required call \"items\"".into()
        }
    );
    assert!(took < Duration::from_millis(1000), "{took:?}");
}
