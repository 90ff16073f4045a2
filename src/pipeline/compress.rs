//! The compression response phase (`[compression]`, issue 13): the last of the response
//! phases, after the transform. It applies to every answer on its way out, whoever made it,
//! once the head the client would get is written: the upstream's head relayed by the proxy
//! phase (its body then compressed chunk by chunk as it streams, [`BodyOut`]), and every
//! answer held whole before it leaves (the gateway's errors, an aggregate's composite, a
//! transformed body, a cache hit: [`whole`]). The cache stores what the upstream sent; a hit
//! is compressed here for its own requester.
//!
//! The rules are [`crate::http::encoding`]'s (pure, with the encoders): [`offer`] reads the
//! request once (`Accept-Encoding` against the configured order; never for HEAD or a `Range`
//! request), and [`head`] reads the head written for the client (status, `Content-Encoding`,
//! `Cache-Control: no-transform`, the media type, the length) and rewrites it:
//! `Content-Encoding` set, `Vary: Accept-Encoding` merged into the first `Vary`,
//! a strong `ETag` weakened (RFC 9110 §8.8.1), and the fields that describe the uncompressed
//! bytes dropped (`Content-Length`, `Accept-Ranges`, `Content-Digest` and `Repr-Digest`,
//! RFC 9530 §2-3). A streamed body is re-framed chunked for an HTTP/1.1 client; an HTTP/1.0
//! client has no chunked coding (RFC 9112 §7), so its body ends when the connection closes
//! (`Connection: close`). A body held whole is sent with the compressed length instead.
//!
//! Cost: nothing unless the section is configured and the client accepts a coding; then the
//! head the gateway wrote is parsed once more, and a compressed stream holds its encoder's
//! state (gzip: about 256 KiB at level 5; brotli: its window and hash tables) until it ends.

use std::sync::Arc;

use crate::config::model::Compression;
use crate::http::encoding::{self, Coding, Edits, Encoder, Exchange};
use crate::http::{self, HeadLimits, Header, RequestHead, ResponseHead, Version};

/// What a request accepts, when compression may apply to its answer: the coding negotiated
/// against the configured order, and what the response side needs of the config.
#[derive(Clone, Debug)]
pub struct Offer {
    pub coding: Coding,
    config: Arc<Compression>,
    /// The client speaks HTTP/1.0: a streamed compressed body is close-delimited.
    http10: bool,
}

/// The request side of the phase, read once per request: None when the config has no
/// `[compression]`, the request is HEAD (no body) or asks for a range (RFC 9110 §14.2: the
/// ranges address the uncompressed bytes it would otherwise get), or the client accepts none
/// of the configured codings.
pub fn offer(head: &RequestHead<'_>, config: Option<&Arc<Compression>>) -> Option<Offer> {
    let config = config?;
    if head.method == "HEAD" || head.header("range").is_some() {
        return None;
    }
    let coding = encoding::negotiate(&head.headers, &config.algorithms)?;
    Some(Offer {
        coding,
        config: config.clone(),
        http10: head.version == Version::Http10,
    })
}

/// How a compressed body is framed for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Held whole: its compressed length is known.
    Length(u64),
    /// Streamed to an HTTP/1.1 client.
    Chunked,
    /// Streamed to an HTTP/1.0 client: the connection closes after it.
    UntilClose,
}

/// A head the gateway wrote never approaches these; they bound the parse, not the answer.
const OWN_HEAD: HeadLimits = HeadLimits {
    max_request_line: 64 * 1024,
    max_header_bytes: 4 * 1024 * 1024,
    max_headers: 128,
};

/// Parses the head the gateway wrote at `buf`'s start; a head with more fields than the parse
/// keeps on the stack is parsed again with room for them.
fn parse_own(buf: &[u8]) -> Option<ResponseHead<'_>> {
    match http::parse_response(buf, &OWN_HEAD) {
        Ok(parsed) => parsed,
        Err(_) => {
            let wide = HeadLimits {
                max_headers: 16 * 1024,
                ..OWN_HEAD
            };
            http::parse_response(buf, &wide).ok().flatten()
        }
    }
}

