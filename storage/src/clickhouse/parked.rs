//! Events set aside by a processor that could not store them (`parked_events`).

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::bytes::{ByteBuf, RawBytes};
use super::{day_of, ClickHouseStore};
use crate::{ParkedEvent, StoreError};

#[derive(Row, Serialize)]
struct ParkedRow {
    day: u16,
    parked: u64,
    source: String,
    service: String,
    error: String,
    payload: RawBytes,
}

#[derive(Row, Deserialize)]
struct ParkedReadRow {
    parked: u64,
    source: String,
    service: String,
    error: String,
    payload: ByteBuf,
}

pub(super) async fn park(store: &ClickHouseStore, e: &ParkedEvent) -> Result<(), StoreError> {
    let mut insert = store
        .client
        .insert::<ParkedRow>("parked_events")
        .await
        .map_err(|e| store.err(e))?;
    insert
        .write(&ParkedRow {
            day: day_of(e.parked_unix_nanos),
            parked: e.parked_unix_nanos,
            source: e.source.clone(),
            service: e.service.clone(),
            error: e.error.clone(),
            payload: RawBytes(e.payload.clone()),
        })
        .await
        .map_err(|e| store.err(e))?;
    insert.end().await.map_err(|e| store.err(e))
}

pub(super) async fn list(
    store: &ClickHouseStore,
    limit: u64,
) -> Result<Vec<ParkedEvent>, StoreError> {
    let rows: Vec<ParkedReadRow> = store
        .client
        .query("SELECT ?fields FROM parked_events ORDER BY parked DESC LIMIT ?")
        .bind(limit)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    Ok(rows
        .into_iter()
        .map(|r| ParkedEvent {
            source: r.source,
            service: r.service,
            parked_unix_nanos: r.parked,
            error: r.error,
            payload: r.payload.0,
        })
        .collect())
}
