//! Endpoint health for upstreams: passive outlier ejection, active health checks, and which
//! endpoints are in rotation.
//!
//! Key types: [`EndpointHealth`] (one per endpoint, in an `Arc` shared by every worker and the
//! control thread: atomics only), [`HealthEpoch`] (one per upstream, bumped by every write that
//! changes an endpoint's availability), [`Rotation`] (one per worker per upstream: the cached
//! out-of-rotation mask the balancer reads), and for active checks [`CheckState`] (pure
//! threshold state machine), [`probe`] (one HTTP probe, over the same upstream connection type
//! and response codec as the proxy) and [`Checker`] (scheduling, run on ONE control thread).
//!
//! The one thing to know: the request hot path only loads shared memory. A success loads the
//! failure streak and writes nothing unless it was non-zero, and [`Rotation::out_mask`] is one
//! Acquire load of the epoch plus two compares; it recomputes only when the epoch moved or the
//! earliest ejection expiry passed (expiry is a point in time, not a write, so nothing bumps the
//! epoch for it). Shared writes happen only on failures, ejections and verdict flips; in-flight
//! counts go to per-worker padded slots.
//!
//! Decisions:
//! - Time is a parameter: `now_ms` is milliseconds from a monotonic origin the caller owns.
//! - Failures recorded while ejected are ignored entirely: they neither extend the ejection nor
//!   carry into the streak after it (they are mostly requests admitted before the ejection).
//! - The ejection word packs the count of prior ejections (8 bits) with the end time (56 bits of
//!   ms), so one compare-exchange both elects the single ejector and advances the multiplier.
//! - An ejection that would last 0 ms (`base_ejection` or `max_ejection` zero) disables ejection.
//! - Panic mode: when every endpoint is out, none is ([`Rotation::panic`] says so).
//! - [`Checker::tick`] applies probe results on the first tick after they finish, so every
//!   verdict change happens inside `tick` with the caller's clock. Intervals run from probe start
//!   and a target never has two probes in flight. A result for a target removed in the meantime
//!   is dropped (entries carry an id: a freed `Arc`'s address can be reused).
//! - A new target's [`CheckState`] starts from the endpoint's current verdict; thresholds of 0
//!   act as 1.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::{Entry as MapEntry, HashMap};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http;

use super::balance::EndpointSet;
use super::client::{TlsConnect, UpConn};
use super::UpstreamError;

/// Largest response head a probe reads.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// Low bits of the ejection word: end of the current/last ejection in ms (0 = never ejected).
const UNTIL_MASK: u64 = (1 << 56) - 1;
const COUNT_SHIFT: u32 = 56;
/// Past 2^63 the multiplier saturates anyway; keeps the count inside its 8 bits.
const MAX_COUNT: u64 = 64;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Per-upstream change counter: workers recompute their [`Rotation`] only when it moved.
#[derive(Debug, Default)]
pub struct HealthEpoch(AtomicU64);

impl HealthEpoch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Called after the write it announces, so a reader that sees the new epoch sees the write.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Passive outlier ejection settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive failures that eject the endpoint; 0 disables ejection.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// One worker's in-flight count, alone on its cache line so workers never share a line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(AtomicI64);

/// Health of one endpoint, shared by every worker and the control thread.
#[derive(Debug)]
pub struct EndpointHealth {
    epoch: Arc<HealthEpoch>,
    active: AtomicBool,
    /// Consecutive failures across all workers since the last success or ejection.
    streak: AtomicU32,
    /// `prior ejections << 56 | ejected until ms`.
    ejection: AtomicU64,
    inflight: Box<[Slot]>,
}

impl EndpointHealth {
    /// A healthy endpoint with its own epoch (for an upstream of one, or tests).
    pub fn new(workers: usize) -> Self {
        Self::new_in(Arc::new(HealthEpoch::new()), workers)
    }

    /// A healthy endpoint that bumps its upstream's `epoch` when its availability changes.
    pub fn new_in(epoch: Arc<HealthEpoch>, workers: usize) -> Self {
        Self {
            epoch,
            active: AtomicBool::new(true),
            streak: AtomicU32::new(0),
            ejection: AtomicU64::new(0),
            inflight: (0..workers).map(|_| Slot::default()).collect(),
        }
    }

    pub fn epoch(&self) -> &Arc<HealthEpoch> {
        &self.epoch
    }

    /// Sets the active-check verdict; true when it changed (and the epoch was bumped).
    pub fn set_active(&self, healthy: bool) -> bool {
        let changed = self.active.swap(healthy, Ordering::AcqRel) != healthy;
        if changed {
            self.epoch.bump();
        }
        changed
    }

