//! Indexing again the resources written under other search-parameter definitions.
//!
//! Each type's index rows are made by its search parameters; a release that adds or redefines one (a French
//! IHE parameter, a corrected expression, a change in how values are normalised) would leave the resources
//! written before it unfound by that parameter. The store keeps, per type, the digest of the definitions its
//! rows were made with (`socle_meta`, `index:<Type>`, [`socle_fhir::index::index_fingerprint`]); the types
//! whose digest differs are indexed again, resource by resource in batches, each batch one transaction that
//! replaces the rows of its resources (their current version) — searches stay right for every other parameter
//! meanwhile, and a batch interrupted leaves its resources as they were. On PostgreSQL a batch first locks its
//! resources' rows, and writers lock a resource's row before touching its index rows
//! (`tx::current_for_write`): a batch and an update of one of its resources run one after the other. The digest
//! is recorded in the transaction that finds no resource left: an interrupted pass starts again from the
//! beginning of that type.
//!
//! A resource whose patient compartment the new definitions place elsewhere (a changed compartment parameter)
//! moves there with its history, as an update that changes its patient would move it.
//!
//! One process indexes at a time: the nodes of a deployment start together after an upgrade, and the first to
//! take the lease ([`Lease`], two rows of `socle_meta`, renewed in each batch's transaction) does the work;
//! the others look again every few seconds and take over should its lease lapse (a node stopped midway).

use std::sync::Arc;

use serde_json::Value;
use socle_fhir::index::{extract, index_fingerprint};
use socle_fhir::search_params::registry;

use crate::repo::compartment_key;
use crate::schema::INDEX_TABLES;
use crate::sql::{Dialect, SqlConn, SqlValue};
use crate::tx::IndexBuffer;
use crate::{Store, StoreError};

const PREFIX: &str = "index:";

/// Resources per transaction.
pub const BATCH: usize = 500;

/// How long a lease lasts unless renewed (each batch renews it).
const LEASE_MS: i64 = 60_000;
/// How often a process that found the lease taken looks again.
const LEASE_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// The right to index again, held by one process at a time among those sharing a store.
pub struct Lease {
    holder: i64,
}

impl Default for Lease {
    fn default() -> Self {
        Self::new()
    }
}

