//! Transforms end to end (issue 11, `[transforms.*]`): the real gateway in front of a real
//! upstream over loopback. The spec's `transactions_compact` (response) and
//! `transfer_v1_to_v2` (request, response, rewrite to `/v2/transfers`, `$now`), header edits on
//! both sides, the refusals (non-JSON bodies both ways, failing programs, bodies over
//! `max_body`, an undecodable coding), gzip and br upstream answers decoded, chunked request
//! bodies, HEAD, non-2xx answers passed through, keep-alive after each case, and retries of a
//! transformed POST.

mod support;

use std::io::Write;

use serde_json::{json, Value};
use support::*;

const COMPACT: &str =
    "{transactions: [.transactions[] | {id, amount, merchant: .merchantName, date: .createdAt}]}";
const V1_TO_V2: &str = "{sourceAccountId: .from_account, destinationAccountId: .to_account, transferAmount: {value: .amount, currency: \"USD\"}, initiatedAt: $now}";
const V2_TO_V1: &str = "{id: .transferId, from_account: .sourceAccountId, to_account: .destinationAccountId, amount: .transferAmount.value, status, completed_at: .completedAt}";

/// What the upstream's transactions look like (the fields the compact shape drops included).
fn transactions() -> Value {
    json!({"transactions": [
        {"id": "t1", "amount": 1250, "merchantName": "Cafe", "createdAt": "2026-12-01", "mcc": "5814"},
        {"id": "t2", "amount": 99, "merchantName": "Books", "createdAt": "2026-12-02", "mcc": "5942"}
    ], "cursor": "next"})
}

fn compacted() -> Value {
    json!({"transactions": [
        {"id": "t1", "amount": 1250, "merchant": "Cafe", "date": "2026-12-01"},
        {"id": "t2", "amount": 99, "merchant": "Books", "date": "2026-12-02"}
    ]})
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn brotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(bytes).unwrap();
    }
    out
}

/// The upstream: `/transactions/<variant>` answers the transactions in a given shape;
/// `/v2/transfers` answers a v2 transfer built from what it received.
fn upstream() -> Upstream {
    Upstream::start(|req| {
        let body = transactions().to_string();
        let ok = |r: Reply| {
            r.header("X-Internal-Trace", "trace-1")
                .header("ETag", "\"v7\"")
        };
        match req.path() {
            "/transactions" | "/transactions/plain" => ok(Reply::json(200, &transactions())),
            "/transactions/chunked" => ok(Reply::status(200)
                .header("Content-Type", "application/json")
                .chunked(&[&body.as_bytes()[..10], &body.as_bytes()[10..]])),
            "/transactions/gzip" => ok(Reply::status(200)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "gzip")
                .body(&gzip(body.as_bytes()))),
            "/transactions/br" => ok(Reply::status(200)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "br")
                .body(&brotli(body.as_bytes()))),
            "/transactions/zstd" => ok(Reply::status(200)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "zstd")
                .body(b"\x28\xb5\x2f\xfd")),
            "/transactions/html" => ok(Reply::text(200, "<html>maintenance</html>")),
            "/transactions/wrong" => ok(Reply::json(200, &json!({"transactions": "none"}))),
            "/transactions/big" => {
                let many: Vec<Value> = (0..200)
                    .map(|i| json!({"id": i, "amount": i, "merchantName": "m", "createdAt": "d"}))
                    .collect();
                ok(Reply::json(200, &json!({ "transactions": many })))
            }
            "/transactions/missing" => ok(Reply::json(404, &json!({"error": "no such account"}))),
            "/v2/transfers" => {
                let got: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                Reply::json(
                    201,
                    &json!({
                        "transferId": "tr_1",
                        "sourceAccountId": got["sourceAccountId"],
                        "destinationAccountId": got["destinationAccountId"],
                        "transferAmount": got["transferAmount"],
                        "status": "completed",
                        "completedAt": got["initiatedAt"],
                    }),
                )
                .header("X-Internal-Trace", "trace-2")
            }
            _ => Reply::json(404, &json!({"error": "unknown"})),
        }
    })
}

fn config(endpoints: &str) -> String {
    format!(
        r#"
[server.limits]
max_body = "2KiB"

[upstreams.accounts]
endpoints = {endpoints}
retries = 2

[routes.transfers_v1]
paths = ["=/api/v1/transfers"]
methods = ["POST"]
upstream = "accounts"
rewrite = "/v2/transfers"
transform = "transfer_v1_to_v2"

[routes.transactions]
paths = ["/transactions"]
upstream = "accounts"
transform = "transactions_compact"

[transforms.transactions_compact]
response = '{COMPACT}'
response_headers = {{ set = {{ "x-shape" = "compact" }}, remove = ["x-internal-trace"] }}

[transforms.transfer_v1_to_v2]
request = '{V1_TO_V2}'
response = '{V2_TO_V1}'
request_headers = {{ set = {{ "x-api-version" = "2" }}, remove = ["x-debug"] }}
"#
    )
}

