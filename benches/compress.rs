//! Response compression throughput per level (issue 13): a 10 KiB and a 1 MiB JSON body (an
//! API's list of records, the kind of body the gateway compresses), each compressed whole in
//! 16 KiB writes as the proxy phase streams it, with gzip (flate2) at levels 1, 4, 5, 6 and 9,
//! and brotli at qualities 1, 3, 4, 5, 6 and 11. Throughput is of the uncompressed bytes; the
//! compressed size of each (the ratio) is printed once before the timings.
//!
//! `dispatch::http::encoding::Encoder` is measured too: the levels the gateway runs with
//! (`GZIP_LEVEL`, `BROTLI_QUALITY`), through the very code the proxy phase calls.

use std::io::Write;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dispatch::http::encoding::{Coding, Encoder, BROTLI_QUALITY, GZIP_LEVEL};

const GZIP_LEVELS: [u32; 5] = [1, 4, 5, 6, 9];
const BROTLI_QUALITIES: [u32; 6] = [1, 3, 4, 5, 6, 11];
/// The part of a body the proxy phase hands the encoder at a time.
const WRITE: usize = 16 * 1024;

/// About `len` bytes of JSON records with repeated keys and varied values.
fn json_body(len: usize) -> Vec<u8> {
    let mut out = b"[".to_vec();
    let mut i = 0u64;
    while out.len() < len {
        let record = format!(
            "{{\"id\":{i},\"sku\":\"SKU-{:08x}\",\"name\":\"item number {i}\",\"price\":{}.{:02},\"stock\":{},\"tags\":[\"t{}\",\"t{}\"],\"updated\":\"2026-12-{:02}T{:02}:{:02}:00Z\"}},",
            i.wrapping_mul(2_654_435_761) & 0xffff_ffff,
            (i * 37) % 1000,
            (i * 13) % 100,
            (i * 7) % 500,
            i % 17,
            i % 5,
            1 + i % 28,
            i % 24,
            i % 60,
        );
        out.extend_from_slice(record.as_bytes());
        i += 1;
    }
    out.truncate(len - 1);
    out.push(b']');
    out
}

fn gzip(body: &[u8], level: u32) -> usize {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    for part in body.chunks(WRITE) {
        e.write_all(part).unwrap();
    }
    e.finish().unwrap().len()
}

fn brotli(body: &[u8], quality: u32) -> usize {
    let mut e = brotli::CompressorWriter::new(Vec::new(), 4096, quality, 20);
    for part in body.chunks(WRITE) {
        e.write_all(part).unwrap();
    }
    e.into_inner().len()
}

fn gateway(body: &[u8], coding: Coding) -> usize {
    let mut e = Encoder::new(coding);
    let mut out = Vec::new();
    for part in body.chunks(WRITE) {
        e.write(part, false, &mut out).unwrap();
    }
    e.finish(&mut out).unwrap();
    out.len()
}

fn compress(c: &mut Criterion) {
    for (label, len) in [("10KiB", 10 * 1024), ("1MiB", 1024 * 1024)] {
        let body = json_body(len);
        for level in GZIP_LEVELS {
            eprintln!(
                "{label} gzip {level}: {} -> {} bytes",
                body.len(),
                gzip(&body, level)
            );
        }
        for q in BROTLI_QUALITIES {
            eprintln!(
                "{label} br {q}: {} -> {} bytes",
                body.len(),
                brotli(&body, q)
            );
        }
        let mut g = c.benchmark_group(format!("compress/{label}"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        if len > 100 * 1024 {
            g.sample_size(10);
        }
        for level in GZIP_LEVELS {
            g.bench_with_input(BenchmarkId::new("gzip", level), &body, |b, body| {
                b.iter(|| gzip(black_box(body), level))
            });
        }
        for q in BROTLI_QUALITIES {
            g.bench_with_input(BenchmarkId::new("br", q), &body, |b, body| {
                b.iter(|| brotli(black_box(body), q))
            });
        }
        g.bench_with_input(
            BenchmarkId::new("gateway-gzip", GZIP_LEVEL),
            &body,
            |b, body| b.iter(|| gateway(black_box(body), Coding::Gzip)),
        );
        g.bench_with_input(
            BenchmarkId::new("gateway-br", BROTLI_QUALITY),
            &body,
            |b, body| b.iter(|| gateway(black_box(body), Coding::Br)),
        );
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = compress
}
criterion_main!(benches);
