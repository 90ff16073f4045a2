//! Durations ("250ms", "3s", "1m", "1h") and sizes ("512B", "16KiB", "10MiB", "1GiB", or a plain
//! integer of bytes): parsed from the file and printed back for `dispatch check`.
//!
//! Sizes are 1024-based and spelled with IEC units only. "KB"/"MB"/"GB" are rejected with a
//! hint rather than guessed at, because half of the world reads them as powers of 1000.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The longest duration any key accepts: one year. Far beyond any sensible timeout, and far
/// from the point where `Instant + Duration` would overflow.
const MAX_DURATION_MS: u64 = 365 * 24 * 3_600_000;

/// A duration as written in the file. Zero is representable; keys where zero makes no sense
/// (every timeout) reject it in `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

/// A size in bytes as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let invalid =
        || format!("invalid duration {text:?}: expected a number followed by ms, s, m or h");
    if text.starts_with('-') {
        return Err(format!("invalid duration {text:?}: must not be negative"));
    }
    let (number, unit) = split_number(text);
    if number.is_empty() {
        return Err(invalid());
    }
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(ms_per_unit))
        .filter(|&ms| ms <= MAX_DURATION_MS)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {text:?}: at most 8760h (one year)"))
}

pub fn parse_size(text: &str) -> Result<u64, String> {
    if text.starts_with('-') {
        return Err(format!("invalid size {text:?}: must not be negative"));
    }
    let (number, unit) = split_number(text);
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ if ["k", "kb", "m", "mb", "g", "gb"].contains(&unit.to_ascii_lowercase().as_str()) => {
            let iec = format!("{}iB", unit[..1].to_ascii_uppercase());
            return Err(format!(
                "invalid size {text:?}: ambiguous unit {unit:?}; sizes are 1024-based, write {iec} (e.g. \"{number}{iec}\")"
            ));
        }
        _ => {
            return Err(format!(
                "invalid size {text:?}: expected a number of bytes, or a number followed by B, KiB, MiB or GiB"
            ))
        }
    };
    if number.is_empty() {
        return Err(format!(
            "invalid size {text:?}: expected a number of bytes, or a number followed by B, KiB, MiB or GiB"
        ));
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

/// Splits "250ms" into ("250", "ms").
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Prints a duration in the largest unit that represents it exactly ("90s", "1m", "250ms").
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    for (per_unit, unit) in [(3_600_000, "h"), (60_000, "m"), (1_000, "s")] {
        if ms.is_multiple_of(per_unit) {
            return format!("{}{unit}", ms / per_unit);
        }
    }
    format!("{ms}ms")
}

/// Prints a size in the largest IEC unit that represents it exactly ("16KiB", "1000B").
pub fn format_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0B".to_string();
    }
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\", \"3s\", \"1m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration(v).map(Duration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"512B\", \"16KiB\", \"10MiB\" or an integer of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn durations() {
        for (text, expected) in [
            ("250ms", Ok(D::from_millis(250))),
            ("3s", Ok(D::from_secs(3))),
            ("1m", Ok(D::from_secs(60))),
            ("1h", Ok(D::from_secs(3600))),
            ("0s", Ok(D::ZERO)),
            ("8760h", Ok(D::from_secs(8760 * 3600))),
            (
                "3x",
                Err("invalid duration \"3x\": expected a number followed by ms, s, m or h"),
            ),
            (
                "3",
                Err("invalid duration \"3\": expected a number followed by ms, s, m or h"),
            ),
            (
                "s",
                Err("invalid duration \"s\": expected a number followed by ms, s, m or h"),
            ),
            (
                "",
                Err("invalid duration \"\": expected a number followed by ms, s, m or h"),
            ),
            (
                "1.5s",
                Err("invalid duration \"1.5s\": expected a number followed by ms, s, m or h"),
            ),
            (
                " 3s",
                Err("invalid duration \" 3s\": expected a number followed by ms, s, m or h"),
            ),
            (
                "3 s",
                Err("invalid duration \"3 s\": expected a number followed by ms, s, m or h"),
            ),
            (
                "1m30s",
                Err("invalid duration \"1m30s\": expected a number followed by ms, s, m or h"),
            ),
            ("-1s", Err("invalid duration \"-1s\": must not be negative")),
            (
                "8761h",
                Err("invalid duration \"8761h\": at most 8760h (one year)"),
            ),
            (
                "99999999999999999999999s",
                Err("invalid duration \"99999999999999999999999s\": at most 8760h (one year)"),
            ),
        ] {
            assert_eq!(
                parse_duration(text),
                expected.map_err(str::to_string),
                "{text:?}"
            );
        }
    }

    #[test]
    fn sizes() {
        for (text, expected) in [
            ("512B", Ok(512)),
            ("16KiB", Ok(16 * 1024)),
            ("10MiB", Ok(10 << 20)),
            ("1GiB", Ok(1 << 30)),
            ("1024", Ok(1024)),
            ("0B", Ok(0)),
            ("10MB", Err("invalid size \"10MB\": ambiguous unit \"MB\"; sizes are 1024-based, write MiB (e.g. \"10MiB\")")),
            ("16k", Err("invalid size \"16k\": ambiguous unit \"k\"; sizes are 1024-based, write KiB (e.g. \"16KiB\")")),
            ("1gb", Err("invalid size \"1gb\": ambiguous unit \"gb\"; sizes are 1024-based, write GiB (e.g. \"1GiB\")")),
            ("10mib", Err("invalid size \"10mib\": expected a number of bytes, or a number followed by B, KiB, MiB or GiB")),
            ("KiB", Err("invalid size \"KiB\": expected a number of bytes, or a number followed by B, KiB, MiB or GiB")),
            ("", Err("invalid size \"\": expected a number of bytes, or a number followed by B, KiB, MiB or GiB")),
            ("-1KiB", Err("invalid size \"-1KiB\": must not be negative")),
            ("99999999999GiB", Err("invalid size \"99999999999GiB\": too large")),
        ] {
            assert_eq!(parse_size(text), expected.map_err(str::to_string), "{text:?}");
        }
    }

    #[test]
    fn printing_round_trips() {
        for text in ["250ms", "3s", "90s", "1m", "1h", "0s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        for text in ["512B", "1000B", "16KiB", "10MiB", "1GiB", "0B"] {
            assert_eq!(format_size(parse_size(text).unwrap()), text);
        }
    }
}
