//! Changes an operator makes through the API: central rules set or deleted, captures
//! paused or resumed. Each is checked (a bad rule is refused naming the metric and the
//! field, in the agents' words), recorded under a new control version with who made it,
//! and this node's loop is woken so its agents get it at once.

use std::collections::BTreeMap;

use holmes_proto::names::validate_name;
use holmes_proto::Metric;
use holmes_storage::{canonical_selector, ChangedBy, PauseEdit, RuleEdit, StoreError};

use super::rules::{check_text, rule_metric};
use super::Control;
use crate::clock::unix_nanos_now;

/// A change that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// Something in the change is wrong (a bad rule, selector or name).
    #[error("{0}")]
    Invalid(String),
    /// There is nothing to delete.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who makes a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// Name (`alice`); `api` when the caller gave none.
    pub name: String,
    /// Why (may be empty).
    pub note: String,
}

impl Author {
    fn changed_by(&self) -> ChangedBy {
        ChangedBy {
            author: if self.name.trim().is_empty() {
                "api".to_owned()
            } else {
                self.name.trim().to_owned()
            },
            note: self.note.clone(),
            unix_nanos: unix_nanos_now(),
        }
    }
}

fn check_service(service: &str) -> Result<(), EditError> {
    validate_name("service", service).map_err(|e| EditError::Invalid(e.to_string()))
}

impl Control {
    /// Sets the rules `texts` (metric name → rule text) of `service`'s layer for
    /// `selector` (empty: all its agents); other metrics of the layer stay. Returns the
    /// new control version.
    pub async fn set_rules(
        &self,
        service: &str,
        selector: &str,
        texts: &BTreeMap<String, String>,
        author: &Author,
    ) -> Result<u64, EditError> {
        check_service(service)?;
        let selector = canonical_selector(selector).map_err(EditError::Invalid)?;
        if texts.is_empty() {
            return Err(EditError::Invalid(
                "no rules given: name at least one metric (cpu, memory, threads, tasks, heap) with a rule text".to_owned(),
            ));
        }
        let in_force = self.store.rules_in_force(Some(service)).await?;
        let service_wide = |metric: Metric| {
            in_force
                .iter()
                .find(|c| c.edit.selector.is_empty() && c.edit.metric == metric)
                .and_then(|c| c.edit.text.clone())
        };
        let mut edits = Vec::with_capacity(texts.len());
        for (name, text) in texts {
            let text = text.trim();
            let bad =
                |reason: String| EditError::Invalid(format!("rule {name} {text:?}: {reason}"));
            let metric = rule_metric(name).map_err(bad)?;
            let below = if selector.is_empty() {
                None
            } else {
                service_wide(metric)
            };
            check_text(metric, text, below.as_deref()).map_err(bad)?;
            edits.push(RuleEdit {
                service: service.to_owned(),
                selector: selector.clone(),
                metric,
                text: Some(text.to_owned()),
            });
        }
        let version = self
            .store
            .change_rules(&edits, &author.changed_by())
            .await?;
        tracing::info!(%service, %selector, version, author = %author.name, ?texts, "central rules set");
        self.poke();
        Ok(version)
    }

    /// Deletes `service`'s central rule for `metric` in the layer of `selector`, or
    /// every rule of that layer; its agents get their own rules back. Returns the new
    /// control version.
    pub async fn delete_rules(
        &self,
        service: &str,
        selector: &str,
        metric: Option<&str>,
        author: &Author,
    ) -> Result<u64, EditError> {
        check_service(service)?;
        let selector = canonical_selector(selector).map_err(EditError::Invalid)?;
        let metric = metric
            .map(|m| rule_metric(m).map_err(EditError::Invalid))
            .transpose()?;
        let edits: Vec<RuleEdit> = self
            .store
            .rules_in_force(Some(service))
            .await?
            .into_iter()
            .filter(|c| {
                c.edit.selector == selector
                    && c.edit.text.is_some()
                    && metric.is_none_or(|m| m == c.edit.metric)
            })
            .map(|c| RuleEdit {
                text: None,
                ..c.edit
            })
            .collect();
        if edits.is_empty() {
            let what = metric.map_or("rules".to_owned(), |m| format!("{m} rule"));
            let layer = if selector.is_empty() {
                String::new()
            } else {
                format!(" for {selector}")
            };
            return Err(EditError::NotFound(format!(
                "service {service:?} has no central {what}{layer}"
            )));
        }
        let version = self
            .store
            .change_rules(&edits, &author.changed_by())
            .await?;
        tracing::info!(%service, %selector, version, author = %author.name, deleted = edits.len(), "central rules deleted");
        self.poke();
        Ok(version)
    }

    /// Pauses captures of `service` (or of the fleet, `None`) until `until_unix_nanos`,
    /// or lifts the pause (`0`). Returns the new control version.
    pub async fn set_pause(
        &self,
        service: Option<&str>,
        until_unix_nanos: u64,
        reason: &str,
        author: &Author,
    ) -> Result<u64, EditError> {
        if let Some(service) = service {
            check_service(service)?;
        }
        let edit = PauseEdit {
            scope: service.unwrap_or("").to_owned(),
            until_unix_nanos,
            reason: reason.trim().to_owned(),
        };
        let version = self.store.change_pause(&edit, &author.changed_by()).await?;
        tracing::info!(service = service.unwrap_or("(fleet)"), until_unix_nanos, version, author = %author.name, reason, "captures paused or resumed");
        self.poke();
        Ok(version)
    }
}
