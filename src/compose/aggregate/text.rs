//! A call's JSON answer as text (BEHAVIOR.md "Aggregation"): a result that only the
//! composite reads is checked and copied into it as the upstream sent it, never parsed into a
//! tree and written back ([`super::run`]). Pure: bytes in, bytes or ranges out.
//!
//! Key items: [`check`] (one JSON value, whitespace around it trimmed) and [`select`] (the
//! part of a checked text that a path of object keys, `.a.b`, selects, as jq answers it).
//!
//! The one thing to know: [`check`] is the parse into `serde_json::Value` keeping nothing
//! (the same parser, visiting the same strings, numbers and nesting, its recursion limit
//! included, with no allocation), so a body kept as text fails exactly when the parsed one
//! would (`not json`); [`select`] then reads only checked text, and answers `None` wherever
//! its answer could differ from jq's (a key written with escapes, a key of something other
//! than an object or null), for the caller to run the program instead.

use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// The range of `body`'s one JSON value, without the whitespace around it (RFC 8259 §2), when
/// a parse into `serde_json::Value` would succeed; None otherwise.
pub fn check(body: &[u8]) -> Option<Range<usize>> {
    serde_json::from_slice::<Checked>(body).ok()?;
    let start = body.iter().position(|b| !is_ws(*b))?;
    let end = body.iter().rposition(|b| !is_ws(*b))? + 1;
    Some(start..end)
}

/// The part of `text` (a value [`check`] passed, `range` its bounds) that the path of object
/// keys `keys` selects, as jq's `.k1.k2...`: `Some(Some(r))` the value at `r`; `Some(None)`
/// null (a missing key, or a key of null); `None` where jq's answer is not read off the text
/// here (a key of an array, string, number or boolean is jq's error; a key of the object
/// written with escapes could be the one): the caller runs the program on the parsed value.
pub fn select(text: &[u8], range: Range<usize>, keys: &[String]) -> Option<Option<Range<usize>>> {
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
/// decoded, every number converted), keeping nothing.
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
            let got = select(text.as_bytes(), range, &keys(path)).map(|r| r.map(|r| &text[r]));
            assert_eq!(got, *want, "{text} .{path}");
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
