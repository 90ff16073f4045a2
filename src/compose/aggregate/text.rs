//! A call's JSON answer as text (BEHAVIOR.md "Aggregation"): a result that only the
//! composite reads is checked and copied into it as the upstream sent it, never parsed into a
//! tree and written back ([`super::run`]). Pure: bytes in, bytes or ranges out.
//!
//! Key items: [`check`] (one JSON value, whitespace around it trimmed) and [`select`] (the
//! part of a checked text that a path of object keys, `.a.b`, selects, as jq answers it).
//!
//! The one thing to know: [`check`] accepts exactly what a parse into `serde_json::Value`
//! accepts, so a body kept as text fails exactly when the parsed one would (`not json`). It is
//! its own scan, not serde_json's parser (which decodes every string and converts every number
//! only to drop them: over a tenth of an aggregate's CPU): UTF-8 checked once over the whole
//! body, strings scanned for their end with escapes and surrogate pairs checked as serde_json
//! checks them, nesting bounded by serde_json's recursion limit, and every number that could
//! be out of range (an exponent, or more than 18 characters) handed to serde_json itself. A
//! differential test holds the two together over generated and mutated documents. [`select`]
//! then reads only checked text, and answers `None` wherever its answer could differ from
//! jq's (a key written with escapes, a key of something other than an object or null), for
//! the caller to run the program instead.

use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// The range of `body`'s one JSON value, without the whitespace around it (RFC 8259 §2), when
/// a parse into `serde_json::Value` would succeed; None otherwise.
pub fn check(body: &[u8]) -> Option<Range<usize>> {
    // Bytes over 0x7F are legal only inside strings, where they must be UTF-8: checking the
    // whole body once is the same test as checking each string's (a sequence cannot span a
    // string's ASCII end or an escape's backslash).
    std::str::from_utf8(body).ok()?;
    let start = ws(body, 0);
    let end = scan_value(body, start, None)?;
    (ws(body, end) == body.len()).then_some(start..end)
}

/// What [`select`] answers: `Some(Some(r))` the value at `r`, `Some(None)` null, `None`
/// declined (the caller runs the program).
pub type Selected = Option<Option<Range<usize>>>;

/// [`check`], and [`select`]'s answer for the path `keys` found in the same pass: the first
/// key is looked up while the body is checked, so a result's `select` reads it once. None:
/// not JSON.
pub fn check_select(body: &[u8], keys: &[String]) -> Option<(Range<usize>, Selected)> {
    let Some((first, rest)) = keys.split_first() else {
        let whole = check(body)?;
        return Some((whole.clone(), Some(Some(whole))));
    };
    std::str::from_utf8(body).ok()?;
    let start = ws(body, 0);
    let mut watch = Watch {
        key: first.as_bytes(),
        found: None,
        escaped: false,
        start: None,
    };
    let end = scan_value(body, start, Some(&mut watch))?;
    if ws(body, end) != body.len() {
        return None;
    }
    let answer = match body[start] {
        b'n' => Some(None),
        b'{' if watch.escaped => None,
        b'{' => match watch.found {
            None => Some(None),
            Some(found) if rest.is_empty() => Some(Some(found)),
            Some(found) => select(body, found, rest),
        },
        _ => None,
    };
    Some((start..end, answer))
}

/// serde_json's recursion limit: the 128th nested array or object is an error.
const MAX_DEPTH: u32 = 127;

