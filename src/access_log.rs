//! The JSON access log (`log.access = "json"`, BEHAVIOR.md "Access log"): one line per request
//! on stdout, written without blocking the event loop.
//!
//! Owns the writer thread ([`Writer`]) and each worker's batch ([`Local`]). A worker formats
//! its lines into a local buffer and hands the buffer to the writer thread when it passes
//! [`BATCH`] bytes or on the worker's housekeeping tick, so the request path never makes a
//! system call for logging. When the writer falls behind, whole batches are dropped and counted
//! in `dispatch_access_log_dropped_total`, with a warning at most once a second (a slow stdout
//! must not stall requests); at shutdown every worker hands over what it holds and
//! the writer drains the queue before the process exits, so no line of a drained request is lost.

use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{bounded, Sender, TrySendError};

/// Bytes a worker gathers before handing a batch to the writer.
pub const BATCH: usize = 32 * 1024;
/// Batches queued for the writer before new ones are dropped (about 8 MiB).
const QUEUE: usize = 256;

/// One warning a second at most for dropped batches, whichever worker drops them.
static DROPPED_WARNING: crate::logging::Limiter = crate::logging::Limiter::new();

/// The writer thread.
pub struct Writer {
    tx: Option<Sender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub dropped: Arc<AtomicU64>,
}

impl Writer {
    /// `dropped` counts the lines dropped when the writer falls behind
    /// (`dispatch_access_log_dropped_total`).
    pub fn start(dropped: Arc<AtomicU64>) -> std::io::Result<Writer> {
        let (tx, rx) = bounded::<Vec<u8>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("dispatch-access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                for batch in rx {
                    // An empty batch is the end marker from `finish` (workers never send one).
                    if batch.is_empty() {
                        break;
                    }
                    let mut out = stdout.lock();
                    if out.write_all(&batch).and_then(|_| out.flush()).is_err() {
                        // stdout is gone: keep draining so workers never block on us.
                        continue;
                    }
                }
            })?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            dropped,
        })
    }

    /// A worker's batch, feeding this writer.
    pub fn local(&self) -> Local {
        Local {
            buf: RefCell::new(Vec::with_capacity(BATCH)),
            second: std::cell::Cell::new((u64::MAX, [0; 19])),
            tx: self.tx.clone(),
            dropped: self.dropped.clone(),
        }
    }

    /// Waits until every batch handed over so far is written. Call after the workers exited:
    /// they flushed on their way out, so the end marker queues behind their last lines. (A
    /// worker cut off by the drain timeout may still hold a sender, so waiting for every sender
    /// to go would never end.)
    pub fn finish(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Vec::new());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One worker's pending lines.
pub struct Local {
    buf: RefCell<Vec<u8>>,
    /// The formatted `YYYY-MM-DDTHH:MM:SS` of the last second logged: most lines share it.
    second: std::cell::Cell<(u64, [u8; 19])>,
    tx: Option<Sender<Vec<u8>>>,
    dropped: Arc<AtomicU64>,
}

/// The fields of one line (BEHAVIOR.md "Access log").
pub struct Entry<'a> {
    pub ts: SystemTime,
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
    pub client_ip: IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub upstream: Option<&'a str>,
    pub upstream_addr: Option<SocketAddr>,
    pub duration: Duration,
    pub upstream_time: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Cache result; None until the cache capability exists.
    pub cache: Option<&'a str>,
    pub worker: usize,
}

impl Local {
    pub fn record(&self, e: &Entry<'_>) {
        let full = {
            let mut buf = self.buf.borrow_mut();
            let d = e.ts.duration_since(UNIX_EPOCH).unwrap_or_default();
            let (cached, mut text) = self.second.get();
            if cached != d.as_secs() {
                let mut v = Vec::with_capacity(24);
                rfc3339(&mut v, UNIX_EPOCH + Duration::from_secs(d.as_secs()));
                text.copy_from_slice(&v[..19]);
                self.second.set((d.as_secs(), text));
            }
            write_line(&mut buf, e, &text, d.subsec_millis());
            buf.len() >= BATCH
        };
        if full {
            self.flush(false);
        }
    }

    /// Hands the pending lines to the writer; `wait` blocks until there is room (shutdown),
    /// otherwise a full queue drops the batch and counts it.
    pub fn flush(&self, wait: bool) {
        let Some(tx) = &self.tx else { return };
        let batch = {
            let mut buf = self.buf.borrow_mut();
            // Never send an empty batch: it is the writer's end marker.
            if buf.is_empty() {
                return;
            }
            std::mem::replace(&mut *buf, Vec::with_capacity(BATCH))
        };
        let lines = batch.iter().filter(|&&b| b == b'\n').count() as u64;
        let sent = if wait {
            tx.send(batch).is_ok()
        } else {
            match tx.try_send(batch) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            }
        };
        if !sent {
            self.dropped.fetch_add(lines, Ordering::Relaxed);
            crate::warn_limited!(
                &DROPPED_WARNING,
                "access log: the writer is behind (stdout slow); dropped {lines} lines"
            );
        }
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    crate::http::write::json_string(out, s);
}

