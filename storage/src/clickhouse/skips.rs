//! The capture budget's skip notices on ClickHouse (migration 14): one row per trigger
//! event whose profiles its incident will not keep, for the node its agent is connected
//! to. Partitioned by day; retention drops them with the day's partition. A notice
//! inserted twice (a retried insert) folds at merges, and reads take one per event.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{date_text, day_of, ClickHouseStore};
use crate::stored_names::kind_from_name;
use crate::{SkipNotice, StoreError};

#[derive(Row, Serialize)]
struct SkipRow {
    day: u16,
    service: String,
    event_id: String,
    instance_id: String,
    kinds: Vec<String>,
    at: u64,
}

#[derive(Row, Deserialize)]
struct SkipReadRow {
    service: String,
    event_id: String,
    instance_id: String,
    kinds: Vec<String>,
    at: u64,
}

pub(super) async fn insert(
    store: &ClickHouseStore,
    notices: &[SkipNotice],
) -> Result<(), StoreError> {
    let rows: Vec<SkipRow> = notices
        .iter()
        .map(|n| SkipRow {
            day: day_of(n.unix_nanos),
            service: n.service.clone(),
            event_id: n.event_id.clone(),
            instance_id: n.instance_id.clone(),
            kinds: n.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
            at: n.unix_nanos,
        })
        .collect();
    store.insert_rows("skip_notices", &rows).await
}

pub(super) async fn since(
    store: &ClickHouseStore,
    since_unix_nanos: u64,
    limit: u64,
) -> Result<Vec<SkipNotice>, StoreError> {
    let rows: Vec<SkipReadRow> = store
        .client
        .query(
            "SELECT ?fields FROM skip_notices
             WHERE day >= toDate(?) AND at >= ?
             ORDER BY at, event_id
             LIMIT 1 BY event_id
             LIMIT ?",
        )
        .bind(date_text(day_of(since_unix_nanos)))
        .bind(since_unix_nanos)
        .bind(limit)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    rows.into_iter()
        .map(|r| {
            Ok(SkipNotice {
                kinds: r
                    .kinds
                    .iter()
                    .map(|k| kind_from_name("skip_notices.kinds", k))
                    .collect::<Result<_, _>>()?,
                event_id: r.event_id,
                service: r.service,
                instance_id: r.instance_id,
                unix_nanos: r.at,
            })
        })
        .collect()
}