    pub fn active_healthy(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Records one upstream attempt. Returns the ejection length when this call ejected.
    pub fn record(&self, failed: bool, cfg: &OutlierConfig, now_ms: u64) -> Option<Duration> {
        if !failed {
            self.reset_streak();
            return None;
        }
        if cfg.consecutive_failures == 0 {
            return None;
        }
        let word = self.ejection.load(Ordering::Acquire);
        let until = word & UNTIL_MASK;
        if now_ms < until {
            return None;
        }
        let streak = self
            .streak
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if streak < cfg.consecutive_failures {
            return None;
        }
        let max = ms(cfg.max_ejection);
        let quiet = until != 0 && now_ms >= until.saturating_add(max);
        let prior = if quiet { 0 } else { word >> COUNT_SHIFT };
        let len = ejection_ms(ms(cfg.base_ejection), max, prior);
        if len == 0 {
            return None;
        }
        let new_until = now_ms.saturating_add(len).min(UNTIL_MASK);
        let new_word = ((prior + 1).min(MAX_COUNT) << COUNT_SHIFT) | new_until;
        // Every racer that reached the threshold read the same old word; only one swaps it.
        self.ejection
            .compare_exchange(word, new_word, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        self.streak.store(0, Ordering::Relaxed);
        self.epoch.bump();
        Some(Duration::from_millis(len))
    }

    /// Clears the failure streak; true when it wrote. The load comes first because this runs
    /// on every successful request: an unconditional store would bounce the line between cores.
    fn reset_streak(&self) -> bool {
        if self.streak.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.streak.store(0, Ordering::Relaxed);
        true
    }

    pub fn ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until_ms()
    }

    /// End of the current or last ejection in ms; 0 when never ejected.
    pub fn ejected_until_ms(&self) -> u64 {
        self.ejection.load(Ordering::Acquire) & UNTIL_MASK
    }

    pub fn available(&self, now_ms: u64) -> bool {
        self.active_healthy() && !self.ejected(now_ms)
    }

    /// Adds `delta` to `worker`'s in-flight slot; an out-of-range worker is ignored. Only that
    /// worker writes its slot, so a load + store is enough (no locked RMW).
    pub fn inflight_add(&self, worker: usize, delta: i32) {
        if let Some(slot) = self.inflight.get(worker) {
            let v = slot.0.load(Ordering::Relaxed);
            slot.0
                .store(v.wrapping_add(i64::from(delta)), Ordering::Relaxed);
        }
    }

    /// Requests in flight on this endpoint across all workers (a racy snapshot, for admin).
    pub fn inflight(&self) -> u64 {
        let sum = self
            .inflight
            .iter()
            .fold(0i64, |acc, s| acc.wrapping_add(s.0.load(Ordering::Relaxed)));
        u64::try_from(sum).unwrap_or(0)
    }
}

/// `base * 2^prior` capped at `max`, in ms.
fn ejection_ms(base: u64, max: u64, prior: u64) -> u64 {
    if base == 0 {
        return 0;
    }
    let factor = u32::try_from(prior)
        .ok()
        .and_then(|p| 1u64.checked_shl(p))
        .unwrap_or(u64::MAX);
    base.saturating_mul(factor).min(max)
}

/// True when no endpoint is available (the admin "degraded" signal); false for none at all.
pub fn all_out(endpoints: &[Arc<EndpointHealth>], now_ms: u64) -> bool {
    !endpoints.is_empty() && endpoints.iter().all(|e| !e.available(now_ms))
}

/// A worker's cached view of which endpoints of one upstream are out of rotation.
pub struct Rotation {
    endpoints: Vec<Arc<EndpointHealth>>,
    epoch: Arc<HealthEpoch>,
    seen: u64,
    next_expiry: u64,
    mask: EndpointSet,
    panic: bool,
}

impl Rotation {
    /// `endpoints` must have been built with [`EndpointHealth::new_in`] on this `epoch`, or
    /// their changes go unnoticed until an expiry forces a recompute.
    pub fn new(endpoints: Vec<Arc<EndpointHealth>>, epoch: Arc<HealthEpoch>) -> Self {
        Self {
            endpoints,
            epoch,
            seen: 0,
            // Forces the first call to compute.
            next_expiry: 0,
            mask: EndpointSet::default(),
            panic: false,
        }
    }

    /// The endpoints out of rotation (index `i` = endpoint `i`); empty in panic mode.
    #[inline]
    pub fn out_mask(&mut self, now_ms: u64) -> &EndpointSet {
        let epoch = self.epoch.get();
        if epoch != self.seen || now_ms >= self.next_expiry {
            self.recompute(epoch, now_ms);
        }
        &self.mask
    }

