//! The config file's `[rules.<service>]` tables as central rules: a seed, not an
//! override.
//!
//! At start, for every service and metric of the file, the service-wide central rule is
//! written (author [`SEED_AUTHOR`]) when the store has none yet, or when the last change
//! of that rule was a seed too and the file now says something else. Once an operator
//! changed or deleted the rule through the API, the file no longer touches it (the start
//! says so in the log). A metric removed from the file whose rule is still the file's
//! seed is deleted. Several collectors starting with the same file change nothing twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use holmes_storage::{ChangedBy, RuleEdit, Store, StoreError};

use super::rules::{rule_metric, ServiceRules};
use crate::clock::unix_nanos_now;

/// The author of rules written from the config file.
pub const SEED_AUTHOR: &str = "config file";

/// Writes the file's rules where they are still the file's to write; returns how many
/// rules were written or deleted.
pub async fn seed(store: &Arc<dyn Store>, rules: &ServiceRules) -> Result<usize, StoreError> {
    let in_force = store.rules_in_force(None).await?;
    let mut services: BTreeMap<&str, ()> = rules.keys().map(|s| (s.as_str(), ())).collect();
    for c in &in_force {
        if c.by.author == SEED_AUTHOR && c.edit.selector.is_empty() && c.edit.text.is_some() {
            services.insert(c.edit.service.as_str(), ());
        }
    }
    let mut written = 0;
    for service in services.keys() {
        let empty = BTreeMap::new();
        let file = rules.get(*service).unwrap_or(&empty);
        let mut edits = Vec::new();
        for (name, text) in file {
            // The file was checked at load.
            let Ok(metric) = rule_metric(name) else {
                continue;
            };
            let latest = in_force.iter().find(|c| {
                c.edit.service == *service && c.edit.selector.is_empty() && c.edit.metric == metric
            });
            match latest {
                // Still the file's, and the file says the same: nothing to write.
                Some(c)
                    if c.by.author == SEED_AUTHOR
                        && c.edit.text.as_deref() == Some(text.trim()) =>
                {
                    continue;
                }
                None => {}
                Some(c) if c.by.author == SEED_AUTHOR => {}
                Some(c) => {
                    tracing::info!(%service, %metric, file = %text, by = %c.by.author, version = c.version, "the config file's rule is not applied: it was changed through the API since");
                    continue;
                }
            }
            edits.push(RuleEdit {
                service: (*service).to_owned(),
                selector: String::new(),
                metric,
                text: Some(text.trim().to_owned()),
            });
        }
        for c in in_force.iter().filter(|c| {
            c.edit.service == *service
                && c.edit.selector.is_empty()
                && c.edit.text.is_some()
                && c.by.author == SEED_AUTHOR
                && !file
                    .keys()
                    .any(|name| rule_metric(name).ok() == Some(c.edit.metric))
        }) {
            edits.push(RuleEdit {
                text: None,
                ..c.edit.clone()
            });
        }
        if edits.is_empty() {
            continue;
        }
        let by = ChangedBy {
            author: SEED_AUTHOR.to_owned(),
            note: format!("[rules.{service}]"),
            unix_nanos: unix_nanos_now(),
        };
        let version = store.change_rules(&edits, &by).await?;
        tracing::info!(%service, version, rules = edits.len(), "central rules seeded from the config file");
        written += edits.len();
    }
    Ok(written)
}
