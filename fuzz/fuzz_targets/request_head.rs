//! Fuzzes the head parsers (`parse_request`, and `parse_response` on the same bytes) and
//! the framing rules applied to what they accept.
//!
//! Input: 3 control bytes (limits and a split point), then the head bytes. Checked besides
//! "no panic": a prefix of the input parses to `Ok(None)` or to exactly the whole input's
//! outcome (read boundaries never change a verdict); an accepted head has no bare CR (a
//! bare LF reads as CRLF, RFC 9112 §2.2) and obeys the limits; re-serializing an accepted request head parses back to
//! the same head.

#![no_main]

use dispatch::http::write::{end_head, header};
use dispatch::http::{
    has_token, is_hop_by_hop, parse_request, parse_response, request_body, response_body,
    wants_close, HeadError, HeadLimits,
};
use libfuzzer_sys::fuzz_target;

fn no_bare_cr(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .all(|(i, &b)| b != b'\r' || head.get(i + 1) == Some(&b'\n'))
}

/// Where the start line ends (just past its LF), counting leading empty lines.
fn start_line_end(head: &[u8]) -> usize {
    let mut start = 0;
    loop {
        if head[start..].starts_with(b"\r\n") {
            start += 2;
        } else if head[start..].starts_with(b"\n") {
            start += 1;
        } else {
            break;
        }
    }
    start
        + head[start..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("a complete head has a LF")
        + 1
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (ctl, input) = data.split_at(3);
    let limits = if ctl[0] & 1 == 0 {
        HeadLimits::default()
    } else {
        HeadLimits {
            max_request_line: 1 + usize::from(ctl[1]),
            max_header_bytes: usize::from(ctl[2]) * 2,
            // Up to 140: crosses the 128 slots kept on the stack.
            max_headers: usize::from(ctl[0] >> 1) % 141,
        }
    };
    let cut = if input.is_empty() {
        0
    } else {
        usize::from(u16::from_le_bytes([ctl[1], ctl[2]])) % input.len()
    };

    let whole = parse_request(input, &limits);
    let part = parse_request(&input[..cut], &limits);
    assert!(
        part == Ok(None) || part == whole,
        "request prefix {cut}: {part:?} vs {whole:?}"
    );
    match &whole {
        Ok(Some(head)) => {
            assert!(head.head_len <= input.len());
            let bytes = &input[..head.head_len];
            assert!(bytes.ends_with(b"\n\n") || bytes.ends_with(b"\n\r\n"));
            assert!(no_bare_cr(bytes));
            assert!(head.headers.len() <= limits.max_headers);
            let line_end = start_line_end(bytes);
            assert!(line_end <= limits.max_request_line + 2);
            assert!(head.head_len - line_end <= limits.max_header_bytes);

            let _ = request_body(&head.headers, head.version);
            let _ = head.host();
            let _ = wants_close(head.version, &head.headers);
            for h in &head.headers {
                let _ = is_hop_by_hop(h.name);
                let _ = has_token(h.value, "close");
            }

            let mut again = Vec::new();
            again.extend_from_slice(head.method.as_bytes());
            again.push(b' ');
            again.extend_from_slice(head.target.as_bytes());
            again.push(b' ');
            again.extend_from_slice(head.version.as_str().as_bytes());
            again.extend_from_slice(b"\r\n");
            for h in &head.headers {
                header(&mut again, h.name, h.value);
            }
            end_head(&mut again);
            // `name:v` comes back as `name: v`, so only the count limit carries over.
            let roomy = HeadLimits {
                max_request_line: 1 << 20,
                max_header_bytes: 1 << 20,
                max_headers: limits.max_headers,
            };
            let reparsed = parse_request(&again, &roomy)
                .expect("re-serialized head is valid")
                .expect("re-serialized head is complete");
            assert_eq!(reparsed.method, head.method);
            assert_eq!(reparsed.target, head.target);
            assert_eq!(reparsed.version, head.version);
            assert!(reparsed.headers.iter().eq(head.headers.iter()));
            assert_eq!(reparsed.head_len, again.len());
        }
        Ok(None) => {}
        Err(err) => assert!(matches!(err.status(), 400 | 414 | 431 | 505)),
    }

    let whole = parse_response(input, &limits);
    let part = parse_response(&input[..cut], &limits);
    assert!(
        part == Ok(None) || part == whole,
        "response prefix {cut}: {part:?} vs {whole:?}"
    );
    match &whole {
        Ok(Some(head)) => {
            let bytes = &input[..head.head_len];
            assert!(no_bare_cr(bytes));
            assert!((100..=599).contains(&head.status));
            assert!(head.headers.len() <= limits.max_headers);
            let line_end = start_line_end(bytes);
            assert!(line_end <= limits.max_request_line + 2);
            assert!(head.head_len - line_end <= limits.max_header_bytes);
            for method in ["GET", "HEAD", "CONNECT"] {
                let _ = response_body(method, head.status, &head.headers, head.version);
            }
        }
        Ok(None) => {}
        Err(err) => assert_ne!(*err, HeadError::UnsupportedVersion),
    }
});