    /// Whether the last computation found every endpoint out.
    pub fn panic(&self) -> bool {
        self.panic
    }

    pub fn endpoints(&self) -> &[Arc<EndpointHealth>] {
        &self.endpoints
    }

    #[cold]
    fn recompute(&mut self, epoch: u64, now_ms: u64) {
        let mut mask = EndpointSet::default();
        let mut out = 0usize;
        let mut next = u64::MAX;
        for (i, ep) in self.endpoints.iter().enumerate() {
            let until = ep.ejected_until_ms();
            let ejected = now_ms < until;
            if ejected {
                next = next.min(until);
            }
            if ejected || !ep.active_healthy() {
                mask.add(i);
                out += 1;
            }
        }
        self.panic = out > 0 && out == self.endpoints.len();
        self.mask = if self.panic {
            EndpointSet::default()
        } else {
            mask
        };
        self.seen = epoch;
        self.next_expiry = next;
    }
}

/// Active health check settings for one upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Active-check verdict of one endpoint plus its streak of results disagreeing with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckState {
    unhealthy: bool,
    streak: u32,
}

impl CheckState {
    pub fn new(healthy: bool) -> Self {
        Self {
            unhealthy: !healthy,
            streak: 0,
        }
    }

    pub fn healthy(&self) -> bool {
        !self.unhealthy
    }

    /// Feeds one probe result; `Some(new verdict)` when it flipped.
    pub fn on_result(&mut self, passed: bool, cfg: &HealthCheckConfig) -> Option<bool> {
        if passed == self.healthy() {
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let need = if passed {
            cfg.healthy_threshold
        } else {
            cfg.unhealthy_threshold
        };
        if self.streak < need.max(1) {
            return None;
        }
        *self = Self::new(passed);
        Some(passed)
    }
}

/// Why a probe did not produce a status code.
#[derive(Debug)]
pub enum ProbeError {
    /// Host or path would not make a valid request line (empty, whitespace, control bytes).
    Invalid,
    Connect(io::Error),
    Timeout,
    BadResponse(String),
    /// EOF (`None`) or a socket error before the response head was complete.
    Closed(Option<io::Error>),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Invalid => f.write_str("invalid health check host or path"),
            ProbeError::Connect(e) => write!(f, "connect failed: {e}"),
            ProbeError::Timeout => f.write_str("timed out"),
            ProbeError::BadResponse(why) => write!(f, "bad response: {why}"),
            ProbeError::Closed(None) => f.write_str("closed before the response head"),
            ProbeError::Closed(Some(e)) => write!(f, "connection lost: {e}"),
        }
    }
}

impl std::error::Error for ProbeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProbeError::Connect(e) | ProbeError::Closed(Some(e)) => Some(e),
            _ => None,
        }
    }
}

/// A probe passes on 2xx or 3xx.
pub fn passes(status: u16) -> bool {
    (200..400).contains(&status)
}

/// Sends `GET path` to `addr` (over TLS when `tls` is given: an `https://` endpoint) and
/// returns the final response's status; the whole exchange (connect and TLS handshake, write,
/// reading the head) is bounded by `timeout`. A certificate that fails verification fails
/// the connect, so the check: the proxy could not use that endpoint either.
///
/// The probe speaks through the same stream layer and codec as the proxy: an
/// [`super::client::UpConn`] and [`http::parse_response`] under [`PROBE_HEAD_LIMITS`].
/// Interim 1xx responses other than 101 are skipped (RFC 9110 §15.2: a client must accept
/// them before the final response, e.g. 103 Early Hints); a 101 is final, and fails the check.
pub async fn probe(
    addr: SocketAddr,
    tls: Option<TlsConnect>,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<u16, ProbeError> {
    let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !visible(host) || !visible(path) || !path.starts_with('/') {
        return Err(ProbeError::Invalid);
    }
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dispatch-health-check\r\n\
         Connection: close\r\n\r\n"
    );
    exchange(addr, tls, req.into_bytes(), Instant::now() + timeout).await
}

/// Response heads a probe reads: 16 KiB in all (status line and header block), so a
/// misbehaving endpoint cannot make the control thread buffer more.
pub const PROBE_HEAD_LIMITS: http::HeadLimits = http::HeadLimits {
    max_request_line: 1024,
    max_header_bytes: MAX_HEAD - 1024,
    max_headers: MAX_HEADERS,
};

