//! Listening sockets: created once per worker per address with SO_REUSEPORT, so the kernel
//! spreads connections over workers and a request never hops threads.
//!
//! Sockets are bound on the main thread before any worker starts (a port in use fails the
//! start with a clear error), then handed to their worker, whose accept loop runs until the
//! drain starts. Connections over `max_connections` are closed at once, counted in
//! `dispatch_connections_rejected_total` and warned about at most once a second.
//!
//! On a `server.tls.listen` address, a connection's task first runs the TLS handshake (rustls,
//! with the config generation's certificates, bounded by `handshake_timeout`), then the same
//! connection loop as plaintext over `Stream::TlsServer`. A failed handshake (refused,
//! malformed, plaintext HTTP, timed out, the client gone) closes that connection alone with no
//! HTTP answer, counts in `dispatch_tls_handshakes_total{result="failed"}` and is warned about
//! at most once a second. The connection counts as open (`max_connections`, the active gauge,
//! the drain) from accept, handshake included.

use std::rc::Rc;

use std::net::SocketAddr;

use monoio::net::{TcpListener, TcpStream};

use crate::io::tls::ServerTls;
use crate::io::Stream;
use crate::metrics::Side;
use crate::state::latch::Latch;
use crate::state::listeners::Listen;
use crate::state::worker::{LocalTask, Worker};

/// Rate limits of the accept loops' warnings, shared by every worker.
static REJECTED_WARNING: crate::logging::Limiter = crate::logging::Limiter::new();
static ACCEPT_WARNING: crate::logging::Limiter = crate::logging::Limiter::new();
static HANDSHAKE_WARNING: crate::logging::Limiter = crate::logging::Limiter::new();

/// Accepts connections until the worker drains or `stop` fires (the address was removed by a
/// reload); each connection becomes its own task and outlives the loop.
pub fn accept_loop(
    worker: Rc<Worker>,
    listen: Listen,
    listener: TcpListener,
    stop: Rc<Latch>,
) -> LocalTask {
    Box::pin(accept(worker, listen, listener, stop))
}

async fn accept(worker: Rc<Worker>, listen: Listen, listener: TcpListener, stop: Rc<Latch>) {
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
                    let stream = if listen.tls {
                        handshake(&w, stream, peer).await
                    } else {
                        Some(Stream::accepted(stream))
                    };
                    if let Some(stream) = stream {
                        crate::server::conn::serve(w.clone(), stream, peer).await;
                    }
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

/// The server side of the TLS handshake on an accepted connection, with the TLS settings of
/// the config running now. `None`: it failed, was counted and logged, and the connection is
/// closed (dropped) with no HTTP answer.
async fn handshake(worker: &Rc<Worker>, tcp: TcpStream, peer: SocketAddr) -> Option<Stream> {
    let _ = tcp.set_nodelay(true);
    let snap = worker.snapshot();
    let Some(tls) = snap.active.config.server.tls.as_ref() else {
        // A reload hands a new TLS address to the workers just before it publishes the config
        // that has it: a connection accepted in between has no certificate to be served with.
        snap.metrics.tls_handshake(false);
        crate::warn_limited!(
            &HANDSHAKE_WARNING,
            "TLS handshake with {peer} not attempted: the running config has no [server.tls] yet"
        );
        return None;
    };
    let (config, timeout) = (tls.rustls.clone(), tls.handshake_timeout);
    let metrics = snap.metrics.clone();
    drop(snap);
    let result = monoio::select! {
        r = crate::io::timeout::timeout(timeout, ServerTls::accept(tcp, config)) => r,
        // A drain does not wait for a handshake: the client has sent no request yet.
        _ = worker.drain.wait() => {
            metrics.tls_handshake(false);
            return None;
        }
    };
    match result {
        Ok(Ok(tls)) => {
            metrics.tls_handshake(true);
            Some(Stream::TlsServer(Box::new(tls)))
        }
        Ok(Err(e)) => {
            metrics.tls_handshake(false);
            crate::warn_limited!(&HANDSHAKE_WARNING, "TLS handshake with {peer} failed: {e}");
            None
        }
        Err(_) => {
            metrics.tls_handshake(false);
            crate::warn_limited!(
                &HANDSHAKE_WARNING,
                "TLS handshake with {peer} failed: not done within {timeout:?} (server.tls.handshake_timeout)"
            );
            None
        }
    }
}
