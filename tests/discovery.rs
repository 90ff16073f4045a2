//! Service discovery (issue 3 contract): admin `PUT /upstreams/{name}/endpoints` registers or
//! updates an endpoint and `DELETE /upstreams/{name}/endpoints?url=...` deregisters one; the
//! change reaches every worker within 1 s without failing requests in flight or dropping the
//! pools of unchanged endpoints, shows at `GET /upstreams`, and survives `POST /reload`.
//! Endpoints written with a DNS name are resolved.
//!
//! Gateways here run 2 workers and most requests open a new connection, so both workers serve.

mod support;

use serde_json::{json, Value};
use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

/// How long a change may take to reach every worker: the contract's 1 s, plus room for this
/// test's own requests on a loaded 2-core machine.
const PROPAGATION: Duration = Duration::from_millis(1500);

/// An upstream answering its own name; `/slow` waits for `gate` first (when one is given).
fn named(name: &'static str, gate: Option<&Gate>) -> Upstream {
    let gate = gate.cloned();
    Upstream::start(move |req| {
        if let (Some(g), "/slow") = (&gate, req.path()) {
            g.wait(Duration::from_secs(10));
        }
        Reply::text(200, name)
    })
}

/// A 2-worker gateway with upstream `app` on `endpoints` behind route `/`, plus `extra` TOML.
fn gateway(endpoints: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "[server]\nworkers = 2\n\n{extra}\n\n[upstreams.app]\nendpoints = {endpoints}\nretries = 0\n\n[routes.all]\npaths = [\"/\"]\nupstream = \"app\"\n"
    ))
}

fn put(gw: &Gateway, upstream: &str, body: &Value) -> Response {
    send_request(
        gw.admin_addr(),
        &Req::json("PUT", &format!("/upstreams/{upstream}/endpoints"), body),
    )
}

fn delete(gw: &Gateway, upstream: &str, url: &str) -> Response {
    send_request(
        gw.admin_addr(),
        &Req::new(
            "DELETE",
            &format!(
                "/upstreams/{upstream}/endpoints?url={}",
                percent_encode(url)
            ),
        ),
    )
}

/// The endpoints of upstream `name` at `GET /upstreams`.
fn listed(gw: &Gateway, name: &str) -> Vec<Value> {
    let r = get(gw.admin_addr(), "/upstreams");
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    v["upstreams"]
        .as_array()
        .and_then(|ups| ups.iter().find(|u| u["name"] == name))
        .and_then(|u| u["endpoints"].as_array())
        .cloned()
        .unwrap_or_else(|| panic!("no upstream {name} with endpoints in /upstreams: {v}"))
}

fn listed_urls(gw: &Gateway, name: &str) -> HashSet<String> {
    listed(gw, name)
        .iter()
        .map(|e| e["url"].as_str().expect("url").to_string())
        .collect()
}

fn find<'a>(eps: &'a [Value], url: &str) -> &'a Value {
    eps.iter()
        .find(|e| e["url"] == url)
        .unwrap_or_else(|| panic!("no endpoint {url} in {eps:?}"))
}

/// `n` requests for `path`, each on a new connection; what served each.
fn serve(gw: &Gateway, path: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| get(gw.addr(), path).text()).collect()
}

/// Polls (within `PROPAGATION`) until a batch of 10 requests satisfies `ok`; returns how long
/// it took.
fn until_traffic(gw: &Gateway, path: &str, what: &str, ok: impl Fn(&[String]) -> bool) -> Duration {
    let start = Instant::now();
    let mut last = Vec::new();
    let done = wait_until(PROPAGATION, || {
        last = serve(gw, path, 10);
        ok(&last)
    });
    assert!(
        done,
        "{what}: not within {PROPAGATION:?}; last batch {last:?}"
    );
    start.elapsed()
}

