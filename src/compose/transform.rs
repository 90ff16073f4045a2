//! Transforms (`[transforms.*]`, BEHAVIOR.md "Errors"): a route's request and response bodies
//! run through jq programs, and header edits on both sides. Pure logic over bytes; the proxy
//! stage ([`crate::pipeline::proxy`]) reads the bodies whole and calls in here.
//!
//! Key functions: [`request_body`] / [`response_body`] (bytes in, JSON bytes or a [`Refusal`]
//! out), [`request_head`] / [`response_head`] (the gateway's own written head, edited:
//! framing recomputed, the transform's `set` / `remove` applied), [`Encoding`] and [`decode`].
//!
//! What a client sees:
//! - Request side (a route whose transform has `request`): the body (Content-Length or
//!   chunked) is read whole up to `server.limits.max_body` (413 beyond), must be JSON (400
//!   `Request body is not JSON`, also without a body, and for a body with a
//!   `Content-Encoding`: it is not decoded), and the program's first output goes upstream with
//!   `Content-Length` and `Content-Type: application/json` (400 when the program fails or has no
//!   output). The request stays replayable: retries resend the transformed bytes.
//! - Response side (`response`): only a 2xx response with a body is transformed; any other
//!   status passes through untouched (an upstream's error body is not the shape the program
//!   expects). The body is read whole up to `max_body` (502 beyond), decoded when its
//!   `Content-Encoding` is `gzip` or `br` (the client then gets it identity-encoded); any other
//!   coding is a 502 rather than an untransformed body the client would misread, and the
//!   upstream is asked for `Accept-Encoding: gzip, br` only, so a conforming upstream never
//!   sends one. Not JSON: 502 `Upstream response is not JSON`; the program fails or has no
//!   output: 502. The answer has `Content-Length`, `Content-Type: application/json`, no
//!   `Content-Encoding`, and a strong `ETag` weakened (the bytes changed, RFC 9110 §8.8.1). A
//!   HEAD answer loses `Content-Length` (the transformed length is unknown without the body).
//!   As a gateway acting for the origin, a transform applies even under `no-transform`.
//! - `request_headers` apply to what goes upstream; `response_headers` to every response the
//!   upstream gives on the route, 2xx or not (the gateway's own error answers carry only the
//!   gateway's fields). `set` replaces every field of that name.
//! - `$now` is the time of the run, RFC 3339 UTC with milliseconds.

use std::io::Read;

use crate::compose::jq::{self, BodyError, Program};
use crate::config::model::{HeaderEdits, Transform};

/// Why a body is refused: the status and the client message (the JSON error body's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// The `$now` binding of one run.
fn vars() -> [serde_json::Value; 1] {
    [serde_json::Value::String(jq::now_rfc3339())]
}

/// The request body through the `request` program: the bytes to send upstream, or a 400.
pub fn request_body(program: &Program, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    if body.is_empty() {
        return Err(refuse(
            400,
            "Request body is not JSON: this route transforms a JSON body and none was sent",
        ));
    }
    match program.run_body(body, &vars()) {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Err(refuse(
            400,
            "Request transform failed: the program gave no output",
        )),
        Err(BodyError::NotJson(e)) => Err(refuse(400, format!("Request body is not JSON: {e}"))),
        Err(BodyError::Failed(e)) => Err(refuse(400, format!("Request transform failed: {e}"))),
    }
}

/// A decoded 2xx response body through the `response` program: the bytes the client gets, or
/// a 502. The program's own message is not the client's business (it may quote upstream
/// data): it is returned in `Err`'s second field, for the log.
pub fn response_body(program: &Program, body: &[u8]) -> Result<Vec<u8>, (Refusal, String)> {
    match program.run_body(body, &vars()) {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Err((
            refuse(502, "Response transform failed"),
            "the program gave no output".into(),
        )),
        Err(BodyError::NotJson(e)) => Err((refuse(502, "Upstream response is not JSON"), e)),
        Err(BodyError::Failed(e)) => Err((refuse(502, "Response transform failed"), e)),
    }
}

