//! The control plane's calls: central rules and their history, pauses, capture requests.

use holmes_api::control::{
    CaptureDetailJson, CaptureJson, CapturesJson, PausesJson, RuleHistoryJson, RulesEditJson,
    RulesJson,
};
use hyper::Method;

use super::{check_service, encode, ApiClient, ApiClientError};

/// Whom a capture request is for, and what it asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureTarget {
    /// Profile kinds (`cpu`, `heap`, `threads`, `tasks`).
    pub kinds: Vec<String>,
    /// Only agents whose labels match (`k=v[,k=v]`); all when empty.
    pub selector: String,
    /// Only this instance.
    pub instance: Option<String>,
    /// Length of a new CPU profile (`5s`); the agents' default when `None`.
    pub cpu_duration: Option<String>,
    /// Who asks.
    pub by: String,
}

fn service_path(service: &str, rest: &str) -> Result<String, ApiClientError> {
    check_service(service)?;
    Ok(format!("/api/v1/services/{}{rest}", encode(service)))
}

fn pause_path(service: Option<&str>) -> Result<String, ApiClientError> {
    match service {
        Some(s) => service_path(s, "/pause"),
        None => Ok("/api/v1/pause".to_owned()),
    }
}

impl ApiClient {
    /// `GET /api/v1/services/{service}/rules`.
    pub async fn rules(&self, service: &str) -> Result<RulesJson, ApiClientError> {
        self.get(&service_path(service, "/rules")?).await
    }

    /// `PUT /api/v1/services/{service}/rules`: sets the metrics `edit` names.
    pub async fn set_rules(
        &self,
        service: &str,
        edit: &RulesEditJson,
    ) -> Result<RulesJson, ApiClientError> {
        let body = serde_json::to_value(edit).map_err(|e| {
            ApiClientError::InvalidArgument(format!("cannot encode the rules: {e}"))
        })?;
        self.call(Method::PUT, &service_path(service, "/rules")?, Some(&body))
            .await
    }

    /// `DELETE /api/v1/services/{service}/rules[?metric=..][&selector=..][&by=..]`.
    pub async fn delete_rules(
        &self,
        service: &str,
        selector: &str,
        metric: Option<&str>,
        by: &str,
    ) -> Result<RulesJson, ApiClientError> {
        let mut query = vec![format!("by={}", encode(by))];
        if !selector.is_empty() {
            query.push(format!("selector={}", encode(selector)));
        }
        if let Some(metric) = metric {
            query.push(format!("metric={}", encode(metric)));
        }
        let path = service_path(service, &format!("/rules?{}", query.join("&")))?;
        self.call(Method::DELETE, &path, None).await
    }

    /// `GET /api/v1/services/{service}/rules/history?limit=..`.
    pub async fn rule_history(
        &self,
        service: &str,
        limit: u64,
    ) -> Result<RuleHistoryJson, ApiClientError> {
        self.get(&service_path(
            service,
            &format!("/rules/history?limit={limit}"),
        )?)
        .await
    }

    /// `GET` the pauses of a service, or of the fleet (`None`).
    pub async fn pauses(&self, service: Option<&str>) -> Result<PausesJson, ApiClientError> {
        self.get(&pause_path(service)?).await
    }

    /// `PUT` a pause of a service, or of the fleet (`None`), for `duration` (`30m`).
    pub async fn pause(
        &self,
        service: Option<&str>,
        duration: &str,
        reason: &str,
        by: &str,
    ) -> Result<PausesJson, ApiClientError> {
        let body = serde_json::json!({ "for": duration, "reason": reason, "by": by });
        self.call(Method::PUT, &pause_path(service)?, Some(&body))
            .await
    }

    /// `DELETE` the pause of a service, or of the fleet (`None`): captures resume.
    pub async fn resume(
        &self,
        service: Option<&str>,
        by: &str,
    ) -> Result<PausesJson, ApiClientError> {
        let path = format!("{}?by={}", pause_path(service)?, encode(by));
        self.call(Method::DELETE, &path, None).await
    }

    /// `POST /api/v1/services/{service}/capture?kind=..`: asks the agents of the service
    /// that `target` names, on every collector node, to capture now.
    pub async fn capture(
        &self,
        service: &str,
        target: &CaptureTarget,
    ) -> Result<CaptureJson, ApiClientError> {
        let mut query: Vec<String> = target
            .kinds
            .iter()
            .map(|k| format!("kind={}", encode(k)))
            .collect();
        if !target.selector.is_empty() {
            query.push(format!("selector={}", encode(&target.selector)));
        }
        if let Some(instance) = &target.instance {
            query.push(format!("instance={}", encode(instance)));
        }
        if let Some(d) = &target.cpu_duration {
            query.push(format!("cpu_duration={}", encode(d)));
        }
        if !target.by.is_empty() {
            query.push(format!("by={}", encode(&target.by)));
        }
        self.post(&service_path(
            service,
            &format!("/capture?{}", query.join("&")),
        )?)
        .await
    }

    /// `GET /api/v1/services/{service}/captures?since=..`.
    pub async fn captures(
        &self,
        service: &str,
        since: &str,
    ) -> Result<CapturesJson, ApiClientError> {
        self.get(&service_path(
            service,
            &format!("/captures?since={}", encode(since)),
        )?)
        .await
    }

    /// `GET /api/v1/captures/{request_id}`.
    pub async fn capture_detail(
        &self,
        request_id: &str,
    ) -> Result<CaptureDetailJson, ApiClientError> {
        holmes_api::control::validate_request_id(request_id)
            .map_err(ApiClientError::InvalidArgument)?;
        self.get(&format!("/api/v1/captures/{request_id}")).await
    }
}
