//! Operations: the admin listener only where `[admin]` asks for one (and a token where it is
//! reachable from the network), admin API details (`Allow` on 405, the auth scheme's case),
//! endpoint masks past 64 endpoints, metrics and warnings for dropped and refused work, DNS
//! resolution off the admin thread, and the process log's format.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::ops::*;
use support::*;

/// Without an `[admin]` section an admin API used to be bound on 127.0.0.1:9901 anyway.
#[test]
fn no_admin_section_used_to_bind_a_default_admin_listener() {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = start_without_admin(&format!(
        "[upstreams.app]\nendpoints = {}\n\n[routes.all]\npaths = [\"/\"]\nupstream = \"app\"\n",
        endpoints(&[&up])
    ));
    assert_eq!(get(gw.addr(), "/").status, 200);
    let listening = listening_addrs(gw.pid());
    assert_eq!(
        listening,
        [gw.addr()].into_iter().collect(),
        "the client listener is the only socket it listens on"
    );
    assert!(
        gw.stderr().contains("no admin listener"),
        "the start line says so: {}",
        gw.stderr()
    );
}

/// `dispatch check` said nothing about a config without an admin listener.
#[test]
fn check_summary_used_to_say_nothing_about_a_missing_admin_listener() {
    let out = check("[upstreams.app]\nendpoints = [\"http://127.0.0.1:9\"]\n");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("admin: none (no [admin] section, no admin listener)\n"),
        "{}",
        out.stdout
    );
}

/// A non-loopback `admin.listen` without a token used to start an admin API open to the network.
#[test]
fn non_loopback_admin_without_a_token_used_to_start() {
    let port = free_addr().port();
    let toml =
        format!("[admin]\nlisten = \"0.0.0.0:{port}\"\ntoken_env = \"OPS_TEST_ADMIN_TOKEN\"\n");
    let expected = format!(
        "dispatch.toml:2:10: admin.listen: 0.0.0.0:{port} is not a loopback address: needs a token: $OPS_TEST_ADMIN_TOKEN (admin.token_env) is not set or empty"
    );
    for cmd in ["check", "run"] {
        let (code, _, stderr) = dispatch_with_env(cmd, &toml, &[]);
        assert_eq!(code, Some(1), "{cmd}: {stderr}");
        assert!(stderr.contains(&expected), "{cmd}: {stderr}");
    }
    // No token_env at all: refused the same way.
    let bare = format!("[admin]\nlisten = \"0.0.0.0:{port}\"\n");
    let (code, _, stderr) = dispatch_with_env("check", &bare, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("needs token_env"), "{stderr}");
    // With the variable set, the same file checks.
    let (code, stdout, stderr) =
        dispatch_with_env("check", &toml, &[("OPS_TEST_ADMIN_TOKEN", "s3cret")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "admin: 0.0.0.0:{port} (token from $OPS_TEST_ADMIN_TOKEN)"
        )),
        "{stdout}"
    );
}

/// A 405 from the admin API used to carry no `Allow` header (RFC 9110 §15.5.6 requires one).
#[test]
fn admin_405_used_to_carry_no_allow_header() {
    let gw = Gateway::start("[upstreams.app]\nendpoints = [\"http://127.0.0.1:9\"]\n");
    for (method, path, allow) in [
        ("POST", "/health", "GET"),
        ("DELETE", "/metrics", "GET"),
        ("PUT", "/routes", "GET"),
        ("POST", "/upstreams", "GET"),
        ("GET", "/reload", "POST"),
        ("GET", "/upstreams/app/endpoints", "PUT, DELETE"),
    ] {
        let r = send_request(gw.admin_addr(), &Req::new(method, path));
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        assert_eq!(r.json()["error"]["code"], 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}: {r:?}");
    }
    // Other answers carry none.
    assert!(!get(gw.admin_addr(), "/health").has_header("allow"));
}

/// `Authorization: bearer <token>` (lower-case scheme) used to get 401: RFC 9110 §11.1 makes
/// the scheme case-insensitive.
#[test]
fn lower_case_bearer_scheme_used_to_get_401() {
    // A variable cargo sets for every test process: its value is the token.
    let var = "CARGO_MANIFEST_DIR";
    let token = std::env::var(var).expect("cargo sets CARGO_MANIFEST_DIR");
    let gw = Gateway::start(&format!(
        "[admin]\ntoken_env = \"{var}\"\n\n[upstreams.app]\nendpoints = [\"http://127.0.0.1:9\"]\n"
    ));
    assert_eq!(get(gw.admin_addr(), "/routes").status, 401);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = send_request(
            gw.admin_addr(),
            &Req::get("/routes").header("Authorization", &format!("{scheme} {token}")),
        );
        assert_eq!(r.status, 200, "{scheme}: {r:?}");
    }
    for wrong in [
        format!("Basic {token}"),
        format!("Bearer {token}x"),
        "bearer".to_string(),
    ] {
        let r = send_request(
            gw.admin_addr(),
            &Req::get("/routes").header("Authorization", &wrong),
        );
        assert_eq!(r.status, 401, "{wrong}: {r:?}");
    }
}

