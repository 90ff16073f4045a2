//! A TLS upstream for the upstream TLS tests: rustls in front of a scripted [`Upstream`].
//!
//! `TlsUpstream::start(inner, &cert, client_ca)` listens on its own loopback port, runs the
//! server side of the TLS handshake on each connection (with `cert`; requiring a client
//! certificate signed by `client_ca` when given), then opens one plain connection to `inner`
//! and relays the decrypted bytes both ways until either side closes. So everything `Upstream`
//! records (requests, connections, `/healthz`) holds for the TLS upstream too, one inner
//! connection per TLS connection, and this side records what only TLS shows: every completed
//! handshake with the SNI name the client sent, the client certificate it presented and the
//! ALPN protocol agreed, and how many handshakes failed (and why).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, ServerConnection};

use super::tls::{Issued, Pki};
use super::upstream::Upstream;

/// One completed handshake, as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// The SNI name the client sent (None: no SNI, as for an IP address).
    pub sni: Option<String>,
    /// The first certificate the client presented (mTLS), DER.
    pub client_cert: Option<CertificateDer<'static>>,
    pub alpn: Option<Vec<u8>>,
}

#[derive(Default)]
struct Seen {
    handshakes: Vec<Handshake>,
    failed: Vec<String>,
}

/// A running TLS upstream; stops on drop (the inner upstream stops when it is dropped).
pub struct TlsUpstream {
    pub inner: Upstream,
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TlsUpstream {
    /// Serves `inner` over TLS with `cert`; with `client_ca`, a client must present a
    /// certificate it signed.
    pub fn start(inner: Upstream, cert: &Issued, client_ca: Option<&Pki>) -> TlsUpstream {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(CertificateDer::from_pem_slice(ca.ca_pem.as_bytes()).unwrap())
                    .unwrap();
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let (chain, key) = cert.rustls();
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("tls upstream bind");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (seen, stop, target) = (seen.clone(), stop.clone(), inner.addr());
            thread::Builder::new()
                .name(format!("tls-upstream-{}", addr.port()))
                .spawn(move || {
                    for tcp in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(tcp) = tcp else { continue };
                        let (config, seen, stop) = (config.clone(), seen.clone(), stop.clone());
                        let _ = thread::Builder::new()
                            .name("tls-upstream-conn".into())
                            .spawn(move || serve(tcp, config, target, &seen, &stop));
                    }
                })
                .unwrap()
        };
        TlsUpstream {
            inner,
            addr,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`, for `endpoints`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Every completed handshake so far, in order.
    pub fn handshakes(&self) -> Vec<Handshake> {
        lock(&self.seen).handshakes.clone()
    }

    /// Why each failed handshake failed (rustls's error), in order.
    pub fn failed_handshakes(&self) -> Vec<String> {
        lock(&self.seen).failed.clone()
    }

    /// Waits (at most 5 s) until at least `n` handshakes have failed; returns whether they
    /// had. (The upstream records a failure after the gateway has already moved on.)
    pub fn wait_failed(&self, n: usize) -> bool {
        super::wait_until(Duration::from_secs(5), || {
            lock(&self.seen).failed.len() >= n
        })
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// One connection: the handshake, then the relay to the inner upstream.
fn serve(
    mut tcp: TcpStream,
    config: Arc<ServerConfig>,
    target: SocketAddr,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) {
    let _ = tcp.set_nodelay(true);
    // A client that stalls the handshake must not hold this thread forever.
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let mut conn = match ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => return lock(seen).failed.push(e.to_string()),
    };
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            if !stop.load(Ordering::SeqCst) {
                lock(seen).failed.push(e.to_string());
            }
            // The alert rustls queued tells the client why; then a lingering close, so that
            // bytes the client sent meanwhile (its request, after a TLS 1.3 client finished
            // its side) do not turn the close into a reset that could overtake the alert.
            while conn.wants_write() && conn.write_tls(&mut tcp).is_ok() {}
            let _ = tcp.shutdown(Shutdown::Write);
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
            let mut sink = [0u8; 4096];
            while matches!(tcp.read(&mut sink), Ok(n) if n > 0) {}
            return;
        }
    }
    lock(seen).handshakes.push(Handshake {
        sni: conn.server_name().map(str::to_string),
        client_cert: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned()),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
    });
    let _ = tcp.set_read_timeout(None);
    let Ok(mut inner) = TcpStream::connect(target) else {
        return;
    };
    let _ = inner.set_nodelay(true);
    let _ = relay(&mut tcp, &mut conn, &mut inner, stop);
    let _ = inner.shutdown(Shutdown::Both);
    let _ = tcp.shutdown(Shutdown::Both);
}

/// Moves plaintext between the TLS connection and `inner` until either closes: waits on both
/// sockets with poll(2) (a second each, to notice `stop`), so one thread serves both ways.
fn relay(
    tcp: &mut TcpStream,
    conn: &mut ServerConnection,
    inner: &mut TcpStream,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Plaintext rustls already holds (the client's request may have come in the same read
        // as its last handshake message) goes on before waiting on the socket again.
        let state = conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if state.plaintext_bytes_to_read() > 0 {
            let mut plain = vec![0u8; state.plaintext_bytes_to_read()];
            conn.reader().read_exact(&mut plain)?;
            inner.write_all(&plain)?;
        }
        if state.peer_has_closed() {
            let _ = inner.shutdown(Shutdown::Write);
            return Ok(());
        }
        while conn.wants_write() {
            conn.write_tls(tcp)?;
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut fds = [
            libc::pollfd {
                fd: tcp.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: inner.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the call's duration.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let ready = |i: usize| fds[i].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
        // Decrypted and passed on at the top of the loop.
        if ready(0) && conn.read_tls(tcp)? == 0 {
            // The gateway closed its side: pass the close on.
            let _ = inner.shutdown(Shutdown::Write);
            return Ok(());
        }
        if ready(1) {
            let n = inner.read(&mut buf)?;
            if n == 0 {
                conn.send_close_notify();
                while conn.wants_write() {
                    conn.write_tls(tcp)?;
                }
                return Ok(());
            }
            conn.writer().write_all(&buf[..n])?;
        }
    }
}
