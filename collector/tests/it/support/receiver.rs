//! A real local HTTP receiver for alert hooks: records every request, answers a chosen
//! status to the first few, 202 after.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
    pub(crate) answered: u16,
}

/// A local HTTP server that records every request and answers `fail_status` to the
/// first `fail_first` ones, 202 after.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

#[derive(Clone)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
    fail_status: StatusCode,
}

async fn record(
    State(state): State<ReceiverState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let failing = state
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        state.fail_status
    } else {
        StatusCode::ACCEPTED
    };
    state.got.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered: status.as_u16(),
    });
    (status, if failing { "try later" } else { "ok" })
}

impl Receiver {
    pub(crate) async fn start(fail_first: usize, fail_status: StatusCode) -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap(), fail_first, fail_status).await
    }

    pub(crate) async fn start_on(
        addr: SocketAddr,
        fail_first: usize,
        fail_status: StatusCode,
    ) -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            got: Arc::clone(&got),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
            fail_status,
        };
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(record).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, got }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The accepted requests, as (event or action, incident id).
    pub(crate) fn accepted(&self) -> Vec<Received> {
        self.got()
            .into_iter()
            .filter(|r| r.answered < 300)
            .collect()
    }
}
