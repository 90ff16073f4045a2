//! Waits on events the gateway makes observable, so that a test proves that something did
//! NOT happen (no retry, no smuggled request, no second probe) by ordering it against an
//! event instead of sleeping and hoping the forbidden thing would have shown up by then.
//!
//! The event used here is the request counter: `dispatch_requests_total` is bumped once per
//! request after the gateway is done with it (every upstream attempt made, the answer written
//! or the client gone; `server::conn`), and before the gateway reads the connection's next
//! request or closes it. So once a request is counted, no attempt of it can still reach an
//! upstream, and an upstream saw every attempt of it (an upstream logs a request before it
//! answers, and the gateway waits for the answer, a timeout or an error).

use super::client::get;
use super::gateway::Gateway;
use std::time::{Duration, Instant};

/// How long `wait_requests_done` waits for the counter to catch up with the client.
pub const DONE_TIMEOUT: Duration = Duration::from_secs(5);

/// The sum of every `dispatch_requests_total` sample: the requests the gateway has finished.
pub fn requests_done(gw: &Gateway) -> u64 {
    let r = get(gw.admin_addr(), "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {r:?}");
    metric_sum(&r.text(), "dispatch_requests_total") as u64
}

/// The sum of the Prometheus samples of metric `name` over all its label sets.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            // `name{labels} v` or `name v`, not `name_suffix ...`.
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            Some(
                value
                    .trim()
                    .parse::<f64>()
                    .expect("sample value is a number"),
            )
        })
        .sum()
}

/// Waits until the gateway has finished exactly `n` requests (see the module doc), and fails
/// if it finished more: after this returns, every attempt of those requests has reached the
/// upstream it went to, and no further attempt of them will. The counter is bumped just after
/// the answer is written, so a client that has read its answer may be a moment ahead of it.
pub fn wait_requests_done(gw: &Gateway, n: u64) {
    let end = Instant::now() + DONE_TIMEOUT;
    let mut done = requests_done(gw);
    while done < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
        done = requests_done(gw);
    }
    assert_eq!(
        done, n,
        "the gateway finished {done} requests, expected {n} (dispatch_requests_total)"
    );
}

/// A meeting point inside an upstream handler: `arrive` holds each request until `n` have
/// arrived, so that `n` requests are proven in flight at once (instead of delaying each reply
/// and hoping they overlap). Bounded: after `within` a request goes on alone, and the test's
/// own check (e.g. the number of upstream connections) then fails.
pub struct Rendezvous {
    n: usize,
    within: Duration,
    arrived: std::sync::Mutex<usize>,
    all_here: std::sync::Condvar,
}

impl Rendezvous {
    pub fn new(n: usize, within: Duration) -> Rendezvous {
        Rendezvous {
            n,
            within,
            arrived: std::sync::Mutex::new(0),
            all_here: std::sync::Condvar::new(),
        }
    }

    /// Counts this request and waits until `n` have arrived (at most `within`); true if they
    /// all met.
    pub fn arrive(&self) -> bool {
        let mut arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, _) = self
            .all_here
            .wait_timeout_while(arrived, self.within, |a| *a < self.n)
            .unwrap_or_else(|e| e.into_inner());
        *arrived >= self.n
    }
}
