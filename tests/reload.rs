//! Hot reload by SIGHUP (BEHAVIOR.md "Admin API", POST /reload's signal twin): a good file is
//! applied to the next request of an open keep-alive connection; a bad file is refused, the
//! error is logged as `dispatch check` prints it, and the running config keeps serving.
//! `server.listen` changes on reload (POST /reload or SIGHUP): an added address serves on every
//! worker, a removed one refuses new connections while its open ones finish, and one that cannot
//! be bound fails the whole reload.

mod support;

use std::time::{Duration, Instant};
use support::*;

fn sighup(gw: &Gateway) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Sends `/path` on `c` until it answers `want` (the reload is asynchronous), within 3 s.
fn until_status(c: &mut Client, path: &str, want: u16) -> u16 {
    let mut got = 0;
    wait_until(Duration::from_secs(3), || {
        got = c.request(&Req::get(path)).status;
        got == want
    });
    got
}

/// A gateway routing `/a` to an upstream that echoes the target, and a keep-alive connection
/// that has already been served once.
fn serving() -> (Upstream, Gateway, Client) {
    let up = Upstream::start(|req| Reply::text(200, &format!("up {}", req.target)));
    let gw = Gateway::start(&config(&up.url(), "/a"));
    let mut c = Client::connect(gw.addr());
    assert_eq!(c.request(&Req::get("/a")).status, 200);
    (up, gw, c)
}

/// Rewrites the running gateway's config file with `from` replaced by `to`.
fn rewrite(gw: &Gateway, from: &str, to: &str) {
    let path = gw.config_path().to_path_buf();
    let old = std::fs::read_to_string(&path).unwrap();
    assert!(old.contains(from), "{from} not in:\n{old}");
    std::fs::write(&path, old.replace(from, to)).unwrap();
}

fn config(url: &str, path: &str) -> String {
    format!("[upstreams.app]\nendpoints = [\"{url}\"]\n\n[routes.r]\npaths = [\"{path}\"]\nupstream = \"app\"\n")
}

#[test]
fn sighup_applies_a_good_config_to_an_open_keep_alive_connection() {
    let (up, gw, mut c) = serving();
    rewrite(&gw, "[\"/a\"]", "[\"/b\"]");
    sighup(&gw);

    assert_eq!(
        until_status(&mut c, "/b", 200),
        200,
        "the same connection sees the new route"
    );
    assert_error(&c.request(&Req::get("/a")), 404);
    assert_eq!(up.connections(), 1, "the upstream pool survived the reload");
}

#[test]
fn sighup_with_a_bad_config_keeps_the_running_one() {
    let (_up, gw, mut c) = serving();
    rewrite(&gw, "upstream = \"app\"", "upstream = \"ap\"");
    sighup(&gw);

    wait_until(Duration::from_secs(3), || {
        gw.stderr().contains("reload failed")
    });
    let stderr = gw.stderr();
    assert!(
        stderr.contains("reload failed")
            && stderr
                .contains("routes.r.upstream: no upstream named \"ap\" (did you mean \"app\"?)"),
        "{stderr}"
    );
    assert_eq!(
        c.request(&Req::get("/a")).status,
        200,
        "the old config still serves"
    );
}

// ---- Listener changes on reload (`server.listen`) ----

/// How a test triggers a reload.
#[derive(Clone, Copy)]
enum Trigger {
    Post,
    Sighup,
}

fn trigger(gw: &Gateway, how: Trigger) {
    match how {
        Trigger::Post => {
            let r = send_request(gw.admin_addr(), &Req::post("/reload", b""));
            assert_eq!(r.status, 200, "POST /reload: {}", r.text());
        }
        Trigger::Sighup => sighup(gw),
    }
}

/// The `listen = [...]` line for `addrs`.
fn listen_line(addrs: &[std::net::SocketAddr]) -> String {
    let quoted: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("listen = [{}]", quoted.join(", "))
}

/// A gateway with 2 workers listening on `listen` (the first is the one `Gateway` waits for)
/// and routing `/a` to `up`.
fn listening_on(up: &Upstream, listen: &[std::net::SocketAddr]) -> Gateway {
    let admin = free_addr();
    let toml = format!(
        "[server]\n{}\nworkers = 2\n\n[admin]\nlisten = \"{admin}\"\n\n{}",
        listen_line(listen),
        config(&up.url(), "/a")
    );
    Gateway::start_exact(&toml, listen[0], admin)
}

/// Whether a new connection to `addr` gets `GET path` answered 200, polling until `within`
/// has passed.
fn serves_within(addr: std::net::SocketAddr, path: &str, within: Duration) -> bool {
    let end = Instant::now() + within;
    wait_until(within, || {
        let Ok(mut c) = Client::try_connect(addr) else {
            return false;
        };
        c.set_timeout(
            end.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(50)),
        );
        c.try_send(&Req::get(path).to_bytes()).is_ok()
            && c.try_read_response().is_ok_and(|r| r.status == 200)
    })
}

/// Sends `GET path` on `n` new connections to `addr` (spread over the workers' sockets by the
/// kernel) and asserts each is answered 200 within 1 s.
fn every_connection_served(addr: std::net::SocketAddr, path: &str, n: usize) {
    for i in 0..n {
        let mut c = Client::try_connect(addr)
            .unwrap_or_else(|e| panic!("connection {i} to {addr} failed: {e}"));
        c.set_timeout(Duration::from_secs(1));
        c.try_send(&Req::get(path).to_bytes())
            .unwrap_or_else(|e| panic!("connection {i} to {addr}: send: {e}"));
        match c.try_read_response() {
            Ok(r) => assert_eq!(r.status, 200, "connection {i} to {addr}: {}", r.text()),
            Err(e) => panic!("connection {i} to {addr} not answered within 1 s: {e}"),
        }
    }
}