/// The index just past the value that starts at `i`, if it is valid JSON (module doc).
/// Iterative: the open containers are a bit each (set: an object) in a 128-bit stack.
fn scan_value(t: &[u8], mut i: usize, mut watch: Option<&mut Watch<'_>>) -> Option<usize> {
    let mut depth = 0u32;
    let mut objects = 0u128;
    loop {
        // A value starts at `i`.
        match *t.get(i)? {
            open @ (b'{' | b'[') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return None;
                }
                let object = open == b'{';
                objects = (objects << 1) | object as u128;
                i = ws(t, i + 1);
                let close = if object { b'}' } else { b']' };
                if *t.get(i)? != close {
                    if object {
                        let (name, after) = key(t, i)?;
                        i = ws(t, after);
                        if depth == 1 {
                            if let Some(w) = watch.as_deref_mut() {
                                w.member(&t[name], i);
                            }
                        }
                    }
                    continue;
                }
                depth -= 1;
                objects >>= 1;
                i += 1;
            }
            b'"' => i = checked_string_end(t, i)?,
            b't' => i = literal(t, i, b"true")?,
            b'f' => i = literal(t, i, b"false")?,
            b'n' => i = literal(t, i, b"null")?,
            b'-' | b'0'..=b'9' => i = number_end(t, i)?,
            _ => return None,
        }
        // A value ended at `i`: close containers until one goes on with a comma.
        loop {
            if depth == 0 {
                return Some(i);
            }
            if depth == 1 {
                if let Some(w) = watch.as_deref_mut() {
                    w.ended(i);
                }
            }
            i = ws(t, i);
            let object = objects & 1 == 1;
            match (*t.get(i)?, object) {
                (b',', true) => {
                    let (name, after) = key(t, ws(t, i + 1))?;
                    i = ws(t, after);
                    if depth == 1 {
                        if let Some(w) = watch.as_deref_mut() {
                            w.member(&t[name], i);
                        }
                    }
                    break;
                }
                (b',', false) => {
                    i = ws(t, i + 1);
                    break;
                }
                (b'}', true) | (b']', false) => {
                    depth -= 1;
                    objects >>= 1;
                    i += 1;
                }
                _ => return None,
            }
        }
    }
}

/// What [`scan_value`] notes of the top-level object's members for [`check_select`]: the
/// last member named `key` (a parse keeps the last of a repeated key), and whether any name
/// has an escape (it could spell `key`).
struct Watch<'k> {
    key: &'k [u8],
    found: Option<Range<usize>>,
    escaped: bool,
    /// Where the value of the member being read starts, when its name is `key`.
    start: Option<usize>,
}

impl Watch<'_> {
    fn member(&mut self, name: &[u8], value: usize) {
        self.escaped |= name.contains(&b'\\');
        self.start = (name == self.key).then_some(value);
    }

    fn ended(&mut self, end: usize) {
        if let Some(start) = self.start.take() {
            self.found = Some(start..end);
        }
    }
}

/// An object's key at `i` and its colon: the name's range (inside the quotes) and the index
/// after the colon.
fn key(t: &[u8], i: usize) -> Option<(Range<usize>, usize)> {
    if *t.get(i)? != b'"' {
        return None;
    }
    let end = checked_string_end(t, i)?;
    let colon = ws(t, end);
    (*t.get(colon)? == b':').then_some((i + 1..end - 1, colon + 1))
}

fn literal(t: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (t.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// Bytes that end a run of plain string content: the quote, the backslash, and the control
/// characters a JSON string may not hold raw (RFC 8259 §7).
const fn string_stops() -> [bool; 256] {
    let mut stops = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        stops[b] = true;
        b += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
}
static STRING_STOPS: [bool; 256] = string_stops();

/// The index just past the string that starts at `i` (its opening quote), when its escapes
/// are valid as serde_json reads them into a `String` (a `\u` surrogate must be a high one
/// followed by a `\u` low one) and it holds no raw control character.
fn checked_string_end(t: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j = plain_run_end(t, j);
        while t.get(j).is_some_and(|b| !STRING_STOPS[*b as usize]) {
            j += 1;
        }
        match *t.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j = escape_end(t, j + 1)?,
            _ => return None,
        }
    }
}

/// How far from `j` plain string content goes, eight bytes at a time: the first word that
/// holds a quote, a backslash or a control character stops it (the byte loop after it finds
/// which). Any index it returns is at or before the first such byte.
fn plain_run_end(t: &[u8], mut j: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `v` is zero / below `n` (n <= 0x80): exact for the lowest such byte, which is
    // all this asks (whether any is in the word).
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    while let Some(word) = t.get(j..j + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        if zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64)) | below(x, 0x20) != 0 {
            break;
        }
        j += 8;
    }
    j
}

/// The index after the escape whose letter is at `j` (after its backslash).
fn escape_end(t: &[u8], j: usize) -> Option<usize> {
    match *t.get(j)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(j + 1),
        b'u' => {
            let unit = hex4(t, j + 1)?;
            let after = j + 5;
            match unit {
                0xDC00..=0xDFFF => None,
                0xD800..=0xDBFF => {
                    if t.get(after..after + 2)? != b"\\u" {
                        return None;
                    }
                    let low = hex4(t, after + 2)?;
                    (0xDC00..=0xDFFF).contains(&low).then_some(after + 6)
                }
                _ => Some(after),
            }
        }
        _ => None,
    }
}

