//! Socle storage: one `Store` trait with an embedded SQLite backend (the default) and a PostgreSQL backend,
//! and, written once on top of it, the FHIR interactions (`repo`), search (`search`) and the audit trail
//! (`audit`).
//!
//! Owns: durability, transactions, the schema, indexing and querying. Must not know HTTP.

pub mod audit;
pub mod blob;
pub mod bundle;
mod flush;
pub mod postgres;
pub mod reindex;
pub mod render;
pub mod repo;
pub mod s3;
pub mod schema;
pub mod search;
pub mod sql;
pub mod sqlite;
mod tx;
pub mod vocab;

use std::sync::Arc;

pub use repo::{
    Attached, RepoError, Repository, RequestContext, SearchPlan, Validator, force_search_plan,
    set_validators,
};
pub use sql::{Dialect, SqlConn, SqlValue};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("erreur de base de données : {0}")]
    Database(String),
    /// A uniqueness constraint was hit by a concurrent writer.
    #[error("conflit d'écriture concurrente : {0}")]
    Conflict(String),
    /// Transient (serialization failure, deadlock, busy): the whole transaction may be retried.
    #[error("conflit transitoire : {0}")]
    Retryable(String),
    #[error("données corrompues : {0}")]
    Corrupt(String),
    #[error("configuration du stockage invalide : {0}")]
    Config(String),
    /// The transaction body asked for a rollback; the reason travels separately.
    #[error("transaction annulée")]
    Rollback,
}

/// A unit of work run inside one database transaction.
pub type TxBody<'a> = dyn FnMut(&mut dyn SqlConn) -> Result<(), StoreError> + 'a;

/// A storage backend: hands out connections inside transactions. Everything else is shared code.
pub trait Store: Send + Sync {
    /// `"sqlite"` or `"postgresql"`.
    fn backend(&self) -> &'static str;
    /// Runs `body` in a read-write transaction, committed (durably) if it returns `Ok`, rolled back otherwise.
    /// `body` may run more than once — transient failures are retried, and an embedded store re-runs the
    /// writers of a group commit that another writer's failure rolled back — so it must start from what it
    /// captured each time (assign, do not accumulate) and keep side effects outside the database for after.
    fn write(&self, body: &mut TxBody<'_>) -> Result<(), StoreError>;
    /// Like `write`, for a transaction that only appends records to the access log (the audit records written
    /// apart from data: reads, searches, refusals, operations). An embedded store keeps them in a file of their
    /// own ([`Store::separate_log`]).
    fn write_log(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        self.write(body)
    }
    /// A read transaction on the access log.
    fn read_log(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        self.read(body)
    }
    /// Whether the access log is a chain of its own, apart from the chain of write records kept with the data
    /// (`false`: one chain holds both).
    fn separate_log(&self) -> bool {
        false
    }
    /// Runs `body` in a read-only transaction (one consistent snapshot).
    fn read(&self, body: &mut TxBody<'_>) -> Result<(), StoreError>;
    /// Runs a `body` that issues **one** statement, outside an explicit transaction when that saves round trips
    /// (PostgreSQL: no `BEGIN`/`COMMIT`, the statement is its own snapshot); a body issuing several statements
    /// would see as many snapshots, so it must use [`Store::read`].
    fn read_one(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        self.read(body)
    }
    /// Whether a read by primary key costs a few microseconds and never waits (an embedded database):
    /// callers may then run it in place instead of handing it to a thread pool.
    fn point_reads_are_local(&self) -> bool {
        false
    }
}

/// Opens the store a configuration names: `postgres://…`/`postgresql://…` selects PostgreSQL, otherwise the
/// SQLite file `socle.db` under `data_dir`.
pub fn open(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn Store>, StoreError> {
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(postgres::PgStore::connect(url, 16)?))
        }
        Some(other) => Err(StoreError::Config(format!(
            "URL de base de données non reconnue (attendu postgres://…) : {}",
            redact_url(other)
        ))),
        None => {
            std::fs::create_dir_all(data_dir).map_err(|e| {
                StoreError::Config(format!(
                    "création de {} impossible : {e}",
                    data_dir.display()
                ))
            })?;
            Ok(Arc::new(sqlite::SqliteStore::open(
                &data_dir.join("socle.db"),
            )?))
        }
    }
}

/// A URL with its password hidden, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Lowers the calling thread's scheduling priority to the lowest (Linux: `nice` is per thread). Background
/// work — the read-audit writer, the WAL checkpoints — then yields the CPU to requests in flight instead of
/// adding to their latency; it catches up as soon as the load drops (the audit writer's backlog is bounded:
/// requests wait when it is far behind). Measured on reads by id at saturation: `nice` 5 → 19, p99 3.7–4.5 →
/// 3.0–3.2 ms.
pub(crate) fn background_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread, with no pointer argument.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
    }
}

#[cfg(target_os = "linux")]
const BACKGROUND_NICE: libc::c_int = 19;
