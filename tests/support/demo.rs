//! Runs the real `dispatch demo` on a copy of the shipped `config/demo.toml` moved to free
//! ports (`DemoConfig`, `DemoRun::start`), and reads what it printed: the credentials and the
//! curl tour.
//!
//! The copy sits in a fresh temp dir, so the demo writes its key files (`demo-keys/`) there,
//! never into the repository. The process is killed on drop; when a test fails, its output
//! is printed.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dispatch::demo::DemoPorts;

use super::gateway::{dispatch_bin, TempDir};
use super::ports::{free_addr, free_port};

/// How long the demo may take to print its tour.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `dispatch demo`.
pub struct DemoRun {
    child: Child,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    /// The TLS listener (`[server.tls]`, 8443 in the shipped config).
    pub tls: SocketAddr,
    pub ports: DemoPorts,
    config_path: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    exit: Option<ExitStatus>,
    _dir: TempDir,
}

fn capture(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = Arc::clone(&buf);
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

/// The shipped `config/demo.toml` with each of its ports ([`DemoPorts::default`]) replaced by
/// a free one.
pub struct DemoConfig {
    pub text: String,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub tls: SocketAddr,
    pub ports: DemoPorts,
}

impl DemoConfig {
    pub fn new() -> DemoConfig {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
        let mut text = std::fs::read_to_string(&shipped).expect("read config/demo.toml");
        let (gateway, admin) = (free_addr(), free_addr());
        let ports = DemoPorts {
            gateway: gateway.port(),
            admin: admin.port(),
            users: [free_port(), free_port()],
            users_v2: free_port(),
            accounts: free_port(),
            transactions: free_port(),
            offline: free_port(),
        };
        let d = DemoPorts::default();
        let pairs = [
            (d.gateway, ports.gateway),
            (d.admin, ports.admin),
            (d.users[0], ports.users[0]),
            (d.users[1], ports.users[1]),
            (d.users_v2, ports.users_v2),
            (d.accounts, ports.accounts),
            (d.transactions, ports.transactions),
            (d.offline, ports.offline),
        ];
        for (from, to) in pairs {
            let from = format!("127.0.0.1:{from}\"");
            assert!(text.contains(&from), "config/demo.toml lacks {from}");
            text = text.replace(&from, &format!("127.0.0.1:{to}\""));
        }
        let tls = free_addr();
        let from = "127.0.0.1:8443\"";
        assert!(text.contains(from), "config/demo.toml lacks {from}");
        text = text.replace(from, &format!("{tls}\""));
        DemoConfig {
            text,
            gateway,
            admin,
            tls,
            ports,
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig::new()
    }
}

impl DemoRun {
    /// Runs `dispatch demo --config <copy>` on a [`DemoConfig`] written to a fresh temp dir,
    /// and waits until the whole tour is printed (the gateway listens by then); panics with
    /// the output if it is not.
    pub fn start() -> DemoRun {
        let DemoConfig {
            text,
            gateway,
            admin,
            tls,
            ports,
        } = DemoConfig::new();
        let dir = TempDir::new();
        let config_path = dir.write("demo.toml", &text);
        let mut child = Command::new(dispatch_bin())
            .arg("demo")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", dispatch_bin().display()));
        let stdout = capture(child.stdout.take().expect("stdout"));
        let stderr = capture(child.stderr.take().expect("stderr"));
        let mut run = DemoRun {
            child,
            gateway,
            admin,
            tls,
            ports,
            config_path,
            stdout,
            stderr,
            exit: None,
            _dir: dir,
        };
        // The tour's last command, whole: the tour is printed once the gateway listens.
        let last = format!("?url=http://127.0.0.1:{}'\n", ports.users_v2);
        let end = Instant::now() + START_TIMEOUT;
        while !run.stdout().contains(&last) {
            if let Ok(Some(status)) = run.child.try_wait() {
                run.exit = Some(status);
                panic!("dispatch demo exited ({status}) before printing its tour");
            }
            assert!(
                Instant::now() < end,
                "dispatch demo printed no tour within {START_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        run
    }

    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The config the demo runs (its directory holds `demo-keys/` while it runs).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The line printed after the first line containing `label`, trimmed (the credentials
    /// block prints each credential on the line after its description).
    pub fn line_after(&self, label: &str) -> String {
        let out = self.stdout();
        let mut lines = out.lines().skip_while(|l| !l.contains(label));
        lines
            .next()
            .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"));
        lines
            .next()
            .unwrap_or_else(|| panic!("nothing after {label:?}"))
            .trim()
            .to_string()
    }

    /// The printed commands containing every one of `needles`.
    pub fn commands_with(&self, needles: &[&str]) -> Vec<String> {
        self.stdout()
            .lines()
            .filter(|l| l.trim_start().starts_with("curl") || l.trim_start().starts_with("for"))
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(|l| l.trim().to_string())
            .collect()
    }

    pub fn sigterm(&self) {
        // SAFETY: kill(2) with the pid of our own child, not reaped yet (we hold the `Child`
        // and reap it only in `wait_exit` or drop), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill({}, SIGTERM)", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit; its status, or None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
            } else if Instant::now() >= end {
                break;
            } else {
                thread::sleep(Duration::from_millis(10));
            }
        }
        self.exit
    }
}

impl Drop for DemoRun {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- dispatch demo stdout ---\n{}\n--- dispatch demo stderr ---\n{}",
                self.stdout(),
                self.stderr()
            );
        }
    }
}
