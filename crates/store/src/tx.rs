//! Row-level storage operations shared by both backends, run inside a transaction.
//!
//! Owns: how a resource version is laid out in `resources`, `resource_versions` and the index tables.

use socle_fhir::index::{IndexEntry, IndexValue, subset_row};
use socle_fhir::search_params::Storage;

use crate::StoreError;
use crate::schema::INDEX_TABLES;
use crate::sql::{ColType, Dialect, SqlConn, SqlValue};

pub(crate) fn init_meta(c: &mut dyn SqlConn) -> Result<(), StoreError> {
    let have = c.query_one("SELECT value FROM socle_meta WHERE name = 'schema'", &[])?;
    match have
        .and_then(|r| r.into_iter().next())
        .and_then(|v| v.as_i64())
    {
        None => {
            c.execute(
                "INSERT INTO socle_meta (name, value) VALUES ('schema', ?)",
                &[crate::schema::SCHEMA_VERSION.into()],
            )?;
            c.execute(
                "INSERT INTO socle_meta (name, value) VALUES ('seq', 0)",
                &[],
            )?;
            c.execute(
                "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, ?)",
                &[crate::audit::GENESIS.into()],
            )?;
            // Nothing stored yet: every type is indexed under this binary's definitions.
            crate::reindex::mark_all(c)?;
        }
        Some(v) if v > crate::schema::SCHEMA_VERSION => {
            return Err(StoreError::Config(format!(
                "la base est au schéma {v}, plus récent que ce binaire ({}) : mettez Socle à jour",
                crate::schema::SCHEMA_VERSION
            )));
        }
        Some(_) => {}
    }
    // Databases written before `type_counts` existed: count once.
    if c.query_one("SELECT rtype FROM type_counts LIMIT 1", &[])?
        .is_none()
    {
        c.execute(
            "INSERT INTO type_counts (rtype, live) SELECT rtype, COUNT(*) FROM resources WHERE deleted = 0 GROUP BY rtype",
            &[],
        )?;
    }
    crate::vocab::backfill(c)?;
    Ok(())
}

/// Allocates the next value of the global sequence (resource numbers and history order).
pub(crate) fn next_seq(c: &mut dyn SqlConn) -> Result<i64, StoreError> {
    let row = match c.dialect() {
        Dialect::Sqlite => c.query_one(
            "UPDATE socle_meta SET value = value + 1 WHERE name = 'seq' RETURNING value",
            &[],
        )?,
        Dialect::Postgres => c.query_one("SELECT nextval('socle_seq')", &[])?,
    };
    row.and_then(|r| r.into_iter().next())
        .and_then(|v| v.as_i64())
        .ok_or_else(|| StoreError::Corrupt("séquence introuvable".into()))
}

/// The current state of a resource (its row in `resources`).
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentRow {
    pub pkey: String,
    pub rid: i64,
    pub version: i64,
    pub last_updated: i64,
    pub deleted: bool,
}

pub(crate) fn current(
    c: &mut dyn SqlConn,
    rtype: &str,
    id: &str,
) -> Result<Option<CurrentRow>, StoreError> {
    let row = c.query_one(
        "SELECT pkey, rid, version, last_updated, deleted FROM resources WHERE rtype = ? AND id = ?",
        &[rtype.into(), id.into()],
    )?;
    Ok(row.map(|r| current_from(&mut r.into_iter())))
}

/// [`current`] for a write that will replace the resource's version and index rows: on PostgreSQL the row is
/// locked (`FOR UPDATE`) before anything of the resource is touched, so that writers of one resource, and a
/// re-indexing batch that locks the same rows, follow one another instead of interleaving their index rows.
pub(crate) fn current_for_write(
    c: &mut dyn SqlConn,
    rtype: &str,
    id: &str,
) -> Result<Option<CurrentRow>, StoreError> {
    if c.dialect() != Dialect::Postgres {
        return current(c, rtype, id);
    }
    let row = c.query_one(
        "SELECT pkey, rid, version, last_updated, deleted FROM resources WHERE rtype = ? AND id = ? FOR UPDATE",
        &[rtype.into(), id.into()],
    )?;
    Ok(row.map(|r| current_from(&mut r.into_iter())))
}

