//! The `[alerts]` section of the config file: where alerts go and which incidents each
//! hook wants, checked before anything is sent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use holmes_storage::Severity;
use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::auth::Secret;

/// Why the `[alerts]` section cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AlertsConfigError {
    /// A routing key file could not be read.
    #[error("cannot read the routing key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A setting or hook is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// Where PagerDuty hooks send events when they name no `url`.
pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// First retry delay of a failed delivery; each retry doubles it.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest delay between two attempts.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(5 * 60);
/// How long an alert is retried before it is given up (kept as failed).
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// Most alerts waiting for delivery at once; beyond it `notify` refuses new ones.
pub const DEFAULT_MAX_PENDING: u64 = 100_000;
/// Longest wait for a hook's answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Alert hooks and their delivery (`[alerts]` and `[[alerts.hooks]]` in the file),
/// durations as text (`retry_initial = "1s"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Links in alerts point to `{base_url}/ui/incidents/{id}`; without it, to the
    /// collector's own HTTP address.
    pub base_url: Option<String>,
    /// First retry delay (doubles per attempt, with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest delay between attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// An alert still undelivered this long after it was queued is given up.
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// Most alerts waiting for delivery at once.
    pub max_pending: u64,
    /// Longest wait for one hook's answer.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The hooks; none means no alerts.
    pub hooks: Vec<HookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            base_url: None,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            max_pending: DEFAULT_MAX_PENDING,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            hooks: Vec::new(),
        }
    }
}

/// What a hook speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    /// A JSON document describing the incident, POSTed to any URL.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Alertmanager's `POST /api/v2/alerts` (the URL names that path).
    Alertmanager,
}

impl HookKind {
    /// `webhook`, `slack`, `pagerduty` or `alertmanager`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Webhook => "webhook",
            HookKind::Slack => "slack",
            HookKind::Pagerduty => "pagerduty",
            HookKind::Alertmanager => "alertmanager",
        }
    }
}

/// The least severe incident a hook hears about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MinSeverity {
    /// Every incident.
    #[default]
    Instance,
    /// Fleet incidents only (several instances of a service together).
    Fleet,
}

impl MinSeverity {
    /// Whether an incident of `severity` passes.
    pub fn admits(self, severity: Severity) -> bool {
        match self {
            MinSeverity::Instance => true,
            MinSeverity::Fleet => severity == Severity::Fleet,
        }
    }
}

/// One `[[alerts.hooks]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Unique name; the outbox remembers deliveries by it.
    pub name: String,
    /// What the hook speaks.
    pub kind: HookKind,
    /// Where to POST; PagerDuty defaults to [`DEFAULT_PAGERDUTY_URL`].
    pub url: Option<String>,
    /// PagerDuty integration (routing) key.
    pub routing_key: Option<Secret>,
    /// File holding the routing key, instead of `routing_key`.
    pub routing_key_file: Option<PathBuf>,
    /// Only incidents of these services; empty for all.
    #[serde(default)]
    pub services: Vec<String>,
    /// Only incidents at least this severe.
    #[serde(default)]
    pub min_severity: MinSeverity,
    /// Extra request headers (webhook only), e.g. an `Authorization` the receiver wants.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

/// Checks an `http://` or `https://` URL with a host.
pub(crate) fn check_url(what: &str, url: &str) -> Result<hyper::Uri, AlertsConfigError> {
    let bad = |reason: &str| AlertsConfigError::Invalid(format!("{what} = {url:?}: {reason}"));
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&format!("not a URL ({e})")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("expected an http:// or https:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host"));
    }
    Ok(uri)
}

impl HookConfig {
    /// The URL this hook POSTs to.
    pub fn url(&self) -> &str {
        match (&self.url, self.kind) {
            (Some(url), _) => url,
            (None, HookKind::Pagerduty) => DEFAULT_PAGERDUTY_URL,
            (None, _) => "",
        }
    }

    /// Whether this hook wants alerts about an incident of `service` at `severity`.
    pub fn wants(&self, service: &str, severity: Severity) -> bool {
        (self.services.is_empty() || self.services.iter().any(|s| s == service))
            && self.min_severity.admits(severity)
    }

