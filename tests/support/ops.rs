//! Test support for tests/ops.rs (the admin listener, endpoint masks, drop and rejection
//! metrics, the process log): gateways without an `[admin]` section, `dispatch` with a chosen
//! environment, the listening sockets a process holds, and metric values out of a scrape.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, Stdio};

use super::gateway::{dispatch_bin, Gateway, TempDir};
use super::ports::free_addr;

/// Starts a gateway on `toml` with `server.listen` and `workers = 1` filled in and no
/// `[admin]` section added; waits for its client listener only.
pub fn start_without_admin(toml: &str) -> Gateway {
    let listen = free_addr();
    let config = format!("[server]\nlisten = [\"{listen}\"]\nworkers = 1\n\n{toml}");
    // `start_exact` waits for both addresses it is given: the client listener twice.
    Gateway::start_exact(&config, listen, listen)
}

/// `dispatch ARGS --config <toml written to a file>` with `env` set, to completion:
/// (exit code, stdout, stderr).
pub fn dispatch_with_env(
    cmd: &str,
    toml: &str,
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let dir = TempDir::new();
    let path = dir.write("dispatch.toml", toml);
    let mut command = Command::new(dispatch_bin());
    command
        .args([cmd, "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", dispatch_bin().display()));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every TCP socket in LISTEN state that process `pid` holds, from `/proc`: its descriptors'
/// socket inodes matched against `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn listening_addrs(pid: u32) -> HashSet<SocketAddr> {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(n.to_string());
            }
        }
    }
    let mut out = HashSet::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is column 1, st is column 3 (0A = LISTEN), inode is column 9.
            if cols.len() < 10 || cols[3] != "0A" || !inodes.contains(cols[9]) {
                continue;
            }
            out.insert(parse_proc_addr(cols[1], v6));
        }
    }
    out
}

/// `0100007F:1F90` (IPv4, each 32-bit word in host byte order) or its 32-hex-digit IPv6 form.
fn parse_proc_addr(text: &str, v6: bool) -> SocketAddr {
    let (ip, port) = text.split_once(':').expect("addr:port");
    let port = u16::from_str_radix(port, 16).expect("hex port");
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).expect("hex word"))
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if v6 {
        let b: [u8; 16] = bytes.try_into().expect("16 bytes");
        SocketAddr::new(Ipv6Addr::from(b).into(), port)
    } else {
        let b: [u8; 4] = bytes.try_into().expect("4 bytes");
        SocketAddr::new(Ipv4Addr::from(b).into(), port)
    }
}

/// The value of the sample `name` (with its labels exactly as written, e.g.
/// `dispatch_x_total` or `dispatch_y{upstream="a"}`) in a Prometheus text scrape.
pub fn metric(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