/// The response side: whether the head `h` (with a body of `body_len` bytes, None when not
/// known in advance) is compressed for `offer`, and how its head changes.
fn decide(offer: &Offer, h: &ResponseHead<'_>, body_len: Option<u64>) -> Option<Edits> {
    let exchange = Exchange {
        // The offer is None for both.
        head_request: false,
        range_request: false,
        status: h.status,
        response_headers: &h.headers,
        body_len,
    };
    encoding::compressible(&exchange, &offer.config.types, offer.config.min_size).ok()?;
    Some(Edits::of(&h.headers, offer.coding))
}

/// Fields that describe the uncompressed bytes, or that the gateway writes itself.
fn dropped(name: &str, edits: &Edits, framing: Framing) -> bool {
    edits.drops(name)
        || name.eq_ignore_ascii_case("transfer-encoding")
        || name.eq_ignore_ascii_case("content-encoding")
        // A range of the compressed bytes is not offered (RFC 9110 §14.3).
        || name.eq_ignore_ascii_case("accept-ranges")
        // RFC 9530 §2-3: both digests cover the content as coded, which this changes.
        || name.eq_ignore_ascii_case("content-digest")
        || name.eq_ignore_ascii_case("repr-digest")
        || (framing == Framing::UntilClose && name.eq_ignore_ascii_case("connection"))
}

