//! Helpers for `tests/conformance.rs` (protocol conformance at the request side): a gateway
//! with named routes in front of one upstream, raw exchanges, and line-ending checks.

use super::{Client, Gateway, Response, Upstream};
use std::net::SocketAddr;
use std::time::Duration;

/// Whether `bytes` hold a LF not preceded by CR.
pub fn has_bare_lf(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

/// A gateway whose upstream `app` is `up` (`retries = 0`), with `routes` (TOML tables that
/// name `upstream = "app"`) appended verbatim.
pub fn gateway_with_routes(up: &Upstream, routes: &str) -> Gateway {
    Gateway::start(&format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\nretries = 0\n\n{routes}\n",
        up.url()
    ))
}

/// Sends `raw` on a new connection and reads the response to `method`; returns it with the
/// connection, for follow-ups on the same connection.
pub fn exchange(addr: SocketAddr, raw: &[u8], method: &str) -> (Response, Client) {
    let mut c = Client::connect(addr);
    c.send(raw);
    let r = c
        .try_read_response_for(method)
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(raw)));
    (r, c)
}

/// Sends `raw` on a new connection and expects a 400 with the JSON error body, then the
/// connection closed.
pub fn assert_400_and_close(addr: SocketAddr, raw: &[u8]) {
    let (r, mut c) = exchange(addr, raw, "GET");
    assert_eq!(
        r.status,
        400,
        "request {:?} -> {} {:?}",
        String::from_utf8_lossy(raw),
        r.status,
        r.text()
    );
    super::assert_error(&r, 400);
    c.assert_closed(Duration::from_secs(2));
}
