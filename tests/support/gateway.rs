//! Runs the real `dispatch` binary.
//!
//! `Gateway::start(toml)` writes the config to a fresh temp dir, fills in the listeners (each
//! gateway gets its own free ports for `server.listen` and `admin.listen`, and `workers = 1`
//! unless the config names `workers`), spawns `dispatch run --config <file>` with stdout and
//! stderr captured, and waits (at most 10 s) until both ports accept. The process is killed on
//! drop; when a test fails, its output is printed to help.
//!
//! The binary is `$DISPATCH_BIN` when set, else Cargo's `CARGO_BIN_EXE_dispatch`.

use super::ports::free_addr;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a gateway may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of the gateway binary under test.
pub fn dispatch_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DISPATCH_BIN") {
        return PathBuf::from(p);
    }
    match option_env!("CARGO_BIN_EXE_dispatch") {
        Some(p) => PathBuf::from(p),
        None => {
            panic!("set DISPATCH_BIN to the dispatch binary (CARGO_BIN_EXE_dispatch is not set)")
        }
    }
}

/// A temporary directory, removed on drop.
pub struct TempDir(PathBuf);

static DIR_SEQ: AtomicUsize = AtomicUsize::new(0);

impl TempDir {
    pub fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "dispatch-itest-{}-{}-{nanos}",
            std::process::id(),
            DIR_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` inside the dir (creating parent dirs); returns the path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&p, contents).expect("write file");
        p
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Inserts `line` right after the table header `[table]`, or appends the table at the end.
fn inject(toml: &str, table: &str, line: &str) -> String {
    let header = format!("[{table}]");
    let mut out = String::new();
    let mut done = false;
    for l in toml.lines() {
        out.push_str(l);
        out.push('\n');
        if !done && l.trim() == header {
            out.push_str(line);
            out.push('\n');
            done = true;
        }
    }
    if !done {
        out.push_str(&format!("\n{header}\n{line}\n"));
    }
    out
}

/// The config `Gateway::start` writes: `toml` plus `server.listen`, `admin.listen` and (unless
/// `toml` sets it) `workers = 1`.
pub fn complete_config(toml: &str, listen: SocketAddr, admin: SocketAddr) -> String {
    let sets_workers = toml
        .lines()
        .any(|l| l.trim_start().starts_with("workers") && l.contains('='));
    let mut server = format!("listen = [\"{listen}\"]");
    if !sets_workers {
        server.push_str("\nworkers = 1");
    }
    // Appending a missing `[server]` after `[server.limits]` is valid TOML.
    let with_server = inject(toml, "server", &server);
    inject(&with_server, "admin", &format!("listen = \"{admin}\""))
}

type Captured = Arc<Mutex<Vec<u8>>>;

/// A pipe being read into a buffer by its own thread.
struct Capture {
    buf: Captured,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    /// Waits (at most `timeout`) until the pipe hit EOF, i.e. everything the process wrote
    /// before exiting is in the buffer.
    fn drain(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while self.reader.as_ref().is_some_and(|h| !h.is_finished()) && Instant::now() < end {
            thread::sleep(Duration::from_millis(5));
        }
        if self.reader.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = self.reader.take() {
                let _ = h.join();
            }
        }
    }
}

fn capture(mut pipe: impl Read + Send + 'static) -> Capture {
    let buf: Captured = Arc::new(Mutex::new(Vec::new()));
    let b = Arc::clone(&buf);
    let reader = thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]),
            }
        }
    });
    Capture {
        buf,
        reader: Some(reader),
    }
}

fn text(buf: &Captured) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// A running `dispatch run`.
pub struct Gateway {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    config_path: PathBuf,
    stdout: Capture,
    stderr: Capture,
    exit: Option<ExitStatus>,
    _dir: TempDir,
}

impl Gateway {
    /// Starts a gateway on `toml` (see the module doc for what is filled in) and waits until
    /// it listens; panics with its output if it exits or does not listen in time.
    pub fn start(toml: &str) -> Gateway {
        let listen = free_addr();
        let admin = free_addr();
        Gateway::start_exact(&complete_config(toml, listen, admin), listen, admin)
    }

    /// Starts a gateway on `config` written verbatim; `listen` and `admin` must be the
    /// addresses it names (the ones waited for).
    pub fn start_exact(config: &str, listen: SocketAddr, admin: SocketAddr) -> Gateway {
        let mut gw = Gateway::spawn_exact(config, listen, admin);
        gw.wait_listening(config);
        gw
    }

    /// Like `start`, but returns right after spawning, without waiting for the listeners.
    pub fn spawn(toml: &str) -> Gateway {
        let listen = free_addr();
        let admin = free_addr();
        Gateway::spawn_exact(&complete_config(toml, listen, admin), listen, admin)
    }

    fn spawn_exact(config: &str, listen: SocketAddr, admin: SocketAddr) -> Gateway {
        let dir = TempDir::new();
        let config_path = dir.write("dispatch.toml", config);
        let mut child = Command::new(dispatch_bin())
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .env_remove("DISPATCH_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", dispatch_bin().display()));
        let stdout = capture(child.stdout.take().expect("stdout"));
        let stderr = capture(child.stderr.take().expect("stderr"));
        Gateway {
            child,
            addr: listen,
            admin,
            config_path,
            stdout,
            stderr,
            exit: None,
            _dir: dir,
        }
    }

    fn wait_listening(&mut self, config: &str) {
        let end = Instant::now() + START_TIMEOUT;
        let mut pending = vec![self.addr, self.admin];
        while !pending.is_empty() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                self.stdout.drain(Duration::from_secs(2));
                self.stderr.drain(Duration::from_secs(2));
                panic!(
                    "dispatch exited ({status}) before listening.\nconfig:\n{config}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            pending.retain(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_err());
            if pending.is_empty() {
                break;
            }
            if Instant::now() > end {
                panic!(
                    "dispatch did not listen on {pending:?} within {START_TIMEOUT:?}.\nconfig:\n{config}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The (first) client listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn stdout(&self) -> String {
        text(&self.stdout.buf)
    }

    pub fn stderr(&self) -> String {
        text(&self.stderr.buf)
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// Resident set size now, KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// Peak resident set size so far, KiB (VmHWM).
    pub fn hwm_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with the pid of our own child, which has not been reaped (we hold
        // the `Child` and only reap it in `wait_exit`/drop), so the pid cannot be reused.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    pub fn sigint(&self) {
        self.signal(libc::SIGINT);
    }

    /// Waits up to `timeout` for the process to exit; its status, or None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                self.stdout.drain(Duration::from_secs(2));
                self.stderr.drain(Duration::from_secs(2));
                return self.exit;
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            self.stdout.drain(Duration::from_secs(1));
            self.stderr.drain(Duration::from_secs(1));
            let tail = |s: String| {
                let start = s.len().saturating_sub(4000);
                let start = (start..s.len())
                    .find(|&i| s.is_char_boundary(i))
                    .unwrap_or(0);
                s[start..].to_string()
            };
            eprintln!(
                "--- dispatch stdout (tail) ---\n{}\n--- dispatch stderr (tail) ---\n{}",
                tail(self.stdout()),
                tail(self.stderr())
            );
        }
    }
}

/// What a finished `dispatch` command printed.
#[derive(Debug)]
pub struct Output {
    /// Exit code; None if killed by a signal or timed out.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The config file it was given.
    pub config_path: PathBuf,
}

impl Output {
    /// stdout and stderr together (an error may go to either).
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `dispatch <args>` in `dir` and waits up to `timeout` (killing it after).
pub fn run_dispatch(args: &[&str], dir: &Path, timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = Command::new(dispatch_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("DISPATCH_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", dispatch_bin().display()));
    let mut stdout = capture(child.stdout.take().expect("stdout"));
    let mut stderr = capture(child.stderr.take().expect("stderr"));
    let end = Instant::now() + timeout;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    stdout.drain(Duration::from_secs(2));
    stderr.drain(Duration::from_secs(2));
    (code, text(&stdout.buf), text(&stderr.buf))
}

/// `dispatch check --config <file>` on `toml` written verbatim (no listeners filled in).
pub fn check(toml: &str) -> Output {
    let dir = TempDir::new();
    let path = dir.write("dispatch.toml", toml);
    let p = path.to_str().expect("utf-8 temp path");
    let (code, stdout, stderr) = run_dispatch(
        &["check", "--config", p],
        dir.path(),
        Duration::from_secs(10),
    );
    Output {
        code,
        stdout,
        stderr,
        config_path: path,
    }
}

/// `dispatch run --config <file>` on `toml` written verbatim, for configs that must not start:
/// waits up to 5 s for it to exit.
pub fn run_expecting_exit(toml: &str) -> Output {
    let dir = TempDir::new();
    let path = dir.write("dispatch.toml", toml);
    let p = path.to_str().expect("utf-8 temp path");
    let (code, stdout, stderr) =
        run_dispatch(&["run", "--config", p], dir.path(), Duration::from_secs(5));
    Output {
        code,
        stdout,
        stderr,
        config_path: path,
    }
}