/// Connects, writes `req` and reads response heads until the final one, each step bounded by
/// what is left until `deadline`.
async fn exchange(
    addr: SocketAddr,
    tls: Option<TlsConnect>,
    req: Vec<u8>,
    deadline: Instant,
) -> Result<u16, ProbeError> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut up = UpConn::connect(addr, tls, left())
        .await
        .map_err(probe_error)?;
    let len = req.len();
    let (res, _) = up.write(req, 0, len, left()).await;
    res.map_err(probe_error)?;
    loop {
        // (status, head length) of a complete head.
        let head = match http::parse_response(up.data(), &PROBE_HEAD_LIMITS) {
            Ok(Some(head)) => Some((head.status, head.head_len)),
            Ok(None) => None,
            Err(e) => return Err(ProbeError::BadResponse(e.to_string())),
        };
        match head {
            // The final head may already be buffered behind the interim one.
            Some((status, len)) if (100..200).contains(&status) && status != 101 => {
                up.consume(len);
            }
            Some((status, _)) => return Ok(status),
            // The limits above fail an over-long head before the buffer outgrows them.
            None => {
                if up.fill(left(), MAX_HEAD).await.map_err(probe_error)? == 0 {
                    return Err(ProbeError::Closed(None));
                }
            }
        }
    }
}

/// What a failed step of the upstream connection means for a probe.
fn probe_error(e: UpstreamError) -> ProbeError {
    match e {
        UpstreamError::Connect { source, .. } => ProbeError::Connect(source),
        UpstreamError::ConnectTimeout { .. } | UpstreamError::ReadTimeout { .. } => {
            ProbeError::Timeout
        }
        UpstreamError::Reset { detail, .. } => ProbeError::Closed(Some(io::Error::other(detail))),
        // Not produced by connect, write or fill; kept total rather than assumed away.
        other => ProbeError::BadResponse(other.to_string()),
    }
}

/// One endpoint to check, as the control loop sees it this tick.
#[derive(Clone, Debug)]
pub struct Target {
    /// Identity of the endpoint (by pointer) and where verdicts go.
    pub key: Arc<EndpointHealth>,
    pub addr: SocketAddr,
    /// For an `https://` endpoint: the upstream's client config and the verified name.
    pub tls: Option<TlsConnect>,
    pub host: String,
    pub config: Arc<HealthCheckConfig>,
    /// For logs, e.g. `"users http://127.0.0.1:9001"`.
    pub label: String,
}

/// An active-check verdict change, for the caller to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub label: String,
    pub healthy: bool,
    pub detail: String,
}

struct Entry {
    id: u64,
    target: Target,
    state: CheckState,
    next_due: u64,
    in_flight: bool,
    seen: u64,
}

impl Entry {
    fn refresh(&mut self, t: &Target, tick: u64) {
        let cur = &mut self.target;
        cur.addr = t.addr;
        if !Arc::ptr_eq(&cur.config, &t.config) {
            cur.config = t.config.clone();
        }
        // Compare first: the same strings come every tick and cloning them would allocate.
        if cur.host != t.host {
            cur.host.clone_from(&t.host);
        }
        if cur.label != t.label {
            cur.label.clone_from(&t.label);
        }
        self.seen = tick;
    }

    fn apply(&mut self, result: Result<u16, ProbeError>) -> Option<Transition> {
        let cfg = &self.target.config;
        let passed = matches!(result, Ok(s) if passes(s));
        let healthy = self.state.on_result(passed, cfg)?;
        self.target.key.set_active(healthy);
        let last = match result {
            Ok(s) => format!("status {s}"),
            Err(e) => e.to_string(),
        };
        let (n, what) = if healthy {
            (cfg.healthy_threshold.max(1), "passed")
        } else {
            (cfg.unhealthy_threshold.max(1), "failed")
        };
        Some(Transition {
            label: self.target.label.clone(),
            healthy,
            detail: format!("{n} consecutive checks {what}, last: {last}"),
        })
    }
}

type Finished = (usize, u64, Result<u16, ProbeError>);

