//! `dispatch demo`: the shipped demo config, its sample upstreams, and the curl tour.
//!
//! Owns [`DemoPorts`] (the fixed loopback ports `config/demo.toml` is written against),
//! [`SampleUpstreams`] (in-process upstream services, see [`upstreams`]) and [`curl_lines`]
//! (the commands printed for the user to try). `main.rs` wires it: load [`CONFIG_PATH`], start
//! [`SampleUpstreams`] on [`DemoPorts::default`], print [`curl_lines`], run the gateway.
//!
//! The one thing to know: the ports here and the addresses in `config/demo.toml` are one
//! contract in two files; a unit test below fails when they drift apart.
//!
//! | what               | address          |
//! | ------------------ | ---------------- |
//! | gateway            | 127.0.0.1:8080   |
//! | admin API          | 127.0.0.1:9901   |
//! | users-1, users-2   | 127.0.0.1:9101, 9102 (upstream `users`, round robin) |
//! | users-v2 (canary)  | 127.0.0.1:9103   |
//! | accounts-1         | 127.0.0.1:9104   |
//! | transactions-1     | 127.0.0.1:9105   |
//! | offline            | 127.0.0.1:9109 (nothing listens: shows a 502) |

pub mod upstreams;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub use upstreams::{SampleServer, SampleUpstreams, Service};

/// The demo config, relative to the repository root (the working directory of `cargo run`).
pub const CONFIG_PATH: &str = "config/demo.toml";

/// Loopback ports of the demo. [`Default`] gives the ones `config/demo.toml` uses; a port of 0
/// (tests) lets the OS pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoPorts {
    /// `server.listen` of the demo config.
    pub gateway: u16,
    /// `admin.listen` of the demo config.
    pub admin: u16,
    /// The two endpoints of upstream `users`: users-1 and users-2.
    pub users: [u16; 2],
    /// Upstream `users_v2`, reached with `x-canary: 1`.
    pub users_v2: u16,
    /// Upstream `accounts`: balances and orders.
    pub accounts: u16,
    /// Upstream `transactions`: transactions, shipments, and the slow endpoint.
    pub transactions: u16,
    /// Upstream `offline`: configured, never started.
    pub offline: u16,
}

impl Default for DemoPorts {
    fn default() -> Self {
        DemoPorts {
            gateway: 8080,
            admin: 9901,
            users: [9101, 9102],
            users_v2: 9103,
            accounts: 9104,
            transactions: 9105,
            offline: 9109,
        }
    }
}

/// The curl tour printed by `dispatch demo`: one command per behaviour, each under a comment
/// that says what to look for. `gateway` and `admin` are the listen addresses; an unspecified
/// address (0.0.0.0, ::) is shown as loopback so the commands work as printed.
pub fn curl_lines(gateway: SocketAddr, admin: SocketAddr) -> String {
    let gw = format!("http://{}", reachable(gateway));
    let adm = format!("http://{}", reachable(admin));
    let steps: [(&str, String); 18] = [
        (
            "Routing by path: /users goes to upstream `users` (users-1 or users-2)",
            format!("curl -i {gw}/users/u_1"),
        ),
        (
            "Load balancing: round robin over users-1 and users-2; watch \"upstream\"",
            format!("for i in 1 2 3 4; do curl -s {gw}/users/u_1; echo; done"),
        ),
        ("A list, same route", format!("curl -s {gw}/users")),
        (
            "Method not allowed: the users route takes GET and HEAD only -> 405 with Allow",
            format!("curl -i -X DELETE {gw}/users/u_1"),
        ),
        (
            "Header routing: x-canary: 1 goes to users-v2 (a different body shape)",
            format!("curl -s -H 'x-canary: 1' {gw}/users/u_1"),
        ),
        (
            "Host routing + strip_prefix: /bank/* only for Host bank.localhost; /bank is removed upstream",
            format!("curl -i -H 'Host: bank.localhost' {gw}/bank/accounts/u_1/balance"),
        ),
        (
            "Same path, another Host: no route matches -> 404 JSON error",
            format!("curl -i -H 'Host: shop.localhost' {gw}/bank/accounts/u_1/balance"),
        ),
        (
            "Named segment: /orders/:id (accounts service)",
            format!("curl -s {gw}/orders/o_1"),
        ),
        (
            "Rewrite: /api/v1/transactions is sent upstream as /transactions (see X-Seen-Path)",
            format!("curl -i '{gw}/api/v1/transactions?userId=u_1&limit=2'"),
        ),
        (
            "What the upstream received: X-Forwarded-For, X-Request-Id, Via; hop-by-hop headers gone",
            format!("curl -s -H 'Connection: keep-alive, x-secret' -H 'x-secret: 1' -d '{{\"hello\":\"world\"}}' {gw}/echo"),
        ),
        ("No route -> 404 with the standard JSON error body", format!("curl -i {gw}/nope")),
        (
            "Route timeout of 1s against a 3s upstream -> 504",
            format!("curl -i '{gw}/slow?ms=3000'"),
        ),
        (
            "Upstream down (nothing listens on its port) -> 502 after the retry",
            format!("curl -i {gw}/offline"),
        ),
        (
            "Circuit breaker: 3 failures open it; then 503 with Retry-After, no upstream attempt",
            format!("for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{{http_code}} ' {gw}/offline; done; echo; curl -i {gw}/offline"),
        ),
        (
            "Admin API: health of the gateway (\"degraded\" while the breaker is open)",
            format!("curl -s {adm}/health"),
        ),
        (
            "Canary split 80/20, sticky on x-user-id: a user always lands on the same side",
            format!("for u in 1 2 3 4 5 6 7 8; do curl -s -H \"x-user-id: user$u\" {gw}/split/users/u_1; echo; done"),
        ),
        (
            "Service discovery: register users-v2 as a third endpoint of `users`, then list it",
            format!("curl -s -X PUT -d '{{\"url\": \"http://127.0.0.1:9103\", \"weight\": 1}}' {adm}/upstreams/users/endpoints; curl -s {adm}/upstreams"),
        ),
        (
            "... and deregister it again",
            format!("curl -s -X DELETE '{adm}/upstreams/users/endpoints?url=http://127.0.0.1:9103'"),
        ),
    ];

    let mut out = format!("Dispatch demo: gateway on {gw}, admin API on {adm}\nTry these:\n");
    for (what, command) in steps {
        let _ = write!(out, "\n  # {what}\n  {command}\n");
    }
    out
}

/// An address a client on this machine can connect to: unspecified becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config/demo.toml` and [`DemoPorts::default`] must name the same addresses.
    #[test]
    fn demo_config_uses_the_demo_ports() {
        let config = include_str!("../../config/demo.toml");
        let p = DemoPorts::default();
        for port in [
            p.gateway,
            p.admin,
            p.users[0],
            p.users[1],
            p.users_v2,
            p.accounts,
            p.transactions,
            p.offline,
        ] {
            assert!(
                config.contains(&format!("127.0.0.1:{port}\"")),
                "config/demo.toml lacks 127.0.0.1:{port}"
            );
        }
    }

    #[test]
    fn curl_lines_use_reachable_addresses() {
        let text = curl_lines(
            "0.0.0.0:8080".parse().unwrap(),
            "127.0.0.1:9901".parse().unwrap(),
        );
        assert!(text.contains("curl -i http://127.0.0.1:8080/users/u_1"));
        assert!(text.contains("curl -s http://127.0.0.1:9901/health"));
        assert!(text.contains("x-canary: 1"));
        assert!(!text.contains("0.0.0.0"));
    }
}
