//! Free loopback ports for listeners the gateway binds itself (its `listen` and `admin.listen`).
//!
//! Upstream servers started by the tests bind `127.0.0.1:0` and keep their socket, so they never
//! race. A gateway port has to be chosen before the gateway starts, so there is a window between
//! "found free" and "bound by the gateway" in which three things could take it:
//! - another test of this process: a port is handed out once per process;
//! - another test process (test binaries run side by side, or nextest's process per test): a
//!   port is claimed by creating `$TMPDIR/dispatch-itest-ports/<port>` exclusively, holding the
//!   claimant's pid; a claim whose pid is gone is taken over. This matters doubly because the
//!   gateway binds with SO_REUSEPORT: two gateways on one port would both start, and silently
//!   share each other's connections;
//! - the kernel's ephemeral port allocator (every outgoing connection takes a local port from
//!   `ip_local_port_range`): ports are taken from below that range when it leaves room.

use std::collections::HashSet;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Lowest port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768)
}

fn claims_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("dispatch-itest-ports");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Claims `port` across processes; false if a live process holds it.
fn claim_across_processes(port: u16) -> bool {
    let path = claims_dir().join(port.to_string());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return true;
            }
            Err(_) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                let fresh = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() < 5);
                match holder {
                    Some(pid) if pid == std::process::id() || pid_alive(pid) => return false,
                    // A claim being written right now.
                    None if fresh => return false,
                    // A dead holder's claim.
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
    }
    false
}

/// Claims `port` for this process (in this process and across processes); false if it was
/// already claimed by this process or by another live one.
pub fn claim(port: u16) -> bool {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if set.contains(&port) || !claim_across_processes(port) {
        return false;
    }
    set.insert(port);
    true
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A TCP port on 127.0.0.1 that nothing listens on and that no live test process has claimed.
pub fn free_port() -> u16 {
    let low = ephemeral_low();
    if low > 12000 {
        let span = u32::from(low) - 10000;
        // Start processes at different places so that they rarely contend for claims.
        let start = std::process::id().wrapping_mul(7919) % span;
        for _ in 0..5000 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = (10000 + (start + n * 7) % span) as u16;
            if bindable(port) && claim(port) {
                return port;
            }
        }
    }
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if claim(port) {
            return port;
        }
    }
    panic!("no free port found on 127.0.0.1");
}

/// `127.0.0.1:<free_port()>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}