    /// The headers to send, checked.
    pub(crate) fn header_values(
        &self,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, AlertsConfigError> {
        let mut out = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let what = format!("alerts.hooks {:?}: header {name:?}", self.name);
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| AlertsConfigError::Invalid(format!("{what} is not a header name")))?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                AlertsConfigError::Invalid(format!("{what} has a value that cannot be sent"))
            })?;
            value.set_sensitive(true);
            out.push((header, value));
        }
        Ok(out)
    }

    fn validate(&self) -> Result<(), AlertsConfigError> {
        let name = &self.name;
        let invalid =
            |reason: String| AlertsConfigError::Invalid(format!("alerts.hooks {name:?}: {reason}"));
        holmes_proto::names::validate_name("hook name", name)
            .map_err(|e| AlertsConfigError::Invalid(format!("alerts.hooks: {e}")))?;
        match (self.kind, &self.url) {
            (HookKind::Pagerduty, _) | (_, Some(_)) => {}
            (kind, None) => {
                return Err(invalid(format!("a {} hook needs a url", kind.as_str())));
            }
        }
        check_url(&format!("alerts.hooks {name:?}: url"), self.url())?;
        let has_key = self.routing_key.is_some() || self.routing_key_file.is_some();
        match self.kind {
            HookKind::Pagerduty => {
                if self.routing_key.is_some() && self.routing_key_file.is_some() {
                    return Err(invalid(
                        "set routing_key or routing_key_file, not both".to_owned(),
                    ));
                }
                if !has_key {
                    return Err(invalid(
                        "a pagerduty hook needs routing_key or routing_key_file".to_owned(),
                    ));
                }
                if let Some(key) = &self.routing_key {
                    if key.expose().trim().is_empty() {
                        return Err(invalid("routing_key is empty".to_owned()));
                    }
                }
            }
            kind => {
                if has_key {
                    return Err(invalid(format!(
                        "routing_key is for pagerduty hooks, not {}",
                        kind.as_str()
                    )));
                }
            }
        }
        if !self.headers.is_empty() && self.kind != HookKind::Webhook {
            return Err(invalid(format!(
                "headers are for webhook hooks, not {}",
                self.kind.as_str()
            )));
        }
        self.header_values()?;
        for service in &self.services {
            holmes_proto::names::validate_name("service", service)
                .map_err(|e| invalid(format!("services: {e}")))?;
        }
        Ok(())
    }

    /// The routing key, read from its file if it has one.
    pub(crate) fn routing_key(&self) -> Result<Option<Secret>, AlertsConfigError> {
        if let Some(key) = &self.routing_key {
            return Ok(Some(Secret::new(key.expose().trim())));
        }
        let Some(path) = &self.routing_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| AlertsConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let key = text.trim();
        if key.is_empty() {
            return Err(AlertsConfigError::Invalid(format!(
                "alerts.hooks {:?}: routing_key_file {} is empty",
                self.name,
                path.display()
            )));
        }
        Ok(Some(Secret::new(key)))
    }
}