/// A response's `Content-Encoding`, as far as a transform cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Br,
    /// Anything else (another coding, or several stacked): not decoded.
    Other,
}

impl Encoding {
    /// From the values of every `Content-Encoding` field (RFC 9110 §8.4: a list, in the order
    /// applied; `identity` is no coding).
    pub fn of<'v>(values: impl IntoIterator<Item = &'v [u8]>) -> Encoding {
        let mut codings: Vec<String> = Vec::new();
        for v in values {
            for token in v.split(|&b| b == b',') {
                let token = String::from_utf8_lossy(token.trim_ascii()).to_ascii_lowercase();
                if !token.is_empty() && token != "identity" {
                    codings.push(token);
                }
            }
        }
        match codings.as_slice() {
            [] => Encoding::Identity,
            [one] if one == "gzip" || one == "x-gzip" => Encoding::Gzip,
            [one] if one == "br" => Encoding::Br,
            _ => Encoding::Other,
        }
    }
}

/// `body` decoded from `encoding`, at most `limit` bytes decoded. Errors are 502s.
pub fn decode(encoding: &Encoding, body: Vec<u8>, limit: usize) -> Result<Vec<u8>, Refusal> {
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Identity => return Ok(body),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Encoding::Br => Box::new(brotli::Decompressor::new(&body[..], 16 * 1024)),
        Encoding::Other => {
            return Err(refuse(
                502,
                "Upstream response has a Content-Encoding a transform cannot decode (only gzip and br are)",
            ))
        }
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    // One byte past the limit tells "too large" from "exactly the limit"; a compression bomb
    // stops there.
    let read = reader.take(limit as u64 + 1).read_to_end(&mut out);
    match read {
        Err(_) => Err(refuse(
            502,
            "Upstream response body does not decode as its Content-Encoding says",
        )),
        Ok(_) if out.len() > limit => Err(refuse(502, "Upstream response too large to transform")),
        Ok(_) => Ok(out),
    }
}

/// How the body under an edited head changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// The head's framing lines stay (only the transform's header edits apply).
    Unchanged,
    /// Replaced by this many bytes of JSON: `Content-Length`, `Content-Type: application/json`.
    Json(usize),
    /// The answer to a HEAD on a transformed route: the transformed length is unknown, so no
    /// `Content-Length`; the validators weakened as for a transformed body.
    Unknown,
}

/// The upstream request head the gateway wrote, edited by `edits`; with [`Body::Json`], its
/// framing replaced for the transformed body. `accept_transformable` (a response program on
/// the route): `Accept-Encoding` becomes `gzip, br`, the codings a transform can decode.
pub fn request_head(
    head: &[u8],
    edits: &HeaderEdits,
    body: Body,
    accept_transformable: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 64);
    let mut lines = lines(head);
    if let Some(first) = lines.next() {
        push_line(&mut out, first);
    }
    for line in lines {
        let name = field_name(line);
        let framing = eq(name, "content-length") || eq(name, "transfer-encoding");
        let drop = edited(edits, name)
            || (body != Body::Unchanged && (framing || eq(name, "content-type")))
            || (accept_transformable && eq(name, "accept-encoding"));
        if !drop {
            push_line(&mut out, line);
        }
    }
    for (name, value) in &edits.set {
        push_field(&mut out, name, value.as_bytes());
    }
    if accept_transformable {
        push_field(&mut out, "accept-encoding", b"gzip, br");
    }
    json_framing(&mut out, body);
    out.extend_from_slice(b"\r\n");
    out
}

