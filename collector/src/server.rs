//! Runs the collector: opens the store, binds the gRPC and HTTP listeners, serves until
//! told to stop, and on stop ends every agent stream so that shutdown is prompt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use holmes_proto::pb::ingest_server::IngestServer;
use holmes_storage::clickhouse::ClickHouseStore;
use holmes_storage::sqlite::SqliteStore;
use holmes_storage::{Store, StoreError};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_server::ProfilesServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;

use crate::auth::{ApiAuth, IngestAuth};
use crate::config::{Config, Role, StoreKind};
use crate::control::Control;
use crate::ingest::debuginfo::Uploads;
use crate::ingest::live::LiveAgents;
use crate::ingest::IngestService;
use crate::process::{LocalSink, Processor, Sink};
use crate::symbolize::Symbolizer;
use crate::tls::TlsListener;

/// How long shutdown waits for connections to finish before cutting them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened.
    #[error("cannot open the {backend} store: {source}")]
    Store {
        /// Which backend.
        backend: &'static str,
        /// Why.
        source: StoreError,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The gRPC server refused the TLS configuration.
    #[error("cannot serve gRPC over TLS: {0}")]
    GrpcTls(tonic::transport::Error),
    /// The alert hooks could not start (their outbox file, say).
    #[error("cannot start the alert hooks: {0}")]
    Alerts(#[from] crate::alert::AlertError),
    /// The incidents could not be read back from the store.
    #[error("cannot restore the incidents from the store: {0}")]
    Incidents(StoreError),
    /// The Kafka topic, producer or consumer could not be set up.
    #[error("cannot start the Kafka pipeline: {0}")]
    Kafka(String),
    /// The config file's rules could not be written to the store.
    #[error("cannot seed the central rules from the config file: {0}")]
    Seed(StoreError),
}

/// Opens the store the configuration names.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    Ok(match config.store {
        StoreKind::Sqlite => Arc::new(
            SqliteStore::open_with(&config.data_dir, config.sqlite.synchronous).map_err(
                |source| ServeError::Store {
                    backend: "sqlite",
                    source,
                },
            )?,
        ),
        StoreKind::Clickhouse => {
            let mut cfg = config
                .clickhouse
                .to_config()
                .map_err(crate::config::ConfigError::from)?;
            cfg.retention_days = Some(config.retention_days);
            Arc::new(
                ClickHouseStore::open(&cfg)
                    .await
                    .map_err(|source| ServeError::Store {
                        backend: "clickhouse",
                        source,
                    })?,
            )
        }
    })
}

/// Creates the Kafka topic if missing; its partition count.
#[cfg(feature = "kafka")]
async fn start_kafka_topic(config: &Config) -> Result<i32, ServeError> {
    let started = std::time::Instant::now();
    let partitions = crate::process::kafka::topic::ensure_topic(&config.kafka)
        .await
        .map_err(|e| ServeError::Kafka(e.to_string()))?;
    tracing::info!(topic = %config.kafka.topic, partitions, ms = started.elapsed().as_millis() as u64, "Kafka topic ready");
    Ok(partitions)
}

#[cfg(not(feature = "kafka"))]
async fn start_kafka_topic(_config: &Config) -> Result<i32, ServeError> {
    Err(ServeError::Kafka(
        "this collector was built without the `kafka` feature".to_owned(),
    ))
}

/// The `ingest` role's sink: the Kafka producer.
#[cfg(feature = "kafka")]
fn ingest_sink(config: &Config, partitions: i32) -> Result<Arc<dyn Sink>, ServeError> {
    // Room for a profile's metadata next to its bytes.
    let max_message = config.max_profile_bytes.saturating_add(1024 * 1024);
    let sink = crate::process::kafka::sink::KafkaSink::new(&config.kafka, partitions, max_message)
        .map_err(|e| ServeError::Kafka(e.to_string()))?;
    Ok(Arc::new(sink))
}

