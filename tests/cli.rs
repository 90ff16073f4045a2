//! The command line and the process (BEHAVIOR.md "Command line"): `dispatch check`, config
//! errors with file:line:col and did-you-mean, keys of later milestones rejected, `dispatch run`
//! with workers, listeners, connection limits, graceful shutdown on SIGTERM/SIGINT, the admin
//! `GET /health` and the JSON access log.

mod support;

use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};
use support::gateway::{run_dispatch, Output};
use support::wire::WireError;
use support::*;

/// A complete, valid config with its own free ports; `{up}` in `rest` is replaced by a URL.
fn config(rest: &str) -> String {
    format!(
        "[server]\nlisten = [\"{}\"]\nworkers = 1\n\n[admin]\nlisten = \"{}\"\n\n{}",
        free_addr(),
        free_addr(),
        rest.trim_start()
    )
}

const USERS: &str = r#"
[upstreams.users]
endpoints = ["http://127.0.0.1:9001", { url = "http://127.0.0.1:9002", weight = 3 }]

[routes.users]
paths = ["/api/v1/users"]
upstream = "users"
"#;

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in config"))
        + 1
}

/// The single `file:line:col: message` error in `out`: (line, col, message).
fn error_at(out: &Output) -> (usize, usize, String) {
    assert_eq!(out.code, Some(1), "expected exit 1; output:\n{}", out.all());
    let prefix = format!("{}:", out.config_path.display());
    let all = out.all();
    let lines: Vec<&str> = all
        .lines()
        .filter_map(|l| l.find(&prefix).map(|i| &l[i + prefix.len()..]))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one `{prefix}line:col: ...` error line; output:\n{}",
        out.all()
    );
    let mut parts = lines[0].splitn(3, ':');
    let line = parts.next().and_then(|l| l.parse().ok());
    let col = parts.next().and_then(|c| c.parse().ok());
    match (line, col, parts.next()) {
        (Some(line), Some(col), Some(msg)) => (line, col, msg.trim().to_string()),
        _ => panic!("error line is not file:line:col: message: {:?}", lines[0]),
    }
}