/// A `CurrentRow` from `pkey, rid, version, last_updated, deleted`.
fn current_from(it: &mut impl Iterator<Item = SqlValue>) -> CurrentRow {
    CurrentRow {
        pkey: it
            .next()
            .and_then(SqlValue::into_string)
            .unwrap_or_default(),
        rid: it.next().and_then(|v| v.as_i64()).unwrap_or_default(),
        version: it.next().and_then(|v| v.as_i64()).unwrap_or_default(),
        last_updated: it.next().and_then(|v| v.as_i64()).unwrap_or_default(),
        deleted: it.next().and_then(|v| v.as_i64()).unwrap_or_default() != 0,
    }
}

/// The current row of `rtype/id` with its current version's content, in one statement (`None` for the version
/// if that row is missing: a corrupt store).
pub(crate) fn current_with_content(
    c: &mut dyn SqlConn,
    rtype: &str,
    id: &str,
) -> Result<Option<(CurrentRow, Option<VersionRow>)>, StoreError> {
    Ok(current_with_attached(c, rtype, id, None)?.map(|(cur, v, _)| (cur, v)))
}

/// [`current_with_content`], with `attached` evaluated in the same statement (PostgreSQL; elsewhere not
/// evaluated, `None`).
pub(crate) fn current_with_attached(
    c: &mut dyn SqlConn,
    rtype: &str,
    id: &str,
    attached: Option<&crate::repo::Attached>,
) -> Result<Option<CurrentRow3>, StoreError> {
    const CURRENT: &str = "SELECT r.pkey, r.rid, r.version, r.last_updated, r.deleted, v.method, v.content, \
         v.last_updated FROM resources r LEFT JOIN resource_versions v \
         ON v.pkey = r.pkey AND v.rid = r.rid AND v.version = r.version \
         WHERE r.rtype = ? AND r.id = ?";
    let attached = attached.filter(|_| c.dialect() == Dialect::Postgres);
    let row = match attached {
        None => c.query_one(CURRENT, &[rtype.into(), id.into()])?,
        Some(a) => {
            let mut params = a.params.clone();
            params.extend([rtype.into(), id.into()]);
            let sql = CURRENT.replacen(
                " FROM resources r",
                &format!(", {} FROM resources r", a.sql),
                1,
            );
            c.query_one(&sql, &params)?
        }
    };
    Ok(row.map(|r| {
        let mut it = r.into_iter();
        let cur = current_from(&mut it);
        let method = it.next().and_then(SqlValue::into_string);
        let content = it.next().and_then(SqlValue::into_bytes);
        let version = it
            .next()
            .and_then(|v| v.as_i64())
            .map(|last_updated| VersionRow {
                rtype: rtype.to_string(),
                id: id.to_string(),
                version: cur.version,
                last_updated,
                method: method.unwrap_or_default(),
                content: content.unwrap_or_default(),
            });
        let extra = attached.and(it.next()).and_then(SqlValue::into_string);
        (cur, version, extra)
    }))
}

/// The current row, its current version's content and the attached value.
pub(crate) type CurrentRow3 = (CurrentRow, Option<VersionRow>, Option<String>);

/// One stored version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRow {
    pub rtype: String,
    pub id: String,
    pub version: i64,
    pub last_updated: i64,
    pub method: String,
    pub content: Vec<u8>,
}

pub(crate) const VERSION_COLS: &str = "rtype, id, version, last_updated, method, content";

