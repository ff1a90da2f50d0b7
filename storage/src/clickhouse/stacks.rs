//! Locations and stacks on ClickHouse: `locations` (each once by the writer's number:
//! module and offset, or symbolic frames), `location_ids` (content id → number, for a
//! writer looking up what its memory forgot), `stacks` (each once per service by number:
//! its location numbers) and `stack_ids`, and `symbols` (frames of native locations by
//! id). Rows carry the day a profile last used them (see `crate::numbering`); reads take
//! one row per number with `LIMIT 1 BY`.

use std::collections::HashMap;

use clickhouse::Row;
use holmes_proto::Module;
use serde::{Deserialize, Serialize};

use super::batch::Weigh;
use super::bytes::{ByteBuf, RawBytes};
use super::ClickHouseStore;
use crate::assemble::{self, Rows};
use crate::contents::ProfileContents;
use crate::encoding;
use crate::location::{hex, Location, LocationId, StackFrame, StackId};
use crate::numbering::{Numbered, Unknown};
use crate::StoreError;

#[derive(Row, Serialize)]
pub(super) struct LocationRow {
    day: u16,
    num: u64,
    kind: u8,
    module: String,
    build_id: String,
    offset: u64,
    frames: RawBytes,
}

impl Weigh for LocationRow {
    fn weight(&self) -> usize {
        self.module.len() + self.build_id.len() + self.frames.0.len() + 32
    }
}

#[derive(Row, Serialize)]
pub(super) struct LocationIdRow {
    day: u16,
    id: [u8; 16],
    num: u64,
}

impl Weigh for LocationIdRow {
    fn weight(&self) -> usize {
        32
    }
}

#[derive(Row, Serialize)]
pub(super) struct StackRow {
    day: u16,
    service: String,
    num: u64,
    locations: RawBytes,
}

impl Weigh for StackRow {
    fn weight(&self) -> usize {
        self.service.len() + self.locations.0.len() + 16
    }
}

#[derive(Row, Serialize)]
pub(super) struct StackIdRow {
    day: u16,
    service: String,
    id: [u8; 16],
    num: u64,
}

impl Weigh for StackIdRow {
    fn weight(&self) -> usize {
        self.service.len() + 32
    }
}

#[derive(Row, Serialize)]
pub(super) struct SymbolRow {
    id: [u8; 16],
    at: u64,
    frames: RawBytes,
}