#[test]
fn check_prints_a_summary_and_exits_0() {
    let toml = config(&format!(
        "{USERS}\n[routes.users_canary]\npaths = [\"/api/v1/users\"]\nheaders = {{ \"x-canary\" = \"1\" }}\nmethods = [\"GET\"]\nupstream = \"users\"\n"
    ));
    let out = check(&toml);
    assert_eq!(out.code, Some(0), "output:\n{}", out.all());
    let listen = toml
        .lines()
        .nth(1)
        .unwrap()
        .split('"')
        .nth(1)
        .unwrap()
        .to_string();
    for needle in [listen.as_str(), "users_canary", "/api/v1/users", "x-canary"] {
        assert!(
            out.stdout.contains(needle),
            "summary lacks {needle:?}:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.to_lowercase().contains("worker"),
        "summary lacks workers:\n{}",
        out.stdout
    );
}

#[test]
fn check_accepts_every_milestone_1_key_and_unit() {
    let toml = format!(
        r#"
[server]
listen = ["{}", "{}"]
workers = 2
pin_workers = false
driver = "auto"
drain_timeout = "1m"

[server.limits]
max_request_line = "8KiB"
max_header_bytes = 16384
max_headers = 100
max_body = "10MiB"
header_timeout = "250ms"
body_timeout = "1h"
keepalive_timeout = "60s"
max_connections = 512

[admin]
listen = "{}"
token_env = "DISPATCH_ADMIN_TOKEN"

[log]
level = "debug"
access = "off"

[upstreams.users]
endpoints = ["http://127.0.0.1:9001", {{ url = "http://127.0.0.1:9002", weight = 3 }}]
balance = "round_robin"
connect_timeout = "500ms"
read_timeout = "3s"
retries = 2
max_idle_per_worker = 64
idle_timeout = "60s"

[upstreams.lr]
endpoints = ["http://127.0.0.1:9003"]
balance = "least_request"

[upstreams.hh]
endpoints = ["http://127.0.0.1:9004"]
balance = "hash:header:x-user-id"

[upstreams.hi]
endpoints = ["http://127.0.0.1:9005"]
balance = "hash:ip"

[routes.users]
paths = ["/api/v1/users", "/api/v1/profiles"]
methods = ["GET", "POST", "PUT", "DELETE"]
hosts = ["api.example.com", "*.example.com", "127.0.0.1"]
upstream = "users"
strip_prefix = false

[routes.canary]
paths = ["/api/v1/users"]
headers = {{ "x-canary" = "1" }}
upstream = "hh"

[routes.payments]
paths = ["/api/v1/payments/*"]
upstream = "lr"
timeout = "5s"

[routes.transfers]
paths = ["=/api/v1/transfers"]
methods = ["POST"]
upstream = "hi"
rewrite = "/v2/transfers"

[routes.stripped]
paths = ["/svc/:name/items"]
upstream = "users"
strip_prefix = true
"#,
        free_addr(),
        free_addr(),
        free_addr()
    );
    let out = check(&toml);
    assert_eq!(
        out.code,
        Some(0),
        "a valid milestone-1 config was rejected:\n{}",
        out.all()
    );
}

#[test]
fn check_reports_an_unknown_key_with_location_and_suggestion() {
    let toml = config(
        "[upstreams.users]\nendpoints = [\"http://127.0.0.1:9001\"]\nretires = 2\n\n[routes.users]\npaths = [\"/u\"]\nupstream = \"users\"\n",
    );
    let out = check(&toml);
    let (line, col, msg) = error_at(&out);
    assert_eq!(line, line_of(&toml, "retires"), "{msg}");
    assert_eq!(col, 1, "{msg}");
    assert!(msg.starts_with("upstreams.users.retires"), "{msg}");
    assert!(
        msg.contains("did you mean") && msg.contains("retries"),
        "{msg}"
    );
}

#[test]
fn check_reports_an_unknown_section_with_a_suggestion() {
    let toml = config(&format!("{USERS}\n[serverr.limits]\nmax_body = \"1MiB\"\n"));
    let out = check(&toml);
    let (line, _, msg) = error_at(&out);
    assert!(
        line == line_of(&toml, "[serverr.limits]") || line == line_of(&toml, "max_body"),
        "line {line}: {msg}"
    );
    assert!(msg.contains("serverr"), "{msg}");
    assert!(
        msg.contains("did you mean") && msg.contains("server"),
        "{msg}"
    );
}

#[test]
fn check_reports_a_dangling_upstream_with_a_suggestion() {
    let toml = config(
        "[upstreams.users]\nendpoints = [\"http://127.0.0.1:9001\"]\n\n[routes.users]\npaths = [\"/u\"]\nupstream = \"user\"\n",
    );
    let out = check(&toml);
    let (line, _, msg) = error_at(&out);
    assert_eq!(line, line_of(&toml, "upstream = \"user\""), "{msg}");
    assert!(msg.starts_with("routes.users.upstream"), "{msg}");
    assert!(msg.contains("did you mean \"users\""), "{msg}");
}

#[test]
fn check_reports_a_bad_duration() {
    let toml = config(&USERS.replace(
        "endpoints = [",
        "read_timeout = \"3 parsecs\"\nendpoints = [",
    ));
    let (line, _, msg) = error_at(&check(&toml));
    assert_eq!(line, line_of(&toml, "parsecs"), "{msg}");
    assert!(msg.starts_with("upstreams.users.read_timeout"), "{msg}");
}

#[test]
fn check_reports_a_bad_size() {
    let toml = config(&format!("{USERS}\n[server.limits]\nmax_body = \"ten\"\n"));
    let (line, _, msg) = error_at(&check(&toml));
    assert_eq!(line, line_of(&toml, "max_body"), "{msg}");
    assert!(msg.starts_with("server.limits.max_body"), "{msg}");
}

#[test]
fn check_reports_a_misspelt_balance_with_a_suggestion() {
    let toml = config(&USERS.replace("endpoints = [", "balance = \"round_robbin\"\nendpoints = ["));
    let (line, _, msg) = error_at(&check(&toml));
    assert_eq!(line, line_of(&toml, "round_robbin"), "{msg}");
    assert!(msg.starts_with("upstreams.users.balance"), "{msg}");
    assert!(msg.contains("did you mean \"round_robin\""), "{msg}");
}

#[test]
fn check_rejects_zero_workers() {
    let toml = config(USERS).replace("workers = 1", "workers = 0");
    let (line, _, msg) = error_at(&check(&toml));
    assert_eq!(line, line_of(&toml, "workers = 0"), "{msg}");
    assert!(msg.starts_with("server.workers"), "{msg}");
}

#[test]
fn check_rejects_a_toml_syntax_error_with_its_location() {
    let toml = config(&format!(
        "{USERS}\n[routes.broken]\npaths = [\"/b\"\nupstream = \"users\"\n"
    ));
    let out = check(&toml);
    let (line, _, _) = error_at(&out);
    let start = line_of(&toml, "[routes.broken]");
    assert!(
        (start..=start + 3).contains(&line),
        "syntax error reported at line {line}"
    );
}

#[test]
fn check_rejects_ambiguous_routes_naming_both() {
    let toml = config(&format!(
        "{USERS}\n[routes.people]\npaths = [\"/api/v1/users\"]\nupstream = \"users\"\n"
    ));
    let out = check(&toml);
    let (_, _, msg) = error_at(&out);
    assert!(
        msg.contains("users") && msg.contains("people"),
        "the ambiguity error must name both routes: {msg}"
    );
}

#[test]
fn check_rejects_overlapping_predicates_of_equal_weight() {
    // Host a.example.com and header x-a: 1 can arrive in one request: equal precedence.
    let toml = config(&format!(
        "{USERS}\n[routes.by_host]\npaths = [\"/p\"]\nhosts = [\"a.example.com\"]\nupstream = \"users\"\n\n[routes.by_header]\npaths = [\"/p\"]\nheaders = {{ \"x-a\" = \"1\" }}\nupstream = \"users\"\n"
    ));
    let (_, _, msg) = error_at(&check(&toml));
    assert!(
        msg.contains("by_host") && msg.contains("by_header"),
        "{msg}"
    );
}

#[test]
fn check_accepts_routes_that_can_never_match_the_same_request() {
    let toml = config(&format!(
        r#"{USERS}
[routes.host_a]
paths = ["/p"]
hosts = ["a.example.com"]
upstream = "users"

[routes.host_b]
paths = ["/p"]
hosts = ["b.example.com"]
upstream = "users"

[routes.reads]
paths = ["/q"]
methods = ["GET"]
upstream = "users"

[routes.writes]
paths = ["/q"]
methods = ["POST"]
upstream = "users"
"#
    ));
    let out = check(&toml);
    assert_eq!(
        out.code,
        Some(0),
        "disjoint routes rejected:\n{}",
        out.all()
    );
}

#[test]
fn check_on_a_missing_file_exits_1() {
    let dir = TempDir::new();
    let missing = dir.path().join("nope.toml");
    let (code, out, err) = run_dispatch(
        &["check", "--config", missing.to_str().unwrap()],
        dir.path(),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("nope.toml"),
        "the error must name the file: {out}{err}"
    );
}

#[test]
fn default_config_path_is_config_dispatch_toml() {
    let dir = TempDir::new();
    dir.write("config/dispatch.toml", &config(USERS));
    let (code, out, err) = run_dispatch(&["check"], dir.path(), Duration::from_secs(10));
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn run_with_a_bad_config_exits_1_and_never_listens() {
    let listen = free_addr();
    let toml = format!(
        "[server]\nlisten = [\"{listen}\"]\nworkers = 1\n\n[admin]\nlisten = \"{}\"\n\n[upstreams.users]\nendpoints = [\"http://127.0.0.1:9001\"]\n\n[routes.users]\npaths = [\"/u\"]\nupstream = \"user\"\n",
        free_addr()
    );
    let out = run_expecting_exit(&toml);
    let (_, _, msg) = error_at(&out);
    assert!(msg.contains("routes.users.upstream"), "{msg}");
    assert!(
        Client::try_connect(listen).is_err(),
        "a bad config must never start listening"
    );
}

#[test]
fn unknown_subcommand_fails() {
    let dir = TempDir::new();
    let (code, out, err) = run_dispatch(&["frobnicate"], dir.path(), Duration::from_secs(10));
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}: {out}{err}"
    );
}

