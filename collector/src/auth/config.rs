//! The `[auth]` section: the API token and the agents' tokens by service, inline or in
//! files, and `HOLMES_INGEST_TOKENS` / `--ingest-tokens` ([`TokenList`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Secret, WILDCARD_SERVICE};

/// Why the `[auth]` section cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A token file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// The key naming the file.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A token or service name is unusable, or a token is given twice.
    #[error("{0}")]
    Invalid(String),
}

/// Bearer tokens (`[auth]`). Without ingest tokens any agent may send; without an API
/// token the API is open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Token required on `/api/...` (`Authorization: Bearer <token>`).
    pub api_token: Option<Secret>,
    /// File holding the API token (trailing whitespace ignored), instead of `api_token`.
    pub api_token_file: Option<PathBuf>,
    /// Agent tokens by service name; the key `"*"` holds the token of every service
    /// without its own.
    pub ingest_tokens: BTreeMap<String, Secret>,
    /// Files holding agent tokens, by service name (or `"*"`), instead of inline ones.
    pub ingest_token_files: BTreeMap<String, PathBuf>,
    /// Serve without tokens on addresses other machines can reach. Off by default: a
    /// listener on a non-loopback address without its tokens refuses to start.
    pub allow_open: bool,
}

/// Reads a token file: its content without surrounding whitespace, never empty.
fn read_token_file(what: &str, path: &Path) -> Result<Secret, AuthConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
        what: what.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    check_token(what, token)?;
    Ok(Secret::new(token))
}

/// A token must fit in an HTTP header: visible ASCII without spaces.
fn check_token(what: &str, token: &str) -> Result<(), AuthConfigError> {
    if token.is_empty() {
        return Err(AuthConfigError::Invalid(format!("{what} is empty")));
    }
    if token.starts_with("change-me") {
        return Err(AuthConfigError::Invalid(format!(
            "{what} is the deploy kit's placeholder {token:?}; replace it with a secret (e.g. openssl rand -hex 16)"
        )));
    }
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(AuthConfigError::Invalid(format!(
            "{what} has the character {c:?}; tokens are visible ASCII without spaces"
        )));
    }
    Ok(())
}