pub(crate) fn version_from_row(r: Vec<SqlValue>) -> VersionRow {
    let mut it = r.into_iter();
    VersionRow {
        rtype: it
            .next()
            .and_then(SqlValue::into_string)
            .unwrap_or_default(),
        id: it
            .next()
            .and_then(SqlValue::into_string)
            .unwrap_or_default(),
        version: it.next().and_then(|v| v.as_i64()).unwrap_or_default(),
        last_updated: it.next().and_then(|v| v.as_i64()).unwrap_or_default(),
        method: it
            .next()
            .and_then(SqlValue::into_string)
            .unwrap_or_default(),
        content: it.next().and_then(SqlValue::into_bytes).unwrap_or_default(),
    }
}

pub(crate) fn load_version(
    c: &mut dyn SqlConn,
    pkey: &str,
    rid: i64,
    version: i64,
) -> Result<Option<VersionRow>, StoreError> {
    let sql = format!(
        "SELECT {VERSION_COLS} FROM resource_versions WHERE pkey = ? AND rid = ? AND version = ?"
    );
    Ok(
        c.query_one(&sql, &[pkey.into(), rid.into(), version.into()])?
            .map(version_from_row),
    )
}

/// What to write for one new version.
pub struct NewVersion<'a> {
    pub rtype: &'a str,
    pub id: &'a str,
    pub pkey: &'a str,
    pub version: i64,
    pub last_updated: i64,
    pub method: &'a str,
    pub content: Vec<u8>,
    pub deleted: bool,
    pub index: &'a [IndexEntry],
}

/// Writes buffered index rows in bulk at the end of the transaction (or before a query that must see them).
#[derive(Default)]
pub struct IndexBuffer {
    rows: [Vec<Vec<SqlValue>>; 8],
    /// Changes to the number of live resources per type (`type_counts`), applied at flush.
    counts: std::collections::HashMap<String, i64>,
    /// Sequence numbers reserved by this transaction and not used yet (`next..end`; SQLite only). The
    /// reservation is part of the transaction: rolled back with it, it leaves nothing behind.
    seq_next: i64,
    seq_end: i64,
}

/// How many sequence numbers a SQLite write transaction reserves at a time (one statement instead of one
/// per resource; unused numbers are gaps, which nothing relies on).
const SEQ_BLOCK: i64 = 64;

const COLS: [&[(&str, ColType)]; 8] = [
    &[
        ("pkey", ColType::Text),
        ("rid", ColType::Int),
        ("n", ColType::Int),
        ("rtype", ColType::Text),
        ("param", ColType::Text),
        ("norm", ColType::Text),
        ("exact", ColType::Text),
    ],
    &[
        ("pkey", ColType::Text),
        ("rid", ColType::Int),
        ("n", ColType::Int),
        ("rtype", ColType::Text),
        ("param", ColType::Text),
        ("system", ColType::Text),
        ("code", ColType::Text),
    ],
    &[
        ("pkey", ColType::Text),
        ("rid", ColType::Int),
        ("n", ColType::Int),
        ("rtype", ColType::Text),
        ("param", ColType::Text),
        ("ttype", ColType::Text),
        ("tid", ColType::Text),
        ("url", ColType::Text),
    ],
    &[
        ("pkey", ColType::Text),
        ("rid", ColType::Int),
        ("n", ColType::Int),
        ("rtype", ColType::Text),
        ("param", ColType::Text),
        ("lo", ColType::Int),
        ("hi", ColType::Int),
    ],
    &[
        ("pkey", ColType::Text),
        ("rid", ColType::Int),
        ("n", ColType::Int),
        ("rtype", ColType::Text),
        ("param", ColType::Text),
        ("value", ColType::Real),
        ("lo", ColType::Real),
        ("hi", ColType::Real),
    ],
    &[
        ("pkey", ColType::Text),
        ("rid", ColType::Int),
        ("n", ColType::Int),
        ("rtype", ColType::Text),
        ("param", ColType::Text),
        ("value", ColType::Real),
        ("lo", ColType::Real),
        ("hi", ColType::Real),
        ("system", ColType::Text),
        ("code", ColType::Text),
        ("unit", ColType::Text),
    ],
    &[
        ("pkey", ColType::Text),
        ("rid", ColType::Int),
        ("n", ColType::Int),
        ("rtype", ColType::Text),
        ("param", ColType::Text),
        ("uri", ColType::Text),
    ],
    &[
        ("pkey", ColType::Text),
        ("rid", ColType::Int),
        ("n", ColType::Int),
        ("rtype", ColType::Text),
        ("param", ColType::Text),
        ("c1sys", ColType::Text),
        ("c1code", ColType::Text),
        ("c2sys", ColType::Text),
        ("c2code", ColType::Text),
        ("c2lo", ColType::Real),
        ("c2hi", ColType::Real),
    ],
];

