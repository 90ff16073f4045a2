//! Response compression end to end (`[compression]`, issue 13): the real gateway in front of
//! real upstreams over loopback. gzip and brotli bodies decoded back (flate2, brotli) equal
//! the upstream's, for a Content-Length body and a chunked body of several MiB that streams
//! (compressed bytes reach the client while the upstream still holds its last chunk); the
//! client's q-values and the configured order; every "never compress" rule; `Vary` merged,
//! `ETag` weakened; an HTTP/1.0 client; the gateway's own answers (an aggregate's composite,
//! a JSON error) and cache hits through the same phase; the access log's `bytes_out`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::cache::access_lines;
use support::compression::*;
use support::*;

/// `[compression]` with `keys`, one catch-all route to `up`, and the JSON access log.
fn gateway(up: &str, keys: &str) -> Gateway {
    Gateway::start(&format!(
        "[log]\naccess = \"json\"\n\n[upstreams.app]\nendpoints = [\"{up}\"]\nretries = 0\n\n\
         [routes.all]\npaths = [\"/\"]\nupstream = \"app\"\n\n[compression]\n{keys}\n"
    ))
}

const TYPES: &str = "types = [\"application/json\", \"text/*\"]\nmin_size = \"1KiB\"";

fn get_with(gw: &Gateway, target: &str, accept: &str) -> Response {
    let mut req = Req::get(target);
    if !accept.is_empty() {
        req = req.header("Accept-Encoding", accept);
    }
    send_request(gw.addr(), &req)
}

/// Asserts `r` came compressed with `coding` and decodes to `body`; re-framed chunked, its
/// `Content-Length` gone, `Vary: Accept-Encoding` present.
fn assert_compressed(r: &Response, coding: &str, body: &[u8]) {
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(
        r.header("content-encoding"),
        Some(coding),
        "{:?}",
        r.headers
    );
    assert!(
        r.header_tokens("vary")
            .iter()
            .any(|t| t == "accept-encoding"),
        "{:?}",
        r.headers
    );
    assert!(
        r.body.len() < body.len(),
        "{} of {}",
        r.body.len(),
        body.len()
    );
    assert_eq!(
        decode(coding, &r.body),
        body,
        "{coding} decodes to the upstream's body"
    );
}

/// Asserts `r` is the upstream's answer as it was: no coding, the same bytes.
fn assert_plain(r: &Response, body: &[u8], why: &str) {
    assert_eq!(r.header("content-encoding"), None, "{why}: {:?}", r.headers);
    assert_eq!(r.body, body, "{why}");
}

/// gzip and brotli, each decoded back, equal the upstream's Content-Length body; the body
/// is re-framed chunked without the upstream's `Content-Length`.
#[test]
fn gzip_and_br_bodies_decode_to_the_upstream_content_length_body() {
    let body = text_body(200 * 1024);
    let served = body.clone();
    let up = Upstream::start(move |_| Reply::text(200, "").body(&served));
    let gw = gateway(&up.url(), TYPES);
    for coding in ["gzip", "br"] {
        let r = get_with(&gw, "/doc", coding);
        assert_compressed(&r, coding, &body);
        assert_eq!(r.header("content-length"), None, "{:?}", r.headers);
        assert_eq!(
            r.header("transfer-encoding"),
            Some("chunked"),
            "{:?}",
            r.headers
        );
        assert!(r.keeps_alive(), "{:?}", r.headers);
    }
}

/// A chunked upstream body of several MiB is compressed as it streams: the client holds
/// compressed bytes (the start of a gzip stream) while the upstream still holds its last
/// chunk; released, the whole stream decodes to the upstream's body.
#[test]
fn a_chunked_body_of_several_mib_streams_compressed_before_the_upstream_ends() {
    let body = text_body(4 * 1024 * 1024);
    let chunks: Vec<Vec<u8>> = body.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    let up = HeldUpstream::start(chunks);
    let gw = gateway(&up.url(), TYPES);
    let mut c = Client::connect(gw.addr());
    c.set_timeout(Duration::from_secs(10));
    c.send(
        &Req::get("/stream")
            .header("Accept-Encoding", "gzip")
            .to_bytes(),
    );
    let head = c
        .read_head()
        .expect("the head arrives before the body ends");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        head.headers
    );
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let mut wire = Vec::new();
    while dechunk(&wire).0.len() < 1024 {
        let got = c
            .read_some()
            .expect("compressed bytes before the last chunk is sent");
        assert!(!got.is_empty(), "the gateway closed mid-body");
        wire.extend_from_slice(&got);
    }
    assert!(!up.last_sent(), "the upstream's last chunk is still held");
    let (early, ended) = dechunk(&wire);
    assert!(!ended, "the body cannot have ended before its last chunk");
    assert_eq!(&early[..2], b"\x1f\x8b", "the start of a gzip stream");
    up.release();
    loop {
        let (_, ended) = dechunk(&wire);
        if ended {
            break;
        }
        let got = c.read_some().expect("the rest of the body");
        assert!(!got.is_empty(), "the gateway closed mid-body");
        wire.extend_from_slice(&got);
    }
    let (compressed, _) = dechunk(&wire);
    assert!(
        compressed.len() * 4 < body.len(),
        "{} bytes",
        compressed.len()
    );
    assert_eq!(decode("gzip", &compressed), body);
}