fn app(up: &Upstream, server: &str) -> String {
    format!(
        "[server]\n{server}\n\n[upstreams.app]\nendpoints = [\"{}\"]\n\n[routes.all]\npaths = [\"/\"]\nupstream = \"app\"\n",
        up.url()
    )
}

#[test]
fn sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0() {
    // `/slow` is held at the upstream until the test has seen new connections refused.
    let gate = Gate::new();
    let g = gate.clone();
    let up = Upstream::start(move |req| {
        if req.path() == "/slow" {
            g.wait(Duration::from_secs(10));
        }
        Reply::text(200, "done")
    });
    let mut gw = Gateway::start(&app(&up, "drain_timeout = \"5s\""));
    let addr = gw.addr();
    let in_flight = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(&Req::get("/slow").to_bytes());
        c.try_read_response().map_err(|e| e.to_string())
    });
    assert!(up.wait_until(Duration::from_secs(2), |u| u.request_count() == 1));
    gw.sigterm();
    // The worker closes its listener when it notices the shutdown (its next tick); a
    // connection that races in before that is not "after SIGTERM" for the gateway.
    assert!(
        wait_until(Duration::from_secs(2), || Client::try_connect(addr)
            .is_err()),
        "the listener still accepts 2 s after SIGTERM"
    );
    assert!(
        !in_flight.is_finished(),
        "the in-flight request ended before the upstream answered it"
    );
    match Client::try_connect(addr) {
        Err(_) => {}
        Ok(mut c) => {
            c.set_timeout(Duration::from_secs(1));
            let _ = c.try_send(&Req::get("/").to_bytes());
            match c.try_read_response() {
                Ok(r) => panic!("a connection made after SIGTERM was served: {r:?}"),
                Err(WireError::Closed { .. }) => {}
                Err(e) => panic!("a connection made after SIGTERM was left pending: {e}"),
            }
        }
    }
    gate.open();
    let r = in_flight
        .join()
        .expect("in-flight request thread")
        .unwrap_or_else(|e| panic!("the in-flight request was cut by SIGTERM: {e}"));
    assert_eq!(
        r.status, 200,
        "the in-flight request failed after SIGTERM: {r:?}"
    );
    assert_eq!(r.text(), "done");
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .expect("still running 5 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// Regression: the listeners accepted (and workers served) before the SIGTERM/SIGINT handlers
/// were installed, so a SIGTERM in that window killed the process instead of draining it.
#[test]
fn sigterm_as_soon_as_the_port_accepts_still_exits_0() {
    let up = Upstream::echo();
    for round in 0..20 {
        let mut gw = Gateway::spawn(&app(&up, "drain_timeout = \"2s\""));
        // Probe without sleeping, so the signal lands as early as a supervisor's could.
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(gw.addr()).is_err() {
            assert!(
                Instant::now() < end,
                "dispatch never listened:\n{}",
                gw.stderr()
            );
            assert!(
                gw.wait_exit(Duration::ZERO).is_none(),
                "dispatch exited:\n{}",
                gw.stderr()
            );
        }
        gw.sigterm();
        let status = gw
            .wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("round {round}: still running 5 s after SIGTERM"));
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: SIGTERM right after the port opened ended dispatch with {status}"
        );
    }
}

