//! Incidents' suspects on ClickHouse: the `incident_suspects` table of migration 11
//! (with their fingerprint since migration 13). Every computation is a new row;
//! `ReplacingMergeTree(computed)` keeps the latest at merges, and reads take it with
//! `ORDER BY computed DESC LIMIT 1`.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::batch::Weigh;
use super::ClickHouseStore;
use crate::stored_names::kind_from_name;
use crate::{Comparison, IncidentSuspects, StoreError, SuspectRecord};

#[derive(Row, Serialize, Deserialize)]
pub(super) struct SuspectsRow {
    service: String,
    incident_id: String,
    computed: u64,
    kind: String,
    comparison: String,
    sick_profiles: u32,
    comparison_profiles: u32,
    functions: Vec<String>,
    sick_shares: Vec<f64>,
    comparison_shares: Vec<f64>,
    fingerprint: String,
}

impl Weigh for SuspectsRow {
    fn weight(&self) -> usize {
        self.service.len()
            + self.incident_id.len()
            + self.functions.iter().map(|f| f.len() + 17).sum::<usize>()
            + self.fingerprint.len()
            + 64
    }
}

impl SuspectsRow {
    fn decode(self) -> Result<IncidentSuspects, StoreError> {
        let corrupt = |what, value: String| StoreError::Corrupt { what, value };
        if self.sick_shares.len() != self.functions.len()
            || self.comparison_shares.len() != self.functions.len()
        {
            return Err(corrupt(
                "incident_suspects.sick_shares",
                format!(
                    "{} functions, {} and {} shares",
                    self.functions.len(),
                    self.sick_shares.len(),
                    self.comparison_shares.len()
                ),
            ));
        }
        let comparison = Comparison::from_name(&self.comparison)
            .ok_or_else(|| corrupt("incident_suspects.comparison", self.comparison.clone()))?;
        Ok(IncidentSuspects {
            kind: kind_from_name("incident_suspects.kind", &self.kind)?,
            comparison,
            suspects: self
                .functions
                .into_iter()
                .zip(self.sick_shares)
                .zip(self.comparison_shares)
                .map(|((function, sick_share), comparison_share)| SuspectRecord {
                    function,
                    sick_share,
                    comparison_share,
                })
                .collect(),
            incident_id: self.incident_id,
            service: self.service,
            sick_profiles: self.sick_profiles,
            comparison_profiles: self.comparison_profiles,
            computed_unix_nanos: self.computed,
        })
    }
}

pub(super) async fn put(store: &ClickHouseStore, s: &IncidentSuspects) -> Result<(), StoreError> {
    let row = SuspectsRow {
        service: s.service.clone(),
        incident_id: s.incident_id.clone(),
        computed: s.computed_unix_nanos,
        kind: s.kind.as_str().to_owned(),
        comparison: s.comparison.as_str().to_owned(),
        sick_profiles: s.sick_profiles,
        comparison_profiles: s.comparison_profiles,
        functions: s.suspects.iter().map(|x| x.function.clone()).collect(),
        sick_shares: s.suspects.iter().map(|x| x.sick_share).collect(),
        comparison_shares: s.suspects.iter().map(|x| x.comparison_share).collect(),
        fingerprint: s.fingerprint().unwrap_or_default(),
    };
    let inserted = store.batches.suspects.insert(vec![row]).await;
    store.batched("incident_suspects", inserted)
}

pub(super) async fn get(
    store: &ClickHouseStore,
    service: &str,
    incident_id: &str,
) -> Result<Option<IncidentSuspects>, StoreError> {
    let row: Option<SuspectsRow> = store
        .client
        .query(
            "SELECT ?fields FROM incident_suspects WHERE service = ? AND incident_id = ?
             ORDER BY computed DESC LIMIT 1",
        )
        .bind(service)
        .bind(incident_id)
        .fetch_optional()
        .await
        .map_err(|e| store.err(e))?;
    row.map(SuspectsRow::decode).transpose()
}

pub(super) async fn with_fingerprint(
    store: &ClickHouseStore,
    service: &str,
    fingerprint: &str,
    limit: u64,
) -> Result<Vec<String>, StoreError> {
    if fingerprint.is_empty() {
        return Ok(Vec::new());
    }
    // Each incident's latest computation decides (its suspects may have changed since
    // an earlier one).
    store
        .client
        .query(
            "SELECT incident_id FROM (
                SELECT incident_id, fingerprint, computed FROM incident_suspects
                WHERE service = ?
                ORDER BY computed DESC LIMIT 1 BY incident_id
             )
             WHERE fingerprint = ?
             ORDER BY computed DESC
             LIMIT ?",
        )
        .bind(service)
        .bind(fingerprint)
        .bind(limit)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))
}
