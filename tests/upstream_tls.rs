//! Upstream TLS (issue 13, BEHAVIOR.md "TLS"): `https://` endpoints verified against `tls_ca`
//! for `tls_server_name` or the URL's host; a failed verification or handshake is a connect
//! failure (retried on another endpoint, counted by the breaker, 502 at the end); a client
//! certificate for mTLS; pooled TLS connections reused like plain ones; health checks,
//! aggregate calls and registered endpoints over TLS too; the `tls_*` files read at load.
//!
//! Each TLS upstream is a scripted `Upstream` behind rustls (`support::tls_upstream`), which
//! records every handshake (SNI, client certificate, ALPN) and every failed one.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::tls::Pki;
use support::tls_upstream::TlsUpstream;
use support::*;

/// A TOML string for a file path.
fn toml_path(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// An upstream answering `name` to every request.
fn named(name: &'static str) -> Upstream {
    Upstream::start(move |_| Reply::text(200, name))
}

/// A TLS upstream answering `name`, with a certificate from `pki` for `names`.
fn tls_named(name: &'static str, pki: &Pki, names: &[&str]) -> TlsUpstream {
    let cert = pki.server(name, names, 30);
    TlsUpstream::start(named(name), &cert, None)
}

/// A gateway with upstream `ledger` (these endpoints, `keys`, no outlier ejection so that only
/// what the test sets decides) behind the catch-all route, plus `extra` TOML.
fn gateway(endpoints: &str, keys: &str, extra: &str) -> Gateway {
    Gateway::start(&ledger_config(endpoints, keys, extra))
}

fn ledger_config(endpoints: &str, keys: &str, extra: &str) -> String {
    format!(
        r#"
[upstreams.ledger]
endpoints = {endpoints}
retries = 0
connect_timeout = "2s"
{keys}

[upstreams.ledger.outlier]
consecutive_failures = 0

{extra}

[routes.all]
paths = ["/"]
upstream = "ledger"
"#
    )
}

fn tls_ca(pki: &Pki) -> String {
    format!("tls_ca = {}", toml_path(&pki.ca_path))
}

fn urls(ups: &[&TlsUpstream]) -> String {
    let list: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.url())).collect();
    format!("[{}]", list.join(", "))
}

fn metrics(gw: &Gateway) -> String {
    get(gw.admin_addr(), "/metrics").text()
}

/// An https endpoint whose certificate chains to `tls_ca` is served; the upstream sees
/// ALPN http/1.1, no SNI for an IP address host, and the Host a plain upstream would.
#[test]
fn https_upstream_verified_with_tls_ca_answers() {
    let pki = Pki::new("internal");
    let up = tls_named("ledger", &pki, &["127.0.0.1"]);
    let gw = gateway(&urls(&[&up]), &tls_ca(&pki), "");
    let r = get(gw.addr(), "/accounts/7");
    assert_eq!((r.status, r.text()), (200, "ledger".to_string()), "{r:?}");
    let req = up.inner.last_request();
    assert_eq!(req.target, "/accounts/7");
    assert_eq!(
        req.header("host"),
        Some("localhost"),
        "the client's Host goes on, as to a plain upstream"
    );
    let hs = up.handshakes();
    assert_eq!(hs.len(), 1, "{hs:?}");
    assert_eq!(hs[0].alpn.as_deref(), Some(&b"http/1.1"[..]), "{hs:?}");
    assert_eq!(hs[0].sni, None, "RFC 6066 §3: no SNI for an IP address");
    assert!(
        hs[0].client_cert.is_none(),
        "no client certificate unless configured"
    );
}