#[test]
fn sigint_exits_0() {
    let up = Upstream::echo();
    let mut gw = Gateway::start(&app(&up, "drain_timeout = \"5s\""));
    assert_eq!(get(gw.addr(), "/").status, 200);
    gw.sigint();
    let status = gw
        .wait_exit(Duration::from_secs(3))
        .expect("still running 3 s after SIGINT");
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn sigterm_does_not_wait_for_idle_keep_alive_connections() {
    let up = Upstream::echo();
    let mut gw = Gateway::start(&app(&up, "drain_timeout = \"10s\""));
    let mut idle = Client::connect(gw.addr());
    assert_eq!(idle.request(&Req::get("/")).status, 200);
    let start = Instant::now();
    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_secs(3))
        .expect("an idle keep-alive connection held the gateway up after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        idle.wait_closed(Duration::from_secs(1)).is_ok(),
        "idle connection left open"
    );
}

#[test]
fn drain_timeout_bounds_the_shutdown() {
    let up = Upstream::start(|_| Reply::text(200, "never in time").delay(Duration::from_secs(10)));
    let mut gw = Gateway::start(&app(&up, "drain_timeout = \"500ms\""));
    let addr = gw.addr();
    let _stuck = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.set_timeout(Duration::from_secs(8));
        c.send(&Req::get("/").to_bytes());
        let _ = c.try_read_response();
    });
    assert!(up.wait_until(Duration::from_secs(2), |u| u.request_count() == 1));
    let start = Instant::now();
    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_secs(4))
        .expect("still running 4 s after SIGTERM with drain_timeout 500ms");
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        took >= Duration::from_millis(400),
        "exited after {took:?}, before drain_timeout"
    );
}

