//! Process log: leveled lines on stderr (`[log] level`), BEHAVIOR.md "Process log".
//!
//! Owns the one global log level and the line format: an RFC 3339 UTC timestamp with
//! milliseconds, the level, then the message (`2026-12-06T03:25:11.889Z warn dispatch: ...`).
//! Lines are formatted into a local buffer and written with a single `write` so lines from
//! different workers never interleave. Logging is for operators (startup, errors, shutdown),
//! never per request: the access log is a separate capability.
//!
//! Warnings that can repeat at the rate of traffic (refused connections, a full access-log
//! queue, an endpoint failing) go through a [`Limiter`] (`warn_limited!`): at most one line per
//! key per [`Limiter::WINDOW_MS`]; the next line written carries the count of the lines it
//! stood for. A limiter is two atomics and takes no lock, so any thread may share one.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::config::model::LogLevel;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: LogLevel) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// One line as written, without its newline: `<RFC 3339 ms> <level> dispatch: <message>`.
pub fn format_line(
    out: &mut Vec<u8>,
    unix_ms: u64,
    level: LogLevel,
    args: std::fmt::Arguments<'_>,
) {
    let name = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    let _ = write!(
        out,
        "{} {name} dispatch: {args}",
        crate::clock::rfc3339(unix_ms)
    );
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[doc(hidden)]
pub fn write_line(level: LogLevel, args: std::fmt::Arguments<'_>) {
    let mut line = Vec::with_capacity(128);
    format_line(&mut line, unix_ms_now(), level, args);
    line.push(b'\n');
    let _ = std::io::stderr().lock().write_all(&line);
}

/// Rate limit of one repeated warning: at most one line per [`Limiter::WINDOW_MS`].
///
/// `admit` is lock-free: a compare-and-swap on the end of the current window picks the one
/// caller that writes; the others only count themselves. The count is reported by the next
/// line admitted (`suppressed` lines folded into it), as the kernel's "callbacks suppressed".
pub struct Limiter {
    /// End of the current window, in `now_ms` units (0 before the first line: any reading is
    /// past it).
    until_ms: AtomicU64,
    /// Lines suppressed since the last one written.
    suppressed: AtomicU64,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Limiter {
    /// One line per key per second at most.
    pub const WINDOW_MS: u64 = 1000;

    pub const fn new() -> Limiter {
        Limiter {
            until_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// At `now_ms` (any monotonic millisecond clock, [`crate::clock::now_ms`] in the
    /// gateway): `Some(n)` when this line is to be written, `n` being the lines suppressed
    /// since the last one written; `None` when it is suppressed (and counted).
    pub fn admit(&self, now_ms: u64) -> Option<u64> {
        let until = self.until_ms.load(Ordering::Acquire);
        if now_ms >= until
            && self
                .until_ms
                .compare_exchange(
                    until,
                    now_ms + Self::WINDOW_MS,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

/// Writes a warning through a [`Limiter`]: `warn_limited!(&LIMITER, "...", args)`. A line
/// that follows suppressed ones ends with `(N similar lines suppressed)`.
#[macro_export]
macro_rules! warn_limited {
    ($limiter:expr, $($arg:tt)*) => {
        if $crate::logging::enabled($crate::config::model::LogLevel::Warn) {
            match $limiter.admit($crate::clock::now_ms()) {
                None => {}
                Some(0) => $crate::logging::write_line(
                    $crate::config::model::LogLevel::Warn,
                    format_args!($($arg)*),
                ),
                Some(n) => $crate::logging::write_line(
                    $crate::config::model::LogLevel::Warn,
                    format_args!("{} ({n} similar lines suppressed)", format_args!($($arg)*)),
                ),
            }
        }
    };
}

#[macro_export]
macro_rules! log_at {
    ($lvl:expr, $($arg:tt)*) => {
        if $crate::logging::enabled($lvl) {
            $crate::logging::write_line($lvl, format_args!($($arg)*));
        }
    };
}
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!($crate::config::model::LogLevel::Error, $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!($crate::config::model::LogLevel::Warn, $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!($crate::config::model::LogLevel::Info, $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!($crate::config::model::LogLevel::Debug, $($arg)*) }; }

#[cfg(test)]
mod tests {
    use super::*;

    /// Process log lines used to start with Unix seconds (`1796527511.889 info ...`).
    #[test]
    fn lines_used_to_start_with_unix_seconds() {
        let mut out = Vec::new();
        format_line(
            &mut out,
            1_796_527_511_889,
            LogLevel::Warn,
            format_args!("upstream {} down", "users"),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-06T03:25:11.889Z warn dispatch: upstream users down"
        );
    }

    /// A repeated warning used to be written once per occurrence, flooding the log.
    #[test]
    fn repeated_warnings_used_to_flood_the_log() {
        let l = Limiter::new();
        // The first line goes out at once, even at clock reading 0.
        assert_eq!(l.admit(0), Some(0));
        // The rest of the window is suppressed and counted.
        for t in [1, 500, 999] {
            assert_eq!(l.admit(t), None);
        }
        // The first line of the next window reports them.
        assert_eq!(l.admit(1000), Some(3));
        assert_eq!(l.admit(1999), None);
        // After a quiet spell: written at once, with the one it stood for.
        assert_eq!(l.admit(60_000), Some(1));
        assert_eq!(l.admit(60_001), None);
        assert_eq!(l.admit(61_000), Some(1));
    }

    /// Many threads at once: exactly one line per window, and none lost from the count.
    #[test]
    fn limiter_admits_one_line_per_window_across_threads() {
        let l = std::sync::Arc::new(Limiter::new());
        let admitted: u64 = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    (0..1000).filter(|_| l.admit(5_000).is_some()).count() as u64
                })
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(admitted, 1);
        assert_eq!(l.admit(6_000), Some(3999));
    }
}
