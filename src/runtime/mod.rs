//! Process start-up and the thread-per-core runtime.
//!
//! [`start`] binds every listener once per worker (SO_REUSEPORT, [`crate::state::listeners::bind`]),
//! publishes the compiled config in [`Shared`], starts the pinned workers (each runs
//! the accept loop it is handed on its sockets), the admin thread (through the spawner it is
//! handed) and signal handling; [`Running::wait`] blocks until every worker has drained.
//!
//! This layer imports nothing above it: the server and admin layers build on it, and the crate
//! root hands their entry points in ([`Entry`]).

pub mod control;
pub mod reload;
pub mod shutdown;
pub mod worker;

use std::sync::Arc;

use crate::config::model::{Config, Driver};
use crate::state::listeners;
use crate::state::shared::{Active, Shared};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// A listen address could not be bound (in use, no permission, not local).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("driver = \"io_uring\" but io_uring is not available on this kernel (use \"auto\" or \"epoll\")")]
    NoIoUring,
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Running {
    pub shared: Arc<Shared>,
    access_log: crate::access_log::Writer,
    spans: Option<crate::otlp::Exporter>,
    workers: Vec<std::thread::JoinHandle<()>>,
    pub listen: Vec<std::net::SocketAddr>,
    /// The bound `server.tls.listen` addresses (empty without `[server.tls]`).
    pub tls_listen: Vec<std::net::SocketAddr>,
    /// The admin API's address; `None` without an `[admin]` section.
    pub admin: Option<std::net::SocketAddr>,
}

impl Running {
    /// Blocks until all workers have drained and exited.
    pub fn wait(self) {
        for w in self.workers {
            let _ = w.join();
        }
        // Workers handed over their last access-log lines and spans as they exited.
        self.access_log.finish();
        if let Some(exporter) = self.spans {
            exporter.finish(SPAN_EXPORT_AT_EXIT);
        }
    }
}

/// Starts a named thread that runs `task` on a monoio runtime of its own (legacy driver, timer
/// on, `spawn_blocking` on threads of their own): for the admin API and the health checker,
/// which must never take time from a worker.
pub fn spawn_side_thread<F, Fut>(name: &str, task: F) -> std::io::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let what = name.to_string();
    std::thread::Builder::new()
        .name(format!("dispatch-{name}"))
        .spawn(move || {
            match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .attach_thread_pool(Box::new(ThreadPerTask))
                .build()
            {
                Ok(mut rt) => rt.block_on(task()),
                Err(e) => crate::error!("{what}: cannot start its event loop: {e}"),
            }
        })?;
    Ok(())
}

/// Where a side thread's `monoio::spawn_blocking` work runs: a thread of its own per task.
/// Such work is rare and operator-driven (an admin registration's DNS lookup, a reload), and a
/// lookup stuck in `getaddrinfo` must not hold up the next one, so there is no fixed pool to
/// queue behind. Callers bound how many they start (`admin::MAX_BLOCKING`).
struct ThreadPerTask;

impl monoio::blocking::ThreadPool for ThreadPerTask {
    fn schedule_task(&self, task: monoio::blocking::BlockingTask) {
        // A thread that cannot be started drops the task: its JoinHandle reports it canceled.
        if let Err(e) = std::thread::Builder::new()
            .name("dispatch-blocking".into())
            .spawn(move || task.run())
        {
            crate::error!("cannot start a thread for blocking work: {e}");
        }
    }
}

/// How long an exit waits for the last spans to reach the collector.
const SPAN_EXPORT_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

fn resolve_driver(d: Driver) -> Result<Driver, StartError> {
    let uring = monoio::utils::detect_uring();
    match d {
        Driver::IoUring if !uring => Err(StartError::NoIoUring),
        Driver::Auto if !uring => {
            crate::warn!("io_uring is not available: falling back to epoll");
            Ok(Driver::Epoll)
        }
        Driver::Auto => Ok(Driver::IoUring),
        d => Ok(d),
    }
}

/// The entry points of the layers above this one, handed in at start by the crate root
/// ([`crate::start`]): runtime runs the threads, the sockets and the shared state, and hands
/// each listening socket to the server layer and the admin socket to the admin API without
/// importing either (dependencies point one way: they build on runtime, not the reverse).
pub struct Entry {
    /// The server's accept loop, run by a worker on each of its listening sockets.
    pub accept: crate::state::worker::AcceptLoop,
    /// Starts the admin API on its own thread, serving the bound admin socket.
    pub admin: AdminSpawn,
}

