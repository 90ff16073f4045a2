//! A transform's cost on the request path (issue 11), through the gateway's own functions.
//!
//! What is measured, per request, on a 10 KiB JSON body (40 transactions in the upstream's
//! shape) with the spec's `transactions_compact` program:
//! - `transform/body_10k`: what the proxy stage does with a collected response body:
//!   `compose::transform::response_body` (serde_json's parse straight into jq's value, the
//!   program's run, the output serialised back), `$now` bound as each request binds it.
//! - `transform/run_10k`: the program run alone on an already-parsed `serde_json::Value`
//!   (`Program::run`: the value crosses into jq's value and back; no text parsed or written;
//!   the input is cloned each iteration, since `run` takes it by value).
//! - `transform/select_10k`: an aggregate's `select = ".transactions"` on the parsed body: a
//!   path-only program, which `Program::run` walks on the `serde_json::Value` itself; and
//!   `transform/select_10k_jaq`, the same path written `(.transactions)`, which jaq runs (what
//!   every `select` cost before the fast path). Both clone the input each iteration, as
//!   `run_10k` does; `transform/clone_10k` is that clone alone.
//!
//! The gateway's binary runs on mimalloc (src/main.rs); so does this bench, or the numbers
//! would be glibc malloc's (half of jaq's time is allocation).
//!
//! Nothing here does I/O: reading the body and writing the answer are the proxy stage's, which
//! perf/compare.sh measures.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use dispatch::compose::jq::{now_rfc3339, Program};
use dispatch::compose::transform::response_body;
use serde_json::{json, Value};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const COMPACT: &str =
    "{transactions: [.transactions[] | {id, amount, merchant: .merchantName, date: .createdAt}]}";

/// About 10 KiB of transactions in the upstream's shape.
fn body() -> Vec<u8> {
    let transactions: Vec<Value> = (0..40)
        .map(|i| {
            json!({
                "id": format!("tx_{i:08}"), "amount": 1000 + i, "currency": "USD",
                "merchantName": "Corner Coffee Roasters", "merchantCategory": "5814",
                "createdAt": "2026-12-06T15:04:05.123Z", "status": "settled",
                "description": "Card payment, contactless", "internal": {"ledger": "L-42", "batch": i}
            })
        })
        .collect();
    let body = serde_json::to_vec(&json!({"transactions": transactions, "cursor": "abc"})).unwrap();
    assert!(
        (9 * 1024..=12 * 1024).contains(&body.len()),
        "{} bytes",
        body.len()
    );
    body
}

fn transform(c: &mut Criterion) {
    let program = Program::compile(COMPACT, &["now"]).expect("the spec's program compiles");
    let body = body();
    let value: Value = serde_json::from_slice(&body).unwrap();
    let mut g = c.benchmark_group("transform");
    g.bench_function("body_10k", |b| {
        b.iter(|| response_body(&program, black_box(&body)).expect("transforms"))
    });
    let now = [Value::String(now_rfc3339())];
    g.bench_function("run_10k", |b| {
        b.iter(|| program.run(black_box(value.clone()), &now).expect("runs"))
    });
    let select = Program::compile(".transactions", &[]).expect("compiles");
    let select_jaq = Program::compile("(.transactions)", &[]).expect("compiles");
    assert_eq!(
        select.run(value.clone(), &[]),
        select_jaq.run(value.clone(), &[])
    );
    g.bench_function("select_10k", |b| {
        b.iter(|| select.run(black_box(value.clone()), &[]).expect("runs"))
    });
    g.bench_function("select_10k_jaq", |b| {
        b.iter(|| select_jaq.run(black_box(value.clone()), &[]).expect("runs"))
    });
    g.bench_function("clone_10k", |b| b.iter(|| black_box(value.clone())));
    g.finish();
}

criterion_group!(benches, transform);
criterion_main!(benches);