fn gateway(up: &Upstream) -> Gateway {
    Gateway::start(&config(&endpoints(&[up])))
}

fn transfer() -> Value {
    json!({"from_account": "A-1", "to_account": "B-2", "amount": 4200})
}

/// The connection still serves a request after the one before it.
fn assert_kept_alive(c: &mut Client) {
    let again = c.request(&Req::get("/transactions"));
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json(), compacted());
}

// ---- the spec's transforms ----

/// `transactions_compact`: the upstream's 2xx body reshaped, re-framed with Content-Length and
/// the JSON type, the strong ETag weakened, the response header edits applied.
#[test]
fn transactions_compact_reshapes_the_response() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/transactions"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), compacted());
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(!r.has_header("transfer-encoding"));
    r.assert_content_type("application/json");
    assert_eq!(r.header("etag"), Some("W/\"v7\""));
    assert_eq!(r.header("x-shape"), Some("compact"));
    assert!(!r.has_header("x-internal-trace"), "{:?}", r.headers);
    assert!(r.has_header("x-request-id"));
    assert_kept_alive(&mut c);
}

/// `transfer_v1_to_v2`: the v1 body becomes the v2 body upstream (at the rewritten path, with
/// `$now` as RFC 3339 UTC, Content-Length recomputed, the request header edits), and the v2
/// answer becomes v1 for the client.
#[test]
fn transfer_v1_to_v2_transforms_both_ways_with_rewrite_and_now() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let before = now_millis();
    let r = c.request(
        &Req::json("POST", "/api/v1/transfers", &transfer())
            .header("X-Debug", "1")
            .header("X-Api-Version", "1"),
    );
    let after = now_millis();
    assert_eq!(r.status, 201, "{}", r.text());

    let sent = up.last_request();
    assert_eq!(sent.target, "/v2/transfers");
    let v2: Value = serde_json::from_slice(&sent.body).unwrap();
    let now = v2["initiatedAt"]
        .as_str()
        .expect("initiatedAt is a string")
        .to_string();
    let at = rfc3339_utc_millis(&now).unwrap_or_else(|| panic!("not RFC 3339 UTC: {now}"));
    assert!(before - 1000 <= at && at <= after + 1000, "{now}");
    assert_eq!(
        v2,
        json!({"sourceAccountId": "A-1", "destinationAccountId": "B-2",
               "transferAmount": {"value": 4200, "currency": "USD"}, "initiatedAt": now})
    );
    assert_eq!(
        sent.header("content-length"),
        Some(sent.body.len().to_string().as_str())
    );
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header_all("x-api-version"), ["2"]);
    assert!(!sent.has_header("x-debug"));

    assert_eq!(
        r.json(),
        json!({"id": "tr_1", "from_account": "A-1", "to_account": "B-2", "amount": 4200,
               "status": "completed", "completed_at": now})
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_kept_alive(&mut c);
}

/// A chunked request body is read whole, transformed and sent with Content-Length.
#[test]
fn a_chunked_request_body_goes_up_with_a_content_length() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let body = transfer().to_string();
    let (a, b) = body.as_bytes().split_at(7);
    let r = c.request(
        &Req::new("POST", "/api/v1/transfers")
            .header("Content-Type", "application/json")
            .chunked(&[a, b]),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let sent = up.last_request();
    assert!(!sent.chunked);
    assert_eq!(
        sent.header("content-length"),
        Some(sent.body.len().to_string().as_str())
    );
    let v2: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(v2["transferAmount"]["value"], 4200);
    assert_kept_alive(&mut c);
}

// ---- refusals ----

/// A request body that is not JSON (or none at all) is a 400 JSON error; nothing goes up.
#[test]
fn a_non_json_request_body_is_a_400() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::post("/api/v1/transfers", b"from=A-1&to=B-2"));
    assert_error(&r, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Request body is not JSON"));
    let r = c.request(&Req::post("/api/v1/transfers", b""));
    assert_error(&r, 400);
    assert_eq!(up.request_count(), 0);
    assert_kept_alive(&mut c);
}

/// A request program that fails on its input is a 400 naming the transform's failure.
#[test]
fn a_failing_request_program_is_a_400() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::post("/api/v1/transfers", b"[1, 2]"));
    assert_error(&r, 400);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("Request transform failed"), "{message}");
    assert_eq!(up.request_count(), 0);
    assert_kept_alive(&mut c);
}

/// A response that is not JSON is a 502 `Upstream response is not JSON`.
#[test]
fn a_non_json_response_is_a_502() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/transactions/html"));
    assert_error(&r, 502);
    assert_eq!(
        r.json()["error"]["message"],
        "Upstream response is not JSON"
    );
    assert_kept_alive(&mut c);
}

