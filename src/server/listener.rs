//! Listening sockets: created once per worker per address with SO_REUSEPORT, so the kernel
//! spreads connections over workers and a request never hops threads.
//!
//! Sockets are bound on the main thread before any worker starts (a port in use fails the
//! start with a clear error), then handed to their worker, whose accept loop runs until the
//! drain starts. Connections over `max_connections` are closed at once, counted in
//! `dispatch_connections_rejected_total` and warned about at most once a second.

use std::rc::Rc;

use monoio::net::TcpListener;

use crate::metrics::Side;
use crate::state::latch::Latch;
use crate::state::worker::{LocalTask, Worker};

/// Rate limits of the accept loops' warnings, shared by every worker.
static REJECTED_WARNING: crate::logging::Limiter = crate::logging::Limiter::new();
static ACCEPT_WARNING: crate::logging::Limiter = crate::logging::Limiter::new();

/// Accepts connections until the worker drains or `stop` fires (the address was removed by a
/// reload); each connection becomes its own task and outlives the loop.
pub fn accept_loop(worker: Rc<Worker>, listener: TcpListener, stop: Rc<Latch>) -> LocalTask {
    Box::pin(accept(worker, listener, stop))
}

async fn accept(worker: Rc<Worker>, listener: TcpListener, stop: Rc<Latch>) {
    loop {
        if worker.drain.is_fired() || stop.is_fired() {
            return;
        }
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = worker.drain.wait() => return,
            _ = stop.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let max = worker
                    .snapshot()
                    .active
                    .config
                    .server
                    .limits
                    .max_connections;
                if !worker.shared.try_open_connection(max) {
                    drop(stream);
                    worker
                        .shared
                        .connections_rejected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::warn_limited!(
                        &REJECTED_WARNING,
                        "connection from {peer} refused: {max} connections open (server.max_connections)"
                    );
                    continue;
                }
                worker.open.set(worker.open.get() + 1);
                // The gauge lives per worker, not per config generation: any snapshot's cells
                // balance it.
                let metrics = worker.snapshot().metrics.clone();
                metrics.connection_opened(Side::Client);
                let w = worker.clone();
                monoio::spawn(async move {
                    crate::server::conn::serve(w.clone(), stream, peer).await;
                    metrics.connection_closed(Side::Client);
                    w.open.set(w.open.get() - 1);
                    w.shared.close_connection();
                });
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off briefly instead of spinning.
                crate::warn_limited!(&ACCEPT_WARNING, "worker {}: accept failed: {e}", worker.id);
                monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