/// A certificate from a CA that `tls_ca` does not hold fails verification: a connect failure
/// (502, `outcome="connect_error"`), and the request never reaches the upstream.
#[test]
fn untrusted_upstream_certificate_is_a_502_connect_failure() {
    let pki = Pki::new("internal");
    let rogue = Pki::new("rogue");
    let up = tls_named("ledger", &rogue, &["127.0.0.1"]);
    let gw = gateway(&urls(&[&up]), &tls_ca(&pki), "");
    let r = get(gw.addr(), "/accounts/7");
    assert_error(&r, 502);
    assert_eq!(up.inner.request_count(), 0, "the request must not be sent");
    assert!(up.handshakes().is_empty());
    assert!(
        up.wait_failed(1),
        "the upstream saw no failed handshake: {:?}",
        up.failed_handshakes()
    );
    assert_eq!(
        metric(
            &metrics(&gw),
            "dispatch_upstream_requests_total{upstream=\"ledger\",outcome=\"connect_error\"}"
        ),
        Some(1.0)
    );
}

/// With two endpoints, the one whose certificate fails verification is skipped by the retry
/// (as a refused connect would be): every request is answered by the good one.
#[test]
fn endpoint_with_an_untrusted_certificate_is_skipped_by_retry() {
    let pki = Pki::new("internal");
    let rogue = Pki::new("rogue");
    let bad = tls_named("bad", &rogue, &["127.0.0.1"]);
    let good = tls_named("good", &pki, &["127.0.0.1"]);
    let config = ledger_config(&urls(&[&bad, &good]), &tls_ca(&pki), "");
    let gw = Gateway::start(&config.replace("retries = 0", "retries = 1"));
    // Three requests: the retry budget always allows 3 retries a second.
    for i in 0..3 {
        let r = get(gw.addr(), &format!("/r{i}"));
        assert_eq!(
            (r.status, r.text()),
            (200, "good".to_string()),
            "request {i}"
        );
    }
    assert_eq!(bad.inner.request_count(), 0);
    assert_eq!(good.inner.request_count(), 3);
    assert!(
        bad.wait_failed(1),
        "round robin never tried the bad endpoint"
    );
}

/// A certificate valid for other names only (not the URL's host) fails verification: 502.
#[test]
fn upstream_certificate_for_another_name_is_a_502() {
    let pki = Pki::new("internal");
    let up = tls_named("ledger", &pki, &["ledger.internal"]);
    let gw = gateway(&urls(&[&up]), &tls_ca(&pki), "");
    assert_error(&get(gw.addr(), "/"), 502);
    assert_eq!(up.inner.request_count(), 0);
}

/// `tls_server_name` is sent in SNI and is the name the certificate is verified for, in place
/// of the URL's IP address; Host is unchanged.
#[test]
fn tls_server_name_is_sent_as_sni_and_verified() {
    let pki = Pki::new("internal");
    let up = tls_named("ledger", &pki, &["ledger.internal"]);
    let gw = gateway(
        &urls(&[&up]),
        &format!("{}\ntls_server_name = \"ledger.internal\"", tls_ca(&pki)),
        "",
    );
    let r = get(gw.addr(), "/");
    assert_eq!((r.status, r.text()), (200, "ledger".to_string()), "{r:?}");
    assert_eq!(up.handshakes()[0].sni.as_deref(), Some("ledger.internal"));
    assert_eq!(up.inner.last_request().header("host"), Some("localhost"));
}

/// An upstream that requires a client certificate refuses the gateway without
/// `tls_client_cert` (502, a connect failure, nothing sent on), and accepts it with one: the
/// upstream saw exactly the configured certificate.
#[test]
fn mtls_upstream_needs_tls_client_cert() {
    let pki = Pki::new("internal");
    let cert = pki.server("ledger", &["127.0.0.1"], 30);
    let client = pki.client("gateway", "gateway.internal");
    let up = TlsUpstream::start(named("ledger"), &cert, Some(&pki));

    let without = gateway(&urls(&[&up]), &tls_ca(&pki), "");
    assert_error(&get(without.addr(), "/"), 502);
    assert_eq!(up.inner.request_count(), 0);
    assert!(up.wait_failed(1), "the upstream refused no handshake");
    assert_eq!(
        metric(
            &metrics(&without),
            "dispatch_upstream_requests_total{upstream=\"ledger\",outcome=\"connect_error\"}"
        ),
        Some(1.0),
        "a refused client certificate is a connect failure"
    );

    let with = gateway(
        &urls(&[&up]),
        &format!(
            "{}\ntls_client_cert = {}\ntls_client_key = {}",
            tls_ca(&pki),
            toml_path(&client.cert_path),
            toml_path(&client.key_path)
        ),
        "",
    );
    let r = get(with.addr(), "/");
    assert_eq!((r.status, r.text()), (200, "ledger".to_string()), "{r:?}");
    let hs = up.handshakes();
    assert_eq!(hs.len(), 1, "{hs:?}");
    assert_eq!(hs[0].client_cert.as_ref(), Some(&client.cert_der));
}