/// The client's q-values pick the coding; among codings it weighs equally the configured
/// `algorithms` order decides; `q=0` refuses one.
#[test]
fn q_values_decide_and_the_configured_order_breaks_ties() {
    let body = text_body(8 * 1024);
    let served = body.clone();
    let up = Upstream::start(move |_| Reply::text(200, "").body(&served));
    let gzip_first = gateway(
        &up.url(),
        &format!("algorithms = [\"gzip\", \"br\"]\n{TYPES}"),
    );
    let br_first = gateway(
        &up.url(),
        &format!("algorithms = [\"br\", \"gzip\"]\n{TYPES}"),
    );
    for (gw, accept, want) in [
        (&gzip_first, "br, gzip", "gzip"),
        (&br_first, "gzip, br", "br"),
        (&gzip_first, "gzip;q=0.5, br", "br"),
        (&br_first, "br;q=0.2, gzip;q=0.9", "gzip"),
        (&br_first, "br;q=0, *", "gzip"),
        (&gzip_first, "*", "gzip"),
    ] {
        let r = get_with(gw, "/", accept);
        assert_eq!(r.header("content-encoding"), Some(want), "{accept:?}");
        assert_compressed(&r, want, &body);
    }
}

/// Each "never compress" rule: HEAD, 204, 304, a 206 and any request with `Range`,
/// `Cache-Control: no-transform`, a body already encoded, a type not listed, a body under
/// `min_size`, no `Accept-Encoding`, and `identity;q=1` with every offered coding at `q=0`.
#[test]
fn never_compressed_answers_go_as_the_upstream_sent_them() {
    let big = text_body(8 * 1024);
    let served = big.clone();
    let up = Upstream::start(move |req| {
        let text = || Reply::text(200, "").body(&served);
        match req.path() {
            "/no-content" => Reply::status(204),
            "/not-modified" => Reply::status(304).header("ETag", "\"v1\""),
            "/partial" => Reply::status(206)
                .header("Content-Type", "text/plain")
                .header(
                    "Content-Range",
                    &format!("bytes 0-{}/99999", served.len() - 1),
                )
                .body(&served),
            "/no-transform" => text().header("Cache-Control", "public, no-transform"),
            "/encoded" => Reply::status(200)
                .header("Content-Type", "text/plain")
                .header("Content-Encoding", "deflate")
                .body(&served),
            "/image" => Reply::status(200)
                .header("Content-Type", "image/png")
                .body(&served),
            "/small" => Reply::text(200, "short"),
            _ => text(),
        }
    });
    let gw = gateway(&up.url(), TYPES);
    let accept = "gzip, br";
    for (path, why) in [
        ("/partial", "a 206"),
        ("/no-transform", "no-transform"),
        ("/image", "a type not listed"),
    ] {
        let r = get_with(&gw, path, accept);
        assert_plain(&r, &big, why);
        assert_eq!(
            r.header("content-length"),
            Some(big.len().to_string().as_str()),
            "{why}"
        );
    }
    let encoded = get_with(&gw, "/encoded", accept);
    assert_eq!(
        encoded.header_all("content-encoding"),
        ["deflate"],
        "already encoded"
    );
    assert_eq!(encoded.body, big, "already encoded: the upstream's bytes");
    assert_eq!(encoded.header("vary"), None, "already encoded");
    assert_plain(&get_with(&gw, "/small", accept), b"short", "under min_size");
    assert_plain(&get_with(&gw, "/doc", ""), &big, "no Accept-Encoding");
    assert_plain(
        &get_with(&gw, "/doc", "identity;q=1, gzip;q=0, br;q=0"),
        &big,
        "identity only",
    );
    let range = send_request(
        gw.addr(),
        &Req::get("/doc")
            .header("Accept-Encoding", accept)
            .header("Range", "bytes=0-9"),
    );
    assert_plain(
        &range,
        &big,
        "a Range request (this upstream ignores ranges)",
    );
    let head = send_request(
        gw.addr(),
        &Req::head("/doc").header("Accept-Encoding", accept),
    );
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-encoding"),
        None,
        "HEAD: {:?}",
        head.headers
    );
    assert_eq!(
        head.header("content-length"),
        Some(big.len().to_string().as_str())
    );
    let none = get_with(&gw, "/no-content", accept);
    assert_eq!((none.status, none.header("content-encoding")), (204, None));
    let not_modified = get_with(&gw, "/not-modified", accept);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("content-encoding"), None);
    assert_eq!(
        not_modified.header("etag"),
        Some("\"v1\""),
        "a 304's validator is left alone"
    );
    // Compressible after all, on the same gateway: the rules, not the setup, said no.
    assert_compressed(&get_with(&gw, "/doc", accept), "br", &big);
}