/// A response program that fails on the upstream's JSON is a 502; its detail stays in the log.
#[test]
fn a_failing_response_program_is_a_502() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/transactions/wrong"));
    assert_error(&r, 502);
    assert_eq!(r.json()["error"]["message"], "Response transform failed");
    assert_kept_alive(&mut c);
}

/// Bodies over `max_body`: a request's is a 413 (Content-Length or chunked), a response's a
/// 502.
#[test]
fn bodies_over_max_body_are_refused_both_ways() {
    let up = upstream();
    let gw = gateway(&up);
    let big = json!({"from_account": "x".repeat(3000), "to_account": "B", "amount": 1}).to_string();
    let r = send_request(gw.addr(), &Req::post("/api/v1/transfers", big.as_bytes()));
    assert_error(&r, 413);
    let (a, b) = big.as_bytes().split_at(1500);
    let r = send_request(
        gw.addr(),
        &Req::new("POST", "/api/v1/transfers").chunked(&[a, b]),
    );
    assert_error(&r, 413);
    assert_eq!(up.request_count(), 0);

    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/transactions/big"));
    assert_error(&r, 502);
    assert_eq!(
        r.json()["error"]["message"],
        "Upstream response too large to transform"
    );
    assert_kept_alive(&mut c);
}

// ---- codings, HEAD, other statuses ----

/// gzip and br answers are decoded, transformed and sent identity-encoded; the upstream was
/// asked for the codings a transform can decode.
#[test]
fn gzip_and_br_responses_are_decoded_and_transformed() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    for path in [
        "/transactions/gzip",
        "/transactions/br",
        "/transactions/chunked",
    ] {
        let r = c.request(&Req::get(path).header("Accept-Encoding", "zstd"));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json(), compacted(), "{path}");
        assert!(!r.has_header("content-encoding"), "{path}: {:?}", r.headers);
        assert_eq!(
            up.last_request().header("accept-encoding"),
            Some("gzip, br")
        );
    }
    assert_kept_alive(&mut c);
}

/// A coding no transform can decode is a 502, not an untransformed body the client would
/// read as the compact shape.
#[test]
fn an_undecodable_coding_is_a_502() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/transactions/zstd"));
    assert_error(&r, 502);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("Content-Encoding"), "{message}");
    assert_kept_alive(&mut c);
}

/// A HEAD answer carries no body to transform: no Content-Length (the transformed length is
/// unknown), the header edits applied.
#[test]
fn head_on_a_transformed_route_has_no_length() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::head("/transactions"));
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(!r.has_header("content-length"), "{:?}", r.headers);
    assert!(!r.has_header("x-internal-trace"));
    assert_eq!(r.header("x-shape"), Some("compact"));
    assert_kept_alive(&mut c);
}

/// A non-2xx answer passes through untransformed; the response header edits still apply.
#[test]
fn non_2xx_responses_pass_through_untransformed() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr());
    let r = c.request(&Req::get("/transactions/missing"));
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": "no such account"}));
    assert_eq!(r.header("etag"), Some("\"v7\""));
    assert!(!r.has_header("x-internal-trace"));
    assert_eq!(r.header("x-shape"), Some("compact"));
    assert_kept_alive(&mut c);
}

// ---- retries ----

/// A transformed POST is held whole: when its first attempt cannot connect, the retry sends
/// the transformed bytes to the next endpoint.
#[test]
fn a_transformed_post_is_retried_on_connect_failure() {
    let up = upstream();
    let gw = Gateway::start(&config(&format!("[\"{}\", \"{}\"]", dead_url(), up.url())));
    let mut c = Client::connect(gw.addr());
    for _ in 0..4 {
        let r = c.request(&Req::json("POST", "/api/v1/transfers", &transfer()));
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["amount"], 4200);
    }
    assert_eq!(up.request_count(), 4);
    for sent in up.requests() {
        let v2: Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(v2["sourceAccountId"], "A-1");
    }
}

// ---- dispatch check ----

/// `dispatch check` shows each route's transform, and a program that does not compile is an
/// error at its failing token: the file's line and column inside the program's string.
#[test]
fn check_shows_transforms_and_points_into_a_broken_program() {
    let up = upstream();
    let out = check(&config(&endpoints(&[&up])));
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout
            .contains("transform transfer_v1_to_v2 (request + response)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("transform transactions_compact (response)"),
        "{}",
        out.stdout
    );

    let broken = config(&endpoints(&[&up])).replace(
        "response = '{transactions:",
        "response = '{transactions: | ",
    );
    let out = check(&broken);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = broken
        .lines()
        .position(|l| l.starts_with("response = '{transactions: |"))
        .unwrap()
        + 1;
    // `response = '` is 12 characters; the `|` is the program's byte 15.
    let at = format!(
        "{}:{line}:28: transforms.transactions_compact.response: ",
        out.config_path.display()
    );
    assert!(
        out.all().contains(&at),
        "expected {at:?} in:\n{}",
        out.all()
    );
    assert!(out.all().contains("expected term"), "{}", out.all());
}
