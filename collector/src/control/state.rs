//! The control state a node pushes from: every service's rule layers and pauses as the
//! store holds them, and the update each agent should have.
//!
//! An agent's update carries the version `max(its service's version, the fleet's)`: a
//! service's version is the highest of its rule and pause changes, the fleet's that of
//! its fleet-wide pause changes; both come from the store's one control version sequence,
//! so the version an agent is sent only grows. A service nobody ever set anything for
//! (version 0) gets no update: its agents keep their own rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use holmes_proto::{CapturePause, ConfigUpdate};
use holmes_storage::{PauseRecord, RuleChange, Store, StoreError};

use super::rules::{resolve, Layers};

/// One service's central rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceControl {
    /// Highest version of its rule and pause changes.
    pub version: u64,
    /// Rule texts in force, by selector, then metric.
    pub layers: Layers,
    /// Its latest pause change, if it ever had one.
    pub pause: Option<PauseRecord>,
}

/// Everything a node pushes to its agents, as read from the store at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControlState {
    /// The store's control version when this was read.
    pub version: u64,
    /// By service.
    pub services: BTreeMap<String, ServiceControl>,
    /// The latest fleet-wide pause change, if any.
    pub fleet_pause: Option<PauseRecord>,
}

impl ControlState {
    /// Reads the whole state (small: operators' rules and pauses).
    pub async fn load(store: &Arc<dyn Store>) -> Result<ControlState, StoreError> {
        let version = store.control_version().await?;
        let (rules, pauses) = tokio::try_join!(store.rules_in_force(None), store.pauses())?;
        Ok(ControlState::from_records(version, rules, pauses))
    }

    /// Reads one service's part (and the fleet's pause).
    pub async fn load_service(
        store: &Arc<dyn Store>,
        service: &str,
    ) -> Result<ControlState, StoreError> {
        let (rules, pauses) =
            tokio::try_join!(store.rules_in_force(Some(service)), store.pauses())?;
        let pauses = pauses
            .into_iter()
            .filter(|p| p.edit.scope.is_empty() || p.edit.scope == service)
            .collect();
        let mut state = ControlState::from_records(0, rules, pauses);
        state.version = state.version_of(service);
        Ok(state)
    }

    /// The state of these records (rules in force, latest pause per scope).
    pub fn from_records(
        version: u64,
        rules: Vec<RuleChange>,
        pauses: Vec<PauseRecord>,
    ) -> ControlState {
        let mut state = ControlState {
            version,
            ..ControlState::default()
        };
        for change in rules {
            let service = state
                .services
                .entry(change.edit.service.clone())
                .or_default();
            service.version = service.version.max(change.version);
            if let Some(text) = change.edit.text {
                service
                    .layers
                    .entry(change.edit.selector)
                    .or_default()
                    .insert(change.edit.metric, text);
            }
        }
        for pause in pauses {
            if pause.edit.scope.is_empty() {
                state.fleet_pause = Some(pause);
            } else {
                let service = state.services.entry(pause.edit.scope.clone()).or_default();
                service.version = service.version.max(pause.version);
                service.pause = Some(pause);
            }
        }
        state
    }

    /// The version the agents of `service` should have in force.
    pub fn version_of(&self, service: &str) -> u64 {
        let own = self.services.get(service).map_or(0, |s| s.version);
        own.max(self.fleet_pause.as_ref().map_or(0, |p| p.version))
    }

    /// The pause in force for `service` at `now`: its own or the fleet's, whichever
    /// lasts longer.
    pub fn pause_of(&self, service: &str, now_unix_nanos: u64) -> Option<&PauseRecord> {
        let own = self.services.get(service).and_then(|s| s.pause.as_ref());
        [own, self.fleet_pause.as_ref()]
            .into_iter()
            .flatten()
            .filter(|p| p.edit.until_unix_nanos > now_unix_nanos)
            .max_by_key(|p| p.edit.until_unix_nanos)
    }