/// `Vary: Accept-Encoding` is merged into the upstream's `Vary` (one field), not repeated
/// when the upstream names it; a strong `ETag` is weakened, a weak one kept.
#[test]
fn vary_is_merged_once_and_strong_etags_are_weakened() {
    let body = text_body(4 * 1024);
    let served = body.clone();
    let up = Upstream::start(move |req| {
        let r = Reply::text(200, "").body(&served);
        match req.path() {
            "/origin" => r.header("Vary", "Origin").header("ETag", "\"abc\""),
            "/named" => r
                .header("Vary", "accept-encoding, Origin")
                .header("ETag", "W/\"weak\""),
            _ => r,
        }
    });
    let gw = gateway(&up.url(), TYPES);
    let r = get_with(&gw, "/origin", "gzip");
    assert_compressed(&r, "gzip", &body);
    assert_eq!(
        r.header_all("vary"),
        ["Origin, Accept-Encoding"],
        "{:?}",
        r.headers
    );
    assert_eq!(r.header_all("etag"), ["W/\"abc\""]);
    let r = get_with(&gw, "/named", "gzip");
    assert_compressed(&r, "gzip", &body);
    assert_eq!(r.header_all("vary"), ["accept-encoding, Origin"]);
    assert_eq!(r.header_all("etag"), ["W/\"weak\""]);
    let r = get_with(&gw, "/plain", "gzip");
    assert_eq!(r.header_all("vary"), ["Accept-Encoding"]);
    // Uncompressed, the strong validator stays strong.
    let r = get_with(&gw, "/origin", "");
    assert_eq!(r.header_all("etag"), ["\"abc\""]);
    assert_eq!(r.header_all("vary"), ["Origin"]);
}

/// An HTTP/1.0 client (no chunked coding) gets a close-delimited compressed body, with
/// `Connection: close` even though it asked for keep-alive, and the connection closes after.
#[test]
fn an_http10_client_gets_a_close_delimited_compressed_body() {
    let body = text_body(64 * 1024);
    let served = body.clone();
    let up = Upstream::start(move |_| Reply::text(200, "").body(&served));
    let gw = gateway(&up.url(), TYPES);
    let mut c = Client::connect(gw.addr());
    let r = c.request(
        &Req::get("/old")
            .version("HTTP/1.0")
            .header("Connection", "keep-alive")
            .header("Accept-Encoding", "gzip"),
    );
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(decode("gzip", &r.body), body);
    c.assert_closed(Duration::from_secs(2));
}

