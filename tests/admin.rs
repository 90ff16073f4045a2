//! The admin API beyond `/health` and `/metrics` (BEHAVIOR.md "Admin API"): `GET /routes`
//! (the compiled table, in precedence order), `GET /upstreams`, and the JSON errors for unknown
//! endpoints and wrong methods.

mod support;

use std::time::Duration;
use support::*;

fn config(up: &Upstream) -> String {
    format!(
        r#"
[upstreams.app]
endpoints = ["{url}", {{ url = "http://127.0.0.1:9", weight = 3 }}]
balance = "least_request"
retries = 2

[routes.general]
paths = ["/api"]
upstream = "app"

[routes.specific]
paths = ["/api/users/:id"]
methods = ["GET"]
upstream = "app"
strip_prefix = true
timeout = "2s"
rate_limits = ["roomy"]

[rate_limits.roomy]
algorithm = "token_bucket"
key = "ip"
rate = 1000
burst = 1000

[routes.canary]
paths = ["/api"]
headers = {{ "x-canary" = "1" }}
upstream = "app"
"#,
        url = up.url()
    )
}

#[test]
fn routes_lists_the_compiled_table_in_precedence_order() {
    let up = Upstream::echo();
    let gw = Gateway::start(&config(&up));
    let r = get(gw.admin_addr(), "/routes");
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    let rows = v["routes"].as_array().expect("routes array");
    let names: Vec<&str> = rows.iter().map(|r| r["route"].as_str().unwrap()).collect();
    // Longer pattern first; on the same pattern, the route with a header predicate first.
    assert_eq!(names, vec!["specific", "canary", "general"], "{v}");
    let specific = &rows[0];
    assert_eq!(specific["pattern"], "/api/users/:id", "{v}");
    assert_eq!(
        specific["methods"],
        serde_json::json!(["GET", "HEAD"]),
        "{v}"
    );
    assert_eq!(specific["strip_prefix"], true, "{v}");
    assert_eq!(specific["timeout_ms"], 2000, "{v}");
    assert_eq!(specific["upstream"], "app", "{v}");
    assert_eq!(specific["rate_limits"], serde_json::json!(["roomy"]), "{v}");
    assert_eq!(specific["auth"], serde_json::Value::Null, "{v}");
    assert_eq!(rows[1]["headers"]["x-canary"], "1", "{v}");
    assert_eq!(rows[1]["rate_limits"], serde_json::json!([]), "{v}");
}

#[test]
fn upstreams_lists_policy_and_endpoints() {
    let up = Upstream::echo();
    let gw = Gateway::start(&config(&up));
    let v = get(gw.admin_addr(), "/upstreams").json();
    let app = &v["upstreams"][0];
    assert_eq!(app["name"], "app", "{v}");
    assert_eq!(app["balance"], "least_request", "{v}");
    assert_eq!(app["retries"], 2, "{v}");
    let eps = app["endpoints"].as_array().expect("endpoints");
    assert_eq!(eps.len(), 2, "{v}");
    assert_eq!(eps[0]["url"], up.url(), "{v}");
    assert_eq!(eps[0]["weight"], 1, "{v}");
    assert_eq!(eps[1]["weight"], 3, "{v}");
    assert_eq!(eps[1]["address"], "127.0.0.1:9", "{v}");
}

#[test]
fn unknown_admin_paths_and_methods_are_json_errors() {
    let up = Upstream::echo();
    let gw = Gateway::start(&config(&up));
    let r = get(gw.admin_addr(), "/nope");
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["error"]["code"], 404);
    let r = send_request(gw.admin_addr(), &Req::post("/routes", b""));
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.json()["error"]["code"], 405);
}

#[test]
fn routes_and_upstreams_need_the_admin_token_when_one_is_set() {
    let var = "CARGO_MANIFEST_DIR";
    let token = std::env::var(var).expect("cargo sets CARGO_MANIFEST_DIR for test processes");
    let up = Upstream::echo();
    let gw = Gateway::start(&format!("[admin]\ntoken_env = \"{var}\"\n{}", config(&up)));
    for path in ["/routes", "/upstreams"] {
        assert_eq!(get(gw.admin_addr(), path).status, 401, "{path}");
        let ok = send_request(
            gw.admin_addr(),
            &Req::get(path).header("Authorization", &format!("Bearer {token}")),
        );
        assert_eq!(ok.status, 200, "{path}: {ok:?}");
    }
}

/// A reload to a file without `token_env` used to open an admin API that was started requiring
/// a token (the token rule was read from the reloaded file). The rule is the listener's, fixed
/// at start like its address; the reload warns that the change waits for a restart.
#[test]
fn reload_dropping_token_env_does_not_open_the_admin_api() {
    let var = "CARGO_MANIFEST_DIR";
    let token = std::env::var(var).expect("cargo sets CARGO_MANIFEST_DIR for test processes");
    let bearer = format!("Bearer {token}");
    let up = Upstream::echo();
    let gw = Gateway::start(&format!("[admin]\ntoken_env = \"{var}\"\n{}", config(&up)));
    let file = std::fs::read_to_string(gw.config_path()).unwrap();
    let without = file.replace(&format!("token_env = \"{var}\"\n"), "");
    assert_ne!(
        file, without,
        "the token line is in the written config:\n{file}"
    );
    std::fs::write(gw.config_path(), without).unwrap();
    let r = send_request(
        gw.admin_addr(),
        &Req::post("/reload", b"").header("Authorization", &bearer),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        wait_until(Duration::from_secs(3), || gw
            .stderr()
            .contains("admin.token_env changed")),
        "{}",
        gw.stderr()
    );
    assert_eq!(get(gw.admin_addr(), "/upstreams").status, 401);
    let ok = send_request(
        gw.admin_addr(),
        &Req::get("/upstreams").header("Authorization", &bearer),
    );
    assert_eq!(ok.status, 200, "{ok:?}");
}
