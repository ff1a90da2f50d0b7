//! A collector's side of holmes.v1 for agent tests: a real tonic server on loopback
//! that records everything agents send, acknowledges sequenced messages (unless told
//! not to), and sends what a test asks (rule updates, capture requests, skips), on every
//! open stream or as soon as a stream opens.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use holmes_proto::pb::ingest_server::{Ingest, IngestServer};
use holmes_proto::{pb, AgentBody, AgentMessage, CollectorMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};

type Outbound = mpsc::Sender<Result<pb::CollectorMessage, Status>>;

/// What the collector saw and what it does.
#[derive(Default)]
struct State {
    /// Every message received, with the number of its stream (from 0).
    received: Vec<(usize, AgentMessage)>,
    /// Open streams, by number.
    streams: Vec<(usize, Outbound)>,
    /// Streams opened so far.
    connections: usize,
    /// Whether sequenced messages are acknowledged.
    no_acks: bool,
    /// Sent on every new stream, after its hello.
    on_connect: Vec<CollectorMessage>,
}

#[derive(Clone)]
struct Service(Arc<Mutex<State>>);

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[tonic::async_trait]
impl Ingest for Service {
    type ConnectStream = ReceiverStream<Result<pb::CollectorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let state = Arc::clone(&self.0);
        tokio::spawn(async move {
            let mut stream = None;
            while let Ok(Some(raw)) = inbound.message().await {
                let msg = AgentMessage::try_from(raw).expect("the agent sends valid messages");
                let seq = msg.seq;
                let hello = matches!(msg.body, AgentBody::Hello(_));
                let (ack, greet) = {
                    let mut s = lock(&state);
                    let n = *stream.get_or_insert_with(|| {
                        s.connections += 1;
                        s.connections - 1
                    });
                    s.received.push((n, msg));
                    if hello {
                        s.streams.push((n, tx.clone()));
                    }
                    let greet = if hello {
                        s.on_connect.clone()
                    } else {
                        Vec::new()
                    };
                    (seq > 0 && !s.no_acks, greet)
                };
                for m in greet {
                    let _ = tx.send(Ok(pb::CollectorMessage::from(&m))).await;
                }
                if ack {
                    let _ = tx
                        .send(Ok(pb::CollectorMessage::from(&CollectorMessage::Ack {
                            seq,
                        })))
                        .await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A running test collector; stopped when dropped.
pub(crate) struct TestCollector {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestCollector {
    /// Starts one on a free loopback port.
    pub(crate) fn start() -> TestCollector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the test collector");
        let state = Arc::new(Mutex::new(State::default()));
        let service = Service(Arc::clone(&state));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        runtime.spawn(async move {
            let server = IngestServer::new(service)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(8 * 1024 * 1024);
            let _ = tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        TestCollector {
            state,
            addr,
            runtime: Some(runtime),
        }
    }

    /// The URL agents connect to.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops acknowledging sequenced messages (or starts again).
    pub(crate) fn set_acks(&self, on: bool) {
        lock(&self.state).no_acks = !on;
    }

    /// Sends `msg` on every new stream right after its hello (as a collector sends the
    /// service's rules to an agent that connects).
    pub(crate) fn on_connect(&self, msg: CollectorMessage) {
        lock(&self.state).on_connect.push(msg);
    }

    /// Sends `msg` on every open stream; how many got it.
    pub(crate) fn send(&self, msg: &CollectorMessage) -> usize {
        let streams: Vec<Outbound> = lock(&self.state)
            .streams
            .iter()
            .map(|(_, tx)| tx.clone())
            .collect();
        let wire = pb::CollectorMessage::from(msg);
        streams
            .iter()
            .filter(|tx| tx.try_send(Ok(wire.clone())).is_ok())
            .count()
    }

    /// Ends every open stream with an error, as a collector that goes away; the agents
    /// reconnect.
    pub(crate) fn drop_streams(&self) {
        let streams = std::mem::take(&mut lock(&self.state).streams);
        for (_, tx) in streams {
            let _ = tx.try_send(Err(Status::unavailable("test collector drops the stream")));
        }
    }

    /// Streams opened so far.
    pub(crate) fn connections(&self) -> usize {
        lock(&self.state).connections
    }

    /// Every message received so far, with its stream's number.
    pub(crate) fn received(&self) -> Vec<(usize, AgentMessage)> {
        lock(&self.state).received.clone()
    }

    /// The bodies received so far that `pick` picks.
    pub(crate) fn bodies<T>(&self, mut pick: impl FnMut(&AgentBody) -> Option<T>) -> Vec<T> {
        lock(&self.state)
            .received
            .iter()
            .filter_map(|(_, m)| pick(&m.body))
            .collect()
    }

    /// Waits until `pick` finds something (generous timeout: a loaded machine is slow).
    pub(crate) fn wait_for<T>(
        &self,
        what: &str,
        mut pick: impl FnMut(&[(usize, AgentMessage)]) -> Option<T>,
    ) -> T {
        let timeout = Duration::from_secs(60);
        let deadline = Instant::now() + timeout;
        loop {
            // Not under the lock: `pick` may look at the collector again.
            if let Some(found) = pick(&self.received()) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
