//! Response compression's HTTP rules and encoders (RFC 9110 §8.4, §12.5.3; issue 13): which
//! coding a client accepts ([`negotiate`]), whether a response may be compressed
//! ([`compressible`]), what the compressed response's head changes ([`Edits`]), and the
//! streaming encoders ([`Encoder`]: gzip with flate2, brotli), which take a body chunk by
//! chunk and give back what is ready, so nothing waits for the whole body.
//!
//! Pure: no I/O, no config types; the caller passes the configured order, types and minimum
//! size. The response phase that applies them is `pipeline::compress`.
//!
//! The one thing to know: a coding is chosen only from what the gateway offers, in its
//! order among codings the client rates equally; `q=0` refuses a coding, and a request
//! without `Accept-Encoding` gets the body as it is (RFC 9110 §12.5.3 allows any coding then,
//! but a client that sent nothing may not decode one: nginx and Envoy do not compress either).

use std::io::Write;

use super::Header;

/// A content coding the gateway can apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Br,
    Gzip,
}

impl Coding {
    /// The token in `Content-Encoding` / `Accept-Encoding`.
    pub const fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// The fields named `name` (ASCII case-insensitive).
fn fields<'h, 'b>(headers: &'h [Header<'b>], name: &'h str) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The members of a comma-separated list field, trimmed, empty ones skipped.
fn members(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|m| !m.is_empty())
}

/// A `qvalue` (RFC 9110 §12.4.2) in thousandths: `0`, `0.5`, `1.000`. None when malformed.
fn qvalue(text: &[u8]) -> Option<u16> {
    match text {
        [b'0'] => Some(0),
        [b'1'] => Some(1000),
        [b'1', b'.', rest @ ..] if rest.len() <= 3 && rest.iter().all(|&b| b == b'0') => Some(1000),
        [b'0', b'.', rest @ ..] if rest.len() <= 3 && rest.iter().all(u8::is_ascii_digit) => {
            let mut n = 0u16;
            for i in 0..3 {
                n = n * 10 + rest.get(i).map_or(0, |d| u16::from(d - b'0'));
            }
            Some(n)
        }
        _ => None,
    }
}

/// The client's weight for each of `offered`, from its `Accept-Encoding` fields: the
/// coding's own member, else `*`'s, else 0 (not acceptable). A member with a malformed
/// weight is ignored. None: the request has no `Accept-Encoding`.
fn weights(headers: &[Header<'_>], offered: &[Coding]) -> Option<Vec<u16>> {
    let mut lines = fields(headers, "accept-encoding").peekable();
    lines.peek()?;
    let mut own: Vec<Option<u16>> = vec![None; offered.len()];
    let mut star: Option<u16> = None;
    for line in lines {
        for member in members(line) {
            let mut parts = member.split(|&b| b == b';');
            let coding = parts.next().unwrap_or_default().trim_ascii();
            let mut q = Some(1000);
            for param in parts {
                let param = param.trim_ascii();
                if let Some(v) = param
                    .strip_prefix(b"q=")
                    .or_else(|| param.strip_prefix(b"Q="))
                {
                    q = qvalue(v.trim_ascii());
                }
            }
            let Some(q) = q else { continue };
            if coding == b"*" {
                star = Some(star.map_or(q, |s| s.max(q)));
                continue;
            }
            for (i, c) in offered.iter().enumerate() {
                // `x-gzip` is gzip (RFC 9110 §8.4.1.3).
                let hit = coding.eq_ignore_ascii_case(c.token().as_bytes())
                    || (*c == Coding::Gzip && coding.eq_ignore_ascii_case(b"x-gzip"));
                if hit {
                    own[i] = Some(own[i].map_or(q, |o| o.max(q)));
                }
            }
        }
    }
    Some(own.iter().map(|o| o.or(star).unwrap_or(0)).collect())
}

/// The coding to apply for a request (RFC 9110 §12.5.3): among `offered` (the gateway's
/// order), those the client weighs above zero, the heaviest, the gateway's order breaking
/// ties. None: send the body as it is.
pub fn negotiate(headers: &[Header<'_>], offered: &[Coding]) -> Option<Coding> {
    let weights = weights(headers, offered)?;
    let mut best: Option<(u16, Coding)> = None;
    for (&w, &c) in weights.iter().zip(offered) {
        if w > 0 && best.is_none_or(|(b, _)| w > b) {
            best = Some((w, c));
        }
    }
    best.map(|(_, c)| c)
}

/// What [`compressible`] reads of an exchange.
#[derive(Clone, Copy, Debug)]
pub struct Exchange<'a, 'b> {
    /// The request was HEAD: no body to compress.
    pub head_request: bool,
    /// The request asked for a range (`Range`): a 206 of compressed bytes would not match
    /// the ranges asked for.
    pub range_request: bool,
    pub status: u16,
    pub response_headers: &'a [Header<'b>],
    /// The body's length, None when not known in advance (chunked, until close).
    pub body_len: Option<u64>,
}

/// Why a response is sent as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uncompressed {
    /// HEAD, 1xx, 204, 304: no body.
    NoBody,
    /// A range was asked for, or the answer is a 206.
    Range,
    /// Already encoded (`Content-Encoding` other than `identity`).
    Encoded,
    /// `Cache-Control: no-transform` (RFC 9110 §7.7).
    NoTransform,
    /// The media type is not one of the configured types (or there is none).
    Type,
    /// Known to be shorter than the minimum size.
    Small,
}

