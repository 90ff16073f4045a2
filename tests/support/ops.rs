//! Test support for tests/ops.rs (the admin listener, endpoint masks, drop and rejection
//! metrics, the process log): gateways without an `[admin]` section, `dispatch` with a chosen
//! environment, the listening sockets a process holds, a gateway whose stdout stalls, and waiting for stderr lines.

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

/// A `dispatch run` whose stdout is a pipe nobody reads (so the access-log writer blocks once
/// the pipe is full); stderr is captured. Killed on drop.
pub struct StalledStdout {
    child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    _stdout: std::process::ChildStdout,
    _dir: TempDir,
}

impl StalledStdout {
    /// Starts `toml` with `server.listen`, `workers = 1` and `[admin]` filled in (like
    /// `Gateway::start`) and waits until both listen.
    pub fn start(toml: &str) -> StalledStdout {
        let (addr, admin) = (free_addr(), free_addr());
        let config = super::gateway::complete_config(toml, addr, admin);
        let dir = TempDir::new();
        let path = dir.write("dispatch.toml", &config);
        let mut child = Command::new(dispatch_bin())
            .args(["run", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dispatch");
        let stdout = child.stdout.take().expect("stdout");
        let mut err_pipe = child.stderr.take().expect("stderr");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let end = std::time::Instant::now() + super::gateway::START_TIMEOUT;
        for a in [addr, admin] {
            while std::net::TcpStream::connect(a).is_err() {
                assert!(
                    std::time::Instant::now() < end,
                    "dispatch did not listen on {a}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        StalledStdout {
            child,
            stderr,
            addr,
            admin,
            _stdout: stdout,
            _dir: dir,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for StalledStdout {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 5 s) until `stderr()` has at least `min` lines containing `needle`; returns
/// how many it has then.
pub fn wait_stderr_lines(stderr: impl Fn() -> String, needle: &str, min: usize) -> usize {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n = stderr().lines().filter(|l| l.contains(needle)).count();
        if n >= min || std::time::Instant::now() > end {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
