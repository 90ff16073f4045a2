//! TLS termination (`[server.tls]`, BEHAVIOR.md "TLS") over real loopback sockets: a rustls
//! client against the gateway binary, certificates from a test authority. SNI, versions,
//! ALPN, mTLS, failed handshakes and their counter, resumption across workers, reload with a
//! new certificate, keep-alive, large bodies both ways, `X-Forwarded-Proto`, and what
//! `dispatch check` says about certificates.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::tls::{Issued, Pki};
use support::tls_client::{send_plain, TlsClient};
use support::*;

/// A gateway serving `[server.tls]` on its own address, in front of `upstream`.
struct Tls {
    gw: Gateway,
    addr: SocketAddr,
}

/// `[server.tls]` on a free address with `certs` (file order) and `extra` keys, one route `/`
/// to `upstream`.
fn start(upstream: &Upstream, certs: &[&Issued], extra: &str, workers: usize) -> Tls {
    let addr = free_addr();
    let gw = Gateway::start(&tls_config(upstream, addr, certs, extra, workers));
    Tls { gw, addr }
}

fn tls_config(
    upstream: &Upstream,
    addr: SocketAddr,
    certs: &[&Issued],
    extra: &str,
    workers: usize,
) -> String {
    let pairs: Vec<String> = certs
        .iter()
        .map(|c| {
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                c.cert_path.display().to_string(),
                c.key_path.display().to_string()
            )
        })
        .collect();
    format!(
        "[server]\nworkers = {workers}\n\n[server.tls]\nlisten = [\"{addr}\"]\ncertificates = [{}]\n{extra}\n\n[admin]\n\n[upstreams.app]\nendpoints = [\"{}\"]\nretries = 0\n\n[routes.app]\npaths = [\"/\"]\nupstream = \"app\"\n",
        pairs.join(", "),
        upstream.url()
    )
}

fn scrape(gw: &Gateway) -> String {
    let r = get(gw.admin_addr(), "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    r.text()
}

fn handshakes(gw: &Gateway, result: &str) -> f64 {
    metric(
        &scrape(gw),
        &format!("dispatch_tls_handshakes_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(-1.0)
}

/// Waits (at most 3 s) for the handshake counters to read `ok` and `failed`: a failed
/// handshake is counted just after its connection closes.
fn assert_handshakes(gw: &Gateway, ok: f64, failed: f64) {
    let held = wait_until(Duration::from_secs(3), || {
        handshakes(gw, "ok") == ok && handshakes(gw, "failed") == failed
    });
    assert!(
        held,
        "want ok={ok} failed={failed}, have ok={} failed={}",
        handshakes(gw, "ok"),
        handshakes(gw, "failed")
    );
}

static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];

fn tls13() -> &'static [&'static rustls::SupportedProtocolVersion] {
    &TLS13
}

fn tls12() -> &'static [&'static rustls::SupportedProtocolVersion] {
    &TLS12
}

/// SNI picks the certificate by its SAN names: an exact name before a wildcard (even one
/// listed earlier), a wildcard for one label, and the first certificate without SNI or for a
/// name nobody has.
#[test]
fn sni_picks_exact_then_wildcard_then_the_default_certificate() {
    let pki = Pki::new("sni");
    let default = pki.server("default", &["default.test"], 90);
    let wildcard = pki.server("wild", &["*.example.test"], 90);
    let exact = pki.server("exact", &["api.example.test"], 90);
    let up = Upstream::echo();
    let t = start(&up, &[&default, &wildcard, &exact], "", 1);
    // The client trusts the authority for every name; it checks names, so the default
    // certificate is looked at with an IP address as the server name (no SNI is sent).
    let config = pki.client_config(&["http/1.1"], None, &[]);
    let cases = [
        ("api.example.test", &exact),
        ("www.example.test", &wildcard),
        ("default.test", &default),
    ];
    for (name, want) in cases {
        let c = TlsClient::connect(t.addr, config.clone(), name);
        assert_eq!(c.peer_cert(), want.cert_der.to_vec(), "SNI {name}");
    }
    // No SNI (an IP address as the server name sends none) and a name nobody has: the first.
    let mut no_verify = (*config).clone();
    no_verify
        .dangerous()
        .set_certificate_verifier(Arc::new(AcceptAny::default()));
    let no_verify = Arc::new(no_verify);
    for name in ["127.0.0.1", "a.b.example.test", "other.test"] {
        let c = TlsClient::connect(t.addr, no_verify.clone(), name);
        assert_eq!(
            c.peer_cert(),
            default.cert_der.to_vec(),
            "server name {name}"
        );
    }
    assert_handshakes(&t.gw, 6.0, 0.0);
}