    /// The update an agent of `service` with `labels` should have: the whole central
    /// rule set for it (`replace`), the pause in force; `None` while nothing was ever
    /// set for the service or the fleet.
    pub fn update_for(
        &self,
        service: &str,
        labels: &BTreeMap<String, String>,
        now_unix_nanos: u64,
    ) -> Option<ConfigUpdate> {
        let version = self.version_of(service);
        if version == 0 {
            return None;
        }
        let rules = self
            .services
            .get(service)
            .map(|s| resolve(&s.layers, labels))
            .unwrap_or_default();
        let pause = self
            .pause_of(service, now_unix_nanos)
            .map(|p| CapturePause {
                until_unix_nanos: p.edit.until_unix_nanos,
                reason: pause_reason(p),
            });
        Some(ConfigUpdate {
            version,
            rules,
            replace: true,
            pause,
        })
    }
}

/// What the agent logs about a pause: the operator's reason, and who paused.
fn pause_reason(p: &PauseRecord) -> String {
    let scope = if p.edit.scope.is_empty() {
        "the fleet".to_owned()
    } else {
        format!("service {}", p.edit.scope)
    };
    if p.edit.reason.is_empty() {
        format!("{scope} paused by {}", p.by.author)
    } else {
        format!("{} ({scope} paused by {})", p.edit.reason, p.by.author)
    }
}

#[cfg(test)]
mod tests {
    use holmes_proto::rule_spec::default_rule;
    use holmes_proto::Metric;
    use holmes_storage::{ChangedBy, PauseEdit, RuleEdit};

    use super::*;

    const SEC: u64 = 1_000_000_000;
    const NOW: u64 = 1_795_651_200 * SEC;

    fn by(author: &str) -> ChangedBy {
        ChangedBy {
            author: author.to_owned(),
            note: String::new(),
            unix_nanos: NOW,
        }
    }

    fn change(service: &str, metric: Metric, text: Option<&str>, version: u64) -> RuleChange {
        RuleChange {
            edit: RuleEdit {
                service: service.to_owned(),
                selector: String::new(),
                metric,
                text: text.map(str::to_owned),
            },
            version,
            by: by("alice"),
        }
    }

    fn pause(scope: &str, until: u64, version: u64) -> PauseRecord {
        PauseRecord {
            edit: PauseEdit {
                scope: scope.to_owned(),
                until_unix_nanos: until,
                reason: "deploy".to_owned(),
            },
            version,
            by: by("bob"),
        }
    }

    #[test]
    fn an_untouched_service_gets_nothing_and_a_deleted_rule_an_empty_set() {
        let none = BTreeMap::new();
        let state = ControlState::from_records(
            3,
            vec![
                change("checkout", Metric::CpuPercent, Some("abs=90"), 1),
                change("cart", Metric::CpuPercent, None, 3),
            ],
            Vec::new(),
        );
        assert_eq!(state.update_for("search", &none, NOW), None);
        let mut cpu = default_rule(Metric::CpuPercent).unwrap();
        cpu.abs = 90.0;
        assert_eq!(
            state.update_for("checkout", &none, NOW),
            Some(ConfigUpdate {
                version: 1,
                rules: vec![cpu],
                replace: true,
                pause: None
            })
        );
        assert_eq!(
            state.update_for("cart", &none, NOW),
            Some(ConfigUpdate {
                version: 3,
                rules: Vec::new(),
                replace: true,
                pause: None
            })
        );
    }

    #[test]
    fn pauses_raise_versions_and_the_longer_one_holds() {
        let none = BTreeMap::new();
        let state = ControlState::from_records(
            7,
            vec![change("checkout", Metric::CpuPercent, Some("abs=90"), 1)],
            vec![
                pause("", NOW + 60 * SEC, 5),
                pause("checkout", NOW + 600 * SEC, 7),
                pause("cart", NOW - SEC, 2),
            ],
        );
        assert_eq!(state.version_of("checkout"), 7);
        assert_eq!(state.version_of("search"), 5, "the fleet's pause");
        let checkout = state.update_for("checkout", &none, NOW).unwrap();
        assert_eq!(
            checkout.pause,
            Some(CapturePause {
                until_unix_nanos: NOW + 600 * SEC,
                reason: "deploy (service checkout paused by bob)".to_owned()
            })
        );
        let cart = state.update_for("cart", &none, NOW).unwrap();
        assert_eq!(cart.version, 5);
        assert_eq!(
            cart.pause.map(|p| p.until_unix_nanos),
            Some(NOW + 60 * SEC),
            "cart's own pause is over; the fleet's holds"
        );
        assert_eq!(
            state
                .update_for("cart", &none, NOW + 61 * SEC)
                .unwrap()
                .pause,
            None
        );
    }
}
