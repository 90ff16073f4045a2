//! The gateway's own cost of an aggregate (issue 11), against in-memory upstreams that answer
//! at once: what is left is planning, rendering paths and heads, the futures' scheduling, JSON
//! parsing, jq (`select`, `when`, `shape`) and writing the composite. The sockets are the
//! kernel's, which perf/compare.sh's aggregate scenario measures.
//!
//! - `aggregate/dashboard`: the reference's dashboard exactly as perf/compare.sh's aggregate
//!   scenario runs it (perf/peers/dispatch-aggregate.toml), over the bodies of
//!   perf/peers/nginx-upstream.conf: the composite's own work in the CPU bar of issue 11.
//! - `aggregate/compose_4_shape`: 4 independent calls (about 200-byte JSON answers), one
//!   `select`, and a `shape` over the 4 results: the dashboard's work plus a shape.
//! - `aggregate/run_6_graph`: the reference's `order_details` graph (6 calls, two levels, a
//!   2-item `foreach`, a `when`, a `shape`): per-call overhead is this over 7 requests.
//! - `aggregate/plan_6_graph`: compiling that graph (done once at load, shown for scale).

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use dispatch::compose::aggregate::run::{
    execute, Answer, CallError, CallInfo, Reply, Request, Transport,
};
use dispatch::compose::aggregate::{AggregateSpec, CallSpec, Compiled, Plan};

const CONFIG: &str = r#"
[upstreams.users]
endpoints = ["http://127.0.0.1:9"]
[upstreams.accounts]
endpoints = ["http://127.0.0.1:9"]
[upstreams.transactions]
endpoints = ["http://127.0.0.1:9"]

[aggregates.dashboard]
path = "/api/v1/dashboard/:userId"
methods = ["GET"]
timeout = "3s"
[aggregates.dashboard.calls.profile]
upstream = "users"
path = "/users/{userId}"
required = true
timeout = "500ms"
[aggregates.dashboard.calls.balance]
upstream = "accounts"
path = "/accounts/{userId}/balance"
default = { currency = "USD", available = 0, pending = 0 }
[aggregates.dashboard.calls.recentTransactions]
upstream = "transactions"
path = "/transactions?userId={userId}&limit=5"
select = ".transactions"
default = []
timeout = "2s"

[aggregates.four]
path = "/four/:userId"
shape = '{user: .profile.name, balance: .balance.available, txs: .transactions, prefs}'
[aggregates.four.calls.profile]
upstream = "users"
path = "/users/{userId}"
required = true
[aggregates.four.calls.balance]
upstream = "accounts"
path = "/accounts/{userId}/balance"
[aggregates.four.calls.transactions]
upstream = "transactions"
path = "/transactions?userId={userId}&limit=5"
select = ".transactions"
[aggregates.four.calls.prefs]
upstream = "users"
path = "/prefs/{userId}"

[aggregates.order_details]
path = "/orders/:orderId/details"
shape = '{order, user, products, shipment, reviews}'
[aggregates.order_details.calls.order]
upstream = "accounts"
path = "/orders/{orderId}"
required = true
[aggregates.order_details.calls.user]
upstream = "users"
path = "/users/{order.userId}"
required = true
[aggregates.order_details.calls.products]
upstream = "users"
path = "/products?ids={order.productIds}"
[aggregates.order_details.calls.shipment]
upstream = "transactions"
path = "/shipments/{orderId}"
[aggregates.order_details.calls.reviews]
upstream = "users"
path = "/reviews/{each}"
foreach = "order.productIds"
[aggregates.order_details.calls.loyalty]
upstream = "accounts"
path = "/loyalty/{user.id}"
when = '.user.plan == "business"'
"#;

/// Answers every request at once with a body chosen by the path's first segment. A user
/// `u_1` gets the bodies of perf/peers/nginx-upstream.conf.
struct Memory;

const PERF_USER: &[u8] = br#"{"id":"u_1","name":"Ada Lovelace","email":"ada@example.com","plan":"business","createdAt":"2026-01-15T09:30:00Z","roles":["admin","billing"],"address":{"city":"London","country":"GB"},"preferences":{"language":"en","timezone":"Europe/London","newsletter":false},"upstream":"perf-upstream-1"}"#;
const PERF_BALANCE: &[u8] = br#"{"userId":"u_1","currency":"USD","available":1250.5,"pending":20,"updatedAt":"2026-12-06T08:00:00Z"}"#;
const PERF_TRANSACTIONS: &[u8] = br#"{"userId":"u_1","transactions":[{"id":"t_105","amount":-42.5,"currency":"USD","merchantName":"Babbage & Co","createdAt":"2026-12-05T18:20:00Z"},{"id":"t_104","amount":-7.25,"currency":"USD","merchantName":"Engine Cafe","createdAt":"2026-12-05T08:05:00Z"},{"id":"t_103","amount":1200,"currency":"USD","merchantName":"Payroll","createdAt":"2026-12-04T09:00:00Z"},{"id":"t_102","amount":-89.99,"currency":"USD","merchantName":"Loom Supplies","createdAt":"2026-12-03T14:45:00Z"},{"id":"t_101","amount":-15,"currency":"USD","merchantName":"Card Reader Repairs","createdAt":"2026-12-02T11:30:00Z"}],"next":"t_100"}"#;