/// The client response head the gateway wrote, edited by `edits`; with [`Body::Json`] or
/// [`Body::Unknown`], its framing and representation fields replaced for the transformed body.
pub fn response_head(head: &[u8], edits: &HeaderEdits, body: Body) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 64);
    let mut lines = lines(head);
    if let Some(first) = lines.next() {
        push_line(&mut out, first);
    }
    let changed = body != Body::Unchanged;
    for line in lines {
        let name = field_name(line);
        if edited(edits, name) {
            continue;
        }
        if changed {
            if eq(name, "content-length")
                || eq(name, "transfer-encoding")
                || eq(name, "content-type")
                || eq(name, "content-encoding")
                // The digest and range of the upstream's bytes describe bytes no longer sent.
                || eq(name, "content-md5")
                || eq(name, "content-range")
                || eq(name, "accept-ranges")
            {
                continue;
            }
            if eq(name, "etag") {
                let value = field_value(line);
                // RFC 9110 §8.8.1: a strong validator promises these exact bytes; a weak one
                // only the same meaning, which the transform keeps.
                if value.starts_with(b"W/") {
                    push_line(&mut out, line);
                } else {
                    let mut weak = b"W/".to_vec();
                    weak.extend_from_slice(value);
                    push_field(&mut out, "etag", &weak);
                }
                continue;
            }
        }
        push_line(&mut out, line);
    }
    for (name, value) in &edits.set {
        push_field(&mut out, name, value.as_bytes());
    }
    match body {
        Body::Unchanged => {}
        Body::Unknown => push_field(&mut out, "content-type", b"application/json"),
        Body::Json(_) => json_framing(&mut out, body),
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The request side's header edits on the upstream head in `ubuf` (written by the upstream
/// phase, nothing behind it), when the route's transform has no request program (with one,
/// the proxy stage edits the head with the transformed body's framing). A response program
/// also narrows `Accept-Encoding` to what it can decode.
pub fn edit_upstream_head(t: &Transform, ubuf: &mut Vec<u8>) {
    if t.request.is_none() && (!t.request_headers.is_empty() || t.response.is_some()) {
        let edited = request_head(
            ubuf,
            &t.request_headers,
            Body::Unchanged,
            t.response.is_some(),
        );
        // The buffer is the connection's: its capacity is kept for the next request.
        ubuf.clear();
        ubuf.extend_from_slice(&edited);
    }
}

/// The lines of a head (its final empty line excluded), without their CRLF.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let head = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

fn field_name(line: &[u8]) -> &[u8] {
    let end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
    &line[..end]
}

fn field_value(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|&b| b == b':')
        .map_or(line.len(), |i| i + 1);
    line[start..].trim_ascii()
}

fn eq(name: &[u8], lower: &str) -> bool {
    name.eq_ignore_ascii_case(lower.as_bytes())
}

/// The transform sets (replaces) or removes this field.
fn edited(edits: &HeaderEdits, name: &[u8]) -> bool {
    edits.remove.iter().any(|r| eq(name, r)) || edits.set.iter().any(|(s, _)| eq(name, s))
}