/// Schedules active probes and applies their results. Lives on one thread, inside a monoio
/// runtime with the timer enabled (it spawns probe tasks there).
#[derive(Default)]
pub struct Checker {
    /// Keyed by the `EndpointHealth` pointer; the entry's `Arc` keeps the address taken.
    entries: HashMap<usize, Entry>,
    finished: Rc<RefCell<Vec<Finished>>>,
    running: Rc<Cell<usize>>,
    next_id: u64,
    tick: u64,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies finished probes, forgets targets not in `targets`, and spawns a probe for each
    /// target whose interval elapsed (a new target at once) and that has none in flight.
    pub fn tick(&mut self, targets: &[Target], now_ms: u64) -> Vec<Transition> {
        self.tick = self.tick.wrapping_add(1);
        for t in targets {
            match self.entries.entry(Arc::as_ptr(&t.key) as usize) {
                MapEntry::Occupied(e) => e.into_mut().refresh(t, self.tick),
                MapEntry::Vacant(v) => {
                    self.next_id += 1;
                    v.insert(Entry {
                        id: self.next_id,
                        target: t.clone(),
                        state: CheckState::new(t.key.active_healthy()),
                        next_due: now_ms,
                        in_flight: false,
                        seen: self.tick,
                    });
                }
            }
        }
        let tick = self.tick;
        self.entries.retain(|_, e| e.seen == tick);

        let mut transitions = Vec::new();
        let done = std::mem::take(&mut *self.finished.borrow_mut());
        for (key, id, result) in done {
            let Some(entry) = self.entries.get_mut(&key).filter(|e| e.id == id) else {
                continue;
            };
            entry.in_flight = false;
            transitions.extend(entry.apply(result));
        }

        for (&key, entry) in &mut self.entries {
            if entry.in_flight || now_ms < entry.next_due {
                continue;
            }
            let t = &entry.target;
            entry.in_flight = true;
            entry.next_due = now_ms.saturating_add(ms(t.config.interval));
            let (id, addr, tls, host) = (entry.id, t.addr, t.tls.clone(), t.host.clone());
            let (path, timeout) = (t.config.path.clone(), t.config.timeout);
            let finished = self.finished.clone();
            let running = self.running.clone();
            running.set(running.get() + 1);
            monoio::spawn(async move {
                let result = probe(addr, tls, &host, &path, timeout).await;
                finished.borrow_mut().push((key, id, result));
                running.set(running.get().saturating_sub(1));
            });
        }
        transitions
    }

    /// Probes spawned and not finished yet.
    pub fn in_flight(&self) -> usize {
        self.running.get()
    }

    /// Targets currently tracked.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balance::MAX_ENDPOINTS;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::AtomicU16;
    use std::sync::mpsc;

    const CFG: OutlierConfig = OutlierConfig {
        consecutive_failures: 5,
        base_ejection: Duration::from_secs(30),
        max_ejection: Duration::from_secs(300),
    };

    fn fail_n(h: &EndpointHealth, n: u32, now: u64) -> Option<Duration> {
        (0..n).filter_map(|_| h.record(true, &CFG, now)).last()
    }

    fn check_cfg(healthy: u32, unhealthy: u32) -> HealthCheckConfig {
        HealthCheckConfig {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
        }
    }

    #[test]
    fn state_machine_thresholds() {
        let cfg = check_cfg(2, 3);
        let mut s = CheckState::default();
        assert!(s.healthy());
        assert_eq!(s.on_result(false, &cfg), None);
        assert_eq!(s.on_result(false, &cfg), None);
        assert_eq!(s.on_result(true, &cfg), None, "a pass breaks the streak");
        assert_eq!(s.on_result(false, &cfg), None);
        assert_eq!(s.on_result(false, &cfg), None);
        assert_eq!(s.on_result(false, &cfg), Some(false));
        assert_eq!(s.on_result(false, &cfg), None, "already unhealthy");
        assert_eq!(s.on_result(true, &cfg), None);
        assert_eq!(s.on_result(false, &cfg), None);
        assert_eq!(s.on_result(true, &cfg), None);
        assert_eq!(s.on_result(true, &cfg), Some(true));
        let zero = check_cfg(0, 0);
        assert_eq!(s.on_result(false, &zero), Some(false), "0 acts as 1");
    }

    #[test]
    fn ejects_at_threshold_and_resets_streak() {
        let h = EndpointHealth::new(1);
        assert_eq!(fail_n(&h, 4, 1000), None);
        assert!(h.available(1000));
        assert_eq!(h.record(true, &CFG, 1000), Some(Duration::from_secs(30)));
        assert_eq!(h.epoch().get(), 1);
        assert_eq!(h.streak.load(Ordering::Relaxed), 0);
        assert!(h.ejected(30_999) && !h.available(30_999));
        assert!(!h.ejected(31_000) && h.available(31_000));
        assert_eq!(h.ejected_until_ms(), 31_000);
    }

    #[test]
    fn failures_while_ejected_are_ignored() {
        let h = EndpointHealth::new(1);
        fail_n(&h, 5, 0);
        assert_eq!(fail_n(&h, 100, 10_000), None);
        assert_eq!(h.ejected_until_ms(), 30_000);
        assert_eq!(h.streak.load(Ordering::Relaxed), 0);
        assert_eq!(h.epoch().get(), 1);
    }

