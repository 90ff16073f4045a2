//! One worker: a pinned thread running its own monoio runtime (io_uring, or epoll).
//!
//! Owns [`Worker`] (this thread's view of the gateway: the config snapshot, upstream pools and
//! balancers, the drain latch, the random source) and the worker's tasks: one accept
//! loop per listener, one task per connection, one housekeeping tick. Nothing here is shared
//! with other threads except through [`Shared`].
//!
//! A request clones this worker's `Rc<Snapshot>` (no atomic) and finishes on it even if a
//! reload swaps in a newer one meanwhile.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, TcpListener as StdListener};

use crossbeam::channel::Receiver;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::model::Driver;
use crate::metrics::WorkerMetrics;
use crate::upstream::balance::next_rand;
use crate::upstream::WorkerUpstreams;

use super::listeners;
use super::shared::{Active, Shared};
use super::shutdown::Latch;

/// How often a worker looks at the shared flags, sweeps its pools and flushes its counts.
const TICK: Duration = Duration::from_millis(200);

/// The config generation a worker serves with, plus the worker-local state built from it.
pub struct Snapshot {
    pub active: Arc<Active>,
    pub upstreams: WorkerUpstreams,
    /// This worker's metric cells for this config's label values.
    pub metrics: Rc<WorkerMetrics>,
}

/// What a worker runs on each listening socket: the server layer's accept loop, handed in at
/// start (runtime runs threads and sockets and does not import the layers above it). It runs
/// until the worker drains or its latch fires (the address was removed by a reload).
pub type AcceptLoop = fn(Rc<Worker>, monoio::net::TcpListener, Rc<Latch>) -> LocalTask;

/// A task a worker spawns; boxed once per listener, not per connection.
pub type LocalTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// The sockets a worker accepts on: those bound at start, then what reloads hand over.
pub struct Sockets {
    /// (configured address, socket).
    pub initial: Vec<(SocketAddr, StdListener)>,
    pub changes: Receiver<listeners::Change>,
    pub accept: AcceptLoop,
}

/// Where a worker's access-log lines and spans go.
pub struct Telemetry {
    pub access: crate::access_log::Local,
    pub spans: Option<crate::otlp::Local>,
}

pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    snapshot: RefCell<Rc<Snapshot>>,
    pub drain: Latch,
    /// Connections open on this worker.
    pub open: Cell<usize>,
    rng: Cell<u64>,
    /// This worker's pending access-log lines (flushed by size and by the tick).
    pub access: crate::access_log::Local,
    /// This worker's pending spans, when `tracing.otlp_endpoint` exports them.
    pub spans: Option<RefCell<crate::otlp::Local>>,
    /// Accept loops by configured address, each with the latch that stops it.
    accepting: RefCell<Vec<(SocketAddr, Rc<Latch>)>>,
    accept: AcceptLoop,
}

impl Worker {
    fn new(id: usize, shared: Arc<Shared>, telemetry: Telemetry, accept: AcceptLoop) -> Worker {
        let Telemetry { access, spans } = telemetry;
        let active = shared.active();
        let seed = seed(id);
        let upstreams = WorkerUpstreams::build(&active.config, &active.upstreams, None, seed);
        let metrics = Rc::new(shared.metrics.add_worker(active.metrics_layout()));
        Worker {
            id,
            shared,
            snapshot: RefCell::new(Rc::new(Snapshot {
                active,
                upstreams,
                metrics,
            })),
            drain: Latch::default(),
            open: Cell::new(0),
            rng: Cell::new(seed),
            access,
            spans: spans.map(RefCell::new),
            accepting: RefCell::new(Vec::new()),
            accept,
        }
    }

    /// The snapshot for the next request, rebuilt first if a reload published a new config.
    pub fn snapshot(&self) -> Rc<Snapshot> {
        let current = self.snapshot.borrow().clone();
        if current.active.generation == self.shared.generation() {
            return current;
        }
        let active = self.shared.active();
        let upstreams = WorkerUpstreams::build(
            &active.config,
            &active.upstreams,
            Some(&current.upstreams),
            seed(self.id),
        );
        let metrics = Rc::new(current.metrics.reload(active.metrics_layout()));
        let next = Rc::new(Snapshot {
            active,
            upstreams,
            metrics,
        });
        *self.snapshot.borrow_mut() = next.clone();
        next
    }

    /// Hands every pending access-log line and span to their writer threads (at exit).
    fn flush_telemetry(&self) {
        self.access.flush(true);
        if let Some(spans) = &self.spans {
            spans.borrow_mut().flush();
        }
    }

    pub fn rand(&self) -> u64 {
        let mut s = self.rng.get();
        let r = next_rand(&mut s);
        self.rng.set(s);
        r
    }
}