/// Whether a response may be compressed: it has a body, it is not a range, not encoded
/// already, not `no-transform`, its type is one of `types` (`type/subtype` exactly, or
/// `type/*`; parameters and case ignored), and its length is unknown or at least `min_size`.
pub fn compressible(
    x: &Exchange<'_, '_>,
    types: &[String],
    min_size: u64,
) -> Result<(), Uncompressed> {
    if x.head_request || x.status < 200 || x.status == 204 || x.status == 304 {
        return Err(Uncompressed::NoBody);
    }
    if x.range_request || x.status == 206 {
        return Err(Uncompressed::Range);
    }
    let headers = x.response_headers;
    if fields(headers, "content-encoding")
        .flat_map(members)
        .any(|c| !c.eq_ignore_ascii_case(b"identity"))
    {
        return Err(Uncompressed::Encoded);
    }
    if fields(headers, "cache-control")
        .flat_map(members)
        .any(|d| d.eq_ignore_ascii_case(b"no-transform"))
    {
        return Err(Uncompressed::NoTransform);
    }
    let media = fields(headers, "content-type").next().map(|v| {
        v.split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii()
    });
    let Some(media) = media else {
        return Err(Uncompressed::Type);
    };
    if !types.iter().any(|t| type_matches(t.as_bytes(), media)) {
        return Err(Uncompressed::Type);
    }
    if x.body_len.is_some_and(|n| n < min_size) {
        return Err(Uncompressed::Small);
    }
    Ok(())
}

/// `pattern` (`type/subtype` or `type/*`) against a media type, case-insensitively.
fn type_matches(pattern: &[u8], media: &[u8]) -> bool {
    match pattern.strip_suffix(b"/*") {
        Some(kind) => media
            .split(|&b| b == b'/')
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case(kind) && media.len() > kind.len() + 1),
        None => pattern.eq_ignore_ascii_case(media),
    }
}

/// How a compressed response's head differs from the upstream's: `Content-Encoding` added,
/// `Content-Length` dropped (the body is re-framed chunked), `Vary: Accept-Encoding` added
/// unless already named (or `*`), a strong `ETag` made weak (RFC 9110 §8.8.1: the bytes
/// differ from the uncompressed representation's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edits {
    pub content_encoding: &'static str,
    /// Add `Vary: Accept-Encoding`.
    pub add_vary: bool,
    /// The weakened `ETag` value, when the upstream's was strong.
    pub weak_etag: Option<Vec<u8>>,
}

