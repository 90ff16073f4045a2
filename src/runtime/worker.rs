//! One worker: a pinned thread running its own monoio runtime (io_uring, or epoll).
//!
//! Starts the thread and runs the worker's tasks: one accept loop per listener (the server's,
//! handed in), one task per connection, one housekeeping tick. The thread's view of the
//! gateway, [`Worker`], is plain state in `crate::state::worker`. Nothing here is shared with
//! other threads except through [`Shared`].

use std::net::TcpListener as StdListener;

use crossbeam::channel::Receiver;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::model::Driver;
use crate::state::latch::Latch;
use crate::state::listeners;
use crate::state::shared::Shared;
use crate::state::worker::{AcceptLoop, Telemetry, Worker};

/// How often a worker looks at the shared flags, sweeps its pools and flushes its counts.
const TICK: Duration = Duration::from_millis(200);

/// The sockets a worker accepts on: those bound at start, then what reloads hand over.
pub struct Sockets {
    /// (configured address, socket).
    pub initial: Vec<(listeners::Listen, StdListener)>,
    pub changes: Receiver<listeners::Change>,
    pub accept: AcceptLoop,
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
    fn listen(
        self: &Rc<Self>,
        addr: listeners::Listen,
        socket: StdListener,
    ) -> std::io::Result<()> {
        let listener = monoio::net::TcpListener::from_std(socket)?;
        let stop = Rc::new(Latch::default());
        self.accepting.borrow_mut().push((addr, stop.clone()));
        monoio::spawn((self.accept)(self.clone(), addr, listener, stop));
        Ok(())
    }

    /// Applies listener changes from a reload.
    fn apply_listener_changes(self: &Rc<Self>, changes: &Receiver<listeners::Change>) {
        while let Ok(change) = changes.try_recv() {
            match change {
                listeners::Change::Add(addr, socket) => {
                    if let Err(e) = self.listen(addr, socket) {
                        crate::error!("worker {}: cannot listen on {}: {e}", self.id, addr.addr);
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
        worker.sweep_cache(&snap.active);
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
                if !worker.drain_expired.is_fired() {
                    // Tunnels close themselves now (logged like any request); one more tick
                    // lets them end before the worker exits.
                    worker.drain_expired.fire();
                    continue;
                }
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
