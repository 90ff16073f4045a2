//! The chunked transfer coding (RFC 9112 §7.1): an incremental decoder and the encoder's
//! pieces.
//!
//! Key type: [`ChunkedDecoder`], a 16-byte state machine. The caller feeds it whatever
//! bytes it has; each call consumes some of them and reports at most one run of payload
//! bytes as a range *inside the input* (zero copy: forward `input[range]` as is). Input may
//! be split at any byte boundary, the decoder never looks ahead and never buffers.
//!
//! The one thing to know: it is strict where a lenient parser could disagree with the
//! server behind us about where the body ends. Sizes are 1*HEXDIG only and must fit a u64;
//! every line ends in CR LF; chunk extensions are bounded ([`MAX_SIZE_LINE`]) and ignored;
//! trailer fields are validated as field lines, bounded ([`MAX_TRAILERS`]) and dropped
//! (Trailer is hop-by-hop; we re-frame and send none). Errors are 400 for a request body,
//! 502 for a response body, and end the connection.

use std::ops::Range;

use super::ChunkError;

/// Longest chunk-size line (size, whitespace and extensions, without its CRLF).
pub const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section (every byte after the last chunk's size line).
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Ends every chunk's data.
pub const CHUNK_TAIL: &[u8] = b"\r\n";
/// The last chunk and the empty trailer section: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk size.
    SizeStart,
    /// In the hex digits.
    Size,
    /// Whitespace after the size: only more whitespace or `;` may follow (BWS before an
    /// extension).
    SizeBws,
    /// In the extensions, after a `;`: skipped up to CR.
    Ext,
    /// Saw the CR ending the size line.
    SizeLf,
    /// `remaining` payload bytes to go.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer field line, or of the empty line that ends the body.
    TrailerStart,
    TrailerName,
    TrailerValue,
    /// Saw the CR ending a trailer field line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
    Done,
}

/// Incremental chunked decoder; one per body. After an error it must not be fed again.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    /// The size being read, then the payload bytes left in the chunk.
    remaining: u64,
    /// Bytes of the current size line, or of the trailer section.
    count: u32,
    state: State,
}

// Lives in every streaming body's state: keep it small.
const _: () = assert!(std::mem::size_of::<ChunkedDecoder>() <= 16);