/// The gateway's own answers pass the same phase: an aggregate's composite is compressed
/// (with its compressed `Content-Length`), and so is a JSON error when `min_size` allows.
#[test]
fn an_aggregate_answer_and_a_gateway_error_are_compressed() {
    let items: Vec<serde_json::Value> = (0..200)
        .map(|i| json!({"id": i, "name": format!("item {i}"), "tags": ["a", "b"]}))
        .collect();
    let list = json!({ "items": items });
    let served = list.clone();
    let up = Upstream::start(move |_| Reply::json(200, &served));
    let gw = Gateway::start(&format!(
        r#"
[upstreams.app]
endpoints = ["{}"]
[aggregates.both]
path = "/both"
[aggregates.both.calls.one]
upstream = "app"
path = "/one"
required = true
[aggregates.both.calls.two]
upstream = "app"
path = "/two"
required = true
[compression]
algorithms = ["gzip"]
min_size = 0
types = ["application/json"]
"#,
        up.url()
    ));
    let r = get_with(&gw, "/both", "gzip");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        r.headers
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let composite: serde_json::Value =
        serde_json::from_slice(&decode("gzip", &r.body)).expect("a JSON composite");
    assert_eq!(composite["one"], list);
    assert_eq!(composite["two"], list);
    let plain = get_with(&gw, "/both", "");
    assert_eq!(plain.json()["one"], list);

    let missing = get_with(&gw, "/nowhere", "gzip");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-encoding"), Some("gzip"));
    let error: serde_json::Value = serde_json::from_slice(&decode("gzip", &missing.body)).unwrap();
    assert_eq!(error["error"]["code"], 404, "{error}");
}

/// The cache stores the upstream's uncompressed answer; each hit is compressed for its own
/// requester (gzip, brotli, none), and an upstream's own `Vary: Accept-Encoding` still keys
/// the entries by the request's `Accept-Encoding`.
#[test]
fn cache_hits_are_compressed_per_requester_from_the_uncompressed_entry() {
    let body = text_body(16 * 1024);
    let served = body.clone();
    let up = Upstream::start(move |req| {
        let r = Reply::text(200, "")
            .body(&served)
            .header("Cache-Control", "max-age=60");
        if req.path() == "/varied" {
            r.header("Vary", "Accept-Encoding")
        } else {
            r
        }
    });
    let gw = Gateway::start(&format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\n\n[cache]\n\n[cache.rules.all]\nttl = \"60s\"\n\n\
         [routes.all]\npaths = [\"/\"]\nupstream = \"app\"\ncache = \"all\"\n\n[compression]\n{TYPES}\n",
        up.url()
    ));
    let miss = get_with(&gw, "/doc", "gzip");
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_compressed(&miss, "gzip", &body);
    let hit = get_with(&gw, "/doc", "br");
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_compressed(&hit, "br", &body);
    assert_eq!(
        hit.header("content-length"),
        Some(hit.body.len().to_string().as_str())
    );
    let plain = get_with(&gw, "/doc", "");
    assert_eq!(plain.header("x-cache"), Some("HIT"));
    assert_plain(&plain, &body, "a hit for a client that accepts no coding");
    assert_eq!(up.request_count(), 1, "one fetch served every coding");

    assert_eq!(
        get_with(&gw, "/varied", "gzip").header("x-cache"),
        Some("MISS")
    );
    let again = get_with(&gw, "/varied", "gzip");
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert_compressed(&again, "gzip", &body);
    assert_eq!(again.header_all("vary"), ["Accept-Encoding"]);
    let other = get_with(&gw, "/varied", "br");
    assert_eq!(
        other.header("x-cache"),
        Some("MISS"),
        "another Accept-Encoding, another entry"
    );
    assert_compressed(&other, "br", &body);
    assert_eq!(up.request_count(), 3);
}

/// The access log's `bytes_out` is what went on the wire: the compressed bytes, not the
/// upstream's.
#[test]
fn bytes_out_counts_the_compressed_bytes_sent() {
    let body = text_body(512 * 1024);
    let served = body.clone();
    let up = Upstream::start(move |_| Reply::text(200, "").body(&served));
    let gw = gateway(&up.url(), TYPES);
    let r = get_with(&gw, "/doc", "gzip");
    assert_compressed(&r, "gzip", &body);
    let id = r.header("x-request-id").expect("a request id").to_string();
    let line = &access_lines(&gw, std::slice::from_ref(&id))[&id];
    let out = line["bytes_out"].as_u64().expect("bytes_out");
    assert!(out > r.body.len() as u64, "{line}");
    assert!(
        out < body.len() as u64 / 4,
        "{out} bytes for a {}-byte body: {line}",
        body.len()
    );
}

/// `dispatch check` loads `[compression]` (no longer refused as a later capability) and says
/// what it compresses.
#[test]
fn check_accepts_and_describes_the_compression_section() {
    let out = check(
        "[upstreams.app]\nendpoints = [\"http://127.0.0.1:9\"]\n\n[compression]\nalgorithms = [\"gzip\"]\nmin_size = \"2KiB\"\ntypes = [\"application/json\"]\n",
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.all()
            .contains("compression: gzip from 2KiB, types application/json"),
        "{}",
        out.all()
    );
}
