//! The embedded store's schema: every migration's SQL, in order. [`super::migrate`]
//! runs them; the tables' own modules say what their rows hold.

use super::{control, skips, suspects};

/// Schema migrations, applied in order; `PRAGMA user_version` records the last one.
/// Migration 6, the normalized layout, is SQL and a conversion ([`super::migrate`]).
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: services, instances and metric samples.
    "CREATE TABLE instances (
        service TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        labels TEXT NOT NULL,
        agent_version TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        PRIMARY KEY (service, instance_id)
    ) WITHOUT ROWID;
    CREATE TABLE metric_samples (
        service TEXT NOT NULL,
        metric TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (service, metric, instance_id, ts)
    ) WITHOUT ROWID;",
    // 2: trigger events. Numbers are declared without a type so that SQLite keeps them
    // exactly as bound (a REAL column would turn -0.0 into 0); SQLite stores NaN as NULL.
    // The window is a BLOB of 16 bytes per sample: timestamp (u64) and value (f64 bits),
    // little-endian. A trigger without a rule has NULL in every rule_ column.
    "CREATE TABLE triggers (
        service TEXT NOT NULL,
        event_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        metric TEXT,
        reason TEXT NOT NULL,
        current_value,
        window_samples BLOB NOT NULL,
        rule_metric TEXT,
        rule_enabled INTEGER,
        rule_min,
        rule_diff,
        rule_abs,
        rule_max,
        rule_cooldown_ms INTEGER,
        rule_window INTEGER,
        request_id TEXT,
        PRIMARY KEY (service, event_id)
    ) WITHOUT ROWID;
    CREATE INDEX triggers_by_time ON triggers (service, ts, event_id);",
    // 3: profiles. A rowid table (WITHOUT ROWID suits small rows, not BLOBs of megabytes)
    // with the bytes last, so that listing never reads them. The unique key doubles as
    // the index of lookups by profile id alone. `duration_ns` holds the u64 nanoseconds'
    // bits (an i64 that may be negative); `error` is NULL for a capture that worked.
    "CREATE TABLE profiles (
        profile_id TEXT NOT NULL,
        service TEXT NOT NULL,
        event_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        started INTEGER NOT NULL,
        duration_ns INTEGER NOT NULL,
        labels TEXT NOT NULL,
        error TEXT,
        size_bytes INTEGER NOT NULL,
        data BLOB NOT NULL,
        UNIQUE (profile_id, service)
    );
    CREATE INDEX profiles_by_time ON profiles (service, started, profile_id);",
    // 4: normalized profile contents (see `stacks.rs` for the BLOB forms). A stack is
    // stored once, however many profiles use it.
    "CREATE TABLE stacks (
        stack_id INTEGER PRIMARY KEY,
        frames BLOB NOT NULL
    );
    CREATE TABLE profile_contents (
        profile_id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        started INTEGER NOT NULL,
        sample_types BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE profile_samples (
        profile_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        stack_id INTEGER NOT NULL,
        vals BLOB NOT NULL,
        labels BLOB,
        PRIMARY KEY (profile_id, idx)
    ) WITHOUT ROWID;",
    // 5: incidents, one row each at its highest version; lists as BLOBs (`stacks.rs`).
    "CREATE TABLE incidents (
        incident_id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        metric TEXT NOT NULL,
        severity TEXT NOT NULL,
        status TEXT NOT NULL,
        first_event INTEGER NOT NULL,
        last_event INTEGER NOT NULL,
        resolved INTEGER,
        instances BLOB NOT NULL,
        event_ids BLOB NOT NULL,
        related BLOB NOT NULL,
        version INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX incidents_by_service ON incidents (service, first_event);
    CREATE INDEX incidents_by_time ON incidents (first_event);",
    // 6: the normalized layout (see `profiles.rs`). The old profile tables are renamed,
    // converted by `migrate::convert_v5` in the same transaction, and dropped.
    "ALTER TABLE profiles RENAME TO profiles_v5;
    DROP INDEX profiles_by_time;
    ALTER TABLE stacks RENAME TO stacks_v5;
    CREATE TABLE writer_epochs (
        epoch INTEGER PRIMARY KEY,
        claimed_at INTEGER NOT NULL,
        holder TEXT NOT NULL
    );
    CREATE TABLE locations (
        num INTEGER PRIMARY KEY,
        id BLOB NOT NULL,
        day INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        module TEXT NOT NULL,
        build_id TEXT NOT NULL,
        offset INTEGER NOT NULL,
        frames BLOB
    );
    CREATE INDEX locations_by_id ON locations (id);
    CREATE TABLE stacks (
        service TEXT NOT NULL,
        num INTEGER NOT NULL,
        id BLOB NOT NULL,
        day INTEGER NOT NULL,
        locations BLOB NOT NULL,
        PRIMARY KEY (service, num)
    ) WITHOUT ROWID;
    CREATE INDEX stacks_by_id ON stacks (service, id);
    CREATE TABLE symbols (
        id BLOB PRIMARY KEY,
        frames BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE profiles (
        service TEXT NOT NULL,
        profile_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        started INTEGER NOT NULL,
        duration_ns INTEGER NOT NULL,
        labels TEXT NOT NULL,
        error TEXT,
        size_bytes INTEGER NOT NULL,
        format TEXT NOT NULL,
        header BLOB,
        samples BLOB,
        original BLOB,
        PRIMARY KEY (service, profile_id)
    );
    CREATE INDEX profiles_by_time ON profiles (service, started, profile_id);
    CREATE TABLE parked_events (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        service TEXT NOT NULL,
        parked INTEGER NOT NULL,
        error TEXT NOT NULL,
        payload BLOB NOT NULL
    );",
    // 7: the control plane (see `control.rs`).
    control::SCHEMA,
    // 8: debug info uploads (see `debuginfo.rs`): chunks by build id, source, size and
    // offset; the claim of the collector whose agent uploads a build now.
    "CREATE TABLE debuginfo (
        build_id TEXT NOT NULL,
        source TEXT NOT NULL,
        total_bytes INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (build_id, source, total_bytes, offset)
    );
    CREATE TABLE debuginfo_claims (
        build_id TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        until INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 9: incidents' suspects, computed when an incident changes (see `suspects.rs`).
    suspects::SCHEMA,
    // 10: the captures an incident skipped by the fleet's capture budget.
    "ALTER TABLE incidents ADD COLUMN skipped_captures INTEGER NOT NULL DEFAULT 0;",
    // 11: incidents' fingerprints (see `suspects.rs`).
    suspects::FINGERPRINTS,
    // 12: the capture budget's notices for agents on other nodes (see `skips.rs`).
    skips::SCHEMA,
];
