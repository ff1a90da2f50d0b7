//! TLS for both listeners: the certificate and key files of `[tls]`, handed to tonic for
//! gRPC ingest and to rustls (ring provider) for the HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to complete the TLS handshake on the HTTP API.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for both listeners (`[tls]`): with a certificate and its key, gRPC ingest and
/// the HTTP API serve TLS only; without, both are plain.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's own certificate first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Checks that both files are named, or neither.
    pub fn validate(&self) -> Result<(), TlsError> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(TlsError::Incomplete);
        }
        Ok(())
    }

    /// The certificate and key, read and checked; `None` without TLS.
    pub fn identity(&self) -> Result<Option<Identity>, TlsError> {
        self.validate()?;
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Identity::load(cert, key).map(Some),
            _ => Ok(None),
        }
    }
}

/// Why the TLS settings or files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the two files is named.
    #[error("tls: set both cert_file and key_file (--tls-cert-file, --tls-key-file), or neither")]
    Incomplete,
    /// A file could not be read.
    #[error("cannot read TLS {what} file {path}: {source}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("TLS {what} file {path}: {reason}")]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate and key together.
    #[error("TLS certificate {cert} with key {key}: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
}

/// A certificate chain and its private key, as PEM.
#[derive(Clone)]
pub struct Identity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

impl Identity {
    /// Reads and checks the PEM certificate chain and private key.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Identity, TlsError> {
        let cert_pem = read("certificate", cert_file)?;
        let key_pem = read("key", key_file)?;
        let pem_error = |what, path: &Path, reason: String| TlsError::Pem {
            what,
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error("certificate", cert_file, e.to_string()))?;
        if certs.is_empty() {
            return Err(pem_error(
                "certificate",
                cert_file,
                "no CERTIFICATE block found".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem_error("key", key_file, e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config_error = |source| TlsError::Config {
            cert: cert_file.to_owned(),
            key: key_file.to_owned(),
            source,
        };
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(config_error)?;
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Identity {
            cert_pem,
            key_pem,
            server_config: Arc::new(server_config),
        })
    }

    /// The configuration for tonic's gRPC server.
    pub fn grpc_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            &self.cert_pem,
            &self.key_pem,
        ))
    }
}

/// A TLS listener for axum: connections are accepted and their handshakes run on a
/// task of their own, so a slow or silent client never holds up the others.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `identity` on `listener`.
    pub fn new(listener: TcpListener, identity: &Identity) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::clone(&identity.server_config));
        let (tx, ready) = mpsc::channel(64);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "HTTP TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "HTTP TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local_addr,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // Only after the acceptor task is gone, which happens on drop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
