//! How the agent reaches the collector beyond its address: the bearer token, TLS (the
//! `tls` feature) and compression on the wire. The builder sets them
//! (`.token()`, `.tls_ca_file()`, `.compression()` and their `HOLMES_*` variables); they
//! are checked here when the configuration is resolved.

use std::path::PathBuf;

use holmes_proto::pb::ingest_client::IngestClient;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// Compression of what the agent sends to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Nothing compressed.
    None,
    /// gzip (always built in).
    Gzip,
    /// zstd (needs the `zstd` feature): about as small as gzip at a fraction of its CPU.
    Zstd,
}

/// What the agent sends with when neither code nor `HOLMES_COMPRESSION` says: gzip,
/// which every build has and every Holmes collector accepts. Profiles are already
/// gzip-compressed pprof, so this mostly shrinks metric windows and trigger events.
pub const DEFAULT_COMPRESSION: Compression = Compression::Gzip;

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err("expected zstd, gzip or none".to_owned()),
        }
    }
}

impl Compression {
    fn encoding(self) -> Option<CompressionEncoding> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            #[cfg(feature = "zstd")]
            Compression::Zstd => Some(CompressionEncoding::Zstd),
            // Refused when the configuration is resolved.
            #[cfg(not(feature = "zstd"))]
            Compression::Zstd => None,
        }
    }
}

/// Transport settings as given, before they are checked.
#[derive(Clone, Default)]
pub(crate) struct TransportSettings {
    pub(crate) token: Option<String>,
    pub(crate) tls_ca_file: Option<PathBuf>,
    pub(crate) compression: Option<Compression>,
}

/// Transport settings that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TransportError {
    /// The token cannot be sent as a header.
    #[error("a non-empty token of visible ASCII without spaces")]
    BadToken,
    /// zstd asked of a build without it.
    #[error("this build of holmes-agent has no zstd (enable its `zstd` feature); gzip or none")]
    NoZstd,
    /// TLS to `url` cannot be set up.
    #[error("{reason}")]
    Tls {
        /// The collector's address.
        url: String,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Debug for TransportSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportSettings")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("compression", &self.compression)
            .finish()
    }
}

impl TransportSettings {
    /// Checks the settings for the collector at `collector` (a URL already checked to
    /// be `http://` or `https://`) and reads the CA file.
    pub(crate) fn resolve(self, collector: Option<&str>) -> Result<Transport, TransportError> {
        let token = match self.token {
            Some(t) => Some(
                MetadataValue::try_from(format!("Bearer {t}"))
                    .ok()
                    .filter(|_| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
                    .ok_or(TransportError::BadToken)?,
            ),
            None => None,
        };
        let compression = self.compression.unwrap_or(DEFAULT_COMPRESSION);
        if compression == Compression::Zstd && !cfg!(feature = "zstd") {
            return Err(TransportError::NoZstd);
        }
        let https = collector.filter(|url| url.starts_with("https://"));
        let tls = match https {
            Some(url) => Some(tls_settings(url, self.tls_ca_file.as_deref())?),
            None => None,
        };
        Ok(Transport {
            token,
            tls,
            compression,
        })
    }
}

/// The CA to trust for an `https://` collector: the CA file's PEM, or `None` for the
/// system's roots.
#[cfg(feature = "tls")]
fn tls_settings(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<TlsSettings, TransportError> {
    let ca_pem = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| TransportError::Tls {
                url: url.to_owned(),
                reason: format!("cannot read the CA file {}: {e}", path.display()),
            })?;
            if !pem
                .windows(b"-----BEGIN CERTIFICATE-----".len())
                .any(|w| w == b"-----BEGIN CERTIFICATE-----")
            {
                return Err(TransportError::Tls {
                    url: url.to_owned(),
                    reason: format!("the CA file {} holds no PEM certificate", path.display()),
                });
            }
            Some(pem)
        }
        None => None,
    };
    Ok(TlsSettings { ca_pem })
}

#[cfg(not(feature = "tls"))]
fn tls_settings(
    url: &str,
    _ca_file: Option<&std::path::Path>,
) -> Result<TlsSettings, TransportError> {
    Err(TransportError::Tls {
        url: url.to_owned(),
        reason: "https:// needs holmes-agent's `tls` feature; use http:// or enable it".to_owned(),
    })
}

/// What TLS trusts.
#[derive(Clone)]
struct TlsSettings {
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    ca_pem: Option<Vec<u8>>,
}

/// Checked transport settings.
#[derive(Clone)]
pub(crate) struct Transport {
    token: Option<AsciiMetadataValue>,
    tls: Option<TlsSettings>,
    pub(crate) compression: Compression,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            token: None,
            tls: None,
            compression: DEFAULT_COMPRESSION,
        }
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .field("compression", &self.compression)
            .finish()
    }
}

impl Transport {
    /// The endpoint for `url`, with TLS when it is `https://`.
    pub(crate) fn endpoint(&self, url: &str) -> Result<Endpoint, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(url.to_owned())?;
        match &self.tls {
            #[cfg(feature = "tls")]
            Some(tls) => {
                let config = tonic::transport::ClientTlsConfig::new();
                let config = match &tls.ca_pem {
                    Some(pem) => {
                        config.ca_certificate(tonic::transport::Certificate::from_pem(pem))
                    }
                    None => config.with_native_roots(),
                };
                endpoint.tls_config(config)
            }
            _ => Ok(endpoint),
        }
    }

    /// The ingest client on `channel`, compressing what it sends as configured (and
    /// accepting whatever the collector compresses).
    pub(crate) fn client(&self, channel: Channel) -> IngestClient<Channel> {
        let mut client = IngestClient::new(channel).accept_compressed(CompressionEncoding::Gzip);
        #[cfg(feature = "zstd")]
        {
            client = client.accept_compressed(CompressionEncoding::Zstd);
        }
        if let Some(encoding) = self.compression.encoding() {
            client = client.send_compressed(encoding);
        }
        client
    }

    /// `message` as a request carrying the token, if there is one.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }
}

#[cfg(test)]
mod tests;
