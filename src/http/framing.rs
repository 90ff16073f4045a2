//! Message body length (RFC 9112 §6.1–6.3) and the connection-management header helpers.
//!
//! Key type: [`BodyKind`], what the connection code reads after a head. [`request_body`]
//! and [`response_body`] decide it from the headers; [`has_token`], [`wants_close`] and
//! [`is_hop_by_hop`] serve keep-alive decisions and header forwarding.
//!
//! The one thing to know: wherever RFC 9112 lets a recipient choose between guessing and
//! refusing, we refuse. Two parties that frame one byte stream differently is request
//! smuggling, and Transfer-Encoding is always re-framed by us (it is hop-by-hop), so only
//! our reading of the framing matters downstream of us.

use super::parse::{Header, Version};
use super::FramingError;

/// How the body after a head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all: a request with neither Content-Length nor Transfer-Encoding, or a
    /// response to HEAD, a 1xx, 204 or 304 (or a 2xx to CONNECT, which starts a tunnel).
    None,
    /// Exactly this many bytes (may be 0).
    Length(u64),
    /// Chunked transfer coding: feed the bytes to a [`super::ChunkedDecoder`].
    Chunked,
    /// Responses only: the body runs until the upstream closes the connection, which
    /// therefore cannot be reused.
    UntilClose,
}