fn hex4(t: &[u8], j: usize) -> Option<u16> {
    let digits = t.get(j..j + 4)?;
    let mut n = 0u16;
    for d in digits {
        n = n << 4 | (*d as char).to_digit(16)? as u16;
    }
    Some(n)
}

/// The index just past the number that starts at `i` (RFC 8259 §6). One that might not fit
/// an `f64` (an exponent, or more than 18 characters) is also parsed by serde_json, whose
/// range error a parse into a value would give.
fn number_end(t: &[u8], i: usize) -> Option<usize> {
    let digits = |mut j: usize| {
        while t.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    };
    let mut j = i + (t[i] == b'-') as usize;
    match *t.get(j)? {
        b'0' => {
            j += 1;
            if t.get(j).is_some_and(u8::is_ascii_digit) {
                return None;
            }
        }
        b'1'..=b'9' => j = digits(j + 1),
        _ => return None,
    }
    if t.get(j) == Some(&b'.') {
        let after = digits(j + 1);
        if after == j + 1 {
            return None;
        }
        j = after;
    }
    let mut exponent = false;
    if matches!(t.get(j), Some(b'e' | b'E')) {
        exponent = true;
        j += 1;
        if matches!(t.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let after = digits(j);
        if after == j {
            return None;
        }
        j = after;
    }
    if exponent || j - i > 18 {
        serde_json::from_slice::<Checked>(&t[i..j]).ok()?;
    }
    Some(j)
}

/// The part of `text` (a value [`check`] passed, `range` its bounds) that the path of object
/// keys `keys` selects, as jq's `.k1.k2...`: `Some(Some(r))` the value at `r`; `Some(None)`
/// null (a missing key, or a key of null); `None` where jq's answer is not read off the text
/// here (a key of an array, string, number or boolean is jq's error; a key of the object
/// written with escapes could be the one): the caller runs the program on the parsed value.
pub fn select(text: &[u8], range: Range<usize>, keys: &[String]) -> Selected {
    let mut at = range;
    for key in keys {
        match text.get(at.start)? {
            b'n' => return Some(None),
            b'{' => {}
            _ => return None,
        }
        let mut i = ws(text, at.start + 1);
        let mut found = None;
        if *text.get(i)? != b'}' {
            loop {
                let key_end = string_end(text, i)?;
                let name = text.get(i + 1..key_end - 1)?;
                if name.contains(&b'\\') {
                    return None;
                }
                i = ws(text, key_end);
                if *text.get(i)? != b':' {
                    return None;
                }
                let value = ws(text, i + 1);
                let value_end = value_end(text, value)?;
                // A repeated key: the last one is the value (as a parse keeps it).
                if name == key.as_bytes() {
                    found = Some(value..value_end);
                }
                i = ws(text, value_end);
                match text.get(i)? {
                    b',' => i = ws(text, i + 1),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        match found {
            Some(r) => at = r,
            None => return Some(None),
        }
    }
    Some(Some(at))
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The first index from `i` that is not whitespace.
fn ws(text: &[u8], mut i: usize) -> usize {
    while text.get(i).is_some_and(|b| is_ws(*b)) {
        i += 1;
    }
    i
}

/// The index just past the string that starts at `i` (its opening quote).
fn string_end(text: &[u8], i: usize) -> Option<usize> {
    if *text.get(i)? != b'"' {
        return None;
    }
    let mut j = i + 1;
    loop {
        match text.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// The index just past the value that starts at `i`.
fn value_end(text: &[u8], i: usize) -> Option<usize> {
    match text.get(i)? {
        b'"' => string_end(text, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match text.get(j)? {
                    b'"' => {
                        j = string_end(text, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while text
                .get(j)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !is_ws(*b))
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// A JSON value read as a `serde_json::Value` is read (`deserialize_any`: every string
/// decoded, every number converted), keeping nothing: [`number_end`]'s range check, and the
/// tests' reference.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// `check` accepts exactly what a parse into a value accepts, nesting included.
    #[test]
    fn check_agrees_with_a_parse_into_a_value() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let cases: Vec<Vec<u8>> = vec![
            b" {\"a\": [1, 2.5, \"x\\\"y\"]}\n".to_vec(),
            b"{\"a\":1,}".to_vec(),
            b"{\"a\":1} x".to_vec(),
            b"[1, 2".to_vec(),
            b"\"\xff\"".to_vec(),
            b"\"a\x01\"".to_vec(),
            b"".to_vec(),
            b"  ".to_vec(),
            b"nul".to_vec(),
            b"01".to_vec(),
            b"\"[{\"".to_vec(),
            b"\"\\ud800\"".to_vec(),
            b"\"\\u00e9\\n\"".to_vec(),
            b"1e400".to_vec(),
            b"-0.5e-3".to_vec(),
            b"123456789012345678901234567890".to_vec(),
            deep(127).into_bytes(),
            deep(128).into_bytes(),
        ];
        for body in cases {
            let parsed = serde_json::from_slice::<Value>(&body).is_ok();
            assert_eq!(
                check(&body).is_some(),
                parsed,
                "{:?}",
                String::from_utf8_lossy(&body)
            );
        }
        let body = b" \t{\"a\": 1}\r\n";
        assert_eq!(check(body), Some(2..10));
    }

    /// A small xorshift generator: the same documents on every run.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Atoms chosen for the edges of serde_json's reading: number ranges and forms, escapes,
    /// surrogate pairs and lone halves, raw UTF-8 and bad escapes.
    const ATOMS: &[&[u8]] = &[
        b"0",
        b"-0",
        b"7",
        b"-12.5",
        b"1e3",
        b"1E-2",
        b"2.5e+10",
        b"1e400",
        b"-1e400",
        b"1e-400",
        b"123456789012345678901234567890",
        b"18446744073709551615",
        b"18446744073709551616",
        b"-9223372036854775809",
        b"0.00000000000000000000000000001",
        b"179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        b"true",
        b"false",
        b"null",
        b"\"\"",
        b"\"a b\"",
        // Long enough that its content is read a word at a time (`plain_run_end`).
        "\"abcdefghijklmnopqrstuvwxyz 0123456789 é✓ ABCDEFGHIJKLMNOPQRSTUVWXYZ\"".as_bytes(),
        b"\"\\u00e9\"",
        b"\"\\ud83d\\ude00\"",
        b"\"\\ud83d\"",
        b"\"\\ude00\"",
        b"\"\\ud83d\\u0041\"",
        b"\"\\ud83d\\n\"",
        b"\"\\n\\t\\/\\\\\\\"\\b\\f\\r\"",
        "\"é✓\u{1F600}\"".as_bytes(),
        b"\"\\x\"",
        b"\"\\u12g4\"",
    ];

    fn generate(state: &mut u64, depth: u32, out: &mut Vec<u8>) {
        let pick = next(state) % 10;
        if depth > 4 || pick < 5 {
            out.extend_from_slice(ATOMS[next(state) as usize % ATOMS.len()]);
            return;
        }
        let n = next(state) % 4;
        let object = pick < 8;
        out.push(if object { b'{' } else { b'[' });
        for k in 0..n {
            if k > 0 {
                out.extend_from_slice([&b","[..], b" , ", b",\n"][next(state) as usize % 3]);
            }
            if object {
                out.extend_from_slice(
                    [&b"\"k\":"[..], b"\"k\" : ", b"\"\\u006b\":", b"\"x\\\"\":"]
                        [next(state) as usize % 4],
                );
            }
            generate(state, depth + 1, out);
        }
        out.push(if object { b'}' } else { b']' });
    }

    /// One random edit: delete, insert or replace a byte (from bytes that matter to JSON),
    /// repeat a slice, or cut the end.
    fn mutate(state: &mut u64, doc: &mut Vec<u8>) {
        const BYTES: &[u8] = b"\"\\,:[]{} \n\x01\x1fe-+.0u8dD\xff\xc3\xa9tn";
        let at = if doc.is_empty() {
            0
        } else {
            next(state) as usize % doc.len()
        };
        let byte = BYTES[next(state) as usize % BYTES.len()];
        match next(state) % 5 {
            0 if !doc.is_empty() => {
                doc.remove(at);
            }
            1 => doc.insert(at, byte),
            2 if !doc.is_empty() => doc[at] = byte,
            3 => {
                let end = (at + 1 + next(state) as usize % 8).min(doc.len());
                let slice = doc[at..end].to_vec();
                doc.splice(at..at, slice);
            }
            _ => doc.truncate(at),
        }
    }

    /// `check` and a parse into a value accept the same bytes: generated documents, each with
    /// up to three edits, and nesting on both sides of the recursion limit.
    #[test]
    fn check_agrees_with_serde_json_on_generated_and_mutated_documents() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..40_000 {
            let mut doc = Vec::new();
            generate(&mut state, 0, &mut doc);
            for _ in 0..round % 4 {
                mutate(&mut state, &mut doc);
            }
            let parsed = serde_json::from_slice::<Value>(&doc).is_ok();
            let checked = check(&doc);
            assert_eq!(
                checked.is_some(),
                parsed,
                "{:?}",
                String::from_utf8_lossy(&doc)
            );
            // The one-pass check and select answer as the two passes do.
            for path in [&["k"][..], &["k", "k"], &["x\"\""]] {
                let path: Vec<String> = path.iter().map(|k| k.to_string()).collect();
                let two = checked
                    .clone()
                    .map(|whole| (whole.clone(), select(&doc, whole, &path)));
                assert_eq!(
                    check_select(&doc, &path),
                    two,
                    "{:?} .{path:?}",
                    String::from_utf8_lossy(&doc)
                );
            }
            if parsed {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both sides are exercised, not one.
        assert!(accepted > 5_000 && refused > 5_000, "{accepted} {refused}");
        for depth in 120..=130 {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let doc = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                let parsed = serde_json::from_slice::<Value>(doc.as_bytes()).is_ok();
                assert_eq!(
                    check(doc.as_bytes()).is_some(),
                    parsed,
                    "depth {depth} {open}"
                );
            }
        }
    }

    /// `select` answers as jq's `.k1.k2` on the parsed value, or declines.
    #[test]
    fn select_reads_key_paths_as_jq_or_declines() {
        let keys = |path: &str| -> Vec<String> { path.split('.').map(str::to_string).collect() };
        let cases: &[(&str, &str, Option<Option<&str>>)] = &[
            (
                r#"{"a": {"b": [1, {"c": "}"}]}, "d": 2}"#,
                "a.b",
                Some(Some(r#"[1, {"c": "}"}]"#)),
            ),
            (r#"{"a": {"b": [1]}, "d": 2}"#, "d", Some(Some("2"))),
            (r#"{"x": "a\"b", "d" : true }"#, "d", Some(Some("true"))),
            (r#"{"a": 1, "a": 2}"#, "a", Some(Some("2"))),
            (r#"{"a": 1}"#, "b", Some(None)),
            (r#"{}"#, "b", Some(None)),
            (r#"{"a": null}"#, "a.b", Some(None)),
            (r#"null"#, "a", Some(None)),
            (r#"{"a": [1]}"#, "a.b", None),
            (r#"{"a": "s"}"#, "a.b", None),
            (r#"{"a": 5}"#, "a.b", None),
            (r#"{"\u0061": 1}"#, "a", None),
            (
                r#"{"t": [{"id": "t_105", "amount": -42.5}], "next": "t_100"}"#,
                "t",
                Some(Some(r#"[{"id": "t_105", "amount": -42.5}]"#)),
            ),
        ];
        for (text, path, want) in cases {
            let range = check(text.as_bytes()).expect("valid");
            let got =
                select(text.as_bytes(), range.clone(), &keys(path)).map(|r| r.map(|r| &text[r]));
            assert_eq!(got, *want, "{text} .{path}");
            // The one-pass reading answers the same.
            let (whole, fused) = check_select(text.as_bytes(), &keys(path)).expect("valid");
            assert_eq!(whole, range);
            assert_eq!(
                fused.map(|r| r.map(|r| &text[r])),
                *want,
                "{text} .{path} in one pass"
            );
            // Where it answers, jq's answer (a parse and a walk) is the same value.
            if let Some(answer) = got {
                let mut v: Value = serde_json::from_str(text).unwrap();
                for k in keys(path) {
                    v = v.get(&k).cloned().unwrap_or(Value::Null);
                }
                let mine = answer.map_or(Value::Null, |a| serde_json::from_str(a).unwrap());
                assert_eq!(mine, v, "{text} .{path}");
            }
        }
    }
}
