//! Hot reload by SIGHUP (BEHAVIOR.md "Admin API", POST /reload's signal twin): a good file is
//! applied to the next request of an open keep-alive connection; a bad file is refused, the
//! error is logged as `dispatch check` prints it, and the running config keeps serving.

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
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = c.request(&Req::get(path)).status;
        if got == want || Instant::now() >= deadline {
            return got;
        }
        pause(20);
    }
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

    let deadline = Instant::now() + Duration::from_secs(3);
    while !gw.stderr().contains("reload failed") && Instant::now() < deadline {
        pause(20);
    }
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