#[cfg(not(feature = "kafka"))]
fn ingest_sink(_config: &Config, _partitions: i32) -> Result<Arc<dyn Sink>, ServeError> {
    Err(ServeError::Kafka(
        "this collector was built without the `kafka` feature".to_owned(),
    ))
}

/// The `process` role's source: a consumer group member feeding `processor`.
#[cfg(feature = "kafka")]
fn start_consumer(
    config: &Config,
    partitions: i32,
    processor: Arc<Processor>,
    closing: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ServeError> {
    let consumer =
        crate::process::kafka::consumer::Consumer::new(&config.kafka, partitions, processor)
            .map_err(|e| ServeError::Kafka(e.to_string()))?;
    tracing::info!(topic = %config.kafka.topic, group = %config.kafka.group_id, "Kafka consumer started");
    Ok(tokio::spawn(consumer.run(closing)))
}

#[cfg(not(feature = "kafka"))]
fn start_consumer(
    _config: &Config,
    _partitions: i32,
    _processor: Arc<Processor>,
    _closing: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ServeError> {
    Err(ServeError::Kafka(
        "this collector was built without the `kafka` feature".to_owned(),
    ))
}

/// A running collector.
pub struct Server {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    store: Arc<dyn Store>,
    closing: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("store", &self.store.backend())
            .finish()
    }
}

impl Server {
    /// Opens the store, binds both listeners (port 0 picks a free port) and starts serving.
    pub async fn start(config: &Config) -> Result<Server, ServeError> {
        config.validate()?;
        let store = open_store(config).await?;
        Server::start_with_store(config, store).await
    }

    /// Like [`Server::start`] on a store opened by the caller. The configured rules are
    /// checked here too, so that no agent is sent a rule that does not parse.
    pub async fn start_with_store(
        config: &Config,
        store: Arc<dyn Store>,
    ) -> Result<Server, ServeError> {
        crate::control::rules::check(&config.rules).map_err(|e| ServeError::Config(e.into()))?;
        config
            .control
            .validate()
            .map_err(|e| ServeError::Config(e.into()))?;
        // Registers the metrics (and the ClickHouse batch observer) before anything runs.
        crate::metrics::metrics();
        // Certificates and tokens are read before anything listens, so that a bad file
        // stops the start instead of leaving an open collector behind.
        let identity = config
            .tls
            .identity()
            .map_err(|e| ServeError::Config(e.into()))?;
        let auth_config = |e: crate::auth::config::AuthConfigError| ServeError::Config(e.into());
        let ingest_auth = IngestAuth::new(config.auth.ingest_tokens().map_err(auth_config)?);
        let api_auth = config
            .auth
            .api_token()
            .map_err(auth_config)?
            .map(ApiAuth::new);
        let grpc = (config.role != crate::config::Role::Process).then_some(config.grpc_addr);
        config
            .auth
            .check_exposure(grpc, config.http_addr)
            .map_err(auth_config)?;
        if !ingest_auth.enabled() {
            tracing::warn!("no ingest tokens configured: any agent that reaches the gRPC port can send data ([auth] ingest_tokens)");
        }
        if api_auth.is_none() {
            tracing::warn!("no API token configured: the HTTP API is open to anyone who reaches it ([auth] api_token)");
        }
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { what, addr, source })
        };
        // A processor takes no agents: it does not listen for them.
        let grpc = match config.role {
            Role::Process => None,
            Role::All | Role::Ingest => Some(bind("gRPC", config.grpc_addr).await?),
        };
        let http = bind("HTTP", config.http_addr).await?;
        let local = |l: &TcpListener, what, addr| {
            l.local_addr()
                .map_err(|source| ServeError::Bind { what, addr, source })
        };
        let grpc_addr = match &grpc {
            Some(grpc) => local(grpc, "gRPC", config.grpc_addr)?,
            None => config.grpc_addr,
        };
        let http_addr = local(&http, "HTTP", config.http_addr)?;
        let (closing, closed) = watch::channel(false);
        let scheme = if identity.is_some() { "https" } else { "http" };
        let role = config.role;
        let profile_settings = crate::process::ProfileSettings {
            limits: crate::process::normalize::Limits {
                max_decoded_bytes: config.max_decoded_profile_bytes,
                ..crate::process::normalize::Limits::default()
            },
            keep_originals: config.keep_originals,
            max_clock_skew: config.max_clock_skew,
        };
        let mut tasks = Vec::new();
        // Processing (store, correlate, alert) runs on `all` and `process` nodes.
        let processor = if role == Role::Ingest {
            None
        } else {
            let alerter = crate::alert::Alerter::start(
                &config.alerts,
                &config.data_dir,
                Some(format!("{scheme}://{http_addr}")),
                closed.clone(),
            )?;
            let (incidents, incident_ticker) = crate::incident::Incidents::start(
                Arc::clone(&store),
                config.incidents.clone(),
                alerter,
                closed.clone(),
            )
            .await
            .map_err(ServeError::Incidents)?;
            tasks.push(incident_ticker);
            let symbolizer = Symbolizer::new(
                Arc::clone(&store),
                crate::symbolize::DEFAULT_CACHED_BUILDS,
                &config.symbolize,
            );
            tasks.push(symbolizer.spawn(closed.clone()));
            Some(Arc::new(
                Processor::new(Arc::clone(&store), Some(incidents), profile_settings)
                    .with_symbolizer(symbolizer),
            ))
        };
        let symbolizer = processor.as_ref().and_then(|p| p.symbolizer().cloned());
        let kafka_partitions = match role {
            Role::All => 0,
            Role::Ingest | Role::Process => start_kafka_topic(config).await?,
        };
        if role == Role::Process {
            if let Some(processor) = &processor {
                tasks.push(start_consumer(
                    config,
                    kafka_partitions,
                    Arc::clone(processor),
                    closed.clone(),
                )?);
            }
        }
        // Agents connect to `all` and `ingest` nodes.
        let sink: Option<Arc<dyn Sink>> = match (role, &processor) {
            (Role::All, Some(processor)) => Some(Arc::new(LocalSink(Arc::clone(processor)))),
            (Role::Ingest, _) => Some(ingest_sink(config, kafka_partitions)?),
            _ => None,
        };
        // The central rules: the file's seeded, then this node's view of them.
        crate::control::seed::seed(&store, &config.rules)
            .await
            .map_err(ServeError::Seed)?;
        let live = Arc::new(LiveAgents::default());
        let control = Control::new(
            Arc::clone(&store),
            Arc::clone(&live),
            crate::control::node_name(grpc_addr),
            role != Role::Process,
            config.control.clone(),
        );
        tasks.extend(control.start(closed.clone()).await);
        if let Some(incidents) = processor.as_ref().and_then(|p| p.incidents()) {
            incidents.ask_controls_with(Arc::clone(&control));
        }
        let foreign = crate::ingest::foreign::ForeignIngest::new(
            Arc::clone(&store),
            sink.clone(),
            ingest_auth.clone(),
            config.max_profile_bytes,
            config.max_decoded_profile_bytes,
        );
        let alert_sink = sink.clone();
        if let (Some(sink), Some(grpc)) = (sink, grpc) {
            let service = IngestService::new(
                Arc::clone(&store),
                sink,
                Arc::clone(&control),
                live,
                closed.clone(),
            )
            .with_max_profile_bytes(config.max_profile_bytes)
            .with_profile_settings(&profile_settings)
            .with_limits(&config.limits)
            .with_auth(ingest_auth)
            .with_uploads({
                let uploads = Uploads::new(Arc::clone(&store), symbolizer.clone());
                tasks.push(uploads.spawn(closed.clone()));
                uploads
            });
            let ingest = IngestServer::new(service)
                // Agents may send gzip or zstd; the limit holds for the decompressed message.
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(config.max_message_bytes);
            let otlp =
                ProfilesServiceServer::new(crate::ingest::otlp::OtlpService::new(foreign.clone()))
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(
                        usize::try_from(config.max_profile_bytes).unwrap_or(usize::MAX),
                    );
            let mut grpc_builder = tonic::transport::Server::builder();
            if let Some(identity) = &identity {
                grpc_builder = grpc_builder
                    .tls_config(identity.grpc_config())
                    .map_err(ServeError::GrpcTls)?;
            }
            let mut grpc_closed = closed.clone();
            let silent_timeout = config.limits.http_header_timeout;
            tasks.push(tokio::spawn(async move {
                let result = grpc_builder
                    .http2_keepalive_interval(Some(Duration::from_secs(30)))
                    // Flow-control windows sized to the connection (BDP), not h2's 64 KiB:
                    // debug info chunks of 256 KiB would wait on window updates.
                    .http2_adaptive_window(Some(true))
                    .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                    .add_service(ingest)
                    .add_service(otlp)
                    .serve_with_incoming_shutdown(
                        crate::ingest::silent::speaking(grpc, silent_timeout),
                        async move {
                            let _ = grpc_closed.wait_for(|c| *c).await;
                        },
                    )
                    .await;
                if let Err(err) = result {
                    tracing::error!(error = %err, "gRPC server failed");
                }
            }));
        }

        let app = crate::query::router(
            Arc::clone(&store),
            crate::query::DEFAULT_ACTIVE_WINDOW,
            api_auth.clone(),
            Arc::clone(&control),
            symbolizer,
        )
        .merge(crate::ingest::http::router(foreign))
        .merge(crate::ingest::alertmanager::router(
            config.alertmanager.clone(),
            alert_sink,
            control,
            api_auth.clone(),
        ))
        .merge(crate::metrics::http::router(api_auth.clone()));
        let app = crate::auth::browser::guard(app, http_addr, api_auth.clone(), identity.is_some());
        let app = crate::metrics::http::timed(app);
        let retention = match role {
            Role::Ingest => None,
            Role::All | Role::Process => crate::process::retention::spawn(
                Arc::clone(&store),
                config.retention_days,
                closed.clone(),
            ),
        };
        let mut http_closed = closed;
        let shutdown = async move {
            let _ = http_closed.wait_for(|c| *c).await;
        };
        let header_timeout = config.limits.http_header_timeout;
        let http_task = match &identity {
            Some(identity) => {
                let listener =
                    TlsListener::new(http, identity).map_err(|source| ServeError::Bind {
                        what: "HTTP",
                        addr: config.http_addr,
                        source,
                    })?;
                tokio::spawn(crate::http_serve::serve(
                    listener,
                    app,
                    header_timeout,
                    shutdown,
                ))
            }
            None => tokio::spawn(crate::http_serve::serve(
                http,
                app,
                header_timeout,
                shutdown,
            )),
        };
        tracing::info!(
            role = role.as_str(),
            %grpc_addr,
            %http_addr,
            store = store.backend(),
            tls = identity.is_some(),
            api_token = api_auth.is_some(),
            "collector serving"
        );
        Ok(Server {
            grpc_addr,
            http_addr,
            store,
            closing,
            tasks: tasks
                .into_iter()
                .chain([http_task])
                .chain(retention)
                .collect(),
        })
    }

    /// Where agents connect (a `process` node does not listen: the configured address).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the API answers.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The store in use.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Ends every agent stream (agents reconnect elsewhere or later), stops accepting,
    /// and waits up to [`SHUTDOWN_GRACE`] for connections to finish.
    pub async fn shutdown(self) {
        let _ = self.closing.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
        tracing::info!("collector stopped");
    }
}
