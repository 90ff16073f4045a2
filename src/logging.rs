//! Process log: leveled lines on stderr (`[log] level`).
//!
//! Owns the one global log level. Lines are formatted into a local buffer and written with a
//! single `write` so lines from different workers never interleave. Logging is for operators
//! (startup, errors, shutdown), never per request: the access log is a separate capability.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::config::model::LogLevel;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: LogLevel) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

#[doc(hidden)]
pub fn write_line(level: LogLevel, args: std::fmt::Arguments<'_>) {
    let name = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut line = Vec::with_capacity(128);
    let _ = writeln!(
        line,
        "{}.{:03} {name} dispatch: {args}",
        ts.as_secs(),
        ts.subsec_millis()
    );
    let _ = std::io::stderr().lock().write_all(&line);
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
