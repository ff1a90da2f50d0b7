//! `[symbolize]`: where the collector may fetch debug info nobody uploaded (debuginfod
//! servers; none by default).

use std::time::Duration;

use serde::Deserialize;

/// How long one debuginfod request may take, answer included, unless configured.
pub const DEFAULT_DEBUGINFOD_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest debug file fetched from a debuginfod server, unless configured.
pub const DEFAULT_DEBUGINFOD_MAX_BYTES: u64 = 512 << 20;
/// How long before a build that no server had is asked for again, unless configured.
pub const DEFAULT_DEBUGINFOD_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// The `[symbolize]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SymbolizeConfig {
    /// debuginfod servers (`http://` or `https://`), asked in order for the debug info
    /// of a build the store lacks and no agent uploads; empty (the default): none.
    pub debuginfod_urls: Vec<String>,
    /// Longest a request to one server may take, the whole answer included.
    #[serde(with = "humantime_serde")]
    pub debuginfod_timeout: Duration,
    /// Largest debug file taken from a server, bytes (at most 1 GiB, the largest upload).
    pub debuginfod_max_bytes: u64,
    /// A build is asked for at most once per this interval, whatever the answers.
    #[serde(with = "humantime_serde")]
    pub debuginfod_interval: Duration,
}

impl Default for SymbolizeConfig {
    fn default() -> Self {
        SymbolizeConfig {
            debuginfod_urls: Vec::new(),
            debuginfod_timeout: DEFAULT_DEBUGINFOD_TIMEOUT,
            debuginfod_max_bytes: DEFAULT_DEBUGINFOD_MAX_BYTES,
            debuginfod_interval: DEFAULT_DEBUGINFOD_INTERVAL,
        }
    }
}

/// A `[symbolize]` section that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SymbolizeConfigError {
    /// A server URL is not an `http://` or `https://` URL.
    #[error("[symbolize] debuginfod_urls: {url:?} is not an http:// or https:// URL")]
    Url {
        /// The URL as given.
        url: String,
    },
    /// A setting is out of its range.
    #[error("[symbolize] {key} = {value} is out of range: {expected}")]
    Range {
        /// The key.
        key: &'static str,
        /// Its value, as given.
        value: String,
        /// What it may be.
        expected: &'static str,
    },
}

impl SymbolizeConfig {
    /// Server URLs from `HOLMES_DEBUGINFOD_URLS` (`--debuginfod-urls`): separated by
    /// spaces or commas, as elfutils' `DEBUGINFOD_URLS` takes them.
    pub fn urls_from_list(list: &str) -> Vec<String> {
        list.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Checks the section.
    pub fn validate(&self) -> Result<(), SymbolizeConfigError> {
        for url in &self.debuginfod_urls {
            let uri: Result<hyper::Uri, _> = url.parse();
            let ok = uri.is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !ok {
                return Err(SymbolizeConfigError::Url { url: url.clone() });
            }
        }
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        if self.debuginfod_timeout < Duration::from_secs(1) {
            return Err(SymbolizeConfigError::Range {
                key: "debuginfod_timeout",
                value: duration(self.debuginfod_timeout),
                expected: "at least 1s",
            });
        }
        if !(1 << 20..=crate::symbolize::upload::MAX_UPLOAD_BYTES as u64)
            .contains(&self.debuginfod_max_bytes)
        {
            return Err(SymbolizeConfigError::Range {
                key: "debuginfod_max_bytes",
                value: self.debuginfod_max_bytes.to_string(),
                expected: "1048576 (1 MiB) to 1073741824 (1 GiB)",
            });
        }
        if self.debuginfod_interval < Duration::from_secs(60) {
            return Err(SymbolizeConfigError::Range {
                key: "debuginfod_interval",
                value: duration(self.debuginfod_interval),
                expected: "at least 1m",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_checked() {
        let c = SymbolizeConfig::default();
        assert!(c.debuginfod_urls.is_empty());
        c.validate().unwrap();
        let parsed: SymbolizeConfig = toml::from_str(
            r#"
            debuginfod_urls = ["https://debuginfod.debian.net", "http://10.0.0.5:8002/"]
            debuginfod_timeout = "20s"
            debuginfod_max_bytes = 268435456
            debuginfod_interval = "30m"
            "#,
        )
        .unwrap();
        parsed.validate().unwrap();
        assert_eq!(parsed.debuginfod_timeout, Duration::from_secs(20));
        assert_eq!(parsed.debuginfod_interval, Duration::from_secs(1800));
        let unknown = toml::from_str::<SymbolizeConfig>("debuginfod_url = []").unwrap_err();
        assert!(unknown.to_string().contains("debuginfod_url"), "{unknown}");
        let bad = SymbolizeConfig {
            debuginfod_urls: vec!["debuginfod.debian.net".to_owned()],
            ..SymbolizeConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "[symbolize] debuginfod_urls: \"debuginfod.debian.net\" is not an http:// or https:// URL"
        );
        let often = SymbolizeConfig {
            debuginfod_interval: Duration::from_secs(5),
            ..SymbolizeConfig::default()
        };
        assert_eq!(
            often.validate().unwrap_err().to_string(),
            "[symbolize] debuginfod_interval = 5s is out of range: at least 1m"
        );
    }

    #[test]
    fn the_environment_list_splits_on_spaces_and_commas() {
        assert_eq!(
            SymbolizeConfig::urls_from_list(" http://a:1  https://b,http://c "),
            ["http://a:1", "https://b", "http://c"]
        );
        assert!(SymbolizeConfig::urls_from_list("").is_empty());
    }
}