fn seed(id: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ ((id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        ^ (std::process::id() as u64).rotate_left(32)
}

/// Starts worker `id` on its own thread; it serves `listeners` until shutdown has drained.
pub fn spawn(
    id: usize,
    shared: Arc<Shared>,
    sockets: Sockets,
    driver: Driver,
    fallback: bool,
    core: Option<core_affinity::CoreId>,
    telemetry: Telemetry,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("dispatch-w{id}"))
        .spawn(move || {
            if let Some(core) = core {
                if !core_affinity::set_for_current(core) {
                    crate::warn!("worker {id}: could not pin to core {}", core.id);
                }
            }
            let run = move || worker_main(id, shared, sockets, telemetry);
            let legacy = || {
                monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build()
            };
            let res = match driver {
                Driver::IoUring => match uring_runtime(id) {
                    Ok(mut rt) => {
                        rt.block_on(run());
                        Ok(())
                    }
                    // A ring can fail to set up even where io_uring exists (RLIMIT_MEMLOCK on
                    // older kernels): with driver = "auto" that is a fallback, not a failure.
                    Err(e) if fallback => {
                        crate::warn!("worker {id}: io_uring setup failed ({e}): using epoll");
                        legacy().map(|mut rt| rt.block_on(run()))
                    }
                    Err(e) => Err(e),
                },
                Driver::Epoll | Driver::Auto => legacy().map(|mut rt| rt.block_on(run())),
            };
            if let Err(e) = res {
                crate::error!("worker {id}: cannot start its event loop: {e}");
                std::process::exit(1);
            }
        })
}

/// io_uring set-up flags, best first. Completions for network I/O are delivered as task work;
/// by default the kernel interrupts the worker (an IPI) to run it, which costs about a fifth of
/// the CPU per proxied request on loopback (perf/RESULTS.md). A ring has exactly one submitter
/// here (the worker thread), so it can ask the kernel to run task work only when the worker
/// waits for completions (DEFER_TASKRUN, Linux 6.1), or at least not to interrupt it
/// (COOP_TASKRUN, 5.19). Older kernels refuse the flags: the next set is tried.
fn uring_setups() -> [io_uring::Builder; 3] {
    let mut defer = io_uring::IoUring::builder();
    defer
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun();
    let mut coop = io_uring::IoUring::builder();
    coop.setup_coop_taskrun().setup_taskrun_flag();
    [defer, coop, io_uring::IoUring::builder()]
}

fn uring_runtime(
    id: usize,
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    const NAMES: [&str; 3] = ["defer_taskrun", "coop_taskrun", "default"];
    let mut last = None;
    for (setup, name) in uring_setups().into_iter().zip(NAMES) {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .with_entries(4096)
            .uring_builder(setup)
            .build()
        {
            Ok(rt) => {
                if id == 0 {
                    crate::debug!("io_uring task-run mode: {name}");
                }
                return Ok(rt);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::Unsupported.into()))
}

async fn worker_main(id: usize, shared: Arc<Shared>, sockets: Sockets, telemetry: Telemetry) {
    let worker = Rc::new(Worker::new(id, shared, telemetry, sockets.accept));
    for (addr, l) in sockets.initial {
        if let Err(e) = worker.listen(addr, l) {
            crate::error!("worker {id}: cannot register listener: {e}");
            std::process::exit(1);
        }
    }
    housekeeping(worker, sockets.changes).await;
}

impl Worker {
    /// Starts an accept loop on `socket` (bound for configured address `addr`).
    fn listen(self: &Rc<Self>, addr: SocketAddr, socket: StdListener) -> std::io::Result<()> {
        let listener = monoio::net::TcpListener::from_std(socket)?;
        let stop = Rc::new(Latch::default());
        self.accepting.borrow_mut().push((addr, stop.clone()));
        monoio::spawn((self.accept)(self.clone(), listener, stop));
        Ok(())
    }

    /// Applies listener changes from a reload.
    fn apply_listener_changes(self: &Rc<Self>, changes: &Receiver<listeners::Change>) {
        while let Ok(change) = changes.try_recv() {
            match change {
                listeners::Change::Add(addr, socket) => {
                    if let Err(e) = self.listen(addr, socket) {
                        crate::error!("worker {}: cannot listen on {addr}: {e}", self.id);
                    }
                }
                listeners::Change::Remove(addr) => {
                    self.accepting.borrow_mut().retain(|(a, stop)| {
                        if *a == addr {
                            stop.fire();
                        }
                        *a != addr
                    })
                }
            }
        }
    }
}

/// The worker's tick: notices shutdown and reloads, sweeps idle pooled connections, flushes
/// batched counters. Returns when the worker has drained.
async fn housekeeping(worker: Rc<Worker>, changes: Receiver<listeners::Change>) {
    let mut drain_deadline: Option<Instant> = None;
    loop {
        monoio::time::sleep(TICK).await;
        let now = Instant::now();
        let snap = worker.snapshot();
        snap.upstreams.sweep(now);
        snap.upstreams.flush_budgets(worker.shared.now_sec());
        worker.access.flush(false);
        if !worker.shared.shutting_down() {
            worker.apply_listener_changes(&changes);
        }
        if let Some(spans) = &worker.spans {
            spans.borrow_mut().flush();
        }
        if worker.shared.shutting_down() {
            let deadline = *drain_deadline.get_or_insert_with(|| {
                worker.drain.fire();
                now + snap.active.config.server.drain_timeout
            });
            if worker.open.get() == 0 {
                worker.flush_telemetry();
                return;
            }
            if now >= deadline {
                crate::warn!(
                    "worker {}: drain timeout with {} connections open",
                    worker.id,
                    worker.open.get()
                );
                worker.flush_telemetry();
                return;
            }
        }
    }
}