/// What one [`ChunkedDecoder::decode`] call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used up (framing and payload); the caller drops them and feeds
    /// the rest, plus anything newly read, next time.
    pub consumed: usize,
    /// Payload bytes, as a range of the input given (always within `..consumed`).
    pub data: Option<Range<usize>>,
    /// The body is complete; the input after `consumed` belongs to the next message.
    pub done: bool,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub const fn new() -> Self {
        ChunkedDecoder {
            remaining: 0,
            count: 0,
            state: State::SizeStart,
        }
    }

    /// Whether the whole body, trailer section included, has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the decoder is inside a chunk-size line (its start included): no size has been
    /// read whole since the last chunk's payload.
    pub fn in_size_line(&self) -> bool {
        matches!(
            self.state,
            State::SizeStart | State::Size | State::SizeBws | State::Ext | State::SizeLf
        )
    }

    /// Decodes from the start of `input`: stops after the first run of payload bytes, at
    /// the end of the body, or at the end of the input, whichever comes first.
    ///
    /// Call it in a loop: forward `input[data]`, drop `consumed` bytes, and call again on
    /// the rest until it returns `consumed == 0` (read more) or `done`.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Data => {
                    let available = input.len() - i;
                    let take = if self.remaining < available as u64 {
                        self.remaining as usize
                    } else {
                        available
                    };
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded {
                        consumed: i + take,
                        data: Some(i..i + take),
                        done: false,
                    });
                }
                State::Done => break,
                _ => {
                    self.step(input[i])?;
                    i += 1;
                }
            }
        }
        Ok(Decoded {
            consumed: i,
            data: None,
            done: self.state == State::Done,
        })
    }

    /// One framing byte (any state but `Data` and `Done`).
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        match self.state {
            State::SizeStart => {
                self.remaining = u64::from(hex_value(b).ok_or(ChunkError::InvalidSize)?);
                self.count = 1;
                self.state = State::Size;
            }
            State::Size => match b {
                b'\r' => self.state = State::SizeLf,
                b';' => {
                    self.size_line_byte()?;
                    self.state = State::Ext;
                }
                b' ' | b'\t' => {
                    self.size_line_byte()?;
                    self.state = State::SizeBws;
                }
                _ => {
                    let digit = hex_value(b).ok_or(ChunkError::InvalidSize)?;
                    if self.remaining > u64::MAX >> 4 {
                        return Err(ChunkError::SizeOverflow);
                    }
                    self.remaining = self.remaining << 4 | u64::from(digit);
                    // Leading zeros are valid hex; the line bound stops an endless run.
                    self.size_line_byte()?;
                }
            },
            State::SizeBws => match b {
                b' ' | b'\t' => self.size_line_byte()?,
                b';' => {
                    self.size_line_byte()?;
                    self.state = State::Ext;
                }
                _ => return Err(ChunkError::InvalidExtension),
            },
            State::Ext => match b {
                b'\r' => self.state = State::SizeLf,
                // Extensions are ignored, so only their bytes are checked: field-value
                // bytes (HT, SP, VCHAR, obs-text), which excludes CR, LF and NUL.
                b'\t' | b' '..=b'~' | 0x80..=0xff => self.size_line_byte()?,
                _ => return Err(ChunkError::InvalidExtension),
            },
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                if self.remaining == 0 {
                    self.count = 0;
                    self.state = State::TrailerStart;
                } else {
                    self.state = State::Data;
                }
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError::MissingCrlf);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                self.state = State::SizeStart;
            }
            State::TrailerStart => {
                self.trailer_byte()?;
                self.state = match b {
                    b'\r' => State::EndLf,
                    // A leading SP/HT would be obs-fold, a leading ':' an empty name.
                    _ if is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkError::InvalidTrailer),
                };
            }
            State::TrailerName => {
                self.trailer_byte()?;
                match b {
                    b':' => self.state = State::TrailerValue,
                    _ if is_tchar(b) => {}
                    _ => return Err(ChunkError::InvalidTrailer),
                }
            }
            State::TrailerValue => {
                self.trailer_byte()?;
                match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => {}
                    _ => return Err(ChunkError::InvalidTrailer),
                }
            }
            State::TrailerLf => {
                self.trailer_byte()?;
                if b != b'\n' {
                    return Err(ChunkError::InvalidTrailer);
                }
                self.state = State::TrailerStart;
            }
            State::EndLf => {
                self.trailer_byte()?;
                if b != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                self.state = State::Done;
            }
            State::Data | State::Done => unreachable!("decode handles data and done"),
        }
        Ok(())
    }

    fn size_line_byte(&mut self) -> Result<(), ChunkError> {
        self.count += 1;
        if self.count as usize > MAX_SIZE_LINE {
            return Err(ChunkError::LineTooLong {
                limit: MAX_SIZE_LINE,
            });
        }
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.count += 1;
        if self.count as usize > MAX_TRAILERS {
            return Err(ChunkError::TrailersTooLarge {
                limit: MAX_TRAILERS,
            });
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// tchar (RFC 9110 §5.6.2): the bytes of a field name.
fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// Appends a chunk-size line for `len` payload bytes: lower-case hex, CRLF. `len` must not
/// be 0: a zero-size chunk is the last chunk and ends the body (use [`LAST_CHUNK`]).
pub fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    debug_assert!(len > 0, "a zero-size chunk ends the body");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 18];
    buf[16] = b'\r';
    buf[17] = b'\n';
    let mut n = len as u64;
    let mut i = 16;
    loop {
        i -= 1;
        buf[i] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `data` as one chunk (size line, data, CRLF); nothing for empty `data`, which
/// would otherwise end the body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    write_chunk_header(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(CHUNK_TAIL);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Drives a decoder the way the connection code does: bytes arrive in `pieces`,
    /// unconsumed bytes stay buffered. Returns (payload, bytes left after the body, done).
    pub(crate) fn decode_pieces(pieces: &[&[u8]]) -> Result<(Vec<u8>, Vec<u8>, bool), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut pending = Vec::new();
        let mut payload = Vec::new();
        for (n, piece) in pieces.iter().enumerate() {
            pending.extend_from_slice(piece);
            loop {
                let step = decoder.decode(&pending)?;
                assert!(step.consumed <= pending.len());
                if let Some(range) = step.data {
                    assert!(!range.is_empty() && range.end <= step.consumed);
                    payload.extend_from_slice(&pending[range]);
                }
                pending.drain(..step.consumed);
                if step.done {
                    assert!(decoder.is_done());
                    pending.extend(pieces[n + 1..].iter().flat_map(|p| p.iter()));
                    return Ok((payload, pending, true));
                }
                if step.consumed == 0 {
                    break;
                }
            }
        }
        Ok((payload, pending, false))
    }

    /// (name, encoded body followed by pipelined bytes, payload, pipelined bytes)
    type ValidCase = (&'static str, &'static [u8], &'static [u8], &'static [u8]);

    #[rustfmt::skip]
    const VALID: &[ValidCase] = &[
        ("empty body", b"0\r\n\r\n", b"", b""),
        ("one chunk", b"5\r\nhello\r\n0\r\n\r\n", b"hello", b""),
        ("several chunks", b"5\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n", b"hello world!", b""),
        ("upper and lower hex", b"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", b"0123456789abcdefghij", b""),
        ("leading zeros", b"0005\r\nhello\r\n000\r\n\r\n", b"hello", b""),
        ("data holding CRLF", b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n", b""),
        ("extensions", b"5;name=value;flag\r\nhello\r\n0;last=\"yes \\\" ok\"\r\n\r\n", b"hello", b""),
        ("BWS before extension", b"5 \t;x=1\r\nhello\r\n0 ;y\r\n\r\n", b"hello", b""),
        ("trailers", b"3\r\nabc\r\n0\r\nChecksum: deadbeef\r\nX-Empty:\r\nX-Tab:\t1 2\r\n\r\n", b"abc", b""),
        ("pipelined bytes kept", b"2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n", b"hi", b"GET / HTTP/1.1\r\n\r\n"),
        ("largest size", b"FFFFFFFFFFFFFFFF\r\nab", b"ab", b""),
    ];

    #[test]
    fn valid_bodies_in_one_piece() {
        for (name, input, payload, rest) in VALID {
            let (got, left, done) =
                decode_pieces(&[input]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, *payload, "{name}");
            if *name == "largest size" {
                assert!(!done, "{name}");
                continue;
            }
            assert!(done, "{name}");
            assert_eq!(left, *rest, "{name}");
        }
    }

    #[test]
    fn every_split_point() {
        for (name, input, payload, rest) in VALID {
            for cut in 0..=input.len() {
                let (got, left, done) = decode_pieces(&[&input[..cut], &input[cut..]])
                    .unwrap_or_else(|e| panic!("{name} cut {cut}: {e}"));
                assert_eq!(got, *payload, "{name} cut {cut}");
                assert_eq!(done, *name != "largest size", "{name} cut {cut}");
                if done {
                    assert_eq!(left, *rest, "{name} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn every_pair_of_split_points() {
        for (name, input, payload, rest) in VALID {
            for a in 0..=input.len() {
                for b in a..=input.len() {
                    let pieces = [&input[..a], &input[a..b], &input[b..]];
                    let (got, left, done) = decode_pieces(&pieces).unwrap();
                    assert_eq!(got, *payload, "{name} cuts {a} {b}");
                    if done {
                        assert_eq!(left, *rest, "{name} cuts {a} {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        for (name, input, payload, _) in VALID {
            let pieces: Vec<&[u8]> = input.chunks(1).collect();
            let (got, _, _) = decode_pieces(&pieces).unwrap();
            assert_eq!(got, *payload, "{name}");
        }
    }

    #[test]
    fn incomplete_body_waits() {
        let input = b"5\r\nhello\r\n0\r\n\r\n";
        for cut in 0..input.len() {
            let (_, _, done) = decode_pieces(&[&input[..cut]]).unwrap();
            assert!(!done, "cut {cut}");
        }
    }

    #[test]
    fn data_range_is_inside_the_input() {
        let mut decoder = ChunkedDecoder::new();
        let input = b"3\r\nabc\r\n";
        let step = decoder.decode(input).unwrap();
        assert_eq!(
            step,
            Decoded {
                consumed: 6,
                data: Some(3..6),
                done: false
            }
        );
        let step = decoder.decode(&input[6..]).unwrap();
        assert_eq!(
            step,
            Decoded {
                consumed: 2,
                data: None,
                done: false
            }
        );
        assert_eq!(decoder.decode(b"").unwrap().consumed, 0);
        let step = decoder.decode(b"0\r\n\r\nextra").unwrap();
        assert_eq!(
            step,
            Decoded {
                consumed: 5,
                data: None,
                done: true
            }
        );
        // Done is sticky and consumes nothing more.
        assert_eq!(decoder.decode(b"extra").unwrap().consumed, 0);
    }

    fn long_ext_line() -> Vec<u8> {
        let mut v = b"5;".to_vec();
        v.resize(MAX_SIZE_LINE + 1, b'x');
        v.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        v
    }

    fn max_ext_line() -> Vec<u8> {
        let mut v = b"5;".to_vec();
        v.resize(MAX_SIZE_LINE, b'x');
        v.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        v
    }

    fn big_trailers(total: usize) -> Vec<u8> {
        let mut v = b"0\r\nX: ".to_vec();
        // Trailer section = "X: " + value + "\r\n" + "\r\n"
        v.resize(3 + total - 4 - 3 + 3, b'v');
        v.extend_from_slice(b"\r\n\r\n");
        v
    }

    #[rustfmt::skip]
    const INVALID: &[(&str, &[u8], ChunkError)] = &[
        ("empty size", b"\r\nhello\r\n", ChunkError::InvalidSize),
        ("sign", b"+5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
        ("negative", b"-5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
        ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
        ("leading space", b" 5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
        ("non-hex digit", b"5g\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
        ("underscore", b"1_0\r\n", ChunkError::InvalidSize),
        ("overflow", b"10000000000000000\r\n", ChunkError::SizeOverflow),
        ("huge overflow", b"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\r\n", ChunkError::SizeOverflow),
        ("trailing space without extension", b"5 \r\nhello\r\n0\r\n\r\n", ChunkError::InvalidExtension),
        ("space then garbage", b"5 x\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidExtension),
        ("NUL in extension", b"5;a\x00\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidExtension),
        ("bare LF in extension", b"5;a\nhello\r\n0\r\n\r\n", ChunkError::InvalidExtension),
        ("bare LF after size", b"5\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
        ("CR without LF after size", b"5\rhello\r\n0\r\n\r\n", ChunkError::MissingCrlf),
        ("data too long", b"5\r\nhello!\r\n0\r\n\r\n", ChunkError::MissingCrlf),
        ("bare LF after data", b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingCrlf),
        ("CR without LF after data", b"5\r\nhello\r0\r\n\r\n", ChunkError::MissingCrlf),
        ("missing CRLF after data", b"5\r\nhello0\r\n\r\n", ChunkError::MissingCrlf),
        ("bare LF after last chunk", b"0\n\r\n", ChunkError::InvalidSize),
        ("bare LF ending body", b"0\r\n\n", ChunkError::InvalidTrailer),
        ("CR then garbage ending body", b"0\r\n\rX", ChunkError::MissingCrlf),
        ("obs-fold in trailer", b"0\r\nX: a\r\n b\r\n\r\n", ChunkError::InvalidTrailer),
        ("empty trailer name", b"0\r\n: a\r\n\r\n", ChunkError::InvalidTrailer),
        ("space before colon in trailer", b"0\r\nX : a\r\n\r\n", ChunkError::InvalidTrailer),
        ("trailer without colon", b"0\r\nX\r\n\r\n", ChunkError::InvalidTrailer),
        ("NUL in trailer value", b"0\r\nX: a\x00\r\n\r\n", ChunkError::InvalidTrailer),
        ("bare LF in trailer", b"0\r\nX: a\n\r\n", ChunkError::InvalidTrailer),
        ("bare CR in trailer", b"0\r\nX: a\rb\r\n\r\n", ChunkError::InvalidTrailer),
    ];

    #[test]
    fn invalid_bodies() {
        let mut cases: Vec<(String, Vec<u8>, ChunkError)> = INVALID
            .iter()
            .map(|(n, i, e)| (n.to_string(), i.to_vec(), *e))
            .collect();
        cases.push((
            "extension line too long".into(),
            long_ext_line(),
            ChunkError::LineTooLong {
                limit: MAX_SIZE_LINE,
            },
        ));
        let mut zeros = vec![b'0'; MAX_SIZE_LINE + 1];
        zeros.extend_from_slice(b"5\r\n");
        cases.push((
            "endless leading zeros".into(),
            zeros,
            ChunkError::LineTooLong {
                limit: MAX_SIZE_LINE,
            },
        ));
        cases.push((
            "trailers too large".into(),
            big_trailers(MAX_TRAILERS + 1),
            ChunkError::TrailersTooLarge {
                limit: MAX_TRAILERS,
            },
        ));
        for (name, input, expected) in &cases {
            assert_eq!(decode_pieces(&[input]), Err(*expected), "{name}");
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                decode_pieces(&bytes),
                Err(*expected),
                "{name}, byte by byte"
            );
            assert_eq!(expected.status(), 400);
        }
    }

    #[test]
    fn bounds_are_inclusive() {
        let (payload, _, done) = decode_pieces(&[&max_ext_line()]).unwrap();
        assert_eq!((payload.as_slice(), done), (&b"hello"[..], true));
        let trailers = big_trailers(MAX_TRAILERS);
        assert!(decode_pieces(&[&trailers]).unwrap().2);
    }

    #[test]
    fn encoder_round_trip() {
        let mut out = Vec::new();
        write_chunk_header(&mut out, 1);
        write_chunk_header(&mut out, 0xabc);
        write_chunk_header(&mut out, usize::MAX);
        assert_eq!(out, b"1\r\nabc\r\nffffffffffffffff\r\n");

        let mut body = Vec::new();
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for piece in payload.chunks(777) {
            write_chunk(&mut body, piece);
        }
        write_chunk(&mut body, b"");
        body.extend_from_slice(LAST_CHUNK);
        let (got, left, done) = decode_pieces(&[&body]).unwrap();
        assert!(done && left.is_empty());
        assert_eq!(got, payload);
    }
}