impl Lease {
    /// A lease for this process (not taken yet).
    pub fn new() -> Self {
        // Random and never 0 (the value of a free lease).
        let holder = (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64 | 1;
        Self { holder }
    }

    /// Takes the lease if it is free, lapsed or already ours. `Ok(None)`: taken; `Ok(Some(until))`: another
    /// process holds it until `until` (ms since the epoch).
    pub fn acquire(&self, store: &dyn Store) -> Result<Option<i64>, StoreError> {
        let mut held = None;
        store.write(&mut |c| {
            held = self.hold(c)?;
            Ok(())
        })?;
        Ok(held)
    }

    /// [`Lease::acquire`] inside a transaction (the batches renew it with their own writes).
    fn hold(&self, c: &mut dyn SqlConn) -> Result<Option<i64>, StoreError> {
        // The two rows exist before they are locked: concurrent inserts of a missing row wait for each other.
        c.execute(
            "INSERT INTO socle_meta (name, value) VALUES ('reindex:holder', 0), ('reindex:until', 0) \
             ON CONFLICT (name) DO NOTHING",
            &[],
        )?;
        let lock = if c.dialect() == Dialect::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let (mut holder, mut until) = (0, 0);
        for r in c.query(
            &format!(
                "SELECT name, value FROM socle_meta WHERE name IN ('reindex:holder', 'reindex:until'){lock}"
            ),
            &[],
        )? {
            let mut it = r.into_iter();
            match (it.next(), it.next().and_then(|v| v.as_i64())) {
                (Some(SqlValue::Text(n)), Some(v)) if n == "reindex:holder" => holder = v,
                (Some(SqlValue::Text(_)), Some(v)) => until = v,
                _ => {}
            }
        }
        let now = crate::now_ms();
        if holder != self.holder && holder != 0 && until > now {
            return Ok(Some(until));
        }
        self.set(c, self.holder, now + LEASE_MS)?;
        Ok(None)
    }

    fn set(&self, c: &mut dyn SqlConn, holder: i64, until: i64) -> Result<(), StoreError> {
        for (name, value) in [("reindex:holder", holder), ("reindex:until", until)] {
            c.execute(
                "UPDATE socle_meta SET value = ? WHERE name = ?",
                &[value.into(), name.into()],
            )?;
        }
        Ok(())
    }

    /// Gives the lease back (if still ours), for another process to take at once.
    pub fn release(&self, store: &dyn Store) -> Result<(), StoreError> {
        store.write(&mut |c| {
            if self.hold(c)?.is_none() {
                self.set(c, 0, 0)?;
            }
            Ok(())
        })
    }
}

/// The moment a lease lapses, for messages (UTC, to the second).
pub fn lease_end(until: i64) -> String {
    chrono::DateTime::from_timestamp_millis(until)
        .map(|t| t.format("%H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// A type whose live resources were indexed under other definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub rtype: String,
    /// Its live resources (from the store's counters).
    pub live: i64,
}

/// Records in a new store that every type is indexed under the current definitions.
pub(crate) fn mark_all(c: &mut dyn SqlConn) -> Result<(), StoreError> {
    for t in registry().resource_types() {
        mark(c, t)?;
    }
    Ok(())
}

fn mark(c: &mut dyn SqlConn, rtype: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO socle_meta (name, value) VALUES (?, ?) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        &[
            format!("{PREFIX}{rtype}").into(),
            index_fingerprint(rtype).into(),
        ],
    )?;
    Ok(())
}

/// The types whose index rows were made under other definitions than this binary's and that have live
/// resources (`only`: these types whatever their digest). Types without live resources are brought up to date
/// on the way: there is nothing of theirs to index.
pub fn stale_types(store: &dyn Store, only: Option<&[String]>) -> Result<Vec<Stale>, StoreError> {
    let mut recorded = std::collections::HashMap::new();
    let mut live = std::collections::HashMap::new();
    store.read(&mut |c| {
        recorded.clear();
        live.clear();
        for r in c.query(
            "SELECT name, value FROM socle_meta WHERE name LIKE 'index:%'",
            &[],
        )? {
            let mut it = r.into_iter();
            if let (Some(SqlValue::Text(n)), Some(v)) = (it.next(), it.next()) {
                recorded.insert(
                    n[PREFIX.len()..].to_string(),
                    v.as_i64().unwrap_or_default(),
                );
            }
        }
        for r in c.query("SELECT rtype, live FROM type_counts", &[])? {
            let mut it = r.into_iter();
            if let (Some(SqlValue::Text(t)), Some(n)) = (it.next(), it.next()) {
                live.insert(t, n.as_i64().unwrap_or_default());
            }
        }
        Ok(())
    })?;
    let mut stale = Vec::new();
    let mut empty = Vec::new();
    for t in registry().resource_types() {
        let wanted = match only {
            Some(list) => list.iter().any(|x| x == t),
            None => recorded.get(t) != Some(&index_fingerprint(t)),
        };
        if !wanted {
            continue;
        }
        match live.get(t).copied().unwrap_or_default() {
            n if n > 0 => stale.push(Stale {
                rtype: t.to_string(),
                live: n,
            }),
            _ => empty.push(t.to_string()),
        }
    }
    if !empty.is_empty() {
        store.write(&mut |c| {
            for t in &empty {
                mark(c, t)?;
            }
            Ok(())
        })?;
    }
    Ok(stale)
}

/// Indexes again every live resource of `rtype` from its current version, `batch` per transaction, and records
/// the type's digest once none is left. Each batch renews `lease` (taken by the caller); one that finds it
/// taken by another process stops with [`StoreError::Conflict`]. `progress` is told the count done after each
/// batch. Returns the number of resources indexed.
pub fn reindex_type(
    store: &dyn Store,
    rtype: &str,
    batch: usize,
    lease: &Lease,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, StoreError> {
    if !registry().is_resource_type(rtype) {
        return Err(StoreError::Config(format!(
            "type de ressource inconnu : {rtype}"
        )));
    }
    let batch = batch.max(1);
    let mut after = i64::MIN;
    let mut done = 0u64;
    let mut moved_total = 0u64;
    loop {
        let mut n = 0usize;
        let mut moved = 0u64;
        let mut last = after;
        store.write(&mut |c| {
            // The body may run again (a retried transaction): start from the same point.
            n = 0;
            last = after;
            if let Some(until) = lease.hold(c)? {
                return Err(StoreError::Conflict(format!(
                    "réindexation reprise par un autre processus (bail jusqu'à {})",
                    lease_end(until)
                )));
            }
            let pg = c.dialect() == Dialect::Postgres;
            // First the batch's resources, locked on PostgreSQL: a writer of one of them locks its row before
            // touching its index rows (`tx::current_for_write`), so it runs wholly before or after this batch.
            // A row updated meanwhile is returned as it is once committed; one deleted meanwhile is skipped.
            let rows = c.query(
                &format!(
                    "SELECT rid FROM resources WHERE rtype = ? AND deleted = 0 AND rid > ? ORDER BY rid LIMIT {batch}{}",
                    if pg { " FOR UPDATE" } else { "" }
                ),
                &[rtype.into(), after.into()],
            )?;
            let rids: Vec<i64> = rows
                .into_iter()
                .filter_map(|r| r.into_iter().next().and_then(|v| v.as_i64()))
                .collect();
            let Some(&max) = rids.iter().max() else {
                mark(c, rtype)?;
                return Ok(());
            };
            // Then their current versions (a statement after the locks: it sees what they protect).
            let marks = vec!["?"; rids.len()].join(", ");
            let mut params: Vec<SqlValue> = vec![rtype.into()];
            params.extend(rids.iter().map(|&r| SqlValue::from(r)));
            let rows = c.query(
                &format!(
                    "SELECT r.pkey, r.rid, r.id, v.content FROM resources r JOIN resource_versions v \
                     ON v.pkey = r.pkey AND v.rid = r.rid AND v.version = r.version \
                     WHERE r.rtype = ? AND r.deleted = 0 AND r.rid IN ({marks})"
                ),
                &params,
            )?;
            let mut buf = IndexBuffer::default();
            let mut indexed = Vec::with_capacity(rows.len());
            moved = 0;
            for row in rows {
                let mut it = row.into_iter();
                let pkey = it
                    .next()
                    .and_then(SqlValue::into_string)
                    .unwrap_or_default();
                let rid = it.next().and_then(|v| v.as_i64()).unwrap_or_default();
                let id = it.next().and_then(SqlValue::into_string).unwrap_or_default();
                let content = it.next().and_then(SqlValue::into_bytes).unwrap_or_default();
                let body: Value = serde_json::from_slice(&content).map_err(|e| {
                    StoreError::Corrupt(format!("{rtype} (rid {rid}) illisible : {e}"))
                })?;
                let entries = extract(&body);
                let key = compartment_key(rtype, &id, &entries);
                if key != pkey {
                    // Its compartment changed with the definitions: the resource and its history move.
                    c.execute(
                        "UPDATE resources SET pkey = ? WHERE pkey = ? AND rtype = ? AND rid = ?",
                        &[
                            key.as_str().into(),
                            pkey.as_str().into(),
                            rtype.into(),
                            rid.into(),
                        ],
                    )?;
                    c.execute(
                        "UPDATE resource_versions SET pkey = ? WHERE pkey = ? AND rid = ?",
                        &[key.as_str().into(), pkey.as_str().into(), rid.into()],
                    )?;
                    moved += 1;
                }
                buf.add(&key, rid, rtype, &entries);
                indexed.push(SqlValue::from(rid));
            }
            if !indexed.is_empty() {
                // Exactly these resources' rows, one statement per table.
                let marks = vec!["?"; indexed.len()].join(", ");
                for t in INDEX_TABLES {
                    c.execute(
                        &format!("DELETE FROM {t} WHERE rid IN ({marks})"),
                        &indexed,
                    )?;
                }
            }
            buf.flush(c)?;
            n = indexed.len();
            last = max;
            Ok(())
        })?;
        if last == after {
            // An empty batch: the type is done, its digest recorded in that transaction.
            if moved_total > 0 {
                tracing::info!(
                    rtype,
                    moved = moved_total,
                    "ressources changées de compartiment patient"
                );
            }
            return Ok(done);
        }
        moved_total += moved;
        done += n as u64;
        after = last;
        progress(done);
    }
}

/// Indexes the stale types again on a background thread of low priority (`socle serve` at start), logging
/// its progress; the server answers meanwhile. Errors are logged, not fatal: the next start tries again.
/// When another process holds the lease, looks again every few seconds until it is free (then indexes what
/// is still stale) or nothing is left to do.
pub fn spawn_background(store: Arc<dyn Store>, stale: Vec<Stale>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        crate::background_priority();
        let lease = Lease::new();
        let mut stale = stale;
        let mut waited = false;
        loop {
            let held = match lease.acquire(&*store) {
                Ok(held) => held,
                Err(e) => {
                    tracing::error!(error = %e, "réindexation : bail impossible à prendre");
                    return;
                }
            };
            if let Some(until) = held {
                if !waited {
                    tracing::info!(
                        until = %lease_end(until),
                        "réindexation menée par un autre processus : ce nœud attend"
                    );
                    waited = true;
                }
                std::thread::sleep(LEASE_POLL);
            } else if !waited {
                break;
            }
            // What the other process left: all of it if it stopped early, nothing once it has finished.
            stale = match stale_types(&*store, None) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "réindexation : état des index illisible");
                    if held.is_none() {
                        let _ = lease.release(&*store);
                    }
                    return;
                }
            };
            if stale.is_empty() {
                if held.is_none() {
                    let _ = lease.release(&*store);
                }
                tracing::info!("réindexation achevée par un autre processus");
                return;
            }
            if held.is_none() {
                break;
            }
        }
        let types = stale.len();
        for s in stale {
            let started = std::time::Instant::now();
            let mut next_log = s.live / 10;
            tracing::info!(rtype = %s.rtype, live = s.live, "réindexation : début");
            let r = reindex_type(&*store, &s.rtype, BATCH, &lease, &mut |done| {
                if done as i64 >= next_log && done as i64 <= s.live {
                    tracing::info!(rtype = %s.rtype, done, live = s.live, "réindexation en cours");
                    next_log += (s.live / 10).max(1);
                }
            });
            match r {
                Ok(n) => tracing::info!(
                    rtype = %s.rtype,
                    resources = n,
                    secs = started.elapsed().as_secs_f64(),
                    "réindexation terminée"
                ),
                Err(e) => {
                    tracing::error!(rtype = %s.rtype, error = %e, "réindexation interrompue");
                    // For another process (or the next start) to take over at once.
                    let _ = lease.release(&*store);
                    return;
                }
            }
        }
        if let Err(e) = lease.release(&*store) {
            tracing::warn!(error = %e, "réindexation : bail non rendu (il expirera)");
        }
        tracing::info!(types, "réindexation achevée");
    })
}