#[test]
fn two_workers_both_serve_each_with_its_own_pool() {
    let up = Upstream::echo();
    let gw = Gateway::start(&app(&up, "workers = 2"));
    // New connections are spread over the workers by SO_REUSEPORT; each worker then pools
    // one upstream connection, so two workers that both served show as two connections.
    for i in 0..60 {
        assert_eq!(get(gw.addr(), &format!("/{i}")).status, 200);
    }
    assert_eq!(
        up.connections(),
        2,
        "60 connections over 2 workers should give exactly one pooled upstream connection per worker"
    );
}

#[test]
fn workers_are_pinned_to_distinct_cores() {
    let allowed = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .unwrap();
    let cpus = parse_cpu_list(&allowed);
    let workers = cpus.len().min(2);
    let up = Upstream::echo();
    let gw = Gateway::start(&app(
        &up,
        &format!("workers = {workers}\npin_workers = true"),
    ));
    if cpus.len() > 1 {
        let expected: HashSet<usize> = cpus[..workers].iter().copied().collect();
        // Workers pin themselves as their threads start, which may be after the ports accept.
        wait_until(Duration::from_secs(3), || pinned_cpus(gw.pid()) == expected);
        assert_eq!(
            pinned_cpus(gw.pid()),
            expected,
            "worker i must be pinned to the i-th allowed core ({allowed})"
        );
    }
    assert_eq!(get(gw.addr(), "/").status, 200);
}

/// The CPUs that threads of `pid` are pinned to (threads allowed exactly one CPU).
fn pinned_cpus(pid: u32) -> HashSet<usize> {
    let mut pinned = HashSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return pinned;
    };
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(list) = status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .and_then(|l| l.split_whitespace().nth(1))
        {
            if let [cpu] = parse_cpu_list(list)[..] {
                pinned.insert(cpu);
            }
        }
    }
    pinned
}

fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

#[test]
fn admin_health_reports_ok_and_the_worker_count() {
    let up = Upstream::echo();
    let gw = Gateway::start(&app(&up, "workers = 2"));
    let r = get(gw.admin_addr(), "/health");
    assert_eq!(r.status, 200, "{r:?}");
    r.assert_content_type("application/json");
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["workers"], 2, "{v}");
}