/// Asserts a JSON admin error with `status`.
fn assert_admin_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    r.assert_content_type("application/json");
    let v = r.json();
    assert_eq!(v["error"]["code"], status, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

/// A registered endpoint gets traffic from every worker within 1 s. (Weight 100 against 1:
/// once a worker has it, at most 1 of its requests in 101 goes elsewhere, so a batch of 10
/// requests over both workers with 8 or more on it shows both have it.)
#[test]
fn registered_endpoint_gets_traffic_from_every_worker_within_a_second() {
    let a = named("a", None);
    let b = named("b", None);
    let gw = gateway(&endpoints(&[&a]), "");
    assert_eq!(serve(&gw, "/", 4), vec!["a"; 4]);

    let r = put(&gw, "app", &json!({"url": b.url(), "weight": 100}));
    assert_eq!(r.status, 201, "{} {}", r.status, r.text());
    let v = r.json();
    assert_eq!(v["upstream"], "app", "{v}");
    assert_eq!(v["endpoint"]["url"], b.url().as_str(), "{v}");
    assert_eq!(v["endpoint"]["weight"], 100, "{v}");
    let took = until_traffic(&gw, "/", "every worker sending to the new endpoint", |s| {
        s.iter().filter(|x| *x == "b").count() >= 8
    });
    eprintln!("registration reached both workers within {took:?}");
}

#[test]
fn registering_an_existing_endpoint_again_updates_it_with_200() {
    let a = named("a", None);
    let b = named("b", None);
    let gw = gateway(&endpoints(&[&a]), "");
    let r = put(&gw, "app", &json!({"url": b.url()}));
    assert_eq!(r.status, 201, "{} {}", r.status, r.text());
    assert_eq!(
        find(&listed(&gw, "app"), &b.url())["weight"],
        1,
        "weight defaults to 1"
    );

    let r = put(
        &gw,
        "app",
        &json!({"url": b.url(), "weight": 3, "metadata": {"zone": "eu-west-1"}}),
    );
    assert_eq!(r.status, 200, "re-registration: {r:?} {}", r.text());
    assert_eq!(r.json()["endpoint"]["weight"], 3, "{}", r.text());
    let eps = listed(&gw, "app");
    assert_eq!(eps.len(), 2, "an update must not add an endpoint: {eps:?}");
    let b_ep = find(&eps, &b.url());
    assert_eq!(b_ep["weight"], 3, "{eps:?}");
    assert_eq!(b_ep["metadata"], json!({"zone": "eu-west-1"}), "{eps:?}");
    assert_eq!(b_ep["source"], "admin", "{eps:?}");
}

#[test]
fn deregistered_endpoint_stops_getting_traffic_within_a_second() {
    let a = named("a", None);
    let b = named("b", None);
    let gw = gateway(&endpoints(&[&a, &b]), "");
    let served: HashSet<String> = serve(&gw, "/", 6).into_iter().collect();
    assert_eq!(served.len(), 2, "{served:?}");

    let r = delete(&gw, "app", &b.url());
    assert_eq!(r.status, 200, "{} {}", r.status, r.text());
    assert_eq!(r.json(), json!({"upstream": "app", "removed": b.url()}));
    let took = until_traffic(&gw, "/", "traffic off the removed endpoint", |s| {
        s.iter().all(|x| x == "a")
    });
    eprintln!("deregistration reached both workers within {took:?}");
    let seen = b.request_count();
    assert_eq!(serve(&gw, "/", 20), vec!["a"; 20]);
    assert_eq!(b.request_count(), seen);
    assert_eq!(listed_urls(&gw, "app"), HashSet::from([a.url()]));
}

/// Deregistering an endpoint does not fail the request it is serving.
#[test]
fn request_in_flight_on_a_deregistered_endpoint_completes() {
    let gate = Gate::new();
    let a = named("a", Some(&gate));
    let b = named("b", Some(&gate));
    let gw = gateway(&endpoints(&[&a, &b]), "");
    let addr = gw.addr();
    let slow = thread::spawn(move || get(addr, "/slow"));
    assert!(
        wait_until(Duration::from_secs(2), || a.request_count()
            + b.request_count()
            == 1),
        "the slow request reached no endpoint"
    );
    let (busy, name) = if a.request_count() == 1 {
        (&a, "a")
    } else {
        (&b, "b")
    };
    let r = delete(&gw, "app", &busy.url());
    assert_eq!(r.status, 200, "{} {}", r.status, r.text());
    until_traffic(&gw, "/", "traffic off the removed endpoint", |s| {
        s.iter().all(|x| x != name)
    });
    gate.open();
    let r = slow.join().expect("slow request");
    assert_eq!(r.status, 200, "the request in flight failed: {r:?}");
    assert_eq!(r.text(), name);
}

/// Registering or deregistering an endpoint leaves the workers' pooled connections to the
/// other endpoints alone.
#[test]
fn endpoint_changes_keep_pooled_connections_to_unchanged_endpoints() {
    let a = named("a", None);
    let b = named("b", None);
    let gw = gateway(&endpoints(&[&a]), "");
    // Until both workers hold a pooled connection to a.
    let both = wait_until(Duration::from_secs(3), || {
        get(gw.addr(), "/");
        a.connections() >= 2
    });
    assert!(
        both,
        "requests over new connections reached only one worker"
    );
    let pooled = a.connections();
    assert_eq!(
        pooled, 2,
        "sequential requests need one connection per worker"
    );

    assert_eq!(
        put(&gw, "app", &json!({"url": b.url(), "weight": 100})).status,
        201
    );
    until_traffic(&gw, "/", "every worker sending to the new endpoint", |s| {
        s.iter().filter(|x| *x == "b").count() >= 8
    });
    assert_eq!(
        a.open_connections(),
        pooled,
        "a registration closed pooled connections"
    );
    assert_eq!(delete(&gw, "app", &b.url()).status, 200);
    until_traffic(&gw, "/", "traffic off the removed endpoint", |s| {
        s.iter().all(|x| x == "a")
    });
    assert_eq!(serve(&gw, "/", 20), vec!["a"; 20]);
    assert_eq!(
        a.connections(),
        pooled,
        "endpoint changes reset the pools of an unchanged endpoint"
    );
}

#[test]
fn upstreams_lists_weight_health_in_flight_metadata_and_source() {
    let gate = Gate::new();
    let a = named("a", Some(&gate));
    let b = named("b", Some(&gate));
    let gw = gateway(&endpoints(&[&a]), "");
    let meta = json!({"zone": "eu-west-1", "version": "2.1", "canary": true});
    let r = put(
        &gw,
        "app",
        &json!({"url": b.url(), "weight": 2, "metadata": meta}),
    );
    assert_eq!(r.status, 201, "{} {}", r.status, r.text());

    let eps = listed(&gw, "app");
    assert_eq!(eps.len(), 2, "{eps:?}");
    let a_ep = find(&eps, &a.url());
    assert_eq!(a_ep["address"], a.addr().to_string().as_str(), "{eps:?}");
    assert_eq!(a_ep["weight"], 1, "{eps:?}");
    assert_eq!(a_ep["healthy"], true, "{eps:?}");
    assert_eq!(a_ep["ejected"], false, "{eps:?}");
    assert_eq!(a_ep["in_flight"], 0, "{eps:?}");
    assert_eq!(a_ep["metadata"], Value::Null, "{eps:?}");
    assert_eq!(a_ep["source"], "config", "{eps:?}");
    let b_ep = find(&eps, &b.url());
    assert_eq!(b_ep["address"], b.addr().to_string().as_str(), "{eps:?}");
    assert_eq!(b_ep["weight"], 2, "{eps:?}");
    assert_eq!(b_ep["healthy"], true, "{eps:?}");
    assert_eq!(b_ep["ejected"], false, "{eps:?}");
    assert_eq!(b_ep["in_flight"], 0, "{eps:?}");
    assert_eq!(b_ep["metadata"], meta, "{eps:?}");
    assert_eq!(b_ep["source"], "admin", "{eps:?}");

    // A request held by its upstream is in flight on that endpoint.
    let addr = gw.addr();
    let slow = thread::spawn(move || get(addr, "/slow"));
    assert!(
        wait_until(Duration::from_secs(2), || a.request_count()
            + b.request_count()
            == 1),
        "the slow request reached no endpoint"
    );
    let busy = if a.request_count() == 1 {
        a.url()
    } else {
        b.url()
    };
    let mut seen = Value::Null;
    let counted = wait_until(Duration::from_secs(1), || {
        seen = find(&listed(&gw, "app"), &busy).clone();
        seen["in_flight"].as_u64().is_some_and(|n| n >= 1)
    });
    assert!(counted, "a held request is not in_flight: {seen}");
    gate.open();
    assert_eq!(slow.join().expect("slow request").status, 200);
    let done = wait_until(Duration::from_secs(1), || {
        seen = find(&listed(&gw, "app"), &busy).clone();
        seen["in_flight"] == 0
    });
    assert!(done, "in_flight after the request finished: {seen}");
}

#[test]
fn endpoint_api_rejects_bad_requests_with_json_errors() {
    let a = named("a", None);
    let b = named("b", None);
    let gw = gateway(&endpoints(&[&a]), "");
    // The API is there: a good registration works.
    let r = put(&gw, "app", &json!({"url": b.url()}));
    assert_eq!(r.status, 201, "{} {}", r.status, r.text());
    let nowhere = format!("http://{}", free_addr());

    assert_admin_error(&put(&gw, "nope", &json!({"url": nowhere})), 404);
    let bad_json = send_request(
        gw.admin_addr(),
        &Req::new("PUT", "/upstreams/app/endpoints")
            .header("Content-Type", "application/json")
            .body(b"{\"url\": "),
    );
    assert_admin_error(&bad_json, 400);
    assert_admin_error(&put(&gw, "app", &json!({"weight": 2})), 400);
    assert_admin_error(&put(&gw, "app", &json!({"url": nowhere, "weight": 0})), 400);
    assert_admin_error(&put(&gw, "app", &json!({"url": "not a url"})), 400);
    assert_admin_error(&delete(&gw, "nope", &a.url()), 404);
    assert_admin_error(&delete(&gw, "app", &nowhere), 404);
    assert_eq!(
        listed_urls(&gw, "app"),
        HashSet::from([a.url(), b.url()]),
        "a rejected call changed the endpoints"
    );

    assert_eq!(delete(&gw, "app", &b.url()).status, 200);
    assert_admin_error(&delete(&gw, "app", &a.url()), 409);
    assert_eq!(listed_urls(&gw, "app"), HashSet::from([a.url()]));
    assert_eq!(get(gw.addr(), "/").text(), "a");
}

#[test]
fn endpoint_changes_need_the_admin_token_when_one_is_set() {
    let var = "CARGO_MANIFEST_DIR";
    let token = std::env::var(var).expect("cargo sets CARGO_MANIFEST_DIR for test processes");
    let bearer = format!("Bearer {token}");
    let a = named("a", None);
    let b = named("b", None);
    let gw = gateway(
        &endpoints(&[&a]),
        &format!("[admin]\ntoken_env = \"{var}\""),
    );
    let body = json!({"url": b.url()});
    let path = "/upstreams/app/endpoints";
    assert_eq!(
        send_request(gw.admin_addr(), &Req::json("PUT", path, &body)).status,
        401
    );
    let del = format!("{path}?url={}", percent_encode(&a.url()));
    assert_eq!(
        send_request(gw.admin_addr(), &Req::new("DELETE", &del)).status,
        401
    );
    let wrong = Req::json("PUT", path, &body).header("Authorization", "Bearer wrong");
    assert_eq!(send_request(gw.admin_addr(), &wrong).status, 401);

    let list = |gw: &Gateway| -> HashSet<String> {
        let r = send_request(
            gw.admin_addr(),
            &Req::get("/upstreams").header("Authorization", &bearer),
        );
        assert_eq!(r.status, 200, "{r:?}");
        r.json()["upstreams"][0]["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .map(|e| e["url"].as_str().expect("url").to_string())
            .collect()
    };
    assert_eq!(
        list(&gw),
        HashSet::from([a.url()]),
        "an unauthorised call changed something"
    );

    let r = send_request(
        gw.admin_addr(),
        &Req::json("PUT", path, &body).header("Authorization", &bearer),
    );
    assert_eq!(r.status, 201, "{} {}", r.status, r.text());
    let r = send_request(
        gw.admin_addr(),
        &Req::new("DELETE", &del).header("Authorization", &bearer),
    );
    assert_eq!(r.status, 200, "{} {}", r.status, r.text());
    assert_eq!(list(&gw), HashSet::from([b.url()]));
}

/// `POST /reload` of a config that still has the upstream keeps its registrations and
/// deregistrations.
#[test]
fn registrations_survive_a_reload() {
    let a = named("a", None);
    let b = named("b", None);
    let c = named("c", None);
    let toml = format!(
        "[server]\nworkers = 2\n\n[upstreams.app]\nendpoints = {}\nretries = 0\n\n[routes.r]\npaths = [\"/v1\"]\nupstream = \"app\"\n",
        endpoints(&[&a, &c])
    );
    let gw = Gateway::start(&toml);
    assert_eq!(put(&gw, "app", &json!({"url": b.url()})).status, 201);
    assert_eq!(delete(&gw, "app", &c.url()).status, 200);

    let path = gw.config_path().to_path_buf();
    let old = std::fs::read_to_string(&path).expect("read config");
    let new = old.replace("paths = [\"/v1\"]", "paths = [\"/v2\"]");
    assert_ne!(old, new);
    std::fs::write(&path, new).expect("rewrite config");
    let r = send_request(gw.admin_addr(), &Req::post("/reload", b""));
    assert_eq!(r.status, 200, "POST /reload: {}", r.text());
    assert_eq!(get(gw.addr(), "/v1").status, 404, "the new config is live");

    assert_eq!(
        listed_urls(&gw, "app"),
        HashSet::from([a.url(), b.url()]),
        "the reload lost a registration or brought back a deregistered endpoint"
    );
    let c_seen = c.request_count();
    until_traffic(
        &gw,
        "/v2",
        "traffic on the registered endpoint after reload",
        |s| s.iter().any(|x| x == "b"),
    );
    let served: HashSet<String> = serve(&gw, "/v2", 20).into_iter().collect();
    assert_eq!(served, HashSet::from(["a".to_string(), "b".to_string()]));
    assert_eq!(
        c.request_count(),
        c_seen,
        "the deregistered endpoint got traffic again"
    );
}

/// An endpoint written with a host name is resolved; each address is an endpoint with source
/// "dns". (Where `localhost` also resolves to ::1, which the upstream does not listen on,
/// a retry takes the request to 127.0.0.1.)
#[test]
fn endpoint_with_a_dns_name_is_resolved_and_serves() {
    let up = named("up", None);
    let url = format!("http://localhost:{}", up.addr().port());
    let gw = Gateway::start(&format!(
        "[upstreams.app]\nendpoints = [\"{url}\"]\nretries = 1\nconnect_timeout = \"300ms\"\n\n[routes.r]\npaths = [\"/\"]\nupstream = \"app\"\n"
    ));
    let eps = listed(&gw, "app");
    let resolved = eps
        .iter()
        .find(|e| e["address"] == up.addr().to_string().as_str())
        .unwrap_or_else(|| panic!("no endpoint at {} in {eps:?}", up.addr()));
    assert_eq!(resolved["source"], "dns", "{eps:?}");
    for i in 0..3 {
        let r = get(gw.addr(), &format!("/r{i}"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "up");
    }
    assert_eq!(up.request_count(), 3);
}
