//! The database schema, one definition for both backends.
//!
//! Layout (see docs/architecture.md): every resource-scoped table carries in its primary key `pkey`, the patient
//! compartment key (the patient's id for resources in a patient's compartment, `""` otherwise), so that a
//! PostgreSQL + Citus deployment can distribute them by patient without redesign. `rid` is an internal,
//! monotonically allocated number identifying a resource (stable across versions); search paging is keyed on it.

use crate::StoreError;
use crate::sql::{Dialect, SqlConn, SqlValue};

/// The index tables, one per search value kind.
pub const INDEX_TABLES: &[&str] = &[
    "idx_string",
    "idx_token",
    "idx_ref",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_uri",
    "idx_composite",
];

pub const SCHEMA_VERSION: i64 = 1;

/// The versions table. On SQLite a version's row is keyed by its `seq` (the row id): versions are appended in
/// `seq` order, and a row keeps up to about 4 KB in its B-tree page. Keyed by `(rid, version, pkey)` instead
/// (`WITHOUT ROWID`, the first layout), a row kept at most about 1 KB in the page and spilt the rest of a
/// document's metadata to an overflow page of its own, three-quarters empty (dbstat: 6.5 KB per DMP
/// submission for 2.55 KB of content). PostgreSQL keeps its heap and a primary key.
fn versions_ddl(dialect: Dialect) -> Vec<String> {
    const COLS: &str = "pkey TEXT NOT NULL, rid BIGINT NOT NULL, version BIGINT NOT NULL, rtype TEXT NOT NULL, \
        id TEXT NOT NULL";
    const REST: &str = "last_updated BIGINT NOT NULL, method TEXT NOT NULL";
    match dialect {
        Dialect::Sqlite => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS resource_versions (seq INTEGER PRIMARY KEY, {COLS}, {REST}, \
                 content BLOB NOT NULL)"
            ),
            "CREATE UNIQUE INDEX IF NOT EXISTS resource_versions_key ON resource_versions (rid, version, pkey)"
                .to_string(),
            "CREATE INDEX IF NOT EXISTS resource_versions_type_seq ON resource_versions (rtype, seq)"
                .to_string(),
        ],
        Dialect::Postgres => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS resource_versions ({COLS}, seq BIGINT NOT NULL, {REST}, \
                 content BYTEA NOT NULL, PRIMARY KEY (rid, version, pkey))"
            ),
            "CREATE INDEX IF NOT EXISTS resource_versions_seq ON resource_versions (seq)".to_string(),
            "CREATE INDEX IF NOT EXISTS resource_versions_type_seq ON resource_versions (rtype, seq)"
                .to_string(),
        ],
    }
}

/// The columns both versions layouts share, for copying one into the other.
const VERSION_COLUMNS: &str = "seq, pkey, rid, version, rtype, id, last_updated, method, content";

/// Before the DDL, on SQLite: a versions table in the first layout (`WITHOUT ROWID`) is set aside, with its
/// indexes dropped, for [`copy_set_aside_versions`] to move into the table the DDL then creates. Returns
/// whether it did.
pub fn set_aside_old_versions(c: &mut dyn SqlConn) -> Result<bool, StoreError> {
    let sql = c.query_one(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'resource_versions'",
        &[],
    )?;
    let old = sql
        .and_then(|r| r.into_iter().next())
        .and_then(SqlValue::into_string)
        .is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID"));
    if old {
        c.execute("DROP INDEX IF EXISTS resource_versions_seq", &[])?;
        c.execute("DROP INDEX IF EXISTS resource_versions_type_seq", &[])?;
        c.execute(
            "ALTER TABLE resource_versions RENAME TO resource_versions_v1",
            &[],
        )?;
    }
    Ok(old)
}

/// After the DDL: moves the versions set aside by [`set_aside_old_versions`] into the new table.
pub fn copy_set_aside_versions(c: &mut dyn SqlConn) -> Result<(), StoreError> {
    let n = c.execute(
        &format!(
            "INSERT INTO resource_versions ({VERSION_COLUMNS}) SELECT {VERSION_COLUMNS} \
             FROM resource_versions_v1 ORDER BY seq"
        ),
        &[],
    )?;
    c.execute("DROP TABLE resource_versions_v1", &[])?;
    tracing::info!(
        versions = n,
        "versions des ressources réorganisées (table clé seq)"
    );
    Ok(())
}

