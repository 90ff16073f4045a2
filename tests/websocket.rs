//! WebSocket tunnels (issue 13; README "WebSocket"): on a `websocket = true` route the opening
//! handshake (RFC 6455 §4.1) is forwarded with its `Upgrade`, the upstream's 101 is relayed,
//! and bytes flow both ways until the tunnel ends (both sides done, idle, drain), half-closes
//! passed on. Elsewhere `Upgrade` is removed and the request is an ordinary one. Real sockets
//! throughout: a minimal RFC 6455 client and an echo upstream (`support::websocket`).

mod support;

use std::time::{Duration, Instant};

use support::websocket::{
    encode, head_header, head_status, Seen, WsClient, WsUpstream, BINARY, CLOSE, TEXT,
};
use support::{assert_error, metric, wait_until, Client, Gateway, Reply, Req, Upstream};

/// A gateway with the websocket route `/ws` to `ws`, a websocket route `/plain-ws` and an
/// ordinary route `/api` both to `plain`, plus `extra` TOML.
fn gateway(ws: &WsUpstream, plain: &Upstream, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "[upstreams.live]\nendpoints = [\"{}\"]\nretries = 0\n\n\
         [upstreams.plain]\nendpoints = [\"{}\"]\nretries = 0\n\n\
         [routes.live]\npaths = [\"/ws\"]\nupstream = \"live\"\nwebsocket = true\n\n\
         [routes.plain_ws]\npaths = [\"/plain-ws\"]\nupstream = \"plain\"\nwebsocket = true\n\n\
         [routes.api]\npaths = [\"/api\"]\nupstream = \"plain\"\n\n{extra}\n",
        ws.url(),
        plain.url()
    ))
}

fn scrape(gw: &Gateway, series: &str) -> f64 {
    let r = support::get(gw.admin_addr(), "/metrics");
    metric(&r.text(), series).unwrap_or(-1.0)
}

/// Text and binary frames go both ways, a frame sent right behind the handshake's head is
/// delivered first, and the upgrade reaches the upstream with its `Upgrade`, `Connection:
/// upgrade` and key, and the gateway's forwarding fields.
#[test]
fn frames_flow_both_ways_through_the_tunnel() {
    let ws = WsUpstream::start();
    let plain = Upstream::echo();
    let gw = gateway(&ws, &plain, "");
    let early = encode(TEXT, b"early", Some([1, 2, 3, 4]));
    let mut c = WsClient::open_with(gw.addr(), "/ws/chat", &early);
    c.assert_switched();
    assert!(c.head.contains("Via: 1.1 dispatch"), "{}", c.head);
    assert!(head_header(&c.head, "x-request-id").is_some(), "{}", c.head);
    assert_eq!(c.recv_text(), "early");
    c.send_text("hello");
    assert_eq!(c.recv_text(), "hello");
    c.send(BINARY, &[0, 1, 2, 255]);
    assert_eq!(c.recv(), (BINARY, vec![0, 1, 2, 255]));

    let head = ws.head();
    assert!(head.starts_with("GET /ws/chat HTTP/1.1\r\n"), "{head}");
    assert_eq!(head_header(&head, "upgrade"), Some("websocket"), "{head}");
    assert_eq!(head_header(&head, "connection"), Some("upgrade"), "{head}");
    assert_eq!(
        head_header(&head, "sec-websocket-key"),
        Some(c.key.as_str()),
        "{head}"
    );
    assert_eq!(
        head_header(&head, "sec-websocket-version"),
        Some("13"),
        "{head}"
    );
    assert!(head_header(&head, "x-forwarded-for").is_some(), "{head}");
    assert!(head_header(&head, "via").is_some(), "{head}");

    // The route table says which routes tunnel.
    let routes = support::get(gw.admin_addr(), "/routes").json();
    let websocket = |name: &str| {
        routes["routes"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["route"] == name))
            .map(|r| r["websocket"].clone())
    };
    assert_eq!(websocket("live"), Some(serde_json::json!(true)), "{routes}");
    assert_eq!(websocket("api"), Some(serde_json::json!(false)), "{routes}");
}