impl AlertsConfig {
    /// Keys of older releases, each with what replaced it: refused naming the
    /// replacement rather than as unknown keys.
    pub const REPLACED_KEYS: &'static [(&'static str, &'static str)] = &[
        ("retry_initial_ms", "retry_initial = \"1s\""),
        ("retry_max_ms", "retry_max = \"5m\""),
        ("give_up_after_secs", "give_up_after = \"24h\""),
        ("request_timeout_ms", "request_timeout = \"10s\""),
    ];

    /// Checks every hook (URLs, keys, filters) and that names are unique; files are
    /// read later, when the alerter starts.
    pub fn validate(&self) -> Result<(), AlertsConfigError> {
        if let Some(base) = &self.base_url {
            check_url("alerts.base_url", base)?;
        }
        let at_least = |key: &str, value: Duration, min: Duration| {
            if value < min {
                return Err(AlertsConfigError::Invalid(format!(
                    "alerts.{key} = {:?} is too short; at least {}",
                    humantime::format_duration(value).to_string(),
                    humantime::format_duration(min)
                )));
            }
            Ok(())
        };
        at_least(
            "retry_initial",
            self.retry_initial,
            Duration::from_millis(1),
        )?;
        at_least(
            "request_timeout",
            self.request_timeout,
            Duration::from_millis(1),
        )?;
        if self.retry_max < self.retry_initial {
            return Err(AlertsConfigError::Invalid(format!(
                "alerts.retry_max = {:?} is below retry_initial = {:?}",
                humantime::format_duration(self.retry_max).to_string(),
                humantime::format_duration(self.retry_initial).to_string()
            )));
        }
        if self.max_pending == 0 {
            return Err(AlertsConfigError::Invalid(
                "alerts.max_pending = 0 is too small; at least 1".to_owned(),
            ));
        }
        let mut names = BTreeSet::new();
        for hook in &self.hooks {
            hook.validate()?;
            if !names.insert(hook.name.as_str()) {
                return Err(AlertsConfigError::Invalid(format!(
                    "alerts.hooks: two hooks are named {:?}",
                    hook.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AlertsConfig, String> {
        toml::from_str::<AlertsConfig>(text).map_err(|e| e.to_string())
    }

    fn error_of(text: &str) -> String {
        parse(text).unwrap().validate().unwrap_err().to_string()
    }

    #[test]
    fn hooks_parse_with_their_defaults() {
        let c = parse(
            r#"
            [[hooks]]
            name = "pd"
            kind = "pagerduty"
            routing_key = "R0UT1NG"
            min_severity = "fleet"

            [[hooks]]
            name = "ops"
            kind = "webhook"
            url = "http://hooks.internal:8080/holmes"
            services = ["checkout"]
            headers = { Authorization = "Bearer abc" }
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.retry_initial, DEFAULT_RETRY_INITIAL);
        assert_eq!(c.hooks[0].url(), DEFAULT_PAGERDUTY_URL);
        assert!(!c.hooks[0].wants("cart", Severity::Instance));
        assert!(c.hooks[0].wants("cart", Severity::Fleet));
        assert!(c.hooks[1].wants("checkout", Severity::Instance));
        assert!(!c.hooks[1].wants("cart", Severity::Fleet));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("R0UT1NG") && !shown.contains("abc"),
            "{shown}"
        );
    }

    #[test]
    fn bad_hooks_are_refused_with_the_reason() {
        for (text, expected) in [
            (
                "[[hooks]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"ftp://x/y\"",
                "alerts.hooks \"a\": url = \"ftp://x/y\": expected an http:// or https:// URL",
            ),
            (
                "[[hooks]]\nname = \"a\"\nkind = \"slack\"",
                "alerts.hooks \"a\": a slack hook needs a url",
            ),
            (
                "[[hooks]]\nname = \"pd\"\nkind = \"pagerduty\"",
                "alerts.hooks \"pd\": a pagerduty hook needs routing_key or routing_key_file",
            ),
            (
                "[[hooks]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x\"\n[[hooks]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://y\"",
                "alerts.hooks: two hooks are named \"a\"",
            ),
            (
                "[[hooks]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://y\"\nrouting_key = \"k\"",
                "alerts.hooks \"a\": routing_key is for pagerduty hooks, not slack",
            ),
            (
                "[[hooks]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x\"\nservices = [\"check out\"]",
                "alerts.hooks \"a\": services: service \"check out\" has the character ' '",
            ),
            (
                "base_url = \"holmes.internal\"",
                "alerts.base_url = \"holmes.internal\": expected an http:// or https:// URL",
            ),
        ] {
            let err = error_of(text);
            assert!(err.starts_with(expected), "{text}: {err}");
        }
        assert!(parse("[[hooks]]\nname = \"a\"\nkind = \"email\"\nurl = \"http://x\"").is_err());
        assert!(parse("[[hooks]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x\"\nmin_severity = \"high\"").is_err());
        assert!(parse("retry_initial = 5").is_err());
        assert!(parse("retry_initial_ms = 5").is_err());
        assert!(parse("retry_initial = \"5ms\"\nretry_max = \"1ms\"")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("alerts.retry_max = \"1ms\" is below retry_initial = \"5ms\""));
    }
}