#[test]
fn every_listener_serves() {
    let up = Upstream::echo();
    let (a, b, admin) = (free_addr(), free_addr(), free_addr());
    let toml = format!(
        "[server]\nlisten = [\"{a}\", \"{b}\"]\nworkers = 1\n\n[admin]\nlisten = \"{admin}\"\n\n[upstreams.app]\nendpoints = [\"{}\"]\n\n[routes.all]\npaths = [\"/\"]\nupstream = \"app\"\n",
        up.url()
    );
    let gw = Gateway::start_exact(&toml, a, admin);
    for addr in [a, b] {
        assert_eq!(get(addr, "/").status, 200, "listener {addr}");
    }
    drop(gw);
}

#[test]
fn listeners_are_bound_with_so_reuseport() {
    let up = Upstream::echo();
    let gw = Gateway::start(&app(&up, ""));
    // Binding the same address succeeds only if both sockets set SO_REUSEPORT (and the
    // same user owns them). Bound but never listening, this socket takes no connections.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&gw.addr().into())
        .unwrap_or_else(|e| panic!("{} is not bound with SO_REUSEPORT: {e}", gw.addr()));
    drop(s);
    assert_eq!(get(gw.addr(), "/").status, 200);
}

#[test]
fn epoll_driver_serves_requests() {
    let up = Upstream::echo();
    let gw = Gateway::start(&app(&up, "driver = \"epoll\""));
    let mut c = Client::connect(gw.addr());
    for _ in 0..3 {
        assert_eq!(c.request(&Req::post("/e", b"x")).status, 200);
    }
}

#[test]
fn connections_beyond_max_connections_are_closed_at_once() {
    let up = Upstream::echo();
    let gw = Gateway::start(&format!(
        "{}\n[server.limits]\nmax_connections = 2\n",
        app(&up, "")
    ));
    // `Gateway::start`'s readiness probes connected too: wait until they are gone.
    assert!(
        wait_until(Duration::from_secs(2), || client_connections(&gw) == 0.0),
        "client connections left open at start"
    );
    let mut c1 = Client::connect(gw.addr());
    let mut c2 = Client::connect(gw.addr());
    assert_eq!(c1.request(&Req::get("/1")).status, 200);
    assert_eq!(c2.request(&Req::get("/2")).status, 200);
    let mut c3 = Client::connect(gw.addr());
    let _ = c3.try_send(&Req::get("/3").to_bytes());
    let start = Instant::now();
    match c3.wait_closed(Duration::from_secs(2)) {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "the connection over the limit got a response: {:?}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => panic!("the third connection was not closed (max_connections = 2): {e}"),
    }
    assert!(start.elapsed() < Duration::from_millis(1500));
    assert_eq!(
        c2.request(&Req::get("/2b")).status,
        200,
        "existing connections keep working"
    );
    drop(c1);
    assert!(
        wait_until(Duration::from_secs(2), || client_connections(&gw) == 1.0),
        "the gateway did not notice the closed connection"
    );
    let mut c = Client::connect(gw.addr());
    c.set_timeout(Duration::from_millis(500));
    let _ = c.try_send(&Req::get("/4").to_bytes());
    match c.try_read_response() {
        Ok(r) => assert_eq!(r.status, 200),
        Err(e) => panic!("a freed connection slot was not reused: {e}"),
    }
}