/// A 1 MiB binary message crosses the tunnel and comes back byte for byte.
#[test]
fn a_one_mib_message_is_echoed_intact() {
    let ws = WsUpstream::start();
    let plain = Upstream::echo();
    let gw = gateway(&ws, &plain, "");
    let mut c = WsClient::open(gw.addr(), "/ws");
    let message: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    c.send(BINARY, &message);
    let (opcode, echoed) = c.recv();
    assert_eq!(opcode, BINARY);
    assert_eq!(echoed.len(), message.len());
    assert!(echoed == message, "the echoed message differs");
    assert!(ws.seen().contains(&Seen::Binary(1024 * 1024)));
}

/// The client closes: its close frame is echoed, and its FIN reaches the upstream as the end
/// of its input (a half-close) while the upstream's side still reaches the client; then the
/// upstream closes and the client's connection ends.
#[test]
fn a_close_from_the_client_reaches_the_upstream_as_a_half_close() {
    let ws = WsUpstream::start();
    let plain = Upstream::echo();
    let gw = gateway(&ws, &plain, "");

    // FIN right behind a data frame: the answer to it, and the upstream's word that it saw
    // the end, still arrive.
    let mut c = WsClient::open(gw.addr(), "/ws");
    c.send_text("last words");
    c.shutdown_write();
    assert_eq!(c.recv_text(), "last words");
    assert_eq!(c.recv_text(), "eof seen");
    assert!(c.ends_within(Duration::from_secs(5)));

    // The closing handshake proper.
    let ws = WsUpstream::start();
    let gw = gateway(&ws, &plain, "");
    let mut c = WsClient::open(gw.addr(), "/ws");
    c.send_close(1000);
    assert_eq!(c.recv(), (CLOSE, vec![0x03, 0xe8]));
    c.shutdown_write();
    assert!(
        ws.wait_seen(Duration::from_secs(5), &Seen::Eof),
        "{:?}",
        ws.seen()
    );
    assert!(c.ends_within(Duration::from_secs(5)));
    assert_eq!(ws.seen()[1..], [Seen::Close(1000), Seen::Eof]);
}

/// The upstream closes: its close frame and its FIN reach the client (the client's input
/// ends) while the client can still answer, and its answer reaches the upstream.
#[test]
fn a_close_from_the_upstream_reaches_the_client_as_a_half_close() {
    let ws = WsUpstream::start();
    let plain = Upstream::echo();
    let gw = gateway(&ws, &plain, "");
    let mut c = WsClient::open(gw.addr(), "/ws");
    c.send_text("close");
    assert_eq!(c.recv(), (CLOSE, vec![0x03, 0xe8]));
    assert!(
        c.ends_within(Duration::from_secs(5)),
        "the upstream's FIN is passed on"
    );
    // The client's side still flows: its close reply reaches the upstream after the
    // upstream's own end.
    c.send_close(1000);
    assert!(
        ws.wait_seen(Duration::from_secs(5), &Seen::AfterOwnEnd(CLOSE)),
        "{:?}",
        ws.seen()
    );
    c.shutdown_write();
    assert!(
        ws.wait_seen(Duration::from_secs(5), &Seen::Eof),
        "{:?}",
        ws.seen()
    );
}

/// Upgrade off a websocket route (and a protocol other than websocket on one) is removed and
/// the request served as an ordinary one: the upstream sees no `Upgrade`, the client gets the
/// upstream's answer and its connection stays HTTP.
#[test]
fn upgrade_is_removed_where_no_websocket_tunnel_applies() {
    let ws = WsUpstream::start();
    let plain = Upstream::echo();
    let gw = gateway(&ws, &plain, "");
    let mut c = Client::connect(gw.addr());
    let key = support::websocket::new_key();
    for (target, protocol) in [("/api/chat", "websocket"), ("/plain-ws", "h2c")] {
        let r = c.request(
            &Req::get(target)
                .header("Upgrade", protocol)
                .header("Connection", "Upgrade")
                .header("Sec-WebSocket-Key", &key)
                .header("Sec-WebSocket-Version", "13"),
        );
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert!(!r.has_header("upgrade"), "{target}: {r:?}");
        let seen = plain.last_request();
        assert_eq!(seen.path(), target);
        assert!(!seen.has_header("upgrade"), "{target}: {:?}", seen.headers);
        assert!(
            !seen.has_header("connection"),
            "{target}: {:?}",
            seen.headers
        );
        // End-to-end fields go on as for any request.
        assert_eq!(seen.header("sec-websocket-key"), Some(key.as_str()));
    }
    // Still HTTP on the same connection.
    assert_eq!(c.request(&Req::get("/api/next")).status, 200);
    assert_eq!(ws.connections(), 0);
}