/// Pooled TLS connections are reused like plain ones: several requests, one TCP connection
/// and one handshake at the upstream.
#[test]
fn pooled_tls_connection_is_reused_with_one_handshake() {
    let pki = Pki::new("internal");
    let up = tls_named("ledger", &pki, &["127.0.0.1"]);
    let gw = gateway(&urls(&[&up]), &tls_ca(&pki), "");
    for i in 0..5 {
        let r = get(gw.addr(), &format!("/n{i}"));
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(up.inner.request_count(), 5);
    assert_eq!(up.handshakes().len(), 1, "one handshake for five requests");
    assert_eq!(up.inner.connections(), 1, "one upstream connection");
    let m = metrics(&gw);
    assert_eq!(
        metric(
            &m,
            "dispatch_upstream_pool_reused_total{upstream=\"ledger\"}"
        ),
        Some(4.0),
        "{m}"
    );
}

/// Verification failures count as connect failures for the breaker: it opens at
/// `failure_threshold`, and the next request is answered 503 without a connect.
#[test]
fn repeated_verification_failures_open_the_breaker() {
    let pki = Pki::new("internal");
    let rogue = Pki::new("rogue");
    let up = tls_named("ledger", &rogue, &["127.0.0.1"]);
    let gw = gateway(
        &urls(&[&up]),
        &tls_ca(&pki),
        "[upstreams.ledger.breaker]\nfailure_threshold = 2\nrecovery_timeout = \"30s\"\nfailure_on = [\"connect\"]\n",
    );
    assert_error(&get(gw.addr(), "/"), 502);
    assert_error(&get(gw.addr(), "/"), 502);
    assert!(up.wait_failed(2));
    assert_error_retry_after(&get(gw.addr(), "/"), 503);
    assert_eq!(
        up.failed_handshakes().len(),
        2,
        "the open breaker sends nothing to the upstream"
    );
}

/// Active health checks reach an https endpoint over TLS with the upstream's settings: the
/// trusted endpoint is healthy (its checks arrive decrypted), the one whose certificate fails
/// verification is marked unhealthy and taken out of rotation.
#[test]
fn health_checks_use_tls_and_an_untrusted_certificate_is_unhealthy() {
    let pki = Pki::new("internal");
    let rogue = Pki::new("rogue");
    let good = tls_named("good", &pki, &["127.0.0.1"]);
    let bad = tls_named("bad", &rogue, &["127.0.0.1"]);
    let gw = gateway(
        &urls(&[&good, &bad]),
        &tls_ca(&pki),
        "[upstreams.ledger.health_check]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"1s\"\nhealthy_threshold = 1\nunhealthy_threshold = 2\n",
    );
    let healthy = |url: &str| -> Option<bool> {
        let v: Value = get(gw.admin_addr(), "/health").json();
        v["upstreams"]["ledger"]["endpoints"]
            .as_array()?
            .iter()
            .find(|e| e["url"] == url)?["healthy"]
            .as_bool()
    };
    assert!(
        wait_until(Duration::from_secs(5), || healthy(&bad.url())
            == Some(false)),
        "the endpoint with an untrusted certificate was not marked unhealthy"
    );
    assert!(
        good.inner
            .wait_until(Duration::from_secs(5), |u| u.healthz_count() >= 2),
        "no check reached the trusted endpoint over TLS"
    );
    assert_eq!(healthy(&good.url()), Some(true));
    assert!(
        bad.inner.healthz_count() == 0,
        "no check got past the bad certificate"
    );
    let served: Vec<String> = (0..4).map(|_| get(gw.addr(), "/").text()).collect();
    assert!(served.iter().all(|s| s == "good"), "{served:?}");
}

/// The `tls_*` files are read at load: a missing `tls_ca` file is a config error at the key's
/// value, file:line:col.
#[test]
fn missing_tls_ca_file_is_a_config_error_at_its_key() {
    let toml = ledger_config(
        "[\"https://127.0.0.1:9443\"]",
        "tls_ca = \"no-such-ca.pem\"",
        "",
    );
    let line = toml
        .lines()
        .position(|l| l.starts_with("tls_ca"))
        .expect("tls_ca line")
        + 1;
    let out = check(&toml);
    assert_ne!(out.code, Some(0), "{}", out.all());
    let dir = out.config_path.parent().unwrap();
    let want = format!(
        "{}:{line}:10: upstreams.ledger.tls_ca: cannot read \"{}\": No such file or directory (os error 2)",
        out.config_path.display(),
        dir.join("no-such-ca.pem").display()
    );
    assert!(
        out.all().contains(&want),
        "want {want:?} in:\n{}",
        out.all()
    );
}

/// An aggregate's call to an https upstream goes through the same client: TLS included.
#[test]
fn aggregate_calls_an_https_upstream() {
    let pki = Pki::new("internal");
    let cert = pki.server("ledger", &["127.0.0.1"], 30);
    let up = TlsUpstream::start(
        Upstream::start(|req| {
            let id = req.path().trim_start_matches("/accounts/").to_string();
            Reply::json(200, &json!({"id": id, "balance": 12}))
        }),
        &cert,
        None,
    );
    let gw = Gateway::start(&format!(
        r#"
[upstreams.ledger]
endpoints = ["{}"]
{}

[aggregates.summary]
path = "/summary/:id"

[aggregates.summary.calls.account]
upstream = "ledger"
path = "/accounts/{{id}}"
required = true
"#,
        up.url(),
        tls_ca(&pki)
    ));
    let r = get(gw.addr(), "/summary/7");
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["account"], json!({"id": "7", "balance": 12}), "{v}");
    assert_eq!(up.handshakes().len(), 1);
}

