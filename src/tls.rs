//! TLS on the listener (rustls), when `server.tls` names a certificate and a key.
//!
//! Handshakes run in their own tasks, each bounded by a timeout, so a slow or hostile
//! client cannot hold up the accept loop; finished streams are handed to the connection
//! loop through [`Listener`].
//!
//! Invariant: at most `server.max_connections` accepted sockets exist past `accept()` at
//! any time, whether handshaking, waiting to be served or served. Each holds a place
//! ([`Stream`] carries it) from accept until it closes; while none is free the loop
//! accepts nothing and new clients wait in the kernel's backlog. Without it every TCP
//! connection started a handshake task, so a neighbour opening sockets and saying nothing
//! held a task, a socket and a file descriptor each for the whole handshake timeout.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::config::TlsOptions;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the certificate chain and key; every problem names the file.
pub fn server_config(options: &TlsOptions) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = read_certs(&options.cert)?;
    let key = PrivateKeyDer::from_pem_file(&options.key).map_err(|e| {
        anyhow::anyhow!(
            "server.tls.key: {} holds no readable PEM private key: {e}",
            options.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server.tls: the key does not match the certificate")?;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("server.tls.cert: cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("server.tls.cert: {} is not PEM: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "server.tls.cert: {} holds no certificate",
        path.display()
    );
    Ok(certs)
}

/// A TLS connection and its place among `server.max_connections`, given back when the
/// connection closes.
#[derive(Debug)]
pub struct Stream {
    tls: TlsStream<TcpStream>,
    _place: OwnedSemaphorePermit,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

/// A TCP listener whose connections arrive already TLS-terminated.
#[derive(Debug)]
pub struct Listener {
    streams: mpsc::Receiver<(Stream, SocketAddr)>,
    local: SocketAddr,
}

impl Listener {
    /// Starts accepting on `tcp`, at most `max_connections` sockets at once (see the
    /// module documentation); must be called inside the runtime.
    pub fn new(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        max_connections: usize,
    ) -> std::io::Result<Listener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let places = Arc::new(Semaphore::new(max_connections.max(1)));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                // A place first: a connection the box cannot hold stays in the backlog.
                let Ok(place) = places.clone().acquire_owned().await else {
                    return;
                };
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (handshake, ready) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let stream = Stream { tls, _place: place };
                            let _ = ready.send((stream, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Listener { streams: rx, local })
    }
}

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.streams.recv().await {
            Some(conn) => conn,
            // The accept task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