impl Weigh for SymbolRow {
    fn weight(&self) -> usize {
        self.frames.0.len() + 32
    }
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if s.len() != 32 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[derive(Row, Deserialize)]
struct FoundRow {
    hex_id: String,
    num: u64,
}

/// Ids per query: 2000 × 36 characters stays far below ClickHouse's 256 KiB query size.
pub(super) const IDS_PER_QUERY: usize = 2000;
/// Numbers per `IN` query; beyond [`RANGE_ABOVE`] numbers a range is read instead.
const NUMS_PER_QUERY: usize = 5000;
const RANGE_ABOVE: usize = 4 * NUMS_PER_QUERY;

/// What the store has of what the writer's memory does not know: numbers by id.
pub(super) async fn lookup(
    store: &ClickHouseStore,
    service: &str,
    unknown: &Unknown,
) -> Result<(HashMap<LocationId, u64>, HashMap<StackId, u64>), StoreError> {
    let mut locations = HashMap::new();
    for chunk in unknown.locations.chunks(IDS_PER_QUERY) {
        let ids: Vec<String> = chunk.iter().map(|i| hex(&i.0)).collect();
        let rows: Vec<FoundRow> = store
            .client
            .query(
                "SELECT lower(hex(id)) AS hex_id, num FROM location_ids
                 WHERE id IN (SELECT toFixedString(unhex(arrayJoin(?)), 16))
                 ORDER BY num LIMIT 1 BY hex_id",
            )
            .bind(ids)
            .fetch_all()
            .await
            .map_err(|e| store.err(e))?;
        for r in rows {
            if let Some(id) = unhex(&r.hex_id) {
                locations.insert(LocationId(id), r.num);
            }
        }
    }
    let mut stacks = HashMap::new();
    for chunk in unknown.stacks.chunks(IDS_PER_QUERY) {
        let ids: Vec<String> = chunk.iter().map(|i| hex(&i.0)).collect();
        let rows: Vec<FoundRow> = store
            .client
            .query(
                "SELECT lower(hex(id)) AS hex_id, num FROM stack_ids
                 WHERE service = ? AND id IN (SELECT toFixedString(unhex(arrayJoin(?)), 16))
                 ORDER BY num LIMIT 1 BY hex_id",
            )
            .bind(service)
            .bind(ids)
            .fetch_all()
            .await
            .map_err(|e| store.err(e))?;
        for r in rows {
            if let Some(id) = unhex(&r.hex_id) {
                stacks.insert(StackId(id), r.num);
            }
        }
    }
    Ok((locations, stacks))
}

/// Writes the location and stack rows `numbered` says are not durable on the profile's
/// day yet, each in the batch of its table, all at once.
pub(super) async fn write_rows(
    store: &ClickHouseStore,
    service: &str,
    day: u16,
    c: &ProfileContents,
    numbered: &Numbered,
) -> Result<(), StoreError> {
    let mut locations = Vec::with_capacity(numbered.new_locations.len());
    let mut location_ids = Vec::with_capacity(numbered.new_locations.len());
    for &(index, id) in &numbered.new_locations {
        let num = numbered.location_nums[index as usize];
        locations.push(match &c.locations[index as usize] {
            Location::Native { module, offset } => LocationRow {
                day,
                num,
                kind: 0,
                module: module.name.clone(),
                build_id: module.build_id.clone(),
                offset: *offset,
                frames: RawBytes(Vec::new()),
            },
            Location::Symbolic(frames) => LocationRow {
                day,
                num,
                kind: 1,
                module: String::new(),
                build_id: String::new(),
                offset: 0,
                frames: RawBytes(encoding::frames_bytes(frames)),
            },
        });
        location_ids.push(LocationIdRow { day, id: id.0, num });
    }
    let mut stacks = Vec::with_capacity(numbered.new_stacks.len());
    let mut stack_ids = Vec::with_capacity(numbered.new_stacks.len());
    for &(index, id) in &numbered.new_stacks {
        let num = numbered.stack_nums[index as usize];
        let nums: Vec<u64> = c.stacks[index as usize]
            .iter()
            .map(|&l| numbered.location_nums[l as usize])
            .collect();
        stacks.push(StackRow {
            day,
            service: service.to_owned(),
            num,
            locations: RawBytes(encoding::stack_bytes(&nums)),
        });
        stack_ids.push(StackIdRow {
            day,
            service: service.to_owned(),
            id: id.0,
            num,
        });
    }
    let b = &store.batches;
    let (l, li, s, si) = tokio::join!(
        b.locations.insert(locations),
        b.location_ids.insert(location_ids),
        b.stacks.insert(stacks),
        b.stack_ids.insert(stack_ids),
    );
    store.batched("locations", l)?;
    store.batched("location_ids", li)?;
    store.batched("stacks", s)?;
    store.batched("stack_ids", si)
}

#[derive(Row, Deserialize)]
struct StackReadRow {
    num: u64,
    locations: ByteBuf,
}

#[derive(Row, Deserialize)]
struct LocationReadRow {
    num: u64,
    kind: u8,
    module: String,
    build_id: String,
    offset: u64,
    frames: ByteBuf,
}

#[derive(Row, Deserialize)]
struct SymbolReadRow {
    hex_id: String,
    frames: ByteBuf,
}

/// Rows of `nums`: by `IN` lists for a few, by one range scan for many.
async fn rows_by_num<T>(
    store: &ClickHouseStore,
    select: &str,
    service: Option<&str>,
    nums: &[u64],
) -> Result<Vec<T>, StoreError>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    let mut out = Vec::new();
    if nums.is_empty() {
        return Ok(out);
    }
    let service_filter = if service.is_some() {
        "service = ? AND "
    } else {
        ""
    };
    if nums.len() > RANGE_ABOVE {
        let (lo, hi) = (nums[0], nums[nums.len() - 1]);
        let mut q = store.client.query(&format!(
            "{select} WHERE {service_filter}num >= ? AND num <= ? ORDER BY num, day DESC LIMIT 1 BY num"
        ));
        if let Some(s) = service {
            q = q.bind(s);
        }
        return q
            .bind(lo)
            .bind(hi)
            .fetch_all()
            .await
            .map_err(|e| store.err(e));
    }
    for chunk in nums.chunks(NUMS_PER_QUERY) {
        let mut q = store.client.query(&format!(
            "{select} WHERE {service_filter}num IN (SELECT toUInt64(arrayJoin(?))) ORDER BY num, day DESC LIMIT 1 BY num"
        ));
        if let Some(s) = service {
            q = q.bind(s);
        }
        let rows: Vec<T> = q.bind(chunk).fetch_all().await.map_err(|e| store.err(e))?;
        out.extend(rows);
    }
    Ok(out)
}

