//! Head parsing cost: `dispatch::http::parse_request` against bare httparse on the same
//! bytes, for a typical ~500-byte browser/API request head and a minimal one.
//!
//! httparse alone is the floor: the gap between the two lines is what our strictness
//! costs (limit bookkeeping, the CRLF-only check, copying header slots into the returned
//! head). A response head is measured the same way, since every proxied request parses one.
//! `target/*` measures the request target checks and path normalisation.

use std::mem::MaybeUninit;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dispatch::http::{parse_request, parse_response, HeadLimits};

/// What a browser sends to an API behind the gateway: 11 fields, ~520 bytes.
const TYPICAL: &[u8] = b"GET /api/v1/users/12345/orders?status=open&limit=50 HTTP/1.1\r\n\
Host: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://app.example.com/orders\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl\r\n\
Origin: https://app.example.com\r\n\
Connection: keep-alive\r\n\
Sec-Fetch-Mode: cors\r\n\
X-Request-Id: 7f9c2ba4-e88f-4a2b-9b3c-6f1d2e8a9c01\r\n\
\r\n";

/// What a load balancer health check or `curl` sends.
const MINIMAL: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: application/json\r\n\
Content-Length: 1234\r\n\
Date: Sun, 22 Nov 2026 06:18:00 GMT\r\n\
Cache-Control: private, max-age=0\r\n\
Vary: Accept-Encoding\r\n\
X-Request-Id: 7f9c2ba4-e88f-4a2b-9b3c-6f1d2e8a9c01\r\n\
\r\n";

// Bare httparse used as cheaply as it allows: uninitialised header slots, no checks.
fn httparse_request(buf: &[u8]) -> usize {
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); 100];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n + req.headers.len(),
        _ => unreachable!(),
    }
}

fn httparse_response(buf: &[u8]) -> usize {
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); 100];
    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n + res.headers.len(),
        _ => unreachable!(),
    }
}

fn heads(c: &mut Criterion) {
    let limits = HeadLimits::default();
    assert!(
        TYPICAL.len() > 450 && TYPICAL.len() < 600,
        "{}",
        TYPICAL.len()
    );

    for (name, input) in [("typical_500b", TYPICAL), ("minimal", MINIMAL)] {
        let mut group = c.benchmark_group(format!("request_head/{name}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function("dispatch", |b| {
            b.iter(|| {
                let head = parse_request(black_box(input), &limits).unwrap().unwrap();
                black_box(head.head_len + head.headers.len())
            })
        });
        group.bench_function("httparse", |b| {
            b.iter(|| black_box(httparse_request(black_box(input))))
        });
        group.finish();
    }

    let mut group = c.benchmark_group("response_head");
    group.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    group.bench_function("dispatch", |b| {
        b.iter(|| {
            let head = parse_response(black_box(RESPONSE), &limits)
                .unwrap()
                .unwrap();
            black_box(head.head_len + head.headers.len())
        })
    });
    group.bench_function("httparse", |b| {
        b.iter(|| black_box(httparse_response(black_box(RESPONSE))))
    });
    group.finish();

    // An incomplete head (the first read of a large head): the limit bookkeeping runs on
    // every such call, so it must stay cheap.
    let half = &TYPICAL[..TYPICAL.len() / 2];
    c.bench_function("request_head/typical_500b_incomplete", |b| {
        b.iter(|| black_box(parse_request(black_box(half), &limits).unwrap().is_none()))
    });
}

/// Request target checks and path normalisation (`pipeline::target::parse`), run on every
/// request: a clean path must stay a borrow (no copy) and one pass over its bytes; a path with
/// escapes and dot segments shows what normalising costs when it is needed.
fn targets(c: &mut Criterion) {
    use dispatch::pipeline::target;
    let mut group = c.benchmark_group("target");
    for (name, raw) in [
        ("clean", "/api/v1/users/12345/orders?status=open&limit=50"),
        (
            "normalized",
            "/api/v1/%75sers/./12345//orders/../orders?status=open",
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(target::parse(black_box(raw)).unwrap().path.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, heads, targets);
criterion_main!(benches);