fn finite(f: f64) -> f64 {
    if f.is_finite() {
        f
    } else if f > 0.0 {
        f64::MAX
    } else {
        f64::MIN
    }
}

impl IndexBuffer {
    /// The next value of the global sequence, for this transaction.
    pub fn next_seq(&mut self, c: &mut dyn SqlConn) -> Result<i64, StoreError> {
        if c.dialect() != Dialect::Sqlite {
            return next_seq(c);
        }
        if self.seq_next >= self.seq_end {
            let top = c
                .query_one(
                    "UPDATE socle_meta SET value = value + ? WHERE name = 'seq' RETURNING value",
                    &[SEQ_BLOCK.into()],
                )?
                .and_then(|r| r.into_iter().next())
                .and_then(|v| v.as_i64())
                .ok_or_else(|| StoreError::Corrupt("séquence introuvable".into()))?;
            self.seq_next = top - SEQ_BLOCK + 1;
            self.seq_end = top + 1;
        }
        let seq = self.seq_next;
        self.seq_next += 1;
        Ok(seq)
    }

    pub fn add(&mut self, pkey: &str, rid: i64, rtype: &str, entries: &[IndexEntry]) {
        let mut counters = [0i64; 8];
        let reg = socle_fhir::search_params::registry();
        for e in entries {
            // Values kept as other parameters' rows (`patient` as `subject`'s Patients, `combo-code` as `code`
            // and `component-code`) are not written twice.
            let added;
            let (param, value) = match reg.param(rtype, &e.param).map(|p| &p.storage) {
                None | Some(Storage::Own) => (e.param.as_str(), &e.value),
                Some(Storage::Union(_)) => continue,
                Some(Storage::Subset { param, target }) => match subset_row(&e.value, target) {
                    Some(v) => {
                        added = v;
                        (param.as_str(), &added)
                    }
                    None => continue,
                },
            };
            let (table, tail): (usize, Vec<SqlValue>) = match value {
                IndexValue::String { norm, exact } => (0, vec![norm.into(), exact.into()]),
                IndexValue::Token { system, code } => (1, vec![system.clone().into(), code.into()]),
                IndexValue::Reference {
                    target_type,
                    target_id,
                    url,
                } => (
                    2,
                    vec![
                        target_type.clone().into(),
                        target_id.clone().into(),
                        url.clone().into(),
                    ],
                ),
                IndexValue::Date { lo, hi } => (3, vec![(*lo).into(), (*hi).into()]),
                IndexValue::Number { value, lo, hi } => (
                    4,
                    vec![
                        finite(*value).into(),
                        finite(*lo).into(),
                        finite(*hi).into(),
                    ],
                ),
                IndexValue::Quantity {
                    value,
                    lo,
                    hi,
                    system,
                    code,
                    unit,
                } => (
                    5,
                    vec![
                        finite(*value).into(),
                        finite(*lo).into(),
                        finite(*hi).into(),
                        system.clone().into(),
                        code.clone().into(),
                        unit.clone().into(),
                    ],
                ),
                IndexValue::Uri(u) => (6, vec![u.into()]),
                IndexValue::Composite(parts) => match composite_columns(parts) {
                    Some(cols) => (7, cols),
                    None => continue,
                },
            };
            let n = counters[table];
            counters[table] += 1;
            let mut row = Vec::with_capacity(5 + tail.len());
            row.push(pkey.into());
            row.push(rid.into());
            row.push(n.into());
            row.push(rtype.into());
            row.push(param.into());
            row.extend(tail);
            self.rows[table].push(row);
        }
    }

