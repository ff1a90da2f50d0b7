//! Capture requests on ClickHouse: the requests operators made, which agents each node
//! asked (dispatches) and what each agent answered (outcomes, batched: the whole fleet
//! answers at once).

use std::time::Duration;

use clickhouse::Row;
use holmes_proto::{CaptureRefusal, TimeWindow};
use serde::{Deserialize, Serialize};

use super::super::batch::Weigh;
use super::super::ClickHouseStore;
use crate::control::{purpose_from_name, refusal_from_name};
use crate::stored_names::kind_from_name;
use crate::{
    CaptureDispatch, CaptureOutcomeRecord, CaptureRequestQuery, CaptureRequestRecord, ChangedBy,
    StoreError,
};

#[derive(Row, Serialize, Deserialize)]
struct RequestRow {
    service: String,
    request_id: String,
    selector: String,
    has_instance: u8,
    instance_id: String,
    kinds: Vec<String>,
    purpose: String,
    has_cpu_duration: u8,
    cpu_duration_ms: u64,
    window_start: u64,
    window_end: u64,
    has_incident: u8,
    incident_id: String,
    created: u64,
    author: String,
    note: String,
}

impl RequestRow {
    fn encode(r: &CaptureRequestRecord) -> Self {
        RequestRow {
            service: r.service.clone(),
            request_id: r.request_id.clone(),
            selector: r.selector.clone(),
            has_instance: u8::from(r.instance_id.is_some()),
            instance_id: r.instance_id.clone().unwrap_or_default(),
            kinds: r.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
            purpose: r.purpose.as_str().to_owned(),
            has_cpu_duration: u8::from(r.cpu_duration.is_some()),
            cpu_duration_ms: r
                .cpu_duration
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            window_start: r.window.map_or(0, |w| w.start_unix_nanos),
            window_end: r.window.map_or(0, |w| w.end_unix_nanos),
            has_incident: u8::from(r.incident_id.is_some()),
            incident_id: r.incident_id.clone().unwrap_or_default(),
            created: r.by.unix_nanos,
            author: r.by.author.clone(),
            note: r.by.note.clone(),
        }
    }

    fn decode(self) -> Result<CaptureRequestRecord, StoreError> {
        const WHAT: &str = "capture_requests.kinds";
        Ok(CaptureRequestRecord {
            kinds: self
                .kinds
                .iter()
                .map(|k| kind_from_name(WHAT, k))
                .collect::<Result<_, _>>()?,
            purpose: purpose_from_name("capture_requests.purpose", &self.purpose)?,
            request_id: self.request_id,
            service: self.service,
            selector: self.selector,
            instance_id: (self.has_instance != 0).then_some(self.instance_id),
            cpu_duration: (self.has_cpu_duration != 0)
                .then(|| Duration::from_millis(self.cpu_duration_ms)),
            window: (self.window_start != 0 || self.window_end != 0).then_some(TimeWindow {
                start_unix_nanos: self.window_start,
                end_unix_nanos: self.window_end,
            }),
            incident_id: (self.has_incident != 0).then_some(self.incident_id),
            by: ChangedBy {
                author: self.author,
                note: self.note,
                unix_nanos: self.created,
            },
        })
    }
}

#[derive(Row, Serialize, Deserialize)]
struct DispatchRow {
    request_id: String,
    node_id: String,
    instances: Vec<String>,
    at: u64,
}

#[derive(Row, Serialize, Deserialize)]
pub(super) struct OutcomeRow {
    request_id: String,
    instance_id: String,
    service: String,
    has_event: u8,
    event_id: String,
    captured: Vec<String>,
    refused_kinds: Vec<String>,
    refused_reasons: Vec<String>,
    refused_details: Vec<String>,
    at: u64,
}

impl Weigh for OutcomeRow {
    fn weight(&self) -> usize {
        self.request_id.len()
            + self.instance_id.len()
            + self.service.len()
            + self.event_id.len()
            + self
                .refused_details
                .iter()
                .chain(&self.refused_kinds)
                .chain(&self.refused_reasons)
                .chain(&self.captured)
                .map(|s| s.len() + 1)
                .sum::<usize>()
            + 16
    }
}