/// An upstream that refuses the upgrade (any answer but 101) answers an ordinary request: the
/// client gets it and its connection goes on as HTTP; the refused upgrade's upstream
/// connection, opened for it alone, is not reused.
#[test]
fn an_upstream_refusing_the_upgrade_answers_an_ordinary_request() {
    let ws = WsUpstream::start();
    let plain = Upstream::start(|req| {
        if req.has_header("upgrade") {
            Reply::text(403, "no websockets here")
        } else {
            Reply::text(200, "plain")
        }
    });
    let gw = gateway(&ws, &plain, "");
    let mut c = Client::connect(gw.addr());
    let key = support::websocket::new_key();
    let r = c.request(
        &Req::get("/plain-ws")
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Key", &key)
            .header("Sec-WebSocket-Version", "13"),
    );
    assert_eq!((r.status, r.text().as_str()), (403, "no websockets here"));
    assert!(!r.has_header("upgrade"), "{r:?}");
    let seen = plain.last_request();
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    // The same client connection serves the next request.
    let r = c.request(&Req::get("/plain-ws"));
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    assert_eq!(
        plain.connections(),
        2,
        "the upgrade's connection is never pooled"
    );
}

/// A malformed handshake on a websocket route is the gateway's 400, never forwarded.
#[test]
fn a_malformed_handshake_is_refused_with_400() {
    let ws = WsUpstream::start();
    let plain = Upstream::echo();
    let gw = gateway(&ws, &plain, "");
    let r = Client::connect(gw.addr()).request(
        &Req::get("/ws")
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Version", "13"),
    );
    assert_error(&r, 400);
    assert!(r.text().contains("Sec-WebSocket-Key is missing"), "{r:?}");
    assert_eq!(ws.connections(), 0);
}

/// No byte either way for `keepalive_timeout` closes the tunnel's both sides; traffic keeps it
/// open.
#[test]
fn an_idle_tunnel_is_closed_after_the_keepalive_timeout() {
    let ws = WsUpstream::start();
    let plain = Upstream::echo();
    let gw = gateway(&ws, &plain, "[server.limits]\nkeepalive_timeout = \"1s\"\n");
    let mut c = WsClient::open(gw.addr(), "/ws");
    // Traffic at half the timeout keeps it open past the timeout.
    let opened = Instant::now();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        c.send_text("still here");
        assert_eq!(c.recv_text(), "still here");
    }
    assert!(opened.elapsed() > Duration::from_millis(1400));
    let quiet = Instant::now();
    assert!(
        c.ends_within(Duration::from_secs(5)),
        "the idle tunnel closed"
    );
    assert!(
        quiet.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the idle timeout",
        quiet.elapsed()
    );
    assert!(
        ws.wait_seen(Duration::from_secs(5), &Seen::Eof),
        "{:?}",
        ws.seen()
    );
}

/// A tunnel counts in `dispatch_connections_active` on both sides for its life, and is one
/// request to the access log and the metrics: status 101, the bytes of the whole exchange
/// both ways, the tunnel's duration.
#[test]
fn a_tunnel_counts_as_active_connections_and_is_logged_once() {
    let ws = WsUpstream::start();
    let plain = Upstream::echo();
    let gw = gateway(&ws, &plain, "[log]\naccess = \"json\"\n");
    let client = r#"dispatch_connections_active{side="client"}"#;
    let upstream = r#"dispatch_connections_active{side="upstream"}"#;
    let mut c = WsClient::open(gw.addr(), "/ws");
    c.send_text("ping");
    assert_eq!(c.recv_text(), "ping");
    assert_eq!(scrape(&gw, client), 1.0);
    assert_eq!(scrape(&gw, upstream), 1.0);
    std::thread::sleep(Duration::from_millis(300));
    c.send_close(1000);
    assert_eq!(c.recv().0, CLOSE);
    c.shutdown_write();
    assert!(c.ends_within(Duration::from_secs(5)));
    assert!(wait_until(Duration::from_secs(5), || scrape(&gw, client)
        == 0.0
        && scrape(&gw, upstream) == 0.0));
    assert_eq!(
        scrape(
            &gw,
            r#"dispatch_requests_total{route="live",method="GET",status="101"}"#
        ),
        1.0
    );

    let mut lines = Vec::new();
    assert!(wait_until(Duration::from_secs(5), || {
        lines = gw
            .stdout()
            .lines()
            .filter(|l| l.contains("\"route\":\"live\""))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
            .collect();
        !lines.is_empty()
    }));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["status"], 101, "{line}");
    let request = support::websocket::handshake_request("/ws", &c.key).len() as u64;
    // The head, the "ping" frame (4 + 4-byte mask + 2) and the close frame (2 + 4 + 2).
    assert_eq!(line["bytes_in"], request + 10 + 8, "{line}");
    let head = c.head.len() as u64;
    // The 101 head, the echoed "ping" (2 + 4) and close (2 + 2).
    assert_eq!(line["bytes_out"], head + 6 + 4, "{line}");
    assert!(
        line["duration_ms"].as_f64().unwrap_or(0.0) >= 300.0,
        "{line}"
    );
}

