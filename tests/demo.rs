//! `dispatch demo` (BEHAVIOR.md "Command line"), the real binary on a copy of the shipped
//! `config/demo.toml` moved to free ports: it starts with its sample upstreams, the token and
//! API key it prints pass the demo's auth policies (and the upstream is told who the caller
//! is), a request without them is a 401, the rate-limited route answers 429 past its limit,
//! and the key files it wrote beside the config are gone once it exits. A config that would
//! refuse the printed credentials, or a second demo on the same config, exits 1 and leaves no
//! key file of its own (and the running demo's alone).

mod support;

use std::time::Duration;

use support::demo::{DemoConfig, DemoRun};
use support::gateway::run_dispatch;
use support::*;

/// The text between `start` and the next `'` in `command`.
fn quoted_after<'a>(command: &'a str, start: &str) -> &'a str {
    let from = command
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in {command}"))
        + start.len();
    let len = command[from..].find('\'').expect("closing quote");
    &command[from..from + len]
}

/// The token printed in the credentials block and in the tour's commands is accepted on the
/// JWT route, whose upstream is told who the caller is; without it, 401; a client's own
/// identity header never reaches the upstream; the forged token of the tour is refused.
#[test]
fn the_printed_token_passes_jwt_auth_and_the_upstream_sees_the_caller() {
    let demo = DemoRun::start();
    let token = demo.line_after("JWT (ES256");
    let commands = demo.commands_with(&["Authorization: Bearer", "/api/v1/me"]);
    assert_eq!(commands.len(), 3, "{commands:?}");
    assert_eq!(quoted_after(&commands[0], "Authorization: Bearer "), token);
    assert_eq!(quoted_after(&commands[1], "Authorization: Bearer "), token);
    let forged = quoted_after(&commands[2], "Authorization: Bearer ");
    assert_ne!(forged, token);

    let missing = get(demo.gateway, "/api/v1/me");
    assert_error(&missing, 401);
    assert_eq!(
        missing.json()["error"]["message"],
        "Missing authentication token"
    );
    assert!(
        missing
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{:?}",
        missing.headers
    );

    let me = send_request(
        demo.gateway,
        &Req::get("/api/v1/me")
            .header("Authorization", &format!("Bearer {token}"))
            .header("x-user-id", "u_2"),
    );
    assert_eq!(me.status, 200, "{}", me.text());
    let v = me.json();
    assert_eq!(v["caller"]["x-user-id"], "u_1", "{v}");
    assert_eq!(v["caller"]["x-user-plan"], "business", "{v}");
    assert_eq!(v["caller"]["x-user-roles"], "reader,billing", "{v}");
    assert_eq!(v["user"]["name"], "Ada Lovelace", "{v}");
    assert_eq!(
        v["authorizationReceived"], false,
        "strip_authorization: {v}"
    );

    let refused = send_request(
        demo.gateway,
        &Req::get("/api/v1/me").header("Authorization", &format!("Bearer {forged}")),
    );
    assert_error(&refused, 401);
    assert_eq!(refused.json()["error"]["message"], "Invalid token");
}

/// The printed API key passes the API-key route and its consumer is forwarded; an unknown
/// key is a 401. While the demo runs its key files sit beside the config; on SIGTERM it
/// drains, exits 0 and removes them.
#[test]
fn the_printed_api_key_passes_and_the_key_files_go_with_the_demo() {
    let mut demo = DemoRun::start();
    let key = demo.line_after("API key (consumer");
    let commands = demo.commands_with(&["x-api-key: ", "/partner/v1/me", "curl -s"]);
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(quoted_after(&commands[0], "x-api-key: "), key);

    let me = send_request(
        demo.gateway,
        &Req::get("/partner/v1/me").header("x-api-key", &key),
    );
    assert_eq!(me.status, 200, "{}", me.text());
    let v = me.json();
    assert_eq!(v["caller"]["x-consumer-id"], "acme-corp", "{v}");
    assert_eq!(v["caller"]["x-consumer-plan"], "partner", "{v}");
    assert_eq!(v["upstream"], "accounts-1", "{v}");

    let unknown = send_request(
        demo.gateway,
        &Req::get("/partner/v1/me").header("x-api-key", "demo_not-a-key"),
    );
    assert_error(&unknown, 401);
    assert_error(&get(demo.gateway, "/partner/v1/me"), 401);

    let keys_dir = demo.config_path().parent().unwrap().join("demo-keys");
    let keys_file = std::fs::read_to_string(keys_dir.join("api_keys.toml")).unwrap();
    assert!(!keys_file.contains(&key), "only the digest is written");
    assert!(keys_dir.join("jwt.pub.pem").is_file());

    demo.sigterm();
    let status = demo.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(!keys_dir.exists(), "demo-keys/ removed on exit");
}