fn adding_a_listen_address_serves_on_it(how: Trigger) {
    let up = Upstream::start(|req| Reply::text(200, &format!("up {}", req.target)));
    let (a, b) = (free_addr(), free_addr());
    let gw = listening_on(&up, &[a]);
    let mut kept = Client::connect(a);
    assert_eq!(kept.request(&Req::get("/a")).status, 200);
    assert!(
        Client::try_connect(b).is_err(),
        "{b} accepts before it is configured"
    );

    rewrite(&gw, &listen_line(&[a]), &listen_line(&[a, b]));
    let t = Instant::now();
    trigger(&gw, how);
    assert!(
        serves_within(b, "/a", Duration::from_secs(1)),
        "the added address {b} does not serve 1 s after the reload:\n{}",
        gw.stderr()
    );
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    // Both workers accept on it: no connection lands on a socket nobody accepts from.
    every_connection_served(b, "/a", 16);
    assert_eq!(up.last_request().target, "/a");
    // The old address keeps serving, on an open connection and on new ones.
    assert_eq!(kept.request(&Req::get("/a")).status, 200);
    every_connection_served(a, "/a", 4);
}

/// `POST /reload` of a file that adds a `server.listen` address makes every worker accept and
/// proxy on it within 1 s; the old address keeps serving.
#[test]
fn reload_post_adds_a_listen_address() {
    adding_a_listen_address_serves_on_it(Trigger::Post);
}

/// The same by SIGHUP.
#[test]
fn reload_sighup_adds_a_listen_address() {
    adding_a_listen_address_serves_on_it(Trigger::Sighup);
}

/// A reload that removes a `server.listen` address refuses new connections to it within 1 s,
/// while a keep-alive connection accepted there before keeps being served; the other address
/// keeps serving.
#[test]
fn reload_removing_a_listen_address_refuses_new_connections_and_keeps_open_ones() {
    let up = Upstream::start(|req| Reply::text(200, &format!("up {}", req.target)));
    let (a, b) = (free_addr(), free_addr());
    let gw = listening_on(&up, &[a, b]);
    let mut on_b = Client::connect(b);
    assert_eq!(on_b.request(&Req::get("/a")).status, 200);

    rewrite(&gw, &listen_line(&[a, b]), &listen_line(&[a]));
    trigger(&gw, Trigger::Post);
    assert!(
        wait_until(Duration::from_secs(1), || Client::try_connect(b).is_err()),
        "{b} still accepts connections 1 s after it was removed"
    );
    // Every worker closed its socket: nothing is left in the port's reuseport group.
    for _ in 0..8 {
        assert!(
            Client::try_connect(b).is_err(),
            "{b} accepted a connection again"
        );
    }

    for i in 0..2 {
        let r = on_b.request(&Req::get("/a"));
        assert_eq!(
            r.status, 200,
            "request {i} on the connection opened on {b} before the reload"
        );
        assert!(r.keeps_alive(), "{r:?}");
    }
    every_connection_served(a, "/a", 4);
}

/// A reload adding an address that is in use fails whole: 400 with the bind error naming the
/// address, no listener is added (not even the bindable one before it), the route change in the
/// same file is not applied, and the listener set is left as it was (a later good reload adds
/// both addresses).
#[test]
fn reload_adding_an_address_in_use_changes_nothing() {
    let up = Upstream::start(|req| Reply::text(200, &format!("up {}", req.target)));
    let (a, free, taken) = (free_addr(), free_addr(), free_addr());
    // A plain socket without SO_REUSEPORT: the gateway's reuseport bind on it fails.
    let blocker = std::net::TcpListener::bind(taken).expect("bind the blocker");
    let gw = listening_on(&up, &[a]);
    let mut kept = Client::connect(a);
    assert_eq!(kept.request(&Req::get("/a")).status, 200);

    rewrite(&gw, &listen_line(&[a]), &listen_line(&[a, free, taken]));
    rewrite(&gw, "[\"/a\"]", "[\"/b\"]");
    let r = send_request(gw.admin_addr(), &Req::post("/reload", b""));
    assert_eq!(r.status, 400, "POST /reload: {}", r.text());
    r.assert_content_type("application/json");
    let body = r.json();
    assert_eq!(body["error"]["code"], 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&taken.to_string()),
        "the error names {taken}: {body}"
    );

    // The running config is unchanged: old route, old listeners.
    assert_eq!(kept.request(&Req::get("/a")).status, 200);
    assert_error(&kept.request(&Req::get("/b")), 404);
    assert_eq!(get(a, "/a").status, 200);
    assert!(
        Client::try_connect(free).is_err(),
        "{free} accepts although the reload that added it failed"
    );

    // Once the address is free, the same file reloads: both addresses are new to the running set.
    drop(blocker);
    trigger(&gw, Trigger::Post);
    assert!(
        serves_within(taken, "/b", Duration::from_secs(1)),
        "{taken} not serving after the good reload"
    );
    assert!(
        serves_within(free, "/b", Duration::from_secs(1)),
        "{free} not serving after the good reload"
    );
    assert_eq!(until_status(&mut kept, "/b", 200), 200);
}