/// `dispatch_connections_active{side="client"}`: client connections the gateway holds open.
fn client_connections(gw: &Gateway) -> f64 {
    let r = get(gw.admin_addr(), "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    metric(&r.text(), "dispatch_connections_active{side=\"client\"}")
        .expect("dispatch_connections_active{side=\"client\"} is exposed")
}

/// Whether an access-log `status` field is `code` (a JSON number, or a string of digits).
fn status_is(v: &Value, code: u16) -> bool {
    v.as_u64() == Some(u64::from(code)) || v.as_str() == Some(code.to_string().as_str())
}

/// JSON access-log lines printed so far.
fn access_lines(gw: &Gateway) -> Vec<Value> {
    gw.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// BEHAVIOR.md "Access log": one JSON line per request with its fields.
#[test]
fn access_log_writes_one_json_line_per_request() {
    let up = Upstream::echo();
    let gw = Gateway::start(&format!(
        "[log]\naccess = \"json\"\n\n[upstreams.app]\nendpoints = [\"{}\"]\n\n[routes.all]\npaths = [\"/app\"]\nupstream = \"app\"\n",
        up.url()
    ));
    let mut c = Client::connect(gw.addr());
    c.request(&Req::get("/app/a?q=1").header("X-Request-Id", "log-1"));
    c.request(&Req::post("/app/b", b"12345").header("X-Request-Id", "log-2"));
    c.request(&Req::get("/missing").header("X-Request-Id", "log-3"));
    wait_until(Duration::from_secs(3), || access_lines(&gw).len() >= 3);
    let lines = access_lines(&gw);
    assert_eq!(
        lines.len(),
        3,
        "expected 3 access-log lines, stdout:\n{}",
        gw.stdout()
    );
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|v| v["request_id"] == id)
            .unwrap_or_else(|| panic!("no access-log line for {id}: {lines:?}"))
            .clone()
    };
    let a = by_id("log-1");
    for key in [
        "ts",
        "request_id",
        "client_ip",
        "method",
        "path",
        "route",
        "status",
        "upstream",
        "duration_ms",
        "bytes_in",
        "bytes_out",
        "worker",
    ] {
        assert!(a.get(key).is_some(), "access-log line lacks {key}: {a}");
    }
    assert_eq!(a["method"], "GET");
    assert!(
        a["path"].as_str().unwrap_or("").starts_with("/app/a"),
        "{a}"
    );
    assert!(status_is(&a["status"], 200), "{a}");
    assert_eq!(a["route"], "all");
    assert_eq!(a["upstream"], "app");
    assert_eq!(a["client_ip"], "127.0.0.1");
    let b = by_id("log-2");
    assert_eq!(b["method"], "POST");
    assert!(status_is(&b["status"], 200), "{b}");
    let c = by_id("log-3");
    assert!(status_is(&c["status"], 404), "{c}");
    assert!(c["route"].is_null() && c["upstream"].is_null(), "{c}");
    // The forwarded requests carry their trace id, upstream address and byte counts.
    assert_eq!(a["trace_id"].as_str().map(str::len), Some(32), "{a}");
    assert_eq!(a["upstream_addr"], up.addr().to_string(), "{a}");
    assert!(a["bytes_in"].as_u64().unwrap_or(0) > 0, "{a}");
    assert!(a["bytes_out"].as_u64().unwrap_or(0) > 0, "{a}");
    assert!(
        b["bytes_in"].as_u64().unwrap_or(0) >= 5,
        "the POST body counts: {b}"
    );
}

/// Lines still in a worker's batch when SIGTERM arrives are written before the process exits.
#[test]
fn access_log_loses_no_line_on_graceful_shutdown() {
    let up = Upstream::echo();
    let mut gw = Gateway::start(&format!(
        "[log]\naccess = \"json\"\n\n[upstreams.app]\nendpoints = [\"{}\"]\n\n[routes.all]\npaths = [\"/app\"]\nupstream = \"app\"\n",
        up.url()
    ));
    let mut c = Client::connect(gw.addr());
    for i in 0..50 {
        let r = c.request(&Req::get("/app/x").header("X-Request-Id", &format!("shutdown-{i}")));
        assert_eq!(r.status, 200);
    }
    drop(c);
    gw.sigterm();
    let status = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let lines = access_lines(&gw);
    for i in 0..50 {
        let id = format!("shutdown-{i}");
        assert!(
            lines.iter().any(|v| v["request_id"] == id.as_str()),
            "no line for {id}: {} lines",
            lines.len()
        );
    }
}

#[test]
fn listener_address_in_use_fails_to_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = taken.local_addr().unwrap();
    let toml = format!(
        "[server]\nlisten = [\"{addr}\"]\nworkers = 1\n\n[admin]\nlisten = \"{}\"\n\n{USERS}",
        free_addr()
    );
    let out = run_expecting_exit(&toml);
    assert!(
        matches!(out.code, Some(c) if c != 0),
        "dispatch must fail when its listen address is taken; exit {:?}: {}",
        out.code,
        out.all()
    );
}