    /// Applies the live-resource count changes. Call it last before commit: each type's counter row stays
    /// locked until the transaction ends, so taking it late keeps concurrent writers from queueing on it
    /// (types in a fixed order, so two transactions never wait on each other's rows).
    pub fn flush_counts(&mut self, c: &mut dyn SqlConn) -> Result<(), StoreError> {
        let mut counts: Vec<(String, i64)> = self.counts.drain().filter(|(_, d)| *d != 0).collect();
        if counts.is_empty() {
            return Ok(());
        }
        counts.sort();
        // One statement for all types (rows are taken in the order given).
        let rows = vec!["(?, ?)"; counts.len()].join(", ");
        let params: Vec<SqlValue> = counts
            .into_iter()
            .flat_map(|(rtype, delta)| [rtype.into(), delta.into()])
            .collect();
        c.execute(
            &format!(
                "INSERT INTO type_counts (rtype, live) VALUES {rows} \
                 ON CONFLICT (rtype) DO UPDATE SET live = type_counts.live + excluded.live"
            ),
            &params,
        )?;
        Ok(())
    }

    pub fn flush(&mut self, c: &mut dyn SqlConn) -> Result<(), StoreError> {
        // Name values new to the vocabulary (string rows: pkey, rid, n, rtype, param, norm, exact).
        let mut names: Vec<(String, String, String)> = Vec::new();
        for row in &self.rows[0] {
            if let (
                Some(SqlValue::Text(rtype)),
                Some(SqlValue::Text(param)),
                Some(SqlValue::Text(norm)),
            ) = (row.get(3), row.get(4), row.get(5))
                && crate::vocab::has_vocabulary(param)
            {
                names.push((rtype.clone(), param.clone(), norm.clone()));
            }
        }
        if !names.is_empty() {
            names.sort();
            names.dedup();
            crate::vocab::record(c, &names)?;
        }
        for (i, rows) in self.rows.iter_mut().enumerate() {
            if !rows.is_empty() {
                c.insert_rows(INDEX_TABLES[i], COLS[i], rows)?;
                rows.clear();
            }
        }
        Ok(())
    }
}

/// Composite values are stored as: first component a token (system, code); second a token, or a
/// number/quantity/date range (`c2lo`..`c2hi`), or a string (in `c2code`, normalised).
fn composite_columns(parts: &[IndexValue]) -> Option<Vec<SqlValue>> {
    let (c1sys, c1code) = match parts.first()? {
        IndexValue::Token { system, code } => (system.clone(), code.clone()),
        IndexValue::String { norm, .. } => (None, norm.clone()),
        IndexValue::Uri(u) => (None, u.clone()),
        _ => return None,
    };
    let (c2sys, c2code, lo, hi) = match parts.get(1) {
        Some(IndexValue::Token { system, code }) => {
            (system.clone(), Some(code.clone()), None, None)
        }
        Some(IndexValue::String { norm, .. }) => (None, Some(norm.clone()), None, None),
        Some(IndexValue::Uri(u)) => (None, Some(u.clone()), None, None),
        Some(IndexValue::Number { lo, hi, .. }) => (None, None, Some(*lo), Some(*hi)),
        Some(IndexValue::Quantity {
            lo,
            hi,
            system,
            code,
            ..
        }) => (system.clone(), code.clone(), Some(*lo), Some(*hi)),
        Some(IndexValue::Date { lo, hi }) => (None, None, Some(*lo as f64), Some(*hi as f64)),
        Some(IndexValue::Reference {
            target_type,
            target_id,
            ..
        }) => (
            None,
            target_id
                .as_ref()
                .map(|id| format!("{}/{id}", target_type.as_deref().unwrap_or(""))),
            None,
            None,
        ),
        _ => (None, None, None, None),
    };
    Some(vec![
        c1sys.into(),
        c1code.into(),
        c2sys.into(),
        c2code.into(),
        lo.map_or(SqlValue::Null, |f| SqlValue::Real(finite(f))),
        hi.map_or(SqlValue::Null, |f| SqlValue::Real(finite(f))),
    ])
}

