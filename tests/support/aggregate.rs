//! Helpers for the aggregation tests: upstreams that record when each request arrived and how
//! many were in flight at once, and `dispatch explain`.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::gateway::{dispatch_bin, TempDir};
use super::upstream::{Reply, Request, Upstream};

/// When each request arrived (target, instant), in arrival order.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<Vec<(String, Instant)>>>);

impl Arrivals {
    pub fn record(&self, req: &Request) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((req.target.clone(), Instant::now()));
    }

    /// When the first request whose target starts with `prefix` arrived.
    pub fn at(&self, prefix: &str) -> Instant {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .find(|(t, _)| t.starts_with(prefix))
            .map(|(_, at)| *at)
            .unwrap_or_else(|| panic!("no request for {prefix}: {:?}", *list))
    }

    /// When each request arrived, in arrival order.
    pub fn instants(&self) -> Vec<Instant> {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().map(|(_, at)| *at).collect()
    }

    pub fn targets(&self) -> Vec<String> {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().map(|(t, _)| t.clone()).collect()
    }
}

/// An upstream answering with `handler`, recording arrivals in `arrivals`.
pub fn recording<F>(arrivals: &Arrivals, handler: F) -> Upstream
where
    F: Fn(&Request) -> Reply + Send + Sync + 'static,
{
    let arrivals = arrivals.clone();
    Upstream::start(move |req| {
        arrivals.record(req);
        handler(req)
    })
}

/// Counts requests in flight in an upstream's handler, and the most at once.
#[derive(Clone, Default)]
pub struct InFlight {
    now: Arc<AtomicUsize>,
    pub max: Arc<AtomicUsize>,
}

impl InFlight {
    /// Runs `f` counted as one request in flight.
    pub fn during<T>(&self, f: impl FnOnce() -> T) -> T {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        let out = f();
        self.now.fetch_sub(1, Ordering::SeqCst);
        out
    }

    pub fn most(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// `dispatch explain --config <file> <aggregate>` on `toml`: exit code, stdout, stderr.
pub fn explain(toml: &str, aggregate: &str) -> (i32, String, String) {
    let dir = TempDir::new();
    let path = dir.write("dispatch.toml", toml);
    explain_file(&path, aggregate)
}

fn explain_file(path: &Path, aggregate: &str) -> (i32, String, String) {
    let out = Command::new(dispatch_bin())
        .arg("explain")
        .arg("--config")
        .arg(path)
        .arg(aggregate)
        .output()
        .expect("run dispatch explain");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
