//! The embedded backend: one SQLite file in WAL mode. One writer connection (SQLite allows one writer at a
//! time anyway), a small pool of reader connections that see committed snapshots concurrently.
//! A commit is on disk before it is acknowledged: `synchronous=FULL` until the WAL is open, then `NORMAL` on the
//! writer with Socle flushing the WAL itself, one `fdatasync` shared by a group of commits (`WalSync`, `flush`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Condvar, Mutex};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::schema;
use crate::sql::{Dialect, Row, SqlConn, SqlValue};
use crate::{Store, StoreError, TxBody};

mod stats;

const READERS: usize = 8;

pub struct SqliteStore {
    path: std::path::PathBuf,
    writer: Mutex<Writer>,
    /// Signalled at each group commit.
    committed: Condvar,
    /// Writers waiting for the writer lock (they will take over an open group transaction).
    waiting: AtomicUsize,
    readers: Mutex<Vec<SqliteConn>>,
    /// Planner statistics are refreshed as the data grows; readers opened before the last refresh are
    /// retired (a connection reads the statistics once, when it loads the schema).
    generation: std::sync::Arc<AtomicU64>,
    stats: Mutex<StatsState>,
    /// Its `Drop` stops the thread after a last checkpoint.
    checkpointer: Checkpointer,
    /// The access log (audit records written apart from data: reads, searches, refusals, operations) in its own
    /// file, so that the records every read appends never move the data file's WAL — which would make every
    /// reader connection drop its page cache. `None` for the log store itself.
    log: Option<Box<SqliteStore>>,
    /// The WAL's own descriptor and its group flush (see [`WalSync`]); `None`: commits sync themselves.
    wal: Option<WalSync>,
}

/// Commits without waiting for the disk under the writer's lock: the writer connection runs with
/// `synchronous=NORMAL` (a commit writes its WAL frames, no `fsync`), takes a ticket, releases the lock, and
/// each writer of the group returns once an `fsync` of the WAL *started after its commit* has completed — so
/// a write is still acknowledged only once durable, while the next group already works. One `fsync` covers
/// every commit made before it began. A reader may see a commit a fraction of a millisecond before it is on
/// disk; its writer has not been answered yet, and a later write that read it is acknowledged only after an
/// `fsync` that covers both (the WAL is written in order). Checkpoints sync the WAL before copying it (as
/// with `synchronous=NORMAL` always).
struct WalSync {
    file: std::fs::File,
    flush: crate::flush::GroupFlush,
}

impl WalSync {
    /// Opens the WAL next to `db` (it exists once the database has had a write in WAL mode).
    fn open(db: &Path) -> Option<WalSync> {
        let mut name = db.as_os_str().to_owned();
        name.push("-wal");
        // Read-write: some systems refuse to flush a file opened for reading only. Never created nor truncated.
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(std::path::PathBuf::from(name))
        {
            Ok(file) => Some(WalSync {
                file,
                flush: crate::flush::GroupFlush::default(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "journal WAL introuvable : chaque validation se synchronise elle-même");
                None
            }
        }
    }
}

/// What a SQLite file holds.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    /// The data (resources, indexes, the chain of write records, every service's tables).
    Data,
    /// The access log alone.
    Log,
}

/// The access log's file next to the data file `socle.db`: `socle-audit.db`.
pub fn log_path(data: &Path) -> std::path::PathBuf {
    let stem = data
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "socle".into());
    data.with_file_name(format!("{stem}-audit.db"))
}

/// Copies committed WAL frames back into the database file on its own thread and connection, so that
/// writers never pay for it: the writer connection has automatic checkpoints turned off. A `PASSIVE`
/// checkpoint runs concurrently with writers and readers; when it has copied every frame, the next writer
/// starts the WAL over, so the WAL stays bounded.
struct Checkpointer {
    stop: std::sync::Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set when the WAL has grown long: the writer then finishes the checkpoint (see `write`).
    long_wal: std::sync::Arc<AtomicBool>,
}

/// How often the checkpointer looks at the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL length (in pages) beyond which the checkpointer makes the WAL start over.
const CHECKPOINT_RESTART_FRAMES: i64 = 16_384;