pub(crate) fn delete_index_rows(
    c: &mut dyn SqlConn,
    pkey: &str,
    rid: i64,
) -> Result<(), StoreError> {
    match c.dialect() {
        Dialect::Sqlite => {
            for t in INDEX_TABLES {
                c.execute(
                    &format!("DELETE FROM {t} WHERE pkey = ? AND rid = ?"),
                    &[pkey.into(), rid.into()],
                )?;
            }
        }
        Dialect::Postgres => {
            // One round trip for the eight tables.
            let parts: Vec<String> = INDEX_TABLES
                .iter()
                .enumerate()
                .map(|(i, t)| format!("d{i} AS (DELETE FROM {t} WHERE pkey = ? AND rid = ?)"))
                .collect();
            let sql = format!("WITH {} SELECT 1", parts.join(", "));
            let mut params = Vec::with_capacity(16);
            for _ in INDEX_TABLES {
                params.push(pkey.into());
                params.push(rid.into());
            }
            c.query(&sql, &params)?;
        }
    }
    Ok(())
}

/// Writes a new version of a resource: the version row, the current-state row and (for non-deletes) its index
/// rows, buffered in `buf`. `prev` is the current row read in the same transaction. Returns the resource number.
pub(crate) fn write_version(
    c: &mut dyn SqlConn,
    buf: &mut IndexBuffer,
    prev: Option<&CurrentRow>,
    v: &NewVersion<'_>,
) -> Result<i64, StoreError> {
    let deleted: i64 = v.deleted.into();
    if c.dialect() == Dialect::Postgres && prev.is_none_or(|p| p.pkey == v.pkey) {
        return write_version_pg(c, buf, prev, v, deleted);
    }
    let seq = buf.next_seq(c)?;
    let rid = match prev {
        None => {
            c.execute(
                "INSERT INTO resources (pkey, rtype, id, rid, version, last_updated, deleted) VALUES (?, ?, ?, ?, ?, ?, ?)",
                &[v.pkey.into(), v.rtype.into(), v.id.into(), seq.into(), v.version.into(), v.last_updated.into(), deleted.into()],
            )?;
            seq
        }
        Some(p) => {
            delete_index_rows(c, &p.pkey, p.rid)?;
            if p.pkey == v.pkey {
                c.execute(
                    "UPDATE resources SET version = ?, last_updated = ?, deleted = ? WHERE pkey = ? AND rtype = ? AND id = ?",
                    &[v.version.into(), v.last_updated.into(), deleted.into(), v.pkey.into(), v.rtype.into(), v.id.into()],
                )?;
            } else {
                // The resource moved to another patient compartment: move its row and history with it.
                c.execute(
                    "DELETE FROM resources WHERE pkey = ? AND rtype = ? AND id = ?",
                    &[p.pkey.as_str().into(), v.rtype.into(), v.id.into()],
                )?;
                c.execute(
                    "INSERT INTO resources (pkey, rtype, id, rid, version, last_updated, deleted) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    &[v.pkey.into(), v.rtype.into(), v.id.into(), p.rid.into(), v.version.into(), v.last_updated.into(), deleted.into()],
                )?;
                c.execute(
                    "UPDATE resource_versions SET pkey = ? WHERE pkey = ? AND rid = ?",
                    &[v.pkey.into(), p.pkey.as_str().into(), p.rid.into()],
                )?;
            }
            p.rid
        }
    };
    c.execute(
        "INSERT INTO resource_versions (pkey, rid, version, rtype, id, seq, last_updated, method, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        &[
            v.pkey.into(),
            rid.into(),
            v.version.into(),
            v.rtype.into(),
            v.id.into(),
            seq.into(),
            v.last_updated.into(),
            v.method.into(),
            SqlValue::Blob(v.content.clone()),
        ],
    )?;
    after_version(buf, prev, v, rid);
    Ok(rid)
}

