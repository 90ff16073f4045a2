//! The adapter over real loopback sockets: a handshake both ways, a large transfer in records
//! of every size, close_notify seen as the end of the stream, a certificate that does not
//! verify failing both sides' handshakes.

use std::sync::Arc;

use monoio::net::{TcpListener, TcpStream};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{ClientTls, ServerTls};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A self-signed certificate for `localhost` and the configs of both sides; the client
/// trusts the certificate only when `trusted`.
fn configs(trusted: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    if trusted {
        roots.add(cert).unwrap();
    } else {
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        roots.add(other.cert.der().clone()).unwrap();
    }
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

async fn read_exact<C, SD>(s: &mut super::TlsStream<C>, n: usize) -> Vec<u8>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<SD>>,
    SD: rustls::SideData,
{
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        // Odd buffer sizes, so records are split across reads.
        let (res, buf) = s.read(Vec::with_capacity(7001)).await;
        let got = res.unwrap();
        assert!(got > 0, "stream ended after {} of {n} bytes", out.len());
        out.extend_from_slice(&buf[..got]);
    }
    out
}

/// Writes all of `data`: one write takes at most rustls's 64 KiB of buffered plaintext.
async fn write_all<C, SD>(s: &mut super::TlsStream<C>, data: &[u8])
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<SD>>,
    SD: rustls::SideData,
{
    let mut sent = 0;
    while sent < data.len() {
        let (res, _) = s.write(data[sent..].to_vec()).await;
        let n = res.unwrap();
        assert!(n > 0);
        sent += n;
    }
}

#[test]
fn a_megabyte_crosses_both_ways_and_close_notify_ends_each_side() {
    let (server_cfg, client_cfg) = configs(true);
    run(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let body: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let expect = body.clone();
        let server = monoio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = ServerTls::accept(tcp, server_cfg).await.unwrap();
            assert_eq!(tls.server_name(), Some("localhost"));
            let got = read_exact(&mut tls, expect.len()).await;
            assert!(got == expect, "server received different bytes");
            write_all(&mut tls, &got).await;
            // The client's close_notify reads as the end of the stream.
            let (res, _) = tls.read(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 0);
            tls.shutdown().await.unwrap();
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = ClientTls::connect(tcp, client_cfg, name).await.unwrap();
        write_all(&mut tls, &body).await;
        let back = read_exact(&mut tls, body.len()).await;
        assert!(back == body, "client received different bytes");
        tls.shutdown().await.unwrap();
        let (res, _) = tls.read(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap(), 0);
        assert!(
            tls.has_buffered(),
            "a closed stream reads (0) without waiting"
        );
        server.await;
    });
}

#[test]
fn a_certificate_that_does_not_verify_fails_both_handshakes() {
    let (server_cfg, client_cfg) = configs(false);
    run(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = monoio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            ServerTls::accept(tcp, server_cfg).await.err()
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let err = ClientTls::connect(tcp, client_cfg, name)
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("certificate"), "{err}");
        // The client's alert (unknown CA) ends the server's handshake with an error too.
        assert!(server.await.is_some());
    });
}

#[test]
fn plaintext_http_on_a_tls_socket_fails_the_handshake() {
    let (server_cfg, _) = configs(true);
    run(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = monoio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            ServerTls::accept(tcp, server_cfg).await.err()
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let (res, _) = monoio::io::AsyncWriteRentExt::write_all(
            &mut tcp,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        )
        .await;
        res.unwrap();
        let err = server
            .await
            .expect("a plaintext request is not a handshake");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    });
}

/// Waits until `peek` reports something other than `Nothing` (readiness, then a peek).
async fn peek_next(s: &mut ClientTls) -> crate::io::Peek {
    loop {
        s.tcp().readable(false).await.unwrap();
        match s.peek() {
            crate::io::Peek::Nothing => continue,
            other => return other,
        }
    }
}

/// A TLS 1.3 server sends session tickets right after the handshake: on an idle client
/// connection they must not read as an answer (the pool would drop the connection, and a
/// streamed upload would take them for an early response).
#[test]
fn session_tickets_on_an_idle_connection_peek_as_nothing_then_data_then_close() {
    use crate::io::Peek;
    let (server_cfg, client_cfg) = configs(true);
    run(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = monoio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = ServerTls::accept(tcp, server_cfg).await.unwrap();
            let got = read_exact(&mut tls, 1).await;
            assert_eq!(got, b"g");
            write_all(&mut tls, b"hello").await;
            let got = read_exact(&mut tls, 1).await;
            assert_eq!(got, b"c");
            tls.shutdown().await.unwrap();
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = ClientTls::connect(tcp, client_cfg, name).await.unwrap();
        // The tickets arrive on the socket: readable, yet nothing for the application.
        tls.tcp().readable(false).await.unwrap();
        assert_eq!(tls.peek(), Peek::Nothing, "session tickets are not data");
        assert!(!tls.has_buffered());
        write_all(&mut tls, b"g").await;
        assert_eq!(peek_next(&mut tls).await, Peek::Data);
        assert!(tls.has_buffered(), "the peeked record waits in rustls");
        let (res, buf) = tls.read(Vec::with_capacity(64)).await;
        assert_eq!(&buf[..res.unwrap()], b"hello");
        write_all(&mut tls, b"c").await;
        assert_eq!(peek_next(&mut tls).await, Peek::Closed, "close_notify");
        let (res, _) = tls.read(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap(), 0);
        // Reads after the close keep answering the end of the stream.
        let (res, _) = tls.read(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap(), 0);
        assert_eq!(tls.peek(), Peek::Closed);
        server.await;
    });
}

/// Half-close both ways over TLS: the side that sent close_notify still reads, the side that
/// received it still writes (a WebSocket tunnel relies on both).
#[test]
fn after_close_notify_each_side_keeps_the_other_direction() {
    let (server_cfg, client_cfg) = configs(true);
    run(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = monoio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = ServerTls::accept(tcp, server_cfg).await.unwrap();
            let (res, _) = tls.read(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 0, "the client's close_notify");
            write_all(&mut tls, b"still here").await;
            tls.shutdown().await.unwrap();
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = ClientTls::connect(tcp, client_cfg, name).await.unwrap();
        tls.shutdown().await.unwrap();
        let got = read_exact(&mut tls, 10).await;
        assert_eq!(got, b"still here");
        let (res, _) = tls.read(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap(), 0);
        server.await;
    });
}