/// On SIGTERM a tunnel goes on until `drain_timeout`, then is closed, and the gateway exits;
/// the tunnel is logged.
#[test]
fn a_drain_closes_a_tunnel_at_the_drain_timeout() {
    let ws = WsUpstream::start();
    let plain = Upstream::echo();
    let mut gw = gateway(
        &ws,
        &plain,
        "[server]\ndrain_timeout = \"1s\"\n\n[log]\naccess = \"json\"\n",
    );
    let mut c = WsClient::open(gw.addr(), "/ws");
    c.send_text("before");
    assert_eq!(c.recv_text(), "before");
    let signalled = Instant::now();
    gw.sigterm();
    // The drain gives the tunnel until drain_timeout.
    c.send_text("during the drain");
    assert_eq!(c.recv_text(), "during the drain");
    assert!(c.ends_within(Duration::from_secs(5)), "the drain closed it");
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before drain_timeout",
        signalled.elapsed()
    );
    assert!(
        ws.wait_seen(Duration::from_secs(5), &Seen::Eof),
        "{:?}",
        ws.seen()
    );
    assert!(
        gw.wait_exit(Duration::from_secs(5)).is_some(),
        "the gateway exited"
    );
    let out = gw.stdout();
    let logged: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("\"route\":\"live\""))
        .collect();
    assert_eq!(logged.len(), 1, "{out}");
    assert!(logged[0].contains("\"status\":101"), "{}", logged[0]);
}

/// A reload leaves an open tunnel alone, even one that removes its route: new requests get
/// the new config, the tunnel keeps flowing.
#[test]
fn a_reload_leaves_open_tunnels_alone() {
    let ws = WsUpstream::start();
    let plain = Upstream::echo();
    let gw = gateway(&ws, &plain, "");
    let mut c = WsClient::open(gw.addr(), "/ws");
    c.send_text("before");
    assert_eq!(c.recv_text(), "before");
    let path = gw.config_path().to_path_buf();
    let old = std::fs::read_to_string(&path).unwrap();
    let new = old.replace("paths = [\"/ws\"]", "paths = [\"/ws-moved\"]");
    assert_ne!(old, new);
    std::fs::write(&path, new).unwrap();
    let r = support::send_request(gw.admin_addr(), &Req::post("/reload", b""));
    assert_eq!(r.status, 200, "POST /reload: {}", r.text());
    let fresh = WsClient::open_with(gw.addr(), "/ws", b"");
    assert_eq!(head_status(&fresh.head), 404, "{}", fresh.head);
    c.send_text("after");
    assert_eq!(c.recv_text(), "after");
}