fn opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Milliseconds with three decimals (microsecond resolution).
fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros() as u64;
    crate::http::write::write_u64(out, micros / 1000);
    let frac = micros % 1000;
    out.push(b'.');
    out.push(b'0' + (frac / 100) as u8);
    out.push(b'0' + (frac / 10 % 10) as u8);
    out.push(b'0' + (frac % 10) as u8);
}

/// One line; `second` is the entry's time to the second (`YYYY-MM-DDTHH:MM:SS`).
fn write_line(out: &mut Vec<u8>, e: &Entry<'_>, second: &[u8; 19], millis_part: u32) {
    use crate::http::write::write_u64;
    out.extend_from_slice(b"{\"ts\":\"");
    out.extend_from_slice(second);
    out.push(b'.');
    out.push(b'0' + (millis_part / 100 % 10) as u8);
    out.push(b'0' + (millis_part / 10 % 10) as u8);
    out.push(b'0' + (millis_part % 10) as u8);
    out.extend_from_slice(b"Z\",\"request_id\":");
    json_str(out, e.request_id);
    out.extend_from_slice(b",\"trace_id\":");
    opt_str(out, e.trace_id);
    let _ = write!(out, ",\"client_ip\":\"{}\"", e.client_ip);
    out.extend_from_slice(b",\"method\":");
    json_str(out, e.method);
    out.extend_from_slice(b",\"path\":");
    json_str(out, e.path);
    out.extend_from_slice(b",\"route\":");
    opt_str(out, e.route);
    out.extend_from_slice(b",\"status\":");
    write_u64(out, u64::from(e.status));
    out.extend_from_slice(b",\"upstream\":");
    opt_str(out, e.upstream);
    match e.upstream_addr {
        Some(a) => {
            let _ = write!(out, ",\"upstream_addr\":\"{a}\"");
        }
        None => out.extend_from_slice(b",\"upstream_addr\":null"),
    }
    out.extend_from_slice(b",\"duration_ms\":");
    millis(out, e.duration);
    out.extend_from_slice(b",\"upstream_ms\":");
    match e.upstream_time {
        Some(d) => millis(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"bytes_in\":");
    crate::http::write::write_u64(out, e.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    crate::http::write::write_u64(out, e.bytes_out);
    out.extend_from_slice(b",\"cache\":");
    opt_str(out, e.cache);
    out.extend_from_slice(b",\"worker\":");
    crate::http::write::write_u64(out, e.worker as u64);
    out.extend_from_slice(b"}\n");
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), without a date library: days to civil date after
/// Howard Hinnant's public-domain algorithm.
fn rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |secs: u64, ms: u64| {
            let mut out = Vec::new();
            rfc3339(
                &mut out,
                UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms),
            );
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_330_521, 451), "2026-11-22T06:55:21.451Z");
        assert_eq!(at(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let mut out = Vec::new();
        write_line(
            &mut out,
            &Entry {
                ts: UNIX_EPOCH,
                request_id: "r\"1",
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
                client_ip: "127.0.0.1".parse().unwrap(),
                method: "GET",
                path: "/a",
                route: Some("app"),
                status: 200,
                upstream: Some("u"),
                upstream_addr: Some("127.0.0.1:9001".parse().unwrap()),
                duration: Duration::from_micros(1500),
                upstream_time: None,
                bytes_in: 10,
                bytes_out: 20,
                cache: None,
                worker: 1,
            },
            b"1970-01-01T00:00:00",
            7,
        );
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for key in [
            "ts",
            "request_id",
            "trace_id",
            "client_ip",
            "method",
            "path",
            "route",
            "status",
            "upstream",
            "upstream_addr",
            "duration_ms",
            "upstream_ms",
            "bytes_in",
            "bytes_out",
            "cache",
            "worker",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["request_id"], "r\"1");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_addr"], "127.0.0.1:9001");
        assert!(v["upstream_ms"].is_null());
        assert_eq!(v["ts"], "1970-01-01T00:00:00.007Z");
    }

    #[test]
    fn full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, rx) = bounded::<Vec<u8>>(1);
        let local = Local {
            buf: RefCell::new(Vec::new()),
            second: std::cell::Cell::new((u64::MAX, [0; 19])),
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        for _ in 0..3 {
            local.buf.borrow_mut().extend_from_slice(b"{}\n{}\n");
            local.flush(false);
        }
        assert_eq!(rx.len(), 1);
        assert_eq!(local.dropped.load(Ordering::Relaxed), 4);
    }
}