/// The audit chain's tables in the data database.
pub fn audit_ddl() -> Vec<String> {
    vec![
        format!("CREATE TABLE IF NOT EXISTS audit_log (seq BIGINT PRIMARY KEY, {AUDIT_FIELDS})"),
        "CREATE INDEX IF NOT EXISTS audit_log_patient ON audit_log (patient, seq)".to_string(),
        AUDIT_HEAD.to_string(),
    ]
}

/// The access log's own file (SQLite): the same chain, appended in sequence order only — `seq` is the row id
/// and there is no index by patient on the table (each record would dirty a random leaf of it, one WAL page
/// per record). Patients are indexed later, in bulk and sorted, when the log is idle (`audit_patient`, up to
/// `audit_indexed.upto`); lookups read the index, then scan the records not indexed yet.
pub fn access_log_ddl() -> Vec<String> {
    vec![
        format!("CREATE TABLE IF NOT EXISTS audit_log (seq INTEGER PRIMARY KEY, {AUDIT_FIELDS})"),
        "CREATE TABLE IF NOT EXISTS audit_patient (patient TEXT NOT NULL, seq INTEGER NOT NULL, \
         PRIMARY KEY (patient, seq)) WITHOUT ROWID"
            .to_string(),
        "CREATE TABLE IF NOT EXISTS audit_indexed (id INTEGER PRIMARY KEY, upto INTEGER NOT NULL)"
            .to_string(),
        AUDIT_HEAD.to_string(),
    ]
}

const AUDIT_FIELDS: &str = "recorded BIGINT NOT NULL, principal TEXT NOT NULL, action TEXT NOT NULL, \
    rtype TEXT, rid TEXT, version BIGINT, patient TEXT, outcome TEXT NOT NULL, client TEXT, detail TEXT, \
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL";
const AUDIT_HEAD: &str = "CREATE TABLE IF NOT EXISTS audit_head (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL)";