/// The phases before the proxy apply to an upgrade as to any request: a rate limit counts it
/// (its fields ride on the 101) and refuses the one over the limit with 429, never tunnelled.
#[test]
fn rate_limits_apply_to_the_upgrade_request() {
    let ws = WsUpstream::start();
    let gw = Gateway::start(&format!(
        "[upstreams.live]\nendpoints = [\"{}\"]\nretries = 0\n\n\
         [routes.live]\npaths = [\"/ws\"]\nupstream = \"live\"\nwebsocket = true\nrate_limits = [\"one\"]\n\n\
         [rate_limits.one]\nalgorithm = \"fixed_window\"\nkey = \"ip\"\nlimit = 1\nwindow = \"1h\"\n",
        ws.url()
    ));
    let mut c = WsClient::open(gw.addr(), "/ws");
    assert_eq!(
        head_header(&c.head, "ratelimit-limit"),
        Some("1"),
        "{}",
        c.head
    );
    assert_eq!(
        head_header(&c.head, "ratelimit-remaining"),
        Some("0"),
        "{}",
        c.head
    );
    let refused = WsClient::open_with(gw.addr(), "/ws", b"");
    assert_eq!(head_status(&refused.head), 429, "{}", refused.head);
    assert!(
        head_header(&refused.head, "retry-after").is_some(),
        "{}",
        refused.head
    );
    assert_eq!(ws.connections(), 1);
    // The first tunnel is unaffected.
    c.send_text("still mine");
    assert_eq!(c.recv_text(), "still mine");
}

/// A 101 to a protocol the client did not offer (RFC 9110 §7.8) is the upstream's failure,
/// answered 502: never tunnelled.
#[test]
fn a_switch_to_another_protocol_is_a_502() {
    let ws = WsUpstream::start();
    let plain = Upstream::start(|_| {
        Reply::raw(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        )
    });
    let gw = gateway(&ws, &plain, "");
    let c = WsClient::open_with(gw.addr(), "/plain-ws", b"");
    assert_eq!(head_status(&c.head), 502, "{}", c.head);
}

/// `dispatch check` loads a websocket route (once refused as a later milestone's key) and
/// lists `websocket` among its policies.
#[test]
fn check_loads_a_websocket_route_and_shows_it() {
    let out = support::check(
        "[upstreams.live]\nendpoints = [\"http://127.0.0.1:9001\"]\n\n\
         [routes.live]\npaths = [\"/ws\"]\nupstream = \"live\"\nwebsocket = true\n",
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.all()
            .lines()
            .any(|l| l.contains("policies:") && l.contains("websocket")),
        "{}",
        out.all()
    );
}

/// Over TLS the tunnel is the same: the handshake, frames both ways (a 1 MiB message
/// intact), a first frame sent in the handshake's own record, and the client's close
/// answered by the upstream's, through `[server.tls]` and rustls on both the gateway's and the
/// test's side.
#[test]
fn a_tunnel_works_over_tls() {
    use std::io::Write;
    let pki = support::tls::Pki::new("ws");
    let cert = pki.server("gw", &["localhost"], 30);
    let ws = WsUpstream::start();
    let plain = Upstream::echo();
    let addr = support::free_addr();
    let gw = gateway(
        &ws,
        &plain,
        &format!(
            "[server.tls]\nlisten = [\"{addr}\"]\ncertificates = [{{ cert = {:?}, key = {:?} }}]\n",
            cert.cert_path.display().to_string(),
            cert.key_path.display().to_string()
        ),
    );
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn =
        rustls::ClientConnection::new(pki.client_config(&["http/1.1"], None, &[]), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let key = support::websocket::new_key();
    let mut first = support::websocket::handshake_request("/ws/tls", &key).into_bytes();
    first.extend_from_slice(&encode(TEXT, b"early", Some([9, 8, 7, 6])));
    s.write_all(&first).unwrap();
    let head = support::websocket::read_head(&mut s).unwrap();
    assert_eq!(head_status(&head), 101, "{head}");
    assert_eq!(
        head_header(&head, "sec-websocket-accept"),
        Some(support::websocket::accept_key(&key).as_str()),
        "{head}"
    );
    let recv = |s: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>| {
        support::websocket::read_frame(s).unwrap().expect("a frame")
    };
    assert_eq!(recv(&mut s), (TEXT, b"early".to_vec()));
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
    s.write_all(&encode(BINARY, &big, Some([1, 2, 3, 4])))
        .unwrap();
    let (op, back) = recv(&mut s);
    assert_eq!(op, BINARY);
    assert!(back == big, "the 1 MiB message came back changed");
    s.write_all(&encode(
        CLOSE,
        &support::websocket::close_payload(1000),
        Some([5, 5, 5, 5]),
    ))
    .unwrap();
    assert_eq!(recv(&mut s).0, CLOSE);
    let head = ws.head();
    assert!(
        head_header(&head, "x-forwarded-proto") == Some("https"),
        "{head}"
    );
    drop(gw);
}
