//! The single-server schema: its migrations, and the newer column features a server
//! gets when its version has them.
//!
//! Statements are templates: `{lc}` is `LowCardinality(String)` on servers that have it
//! without an experimental flag and `String` on 18.16; `{codec:…}` is ` CODEC(…)` where
//! column codecs exist and nothing on 18.16. [`render`] fills them in for the server
//! found at open, so 18.16 gets the plain subset and a current server the compact one.

use super::ServerVersion;

/// Column features of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Features {
    /// `CODEC(...)` on columns (19.11 and later; Delta, T64 and ZSTD all exist by 20.1).
    pub(crate) codecs: bool,
    /// `LowCardinality` without `allow_experimental_low_cardinality_type` (19.3).
    pub(crate) low_cardinality: bool,
    /// Table `TTL` (19.6).
    pub(crate) ttl: bool,
}

impl Features {
    /// What `version` has.
    pub(crate) fn of(version: ServerVersion) -> Features {
        let modern = version
            >= ServerVersion {
                major: 20,
                minor: 1,
            };
        Features {
            codecs: modern,
            low_cardinality: modern,
            ttl: modern,
        }
    }
}

/// `template` for a server with `features` (see the module docs).
pub(crate) fn render(template: &str, features: Features) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("{lc}") {
            out.push_str(if features.low_cardinality {
                "LowCardinality(String)"
            } else {
                "String"
            });
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{codec:") {
            let Some(end) = after.find('}') else {
                out.push_str(tail);
                return out;
            };
            if features.codecs {
                out.push_str(" CODEC(");
                out.push_str(&after[..end]);
                out.push(')');
            }
            rest = &after[end + 1..];
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// One step of a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A statement (a template, see [`render`]).
    Sql(&'static str),
    /// Rebuild `table` with `create` (a `CREATE TABLE IF NOT EXISTS {table}_new AS
    /// {table} ENGINE = …` statement) safely with writers running: the new table is
    /// swapped in first (one `RENAME` of both), so writers write to it from then on, and
    /// the old rows are copied over after; a crash half-way resumes where it stopped.
    Rebuild {
        /// The table.
        table: &'static str,
        /// Creates `{table}_new`.
        create: &'static str,
    },
    /// Renames `table` to `{table}_old` (unless done already), so that a table of the
    /// same name with a new layout can be created.
    Retire(&'static str),
    /// Converts the profiles of the layout before migration 8 (see `convert.rs`).
    ConvertProfiles,
    /// Adds `column` (`name Type [DEFAULT …]`) to `table` unless it has a column of that
    /// name (18.16 has no `ADD COLUMN IF NOT EXISTS`; a crash after the `ALTER` and
    /// before the migration is recorded must not fail the next start).
    AddColumn {
        /// The table.
        table: &'static str,
        /// The column's name.
        name: &'static str,
        /// Its definition, name included.
        definition: &'static str,
    },
}

/// Schema migrations; the `schema_migrations` table records which ran. Each runs under
/// the store's migration lock (`lock.rs`), so several collectors opening one database
/// at once migrate it once.
pub(crate) const MIGRATIONS: &[&[Step]] = &[
    // 1: instances and metric samples.
    &[
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS instances (
        service String,
        instance_id String,
        host String,
        pid UInt32,
        label_keys Array(String),
        label_values Array(String),
        agent_version String,
        started_at UInt64,
        last_seen UInt64
    ) ENGINE = ReplacingMergeTree(last_seen) ORDER BY (service, instance_id)",
        ),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS metric_samples (
        day Date,
        service String,
        metric String,
        instance_id String,
        ts UInt64,
        value Float64
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, metric, instance_id, ts)",
        ),
    ],
    // 2: trigger events. Resends share `(service, event_id)`, so merges fold them;
    // queries hide the copies not merged yet with `LIMIT 1 BY event_id`.
    &[Step::Sql(
        "CREATE TABLE IF NOT EXISTS triggers (
        day Date,
        service String,
        event_id String,
        instance_id String,
        ts UInt64,
        metric String,
        reason String,
        current_value Float64,
        window_ts Array(UInt64),
        window_values Array(Float64),
        has_rule UInt8,
        rule_metric String,
        rule_enabled UInt8,
        rule_min Float64,
        rule_diff Float64,
        rule_abs Float64,
        rule_max Float64,
        rule_cooldown_ms UInt64,
        rule_window UInt32,
        request_id String
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, event_id)",
    )],
    // 3: profiles as the agents' pprof bytes (converted by migration 8).
    &[
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS profiles (
        day Date,
        service String,
        profile_id String,
        event_id String,
        instance_id String,
        kind String,
        started UInt64,
        duration_ns UInt64,
        label_keys Array(String),
        label_values Array(String),
        error String,
        size_bytes UInt64,
        data String
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, profile_id)
      SETTINGS index_granularity = 8",
        ),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS profiles_by_id (
        profile_id String,
        service String,
        day Date
    ) ENGINE = ReplacingMergeTree ORDER BY profile_id",
        ),
    ],
    // 4: decoded profile contents, stacks by 64-bit hash (converted by migration 8).
    &[
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS stacks (
        stack_id UInt64,
        functions Array(String),
        files Array(String),
        lines Array(UInt32)
    ) ENGINE = ReplacingMergeTree ORDER BY stack_id",
        ),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS profile_contents (
        day Date,
        service String,
        profile_id String,
        started UInt64,
        type_names Array(String),
        type_units Array(String)
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, profile_id)",
        ),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS profile_samples (
        day Date,
        service String,
        profile_id String,
        idx UInt32,
        stack_id UInt64,
        vals Array(Int64),
        label_keys Array(String),
        label_values Array(String)
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, profile_id, idx)",
        ),
    ],
    // 5: triggers and profiles sorted by service and time, the order their queries read
    // in (ranges of one service's time); a resend has the same time, so merges still
    // fold it.
    &[
        Step::Rebuild {
            table: "triggers",
            create: "CREATE TABLE IF NOT EXISTS triggers_new AS triggers
      ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, ts, event_id)",
        },
        Step::Rebuild {
            table: "profiles",
            create: "CREATE TABLE IF NOT EXISTS profiles_new AS profiles
      ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, started, profile_id)
      SETTINGS index_granularity = 8",
        },
    ],
    // 6: incidents, a row per version (see `incidents.rs`). Not partitioned: an
    // incident's first event can move earlier (a late trigger), and its versions must
    // stay in one partition to fold.
    &[Step::Sql(
        "CREATE TABLE IF NOT EXISTS incidents (
        service String,
        incident_id String,
        metric String,
        severity String,
        status String,
        first_event UInt64,
        last_event UInt64,
        has_resolved UInt8,
        resolved UInt64,
        instances Array(String),
        event_ids Array(String),
        related Array(String),
        version UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (service, incident_id)",
    )],
    // 7: an incident's service by its id, so that a lookup by id reads one service's
    // key range instead of the whole table.
    &[
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS incidents_by_id (
        incident_id String,
        service String
    ) ENGINE = ReplacingMergeTree ORDER BY incident_id",
        ),
        Step::Sql(
            "INSERT INTO incidents_by_id SELECT DISTINCT incident_id, service FROM incidents",
        ),
    ],
    // 8: the normalized layout (see `profiles.rs` and `stacks.rs`): locations once by
    // number (and id), stacks once per service by number (and id), a profile as one row
    // holding its samples in the compact form, originals only when kept. Rows carry
    // the day a profile last used them; retention drops whole days of every table.
    &[
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS writer_epochs (
        epoch UInt32,
        nonce UInt64,
        claimed_at UInt64,
        holder String
    ) ENGINE = MergeTree ORDER BY (epoch, nonce)",
        ),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS locations (
        day Date,
        num UInt64{codec:Delta, ZSTD(1)},
        kind UInt8,
        module {lc},
        build_id {lc},
        offset UInt64{codec:ZSTD(1)},
        frames String{codec:ZSTD(3)}
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY num",
        ),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS location_ids (
        day Date,
        id FixedString(16),
        num UInt64
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY id",
        ),
        Step::Retire("stacks"),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS stacks (
        day Date,
        service {lc},
        num UInt64{codec:Delta, ZSTD(1)},
        locations String{codec:ZSTD(3)}
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, num)",
        ),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS stack_ids (
        day Date,
        service {lc},
        id FixedString(16),
        num UInt64
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, id)",
        ),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS symbols (
        id FixedString(16),
        at UInt64,
        frames String{codec:ZSTD(3)}
    ) ENGINE = ReplacingMergeTree(at) ORDER BY id",
        ),
        Step::Retire("profiles"),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS profiles (
        day Date,
        service {lc},
        started UInt64{codec:Delta, ZSTD(1)},
        profile_id String,
        event_id String{codec:ZSTD(1)},
        instance_id {lc},
        kind {lc},
        duration_ns UInt64{codec:T64, ZSTD(1)},
        label_keys Array({lc}),
        label_values Array(String){codec:ZSTD(1)},
        error String{codec:ZSTD(1)},
        size_bytes UInt64{codec:T64, ZSTD(1)},
        format {lc},
        header String{codec:ZSTD(3)},
        samples String{codec:ZSTD(3)},
        original String{codec:ZSTD(1)}
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, started, profile_id)
      SETTINGS index_granularity = 64",
        ),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS profile_ids (
        day Date,
        service {lc},
        profile_id String,
        started UInt64
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (service, profile_id)",
        ),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS parked_events (
        day Date,
        parked UInt64,
        source String,
        service String,
        error String,
        payload String{codec:ZSTD(1)}
    ) ENGINE = MergeTree PARTITION BY day ORDER BY parked",
        ),
        Step::ConvertProfiles,
        Step::Sql("DROP TABLE IF EXISTS profiles_old"),
        Step::Sql("DROP TABLE IF EXISTS stacks_old"),
        Step::Sql("DROP TABLE IF EXISTS profile_contents"),
        Step::Sql("DROP TABLE IF EXISTS profile_samples"),
        Step::Sql("DROP TABLE IF EXISTS profiles_by_id"),
    ],
    // 9: the control plane (see `control.rs`).
    super::control::MIGRATION,
    // 10: debug info uploads (see `debuginfo.rs`): chunks by build id, source, size and
    // offset, and the claims of the collectors whose agents upload a build.
    &[
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS debuginfo (
        build_id String,
        source String,
        total_bytes UInt64,
        offset UInt64,
        data String{codec:ZSTD(1)}
    ) ENGINE = ReplacingMergeTree ORDER BY (build_id, source, total_bytes, offset)",
        ),
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS debuginfo_claims (
        build_id String,
        holder String,
        since UInt64,
        at UInt64,
        until UInt64
    ) ENGINE = MergeTree ORDER BY (build_id, at)",
        ),
    ],
    // 11: incidents' suspects, a row per computation (see `suspects.rs`). Not
    // partitioned, like the incidents they belong to; retention deletes them with them.
    &[Step::Sql(
        "CREATE TABLE IF NOT EXISTS incident_suspects (
        service String,
        incident_id String,
        computed UInt64,
        kind String,
        comparison String,
        sick_profiles UInt32,
        comparison_profiles UInt32,
        functions Array(String),
        sick_shares Array(Float64),
        comparison_shares Array(Float64)
    ) ENGINE = ReplacingMergeTree(computed) ORDER BY (service, incident_id)",
    )],
    // 12: the captures an incident skipped by the fleet's capture budget. Rows written
    // before read 0.
    &[Step::AddColumn {
        table: "incidents",
        name: "skipped_captures",
        definition: "skipped_captures UInt64 DEFAULT 0",
    }],
    // 13: incidents' fingerprints, for recurrences (see `suspects.rs`). Rows written
    // before read none.
    &[Step::AddColumn {
        table: "incident_suspects",
        name: "fingerprint",
        definition: "fingerprint String DEFAULT ''",
    }],
    // 14: the capture budget's notices for agents on other nodes (see `skips.rs`),
    // partitioned by day like the triggers they are about.
    &[Step::Sql(
        "CREATE TABLE IF NOT EXISTS skip_notices (
        day Date,
        service String,
        event_id String,
        instance_id String,
        kinds Array(String),
        at UInt64
    ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (at, event_id)",
    )],
];

/// The tables partitioned by day, whose old partitions retention drops.
pub(crate) const EXPIRING_TABLES: &[&str] = &[
    "metric_samples",
    "triggers",
    "profiles",
    "profile_ids",
    "stacks",
    "stack_ids",
    "locations",
    "location_ids",
    "parked_events",
    "skip_notices",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_per_server() {
        let template = "a {lc}, b UInt64{codec:Delta, ZSTD(1)}, c Array({lc}), d {x}";
        let old = Features::of(ServerVersion {
            major: 18,
            minor: 16,
        });
        let new = Features::of(ServerVersion {
            major: 26,
            minor: 9,
        });
        assert_eq!(
            render(template, old),
            "a String, b UInt64, c Array(String), d {x}"
        );
        assert_eq!(
            render(template, new),
            "a LowCardinality(String), b UInt64 CODEC(Delta, ZSTD(1)), c Array(LowCardinality(String)), d {x}"
        );
    }
}