fn push_line(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn json_framing(out: &mut Vec<u8>, body: Body) {
    if let Body::Json(len) = body {
        push_field(out, "content-type", b"application/json");
        out.extend_from_slice(b"content-length: ");
        crate::http::write::write_u64(out, len as u64);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edits(set: &[(&str, &str)], remove: &[&str]) -> HeaderEdits {
        HeaderEdits {
            set: set
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            remove: remove.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn request_head_gets_json_framing_and_the_edits() {
        let head = b"POST /v2/transfers HTTP/1.1\r\nHost: a\r\nX-Debug: 1\r\nContent-Type: text/plain\r\nX-Api-Version: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let e = edits(&[("x-api-version", "2")], &["x-debug"]);
        let out = request_head(head, &e, Body::Json(42), false);
        assert_eq!(
            text(&out),
            "POST /v2/transfers HTTP/1.1\r\nHost: a\r\nx-api-version: 2\r\ncontent-type: application/json\r\ncontent-length: 42\r\n\r\n"
        );
    }

    #[test]
    fn request_head_without_a_program_keeps_its_framing() {
        let head =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nAccept-Encoding: zstd\r\n\r\n";
        let out = request_head(head, &HeaderEdits::default(), Body::Unchanged, true);
        assert_eq!(
            text(&out),
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\naccept-encoding: gzip, br\r\n\r\n"
        );
    }

    #[test]
    fn response_head_is_reframed_and_its_strong_etag_weakened() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Encoding: gzip\r\nETag: \"v1\"\r\nX-Internal-Trace: t\r\nVia: 1.1 dispatch\r\nTransfer-Encoding: chunked\r\n\r\n";
        let out = response_head(head, &edits(&[], &["x-internal-trace"]), Body::Json(7));
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\netag: W/\"v1\"\r\nVia: 1.1 dispatch\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n"
        );
        // A weak ETag already promises only the meaning: kept as it is.
        let head = b"HTTP/1.1 200 OK\r\nETag: W/\"v1\"\r\nContent-Length: 3\r\n\r\n";
        let out = response_head(head, &HeaderEdits::default(), Body::Json(2));
        assert!(text(&out).contains("ETag: W/\"v1\"\r\n"), "{}", text(&out));
    }

    #[test]
    fn a_head_answer_loses_its_length() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\nETag: \"x\"\r\n\r\n";
        let out = response_head(head, &HeaderEdits::default(), Body::Unknown);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\netag: W/\"x\"\r\ncontent-type: application/json\r\n\r\n"
        );
    }

    #[test]
    fn response_head_of_an_untransformed_answer_only_gets_the_edits() {
        let head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nX-Internal-Trace: t\r\n\r\n";
        let out = response_head(
            head,
            &edits(&[("x-a", "b")], &["x-internal-trace"]),
            Body::Unchanged,
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nx-a: b\r\n\r\n"
        );
    }

    #[test]
    fn encodings_are_read_as_lists() {
        let of = |v: &[&str]| Encoding::of(v.iter().map(|s| s.as_bytes()));
        assert_eq!(of(&[]), Encoding::Identity);
        assert_eq!(of(&["identity"]), Encoding::Identity);
        assert_eq!(of(&["GZIP"]), Encoding::Gzip);
        assert_eq!(of(&["br"]), Encoding::Br);
        assert_eq!(of(&["gzip, br"]), Encoding::Other);
        assert_eq!(of(&["zstd"]), Encoding::Other);
    }

    #[test]
    fn gzip_and_br_decode_within_the_limit() {
        use std::io::Write;
        let plain = br#"{"a":1}"#.repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decode(&Encoding::Gzip, gz.clone(), 10_000),
            Ok(plain.clone())
        );
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(&plain)
            .unwrap();
        assert_eq!(decode(&Encoding::Br, br.clone(), 10_000), Ok(plain.clone()));
        // Decoded past the limit (a compression bomb): refused, not buffered.
        let too_large = decode(&Encoding::Gzip, gz, plain.len() - 1).unwrap_err();
        assert_eq!(too_large.status, 502);
        assert!(decode(&Encoding::Br, br, plain.len()).is_ok());
        assert_eq!(
            decode(&Encoding::Gzip, b"not gzip".to_vec(), 100)
                .unwrap_err()
                .status,
            502
        );
        assert_eq!(
            decode(&Encoding::Other, Vec::new(), 100)
                .unwrap_err()
                .status,
            502
        );
    }

    #[test]
    fn bodies_are_refused_with_the_documented_statuses() {
        let p = Program::compile("{x: .a.b}", &["now"]).unwrap();
        assert_eq!(
            request_body(&p, br#"{"a":{"b":1}}"#),
            Ok(br#"{"x":1}"#.to_vec())
        );
        let e = request_body(&p, b"nope").unwrap_err();
        assert_eq!(
            (e.status, e.message.starts_with("Request body is not JSON")),
            (400, true)
        );
        assert_eq!(request_body(&p, b"").unwrap_err().status, 400);
        let e = request_body(&p, br#"{"a":"s"}"#).unwrap_err();
        assert_eq!(
            (e.status, e.message.starts_with("Request transform failed")),
            (400, true)
        );
        let (e, _) = response_body(&p, b"<html>").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (502, "Upstream response is not JSON")
        );
        let (e, detail) = response_body(&p, br#"{"a":"s"}"#).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (502, "Response transform failed")
        );
        assert!(detail.contains("cannot index"), "{detail}");
        let empty = Program::compile("empty", &["now"]).unwrap();
        assert_eq!(response_body(&empty, b"{}").unwrap_err().0.status, 502);
    }
}
