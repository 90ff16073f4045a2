//! Serializing heads and the gateway's own JSON error responses into a `Vec<u8>`.
//!
//! Key functions: [`status_line`], [`header`], [`end_head`] build a head field by field;
//! [`error_response`] writes a whole error response in the shape BEHAVIOR.md fixes;
//! [`write_u64`] formats integers without allocating. Chunk frames are in
//! [`super::chunked`] ([`super::write_chunk_header`], [`super::CHUNK_TAIL`],
//! [`super::LAST_CHUNK`]).
//!
//! The one thing to know: nothing here validates what it writes. Names and values must
//! already be valid field bytes, which holds for everything httparse accepted and for the
//! gateway's own constants; debug builds assert the absence of CR and LF, the bytes that
//! would let a value split the response.

use super::parse::Version;

/// The canonical reason phrase (RFC 9110 §15) of a status, or "" for one we don't name.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// "00" "01" ... "99": two digits per table lookup.
const DIGIT_PAIRS: [u8; 200] = {
    let mut table = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        table[2 * i] = b'0' + (i / 10) as u8;
        table[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    table
};

/// Appends `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `HTTP/1.x SP status SP reason CRLF`. `reason: None` takes [`reason_phrase`];
/// `Some` forwards an upstream's reason as is. `status` must be three digits.
pub fn status_line(out: &mut Vec<u8>, version: Version, status: u16, reason: Option<&[u8]>) {
    debug_assert!((100..1000).contains(&status), "status {status}");
    let reason = reason.unwrap_or_else(|| reason_phrase(status).as_bytes());
    debug_assert!(!reason.contains(&b'\r') && !reason.contains(&b'\n'));
    out.reserve(8 + 5 + reason.len() + 2);
    out.extend_from_slice(version.as_str().as_bytes());
    out.push(b' ');
    write_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: value CRLF`. `value` must hold no CR or LF.
pub fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    debug_assert!(!value.contains(&b'\r') && !value.contains(&b'\n'), "{name}");
    out.reserve(name.len() + 2 + value.len() + 2);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: <decimal value> CRLF` (Content-Length, Retry-After, Age...).
pub fn header_u64(out: &mut Vec<u8>, name: &str, value: u64) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    write_u64(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the empty line that ends a head.
pub fn end_head(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// The escape for a byte of a JSON string, if it needs one (RFC 8259 §7).
fn json_escape(b: u8) -> Option<&'static [u8]> {
    Some(match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        0x00..=0x1f => {
            const U: [[u8; 6]; 32] = {
                let mut table = [*b"\\u0000"; 32];
                let mut i = 0;
                while i < 32 {
                    table[i][4] = b"0123456789abcdef"[i >> 4];
                    table[i][5] = b"0123456789abcdef"[i & 0xf];
                    i += 1;
                }
                table
            };
            &U[b as usize]
        }
        _ => return None,
    })
}

fn json_string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| json_escape(b).map_or(1, <[u8]>::len))
        .sum::<usize>()
}