/// Runs a checkpoint; returns the number of frames in the WAL.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(1)
    })
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = open_conn(path, false)?;
        conn.execute_batch("PRAGMA cache_size=-2048; PRAGMA wal_autocheckpoint=0;")
            .map_err(db_err)?;
        let stop = std::sync::Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let long_wal = std::sync::Arc::new(AtomicBool::new(false));
        let long = long_wal.clone();
        let thread = std::thread::Builder::new()
            .name("socle-checkpoint".into())
            .spawn(move || {
                crate::background_priority();
                let (lock, cv) = &*flag;
                loop {
                    let Ok(guard) = lock.lock() else { return };
                    let Ok((guard, _)) = cv.wait_timeout(guard, CHECKPOINT_EVERY) else {
                        return;
                    };
                    let stopping = *guard;
                    drop(guard);
                    // The last pass truncates the WAL file (nobody writes any more).
                    let mode = if stopping { "TRUNCATE" } else { "PASSIVE" };
                    match checkpoint(&conn, mode) {
                        // Under continuous writes this checkpoint never catches up with the end of the
                        // WAL, so the WAL would never start over: once it is long, the writer is asked
                        // to copy the last frames itself, between two transactions (see `write`).
                        Ok(frames) if frames > CHECKPOINT_RESTART_FRAMES => {
                            long.store(true, Ordering::Release)
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "point de contrôle du WAL impossible"),
                    }
                    if stopping {
                        return;
                    }
                }
            })
            .map_err(|e| StoreError::Database(format!("fil de point de contrôle : {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
            long_wal,
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        if let Ok(mut g) = lock.lock() {
            *g = true;
        }
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct StatsState {
    writes_since: u64,
    last: Instant,
    /// The version counter (`socle_meta.seq`) at the last `ANALYZE`, kept in `socle_meta.analyzed_seq`.
    analyzed_seq: i64,
    /// A large store's rows being counted for its next statistics (see [`stats`]).
    counting: Option<stats::Counting>,
}

/// The writer connection and its group-commit state. Concurrent writers run one after the other in the same
/// SQLite transaction; the last writer of a group — when nobody else is waiting, or the group is full or old —
/// commits for all, and each writer returns only once its work is committed and on disk ([`WalSync`]). One
/// fsync then covers many acknowledged writes. A writer's failure rolls the group back and its other writers
/// run again (see `write_turn`); for a while after one, writers join under a SAVEPOINT instead, which undoes
/// only their own work but copies every page they touch.
struct Writer {
    conn: SqliteConn,
    in_tx: bool,
    /// The open group holds a data write (not only audit records): planner statistics may need a refresh.
    data_in_group: bool,
    group: usize,
    opened: Instant,
    /// Number of the group being filled; `done` holds the outcome of recent groups.
    epoch: u64,
    done: std::collections::VecDeque<(u64, GroupOutcome)>,
    /// Joiners run under a SAVEPOINT until then (see [`SAVEPOINTS_AFTER_FAILURE`]).
    savepoints_until: Option<Instant>,
}

const GROUP_MAX: usize = 64;
const GROUP_MAX_AGE: Duration = Duration::from_millis(10);

pub struct SqliteConn {
    conn: Connection,
    generation: u64,
}

/// Refresh statistics after this many write transactions (and at most every `ANALYZE_EVERY`)…
const ANALYZE_AFTER_WRITES: u64 = 200;
const ANALYZE_EVERY: Duration = Duration::from_secs(20);
/// …once the data has doubled (versions written since the last `ANALYZE` at least as many as there were then).
/// SQLite's `ANALYZE` counts every entry of every index exactly (`OP_Count` before its sampling, whatever
/// `analysis_limit` says): it reads every page of every index, 4 to 13 minutes for a 42–47 GB DMP store (a
/// large store now counts on a reader, see [`stats`], but the reading remains). Analyzing at each doubling
/// reads, over a store's life, about as much as the indexes hold; at each tenth (as PostgreSQL's autovacuum
/// does, but PostgreSQL samples) it read ten times that. What the planner compares — how selective one index
/// is against another — changes little as a store grows with the same kinds of data.
const ANALYZE_GROWTH_DIVISOR: i64 = 1;
/// Index entries `ANALYZE` samples for its per-column figures.
const ANALYSIS_LIMIT: u32 = 2000;
/// Stores with at least this many versions get their statistics in two steps, the rows counted on a reader
/// (see [`stats`]); a smaller store's `ANALYZE` takes a fraction of a second.
const BACKGROUND_STATS_FROM: i64 = 50_000;

/// `ANALYZE` with `analysis_limit` (each index's entries sampled for the per-column figures; see
/// `ANALYZE_GROWTH_DIVISOR` for what it still reads), then records the version counter it saw, if any (the
/// access log has none).
fn analyze(conn: &Connection, seq: Option<i64>) -> Result<(), StoreError> {
    conn.execute_batch(&format!("PRAGMA analysis_limit={ANALYSIS_LIMIT}; ANALYZE;"))
        .map_err(db_err)?;
    let Some(seq) = seq else { return Ok(()) };
    conn.execute(
        "INSERT INTO socle_meta (name, value) VALUES ('analyzed_seq', ?1) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [seq],
    )
    .map_err(db_err)?;
    Ok(())
}

/// How long a refresh of the planner statistics held the writer, and took in all ([`refresh_statistics`]).
#[derive(Debug, Clone, Copy)]
pub struct StatsTiming {
    pub writer_held: Duration,
    pub total: Duration,
}

/// For maintenance and benchmarks, on a data file no server has open: refreshes its planner statistics with one
/// `ANALYZE` (`two_steps` false: what a small store's writer runs, and every store's before session 25) or in
/// the two steps a large store takes (rows counted on a reader, then a short write; see [`stats`]).
pub fn refresh_statistics(path: &Path, two_steps: bool) -> Result<StatsTiming, StoreError> {
    let started = Instant::now();
    if !two_steps {
        let conn = open_conn(path, false)?;
        let seq = meta_value(&conn, "seq")?;
        analyze(&conn, seq)?;
        let total = started.elapsed();
        return Ok(StatsTiming {
            writer_held: total,
            total,
        });
    }
    let mut counting = stats::Counting::start(path, None)?;
    let counts = loop {
        match counting.take() {
            Some(Ok(stats::Outcome::Counted(counts))) => break counts,
            Some(Ok(stats::Outcome::Written(_))) => {
                return Err(StoreError::Database(
                    "statistiques déjà écrites par le fil de comptage".into(),
                ));
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let applying = Instant::now();
    stats::apply(path, &counts, ANALYSIS_LIMIT)?;
    Ok(StatsTiming {
        writer_held: applying.elapsed(),
        total: started.elapsed(),
    })
}

/// The `socle_meta` counter `name` (the version counter `seq`, or `analyzed_seq`), if set.
fn meta_value(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT value FROM socle_meta WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .optional()
    .map_err(db_err)
}

/// Whether statistics taken at version `analyzed` are stale at version `seq`: never taken, or as many versions
/// written since as there were (at least `ANALYZE_AFTER_WRITES`).
fn stats_stale(analyzed: Option<i64>, seq: i64) -> bool {
    match analyzed {
        None => true,
        Some(a) => seq - a >= (a / ANALYZE_GROWTH_DIVISOR).max(ANALYZE_AFTER_WRITES as i64),
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            rusqlite::ErrorCode::ConstraintViolation => StoreError::Conflict(e.to_string()),
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                StoreError::Retryable(e.to_string())
            }
            rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Database(e.to_string()),
        },
        _ => StoreError::Database(e.to_string()),
    }
}

/// Turns off SQLite's memory statistics, once, before its first connection: with them on (the library's
/// default) every allocation and free SQLite makes takes one process-wide mutex to count it, which readers on
/// both cores then queue for. Nothing in Socle reads those statistics. After SQLite has started (a connection
/// already opened by another component of the process) the setting is refused and left as it was.
fn without_memory_statistics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` is called before any connection is opened by this module (the `Once` runs
        // first in `open_conn`) and with the documented argument for `SQLITE_CONFIG_MEMSTATUS`, one int. If
        // SQLite is already initialised it returns SQLITE_MISUSE and changes nothing.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(rc, "statistiques mémoire de SQLite laissées actives");
        }
    });
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    without_memory_statistics();
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    };
    let conn = Connection::open_with_flags(path, flags).map_err(db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db_err)?;
    // 64 MiB of page cache for the writer, 16 MiB per reader. Readers read through the OS cache without mmap:
    // each of the eight mapped up to 256 MiB of the same file, every mapped page counting again in the
    // process's resident memory (1.05 GB after the 100 k read and search phases, 213 MB without; reads p99
    // 2.6–2.7 → 2.2–2.6 ms, paged walks 15 % slower). Mapping cost less while read audits emptied readers'
    // caches at every commit; they no longer do (the access log is apart).
    // The writer keeps its mapping (ingest at 100 k: 6.5–6.7 k resources/s with it, 5.8–6.3 k without).
    let (cache, mmap) = if read_only {
        (-16384, 0)
    } else {
        (-65536, 268_435_456)
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA temp_store=MEMORY; \
         PRAGMA cache_size={cache}; PRAGMA mmap_size={mmap};"
    ))
    .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the data file `path` and, next to it, its access log ([`log_path`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut data = Self::open_as(path, Role::Data)?;
        data.log = Some(Box::new(Self::open_as(&log_path(path), Role::Log)?));
        Ok(data)
    }

    fn open_as(path: &Path, role: Role) -> Result<Self, StoreError> {
        let mut writer = SqliteConn {
            conn: open_conn(path, false)?,
            generation: 0,
        };
        if role == Role::Log {
            // Appended, and read back only for trails: mapping it would only add its pages to the resident
            // memory.
            writer
                .conn
                .execute_batch("PRAGMA mmap_size=0")
                .map_err(db_err)?;
        }
        writer
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(db_err)?;
        let res = (|| {
            if role == Role::Log {
                for stmt in schema::access_log_ddl() {
                    writer.execute(&stmt, &[])?;
                }
                if writer
                    .query_one("SELECT seq FROM audit_head WHERE id = 1", &[])?
                    .is_none()
                {
                    writer.execute(
                        "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, ?)",
                        &[crate::audit::GENESIS.into()],
                    )?;
                    writer.execute("INSERT INTO audit_indexed (id, upto) VALUES (1, 0)", &[])?;
                }
                return Ok(());
            }
            let set_aside = schema::set_aside_old_versions(&mut writer)?;
            for stmt in schema::ddl(Dialect::Sqlite) {
                writer.execute(&stmt, &[])?;
            }
            if set_aside {
                schema::copy_set_aside_versions(&mut writer)?;
            }
            crate::tx::init_meta(&mut writer)
        })();
        match res {
            Ok(()) => writer.conn.execute_batch("COMMIT").map_err(db_err)?,
            Err(e) => {
                let _ = writer.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        // Statistics are taken at open only when missing or stale (a restart of a large store does not read it
        // whole again); a large store's stale ones are counted in the background and written at the first data
        // write after the count, or by the counting thread if none comes (see [`stats`]), the store serving
        // meanwhile with the previous ones.
        // The access log is analyzed once, when it has no statistics yet: its reads go by patient.
        let mut counting = None;
        let generation = std::sync::Arc::new(AtomicU64::new(0));
        let analyzed_seq = if role == Role::Data {
            let seq = meta_value(&writer.conn, "seq")?.unwrap_or(0);
            let analyzed_seq = meta_value(&writer.conn, "analyzed_seq")?;
            match analyzed_seq {
                Some(_) if stats_stale(analyzed_seq, seq) && seq >= BACKGROUND_STATS_FROM => {
                    counting = Some(stats::Counting::start(path, Some(generation.clone()))?);
                    analyzed_seq
                }
                _ if stats_stale(analyzed_seq, seq) => {
                    analyze(&writer.conn, Some(seq))?;
                    Some(seq)
                }
                _ => analyzed_seq,
            }
        } else {
            let has_stats = writer
                .query_one(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'",
                    &[],
                )?
                .is_some();
            if !has_stats {
                analyze(&writer.conn, None)?;
            }
            None
        };
        // Checkpoints run on their own thread (see `Checkpointer`).
        writer
            .conn
            .execute_batch("PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=67108864;")
            .map_err(db_err)?;
        let checkpointer = Checkpointer::start(path)?;
        let wal = WalSync::open(path);
        if wal.is_some() {
            writer
                .conn
                .execute_batch("PRAGMA synchronous=NORMAL")
                .map_err(db_err)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                conn: writer,
                in_tx: false,
                data_in_group: false,
                group: 0,
                opened: Instant::now(),
                epoch: 0,
                done: std::collections::VecDeque::new(),
                savepoints_until: None,
            }),
            committed: Condvar::new(),
            waiting: AtomicUsize::new(0),
            readers: Mutex::new(Vec::new()),
            generation,
            stats: Mutex::new(StatsState {
                writes_since: 0,
                last: Instant::now(),
                analyzed_seq: analyzed_seq.unwrap_or(0),
                counting,
            }),
            checkpointer,
            log: None,
            wal,
        })
    }

    fn take_reader(&self) -> Result<SqliteConn, StoreError> {
        if let Some(c) = self.readers.lock().map_err(|_| poisoned())?.pop() {
            return Ok(c);
        }
        Ok(SqliteConn {
            conn: open_conn(&self.path, true)?,
            generation: self.generation.load(Ordering::Acquire),
        })
    }

    fn give_back(&self, c: SqliteConn) {
        if c.generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < READERS
        {
            pool.push(c);
        }
    }
}

impl SqliteStore {
    /// Called with the writer held, after a commit: keeps planner statistics in step with the data, so that
    /// selective searches are driven by their most selective index whatever the table sizes.
    fn maybe_analyze(&self, conn: &Connection) {
        let Ok(mut st) = self.stats.lock() else {
            return;
        };
        let started = Instant::now();
        // A large store's rows have been counted: its statistics are written now, in a short transaction.
        let (way, written) = if let Some(done) = st.counting.as_mut().and_then(|c| c.take()) {
            st.counting = None;
            let way = match &done {
                Ok(stats::Outcome::Written(_)) => "deux temps, écrites au repos",
                _ => "deux temps",
            };
            let written = done.and_then(|outcome| {
                let seq = match outcome {
                    stats::Outcome::Counted(counts) => {
                        stats::apply(&self.path, &counts, ANALYSIS_LIMIT)?;
                        counts.seq
                    }
                    // Written by the counting thread while no data write came: only reloaded here.
                    stats::Outcome::Written(seq) => seq,
                };
                // The writer connection reads them again (`ANALYZE sqlite_schema` only reloads); readers are
                // reopened (`generation`).
                conn.execute_batch("ANALYZE sqlite_schema")
                    .map_err(db_err)?;
                Ok(seq)
            });
            (way, written)
        } else {
            st.writes_since += 1;
            // A store analyzed while empty gets statistics as soon as it has some data.
            let first = st.analyzed_seq == 0 && st.writes_since >= 20;
            if !first
                && (st.writes_since < ANALYZE_AFTER_WRITES || st.last.elapsed() < ANALYZE_EVERY)
            {
                return;
            }
            let seq = match meta_value(conn, "seq") {
                Ok(v) => v.unwrap_or(0),
                Err(e) => {
                    tracing::warn!(error = %e, "ANALYZE impossible");
                    return;
                }
            };
            if (first && seq == 0)
                || (!first && !stats_stale(Some(st.analyzed_seq), seq))
                || st.counting.is_some()
            {
                return;
            }
            if !first && seq >= BACKGROUND_STATS_FROM {
                match stats::Counting::start(&self.path, Some(self.generation.clone())) {
                    Ok(c) => st.counting = Some(c),
                    Err(e) => tracing::warn!(error = %e, "statistiques impossibles"),
                }
                st.last = Instant::now();
                return;
            }
            ("ANALYZE", analyze(conn, Some(seq)).map(|()| seq))
        };
        st.last = Instant::now();
        match written {
            Ok(seq) => {
                tracing::info!(
                    way,
                    seq,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "statistiques écrites (écrivain retenu)"
                );
                self.generation.fetch_add(1, Ordering::AcqRel);
                st.writes_since = 0;
                st.analyzed_seq = seq;
            }
            Err(e) => tracing::warn!(way, error = %e, "statistiques impossibles"),
        }
    }
}

fn poisoned() -> StoreError {
    StoreError::Database("verrou interne empoisonné".into())
}

/// What became of a writer's turn in a group.
enum Turn {
    /// Committed; durable once the WAL flush of this ticket is done (`None`: already durable).
    Committed(Option<u64>),
    /// The group was rolled back because another of its writers failed: run the body again.
    Again,
}

/// How a group ended, kept for the writers waiting on it.
#[derive(Clone)]
enum GroupOutcome {
    Committed(Option<u64>),
    Failed(String),
    /// Rolled back for a writer's failure; its other writers run again.
    Undone,
}

/// After a writer's failure undid a group, later writers join groups under a SAVEPOINT for this long: a client
/// sending failing requests cannot make others run again and again.
const SAVEPOINTS_AFTER_FAILURE: Duration = Duration::from_secs(2);

impl SqliteStore {
    /// Ends one writer's turn in the group transaction: commits the group when nobody else is waiting (or
    /// the group is full or old), else waits for the writer who will. `own` is this writer's outcome.
    fn finish(
        &self,
        mut w: std::sync::MutexGuard<'_, Writer>,
        own: Result<(), StoreError>,
    ) -> Result<Turn, StoreError> {
        w.group += 1;
        let my_epoch = w.epoch;
        let must_commit = self.waiting.load(Ordering::Acquire) == 0
            || w.group >= GROUP_MAX
            || w.opened.elapsed() >= GROUP_MAX_AGE;
        if must_commit {
            let result = match w.conn.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(self.wal.as_ref().map(|s| s.flush.ticket())),
                Err(e) => {
                    rollback(&w.conn.conn);
                    Err(e.to_string())
                }
            };
            let outcome = match &result {
                Ok(t) => GroupOutcome::Committed(*t),
                Err(m) => GroupOutcome::Failed(m.clone()),
            };
            let data_in_group = w.data_in_group;
            self.close_group(&mut w, outcome);
            if result.is_ok() {
                if data_in_group {
                    self.maybe_analyze(&w.conn.conn);
                }
                // Nobody writes while we hold the writer: this copies the few frames the background
                // checkpoint has not, so the next transaction starts the WAL over.
                if self.checkpointer.long_wal.swap(false, Ordering::AcqRel)
                    && let Err(e) = checkpoint(&w.conn.conn, "PASSIVE")
                {
                    tracing::warn!(error = %e, "point de contrôle du WAL impossible");
                }
            }
            drop(w);
            own?;
            return result.map(Turn::Committed).map_err(StoreError::Database);
        }
        // Someone else will commit this group: wait for it (our own failure needs no commit).
        own?;
        loop {
            if w.epoch > my_epoch {
                return match w.done.iter().find(|(e, _)| *e == my_epoch) {
                    Some((_, GroupOutcome::Committed(t))) => Ok(Turn::Committed(*t)),
                    Some((_, GroupOutcome::Undone)) => Ok(Turn::Again),
                    Some((_, GroupOutcome::Failed(m))) => Err(StoreError::Database(format!(
                        "échec de la validation groupée : {m}"
                    ))),
                    None => Err(StoreError::Database(
                        "issue de la validation groupée perdue".into(),
                    )),
                };
            }
            w = self.committed.wait(w).map_err(|_| poisoned())?;
        }
    }

    /// Returns once the commit of `ticket` is on disk (see [`WalSync`]); called without the writer's lock.
    fn durable(&self, ticket: Option<u64>) -> Result<(), StoreError> {
        match (ticket, &self.wal) {
            (Some(t), Some(wal)) => wal
                .flush
                .wait(t, || wal.file.sync_data())
                .map_err(|e| StoreError::Database(format!("synchronisation du journal WAL : {e}"))),
            _ => Ok(()),
        }
    }

    /// Ends the group being filled (committed, failed or undone) and wakes the writers waiting on it.
    fn close_group(&self, w: &mut Writer, outcome: GroupOutcome) {
        w.in_tx = false;
        w.data_in_group = false;
        w.done.push_back((w.epoch, outcome));
        w.epoch += 1;
        // Outcomes are kept long enough for a woken writer to find its group's among them.
        while w.done.len() > 1024 {
            w.done.pop_front();
        }
        self.committed.notify_all();
    }

    /// Opens a group with `body` as its first writer. Nobody else's work is in the transaction, so a failure
    /// rolls the whole of it back, and no SAVEPOINT (whose journal copies every page touched) is needed.
    fn open_group(
        &self,
        w: &mut Writer,
        body: &mut TxBody<'_>,
        data: bool,
    ) -> Result<(), StoreError> {
        w.conn
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(db_err)?;
        if let Err(e) = body(&mut w.conn) {
            rollback(&w.conn.conn);
            return Err(e);
        }
        w.in_tx = true;
        w.data_in_group = data;
        w.group = 0;
        w.opened = Instant::now();
        Ok(())
    }

    /// One writer's turn: joins (or opens) the group transaction, runs `body`, then `finish`. A writer joining
    /// a group runs without a SAVEPOINT: should it fail, the group is rolled back, its body runs again alone
    /// (its outcome is then its own), and the group's other writers run again after it. `body` may therefore
    /// run more than once, as [`Store::write`] allows.
    fn write_turn(&self, body: &mut TxBody<'_>, data: bool) -> Result<(), StoreError> {
        if let Some(e) = self.wal.as_ref().and_then(|s| s.flush.failure()) {
            return Err(StoreError::Database(format!(
                "écritures suspendues : la synchronisation du journal WAL a échoué ({e}) ; redémarrer le service"
            )));
        }
        loop {
            self.waiting.fetch_add(1, Ordering::AcqRel);
            let locked = self.writer.lock();
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            let mut w = locked.map_err(|_| poisoned())?;
            let turn = if !w.in_tx {
                if let Err(e) = self.open_group(&mut w, body, data) {
                    drop(w);
                    return self.failed(e);
                }
                self.finish(w, Ok(()))
            } else if w.savepoints_until.is_some_and(|t| Instant::now() < t) {
                // No early return from here on: writers of this group may be waiting for its commit.
                let res = w
                    .conn
                    .conn
                    .execute_batch("SAVEPOINT socle_write")
                    .map_err(db_err)
                    .and_then(|()| body(&mut w.conn));
                let own = match res {
                    Ok(()) => w
                        .conn
                        .conn
                        .execute_batch("RELEASE socle_write")
                        .map_err(db_err),
                    Err(e) => {
                        let _ = w
                            .conn
                            .conn
                            .execute_batch("ROLLBACK TO socle_write; RELEASE socle_write");
                        Err(e)
                    }
                };
                match own {
                    Ok(()) => {
                        w.data_in_group |= data;
                        self.finish(w, Ok(()))
                    }
                    // Some errors (a full disk, an I/O error) make SQLite roll the whole transaction back: the
                    // group is gone, and its other writers run again.
                    Err(e) if w.conn.conn.is_autocommit() => {
                        self.close_group(&mut w, GroupOutcome::Undone);
                        drop(w);
                        return self.failed(e);
                    }
                    Err(e) => self.finish(w, Err(e)),
                }
            } else {
                match body(&mut w.conn) {
                    Ok(()) => {
                        w.data_in_group |= data;
                        self.finish(w, Ok(()))
                    }
                    Err(_) => {
                        rollback(&w.conn.conn);
                        self.close_group(&mut w, GroupOutcome::Undone);
                        w.savepoints_until = Some(Instant::now() + SAVEPOINTS_AFTER_FAILURE);
                        if let Err(e) = self.open_group(&mut w, body, data) {
                            drop(w);
                            return self.failed(e);
                        }
                        self.finish(w, Ok(()))
                    }
                }
            };
            match turn {
                Ok(Turn::Committed(ticket)) => return self.durable(ticket),
                Ok(Turn::Again) => continue,
                Err(e) => return self.failed(e),
            }
        }
    }

    /// A writer's failure, answered once what it may have read is on disk: commits are visible a moment before
    /// they are durable, and a refusal (a version conflict, a duplicate) must not rest on one a crash would lose.
    fn failed(&self, e: StoreError) -> Result<(), StoreError> {
        let _ = self.durable(self.wal.as_ref().map(|s| s.flush.ticket()));
        Err(e)
    }
}

/// Rolls the writer's transaction back, if it is still in one (SQLite ends it by itself on some errors).
fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::error!(error = %e, "annulation de la transaction d'écriture impossible");
    }
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    /// WAL readers never wait for the writer, and a read by key touches a handful of cached pages.
    fn point_reads_are_local(&self) -> bool {
        true
    }

    fn write(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        self.write_turn(body, true)
    }

    /// Audit records only: they never change what searches plan on, so they do not count towards `ANALYZE`
    /// (which retires every reader connection; counted, a read-only load re-analysed every 20 s).
    fn write_log(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        match &self.log {
            Some(log) => log.write_turn(body, false),
            None => self.write_turn(body, false),
        }
    }

    fn read_log(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        match &self.log {
            Some(log) => log.read(body),
            None => self.read(body),
        }
    }

    fn separate_log(&self) -> bool {
        self.log.is_some()
    }

    fn read(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        let mut c = self.take_reader()?;
        // Cached statements: parsing BEGIN and COMMIT showed up in the profile of reads by id.
        c.conn
            .prepare_cached("BEGIN")
            .and_then(|mut s| s.execute([]))
            .map_err(db_err)?;
        let res = body(&mut c);
        let end = c
            .conn
            .prepare_cached(if res.is_ok() { "COMMIT" } else { "ROLLBACK" })
            .and_then(|mut s| s.execute([]));
        if end.is_ok() {
            self.give_back(c);
        }
        res
    }
}

/// Binds a value without copying it (text and blobs are passed to SQLite by reference).
impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Int(i) => ValueRef::Integer(*i),
            SqlValue::Real(f) => ValueRef::Real(*f),
            SqlValue::Text(s) => ValueRef::Text(s.as_bytes()),
            SqlValue::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl SqlConn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params.iter()))
            .map_err(db_err)?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StoreError> {
        // Statement texts carry no values (they are bound), only resource numbers of page cursors and page sizes.
        let started = tracing::enabled!(target: "socle::sql", tracing::Level::TRACE)
            .then(std::time::Instant::now);
        let out = self.query_rows(sql, params);
        if let Some(t) = started {
            tracing::trace!(target: "socle::sql", elapsed_us = t.elapsed().as_micros() as u64, sql);
        }
        out
    }

    fn execute_many(&mut self, sql: &str, rows: &[Vec<SqlValue>]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_err)?;
        for r in rows {
            stmt.execute(rusqlite::params_from_iter(r.iter()))
                .map_err(db_err)?;
        }
        Ok(())
    }
}

impl SqliteConn {
    fn query_rows(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_err)?;
        let ncol = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(db_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db_err)? {
            let mut row = Vec::with_capacity(ncol);
            for i in 0..ncol {
                row.push(match r.get_ref(i).map_err(db_err)? {
                    ValueRef::Null => SqlValue::Null,
                    ValueRef::Integer(i) => SqlValue::Int(i),
                    ValueRef::Real(f) => SqlValue::Real(f),
                    ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
                });
            }
            out.push(row);
        }
        drop(rows);
        let again = stmt.reset_status(rusqlite::StatementStatus::RePrepare);
        if again > 0 {
            REPREPARES.fetch_add(again as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(out)
    }
}

/// Statements SQLite prepared again when they ran, in this process (see [`reprepares`]).
static REPREPARES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times, in this process, a query's statement was prepared again by SQLite when it ran instead of
/// reusing the cached plan. SQLite does so when the plan depended on a bound value that changed since: a bound
/// `LIMIT` (it plans for the number), a bare bound `LIKE` pattern (it tries its `LIKE` optimisation on it), or a
/// schema change. Queries are written so that this stays at zero in steady state; parsing and planning a search
/// again at each request cost a third of its time (session 32).
pub fn reprepares() -> u64 {
    REPREPARES.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod analyze_tests {
    use super::*;

    fn meta(store: &SqliteStore, name: &str) -> Option<i64> {
        let w = store.writer.lock().expect("écrivain");
        meta_value(&w.conn.conn, name).expect("méta")
    }

    /// `type_counts`'s row count in the statistics the connection `conn` sees.
    fn counted_rows(conn: &Connection) -> i64 {
        let stat: String = conn
            .query_row(
                "SELECT stat FROM sqlite_stat1 WHERE tbl = 'type_counts'",
                [],
                |r| r.get(0),
            )
            .expect("statistiques de type_counts");
        stat.split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("nombre")
    }

    /// A store of 3,000 `type_counts` rows whose statistics are stale, as if 60,000 versions had been written
    /// since statistics taken at 20,000.
    fn stale_large_store(path: &Path) {
        let store = SqliteStore::open(path).expect("ouverture");
        store
            .write(&mut |c| {
                for i in 0..3000 {
                    c.execute(
                        "INSERT INTO type_counts (rtype, live) VALUES (?, 1)",
                        &[format!("T{i}").into()],
                    )?;
                }
                // As if 60,000 versions had been written since statistics taken at 20,000.
                c.execute(
                    "UPDATE socle_meta SET value = 60000 WHERE name = 'seq'",
                    &[],
                )?;
                c.execute(
                    "UPDATE socle_meta SET value = 20000 WHERE name = 'analyzed_seq'",
                    &[],
                )?;
                Ok(())
            })
            .expect("écriture");
    }

    #[test]
    fn a_large_stores_statistics_are_counted_apart_then_written_at_a_write() {
        let dir = tempfile::tempdir().expect("répertoire");
        let path = dir.path().join("socle.db");
        stale_large_store(&path);
        // Reopened: the statistics are stale and the store large, so its rows are counted on a thread...
        let store = SqliteStore::open(&path).expect("réouverture");
        assert!(store.stats.lock().expect("état").counting.is_some());
        assert_eq!(meta(&store, "analyzed_seq"), Some(20000));
        let generation = store.generation.load(Ordering::Acquire);
        // ...and the statistics written at the first data write after the count.
        let started = Instant::now();
        let mut i = 0;
        while meta(&store, "analyzed_seq") != Some(60000) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "statistiques jamais écrites"
            );
            i += 1;
            store
                .write(&mut |c| {
                    c.execute(
                        "INSERT INTO type_counts (rtype, live) VALUES (?, 1)",
                        &[format!("U{i}").into()],
                    )?;
                    Ok(())
                })
                .expect("écriture");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(store.stats.lock().expect("état").counting.is_none());
        assert!(store.generation.load(Ordering::Acquire) > generation);
        let w = store.writer.lock().expect("écrivain");
        let rows = counted_rows(&w.conn.conn);
        assert!((3000..=3000 + i).contains(&rows), "{rows}");
    }

    #[test]
    fn counted_statistics_are_written_without_a_data_write() {
        let dir = tempfile::tempdir().expect("répertoire");
        let path = dir.path().join("socle.db");
        stale_large_store(&path);
        let store = SqliteStore::open(&path).expect("réouverture");
        let generation = store.generation.load(Ordering::Acquire);
        // Only reads: the counting thread writes the statistics itself once it has waited for a write.
        let started = Instant::now();
        while meta(&store, "analyzed_seq") != Some(60000) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "statistiques jamais écrites sans écriture"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(started.elapsed() >= stats::IDLE_APPLY_AFTER);
        // Readers opened before are retired; a new one sees the counted rows.
        assert!(store.generation.load(Ordering::Acquire) > generation);
        let reader = store.take_reader().expect("lecteur");
        assert_eq!(counted_rows(&reader.conn), 3000);
        // The next data write reloads them on the writer without writing them again.
        store
            .write(&mut |c| {
                c.execute("INSERT INTO type_counts (rtype, live) VALUES ('V', 1)", &[])?;
                Ok(())
            })
            .expect("écriture");
        let st = store.stats.lock().expect("état");
        assert!(st.counting.is_none());
        assert_eq!(st.analyzed_seq, 60000);
    }

    #[test]
    fn statistics_are_refreshed_once_the_data_has_doubled() {
        assert!(stats_stale(None, 0));
        assert!(!stats_stale(Some(0), 199));
        assert!(stats_stale(Some(0), 200));
        assert!(!stats_stale(Some(1_000_000), 1_999_999));
        assert!(stats_stale(Some(1_000_000), 2_000_000));
        assert!(!stats_stale(Some(100), 299));
        assert!(stats_stale(Some(100), 300));
    }
}