/// Writes the compressed answer's head: `h`'s status line and fields with `edits` applied,
/// then the framing.
fn write_head(
    out: &mut Vec<u8>,
    status_line: &[u8],
    h: &[Header<'_>],
    edits: &Edits,
    framing: Framing,
) {
    out.extend_from_slice(status_line);
    let mut vary_done = !edits.add_vary;
    for f in h {
        if dropped(f.name, edits, framing) {
            continue;
        }
        if !vary_done && f.name.eq_ignore_ascii_case("vary") {
            // Merged into the first Vary rather than a second field beside it.
            vary_done = true;
            out.extend_from_slice(f.name.as_bytes());
            out.extend_from_slice(b": ");
            let value = f.value.trim_ascii();
            if !value.is_empty() {
                out.extend_from_slice(value);
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(b"Accept-Encoding\r\n");
            continue;
        }
        http::write::header(out, f.name, f.value);
    }
    if let Some(etag) = &edits.weak_etag {
        http::write::header(out, "ETag", etag);
    }
    if !vary_done {
        out.extend_from_slice(b"Vary: Accept-Encoding\r\n");
    }
    http::write::header(out, "Content-Encoding", edits.content_encoding.as_bytes());
    match framing {
        Framing::Length(n) => http::write::header_u64(out, "Content-Length", n),
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::UntilClose => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The status line of a head: its bytes up to and including the first CRLF.
fn status_line(head: &[u8]) -> &[u8] {
    let end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(head.len(), |i| i + 2);
    &head[..end]
}

/// A compressed body as it streams: each part of the upstream's body is encoded and framed
/// for the client as it arrives.
pub struct BodyOut {
    encoder: Encoder,
    framing: Framing,
    /// The encoder's output before it is framed (kept: one allocation per stream).
    scratch: Vec<u8>,
}

impl BodyOut {
    /// How the client's body is framed (`Chunked` or `UntilClose`).
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Encodes `data` and appends what the encoder has ready, framed, to `out`. With `flush`
    /// everything so far is made decodable now: the caller is about to wait for the upstream,
    /// and what arrived must not wait for what has not (a stream of events, a slow upstream).
    pub fn push(&mut self, data: &[u8], flush: bool, out: &mut Vec<u8>) -> std::io::Result<()> {
        self.scratch.clear();
        // A flush with nothing new would only add an empty block.
        self.encoder
            .write(data, flush && !data.is_empty(), &mut self.scratch)?;
        self.frame(out);
        Ok(())
    }

    /// Ends the stream: the encoder's rest, and the last chunk.
    pub fn finish(self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let BodyOut {
            encoder,
            framing,
            mut scratch,
        } = self;
        scratch.clear();
        encoder.finish(&mut scratch)?;
        frame(framing, &scratch, out);
        if framing == Framing::Chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        Ok(())
    }

    fn frame(&self, out: &mut Vec<u8>) {
        frame(self.framing, &self.scratch, out);
    }
}

/// Appends `coded` to `out` in `framing` (nothing for nothing: a zero-size chunk would end
/// the body).
fn frame(framing: Framing, coded: &[u8], out: &mut Vec<u8>) {
    if coded.is_empty() {
        return;
    }
    if framing == Framing::Chunked {
        http::write_chunk_header(out, coded.len());
        out.extend_from_slice(coded);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(coded);
    }
}

/// The phase for a streamed body: the head written for the client at `buf[start..]` (its body
/// `body_len` bytes, None when not known in advance) is rewritten for the negotiated coding
/// when the rules allow, and the body's encoder returned. None: the head is left as it is.
pub fn head(
    buf: &mut Vec<u8>,
    start: usize,
    offer: &Offer,
    body_len: Option<u64>,
) -> Option<BodyOut> {
    let framing = if offer.http10 {
        Framing::UntilClose
    } else {
        Framing::Chunked
    };
    let mut out = Vec::with_capacity(buf.len() - start + 64);
    let edits = {
        let h = parse_own(&buf[start..])?;
        let edits = decide(offer, &h, body_len)?;
        write_head(
            &mut out,
            status_line(&buf[start..]),
            &h.headers,
            &edits,
            framing,
        );
        edits
    };
    buf.truncate(start);
    buf.extend_from_slice(&out);
    Some(BodyOut {
        encoder: Encoder::new(coding_of(&edits)),
        framing,
        scratch: Vec::new(),
    })
}

fn coding_of(edits: &Edits) -> Coding {
    if edits.content_encoding == Coding::Br.token() {
        Coding::Br
    } else {
        Coding::Gzip
    }
}

/// The phase for an answer held whole at `buf[start..]` (head and body, as written with its
/// `Content-Length`): compressed in place when `offer` and the rules allow, with the
/// compressed length, so the connection stays as reusable as it was (HTTP/1.0 included).
/// Otherwise, or when the head does not frame the bytes behind it by length, left as it is.
pub fn whole(buf: &mut Vec<u8>, start: usize, offer: Option<&Offer>) {
    let Some(offer) = offer else { return };
    let mut out = Vec::new();
    {
        let written = &buf[start..];
        let Some(h) = parse_own(written) else { return };
        let body = &written[h.head_len..];
        let framed = h
            .header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok());
        // A HEAD's or a 304's head, or a body not framed by its length: nothing to compress.
        if framed != Some(body.len() as u64) || h.header("transfer-encoding").is_some() {
            return;
        }
        let Some(edits) = decide(offer, &h, Some(body.len() as u64)) else {
            return;
        };
        let mut encoded = Vec::with_capacity(body.len() / 4 + 64);
        let mut encoder = Encoder::new(coding_of(&edits));
        // Writing into memory does not fail; if an encoder ever did, the answer goes as it is.
        if encoder.write(body, false, &mut encoded).is_err()
            || encoder.finish(&mut encoded).is_err()
        {
            return;
        }
        out.reserve(h.head_len + encoded.len() + 64);
        let framing = Framing::Length(encoded.len() as u64);
        write_head(&mut out, status_line(written), &h.headers, &edits, framing);
        out.extend_from_slice(&encoded);
    }
    buf.truncate(start);
    buf.extend_from_slice(&out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn config(min_size: u64) -> Arc<Compression> {
        Arc::new(Compression {
            algorithms: vec![Coding::Br, Coding::Gzip],
            min_size,
            types: vec!["application/json".into(), "text/*".into()],
        })
    }

    fn offer_for(request: &str, min_size: u64) -> Option<Offer> {
        let limits = HeadLimits {
            max_request_line: 8192,
            max_header_bytes: 8192,
            max_headers: 64,
        };
        let head = http::parse_request(request.as_bytes(), &limits)
            .unwrap()
            .unwrap();
        offer(&head, Some(&config(min_size)))
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// HEAD and Range requests get no offer; a client's q-values pick the coding.
    #[test]
    fn offer_reads_the_request_once() {
        let get = "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip, br;q=0.5\r\n\r\n";
        assert_eq!(offer_for(get, 0).map(|o| o.coding), Some(Coding::Gzip));
        let head = "HEAD / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n";
        assert!(offer_for(head, 0).is_none());
        let range =
            "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\nRange: bytes=0-1\r\n\r\n";
        assert!(offer_for(range, 0).is_none());
        let none = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(offer_for(none, 0).is_none());
    }

    /// A whole answer is compressed in place with its compressed length; the fields that
    /// described the uncompressed bytes go, Vary is merged, a strong ETag weakened.
    #[test]
    fn whole_answer_is_rewritten_with_its_compressed_length() {
        let offer = offer_for(
            "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n",
            16,
        )
        .unwrap();
        let body = "{\"k\":\"".to_string() + &"v".repeat(4000) + "\"}";
        let mut buf = b"xx".to_vec();
        buf.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nVary: Origin\r\nETag: \"e1\"\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        whole(&mut buf, 2, Some(&offer));
        assert_eq!(&buf[..2], b"xx");
        let h = http::parse_response(&buf[2..], &OWN_HEAD).unwrap().unwrap();
        assert_eq!(h.header("content-encoding"), Some(&b"gzip"[..]));
        assert_eq!(h.header("vary"), Some(&b"Origin, Accept-Encoding"[..]));
        assert_eq!(
            h.headers
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("vary"))
                .count(),
            1
        );
        assert_eq!(h.header("etag"), Some(&b"W/\"e1\""[..]));
        assert_eq!(h.header("accept-ranges"), None);
        let encoded = &buf[2 + h.head_len..];
        assert_eq!(
            h.header("content-length"),
            Some(encoded.len().to_string().as_bytes())
        );
        assert_eq!(gunzip(encoded), body.as_bytes());

        // Under min_size, or of another type: untouched.
        for answer in [
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                .to_string(),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        ] {
            let mut buf = answer.clone().into_bytes();
            whole(&mut buf, 0, Some(&offer));
            assert_eq!(buf, answer.as_bytes());
        }
    }

    /// A streamed body to an HTTP/1.0 client is close-delimited; to HTTP/1.1, chunked; the
    /// chunks decode back to the body.
    #[test]
    fn streamed_head_is_reframed_and_the_body_decodes() {
        let head_in = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\nConnection: keep-alive\r\n\r\n";
        let old = offer_for("GET / HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n", 0).unwrap();
        let mut buf = head_in.as_bytes().to_vec();
        let body = head(&mut buf, 0, &old, Some(5000)).unwrap();
        assert_eq!(body.framing(), Framing::UntilClose);
        let h = http::parse_response(&buf, &OWN_HEAD).unwrap().unwrap();
        assert_eq!(h.header("connection"), Some(&b"close"[..]));
        assert_eq!(h.header("content-length"), None);

        let new = offer_for(
            "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n",
            0,
        )
        .unwrap();
        let mut buf = head_in.as_bytes().to_vec();
        let mut body = head(&mut buf, 0, &new, Some(5000)).unwrap();
        let h = http::parse_response(&buf, &OWN_HEAD).unwrap().unwrap();
        assert_eq!(h.header("transfer-encoding"), Some(&b"chunked"[..]));
        assert_eq!(h.header("connection"), Some(&b"keep-alive"[..]));
        assert_eq!(h.header("vary"), Some(&b"Accept-Encoding"[..]));
        let text = "line of text\n".repeat(400);
        let mut wire = Vec::new();
        for part in text.as_bytes().chunks(1000) {
            body.push(part, true, &mut wire).unwrap();
        }
        body.finish(&mut wire).unwrap();
        let mut decoder = http::ChunkedDecoder::new();
        let (mut pos, mut decoded) = (0, Vec::new());
        loop {
            let step = decoder.decode(&wire[pos..]).unwrap();
            if let Some(r) = step.data {
                decoded.extend_from_slice(&wire[pos + r.start..pos + r.end]);
            }
            pos += step.consumed;
            if step.done {
                break;
            }
        }
        assert_eq!(pos, wire.len());
        assert_eq!(gunzip(&decoded), text.as_bytes());

        // A 206 is never compressed.
        let mut partial = b"HTTP/1.1 206 Partial Content\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n".to_vec();
        assert!(head(&mut partial, 0, &new, Some(10)).is_none());
    }
}
