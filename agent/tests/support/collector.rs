//! A small collector for the agent's tests and benches: the real holmes.v1 gRPC service
//! (tonic, on loopback) that keeps every message agents send, acknowledges what is
//! sequenced, and sends agents what a test asks it to (debug info requests, …).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holmes_proto::pb;
use holmes_proto::pb::ingest_server::{Ingest, IngestServer};
use holmes_proto::{AgentBody, AgentMessage, CollectorMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;

type Outbound = mpsc::Sender<Result<pb::CollectorMessage, tonic::Status>>;

#[derive(Default)]
struct State {
    received: Mutex<Vec<AgentMessage>>,
    /// One per open stream.
    streams: Mutex<Vec<Outbound>>,
}

#[derive(Clone)]
struct Service(Arc<State>);

#[tonic::async_trait]
impl Ingest for Service {
    type ConnectStream =
        Pin<Box<dyn Stream<Item = Result<pb::CollectorMessage, tonic::Status>> + Send>>;

    async fn connect(
        &self,
        request: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<Self::ConnectStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        self.0.streams.lock().unwrap().push(tx.clone());
        let state = Arc::clone(&self.0);
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let Ok(msg) = AgentMessage::try_from(msg) else {
                    continue;
                };
                let seq = msg.seq;
                state.received.lock().unwrap().push(msg);
                if seq > 0 {
                    let ack = pb::CollectorMessage::from(&CollectorMessage::Ack { seq });
                    if tx.send(Ok(ack)).await.is_err() {
                        break;
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A running collector; stops when dropped.
pub(crate) struct TestCollector {
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestCollector {
    /// Starts one on a free loopback port, on a thread of its own.
    pub(crate) fn start() -> TestCollector {
        let state = Arc::new(State::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = Service(Arc::clone(&state));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let server = IngestServer::new(service)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .max_decoding_message_size(16 << 20);
                tonic::transport::Server::builder()
                    .add_service(server)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        TestCollector {
            url: format!("http://{addr}"),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every message received so far, in order.
    pub(crate) fn messages(&self) -> Vec<AgentMessage> {
        self.state.received.lock().unwrap().clone()
    }

    /// Sends `msg` on every open stream; returns how many got it.
    pub(crate) fn send(&self, msg: &CollectorMessage) -> usize {
        let wire = pb::CollectorMessage::from(msg);
        let streams = self.state.streams.lock().unwrap().clone();
        streams
            .iter()
            .filter(|s| s.try_send(Ok(wire.clone())).is_ok())
            .count()
    }

    /// Waits (generously) until the messages received satisfy `check`.
    pub(crate) fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&[AgentMessage]) -> bool,
    ) -> Vec<AgentMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if check(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The bodies of a kind, e.g. `bodies(|b| match b { AgentBody::Hello(h) => Some(h), _ => None })`.
    pub(crate) fn bodies<T>(&self, pick: impl Fn(&AgentBody) -> Option<T>) -> Vec<T> {
        self.messages()
            .iter()
            .filter_map(|m| pick(&m.body))
            .collect()
    }
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Streams still open keep the server from finishing; the thread is left to end
        // with the process then.
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