impl Transport for Memory {
    async fn call(&self, _: CallInfo<'_>, head: Vec<u8>, _: Instant) -> Result<Reply, CallError> {
        let path = &head[4..];
        let body: &[u8] = if path.starts_with(b"/users/u_1 ") {
            PERF_USER
        } else if path.starts_with(b"/accounts/u_1/") {
            PERF_BALANCE
        } else if path.starts_with(b"/transactions?userId=u_1&") {
            PERF_TRANSACTIONS
        } else if path.starts_with(b"/users/") {
            br#"{"id":"u9","name":"Ada Lovelace","email":"ada@example.com","plan":"business","created":"2024-01-02T03:04:05Z","roles":["admin","dev"]}"#
        } else if path.starts_with(b"/accounts/") {
            br#"{"currency":"USD","available":1234.5,"pending":12,"updated":"2026-12-06T10:00:00Z"}"#
        } else if path.starts_with(b"/transactions") {
            br#"{"transactions":[{"id":1,"amount":5.5,"to":"shop"},{"id":2,"amount":12,"to":"cafe"}],"total":2}"#
        } else if path.starts_with(b"/orders/") {
            br#"{"id":7,"userId":"u9","productIds":["p1","p2"],"total":99.5,"status":"paid"}"#
        } else if path.starts_with(b"/products") {
            br#"[{"id":"p1","name":"Lamp","price":40},{"id":"p2","name":"Desk","price":59.5}]"#
        } else {
            br#"{"ok":true,"items":[1,2,3],"note":"a short answer of some fields"}"#
        };
        Ok(Reply {
            status: 200,
            body: body.to_vec(),
        })
    }
}

fn aggregate<'c>(cfg: &'c dispatch::config::model::Config, name: &str) -> &'c Compiled {
    &cfg.aggregates
        .iter()
        .find(|a| a.name == name)
        .expect("aggregate")
        .compiled
}

fn bench(c: &mut Criterion) {
    let cfg = dispatch::router::load_config_str(CONFIG, Path::new("bench.toml")).expect("config");
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime");
    let fields = b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Request-Id: 0123456789abcdef\r\nVia: 1.1 dispatch\r\nAccept: application/json\r\n";
    let run = |rt: &mut monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>,
               c: &Compiled,
               params: &[(String, String)]| {
        let req = Request {
            params,
            host: Some(b"api.example.com"),
            fields,
        };
        let answer = rt.block_on(execute(c, &req, &Memory));
        assert!(matches!(answer, Answer::Composite(_)), "{answer:?}");
        answer
    };

    let dashboard = aggregate(&cfg, "dashboard");
    let perf_user = [("userId".to_string(), "u_1".to_string())];
    let answer = run(&mut rt, dashboard, &perf_user);
    assert!(
        matches!(&answer, Answer::Composite(body) if body.contains("Babbage") && body.contains("1250.5") && body.contains("\"partial\":false")),
        "{answer:?}"
    );
    c.bench_function("aggregate/dashboard", |b| {
        b.iter(|| black_box(run(&mut rt, dashboard, &perf_user)))
    });

    let four = aggregate(&cfg, "four");
    let user = [("userId".to_string(), "u9".to_string())];
    c.bench_function("aggregate/compose_4_shape", |b| {
        b.iter(|| black_box(run(&mut rt, four, &user)))
    });

    let graph = aggregate(&cfg, "order_details");
    let order = [("orderId".to_string(), "7".to_string())];
    c.bench_function("aggregate/run_6_graph", |b| {
        b.iter(|| black_box(run(&mut rt, graph, &order)))
    });

    let spec = AggregateSpec {
        name: "order_details".into(),
        timeout: std::time::Duration::from_secs(3),
        calls: graph
            .plan
            .calls
            .iter()
            .map(|c| CallSpec {
                name: c.name.clone(),
                upstream: c.upstream.clone(),
                path: path_text(c),
                required: c.required,
                foreach: c.foreach.as_ref().map(|_| "order.productIds".to_string()),
                when: c.when.clone(),
                ..CallSpec::default()
            })
            .collect(),
    };
    c.bench_function("aggregate/plan_6_graph", |b| {
        b.iter(|| black_box(Plan::compile(black_box(&spec)).expect("plan")))
    });
}

/// A call's path template written back from its segments.
fn path_text(c: &dispatch::compose::aggregate::Call) -> String {
    use dispatch::compose::aggregate::Segment;
    let mut out = String::new();
    for s in &c.segments {
        match s {
            Segment::Literal(t) => out.push_str(t),
            Segment::Param(p) => out.push_str(&format!("{{{p}}}")),
            Segment::Result { name, fields, .. } => {
                out.push('{');
                out.push_str(name);
                for f in fields {
                    out.push('.');
                    out.push_str(f);
                }
                out.push('}');
            }
            Segment::Each(fields) => {
                out.push_str("{each");
                for f in fields {
                    out.push('.');
                    out.push_str(f);
                }
                out.push('}');
            }
        }
    }
    out
}

criterion_group!(benches, bench);
criterion_main!(benches);