impl AuthConfig {
    /// The API token, read from its file if it has one.
    pub fn api_token(&self) -> Result<Option<Secret>, AuthConfigError> {
        match (&self.api_token, &self.api_token_file) {
            (Some(_), Some(_)) => Err(AuthConfigError::Invalid(
                "auth: set api_token or api_token_file, not both".to_owned(),
            )),
            (Some(t), None) => {
                check_token("auth.api_token", t.expose())?;
                Ok(Some(t.clone()))
            }
            (None, Some(path)) => read_token_file("auth.api_token_file", path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Agent tokens by service (or `"*"`), files read.
    pub fn ingest_tokens(&self) -> Result<BTreeMap<String, Secret>, AuthConfigError> {
        let mut tokens = BTreeMap::new();
        for (service, token) in &self.ingest_tokens {
            check_token(&format!("auth.ingest_tokens.{service}"), token.expose())?;
            tokens.insert(service.clone(), token.clone());
        }
        for (service, path) in &self.ingest_token_files {
            if tokens.contains_key(service) {
                return Err(AuthConfigError::Invalid(format!(
                    "auth: service {service:?} has both an ingest token and a token file"
                )));
            }
            let token = read_token_file(&format!("auth.ingest_token_files.{service}"), path)?;
            tokens.insert(service.clone(), token);
        }
        Ok(tokens)
    }

    /// Checks the tokens and service names; files are read later, at start.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        if self.api_token.is_some() && self.api_token_file.is_some() {
            return Err(AuthConfigError::Invalid(
                "auth: set api_token or api_token_file, not both".to_owned(),
            ));
        }
        if let Some(t) = &self.api_token {
            check_token("auth.api_token", t.expose())?;
        }
        for (service, token) in &self.ingest_tokens {
            check_token(&format!("auth.ingest_tokens.{service}"), token.expose())?;
        }
        for service in self
            .ingest_tokens
            .keys()
            .chain(self.ingest_token_files.keys())
        {
            if service != WILDCARD_SERVICE {
                holmes_proto::names::validate_name("service", service)
                    .map_err(|e| AuthConfigError::Invalid(format!("auth: {e}")))?;
            }
        }
        Ok(())
    }

    /// Refuses listeners that other machines can reach without the tokens that guard
    /// them, unless `allow_open` says to run open: `grpc` (when bound) needs an ingest
    /// token, `http` the API token.
    pub fn check_exposure(
        &self,
        grpc: Option<std::net::SocketAddr>,
        http: std::net::SocketAddr,
    ) -> Result<(), AuthConfigError> {
        if self.allow_open {
            return Ok(());
        }
        let open = |what: &str, addr: std::net::SocketAddr, key: &str| {
            AuthConfigError::Invalid(format!(
                "{what} {addr} is reachable from other machines but no {key} is configured; set it, listen on 127.0.0.1, or set [auth] allow_open = true (HOLMES_ALLOW_OPEN=true, --allow-open) to run open"
            ))
        };
        if let Some(grpc) = grpc.filter(|a| !a.ip().is_loopback()) {
            if self.ingest_tokens.is_empty() && self.ingest_token_files.is_empty() {
                return Err(open(
                    "grpc_addr",
                    grpc,
                    "ingest token ([auth] ingest_tokens or ingest_token_files)",
                ));
            }
        }
        if !http.ip().is_loopback() && self.api_token.is_none() && self.api_token_file.is_none() {
            return Err(open(
                "http_addr",
                http,
                "API token ([auth] api_token or api_token_file)",
            ));
        }
        Ok(())
    }
}

/// `service=token,service=token` (`"*"` for every other service), as
/// `HOLMES_INGEST_TOKENS` spells the agent tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenList(pub BTreeMap<String, Secret>);

impl std::fmt::Debug for TokenList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl std::str::FromStr for TokenList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tokens = BTreeMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (service, token) = pair
                .split_once('=')
                .ok_or_else(|| "expected service=token[,service=token...]".to_owned())?;
            let (service, token) = (service.trim(), token.trim());
            if service != WILDCARD_SERVICE {
                holmes_proto::names::validate_name("service", service)
                    .map_err(|e| e.to_string())?;
            }
            check_token(&format!("the token of {service:?}"), token).map_err(|e| e.to_string())?;
            tokens.insert(service.to_owned(), Secret::new(token));
        }
        Ok(TokenList(tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_settings_are_checked_and_files_read() {
        for (toml, expected) in [
            (
                "[tls]\ncert_file = \"c.pem\"",
                "tls: set both cert_file and key_file",
            ),
            (
                "[auth]\napi_token = \"a b\"",
                "auth.api_token has the character ' '",
            ),
            (
                "[auth.ingest_tokens]\n\"check out\" = \"t\"",
                "auth: service \"check out\" has the character ' '",
            ),
            (
                "[auth]\napi_token = \"t\"\napi_token_file = \"f\"",
                "auth: set api_token or api_token_file, not both",
            ),
            (
                "[auth.ingest_tokens]\n\"*\" = \"change-me-ingest-token\"",
                "auth.ingest_tokens.* is the deploy kit's placeholder",
            ),
        ] {
            let err = crate::config::Config::from_toml(toml, Path::new("x.toml"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{toml}: {err}");
        }
        assert!(crate::config::Config::from_toml("[tls]\ncert = \"c\"", Path::new("x")).is_err());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cart");
        std::fs::write(&file, "cart-token\n").unwrap();
        let auth = AuthConfig {
            ingest_token_files: [("cart".to_owned(), file.clone())].into(),
            api_token_file: Some(file),
            ..AuthConfig::default()
        };
        assert_eq!(auth.ingest_tokens().unwrap()["cart"].expose(), "cart-token");
        assert_eq!(auth.api_token().unwrap().unwrap().expose(), "cart-token");
        // The deploy kit's placeholder in a mounted Secret is refused when read.
        std::fs::write(dir.path().join("cart"), "change-me-api-token\n").unwrap();
        let err = auth.api_token().unwrap_err().to_string();
        assert!(err.contains("placeholder"), "{err}");
        let missing = AuthConfig {
            api_token_file: Some(dir.path().join("nope")),
            ..AuthConfig::default()
        };
        assert!(matches!(
            missing.api_token(),
            Err(AuthConfigError::Read { .. })
        ));
    }
}