/// `min_version = "1.3"` refuses a client that speaks TLS 1.2 only (a failed handshake,
/// counted), and serves a TLS 1.3 one; with the default, TLS 1.2 is served.
#[test]
fn min_version_13_refuses_a_tls12_only_client() {
    let pki = Pki::new("versions");
    let cert = pki.server("gw", &["gw.test"], 90);
    let up = Upstream::echo();
    let t = start(&up, &[&cert], "min_version = \"1.3\"", 1);
    let old = pki.client_config(&["http/1.1"], None, tls12());
    assert!(TlsClient::try_connect(t.addr, old.clone(), "gw.test").is_err());
    let mut c = TlsClient::connect(t.addr, pki.client_config(&[], None, tls13()), "gw.test");
    assert_eq!(c.version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(c.get("/v").status, 200);
    assert_handshakes(&t.gw, 1.0, 1.0);

    let t12 = start(&up, &[&cert], "", 1);
    let mut c = TlsClient::connect(t12.addr, old, "gw.test");
    assert_eq!(c.version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(c.get("/v").status, 200);
}

/// ALPN: the gateway's preference among what the client offers; `h2` is never chosen.
#[test]
fn alpn_picks_http11_from_a_client_offering_h2() {
    let pki = Pki::new("alpn");
    let cert = pki.server("gw", &["gw.test"], 90);
    let up = Upstream::echo();
    let t = start(&up, &[&cert], "alpn = [\"http/1.1\", \"http/1.0\"]", 1);
    let c = TlsClient::connect(
        t.addr,
        pki.client_config(&["h2", "http/1.0", "http/1.1"], None, &[]),
        "gw.test",
    );
    assert_eq!(c.alpn().as_deref(), Some(&b"http/1.1"[..]));
    let c = TlsClient::connect(t.addr, pki.client_config(&[], None, &[]), "gw.test");
    assert_eq!(c.alpn(), None, "a client offering nothing gets no protocol");
}

/// With `client_ca`, a client without a certificate, or with one of another authority, gets
/// no response; one with a certificate the CA signed is served.
#[test]
fn mtls_serves_only_clients_with_a_certificate_of_client_ca() {
    let pki = Pki::new("mtls");
    let clients = Pki::new("clients");
    let strangers = Pki::new("strangers");
    let cert = pki.server("gw", &["gw.test"], 90);
    let good = clients.client("good", "good-client");
    let stranger = strangers.client("stranger", "stranger-client");
    let up = Upstream::echo();
    let extra = format!("client_ca = {:?}", clients.ca_path.display().to_string());
    let t = start(&up, &[&cert], &extra, 1);
    for (what, client) in [("no certificate", None), ("another CA's", Some(&stranger))] {
        // TLS 1.3: the client's certificate is its last flight, so its side of the
        // handshake may end before the gateway refuses it; either way no response comes.
        let config = pki.client_config(&["http/1.1"], client, &[]);
        match TlsClient::try_connect(t.addr, config, "gw.test") {
            Err(_) => {}
            Ok(mut c) => {
                let _ = c.send(b"GET / HTTP/1.1\r\nHost: gw.test\r\n\r\n");
                match c.read_to_end() {
                    Err(_) => {}
                    Ok(bytes) => assert!(bytes.is_empty(), "{what}: got {bytes:?}"),
                }
            }
        }
    }
    let mut c = TlsClient::connect(
        t.addr,
        pki.client_config(&["http/1.1"], Some(&good), &[]),
        "gw.test",
    );
    assert_eq!(c.get("/m").status, 200);
    assert_handshakes(&t.gw, 1.0, 2.0);
}

/// Plaintext HTTP and garbage on the TLS port get no HTTP response, a silent client is cut
/// at `handshake_timeout`; each closes that connection only, is counted as failed, and the
/// gateway goes on serving TLS.
#[test]
fn bad_handshakes_close_only_their_connection_and_are_counted() {
    let pki = Pki::new("bad");
    let cert = pki.server("gw", &["gw.test"], 90);
    let up = Upstream::echo();
    let t = start(&up, &[&cert], "handshake_timeout = \"500ms\"", 1);
    let config = pki.client_config(&["http/1.1"], None, &[]);
    // A keep-alive TLS connection open across the bad ones.
    let mut kept = TlsClient::connect(t.addr, config.clone(), "gw.test");
    assert_eq!(kept.get("/before").status, 200);

    let back = send_plain(
        t.addr,
        b"GET / HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        !back.starts_with(b"HTTP/"),
        "plaintext was answered: {back:?}"
    );
    let back = send_plain(
        t.addr,
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4],
        Duration::from_secs(5),
    );
    assert!(
        !back.starts_with(b"HTTP/"),
        "garbage was answered: {back:?}"
    );

    // A client that connects and says nothing is closed at the handshake timeout.
    let began = Instant::now();
    let silent = send_plain(t.addr, b"", Duration::from_secs(5));
    let took = began.elapsed();
    assert!(silent.is_empty(), "{silent:?}");
    assert!(
        took >= Duration::from_millis(450),
        "closed after {took:?}, before handshake_timeout"
    );

    assert_eq!(
        kept.get("/after").status,
        200,
        "the open connection is unaffected"
    );
    let mut fresh = TlsClient::connect(t.addr, config, "gw.test");
    assert_eq!(fresh.get("/fresh").status, 200);
    assert_handshakes(&t.gw, 2.0, 3.0);
}

/// Requests over TLS reach the upstream with `X-Forwarded-Proto: https`, keep-alive holds over
/// several requests, and 1 MiB bodies go up and come down intact.
#[test]
fn keep_alive_large_bodies_and_forwarded_proto_https() {
    let pki = Pki::new("bodies");
    let cert = pki.server("gw", &["gw.test"], 90);
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let down = big.clone();
    let up = Upstream::start(move |req| {
        if req.path() == "/down" {
            Reply::text(200, "").body(&down)
        } else {
            Reply::text(200, "")
                .header(
                    "x-seen-proto",
                    req.header("x-forwarded-proto").unwrap_or(""),
                )
                .header("x-seen-len", &req.body.len().to_string())
                .header(
                    "x-seen-same",
                    if req.body == big_copy() { "1" } else { "0" },
                )
        }
    });
    let t = start(&up, &[&cert], "", 1);
    let mut c = TlsClient::connect(t.addr, pki.client_config(&[], None, &[]), "gw.test");
    for i in 0..3 {
        let r = c.get(&format!("/ka/{i}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-seen-proto"), Some("https"));
    }
    let mut req = format!(
        "POST /up HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n",
        big_copy().len()
    )
    .into_bytes();
    req.extend_from_slice(&big_copy());
    c.send(&req).unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-len"), Some("1048576"));
    assert_eq!(r.header("x-seen-same"), Some("1"));
    let r = c.get("/down");
    assert_eq!(r.status, 200);
    assert!(
        r.body == big_copy(),
        "1 MiB down differs ({} bytes)",
        r.body.len()
    );
    assert_eq!(
        up.requests().iter().map(|r| r.conn).max(),
        Some(1),
        "one upstream connection"
    );
    assert_handshakes(&t.gw, 1.0, 0.0);
}

fn big_copy() -> Vec<u8> {
    (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect()
}

/// A second connection resumes with a ticket from the first, whichever worker accepts it
/// (two workers, several connections): TLS 1.3 and TLS 1.2.
#[test]
fn sessions_resume_across_workers_with_tickets() {
    let pki = Pki::new("resume");
    let cert = pki.server("gw", &["gw.test"], 90);
    let up = Upstream::echo();
    let t = start(&up, &[&cert], "", 2);
    for versions in [tls13(), tls12()] {
        let config = pki.client_config(&["http/1.1"], None, versions);
        let mut first = TlsClient::connect(t.addr, config.clone(), "gw.test");
        assert_eq!(first.handshake_kind(), Some(rustls::HandshakeKind::Full));
        // Reading a response takes in the tickets sent after the handshake.
        assert_eq!(first.get("/1").status, 200);
        for i in 0..6 {
            let mut c = TlsClient::connect(t.addr, config.clone(), "gw.test");
            assert_eq!(
                c.handshake_kind(),
                Some(rustls::HandshakeKind::Resumed),
                "{versions:?} connection {i}"
            );
            assert_eq!(c.get("/n").status, 200);
        }
    }
}

/// A reload reads the certificate files again: new connections get the new certificate, a
/// keep-alive connection opened before goes on working; a reload with a broken certificate
/// is refused and the running one stays.
#[test]
fn reload_serves_the_new_certificate_to_new_connections() {
    let pki = Pki::new("reload");
    let old = pki.server("gw", &["gw.test"], 90);
    let up = Upstream::echo();
    let t = start(&up, &[&old], "", 1);
    let config = pki.client_config(&["http/1.1"], None, &[]);
    let mut kept = TlsClient::connect(t.addr, config.clone(), "gw.test");
    assert_eq!(kept.get("/a").status, 200);
    assert_eq!(kept.peer_cert(), old.cert_der.to_vec());

    // Same file names, new contents.
    let new = pki.server("gw", &["gw.test"], 60);
    assert_ne!(new.cert_der, old.cert_der);
    let r = send_request(t.gw.admin_addr(), &Req::post("/reload", b""));
    assert_eq!(r.status, 200, "{}", r.text());
    // A client with no session to resume (a resumed session sends no certificate).
    let fresh = || pki.client_config(&["http/1.1"], None, &[]);
    let c = TlsClient::connect(t.addr, fresh(), "gw.test");
    assert_eq!(c.peer_cert(), new.cert_der.to_vec());
    assert_eq!(
        kept.get("/b").status,
        200,
        "the connection from before the reload"
    );

    // A certificate file that no longer parses fails the reload; the running one stays.
    std::fs::write(&new.cert_path, "not a certificate\n").unwrap();
    let r = send_request(t.gw.admin_addr(), &Req::post("/reload", b""));
    assert_ne!(
        r.status,
        200,
        "a broken certificate was accepted: {}",
        r.text()
    );
    assert!(
        r.text().contains("server.tls.certificates[0].cert"),
        "{}",
        r.text()
    );
    let c = TlsClient::connect(t.addr, fresh(), "gw.test");
    assert_eq!(c.peer_cert(), new.cert_der.to_vec());
}

/// `dispatch check` prints each certificate's names and expiry, and warns about one that
/// expires within 14 days.
#[test]
fn check_reports_certificate_names_and_warns_before_expiry() {
    let pki = Pki::new("check");
    let long = pki.server("long", &["api.example.test", "*.example.test"], 200);
    let short = pki.server("short", &["soon.test"], 5);
    let addr = free_addr();
    let toml = format!(
        "[server.tls]\nlisten = [\"{addr}\"]\ncertificates = [{{ cert = {:?}, key = {:?} }}, {{ cert = {:?}, key = {:?} }}]\n",
        long.cert_path.display().to_string(),
        long.key_path.display().to_string(),
        short.cert_path.display().to_string(),
        short.key_path.display().to_string(),
    );
    let out = check(&toml);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let line = |needle: &str| {
        out.stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{}", out.stdout))
            .to_string()
    };
    assert!(line("long.crt").contains("api.example.test, *.example.test; expires "));
    assert!(line("long.crt").contains("(default)"));
    assert!(line("short.crt").contains("soon.test; expires "));
    let warning = line("warning:");
    assert!(
        warning.contains("short.crt") && warning.contains("expires in "),
        "{warning}"
    );
    assert_eq!(out.stdout.matches("warning:").count(), 1, "{}", out.stdout);
}

/// Certificate problems are config errors at the key naming the file: a missing file, a key
/// of another certificate, a key file with no key, an empty client_ca.
#[test]
fn bad_certificate_files_are_config_errors_at_their_key() {
    let pki = Pki::new("errors");
    let a = pki.server("a", &["a.test"], 90);
    let b = pki.server("b", &["b.test"], 90);
    let empty = pki.dir.write("empty.pem", "");
    let addr = free_addr();
    let conf = |cert: &std::path::Path, key: &std::path::Path, extra: &str| {
        format!(
            "[server.tls]\nlisten = [\"{addr}\"]\ncertificates = [{{ cert = {:?}, key = {:?} }}]\n{extra}",
            cert.display().to_string(),
            key.display().to_string()
        )
    };
    let missing = pki.dir.path().join("missing.crt");
    let ca = format!("client_ca = {:?}\n", empty.display().to_string());
    let cases = [
        (
            conf(&missing, &a.key_path, ""),
            "3",
            "server.tls.certificates[0].cert: cannot read",
        ),
        (
            conf(&a.cert_path, &b.key_path, ""),
            "3",
            "server.tls.certificates[0].key: ",
        ),
        (
            conf(&a.cert_path, &a.cert_path, ""),
            "3",
            "server.tls.certificates[0].key: ",
        ),
        (
            conf(&empty, &a.key_path, ""),
            "3",
            "server.tls.certificates[0].cert: ",
        ),
        (
            conf(&a.cert_path, &a.key_path, &ca),
            "4",
            "server.tls.client_ca: ",
        ),
    ];
    for (toml, line, want) in cases {
        let out = check(&toml);
        assert_eq!(out.code, Some(1), "{toml}\n{}", out.all());
        assert!(
            out.stderr.contains(want),
            "want {want:?} in:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!("dispatch.toml:{line}:")),
            "file:line:col: {}",
            out.stderr
        );
    }
    let out = check(&conf(&a.cert_path, &b.key_path, ""));
    assert!(
        out.stderr.contains("does not belong to the certificate"),
        "{}",
        out.stderr
    );
}

/// Accepts any server certificate: for looking at which one is sent without SNI.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl Default for AcceptAny {
    fn default() -> Self {
        AcceptAny(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