impl Edits {
    /// The edits for `headers` compressed with `coding`.
    pub fn of(headers: &[Header<'_>], coding: Coding) -> Edits {
        let add_vary = !fields(headers, "vary")
            .flat_map(members)
            .any(|m| m == b"*" || m.eq_ignore_ascii_case(b"accept-encoding"));
        let weak_etag = fields(headers, "etag")
            .next()
            .map(<[u8]>::trim_ascii)
            .filter(|v| v.starts_with(b"\""))
            .map(|v| [b"W/", v].concat());
        Edits {
            content_encoding: coding.token(),
            add_vary,
            weak_etag,
        }
    }

    /// Whether the upstream's field `name` is left out of the compressed head (it is
    /// replaced or made wrong by compression).
    pub fn drops(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("content-length")
            || (self.weak_etag.is_some() && name.eq_ignore_ascii_case("etag"))
    }
}

/// gzip level: 5 of 9, about three quarters of level 9's ratio at a third of its CPU.
pub const GZIP_LEVEL: u32 = 5;
/// Brotli quality: 4 of 11 (better ratio than gzip 5 at similar speed; 11 is for static
/// assets compressed once).
pub const BROTLI_QUALITY: u32 = 4;
/// Brotli window: 2^20 bytes, small enough for a streaming proxy's memory.
const BROTLI_WINDOW: u32 = 20;

enum Inner {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
}

/// A streaming encoder: each [`Encoder::write`] takes the next part of the body and appends
/// the compressed bytes that are ready; [`Encoder::finish`] ends the stream.
pub struct Encoder {
    inner: Inner,
}

impl Encoder {
    pub fn new(coding: Coding) -> Encoder {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Coding::Br => Inner::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BROTLI_QUALITY,
                BROTLI_WINDOW,
            ))),
        };
        Encoder { inner }
    }

    /// Compresses `input` and appends to `out` what the encoder has ready. With `flush`,
    /// everything given so far is made decodable now (a sync flush: for a body that arrives
    /// slowly, such as a stream of events, whose parts must not wait for the next).
    pub fn write(&mut self, input: &[u8], flush: bool, out: &mut Vec<u8>) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Gzip(e) => {
                e.write_all(input)?;
                if flush {
                    e.flush()?;
                }
                out.append(e.get_mut());
            }
            Inner::Br(e) => {
                e.write_all(input)?;
                if flush {
                    e.flush()?;
                }
                out.append(e.get_mut());
            }
        }
        Ok(())
    }

    /// Ends the stream, appending the rest (and the gzip trailer) to `out`.
    pub fn finish(self, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self.inner {
            Inner::Gzip(e) => out.append(&mut e.finish()?),
            Inner::Br(e) => out.append(&mut e.into_inner()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn h<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<Header<'a>> {
        pairs
            .iter()
            .map(|&(name, value)| Header {
                name,
                value: value.as_bytes(),
            })
            .collect()
    }

    const BOTH: [Coding; 2] = [Coding::Br, Coding::Gzip];

    /// (request fields, offered codings, expected choice)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [Coding], Option<Coding>);

    /// q-values decide; the gateway's order breaks ties; `q=0` refuses; `*` covers the
    /// codings not named; no field means no coding.
    #[test]
    fn negotiation_table() {
        let cases: &[Case<'_>] = &[
            (&[], &BOTH, None),
            (&[("Accept-Encoding", "")], &BOTH, None),
            (&[("Accept-Encoding", "gzip")], &BOTH, Some(Coding::Gzip)),
            (&[("Accept-Encoding", "gzip, br")], &BOTH, Some(Coding::Br)),
            (
                &[("Accept-Encoding", "gzip, br")],
                &[Coding::Gzip, Coding::Br],
                Some(Coding::Gzip),
            ),
            (
                &[("Accept-Encoding", "br;q=0.5, gzip")],
                &BOTH,
                Some(Coding::Gzip),
            ),
            (
                &[("Accept-Encoding", "br;q=0.5, gzip;q=0.4")],
                &BOTH,
                Some(Coding::Br),
            ),
            (&[("Accept-Encoding", "br;q=0, gzip;q=0")], &BOTH, None),
            (&[("Accept-Encoding", "*")], &BOTH, Some(Coding::Br)),
            (
                &[("Accept-Encoding", "*;q=0.1, br;q=0")],
                &BOTH,
                Some(Coding::Gzip),
            ),
            (&[("Accept-Encoding", "identity")], &BOTH, None),
            (&[("Accept-Encoding", "deflate")], &BOTH, None),
            (&[("Accept-Encoding", "x-gzip")], &BOTH, Some(Coding::Gzip)),
            (
                &[("Accept-Encoding", "GZIP; Q=0.8")],
                &BOTH,
                Some(Coding::Gzip),
            ),
            (&[("Accept-Encoding", "gzip;q=1.5")], &BOTH, None),
            (&[("Accept-Encoding", "gzip;q=0.1234")], &BOTH, None),
            (
                &[("Accept-Encoding", "br"), ("Accept-Encoding", "gzip;q=0.9")],
                &BOTH,
                Some(Coding::Br),
            ),
            (&[("Accept-Encoding", "br")], &[Coding::Gzip], None),
        ];
        for (headers, offered, want) in cases {
            assert_eq!(
                negotiate(&h(headers), offered),
                *want,
                "{headers:?} {offered:?}"
            );
        }
    }

    fn exchange<'a, 'b>(headers: &'a [Header<'b>]) -> Exchange<'a, 'b> {
        Exchange {
            head_request: false,
            range_request: false,
            status: 200,
            response_headers: headers,
            body_len: Some(4096),
        }
    }

    /// Each "never compress" rule, and the types and size that allow it.
    #[test]
    fn compressible_rules() {
        let types = vec!["application/json".to_string(), "text/*".to_string()];
        let json = h(&[("Content-Type", "application/json; charset=utf-8")]);
        assert_eq!(compressible(&exchange(&json), &types, 1024), Ok(()));
        let text = h(&[("Content-Type", "TEXT/html")]);
        assert_eq!(compressible(&exchange(&text), &types, 1024), Ok(()));
        for (headers, why) in [
            (h(&[("Content-Type", "image/png")]), Uncompressed::Type),
            (h(&[]), Uncompressed::Type),
            (h(&[("Content-Type", "text")]), Uncompressed::Type),
            (
                h(&[("Content-Type", "text/plain"), ("Content-Encoding", "gzip")]),
                Uncompressed::Encoded,
            ),
            (
                h(&[
                    ("Content-Type", "text/plain"),
                    ("Cache-Control", "public, no-transform"),
                ]),
                Uncompressed::NoTransform,
            ),
        ] {
            assert_eq!(compressible(&exchange(&headers), &types, 1024), Err(why));
        }
        let identity = h(&[
            ("Content-Type", "text/plain"),
            ("Content-Encoding", "identity"),
        ]);
        assert_eq!(compressible(&exchange(&identity), &types, 1024), Ok(()));
        let small = Exchange {
            body_len: Some(100),
            ..exchange(&json)
        };
        assert_eq!(compressible(&small, &types, 1024), Err(Uncompressed::Small));
        let unknown = Exchange {
            body_len: None,
            ..exchange(&json)
        };
        assert_eq!(compressible(&unknown, &types, 1024), Ok(()));
        for (x, why) in [
            (
                Exchange {
                    head_request: true,
                    ..exchange(&json)
                },
                Uncompressed::NoBody,
            ),
            (
                Exchange {
                    status: 204,
                    ..exchange(&json)
                },
                Uncompressed::NoBody,
            ),
            (
                Exchange {
                    status: 304,
                    ..exchange(&json)
                },
                Uncompressed::NoBody,
            ),
            (
                Exchange {
                    status: 206,
                    ..exchange(&json)
                },
                Uncompressed::Range,
            ),
            (
                Exchange {
                    range_request: true,
                    ..exchange(&json)
                },
                Uncompressed::Range,
            ),
        ] {
            assert_eq!(compressible(&x, &types, 1024), Err(why));
        }
    }

    /// Vary gains Accept-Encoding once; a strong ETag turns weak, a weak one stays.
    #[test]
    fn edits_add_vary_once_and_weaken_strong_etags() {
        let e = Edits::of(&h(&[("ETag", "\"abc\""), ("Vary", "Origin")]), Coding::Gzip);
        assert_eq!(e.content_encoding, "gzip");
        assert!(e.add_vary);
        assert_eq!(e.weak_etag.as_deref(), Some(&b"W/\"abc\""[..]));
        assert!(e.drops("ETag") && e.drops("content-length") && !e.drops("vary"));
        let e = Edits::of(
            &h(&[("ETag", "W/\"abc\""), ("Vary", "accept-encoding")]),
            Coding::Br,
        );
        assert!(!e.add_vary);
        assert_eq!(e.weak_etag, None);
        assert!(!e.drops("etag"));
        assert!(!Edits::of(&h(&[("Vary", "*")]), Coding::Br).add_vary);
    }

    fn body() -> Vec<u8> {
        (0..2000)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\"}},").into_bytes())
            .collect()
    }

    fn decode(coding: Coding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => flate2::read::GzDecoder::new(bytes).read_to_end(&mut out),
            Coding::Br => brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out),
        }
        .unwrap();
        out
    }

    /// A body given in chunks decodes to itself, smaller; a flushed chunk is decodable before
    /// the stream ends (what a slow stream needs).
    #[test]
    fn encoders_stream_chunk_by_chunk_and_flush_makes_the_prefix_decodable() {
        let body = body();
        for coding in BOTH {
            let mut enc = Encoder::new(coding);
            let mut out = Vec::new();
            for chunk in body.chunks(7000) {
                enc.write(chunk, false, &mut out).unwrap();
            }
            enc.finish(&mut out).unwrap();
            assert!(
                out.len() * 4 < body.len(),
                "{coding:?}: {} bytes",
                out.len()
            );
            assert_eq!(decode(coding, &out), body);

            let mut enc = Encoder::new(coding);
            let mut out = Vec::new();
            enc.write(b"{\"event\":1}", true, &mut out).unwrap();
            assert!(!out.is_empty(), "{coding:?}: nothing after a flush");
            let mut partial = Vec::new();
            let mut reader: Box<dyn Read> = match coding {
                Coding::Gzip => Box::new(flate2::read::GzDecoder::new(&out[..])),
                Coding::Br => Box::new(brotli::Decompressor::new(&out[..], 4096)),
            };
            let mut buf = [0u8; 64];
            let n = reader.read(&mut buf).unwrap();
            partial.extend_from_slice(&buf[..n]);
            assert_eq!(partial, b"{\"event\":1}", "{coding:?}");
        }
    }
}
