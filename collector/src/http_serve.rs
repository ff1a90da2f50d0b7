//! Serves the HTTP API with hyper's HTTP/1 server directly rather than `axum::serve`,
//! for one setting `axum::serve` does not offer: a deadline for the request head. A
//! client that opens a connection and sends half a request (or nothing) is cut after
//! `[limits] http_header_timeout` instead of holding the connection as long as it
//! likes; the same deadline covers an idle keep-alive connection waiting for its next
//! request. (`axum::serve`'s version sniffing would wait for a silent client's first
//! bytes forever; the API speaks HTTP/1.1 only.) Each connection cut so is logged and
//! counted as `holmes_ingest_refused_total{reason = "http_header_timeout"}`.
//! Every request carries its client's [`PeerAddr`] as axum's `ConnectInfo`, as before.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

use crate::ingest::foreign::PeerAddr;

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections
/// finish their requests (the caller bounds how long it waits).
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
                tower_service::Service::call(&mut app.clone(), request)
            },
        );
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            match connection.await {
                Err(err) if err.is_timeout() => {
                    crate::metrics::metrics().ingest_refused("http_header_timeout");
                    tracing::warn!(%peer, timeout = ?header_timeout, "HTTP client did not send a request head in time ([limits] http_header_timeout); connection closed");
                }
                Err(err) => {
                    tracing::debug!(%peer, error = %err, "HTTP connection ended with an error");
                }
                Ok(()) => {}
            }
        });
    }
    graceful.shutdown().await;
}
