//! Property tests over mutated inputs, deterministic (seeded), so they run in every test
//! pass; `fuzz/` holds the coverage-guided versions of the same properties.
//!
//! The properties: (1) a head's outcome does not depend on how its bytes were split into
//! reads (a prefix parses to `Ok(None)` or to exactly the whole input's result); (2) an
//! accepted head obeys the limits and has no bare CR; (3) the chunked decoder
//! gives the same payload, end and error for any split of its input. The `#[ignore]`d
//! variants run for as long as `DISPATCH_PROP_ITERS` says.

use super::chunked::{tests::decode_pieces, write_chunk, LAST_CHUNK};
use super::parse::{parse_request, parse_response, HeadLimits};
use super::{request_body, response_body, HeadError};

/// xorshift64*: small, seeded, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const HEAD_SEEDS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /users?id=7 HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
    b"GET http://x/y HTTP/1.0\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n",
    b"\r\nOPTIONS * HTTP/1.1\r\nX:\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 204\r\nServer: x\r\n\r\n",
];

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b"\x00",
    b"\x7f",
    b"\xc3\xa9",
    b"HTTP/1.1",
    b"HTTP/2.0",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 5, 5\r\n",
    b"X: a\r\n b\r\n",
    b"\r\n\r\n",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(5) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                input.remove(rng.below(input.len()));
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            3 if !input.is_empty() => {
                let from = rng.below(input.len());
                let to = (from + rng.below(16)).min(input.len());
                let copy = input[from..to].to_vec();
                input.splice(at..at, copy);
            }
            _ => input.insert(at, rng.next() as u8),
        }
    }
}

fn small_limits(rng: &mut Rng) -> HeadLimits {
    HeadLimits {
        max_request_line: 4 + rng.below(60),
        max_header_bytes: rng.below(80),
        max_headers: rng.below(6),
    }
}

/// No bare CR anywhere in an accepted head, the naive way (a bare LF reads as CRLF).
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
    start + head[start..].iter().position(|&b| b == b'\n').unwrap() + 1
}

fn check_request(input: &[u8], limits: &HeadLimits) {
    let whole = parse_request(input, limits);
    for cut in 0..input.len() {
        let part = parse_request(&input[..cut], limits);
        assert!(
            part == Ok(None) || part == whole,
            "prefix {cut} of {input:?}: {part:?} vs {whole:?}"
        );
    }
    match &whole {
        Ok(Some(head)) => {
            let bytes = &input[..head.head_len];
            assert!(no_bare_cr(bytes), "{input:?}");
            assert!(head.headers.len() <= limits.max_headers);
            let line_end = start_line_end(bytes);
            assert!(line_end <= limits.max_request_line + 2, "{input:?}");
            assert!(
                head.head_len - line_end <= limits.max_header_bytes,
                "{input:?}"
            );
            let _ = request_body(&head.headers, head.version);
        }
        Ok(None) => {}
        Err(err) => assert!(matches!(err.status(), 400 | 414 | 431 | 505)),
    }
}

fn check_response(input: &[u8], limits: &HeadLimits) {
    let whole = parse_response(input, limits);
    for cut in 0..input.len() {
        let part = parse_response(&input[..cut], limits);
        assert!(
            part == Ok(None) || part == whole,
            "prefix {cut} of {input:?}: {part:?} vs {whole:?}"
        );
    }
    if let Ok(Some(head)) = &whole {
        assert!(no_bare_cr(&input[..head.head_len]));
        assert!((100..=599).contains(&head.status));
        let _ = response_body("GET", head.status, &head.headers, head.version);
    }
    if let Err(HeadError::UnsupportedVersion) = whole {
        panic!("responses never answer 505");
    }
}

fn heads(iterations: u64, seed: u64) {
    let mut rng = Rng(seed);
    for _ in 0..iterations {
        let mut input = HEAD_SEEDS[rng.below(HEAD_SEEDS.len())].to_vec();
        mutate(&mut rng, &mut input);
        let limits = if rng.below(2) == 0 {
            HeadLimits::default()
        } else {
            small_limits(&mut rng)
        };
        check_request(&input, &limits);
        check_response(&input, &limits);
    }
}

fn chunked_bodies(iterations: u64, seed: u64) {
    let mut rng = Rng(seed);
    for _ in 0..iterations {
        let payload: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        let mut body = Vec::new();
        let mut rest = &payload[..];
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len());
            write_chunk(&mut body, &rest[..n]);
            rest = &rest[n..];
        }
        body.extend_from_slice(LAST_CHUNK);
        let mutated = rng.below(3) != 0;
        if mutated {
            mutate(&mut rng, &mut body);
        }
        let whole = decode_pieces(&[&body]);
        if !mutated {
            assert_eq!(whole.as_ref().map(|r| &r.0), Ok(&payload));
        }
        let a = rng.below(body.len() + 1);
        let b = a + rng.below(body.len() - a + 1);
        let split = decode_pieces(&[&body[..a], &body[a..b], &body[b..]]);
        assert_eq!(whole, split, "{body:?} split at {a}, {b}");
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(whole, decode_pieces(&bytes), "{body:?} byte by byte");
    }
}

fn iterations_from_env(default: u64) -> u64 {
    std::env::var("DISPATCH_PROP_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn head_outcome_does_not_depend_on_read_boundaries() {
    heads(3_000, 0x5eed_0001);
}

#[test]
fn chunked_outcome_does_not_depend_on_read_boundaries() {
    chunked_bodies(3_000, 0x5eed_0002);
}

#[test]
#[ignore = "long: DISPATCH_PROP_ITERS=N cargo test --release -- --ignored"]
fn heads_long() {
    heads(iterations_from_env(1_000_000), 0x1_0000_0001);
}

#[test]
#[ignore = "long: DISPATCH_PROP_ITERS=N cargo test --release -- --ignored"]
fn chunked_long() {
    chunked_bodies(iterations_from_env(1_000_000), 0x1_0000_0002);
}
