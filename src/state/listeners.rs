//! The listening sockets of the running gateway, and their changes on reload.
//!
//! Owns [`Listeners`]: which configured addresses are open, and one channel per worker through
//! which that worker receives the sockets bound for it ([`Change::Add`]) or the order to stop
//! accepting on an address ([`Change::Remove`]). Binding happens on the thread that reloads,
//! all sockets of a reload before any is handed over, so a reload whose new address cannot be
//! bound fails whole and changes nothing. A worker applies changes on its housekeeping tick;
//! until then the kernel queues connections to a new address in the socket's backlog.
//!
//! An address is served in plaintext or over TLS ([`Listen`]): one that moves between
//! `server.listen` and `server.tls.listen` on reload is removed and added again (bound anew
//! beside the old sockets, SO_REUSEPORT), so its listener's kind never changes under it.
//!
//! The one thing to know: removing an address only stops accepting and closes the listening
//! sockets; connections accepted on it stay open and finish normally.

use socket2::{Domain, Socket, Type};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Mutex;

use crossbeam::channel::{unbounded, Receiver, Sender};

/// A configured listen address and how it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// As configured (port 0 stays 0).
    pub addr: SocketAddr,
    /// In `server.tls.listen`: connections are accepted with the TLS handshake.
    pub tls: bool,
}

impl Listen {
    /// Every address `server` serves: `listen` in plaintext, then `tls.listen`.
    pub fn of(server: &crate::config::model::Server) -> Vec<Listen> {
        let plain = server
            .listen
            .iter()
            .map(|&addr| Listen { addr, tls: false });
        let tls = server
            .tls
            .iter()
            .flat_map(|t| t.listen.iter().map(|&addr| Listen { addr, tls: true }));
        plain.chain(tls).collect()
    }
}

/// A listener change for one worker.
pub enum Change {
    /// Start accepting on this socket (configured address and kind, bound socket).
    Add(Listen, StdListener),
    /// Stop accepting on the sockets of this configured address and kind.
    Remove(Listen),
}

/// Why the listener set could not change.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

pub struct Listeners {
    /// Configured addresses that are open (as written: port 0 stays 0).
    open: Mutex<Vec<Listen>>,
    workers: Vec<Sender<Change>>,
}

impl Listeners {
    /// The set for `open` addresses; returns one receiver per worker.
    pub fn new(open: Vec<Listen>, workers: usize) -> (Listeners, Vec<Receiver<Change>>) {
        let (senders, receivers) = (0..workers).map(|_| unbounded()).unzip();
        (
            Listeners {
                open: Mutex::new(open),
                workers: senders,
            },
            receivers,
        )
    }

    /// Makes `wanted` the open set: binds every new address once per worker (all or nothing),
    /// then tells the workers. Returns (added, removed).
    pub fn apply(&self, wanted: &[Listen]) -> Result<(Vec<Listen>, Vec<Listen>), BindError> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let added: Vec<Listen> = wanted
            .iter()
            .filter(|a| !open.contains(a))
            .copied()
            .collect();
        let removed: Vec<Listen> = open
            .iter()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        let mut bound: Vec<(Listen, Vec<StdListener>)> = Vec::with_capacity(added.len());
        for &configured in &added {
            let mut addr = configured.addr;
            let mut sockets = Vec::with_capacity(self.workers.len());
            for _ in &self.workers {
                // Port 0: the first socket gets a port and the others join it there.
                let socket = bind(addr).map_err(|source| BindError {
                    addr: configured.addr,
                    source,
                })?;
                addr = socket.local_addr().map_err(|source| BindError {
                    addr: configured.addr,
                    source,
                })?;
                sockets.push(socket);
            }
            bound.push((configured, sockets));
        }
        for (configured, sockets) in bound {
            for (tx, socket) in self.workers.iter().zip(sockets) {
                // A worker that has exited drops its receiver; nothing to hand it then.
                let _ = tx.send(Change::Add(configured, socket));
            }
            crate::info!("now listening on {}", describe(configured));
        }
        for &addr in &removed {
            for tx in &self.workers {
                let _ = tx.send(Change::Remove(addr));
            }
            crate::info!(
                "no longer listening on {}; its open connections finish normally",
                describe(addr)
            );
        }
        *open = wanted.to_vec();
        Ok((added, removed))
    }
}

fn describe(l: Listen) -> String {
    if l.tls {
        format!("{} (TLS)", l.addr)
    } else {
        l.addr.to_string()
    }
}

/// Accept backlog; the kernel caps it at net.core.somaxconn.
const BACKLOG: i32 = 4096;

/// Binds one SO_REUSEPORT listening socket on `addr`.
pub fn bind(addr: SocketAddr) -> std::io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
