//! The HTTP/1 connection loop: accepts connections from a listener (plain TCP or the TLS
//! [`crate::tls::Listener`]) and serves the router on each with hyper, under limits that
//! keep one client from holding the box's connections or memory.
//!
//! Why not `axum::serve`: it gives hyper no timer and exposes none of hyper's HTTP/1
//! options, so headers of any size up to hyper's ~400 KB buffer were read, and a client
//! that trickled its headers one byte at a time held its connection forever.
//!
//! Limits (all from `[server]`):
//! - headers larger than `max_header_bytes` (request line included) or more than
//!   `max_headers` of them: `431 Request Header Fields Too Large`, connection closed;
//! - headers not complete within `header_read_timeout` of the first byte, or of the end of
//!   the previous response on a kept-alive connection: the connection is closed;
//! - at most `max_connections` open connections; beyond that the loop stops accepting
//!   until one closes (new clients wait in the kernel's backlog). With TLS the listener
//!   holds the same bound from accept on, so handshakes in flight count too
//!   ([`crate::tls::Listener`]).
//!
//! A body that never finishes is bounded by `server.request_timeout`, which covers the
//! handler and so the extractor that reads the body (`api::observe`).

use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, watch};

/// What one connection may do; see the module documentation.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
}

impl From<&crate::config::ServerOptions> for Limits {
    fn from(o: &crate::config::ServerOptions) -> Limits {
        Limits {
            header_read_timeout: o.header_read_timeout,
            max_header_bytes: o.max_header_bytes,
            max_headers: o.max_headers,
            max_connections: o.max_connections,
        }
    }
}

/// Serves `app` on connections from `listener` until `shutdown` completes; then stops
/// accepting, lets every open connection finish its request in hand (idle ones close at
/// once) and returns when the last one has closed.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) where
    L: axum::serve::Listener,
    L::Addr: Debug,
{
    // `config.validate` keeps it in 1..=u32::MAX; the clamp only guards the conversion.
    let max = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let open = Arc::new(Semaphore::new(max as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, addr) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            // Held until the connection closes: it is what `max_connections` counts.
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_header_size(limits.max_header_bytes)
                .max_headers(limits.max_headers)
                // The read buffer (hyper's default grows to ~400 KB): room for a full head
                // and body chunks, so open connections cost bounded memory.
                .max_buf_size((limits.max_header_bytes * 2).max(32 * 1024));
            let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(?addr, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every permit back means every connection has closed.
    let _ = open.acquire_many(max).await;
}
