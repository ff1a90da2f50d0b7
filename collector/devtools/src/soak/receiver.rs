//! The alert receiver: a real HTTP server on loopback that takes the collector's
//! `webhook` alerts and keeps each one it was sent, duplicates included.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};

use super::lock;

/// One alert as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `opened`, `escalated` or `resolved`.
    pub event: String,
    /// The alert's id (one per incident change).
    pub alert_id: String,
    /// The incident's id.
    pub incident: String,
    /// The incident's service.
    pub service: String,
}

type Received = Arc<Mutex<Vec<Alert>>>;

async fn take(State(received): State<Received>, Json(body): Json<serde_json::Value>) -> StatusCode {
    let text = |pointer: &str| {
        body.pointer(pointer)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    lock(&received).push(Alert {
        event: text("/event"),
        alert_id: text("/alert_id"),
        incident: text("/incident/id"),
        service: text("/incident/service"),
    });
    StatusCode::OK
}

/// A receiver serving on a free loopback port until the runtime ends: its webhook URL
/// and what it received.
pub async fn start() -> anyhow::Result<(String, Received)> {
    let received: Received = Arc::default();
    // Every request is an alert: the collector is its only client.
    let app = Router::new()
        .fallback(take)
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}/alerts", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "the alert receiver stopped");
        }
    });
    Ok((url, received))
}