/// Body framing of a request (RFC 9112 §6.3 items 3–6).
///
/// Errors (each answered 400, or 501 for [`FramingError::UnsupportedTransferCoding`], and
/// the connection closed): Transfer-Encoding in HTTP/1.0; Transfer-Encoding together with
/// Content-Length; a final coding other than `chunked`; `chunked` twice; a coding before
/// `chunked`; an invalid Content-Length; more than one Content-Length value, even an
/// identical one.
pub fn request_body(headers: &[Header<'_>], version: Version) -> Result<BodyKind, FramingError> {
    let fields = Fields::scan(headers)?;
    match fields.transfer_encoding {
        None => Ok(fields
            .content_length
            .map_or(BodyKind::None, BodyKind::Length)),
        Some(codings) => {
            framed_by_te(&fields, version)?;
            match codings {
                Codings::Chunked => Ok(BodyKind::Chunked),
                // RFC 9112 §6.3 item 4: a request whose final coding is not chunked: 400.
                Codings::NotChunkedLast => Err(FramingError::TransferEncodingNotChunked),
                Codings::RepeatedChunked => Err(FramingError::RepeatedChunked),
                Codings::OthersThenChunked => Err(FramingError::UnsupportedTransferCoding),
            }
        }
    }
}

/// Body framing of a response to a request with `request_method` (RFC 9112 §6.3 items
/// 1–7). Every error is answered 502 and the upstream connection closed.
///
/// HEAD, 1xx, 204 and 304 responses, and 2xx to CONNECT, have no body whatever their
/// headers say (the headers are not even validated). A Transfer-Encoding whose final coding
/// is not `chunked` means the body runs until close (item 4); codings before a final
/// `chunked` are refused, since we would forward a body the client cannot decode.
pub fn response_body(
    request_method: &str,
    status: u16,
    headers: &[Header<'_>],
    version: Version,
) -> Result<BodyKind, FramingError> {
    if request_method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        || ((200..300).contains(&status) && request_method.eq_ignore_ascii_case("CONNECT"))
    {
        return Ok(BodyKind::None);
    }
    let fields = Fields::scan(headers)?;
    match fields.transfer_encoding {
        None => Ok(fields
            .content_length
            .map_or(BodyKind::UntilClose, BodyKind::Length)),
        Some(codings) => {
            framed_by_te(&fields, version)?;
            match codings {
                Codings::Chunked => Ok(BodyKind::Chunked),
                Codings::NotChunkedLast => Ok(BodyKind::UntilClose),
                Codings::RepeatedChunked => Err(FramingError::RepeatedChunked),
                Codings::OthersThenChunked => Err(FramingError::UnsupportedTransferCoding),
            }
        }
    }
}

/// Checks shared by requests and responses that carry Transfer-Encoding.
fn framed_by_te(fields: &Fields, version: Version) -> Result<(), FramingError> {
    // RFC 9112 §6.1: TE in an HTTP/1.0 message means the framing is faulty, CL or not.
    if version == Version::Http10 {
        return Err(FramingError::TransferEncodingInHttp10);
    }
    // RFC 9112 §6.3 item 3: TE with CL "ought to be handled as an error": 400 and close.
    if fields.content_length_seen {
        return Err(FramingError::ContentLengthWithTransferEncoding);
    }
    Ok(())
}

/// What the Transfer-Encoding fields of a message say, all fields joined in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codings {
    /// Exactly one coding, `chunked`.
    Chunked,
    /// The final coding is not `chunked` (or there is no coding at all).
    NotChunkedLast,
    /// `chunked` more than once.
    RepeatedChunked,
    /// Other codings, then a final `chunked`.
    OthersThenChunked,
}

struct Fields {
    transfer_encoding: Option<Codings>,
    content_length: Option<u64>,
    content_length_seen: bool,
}

impl Fields {
    fn scan(headers: &[Header<'_>]) -> Result<Fields, FramingError> {
        let mut content_length = None;
        let mut content_length_seen = false;
        let mut codings = 0u32;
        let mut chunked = 0u32;
        let mut last_chunked = false;
        let mut te_seen = false;
        let mut bad_length = false;
        for h in headers {
            if h.name.len() == 14 && h.name.eq_ignore_ascii_case("content-length") {
                if content_length_seen {
                    return Err(FramingError::MultipleContentLength);
                }
                content_length_seen = true;
                // Do not fail yet: TE + an invalid CL is still "TE with CL".
                match parse_content_length(h.value) {
                    Ok(n) => content_length = Some(n),
                    Err(FramingError::MultipleContentLength) => {
                        return Err(FramingError::MultipleContentLength)
                    }
                    Err(_) => bad_length = true,
                }
            } else if h.name.len() == 17 && h.name.eq_ignore_ascii_case("transfer-encoding") {
                te_seen = true;
                for coding in list_elements(h.value) {
                    codings += 1;
                    last_chunked = coding.eq_ignore_ascii_case(b"chunked");
                    chunked += last_chunked as u32;
                }
            }
        }
        let transfer_encoding = te_seen.then_some(match (last_chunked, chunked, codings) {
            (true, 1, 1) => Codings::Chunked,
            (_, 2.., _) => Codings::RepeatedChunked,
            (true, _, _) => Codings::OthersThenChunked,
            (false, _, _) => Codings::NotChunkedLast,
        });
        if bad_length && transfer_encoding.is_none() {
            return Err(FramingError::InvalidContentLength);
        }
        Ok(Fields {
            transfer_encoding,
            content_length,
            content_length_seen,
        })
    }
}

/// Content-Length = 1*DIGIT (RFC 9110 §8.6). No sign, no whitespace inside, no list: a
/// comma means several values, which we refuse even when they are equal.
fn parse_content_length(value: &[u8]) -> Result<u64, FramingError> {
    if value.is_empty() {
        return Err(FramingError::InvalidContentLength);
    }
    let mut n: u64 = 0;
    for &b in value {
        if b == b',' {
            return Err(FramingError::MultipleContentLength);
        }
        if !b.is_ascii_digit() {
            return Err(FramingError::InvalidContentLength);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(FramingError::InvalidContentLength)?;
    }
    Ok(n)
}

/// The non-empty elements of a comma-separated list, OWS trimmed (RFC 9110 §5.6.1: empty
/// elements are ignored).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Whether the comma-separated list `value` (a `Connection` or `Upgrade` field value)
/// holds `token`, compared ASCII case-insensitively.
pub fn has_token(value: &[u8], token: &str) -> bool {
    list_elements(value).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether the connection must close after this message (RFC 9112 §9.3): HTTP/1.1 unless
/// `Connection: close`; HTTP/1.0 unless `Connection: keep-alive`.
pub fn wants_close(version: Version, headers: &[Header<'_>]) -> bool {
    let mut connection = headers
        .iter()
        .filter(|h| h.name.len() == 10 && h.name.eq_ignore_ascii_case("connection"));
    match version {
        Version::Http11 => connection.any(|h| has_token(h.value, "close")),
        Version::Http10 => !connection.any(|h| has_token(h.value, "keep-alive")),
    }
}

/// Whether `name` is one of the fixed hop-by-hop fields (RFC 9110 §7.6.1): Connection,
/// Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade. The fields that
/// `Connection` itself names are hop-by-hop too; check those with [`has_token`].
pub fn is_hop_by_hop(name: &str) -> bool {
    // Dispatch on length first: most names are rejected without comparing a byte.
    let candidate = match name.len() {
        2 => "te",
        7 => return name.eq_ignore_ascii_case("trailer") || name.eq_ignore_ascii_case("upgrade"),
        10 => {
            return name.eq_ignore_ascii_case("connection")
                || name.eq_ignore_ascii_case("keep-alive")
        }
        16 => "proxy-connection",
        17 => "transfer-encoding",
        _ => return false,
    };
    name.eq_ignore_ascii_case(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(fields: &[(&'a str, &'a str)]) -> Vec<Header<'a>> {
        fields
            .iter()
            .map(|&(name, value)| Header {
                name,
                value: value.as_bytes(),
            })
            .collect()
    }

    use BodyKind::{Chunked, Length, UntilClose};
    use FramingError::*;
    use Version::{Http10, Http11};

    type RequestCase = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Version,
        Result<BodyKind, FramingError>,
    );

    #[rustfmt::skip]
    const REQUESTS: &[RequestCase] = &[
        ("no framing headers", &[("Host", "a")], Http11, Ok(BodyKind::None)),
        ("content-length", &[("Content-Length", "42")], Http11, Ok(Length(42))),
        ("content-length zero", &[("content-length", "0")], Http11, Ok(Length(0))),
        ("leading zeros", &[("Content-Length", "007")], Http11, Ok(Length(7))),
        ("u64 max", &[("Content-Length", "18446744073709551615")], Http11, Ok(Length(u64::MAX))),
        ("u64 overflow", &[("Content-Length", "18446744073709551616")], Http11, Err(InvalidContentLength)),
        ("huge", &[("Content-Length", "99999999999999999999999999")], Http11, Err(InvalidContentLength)),
        ("plus sign", &[("Content-Length", "+5")], Http11, Err(InvalidContentLength)),
        ("minus sign", &[("Content-Length", "-5")], Http11, Err(InvalidContentLength)),
        ("hex", &[("Content-Length", "0x5")], Http11, Err(InvalidContentLength)),
        ("inner space", &[("Content-Length", "1 2")], Http11, Err(InvalidContentLength)),
        ("empty", &[("Content-Length", "")], Http11, Err(InvalidContentLength)),
        ("list of different", &[("Content-Length", "5, 6")], Http11, Err(MultipleContentLength)),
        ("list of identical", &[("Content-Length", "5, 5")], Http11, Err(MultipleContentLength)),
        ("list, no space", &[("Content-Length", "5,5")], Http11, Err(MultipleContentLength)),
        ("two fields identical", &[("Content-Length", "5"), ("content-length", "5")], Http11, Err(MultipleContentLength)),
        ("two fields different", &[("Content-Length", "5"), ("Content-Length", "6")], Http11, Err(MultipleContentLength)),
        ("two fields, second invalid", &[("Content-Length", "5"), ("Content-Length", "x")], Http11, Err(MultipleContentLength)),
        ("chunked", &[("Transfer-Encoding", "chunked")], Http11, Ok(Chunked)),
        ("chunked any case", &[("transfer-encoding", "ChUnKeD")], Http11, Ok(Chunked)),
        ("chunked with empty list elements", &[("Transfer-Encoding", " , chunked ,")], Http11, Ok(Chunked)),
        ("te and cl", &[("Transfer-Encoding", "chunked"), ("Content-Length", "5")], Http11, Err(ContentLengthWithTransferEncoding)),
        ("cl and te", &[("Content-Length", "5"), ("Transfer-Encoding", "chunked")], Http11, Err(ContentLengthWithTransferEncoding)),
        ("te and invalid cl", &[("Content-Length", "abc"), ("Transfer-Encoding", "chunked")], Http11, Err(ContentLengthWithTransferEncoding)),
        ("te in http/1.0", &[("Transfer-Encoding", "chunked")], Http10, Err(TransferEncodingInHttp10)),
        ("te and cl in http/1.0", &[("Transfer-Encoding", "chunked"), ("Content-Length", "5")], Http10, Err(TransferEncodingInHttp10)),
        ("cl in http/1.0", &[("Content-Length", "5")], Http10, Ok(Length(5))),
        ("gzip only", &[("Transfer-Encoding", "gzip")], Http11, Err(TransferEncodingNotChunked)),
        ("identity", &[("Transfer-Encoding", "identity")], Http11, Err(TransferEncodingNotChunked)),
        ("chunked then gzip", &[("Transfer-Encoding", "chunked, gzip")], Http11, Err(TransferEncodingNotChunked)),
        ("empty te", &[("Transfer-Encoding", "")], Http11, Err(TransferEncodingNotChunked)),
        ("chunked with parameter", &[("Transfer-Encoding", "chunked;q=1")], Http11, Err(TransferEncodingNotChunked)),
        ("chunked-ish", &[("Transfer-Encoding", "xchunked")], Http11, Err(TransferEncodingNotChunked)),
        ("chunked with vertical tab", &[("Transfer-Encoding", "chunked\x0b")], Http11, Err(TransferEncodingNotChunked)),
        ("chunked twice in one field", &[("Transfer-Encoding", "chunked, chunked")], Http11, Err(RepeatedChunked)),
        ("chunked twice across fields", &[ ("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked"), ], Http11, Err(RepeatedChunked)),
        ("gzip then chunked", &[("Transfer-Encoding", "gzip, chunked")], Http11, Err(UnsupportedTransferCoding)),
        ("gzip then chunked across fields", &[ ("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked"), ], Http11, Err(UnsupportedTransferCoding)),
        ("chunked then gzip across fields", &[ ("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "gzip"), ], Http11, Err(TransferEncodingNotChunked)),
    ];

    #[test]
    fn request_framing() {
        for (name, fields, version, expected) in REQUESTS {
            assert_eq!(
                request_body(&headers(fields), *version),
                *expected,
                "{name}"
            );
        }
    }

    #[test]
    fn request_framing_statuses() {
        let status =
            |fields: &[(&str, &str)]| request_body(&headers(fields), Http11).unwrap_err().status();
        assert_eq!(status(&[("Transfer-Encoding", "gzip, chunked")]), 501);
        assert_eq!(status(&[("Transfer-Encoding", "gzip")]), 400);
        assert_eq!(
            status(&[("Content-Length", "1"), ("Transfer-Encoding", "chunked")]),
            400
        );
        assert_eq!(status(&[("Content-Length", "1, 2")]), 400);
    }

    type ResponseCase = (
        &'static str,
        &'static str,
        u16,
        &'static [(&'static str, &'static str)],
        Version,
        Result<BodyKind, FramingError>,
    );

    #[rustfmt::skip]
    const RESPONSES: &[ResponseCase] = &[
        ("content-length", "GET", 200, &[("Content-Length", "10")], Http11, Ok(Length(10))),
        ("no framing: until close", "GET", 200, &[], Http11, Ok(UntilClose)),
        ("http/1.0 until close", "GET", 200, &[], Http10, Ok(UntilClose)),
        ("chunked", "GET", 200, &[("Transfer-Encoding", "chunked")], Http11, Ok(Chunked)),
        ("HEAD ignores cl", "HEAD", 200, &[("Content-Length", "10")], Http11, Ok(BodyKind::None)),
        ("HEAD ignores te", "HEAD", 200, &[("Transfer-Encoding", "chunked")], Http11, Ok(BodyKind::None)),
        ("HEAD ignores broken framing", "HEAD", 200, &[("Content-Length", "1"), ("Content-Length", "2")], Http11, Ok(BodyKind::None)),
        ("100", "GET", 100, &[("Content-Length", "10")], Http11, Ok(BodyKind::None)),
        ("101", "GET", 101, &[], Http11, Ok(BodyKind::None)),
        ("103", "GET", 103, &[("Transfer-Encoding", "chunked")], Http11, Ok(BodyKind::None)),
        ("204", "GET", 204, &[("Content-Length", "10")], Http11, Ok(BodyKind::None)),
        ("304", "GET", 304, &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")], Http11, Ok(BodyKind::None)),
        ("CONNECT 200 is a tunnel", "CONNECT", 200, &[], Http11, Ok(BodyKind::None)),
        ("CONNECT 407 has a body", "CONNECT", 407, &[("Content-Length", "3")], Http11, Ok(Length(3))),
        ("te and cl", "GET", 200, &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")], Http11, Err(ContentLengthWithTransferEncoding)),
        ("two different cl", "GET", 200, &[("Content-Length", "3"), ("Content-Length", "4")], Http11, Err(MultipleContentLength)),
        ("cl list", "GET", 200, &[("Content-Length", "3, 3")], Http11, Err(MultipleContentLength)),
        ("bad cl", "GET", 500, &[("Content-Length", "3a")], Http11, Err(InvalidContentLength)),
        ("te not chunked: until close", "GET", 200, &[("Transfer-Encoding", "gzip")], Http11, Ok(UntilClose)),
        ("te chunked not last: until close", "GET", 200, &[("Transfer-Encoding", "chunked, gzip")], Http11, Ok(UntilClose)),
        ("gzip then chunked", "GET", 200, &[("Transfer-Encoding", "gzip, chunked")], Http11, Err(UnsupportedTransferCoding)),
        ("chunked twice", "GET", 200, &[("Transfer-Encoding", "chunked, chunked")], Http11, Err(RepeatedChunked)),
        ("te in http/1.0", "GET", 200, &[("Transfer-Encoding", "chunked")], Http10, Err(TransferEncodingInHttp10)),
    ];

    #[test]
    fn response_framing() {
        for (name, method, status, fields, version, expected) in RESPONSES {
            assert_eq!(
                response_body(method, *status, &headers(fields), *version),
                *expected,
                "{name}"
            );
        }
    }

    #[test]
    fn tokens() {
        let cases: &[(&str, &str, bool)] = &[
            ("close", "close", true),
            ("Close", "close", true),
            ("keep-alive, close", "close", true),
            ("keep-alive,close", "close", true),
            (" \tclose\t ", "close", true),
            ("Upgrade, CLOSE", "close", true),
            (",,close,,", "close", true),
            ("closed", "close", false),
            ("clo se", "close", false),
            ("keep-alive", "close", false),
            ("", "close", false),
            ("x-close", "close", false),
            ("te, upgrade", "upgrade", true),
        ];
        for (value, token, expected) in cases {
            assert_eq!(
                has_token(value.as_bytes(), token),
                *expected,
                "{value:?} {token}"
            );
        }
    }

    #[test]
    fn keep_alive_defaults() {
        assert!(!wants_close(Http11, &headers(&[])));
        assert!(wants_close(Http11, &headers(&[("Connection", "close")])));
        assert!(wants_close(
            Http11,
            &headers(&[("Connection", "upgrade"), ("connection", "Close")])
        ));
        assert!(wants_close(Http10, &headers(&[])));
        assert!(!wants_close(
            Http10,
            &headers(&[("Connection", "Keep-Alive")])
        ));
        assert!(wants_close(
            Http10,
            &headers(&[("Keep-Alive", "timeout=5")])
        ));
    }

    #[test]
    fn hop_by_hop() {
        for name in [
            "Connection",
            "connection",
            "Keep-Alive",
            "Proxy-Connection",
            "TE",
            "te",
            "Trailer",
            "Transfer-Encoding",
            "TRANSFER-ENCODING",
            "Upgrade",
        ] {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            "Content-Length",
            "Host",
            "Trailers",
            "T",
            "Tx",
            "Upgrade-Insecure-Requests",
            "Proxy-Authorization",
            "Keep-Alivex",
            "X-Connection",
            "",
        ] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
    }
}