/// Appends `s` as a quoted JSON string. Non-ASCII text passes through as UTF-8.
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.push(b'"');
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(escape) = json_escape(b) {
            out.extend_from_slice(&bytes[plain..i]);
            out.extend_from_slice(escape);
            plain = i + 1;
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// A response with a given JSON body (a breaker's configured fallback), framed like
/// [`error_response`]. Returns the length of the head.
pub fn json_response(
    out: &mut Vec<u8>,
    status: u16,
    body: &str,
    retry_after: Option<u64>,
    extra_headers: &[(&str, &str)],
    close: bool,
) -> usize {
    let head_len = json_head(out, status, body.len(), retry_after, extra_headers, close);
    out.extend_from_slice(body.as_bytes());
    head_len
}

/// A response without content that the gateway answers itself (204 to `OPTIONS`): the
/// status line, `extra_headers`, `Connection: close` when `close`. No Content-Length (RFC
/// 9110 §8.6: never on 204). Returns the length written.
pub fn empty_response(
    out: &mut Vec<u8>,
    status: u16,
    extra_headers: &[(&str, &str)],
    close: bool,
) -> usize {
    let start = out.len();
    status_line(out, Version::Http11, status, None);
    for (name, value) in extra_headers {
        header(out, name, value.as_bytes());
    }
    if close {
        header(out, "Connection", b"close");
    }
    end_head(out);
    out.len() - start
}

/// The head of a JSON response the gateway answers itself; returns its length.
fn json_head(
    out: &mut Vec<u8>,
    status: u16,
    body_len: usize,
    retry_after: Option<u64>,
    extra_headers: &[(&str, &str)],
    close: bool,
) -> usize {
    let start = out.len();
    out.reserve(160 + body_len);
    status_line(out, Version::Http11, status, None);
    header(out, "Content-Type", b"application/json");
    header_u64(out, "Content-Length", body_len as u64);
    if let Some(seconds) = retry_after {
        header_u64(out, "Retry-After", seconds);
    }
    for (name, value) in extra_headers {
        header(out, name, value.as_bytes());
    }
    if close {
        header(out, "Connection", b"close");
    }
    end_head(out);
    out.len() - start
}

/// Appends a complete error response produced by the gateway itself (BEHAVIOR.md, "Errors
/// sent to clients"):
///
/// ```text
/// HTTP/1.1 429 Too Many Requests
/// Content-Type: application/json
/// Content-Length: 91
/// Retry-After: 3                      (only with retry_after)
/// <extra_headers>                     (Allow, WWW-Authenticate, RateLimit-*...)
/// Connection: close                   (only with close)
///
/// {"error":{"code":429,"message":"...","request_id":"...","retryAfter":3}}
/// ```
///
/// Returns the length of the head: a response to HEAD keeps only that much (truncate
/// `out` to its old length plus the returned value).
pub fn error_response(
    out: &mut Vec<u8>,
    status: u16,
    message: &str,
    request_id: &str,
    retry_after: Option<u64>,
    extra_headers: &[(&str, &str)],
    close: bool,
) -> usize {
    const OPEN: &[u8] = b"{\"error\":{\"code\":";
    const MESSAGE: &[u8] = b",\"message\":";
    const REQUEST_ID: &[u8] = b",\"request_id\":";
    const RETRY_AFTER: &[u8] = b",\"retryAfter\":";
    const CLOSE: &[u8] = b"}}";

    let status_digits = decimal_len(u64::from(status));
    let retry_digits = retry_after.map_or(0, |s| RETRY_AFTER.len() + decimal_len(s));
    let body_len = OPEN.len()
        + status_digits
        + MESSAGE.len()
        + json_string_len(message)
        + REQUEST_ID.len()
        + json_string_len(request_id)
        + retry_digits
        + CLOSE.len();

    let start = out.len();
    let head_len = json_head(out, status, body_len, retry_after, extra_headers, close);
    out.extend_from_slice(OPEN);
    write_u64(out, u64::from(status));
    out.extend_from_slice(MESSAGE);
    json_string(out, message);
    out.extend_from_slice(REQUEST_ID);
    json_string(out, request_id);
    if let Some(seconds) = retry_after {
        out.extend_from_slice(RETRY_AFTER);
        write_u64(out, seconds);
    }
    out.extend_from_slice(CLOSE);
    debug_assert_eq!(out.len() - start - head_len, body_len);
    head_len
}

fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::{parse_response, HeadLimits};

    #[test]
    fn integers() {
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (7, "7"),
            (9, "9"),
            (10, "10"),
            (42, "42"),
            (99, "99"),
            (100, "100"),
            (101, "101"),
            (999, "999"),
            (1000, "1000"),
            (65535, "65535"),
            (1_000_000, "1000000"),
            (u64::from(u32::MAX), "4294967295"),
            (u64::MAX, "18446744073709551615"),
        ];
        for (n, expected) in cases {
            let mut out = b"x".to_vec();
            write_u64(&mut out, *n);
            assert_eq!(&out[1..], expected.as_bytes());
            assert_eq!(decimal_len(*n), expected.len());
        }
        for n in (0..100_000u64).chain((0..64).map(|s| 1u64 << s)) {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn status_lines() {
        type Case = (Version, u16, Option<&'static [u8]>, &'static [u8]);
        let cases: &[Case] = &[
            (Version::Http11, 200, None, b"HTTP/1.1 200 OK\r\n"),
            (Version::Http10, 404, None, b"HTTP/1.0 404 Not Found\r\n"),
            (
                Version::Http11,
                431,
                None,
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            ),
            (Version::Http11, 299, None, b"HTTP/1.1 299 \r\n"),
            (
                Version::Http11,
                200,
                Some(b"Fine"),
                b"HTTP/1.1 200 Fine\r\n",
            ),
            (Version::Http11, 200, Some(b""), b"HTTP/1.1 200 \r\n"),
        ];
        for (version, status, reason, expected) in cases {
            let mut out = Vec::new();
            status_line(&mut out, *version, *status, *reason);
            assert_eq!(out, *expected);
        }
    }

    #[test]
    fn every_named_status_has_a_reason() {
        for status in [
            100, 101, 200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 413, 414, 429,
            431, 500, 501, 502, 503, 504, 505,
        ] {
            assert!(!reason_phrase(status).is_empty(), "{status}");
        }
    }

    #[test]
    fn headers() {
        let mut out = Vec::new();
        header(&mut out, "Via", b"1.1 dispatch");
        header_u64(&mut out, "Content-Length", 1234);
        end_head(&mut out);
        assert_eq!(out, b"Via: 1.1 dispatch\r\nContent-Length: 1234\r\n\r\n");
    }

    #[test]
    fn json_strings() {
        let cases: &[(&str, &str)] = &[
            ("plain", r#""plain""#),
            ("", r#""""#),
            ("say \"hi\"", r#""say \"hi\"""#),
            ("back\\slash", r#""back\\slash""#),
            ("a\nb\rc\td", r#""a\nb\rc\td""#),
            ("\u{8}\u{c}", r#""\b\f""#),
            ("\u{0}\u{1}\u{1f}", r#""\u0000\u0001\u001f""#),
            ("\u{7f}", "\"\u{7f}\""),
            ("héllo ✓ \u{2028}", "\"héllo ✓ \u{2028}\""),
            ("</script>", r#""</script>""#),
        ];
        for (input, expected) in cases {
            let mut out = Vec::new();
            json_string(&mut out, input);
            assert_eq!(
                String::from_utf8(out.clone()).unwrap(),
                *expected,
                "{input:?}"
            );
            assert_eq!(json_string_len(input), out.len(), "{input:?}");
        }
    }

    #[test]
    fn error_response_exact_bytes() {
        let mut out = Vec::new();
        let head_len = error_response(&mut out, 404, "No route matches", "req-1", None, &[], false);
        let expected = "HTTP/1.1 404 Not Found\r\n\
            Content-Type: application/json\r\n\
            Content-Length: 72\r\n\
            \r\n\
            {\"error\":{\"code\":404,\"message\":\"No route matches\",\"request_id\":\"req-1\"}}";
        assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
        assert_eq!(&out[head_len - 4..head_len], b"\r\n\r\n");
    }

    #[test]
    fn error_response_with_retry_extra_headers_and_close() {
        let mut out = b"previous bytes".to_vec();
        let head_len = error_response(
            &mut out,
            429,
            "Rate limit \"api\" exceeded\n",
            "a\\b",
            Some(3),
            &[("RateLimit-Limit", "10"), ("RateLimit-Remaining", "0")],
            true,
        );
        let response = &out[14..];
        let head = parse_response(response, &HeadLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(head.head_len, head_len);
        assert_eq!(head.status, 429);
        assert_eq!(head.reason, b"Too Many Requests");
        let body = &response[head_len..];
        assert_eq!(
            std::str::from_utf8(body).unwrap(),
            r#"{"error":{"code":429,"message":"Rate limit \"api\" exceeded\n","request_id":"a\\b","retryAfter":3}}"#
        );
        assert_eq!(
            head.header("content-length"),
            Some(body.len().to_string().as_bytes())
        );
        assert_eq!(head.header("content-type"), Some(&b"application/json"[..]));
        assert_eq!(head.header("retry-after"), Some(&b"3"[..]));
        assert_eq!(head.header("ratelimit-limit"), Some(&b"10"[..]));
        assert_eq!(head.header("connection"), Some(&b"close"[..]));
        assert_eq!(
            crate::http::response_body("GET", 429, &head.headers, head.version),
            Ok(crate::http::BodyKind::Length(body.len() as u64))
        );
    }

    #[test]
    fn error_response_for_every_gateway_status() {
        for status in [400, 401, 404, 405, 408, 413, 414, 431, 502, 503, 504, 505] {
            let mut out = Vec::new();
            let head_len = error_response(&mut out, status, "m", "", Some(60), &[], true);
            let head = parse_response(&out, &HeadLimits::default())
                .unwrap()
                .unwrap();
            assert_eq!(head.head_len, head_len);
            let len: usize = std::str::from_utf8(head.header("Content-Length").unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, out.len() - head_len, "{status}");
        }
    }
}
