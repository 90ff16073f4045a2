//! Aggregation's limits against real loopback upstreams (BEHAVIOR.md "Aggregation"): a
//! `foreach` call cut by the aggregate's deadline keeps the items that came back, item
//! failures are reported in `_meta.errors`, and the aggregate's `max_body` bounds the call
//! bodies one request reads, all calls together.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// An aggregate `a` at `/a` with a `list` call and an `items` call over `list.ids` to
/// `/item/{each}`; `aggregate` and `items` are extra keys of each.
fn fan_out(up: &Upstream, aggregate: &str, items: &str) -> String {
    format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
retries = 0
[aggregates.a]
path = "/a"
{aggregate}
[aggregates.a.calls.list]
upstream = "u"
path = "/list"
[aggregates.a.calls.items]
upstream = "u"
path = "/item/{{each}}"
foreach = "list.ids"
{items}
"#,
        up.url()
    )
}

/// Regression: a `foreach` call cut by the aggregate's deadline lost the items that had
/// already come back; they keep their places, the cut item is null, failed items are named in
/// `_meta.errors`, and the composite is partial (a required `foreach` with some items failed
/// still succeeds).
#[test]
fn a_foreach_cut_by_the_deadline_keeps_finished_items_and_reports_the_failed_ones() {
    let up = Upstream::start(|req| match req.path() {
        "/list" => Reply::json(200, &json!({"ids": [1, 2, 3, 4]})),
        "/item/2" => Reply::json(200, &json!("late")).delay(Duration::from_secs(5)),
        "/item/4" => Reply::text(503, "busy"),
        p => Reply::json(200, &json!(p)),
    });
    let gw = Gateway::start(&fan_out(
        &up,
        "timeout = \"500ms\"",
        "required = true\nconcurrency = 4",
    ));
    let began = Instant::now();
    let r = get(gw.addr(), "/a");
    let took = began.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["items"], json!(["/item/1", null, "/item/3", null]), "{v}");
    assert_eq!(
        v["_meta"]["errors"],
        json!({"items": "2 of 4 items failed: [1] timeout; [3] status 503"}),
        "{v}"
    );
    assert_eq!(v["_meta"]["partial"], json!(true), "{v}");
    assert_eq!(v["_meta"]["available"]["items"], json!(true), "{v}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// `foreach` items beyond the aggregate's `max_body` fail, each with that reason, while the
/// items read before it was spent keep their values.
#[test]
fn foreach_items_past_the_aggregates_max_body_fail_with_that_reason() {
    // Each item's body is 2,992 bytes (a JSON string of 2,990 characters); the list's is 19.
    let up = Upstream::start(|req| match req.path() {
        "/list" => Reply::json(200, &json!({"ids": [1, 2, 3, 4, 5]})),
        _ => Reply::json(200, &Value::String("x".repeat(2990))),
    });
    // One at a time, so the order the budget is spent in is the items' order: 19 + 3 x 2,992
    // fits in 10 KiB, a fourth would not.
    let gw = Gateway::start(&fan_out(
        &up,
        "max_body = \"10KiB\"",
        "concurrency = 1\nselect = \"length\"",
    ));
    let r = get(gw.addr(), "/a");
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["items"], json!([2990, 2990, 2990, null, null]), "{v}");
    assert_eq!(
        v["_meta"]["errors"]["items"],
        json!(
            "2 of 5 items failed: [3] over the aggregate's max_body of 10240 bytes; \
             [4] over the aggregate's max_body of 10240 bytes"
        ),
        "{v}"
    );
    assert_eq!(v["_meta"]["partial"], json!(true), "{v}");
}

/// A required call whose body (chunked: counted as it arrives) would take the aggregate past
/// its `max_body` fails the aggregate with 503 naming it and the limit; with the default
/// `max_body` (32 MiB) the same aggregate answers.
#[test]
fn a_required_call_past_the_aggregates_max_body_is_503_naming_it() {
    let piece = vec![b' '; 8 << 10];
    let up = Upstream::start(move |req| match req.path() {
        "/small" => Reply::json(200, &json!({"ok": true})),
        _ => Reply::status(200)
            .header("Content-Type", "application/json")
            .chunked(&[&b"{\"pad\": \""[..], &piece[..], &piece[..], &b"\"}"[..]]),
    });
    let config = |budget: &str| {
        format!(
            r#"
[upstreams.u]
endpoints = ["{}"]
retries = 0
[aggregates.a]
path = "/a"
{budget}
[aggregates.a.calls.small]
upstream = "u"
path = "/small"
[aggregates.a.calls.big]
upstream = "u"
path = "/big/{{small.ok}}"
required = true
"#,
            up.url()
        )
    };
    let gw = Gateway::start(&config("max_body = \"10KiB\""));
    let r = get(gw.addr(), "/a");
    assert_error(&r, 503);
    assert!(
        r.text().contains(
            "Required call \\\"big\\\" failed: over the aggregate's max_body of 10240 bytes"
        ),
        "{r:?}"
    );
    let gw = Gateway::start(&config(""));
    let r = get(gw.addr(), "/a");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["big"]["pad"].as_str().map(str::len),
        Some(16 << 10)
    );
}

/// A result that nothing but the composite reads is copied as the upstream wrote it (its key
/// order and spacing kept, whitespace around it trimmed), a key-path `select` read off the
/// text; the composite's keys and `_meta`'s are in name order.
#[test]
fn a_result_only_the_composite_reads_is_copied_as_the_upstream_wrote_it() {
    let up = Upstream::start(|req| match req.path() {
        "/a" => Reply::status(200)
            .header("Content-Type", "application/json")
            .body(b" {\"z\": 1, \"a\": [1, 2]}\n"),
        _ => Reply::status(200)
            .header("Content-Type", "application/json")
            .body(b"{\"next\": 2, \"list\": [{\"id\": 1, \"at\": \"x\"}]}"),
    });
    let gw = Gateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[aggregates.c]
path = "/c"
[aggregates.c.calls.t]
upstream = "u"
path = "/t"
select = ".list"
[aggregates.c.calls.a]
upstream = "u"
path = "/a"
"#,
        up.url()
    ));
    let r = get(gw.addr(), "/c");
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.text();
    assert!(
        body.starts_with(r#"{"_meta":{"available":{"a":true,"t":true},"errors":{},"ms":{"a":"#),
        "{body}"
    );
    assert!(
        body.ends_with(
            r#""partial":false,"skipped":[],"truncated":[]},"a":{"z": 1, "a": [1, 2]},"t":[{"id": 1, "at": "x"}]}"#
        ),
        "{body}"
    );
    let v = r.json();
    assert_eq!(v["t"], json!([{"id": 1, "at": "x"}]));
}