/// The rate-limited route admits 5 requests (RateLimit-* counting down), then answers 429 with
/// Retry-After within the 10 s window, as the tour's loop shows.
#[test]
fn the_rate_limited_route_answers_429_after_five() {
    let demo = DemoRun::start();
    assert_eq!(
        demo.commands_with(&["for i in", "/api/v1/products"]).len(),
        1
    );
    let mut client = Client::connect(demo.gateway);
    for remaining in (0..5).rev() {
        let r = client.request(&Req::get("/api/v1/products"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("ratelimit-limit"), Some("5"));
        assert_eq!(
            r.header("ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
    }
    let limited = client.request(&Req::get("/api/v1/products"));
    let (_, retry_after) = assert_error_retry_after(&limited, 429);
    assert!(retry_after <= 10, "within the window: {retry_after}");
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
}

/// A demo config whose JWT policy would refuse the printed token does not start a tour that
/// answers 401: `dispatch demo` exits 1 naming the policy, and removes the key files it wrote.
#[test]
fn a_config_that_would_refuse_the_printed_token_does_not_start() {
    let config = DemoConfig::new();
    let issuer = "issuer = \"dispatch-demo\"";
    assert!(config.text.contains(issuer));
    let dir = TempDir::new();
    let path = dir.write(
        "demo.toml",
        &config.text.replace(issuer, "issuer = \"other\""),
    );
    let (code, stdout, stderr) = run_dispatch(
        &["demo", "--config", path.to_str().unwrap()],
        dir.path(),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.starts_with("demo: auth.demo_jwt refuses the demo's token (invalid token: "),
        "{stderr}"
    );
    assert!(!dir.path().join("demo-keys").exists(), "key files removed");
}

/// A second demo on the config of a running one cannot listen, and exits 1 before touching the
/// running demo's key files: its token and API key keep working.
#[test]
fn a_second_demo_on_the_same_config_leaves_the_first_ones_keys() {
    let demo = DemoRun::start();
    let keys = demo.config_path().parent().unwrap().join("demo-keys");
    let pem = std::fs::read(keys.join("jwt.pub.pem")).unwrap();
    let (code, _, stderr) = run_dispatch(
        &["demo", "--config", demo.config_path().to_str().unwrap()],
        demo.config_path().parent().unwrap(),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("demo: cannot start sample upstreams: "),
        "{stderr}"
    );
    assert_eq!(std::fs::read(keys.join("jwt.pub.pem")).unwrap(), pem);
    let token = demo.line_after("JWT (ES256");
    let me = send_request(
        demo.gateway,
        &Req::get("/api/v1/me").header("Authorization", &format!("Bearer {token}")),
    );
    assert_eq!(me.status, 200, "{}", me.text());
}

/// The tour's cached route: on one connection (one worker's shard) the first request is a
/// MISS and the next a HIT with `Age` and the same body; the tour's purge through the admin
/// API makes the next one a MISS again.
#[test]
fn the_cached_route_hits_after_a_miss_and_the_admin_purge_empties_it() {
    let demo = DemoRun::start();
    let tour = demo.commands_with(&["/api/v1/catalog"]);
    assert_eq!(tour.len(), 2, "{tour:?}");
    assert!(tour[1].contains("DELETE") && tour[1].contains("/cache?rule=demo_catalog"));
    let mut client = Client::connect(demo.gateway);
    let miss = client.request(&Req::get("/api/v1/catalog"));
    assert_eq!(miss.status, 200, "{}", miss.text());
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    let hit = client.request(&Req::get("/api/v1/catalog"));
    assert_eq!(hit.header("x-cache"), Some("HIT"), "{:?}", hit.headers);
    assert!(hit.header("age").is_some(), "{:?}", hit.headers);
    assert_eq!(hit.body, miss.body);
    let purged = send_request(demo.admin, &Req::new("DELETE", "/cache?rule=demo_catalog"));
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert_eq!(purged.json()["purged"][0], "demo_catalog");
    let again = client.request(&Req::get("/api/v1/catalog"));
    assert_eq!(again.header("x-cache"), Some("MISS"), "{:?}", again.headers);
}

/// The tour's aggregates: the dashboard is one composite of its three calls with `_meta`
/// (errors, skipped and truncated present though empty); the order graph follows the order to
/// its user, products, shipment and reviews (one per product id, in the ids' order), and calls
/// loyalty because u_1's plan is business. The tour prints `dispatch explain` for the graph.
#[test]
fn the_tours_aggregates_answer_composites_with_meta() {
    let demo = DemoRun::start();
    assert_eq!(demo.commands_with(&["/api/v1/dashboard/u_1"]).len(), 1);
    assert_eq!(demo.commands_with(&["/api/v1/orders/o_1/details"]).len(), 1);
    assert!(demo
        .stdout()
        .contains("dispatch explain --config config/demo.toml order_details"));

    let dashboard = get(demo.gateway, "/api/v1/dashboard/u_1");
    assert_eq!(dashboard.status, 200, "{}", dashboard.text());
    let v = dashboard.json();
    assert_eq!(v["profile"]["name"], "Ada Lovelace", "{v}");
    assert_eq!(v["balance"]["available"], 1250.5, "{v}");
    let recent = v["recentTransactions"]
        .as_array()
        .expect("select .transactions");
    assert_eq!(recent.len(), 3, "limit=3: {v}");
    assert_eq!(recent[0]["id"], "t_1", "{v}");
    assert_eq!(v["_meta"]["partial"], false, "{v}");
    assert_eq!(v["_meta"]["errors"], serde_json::json!({}), "{v}");
    assert_eq!(v["_meta"]["skipped"], serde_json::json!([]), "{v}");
    assert_eq!(v["_meta"]["truncated"], serde_json::json!([]), "{v}");

    let order = get(demo.gateway, "/api/v1/orders/o_1/details");
    assert_eq!(order.status, 200, "{}", order.text());
    let v = order.json();
    assert_eq!(v["order"]["id"], "o_1", "{v}");
    assert_eq!(v["user"]["id"], "u_1", "{v}");
    assert_eq!(v["products"][1]["id"], "p_2", "{v}");
    assert_eq!(v["shipment"]["orderId"], "o_1", "{v}");
    let reviews: Vec<&serde_json::Value> = v["reviews"]
        .as_array()
        .expect("reviews is an array")
        .iter()
        .map(|r| &r["productId"])
        .collect();
    assert_eq!(reviews, ["p_1", "p_2"], "in the ids' order: {v}");
    assert_eq!(v["loyalty"]["userId"], "u_1", "business plan: {v}");
    assert_eq!(v["loyalty"]["tier"], "gold", "{v}");
    assert_eq!(v["_meta"]["skipped"], serde_json::json!([]), "{v}");
}

/// The tour's BFF clients: under /mobile/v1 a request is the mobile client's and needs the
/// token (401 without), and its answer is compacted by the response transform (and loses
/// X-Internal-Trace); `x-client-type: web` reaches the web route's full answer; a request of
/// no client reaches neither route.
#[test]
fn the_tours_bff_clients_by_prefix_and_header() {
    let demo = DemoRun::start();
    let token = demo.line_after("JWT (ES256");
    let with_token = demo.commands_with(&["Authorization: Bearer", "/mobile/v1/transactions"]);
    assert_eq!(with_token.len(), 1, "{with_token:?}");
    assert_eq!(
        quoted_after(&with_token[0], "Authorization: Bearer "),
        token
    );
    assert_eq!(demo.commands_with(&["x-client-type: web"]).len(), 1);

    let missing = get(demo.gateway, "/mobile/v1/transactions");
    assert_error(&missing, 401);

    let mobile = send_request(
        demo.gateway,
        &Req::get("/mobile/v1/transactions").header("Authorization", &format!("Bearer {token}")),
    );
    assert_eq!(mobile.status, 200, "{}", mobile.text());
    assert_eq!(
        mobile.header("x-internal-trace"),
        None,
        "{:?}",
        mobile.headers
    );
    let v = mobile.json();
    assert_eq!(
        v["transactions"][0],
        serde_json::json!({"id": "t_1", "amount": 42.5, "merchant": "Coffee Lab", "date": "2026-11-20T09:15:00Z"}),
        "{v}"
    );
    assert_eq!(v.as_object().unwrap().len(), 1, "compact: {v}");

    let web = send_request(
        demo.gateway,
        &Req::get("/transactions").header("x-client-type", "web"),
    );
    assert_eq!(web.status, 200, "{}", web.text());
    let v = web.json();
    assert_eq!(v["transactions"][0]["merchantName"], "Coffee Lab", "{v}");
    assert_eq!(v["upstream"], "transactions-1", "{v}");
    assert!(
        web.header("x-internal-trace").is_some(),
        "{:?}",
        web.headers
    );

    assert_error(&get(demo.gateway, "/transactions"), 404);
}

/// The tour's v1 transfer: the request transform renames the body for the v2 API and stamps
/// `initiatedAt` (the sample v2 service answers 400 without it, so its 201 shows it came), and
/// the response transform renames the answer back; a body that is not JSON is the gateway's
/// 400.
#[test]
fn the_tours_v1_transfer_is_transformed_both_ways_and_non_json_is_400() {
    let demo = DemoRun::start();
    let tour = demo.commands_with(&["/api/v1/transfers"]);
    assert_eq!(tour.len(), 2, "{tour:?}");
    let body = quoted_after(&tour[0], "-d '");
    let created = send_request(
        demo.gateway,
        &Req::post("/api/v1/transfers", body.as_bytes()).header("Content-Type", "application/json"),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("x-seen-path"), Some("/v2/transfers"));
    assert_eq!(
        created.json(),
        serde_json::json!({
            "id": "tr_3003",
            "from_account": "a_1",
            "to_account": "a_2",
            "amount": 25,
            "status": "completed",
            "completed_at": "2026-12-06T12:00:00Z"
        })
    );

    let not_json = quoted_after(&tour[1], "-d '");
    let refused = send_request(
        demo.gateway,
        &Req::post("/api/v1/transfers", not_json.as_bytes()),
    );
    assert_error(&refused, 400);
    assert_eq!(
        refused.header("x-upstream"),
        None,
        "never reached the upstream"
    );
}

/// The demo's TLS listener serves the tour's routes with the certificate it made at start:
/// the printed `curl --cacert` line's equivalent, a rustls client trusting that file alone.
#[test]
fn the_tls_listener_serves_with_the_certificate_made_at_start() {
    let demo = DemoRun::start();
    let cert = demo
        .config_path()
        .parent()
        .unwrap()
        .join("demo-keys/tls.crt");
    // Printed with the tour, possibly in a later read of the pipe.
    let line = format!("curl -s --cacert {} https://localhost:", cert.display());
    assert!(
        wait_until(Duration::from_secs(5), || demo.stdout().contains(&line)),
        "no {line:?} in:\n{}",
        demo.stdout()
    );
    let pem = std::fs::read(&cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for der in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
    {
        roots.add(der.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut c =
        support::tls_client::TlsClient::connect(demo.tls, std::sync::Arc::new(config), "localhost");
    let r = c.get("/users/u_1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("u_1"), "{}", r.text());
}