    #[test]
    fn ejection_doubles_and_caps() {
        let h = EndpointHealth::new(1);
        let mut now = 0;
        for want in [30, 60, 120, 240, 300, 300] {
            assert_eq!(fail_n(&h, 5, now), Some(Duration::from_secs(want)));
            now = h.ejected_until_ms();
        }
        assert_eq!(ejection_ms(1, u64::MAX, 200), u64::MAX);
        assert_eq!(ejection_ms(0, 1000, 3), 0);
    }

    #[test]
    fn multiplier_resets_after_quiet_period() {
        let (a, b) = (EndpointHealth::new(1), EndpointHealth::new(1));
        for h in [&a, &b] {
            fail_n(h, 5, 0);
            fail_n(h, 5, 30_000);
            assert_eq!(h.ejected_until_ms(), 90_000);
        }
        assert_eq!(
            fail_n(&a, 5, 90_000 + 299_999),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            fail_n(&b, 5, 90_000 + 300_000),
            Some(Duration::from_secs(30))
        );
        assert_eq!(fail_n(&b, 5, 420_000), Some(Duration::from_secs(60)));
    }

    #[test]
    fn success_resets_streak_and_writes_only_when_needed() {
        let h = EndpointHealth::new(1);
        assert!(!h.reset_streak(), "streak 0: no store");
        fail_n(&h, 4, 0);
        assert_eq!(h.record(false, &CFG, 0), None);
        assert_eq!(h.streak.load(Ordering::Relaxed), 0);
        assert_eq!(fail_n(&h, 4, 0), None, "streak started over");
        assert!(h.reset_streak());
        assert!(!h.reset_streak());
        assert_eq!(h.epoch().get(), 0);
    }

    #[test]
    fn zero_threshold_or_length_disables_ejection() {
        let h = EndpointHealth::new(1);
        let off = OutlierConfig {
            consecutive_failures: 0,
            ..CFG
        };
        let zero = OutlierConfig {
            base_ejection: Duration::ZERO,
            ..CFG
        };
        for _ in 0..50 {
            assert_eq!(h.record(true, &off, 0), None);
            assert_eq!(h.record(true, &zero, 0), None);
        }
        assert!(h.available(0));
    }

