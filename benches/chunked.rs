//! Chunked decoding throughput: a 64 KiB body sent as 16 chunks of 4 KiB, decoded with
//! `dispatch::http::ChunkedDecoder` when the bytes arrive as one buffer, in 4 KiB reads,
//! and one byte per read.
//!
//! The whole-buffer and 4 KiB cases are what a proxied body costs. The decoder walks only
//! the size lines and hands out payload ranges without reading the payload, so their
//! "throughput" is nominal: what matters is the per-chunk cost (time / 16). The 1-byte
//! case is the worst a slow or hostile peer can force on us, one call per byte of body, and
//! bounds the CPU such a peer can burn.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dispatch::http::{write_chunk, ChunkedDecoder, LAST_CHUNK};

const BODY: usize = 64 * 1024;
const CHUNK: usize = 4 * 1024;

fn encoded_body() -> Vec<u8> {
    let payload: Vec<u8> = (0..BODY).map(|i| (i % 251) as u8).collect();
    let mut body = Vec::with_capacity(BODY + 256);
    for piece in payload.chunks(CHUNK) {
        write_chunk(&mut body, piece);
    }
    body.extend_from_slice(LAST_CHUNK);
    body
}

/// Decodes `input` as if it arrived `read` bytes at a time; returns the payload length.
fn decode(input: &[u8], read: usize) -> usize {
    let mut decoder = ChunkedDecoder::new();
    let mut pos = 0;
    let mut arrived = 0;
    let mut payload = 0;
    loop {
        if pos == arrived {
            arrived = (arrived + read).min(input.len());
        }
        let step = decoder.decode(&input[pos..arrived]).unwrap();
        if let Some(range) = step.data {
            payload += black_box(&input[pos..][range]).len();
        }
        pos += step.consumed;
        if step.done {
            return payload;
        }
    }
}

fn chunked(c: &mut Criterion) {
    let body = encoded_body();
    assert_eq!(decode(&body, usize::MAX), BODY);
    assert_eq!(decode(&body, 1), BODY);

    let mut group = c.benchmark_group("chunked_decode/64KiB_in_4KiB_chunks");
    group.throughput(Throughput::Bytes(BODY as u64));
    for (name, read) in [
        ("whole_buffer", usize::MAX),
        ("4KiB_reads", 4096),
        ("1_byte_reads", 1),
    ] {
        group.bench_function(name, |b| b.iter(|| decode(black_box(&body), read)));
    }
    group.finish();
}

criterion_group!(benches, chunked);
criterion_main!(benches);