/// The stacks `stack_nums` of `service`, their locations, the symbols of the native ones.
pub(super) async fn read_rows(
    store: &ClickHouseStore,
    service: &str,
    stack_nums: &[u64],
) -> Result<Rows, StoreError> {
    let mut rows = Rows::default();
    let stacks: Vec<StackReadRow> = rows_by_num(
        store,
        "SELECT num, locations FROM stacks",
        Some(service),
        stack_nums,
    )
    .await?;
    let wanted: std::collections::HashSet<u64> = stack_nums.iter().copied().collect();
    for s in stacks {
        if wanted.contains(&s.num) {
            rows.stacks
                .insert(s.num, encoding::stack_from(&s.locations.0)?);
        }
    }
    let nums = assemble::location_nums(&rows.stacks);
    let locations: Vec<LocationReadRow> = rows_by_num(
        store,
        "SELECT num, kind, module, build_id, offset, frames FROM locations",
        None,
        &nums,
    )
    .await?;
    let wanted: std::collections::HashSet<u64> = nums.iter().copied().collect();
    for l in locations {
        if !wanted.contains(&l.num) {
            continue;
        }
        let location = match l.kind {
            0 => Location::Native {
                module: Module {
                    name: l.module,
                    build_id: l.build_id,
                },
                offset: l.offset,
            },
            1 => Location::Symbolic(encoding::frames_from("locations.frames", &l.frames.0)?),
            other => {
                return Err(StoreError::Corrupt {
                    what: "locations.kind",
                    value: other.to_string(),
                })
            }
        };
        rows.locations.insert(l.num, location);
    }
    let ids = assemble::native_ids(&rows.locations);
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let hexes: Vec<String> = chunk.iter().map(|i| hex(&i.0)).collect();
        let found: Vec<SymbolReadRow> = store
            .client
            .query(
                "SELECT lower(hex(id)) AS hex_id, frames FROM symbols
                 WHERE id IN (SELECT toFixedString(unhex(arrayJoin(?)), 16))
                 ORDER BY at DESC LIMIT 1 BY hex_id",
            )
            .bind(hexes)
            .fetch_all()
            .await
            .map_err(|e| store.err(e))?;
        for s in found {
            if let Some(id) = unhex(&s.hex_id) {
                rows.symbols.insert(
                    LocationId(id),
                    encoding::frames_from("symbols.frames", &s.frames.0)?,
                );
            }
        }
    }
    Ok(rows)
}

/// Writes symbols of native locations (the newest write of an id wins).
pub(super) async fn insert_symbols(
    store: &ClickHouseStore,
    symbols: &[(LocationId, Vec<StackFrame>)],
) -> Result<(), StoreError> {
    let at = super::now_nanos();
    let rows = symbols
        .iter()
        .map(|(id, frames)| SymbolRow {
            id: id.0,
            at,
            frames: RawBytes(encoding::frames_bytes(frames)),
        })
        .collect();
    let result = store.batches.symbols.insert(rows).await;
    store.batched("symbols", result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_travel_as_hex() {
        let id = [0xab; 16];
        assert_eq!(unhex(&hex(&id)), Some(id));
        assert_eq!(unhex("zz"), None);
    }
}