    #[test]
    fn exactly_one_ejector_under_races() {
        for _ in 0..200 {
            let h = EndpointHealth::new(4);
            let barrier = std::sync::Barrier::new(4);
            let ejections: usize = std::thread::scope(|s| {
                let workers: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            (0..20)
                                .filter(|_| h.record(true, &CFG, 5).is_some())
                                .count()
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap()).sum()
            });
            assert_eq!(ejections, 1);
            assert_eq!(h.epoch().get(), 1);
            assert_eq!(h.ejected_until_ms(), 30_005);
        }
    }

    #[test]
    fn active_verdict_bumps_epoch_on_change_only() {
        let h = EndpointHealth::new(1);
        assert!(h.active_healthy());
        assert!(h.set_active(false));
        assert!(!h.set_active(false));
        assert!(!h.available(0));
        assert_eq!(h.epoch().get(), 1);
        assert!(h.set_active(true));
        assert_eq!(h.epoch().get(), 2);
    }

    #[test]
    fn inflight_slots_sum_and_ignore_bad_worker() {
        let h = EndpointHealth::new(3);
        h.inflight_add(0, 2);
        h.inflight_add(2, 3);
        h.inflight_add(2, -1);
        h.inflight_add(7, 100);
        assert_eq!(h.inflight(), 4);
        h.inflight_add(1, -10);
        assert_eq!(h.inflight(), 0, "clamped, never wraps");
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    fn upstream(n: usize) -> (Arc<HealthEpoch>, Vec<Arc<EndpointHealth>>) {
        let epoch = Arc::new(HealthEpoch::new());
        let eps = (0..n)
            .map(|_| Arc::new(EndpointHealth::new_in(epoch.clone(), 1)))
            .collect();
        (epoch, eps)
    }

    #[test]
    fn rotation_recomputes_on_epoch_bump() {
        let (epoch, eps) = upstream(2);
        let mut rot = Rotation::new(eps.clone(), epoch.clone());
        assert_eq!(*rot.out_mask(0), set(&[]));
        // A write that skips the epoch is invisible: proof that the mask is cached.
        eps[1].active.store(false, Ordering::Release);
        assert_eq!(*rot.out_mask(1), set(&[]));
        epoch.bump();
        assert_eq!(*rot.out_mask(2), set(&[1]));
        assert!(eps[1].set_active(true));
        assert_eq!(*rot.out_mask(3), set(&[]));
        assert!(!rot.panic());
    }

    #[test]
    fn rotation_recomputes_on_expiry() {
        let (epoch, eps) = upstream(2);
        let mut rot = Rotation::new(eps.clone(), epoch);
        fail_n(&eps[0], 5, 1000);
        assert_eq!(*rot.out_mask(1000), set(&[0]));
        eps[1].active.store(false, Ordering::Release);
        assert_eq!(*rot.out_mask(30_999), set(&[0]), "cached until the expiry");
        assert_eq!(*rot.out_mask(31_000), set(&[1]));
    }

    #[test]
    fn rotation_panic_mode_and_wraparound() {
        let (epoch, eps) = upstream(2);
        let mut rot = Rotation::new(eps.clone(), epoch);
        eps[0].set_active(false);
        fail_n(&eps[1], 5, 0);
        assert!(all_out(&eps, 0));
        assert_eq!(*rot.out_mask(0), set(&[]));
        assert!(rot.panic());
        assert_eq!(*rot.out_mask(30_000), set(&[0]));
        assert!(!rot.panic() && !all_out(&eps, 30_000));
        assert!(!all_out(&[], 0));

        let (epoch, eps) = upstream(66);
        let mut rot = Rotation::new(eps.clone(), epoch);
        eps[65].set_active(false);
        assert_eq!(*rot.out_mask(0), set(&[65]));
    }

    /// An unhealthy endpoint 3 used to take endpoints 67, 131, ... out too (`1 << (i % 64)`).
    #[test]
    fn rotation_past_64_endpoints_used_to_alias() {
        let (epoch, eps) = upstream(MAX_ENDPOINTS);
        let mut rot = Rotation::new(eps.clone(), epoch);
        eps[3].set_active(false);
        eps[MAX_ENDPOINTS - 1].set_active(false);
        let out = *rot.out_mask(0);
        assert_eq!(out, set(&[3, MAX_ENDPOINTS - 1]));
        assert_eq!(out.count(), 2);
        assert!(!out.contains(67) && !out.contains(131) && !out.contains(1023 - 64));
    }

    fn set(bits: &[usize]) -> EndpointSet {
        let mut s = EndpointSet::default();
        for &b in bits {
            s.add(b);
        }
        s
    }

    /// Answers each connection with `respond()` after reading its request head, which goes to
    /// the returned channel.
    fn serve(
        respond: impl Fn() -> Vec<u8> + Send + 'static,
    ) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut req = Vec::new();
                let mut chunk = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(req);
                let _ = conn.write_all(&respond());
            }
        });
        (addr, rx)
    }

    fn status(code: u16) -> Vec<u8> {
        format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn probe_reads_status() {
        let (ok, reqs) = serve(|| status(200));
        let (down, _) = serve(|| status(503));
        block_on(async move {
            assert_eq!(
                probe(ok, None, "users.internal", "/healthz", SEC)
                    .await
                    .unwrap(),
                200
            );
            assert_eq!(probe(down, None, "h", "/", SEC).await.unwrap(), 503);
        });
        let req = String::from_utf8(reqs.recv().unwrap()).unwrap();
        assert_eq!(
            req,
            "GET /healthz HTTP/1.1\r\nHost: users.internal\r\nUser-Agent: dispatch-health-check\r\n\
             Connection: close\r\n\r\n"
        );
        assert!(passes(200) && passes(302) && !passes(503) && !passes(101));
    }

    /// The probe used to report an interim 1xx as the check's result: 103 Early Hints
    /// failed a healthy endpoint. Interim heads are skipped (the final head may arrive in the
    /// same read); a 101 is final, and fails.
    #[test]
    fn probe_skips_interim_responses() {
        let (hints, _) = serve(|| {
            let mut r = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n".to_vec();
            r.extend_from_slice(&status(204));
            r
        });
        let (upgrade, _) =
            serve(|| b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n".to_vec());
        block_on(async move {
            assert_eq!(probe(hints, None, "h", "/", SEC).await.unwrap(), 204);
            assert_eq!(probe(upgrade, None, "h", "/", SEC).await.unwrap(), 101);
        });
    }

    #[test]
    fn probe_errors() {
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_addr = silent.local_addr().unwrap();
        // Bound but not listening: connections are refused, and the port stays ours (a port
        // freed by a dropped listener can be taken by a test running beside this one).
        let refusing =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        refusing
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let closed = refusing.local_addr().unwrap().as_socket().unwrap();
        let (garbage, _) = serve(|| b"NOT HTTP AT ALL\r\n\r\n".to_vec());
        let (huge, _) = serve(|| {
            let mut r = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
            r.resize(20_000, b'a');
            r
        });
        let (hangup, _) = serve(Vec::new);
        block_on(async move {
            let short = Duration::from_millis(100);
            let started = std::time::Instant::now();
            let r = probe(silent_addr, None, "h", "/", short).await;
            assert!(matches!(r, Err(ProbeError::Timeout)), "{r:?}");
            assert!(
                started.elapsed() < 5 * SEC,
                "the probe outlived its timeout"
            );
            let r = probe(closed, None, "h", "/", SEC).await;
            assert!(matches!(r, Err(ProbeError::Connect(_))), "{r:?}");
            let r = probe(garbage, None, "h", "/", SEC).await;
            assert!(matches!(r, Err(ProbeError::BadResponse(_))), "{r:?}");
            let r = probe(huge, None, "h", "/", SEC).await;
            assert!(matches!(r, Err(ProbeError::BadResponse(_))), "{r:?}");
            let r = probe(hangup, None, "h", "/", SEC).await;
            assert!(matches!(r, Err(ProbeError::Closed(None))), "{r:?}");
            let r = probe(hangup, None, "h", "/x\r\nEvil: 1", SEC).await;
            assert!(matches!(r, Err(ProbeError::Invalid)), "{r:?}");
            assert_eq!(ProbeError::Timeout.to_string(), "timed out");
        });
        drop((silent, refusing));
    }

    /// Ticks at `now`, waits for the probes it spawned, and ticks again to apply them.
    async fn round(c: &mut Checker, targets: &[Target], now: u64) -> Vec<Transition> {
        let mut out = c.tick(targets, now);
        for _ in 0..1000 {
            if c.in_flight() == 0 {
                break;
            }
            monoio::time::sleep(Duration::from_millis(2)).await;
        }
        out.extend(c.tick(targets, now));
        out
    }

    #[test]
    fn checker_flips_verdict_both_ways() {
        let code = Arc::new(AtomicU16::new(503));
        let code2 = code.clone();
        let (addr, _) = serve(move || status(code2.load(Ordering::SeqCst)));
        let (epoch, eps) = upstream(1);
        let targets = vec![Target {
            key: eps[0].clone(),
            addr,
            tls: None,
            host: "users".into(),
            config: Arc::new(check_cfg(2, 2)),
            label: "users http://127.0.0.1".into(),
        }];
        block_on(async move {
            let mut c = Checker::new();
            assert_eq!(round(&mut c, &targets, 0).await, vec![], "first failure");
            assert!(c.tick(&targets, 999).is_empty());
            assert_eq!(c.in_flight(), 0, "not due before the interval");
            let t = round(&mut c, &targets, 1000).await;
            assert_eq!(t.len(), 1);
            assert!(!t[0].healthy && t[0].label == "users http://127.0.0.1");
            assert!(t[0].detail.contains("status 503"), "{}", t[0].detail);
            assert!(!eps[0].active_healthy());
            assert_eq!(epoch.get(), 1);

            code.store(200, Ordering::SeqCst);
            assert!(round(&mut c, &targets, 2000).await.is_empty());
            let t = round(&mut c, &targets, 3000).await;
            assert_eq!(t.len(), 1);
            assert!(t[0].healthy);
            assert!(eps[0].active_healthy());
            assert_eq!(c.tracked(), 1);
        });
    }

    #[test]
    fn checker_forgets_removed_targets_and_drops_their_results() {
        let (addr, _) = serve(|| status(500));
        let key = Arc::new(EndpointHealth::new(1));
        let targets = vec![Target {
            key: key.clone(),
            addr,
            tls: None,
            host: "h".into(),
            config: Arc::new(check_cfg(1, 1)),
            label: "x".into(),
        }];
        block_on(async move {
            let mut c = Checker::new();
            assert!(c.tick(&targets, 0).is_empty());
            assert_eq!(c.in_flight(), 1);
            assert!(round(&mut c, &[], 10).await.is_empty());
            assert_eq!(c.tracked(), 0);
            // Re-added: a new entry that must not inherit the old probe's failure.
            assert!(c.tick(&targets, 20).is_empty());
            assert!(key.active_healthy());
            let t = round(&mut c, &targets, 20).await;
            assert_eq!(t.len(), 1, "its own probe still counts");
            assert!(!key.active_healthy());
        });
    }
}
