//! Retention on a single server: whole day partitions of the day-partitioned tables
//! dropped (exact to the day, immediate, the same on every server version), and the
//! tables that are not partitioned by day — incidents, their id lookup and suspects,
//! instances — cleaned by an asynchronous delete (a mutation).

use super::schema::EXPIRING_TABLES;
use super::{date_text, day_of, ClickHouseStore};
use crate::{Expired, StoreError};

pub(super) async fn expire(
    store: &ClickHouseStore,
    cutoff_unix_nanos: u64,
) -> Result<Expired, StoreError> {
    let cutoff_day = day_of(cutoff_unix_nanos);
    let parts: Vec<(String, String)> = store
        .client
        .query(
            "SELECT table, partition_id FROM system.parts
             WHERE database = currentDatabase() AND active AND has(?, table)
               AND max_date < toDate(?)
             GROUP BY table, partition_id ORDER BY table, partition_id",
        )
        .bind(EXPIRING_TABLES)
        .bind(date_text(cutoff_day))
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    let mut expired = Expired::default();
    for (table, partition) in parts {
        // Only our own table names and the server's partition ids (digits of a day):
        // nothing from outside. `DROP PARTITION ID` reads the same on every version
        // (26.9 no longer parses `DROP PARTITION toDate('…')`).
        let Some(table) = EXPIRING_TABLES.iter().find(|t| **t == table) else {
            continue;
        };
        if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        store
            .client
            .query(&format!(
                "ALTER TABLE {table} DROP PARTITION ID '{partition}'"
            ))
            .execute()
            .await
            .map_err(|e| store.err(e))?;
        expired.partitions += 1;
    }
    // Incidents whose latest version ended before the cutoff, with their id lookup
    // (the ids first: the lookup is cleaned by them).
    let cutoff = cutoff_day_start(cutoff_unix_nanos);
    let gone: Vec<String> = store
        .client
        .query(
            "SELECT incident_id FROM incidents GROUP BY incident_id
             HAVING max(last_event) < ?",
        )
        .bind(cutoff)
        .fetch_all()
        .await
        .map_err(|e| store.err(e))?;
    for chunk in gone.chunks(2000) {
        store
            .client
            .query("ALTER TABLE incidents_by_id DELETE WHERE has(?, incident_id)")
            .bind(chunk)
            .execute()
            .await
            .map_err(|e| store.err(e))?;
        store
            .client
            .query("ALTER TABLE incident_suspects DELETE WHERE has(?, incident_id)")
            .bind(chunk)
            .execute()
            .await
            .map_err(|e| store.err(e))?;
        store
            .client
            .query("ALTER TABLE incidents DELETE WHERE has(?, incident_id)")
            .bind(chunk)
            .execute()
            .await
            .map_err(|e| store.err(e))?;
        expired.rows += chunk.len() as u64;
    }
    // Instances last seen before the cutoff (a newer sighting's row stays).
    store
        .client
        .query("ALTER TABLE instances DELETE WHERE last_seen < ?")
        .bind(cutoff)
        .execute()
        .await
        .map_err(|e| store.err(e))?;
    Ok(expired)
}

/// The start of the cutoff's UTC day: what is before it goes.
fn cutoff_day_start(cutoff_unix_nanos: u64) -> u64 {
    const NANOS_PER_DAY: u64 = 86_400 * 1_000_000_000;
    cutoff_unix_nanos - cutoff_unix_nanos % NANOS_PER_DAY
}