/// DDL statements for `dialect`, idempotent (`IF NOT EXISTS`).
pub fn ddl(dialect: Dialect) -> Vec<String> {
    // Strings compare byte-wise (prefix search is a range on the normalised form), whatever the database's
    // default collation.
    // PostgreSQL value indexes end with `rid`: membership tests are index-only and a page's rid range is an
    // index range (SQLite's WITHOUT ROWID secondary indexes end with the primary key, rid first, already).
    let (real, wr, coll, inc) = match dialect {
        Dialect::Sqlite => ("REAL", " WITHOUT ROWID", "", ""),
        Dialect::Postgres => ("DOUBLE PRECISION", "", " COLLATE \"C\"", ", rid"),
    };
    let mut v = vec![
        "CREATE TABLE IF NOT EXISTS socle_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)"
            .to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS resources (pkey TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, \
             rid BIGINT NOT NULL, version BIGINT NOT NULL, last_updated BIGINT NOT NULL, deleted BIGINT NOT NULL, \
             PRIMARY KEY (rtype, rid, pkey)){wr}"
        ),
        "CREATE UNIQUE INDEX IF NOT EXISTS resources_type_id ON resources (rtype, id)".to_string(),
        "CREATE INDEX IF NOT EXISTS resources_type_lu ON resources (rtype, last_updated)"
            .to_string(),
    ];
    v.extend(versions_ddl(dialect));
    v.extend([
        format!(
            "CREATE TABLE IF NOT EXISTS idx_string (pkey TEXT NOT NULL, rid BIGINT NOT NULL, n BIGINT NOT NULL, \
             rtype TEXT NOT NULL, param TEXT NOT NULL, norm TEXT{coll} NOT NULL, exact TEXT{coll} NOT NULL, \
             PRIMARY KEY (rid, n, pkey)){wr}"
        ),
        format!("CREATE INDEX IF NOT EXISTS idx_string_v ON idx_string (rtype, param, norm{inc})"),
        format!(
            "CREATE TABLE IF NOT EXISTS idx_token (pkey TEXT NOT NULL, rid BIGINT NOT NULL, n BIGINT NOT NULL, \
             rtype TEXT NOT NULL, param TEXT NOT NULL, system TEXT, code TEXT NOT NULL, \
             PRIMARY KEY (rid, n, pkey)){wr}"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS idx_token_v ON idx_token (rtype, param, code, system{inc})"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS idx_ref (pkey TEXT NOT NULL, rid BIGINT NOT NULL, n BIGINT NOT NULL, \
             rtype TEXT NOT NULL, param TEXT NOT NULL, ttype TEXT, tid TEXT, url TEXT, \
             PRIMARY KEY (rid, n, pkey)){wr}"
        ),
        format!("CREATE INDEX IF NOT EXISTS idx_ref_v ON idx_ref (rtype, param, tid, ttype{inc})"),
        // Reverse lookups (`_revinclude`, `_has`, chains) all name the source type and parameter, which
        // `idx_ref_v` leads with: a (tid, ttype) index cost every reference written a third B-tree insert
        // for no query, and is dropped from databases that had it.
        "DROP INDEX IF EXISTS idx_ref_target".to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS idx_date (pkey TEXT NOT NULL, rid BIGINT NOT NULL, n BIGINT NOT NULL, \
             rtype TEXT NOT NULL, param TEXT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL, \
             PRIMARY KEY (rid, n, pkey)){wr}"
        ),
        format!("CREATE INDEX IF NOT EXISTS idx_date_v ON idx_date (rtype, param, lo, hi{inc})"),
        format!(
            "CREATE TABLE IF NOT EXISTS idx_number (pkey TEXT NOT NULL, rid BIGINT NOT NULL, n BIGINT NOT NULL, \
             rtype TEXT NOT NULL, param TEXT NOT NULL, value {real} NOT NULL, lo {real} NOT NULL, \
             hi {real} NOT NULL, PRIMARY KEY (rid, n, pkey)){wr}"
        ),
        format!("CREATE INDEX IF NOT EXISTS idx_number_v ON idx_number (rtype, param, value{inc})"),
        format!(
            "CREATE TABLE IF NOT EXISTS idx_quantity (pkey TEXT NOT NULL, rid BIGINT NOT NULL, n BIGINT NOT NULL, \
             rtype TEXT NOT NULL, param TEXT NOT NULL, value {real} NOT NULL, lo {real} NOT NULL, \
             hi {real} NOT NULL, system TEXT, code TEXT, unit TEXT, PRIMARY KEY (rid, n, pkey)){wr}"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS idx_quantity_v ON idx_quantity (rtype, param, value{inc})"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS idx_uri (pkey TEXT NOT NULL, rid BIGINT NOT NULL, n BIGINT NOT NULL, \
             rtype TEXT NOT NULL, param TEXT NOT NULL, uri TEXT NOT NULL, PRIMARY KEY (rid, n, pkey)){wr}"
        ),
        format!("CREATE INDEX IF NOT EXISTS idx_uri_v ON idx_uri (rtype, param, uri{inc})"),
        format!(
            "CREATE TABLE IF NOT EXISTS idx_composite (pkey TEXT NOT NULL, rid BIGINT NOT NULL, n BIGINT NOT NULL, \
             rtype TEXT NOT NULL, param TEXT NOT NULL, c1sys TEXT, c1code TEXT NOT NULL, c2sys TEXT, c2code TEXT, \
             c2lo {real}, c2hi {real}, PRIMARY KEY (rid, n, pkey)){wr}"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS idx_composite_v ON idx_composite (rtype, param, c1code{inc})"
        ),
    ]);
    v.extend(audit_ddl());
    // Distinct name values and their trigrams, for `:contains` (see `vocab`).
    v.push(format!(
        "CREATE TABLE IF NOT EXISTS str_vocab (rtype TEXT NOT NULL, param TEXT NOT NULL, norm TEXT{coll} NOT NULL, \
         PRIMARY KEY (rtype, param, norm)){wr}"
    ));
    v.push(format!(
        "CREATE TABLE IF NOT EXISTS str_trigram (rtype TEXT NOT NULL, param TEXT NOT NULL, tri TEXT{coll} NOT NULL, \
         norm TEXT{coll} NOT NULL, PRIMARY KEY (rtype, param, tri, norm)){wr}"
    ));
    v.push(
        "CREATE TABLE IF NOT EXISTS type_counts (rtype TEXT PRIMARY KEY, live BIGINT NOT NULL)"
            .to_string(),
    );
    if dialect == Dialect::Postgres {
        v.push("CREATE SEQUENCE IF NOT EXISTS socle_seq".to_string());
        // (rtype, param, code) are strongly correlated: without this the planner underestimates token matches.
        v.push(
            "CREATE STATISTICS IF NOT EXISTS idx_token_stats (dependencies, ndistinct) ON rtype, param, code FROM idx_token"
                .to_string(),
        );
        v.push(
            "CREATE STATISTICS IF NOT EXISTS idx_ref_stats (dependencies, ndistinct) ON rtype, param, ttype FROM idx_ref"
                .to_string(),
        );
    }
    v
}
