//! Fuzzes the chunked decoder.
//!
//! Input: 1 control byte (how to split), then bytes fed to a fresh decoder. Checked besides
//! "no panic": feeding the bytes whole, in pieces of the chosen sizes, and one at a time
//! gives the same payload, the same end of body and the same error; every payload range
//! lies inside the consumed part of its input; and the input, used as a payload, survives
//! an encode/decode round trip.

#![no_main]

use dispatch::http::{write_chunk, ChunkError, ChunkedDecoder, LAST_CHUNK};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Outcome {
    payload: Vec<u8>,
    /// Bytes left over after the body ended (None: it did not end).
    rest: Option<Vec<u8>>,
}

/// Feeds `input` in pieces of the sizes `sizes` yields, keeping unconsumed bytes buffered
/// the way the connection code does.
fn run(input: &[u8], mut sizes: impl FnMut() -> usize) -> Result<Outcome, ChunkError> {
    let mut decoder = ChunkedDecoder::new();
    let mut pending = Vec::new();
    let mut payload = Vec::new();
    let mut offered = 0;
    while offered < input.len() {
        let n = sizes().clamp(1, input.len() - offered);
        pending.extend_from_slice(&input[offered..offered + n]);
        offered += n;
        loop {
            let step = decoder.decode(&pending)?;
            assert!(step.consumed <= pending.len());
            if let Some(range) = step.data.clone() {
                assert!(range.start < range.end && range.end <= step.consumed);
                payload.extend_from_slice(&pending[range]);
            }
            pending.drain(..step.consumed);
            if step.done {
                assert!(decoder.is_done());
                pending.extend_from_slice(&input[offered..]);
                return Ok(Outcome {
                    payload,
                    rest: Some(pending),
                });
            }
            if step.consumed == 0 {
                break;
            }
        }
    }
    Ok(Outcome {
        payload,
        rest: None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let whole = run(input, || usize::MAX);
    let bytes = run(input, || 1);
    assert_eq!(whole, bytes, "byte by byte");
    let mut state = u32::from(ctl) | 1;
    let pieces = run(input, || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        1 + (state >> 16) as usize % (1 + usize::from(ctl))
    });
    assert_eq!(whole, pieces, "pieces seeded {ctl}");

    let mut body = Vec::new();
    for piece in input.chunks(1 + usize::from(ctl)) {
        write_chunk(&mut body, piece);
    }
    body.extend_from_slice(LAST_CHUNK);
    let round_trip = run(&body, || 7).expect("our own encoding decodes");
    assert_eq!(round_trip.payload, input);
    assert_eq!(round_trip.rest, Some(Vec::new()));
});
