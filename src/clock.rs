//! The process clock that time-based state shared across workers is kept in: milliseconds
//! since a monotonic origin fixed at first use, plus the wall-clock time of that origin so
//! such times can be shown as RFC 3339.
//!
//! Breakers, outlier ejection and health checks take `now_ms` as a parameter (unit tests drive
//! it); this module is where the running gateway gets it from. One `Instant::now()` (vDSO, no
//! system call) per reading.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Origin {
    instant: Instant,
    unix_ms: u64,
    unix_ns: u64,
}

static ORIGIN: OnceLock<Origin> = OnceLock::new();

fn origin() -> &'static Origin {
    ORIGIN.get_or_init(|| {
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Origin {
            instant: Instant::now(),
            unix_ms: unix_ns / 1_000_000,
            unix_ns,
        }
    })
}

/// Milliseconds since the origin.
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// `at` in milliseconds since the origin (0 for instants before it).
pub fn ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(origin().instant).as_millis() as u64
}

/// Seconds since the Unix epoch, from the wall clock (not this monotonic one): what token
/// lifetimes (`exp`, `nbf`, `iat`) are written in.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix milliseconds of a reading of this clock.
pub fn unix_ms(ms: u64) -> u64 {
    origin().unix_ms + ms
}

/// `at` as Unix nanoseconds (span timestamps).
pub fn unix_nanos(at: Instant) -> u64 {
    let o = origin();
    o.unix_ns + at.saturating_duration_since(o.instant).as_nanos() as u64
}

/// `unix_ms` as RFC 3339 UTC with milliseconds, e.g. `2026-11-22T09:14:03.120Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_338_843_120), "2026-11-22T09:14:03.120Z");
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_ms();
        let b = now_ms();
        assert!(b >= a);
        assert!(unix_ms(a) > 1_700_000_000_000);
    }
}