/// With more than 64 endpoints an ejected endpoint 3 used to take endpoints 67, 131 and 195
/// out of the rotation too (`1 << (i % 64)`).
#[test]
fn ejected_endpoint_3_used_to_take_out_endpoints_67_131_195() {
    let ups: Vec<Upstream> = (0..200)
        .map(|i| {
            Upstream::start(move |_| {
                if i == 3 {
                    Reply::text(503, "down")
                } else {
                    Reply::text(200, &i.to_string())
                }
            })
        })
        .collect();
    let refs: Vec<&Upstream> = ups.iter().collect();
    let gw = Gateway::start(&format!(
        "[upstreams.many]\nendpoints = {}\nretries = 1\n\n[upstreams.many.outlier]\nconsecutive_failures = 1\nbase_ejection = \"5m\"\n\n[routes.all]\npaths = [\"/\"]\nupstream = \"many\"\n",
        endpoints(&refs)
    ));
    let mut client = Client::connect(gw.addr());
    // One pass of round robin reaches endpoint 3 once: its 503 ejects it (the GET is retried).
    for _ in 0..200 {
        assert_eq!(client.request(&Req::get("/")).status, 200);
    }
    assert_eq!(ups[3].request_count(), 1);
    let before: Vec<usize> = ups.iter().map(|u| u.request_count()).collect();
    for _ in 0..2 * 199 {
        assert_eq!(client.request(&Req::get("/")).status, 200);
    }
    let got: Vec<usize> = ups
        .iter()
        .zip(&before)
        .map(|(u, b)| u.request_count() - b)
        .collect();
    assert_eq!(got[3], 0, "the ejected endpoint is out of the rotation");
    for i in (0..200).filter(|&i| i != 3) {
        assert_eq!(got[i], 2, "endpoint {i} stays in the rotation: {got:?}");
    }
}

/// Nothing capped the endpoints of an upstream; the file is now held to 1,024.
#[test]
fn more_than_1024_endpoints_in_the_file_used_to_load() {
    let urls: Vec<String> = (0..1025)
        .map(|i| format!("\"http://127.0.0.1:{}\"", 10_000 + i))
        .collect();
    let out = check(&format!(
        "[upstreams.big]\nendpoints = [{}]\n",
        urls.join(", ")
    ));
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr.contains("upstreams.big.endpoints[1024]: too many endpoints: 1025 addresses with this one, at most 1024 per upstream"),
        "{}",
        out.stderr
    );
}

/// Access-log lines dropped because stdout was slow used to be invisible: no metric, no warning.
#[test]
fn dropped_access_log_lines_used_to_be_invisible() {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = support::ops::StalledStdout::start(&format!(
        "[server.limits]\nmax_request_line = \"128KiB\"\n\n[log]\naccess = \"json\"\n\n[upstreams.app]\nendpoints = {}\n\n[routes.all]\npaths = [\"/\"]\nupstream = \"app\"\n",
        endpoints(&[&up])
    ));
    // Lines of ~60 KiB (the path is logged): each one is a batch of its own, so the writer's
    // queue (about 8 MiB) and the unread pipe fill after a few hundred requests.
    let path = format!("/{}", "a".repeat(60 * 1024));
    let mut client = Client::connect(gw.addr);
    let mut dropped = 0.0;
    for _ in 0..2000 {
        assert_eq!(client.request(&Req::get(&path)).status, 200);
        let scrape = get(gw.admin, "/metrics").text();
        dropped = metric(&scrape, "dispatch_access_log_dropped_total").expect("family present");
        if dropped > 0.0 {
            break;
        }
    }
    assert!(dropped > 0.0, "no line counted as dropped");
    let warnings = wait_stderr_lines(|| gw.stderr(), "access log: the writer is behind", 1);
    assert!(warnings >= 1, "{}", gw.stderr());
}

/// Connections refused over `server.max_connections` used to be invisible: no metric, and no
/// warning (then one per connection would flood the log: it is rate-limited).
#[test]
fn connections_refused_over_max_connections_used_to_be_invisible() {
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let gw = Gateway::start(&format!(
        "[server.limits]\nmax_connections = 2\n\n[upstreams.app]\nendpoints = {}\n\n[routes.all]\npaths = [\"/\"]\nupstream = \"app\"\n",
        endpoints(&[&up])
    ));
    let scrape = get(gw.admin_addr(), "/metrics").text();
    assert_eq!(
        metric(&scrape, "dispatch_connections_rejected_total"),
        Some(0.0)
    );
    // Two connections held open (each proven accepted by an answer) fill the limit.
    let mut held: Vec<Client> = (0..2).map(|_| Client::connect(gw.addr())).collect();
    for c in &mut held {
        assert_eq!(c.request(&Req::get("/")).status, 200);
    }
    for _ in 0..5 {
        let mut c = Client::connect(gw.addr());
        assert!(c.try_read_response().is_err(), "closed without an answer");
    }
    let scrape = get(gw.admin_addr(), "/metrics").text();
    assert_eq!(
        metric(&scrape, "dispatch_connections_rejected_total"),
        Some(5.0)
    );
    // At least one warning, and fewer lines than refusals (at most one a second).
    let lines = wait_stderr_lines(
        || gw.stderr(),
        "refused: 2 connections open (server.max_connections)",
        1,
    );
    assert!((1..5).contains(&lines), "{}", gw.stderr());
}