impl OutcomeRow {
    fn decode(self) -> Result<CaptureOutcomeRecord, StoreError> {
        const WHAT: &str = "capture_outcomes.refused";
        let n = self.refused_kinds.len();
        if self.refused_reasons.len() != n || self.refused_details.len() != n {
            return Err(StoreError::Corrupt {
                what: WHAT,
                value: format!(
                    "{:?} / {:?} / {:?}",
                    self.refused_kinds, self.refused_reasons, self.refused_details
                ),
            });
        }
        let refused = self
            .refused_kinds
            .iter()
            .zip(&self.refused_reasons)
            .zip(self.refused_details)
            .map(|((k, r), detail)| {
                Ok(CaptureRefusal {
                    kind: kind_from_name(WHAT, k)?,
                    reason: refusal_from_name(WHAT, r)?,
                    detail,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(CaptureOutcomeRecord {
            captured: self
                .captured
                .iter()
                .map(|k| kind_from_name("capture_outcomes.captured", k))
                .collect::<Result<_, _>>()?,
            refused,
            request_id: self.request_id,
            service: self.service,
            instance_id: self.instance_id,
            event_id: (self.has_event != 0).then_some(self.event_id),
            unix_nanos: self.at,
        })
    }
}

pub(in crate::clickhouse) async fn insert_capture_request(
    store: &ClickHouseStore,
    r: &CaptureRequestRecord,
) -> Result<(), StoreError> {
    store
        .insert_rows("capture_requests", &[RequestRow::encode(r)])
        .await
}

pub(in crate::clickhouse) async fn capture_requests(
    store: &ClickHouseStore,
    q: &CaptureRequestQuery,
) -> Result<Vec<CaptureRequestRecord>, StoreError> {
    let service = q.service.as_deref();
    let rows: Vec<RequestRow> = store
        .client
        .query(
            "SELECT ?fields FROM capture_requests
             WHERE (? = 0 OR service = ?) AND created >= ? AND created < ?
             ORDER BY created DESC, request_id DESC
             LIMIT 1 BY request_id
             LIMIT ?",
        )
        .bind(u8::from(service.is_some()))
        .bind(service.unwrap_or(""))
        .bind(q.since_unix_nanos)
        .bind(q.until_unix_nanos)
        .bind(q.limit)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    rows.into_iter().map(RequestRow::decode).collect()
}

pub(in crate::clickhouse) async fn get_capture_request(
    store: &ClickHouseStore,
    request_id: &str,
) -> Result<Option<CaptureRequestRecord>, StoreError> {
    let row: Option<RequestRow> = store
        .client
        .query("SELECT ?fields FROM capture_requests WHERE request_id = ? LIMIT 1")
        .bind(request_id)
        .fetch_optional()
        .await
        .map_err(|e| store.err(e))?;
    row.map(RequestRow::decode).transpose()
}

pub(in crate::clickhouse) async fn record_capture_dispatch(
    store: &ClickHouseStore,
    d: &CaptureDispatch,
) -> Result<(), StoreError> {
    let row = DispatchRow {
        request_id: d.request_id.clone(),
        node_id: d.node_id.clone(),
        instances: d.instances.clone(),
        at: d.unix_nanos,
    };
    store.insert_rows("capture_dispatches", &[row]).await
}

pub(in crate::clickhouse) async fn capture_dispatches(
    store: &ClickHouseStore,
    ids: &[String],
) -> Result<Vec<CaptureDispatch>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<DispatchRow> = store
        .client
        .query(
            "SELECT ?fields FROM (
                SELECT * FROM capture_dispatches WHERE has(?, request_id)
                ORDER BY at DESC LIMIT 1 BY request_id, node_id
             ) ORDER BY request_id, node_id",
        )
        .bind(ids)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    Ok(rows
        .into_iter()
        .map(|r| CaptureDispatch {
            request_id: r.request_id,
            node_id: r.node_id,
            instances: r.instances,
            unix_nanos: r.at,
        })
        .collect())
}

pub(in crate::clickhouse) async fn record_capture_outcome(
    store: &ClickHouseStore,
    o: &CaptureOutcomeRecord,
) -> Result<(), StoreError> {
    let row = OutcomeRow {
        request_id: o.request_id.clone(),
        instance_id: o.instance_id.clone(),
        service: o.service.clone(),
        has_event: u8::from(o.event_id.is_some()),
        event_id: o.event_id.clone().unwrap_or_default(),
        captured: o.captured.iter().map(|k| k.as_str().to_owned()).collect(),
        refused_kinds: o
            .refused
            .iter()
            .map(|r| r.kind.as_str().to_owned())
            .collect(),
        refused_reasons: o
            .refused
            .iter()
            .map(|r| r.reason.as_str().to_owned())
            .collect(),
        refused_details: o.refused.iter().map(|r| r.detail.clone()).collect(),
        at: o.unix_nanos,
    };
    let result = store.batches.control.outcomes.insert(vec![row]).await;
    store.batched("capture_outcomes", result)
}

pub(in crate::clickhouse) async fn capture_outcomes(
    store: &ClickHouseStore,
    ids: &[String],
) -> Result<Vec<CaptureOutcomeRecord>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<OutcomeRow> = store
        .client
        .query(
            "SELECT ?fields FROM (
                SELECT * FROM capture_outcomes WHERE has(?, request_id)
                ORDER BY at DESC LIMIT 1 BY request_id, instance_id
             ) ORDER BY request_id, instance_id",
        )
        .bind(ids)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    rows.into_iter().map(OutcomeRow::decode).collect()
}
