//! The gRPC port's accept loop: a connection whose client sends nothing at all — not
//! the first byte of its HTTP/2 preface or TLS hello — within `[limits]
//! http_header_timeout` is closed before tonic sees it, logged and counted as
//! `holmes_ingest_refused_total{reason = "grpc_silent"}`. Without it, tonic holds such
//! a connection for as long as the client likes, and silent connections are bounded
//! only by the collector's file descriptors, which honest agents then cannot get.
//! (A client that sends its first bytes and then stalls mid-handshake is not caught
//! here; tonic offers no handshake deadline.)

use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Connections that have spoken, waiting for tonic to take them.
const READY: usize = 64;

/// The connections of `listener` whose clients sent something within `timeout`, as the
/// stream tonic's `serve_with_incoming_shutdown` takes. The accept loop ends when the
/// stream is dropped.
pub(crate) fn speaking(
    listener: TcpListener,
    timeout: Duration,
) -> ReceiverStream<io::Result<TcpStream>> {
    let (ready, incoming) = mpsc::channel(READY);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = ready.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ready = ready.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                match tokio::time::timeout(timeout, tcp.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {
                        let _ = ready.send(Ok(tcp)).await;
                    }
                    // Closed by the client, or broken: nothing to serve.
                    Ok(_) => {}
                    Err(_) => {
                        crate::metrics::metrics().ingest_refused("grpc_silent");
                        tracing::warn!(%peer, ?timeout, "gRPC client sent nothing in time ([limits] http_header_timeout); connection closed");
                    }
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}