/// What every new version leaves in the transaction's buffer: the live count's change and its index rows.
fn after_version(buf: &mut IndexBuffer, prev: Option<&CurrentRow>, v: &NewVersion<'_>, rid: i64) {
    let was_live = prev.is_some_and(|p| !p.deleted);
    if was_live == v.deleted {
        *buf.counts.entry(v.rtype.to_string()).or_default() += if v.deleted { -1 } else { 1 };
    }
    if !v.deleted {
        buf.add(v.pkey, rid, v.rtype, v.index);
    }
}

/// [`write_version`] on PostgreSQL, for a new resource or a version in the same compartment: the sequence
/// value, the current-state row and the version row in one statement (one round trip instead of three; a DMP
/// feed writes three resources).
fn write_version_pg(
    c: &mut dyn SqlConn,
    buf: &mut IndexBuffer,
    prev: Option<&CurrentRow>,
    v: &NewVersion<'_>,
    deleted: i64,
) -> Result<i64, StoreError> {
    // The sequence value, then the current-state row, then the version row (a new resource's number is its
    // first sequence value).
    const CREATE: &str = "WITH s AS (SELECT nextval('socle_seq') AS seq), \
        r AS (INSERT INTO resources (pkey, rtype, id, rid, version, last_updated, deleted) \
        VALUES (?, ?, ?, (SELECT seq FROM s), ?, ?, ?)), \
        v AS (INSERT INTO resource_versions (pkey, rid, version, rtype, id, seq, last_updated, method, content) \
        VALUES (?, (SELECT seq FROM s), ?, ?, ?, (SELECT seq FROM s), ?, ?, ?)) SELECT seq FROM s";
    const UPDATE: &str = "WITH s AS (SELECT nextval('socle_seq') AS seq), \
        r AS (UPDATE resources SET version = ?, last_updated = ?, deleted = ? WHERE pkey = ? AND rtype = ? AND id = ?), \
        v AS (INSERT INTO resource_versions (pkey, rid, version, rtype, id, seq, last_updated, method, content) \
        VALUES (?, ?, ?, ?, ?, (SELECT seq FROM s), ?, ?, ?)) SELECT seq FROM s";
    let (sql, mut params): (&str, Vec<SqlValue>) = match prev {
        None => (
            CREATE,
            vec![
                v.pkey.into(),
                v.rtype.into(),
                v.id.into(),
                v.version.into(),
                v.last_updated.into(),
                deleted.into(),
                v.pkey.into(),
            ],
        ),
        Some(p) => {
            delete_index_rows(c, &p.pkey, p.rid)?;
            (
                UPDATE,
                vec![
                    v.version.into(),
                    v.last_updated.into(),
                    deleted.into(),
                    v.pkey.into(),
                    v.rtype.into(),
                    v.id.into(),
                    v.pkey.into(),
                    p.rid.into(),
                ],
            )
        }
    };
    params.extend([
        v.version.into(),
        v.rtype.into(),
        v.id.into(),
        v.last_updated.into(),
        v.method.into(),
        SqlValue::Blob(v.content.clone()),
    ]);
    let seq = c
        .query_one(sql, &params)?
        .and_then(|r| r.into_iter().next())
        .and_then(|v| v.as_i64())
        .ok_or_else(|| StoreError::Corrupt("séquence introuvable".into()))?;
    let rid = prev.map_or(seq, |p| p.rid);
    after_version(buf, prev, v, rid);
    Ok(rid)
}