/// An https endpoint registered through the admin API is verified with the upstream's TLS
/// settings; an http:// one is refused for an https upstream (409).
#[test]
fn registered_https_endpoint_uses_the_upstreams_tls_settings() {
    let pki = Pki::new("internal");
    let a = tls_named("a", &pki, &["127.0.0.1"]);
    let b = tls_named("b", &pki, &["127.0.0.1"]);
    let gw = gateway(&urls(&[&a]), &tls_ca(&pki), "");
    let put = |body: &Value| {
        send_request(
            gw.admin_addr(),
            &Req::json("PUT", "/upstreams/ledger/endpoints", body),
        )
    };
    let r = put(&json!({"url": b.url(), "weight": 1}));
    assert_eq!(r.status, 201, "{} {}", r.status, r.text());
    let plain = Upstream::echo();
    let r = put(&json!({"url": plain.url()}));
    assert_eq!(r.status, 409, "{} {}", r.status, r.text());
    assert!(r.text().contains("https://"), "{}", r.text());
    let r = send_request(
        gw.admin_addr(),
        &Req::new(
            "DELETE",
            &format!(
                "/upstreams/ledger/endpoints?url={}",
                percent_encode(&a.url())
            ),
        ),
    );
    assert!(r.status < 300, "{} {}", r.status, r.text());
    assert!(
        wait_until(Duration::from_secs(2), || get(gw.addr(), "/").text() == "b"),
        "the registered https endpoint never served"
    );
    assert!(!b.handshakes().is_empty());
    assert_eq!(plain.request_count(), 0);
}