/// Starts the admin API thread: the shared state, the `[admin]` settings, the bound socket.
pub type AdminSpawn =
    fn(Arc<Shared>, crate::config::model::Admin, std::net::TcpListener) -> std::io::Result<()>;

/// Starts the gateway on `config`.
pub fn start(config: Config, entry: Entry) -> Result<Running, StartError> {
    crate::logging::set_level(config.log.level);
    let signals = shutdown::register()?;
    let driver = resolve_driver(config.server.driver)?;
    let fallback = config.server.driver == Driver::Auto;
    let workers = config.server.workers;
    let mut per_worker: Vec<Vec<(listeners::Listen, std::net::TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let wanted = listeners::Listen::of(&config.server);
    let mut listen = Vec::with_capacity(config.server.listen.len());
    let mut tls_listen = Vec::new();
    for &configured in &wanted {
        // With port 0 the first socket gets a port from the kernel and the other workers
        // join it there.
        let mut addr = configured.addr;
        for sockets in per_worker.iter_mut() {
            let socket =
                listeners::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
            addr = socket.local_addr()?;
            sockets.push((configured, socket));
        }
        if configured.tls {
            tls_listen.push(addr);
        } else {
            listen.push(addr);
        }
    }
    let pin = config.server.pin_workers;
    // No `[admin]` section, no admin listener: two gateways on one host must not collide on
    // a default port, and an unconfigured box must not expose endpoint registration.
    let admin_listener = match &config.admin {
        None => None,
        Some(a) => {
            let socket =
                std::net::TcpListener::bind(a.listen).map_err(|source| StartError::Bind {
                    addr: a.listen,
                    source,
                })?;
            Some((a.clone(), socket))
        }
    };
    let admin = match &admin_listener {
        Some((_, socket)) => Some(socket.local_addr()?),
        None => None,
    };

    let discovery = crate::upstream::discovery::Discovery::new(config.clone());
    let (listeners, changes) = listeners::Listeners::new(wanted, workers);
    let active = Active::compile(config, None, 1, None)?;
    let shared = Shared::new(active, workers, discovery, listeners);
    let cores = if pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let access_log = crate::access_log::Writer::start(shared.access_log_dropped.clone())?;
    let spans = match &shared.active().config.tracing.otlp_endpoint {
        None => None,
        Some(url) => Some(
            crate::otlp::Exporter::start(
                url,
                env!("CARGO_PKG_VERSION"),
                shared.spans_dropped.clone(),
                Box::new(|line| crate::warn!("{line}")),
            )
            .map_err(|e| StartError::Io(std::io::Error::other(e)))?,
        ),
    };
    let mut handles = Vec::with_capacity(workers);
    for (id, (sockets, changes)) in per_worker.into_iter().zip(changes).enumerate() {
        let core = if cores.is_empty() {
            None
        } else {
            Some(cores[id % cores.len()])
        };
        handles.push(worker::spawn(
            id,
            shared.clone(),
            worker::Sockets {
                initial: sockets,
                changes,
                accept: entry.accept,
            },
            driver,
            fallback,
            core,
            crate::state::worker::Telemetry {
                access: access_log.local(),
                spans: spans.as_ref().map(|e| e.local()),
            },
        )?);
    }
    if let Some((settings, socket)) = admin_listener {
        (entry.admin)(shared.clone(), settings, socket)?;
    }
    control::spawn(shared.clone())?;
    let reload_shared = shared.clone();
    shutdown::watch(signals, shared.clone(), move || {
        if let Err(e) = reload::reload(&reload_shared) {
            crate::error!("reload failed, keeping the running config: {e}");
        }
    })?;
    crate::info!(
        "dispatch {} serving on {:?}{} with {workers} worker(s) ({}), {}",
        env!("CARGO_PKG_VERSION"),
        listen,
        if tls_listen.is_empty() {
            String::new()
        } else {
            format!(" and over TLS on {tls_listen:?}")
        },
        if driver == Driver::IoUring {
            "io_uring"
        } else {
            "epoll"
        },
        match admin {
            Some(addr) => format!("admin on {addr}"),
            None => "no admin listener (no [admin] section)".to_string(),
        },
    );
    Ok(Running {
        shared,
        access_log,
        spans,
        workers: handles,
        listen,
        tls_listen,
        admin,
    })
}