/// Process log lines used to start with Unix seconds (`1796527511.889 info ...`) instead of an
/// RFC 3339 UTC timestamp with milliseconds.
#[test]
fn process_log_lines_used_to_start_with_unix_seconds() {
    let gw = Gateway::start("[upstreams.app]\nendpoints = [\"http://127.0.0.1:9\"]\n");
    wait_stderr_lines(|| gw.stderr(), "serving on", 1);
    let stderr = gw.stderr();
    assert!(!stderr.is_empty());
    for line in stderr.lines() {
        let (ts, rest) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let b = ts.as_bytes();
        let shape_ok = b.len() == 24
            && b.iter().enumerate().all(|(i, &c)| match i {
                4 | 7 => c == b'-',
                10 => c == b'T',
                13 | 16 => c == b':',
                19 => c == b'.',
                23 => c == b'Z',
                _ => c.is_ascii_digit(),
            });
        assert!(shape_ok, "not RFC 3339 UTC with milliseconds: {line:?}");
        assert!(ts.starts_with("20"), "{line:?}");
        let level = rest.split(' ').next().unwrap_or_default();
        assert!(
            ["error", "warn", "info", "debug"].contains(&level),
            "{line:?}"
        );
    }
}

static SLOW_ENTERED: AtomicBool = AtomicBool::new(false);
static SLOW_DONE: AtomicBool = AtomicBool::new(false);

/// The resolver of `registration_dns_lookup_used_to_stall_metrics`: `slow.ops.test` answers
/// 127.0.0.1 after 2 s, `stuck.ops.test` after 8 s (past the admin API's 5 s), others fail.
fn scripted_resolver(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match host {
        "slow.ops.test" => {
            SLOW_ENTERED.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(2));
            SLOW_DONE.store(true, Ordering::SeqCst);
            Ok(vec![addr])
        }
        "stuck.ops.test" => {
            std::thread::sleep(Duration::from_secs(8));
            Ok(vec![addr])
        }
        _ => Err(format!("cannot resolve {host:?}: scripted resolver")),
    }
}

/// A registration's DNS lookup used to run on the admin thread: a slow resolver stalled
/// `/health` and `/metrics` until it returned.
#[test]
fn registration_dns_lookup_used_to_stall_metrics() {
    assert!(dispatch::config::set_resolver(scripted_resolver));
    let up = Upstream::start(|_| Reply::text(200, "ok"));
    let (listen, admin) = (free_addr(), free_addr());
    let toml = format!(
        "[server]\nlisten = [\"{listen}\"]\nworkers = 1\npin_workers = false\ndrain_timeout = \"1s\"\n\n[admin]\nlisten = \"{admin}\"\n\n[upstreams.app]\nendpoints = {}\n\n[routes.all]\npaths = [\"/\"]\nupstream = \"app\"\n",
        endpoints(&[&up])
    );
    let config =
        dispatch::config::load_str(&toml, std::path::Path::new("ops.toml")).expect("loads");
    let running = dispatch::start(config).expect("starts in process");
    // The registered endpoint: another upstream (one address serves under one URL only).
    let up2 = Upstream::start(|_| Reply::text(200, "registered"));
    let port = up2.addr().port();

    let register = move |host: &str| {
        let body = serde_json::json!({"url": format!("http://{host}:{port}")});
        send_request(admin, &Req::json("PUT", "/upstreams/app/endpoints", &body))
    };
    let slow = std::thread::spawn(move || register("slow.ops.test"));
    while !SLOW_ENTERED.load(Ordering::SeqCst) {
        assert!(
            !slow.is_finished(),
            "the registration ended before its lookup began"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The lookup is under way: the admin API still answers, before it ends.
    let metrics = get(admin, "/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(get(admin, "/health").status, 200);
    assert!(
        !SLOW_DONE.load(Ordering::SeqCst),
        "/metrics and /health were answered only after the lookup"
    );
    // The registration is answered when its lookup is done, and applied.
    let r = slow.join().expect("registration thread");
    assert_eq!(r.status, 201, "{r:?}");
    let ups = get(admin, "/upstreams").json();
    let urls: Vec<&str> = ups["upstreams"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["url"].as_str())
        .collect();
    assert!(
        urls.contains(&format!("http://slow.ops.test:{port}").as_str()),
        "{urls:?}"
    );

    // A lookup past the admin API's 5 s gets 504 and registers nothing.
    let r = register("stuck.ops.test");
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.json()["error"]["code"], 504);
    let ups = get(admin, "/upstreams").json().to_string();
    assert!(!ups.contains("stuck.ops.test"), "{ups}");

    running.shared.begin_shutdown();
    running.wait();
}
