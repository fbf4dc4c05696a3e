//! Planner statistics of a large store without stopping its writes.
//!
//! SQLite's `ANALYZE` (with `analysis_limit`) reads a sample of each index for its per-column figures — a few
//! thousand entries — but counts each index's entries exactly first (`OP_Count`), every page read, inside its
//! write transaction: 4 to 13 minutes for a 42–47 GB DMP store, during which no write could commit. So for a
//! large store the work is split in two:
//!
//! 1. [`Counting`]: each table's rows are counted on a reader connection of their own, on a background
//!    thread (a reader never blocks the writer in WAL mode). A table's non-partial indexes have one entry per
//!    row, so one count per table gives what `OP_Count` gave for each of its indexes.
//! 2. [`apply`], with the writer's turn held: `ANALYZE` table by table on a connection where the STAT4
//!    optimisation is off — `OP_Count` then asks for an estimate instead of reading the index, and the sampled
//!    figures are computed as before (with `analysis_limit` no STAT4 samples are taken either way) — then the
//!    first figure of each row of `sqlite_stat1`, the entry count, is replaced by the count of step 1. The
//!    writer waits for a few thousand entries read per index instead of all of them.
//!
//! Step 2 normally runs at the first data write after the count. A store that receives none (a large store
//! reopened and then only read) would keep its stale statistics: after [`IDLE_APPLY_AFTER`] without the writer
//! taking the counts, the counting thread writes them itself, in the same short transaction (SQLite's write
//! lock orders it with the writer's transactions), and retires the readers (the store's reader generation); the writer
//! reloads them at its next data write.
//!
//! The result equals what a plain `ANALYZE` writes for the same data (a test compares both); the counts are
//! those of the moment they were taken, a few minutes before the statistics are written, on a store that has
//! doubled since the last ones.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{ANALYSIS_LIMIT, db_err, meta_value, open_conn};
use crate::StoreError;

/// What step 1 found: each table's row count, and the version counter (`socle_meta.seq`) read just before.
#[derive(Debug)]
pub(super) struct RowCounts {
    pub seq: i64,
    pub tables: Vec<(String, i64)>,
}

/// What the counting thread leaves for the writer.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Step 1 done: the writer writes the statistics ([`apply`]).
    Counted(RowCounts),
    /// No data write came: the thread wrote them itself, up to this version counter; the writer only reloads.
    Written(i64),
}

type Slot = Arc<Mutex<Option<Result<Outcome, StoreError>>>>;

/// How long counted rows wait for a data write before the counting thread writes the statistics itself.
#[cfg(not(test))]
pub(super) const IDLE_APPLY_AFTER: Duration = Duration::from_secs(10);
#[cfg(test)]
pub(super) const IDLE_APPLY_AFTER: Duration = Duration::from_millis(300);

/// Step 1 running on its own thread. Dropping it interrupts the count and waits for the thread.
pub(super) struct Counting {
    stop: Arc<AtomicBool>,
    interrupt: rusqlite::InterruptHandle,
    slot: Slot,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Counting {
    /// Starts counting the rows of the database at `path` on a new read-only connection. With `generation`
    /// (the store's reader generation), the thread writes the statistics itself if the writer has not taken the
    /// counts after [`IDLE_APPLY_AFTER`], then bumps it so that readers load them.
    pub fn start(path: &Path, generation: Option<Arc<AtomicU64>>) -> Result<Self, StoreError> {
        let conn = open_conn(path, true)?;
        // A scan of every table: a small cache, the pages go by once.
        conn.execute_batch("PRAGMA cache_size=-2048")
            .map_err(db_err)?;
        let interrupt = conn.get_interrupt_handle();
        let stop = Arc::new(AtomicBool::new(false));
        let slot: Slot = Arc::new(Mutex::new(None));
        let (flag, out) = (stop.clone(), slot.clone());
        let path: PathBuf = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("socle-stats".into())
            .spawn(move || {
                crate::background_priority();
                let started = Instant::now();
                let res = count_rows(&conn, &flag);
                drop(conn);
                match &res {
                    Ok(c) => tracing::info!(
                        tables = c.tables.len(),
                        seconds = started.elapsed().as_secs_f64(),
                        "statistiques : lignes comptées"
                    ),
                    Err(e) => tracing::warn!(error = %e, "statistiques : comptage interrompu"),
                }
                let counted = res.is_ok();
                if let Ok(mut s) = out.lock() {
                    *s = Some(res.map(Outcome::Counted));
                }
                if let (true, Some(generation)) = (counted, generation) {
                    apply_when_idle(&path, &out, &flag, &generation);
                }
            })
            .map_err(|e| StoreError::Database(format!("fil des statistiques : {e}")))?;
        Ok(Self {
            stop,
            interrupt,
            slot,
            thread: Some(thread),
        })
    }

    /// The counts (or the statistics' version counter, if the thread wrote them), or the error that ended them,
    /// once the thread is done; `None` while it runs.
    pub fn take(&mut self) -> Option<Result<Outcome, StoreError>> {
        let done = self.slot.lock().ok()?.take()?;
        // The thread may be waiting to write them itself (`apply_when_idle`): it stops waiting.
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Some(done)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.interrupt.interrupt();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits [`IDLE_APPLY_AFTER`] for the writer to take the counts; if it has not (no data write came), writes the
/// statistics and leaves [`Outcome::Written`] in their place. The slot stays locked while they are written: a
/// writer arriving then waits for them rather than writing them twice.
fn apply_when_idle(path: &Path, slot: &Slot, stop: &AtomicBool, generation: &AtomicU64) {
    let since = Instant::now();
    while since.elapsed() < IDLE_APPLY_AFTER {
        if stop.load(Ordering::Acquire) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Ok(mut s) = slot.lock() else { return };
    let Some(Ok(Outcome::Counted(counts))) = s.as_ref() else {
        return; // taken by the writer
    };
    let started = Instant::now();
    let res = apply(path, counts, ANALYSIS_LIMIT).map(|()| counts.seq);
    match &res {
        Ok(seq) => {
            generation.fetch_add(1, Ordering::AcqRel);
            tracing::info!(
                seq,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "statistiques écrites (sans écriture de données en attente)"
            );
        }
        Err(e) => tracing::warn!(error = %e, "statistiques impossibles"),
    }
    *s = Some(res.map(Outcome::Written));
}

/// Tables whose statistics Socle keeps: all but SQLite's own.
fn user_tables(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY name",
        )
        .map_err(db_err)?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    Ok(names)
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Step 1: every table's rows counted, each in its own read transaction (a long one would keep the WAL from
/// starting over for as long).
pub(super) fn count_rows(conn: &Connection, stop: &AtomicBool) -> Result<RowCounts, StoreError> {
    let seq = meta_value(conn, "seq")?.unwrap_or(0);
    let mut tables = Vec::new();
    for t in user_tables(conn)? {
        if stop.load(Ordering::Acquire) {
            return Err(StoreError::Database("comptage arrêté".into()));
        }
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {}", quoted(&t)), [], |r| {
                r.get(0)
            })
            .map_err(db_err)?;
        tables.push((t, n));
    }
    Ok(RowCounts { seq, tables })
}

/// Whether each of a table's indexes is partial (`PRAGMA index_list`).
fn indexes_partial(conn: &Connection, table: &str) -> Result<Vec<bool>, StoreError> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA index_list({})", quoted(table)))
        .map_err(db_err)?;
    let list = stmt
        .query_map([], |r| Ok(r.get::<_, i64>("partial")? != 0))
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    Ok(list)
}

/// Sets the connection's disabled optimisations (`SQLITE_TESTCTRL_OPTIMIZATIONS`: a bit set turns one off).
fn set_disabled_optimisations(conn: &Connection, mask: u32) {
    // SAFETY: `handle` is this open connection's pointer, used on this thread for the duration of the call;
    // `SQLITE_TESTCTRL_OPTIMIZATIONS` takes exactly (sqlite3*, unsigned int) and only stores the mask in the
    // connection (`db->dbOptFlags`).
    unsafe {
        rusqlite::ffi::sqlite3_test_control(
            rusqlite::ffi::SQLITE_TESTCTRL_OPTIMIZATIONS,
            conn.handle(),
            mask as std::ffi::c_uint,
        );
    }
}

/// SQLite's `SQLITE_Stat4` optimisation bit (sqliteInt.h).
const STAT4: u32 = 0x0000_0800;

/// Step 2, called with the writer's turn held and no transaction open on the writer connection: writes
/// `sqlite_stat1` from `counts` and the sampled figures, and records `counts.seq` as `analyzed_seq`, in one
/// transaction on a connection of its own. The writer connection must then reload the statistics
/// (`ANALYZE sqlite_schema`), and readers be reopened.
pub(super) fn apply(path: &Path, counts: &RowCounts, limit: u32) -> Result<(), StoreError> {
    let conn = open_conn(path, false)?;
    conn.execute_batch(&format!(
        "PRAGMA analysis_limit={limit}; PRAGMA mmap_size=0; BEGIN IMMEDIATE"
    ))
    .map_err(db_err)?;
    let res = write_stat1(&conn, counts);
    match res {
        Ok(()) => conn.execute_batch("COMMIT").map_err(db_err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn write_stat1(conn: &Connection, counts: &RowCounts) -> Result<(), StoreError> {
    // `sqlite_stat1` exists once any ANALYZE has run; create it as ANALYZE would if not.
    conn.execute_batch("ANALYZE sqlite_schema")
        .map_err(db_err)?;
    let present = user_tables(conn)?;
    for (table, rows) in &counts.tables {
        // A table dropped since the count has no statistics to keep.
        if !present.contains(table) {
            continue;
        }
        let idx = indexes_partial(conn, table)?;
        if idx.iter().all(|partial| *partial) {
            // No index gives the row count: ANALYZE would count the table itself, exactly; the count is here.
            conn.execute(
                "DELETE FROM sqlite_stat1 WHERE tbl = ?1 AND idx IS NULL",
                [table],
            )
            .map_err(db_err)?;
            if *rows > 0 {
                conn.execute(
                    "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?1, NULL, ?2)",
                    rusqlite::params![table, rows.to_string()],
                )
                .map_err(db_err)?;
            }
        }
        if idx.is_empty() {
            continue;
        }
        let any_partial = idx.iter().any(|partial| *partial);
        // A partial index's entries are not the table's rows: such a table is analyzed the usual way, its
        // indexes counted exactly (none in Socle's schema).
        set_disabled_optimisations(conn, if any_partial { 0 } else { STAT4 });
        let run = conn.execute_batch(&format!("ANALYZE {}", quoted(table)));
        set_disabled_optimisations(conn, 0);
        run.map_err(db_err)?;
        if !any_partial {
            conn.execute(
                "UPDATE sqlite_stat1 SET stat = ?2 || CASE instr(stat, ' ') WHEN 0 THEN '' \
                 ELSE substr(stat, instr(stat, ' ')) END WHERE tbl = ?1",
                rusqlite::params![table, rows.to_string()],
            )
            .map_err(db_err)?;
        }
    }
    conn.execute(
        "INSERT INTO socle_meta (name, value) VALUES ('analyzed_seq', ?1) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [counts.seq],
    )
    .map_err(db_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of `sqlite_stat1`, in order.
    fn stat1(conn: &Connection) -> Vec<(String, Option<String>, String)> {
        let mut stmt = conn
            .prepare("SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY tbl, idx")
            .expect("requête");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("lignes")
            .collect::<Result<Vec<_>, _>>()
            .expect("lignes")
    }

    /// Tables of every kind `ANALYZE` treats apart: a rowid table with indexes (one of them unique), a table
    /// `WITHOUT ROWID` (its primary key is an index), a rowid table with no index, one with only a partial index
    /// (analyzed exactly, the usual way), an empty one, and indexes
    /// larger than the analysis limit, with skewed first columns (the sampling skips ahead).
    fn filled(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("s.db");
        let conn = open_conn(&path, false).expect("ouverture");
        conn.execute_batch(
            "CREATE TABLE socle_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
             INSERT INTO socle_meta VALUES ('seq', 30000);
             CREATE TABLE t1 (a INTEGER, b TEXT, c INTEGER, d TEXT);
             CREATE INDEX t1_ab ON t1 (a, b);
             CREATE UNIQUE INDEX t1_c ON t1 (c);
             CREATE INDEX t1_db ON t1 (d COLLATE NOCASE, b DESC);
             CREATE TABLE t2 (k TEXT NOT NULL, n INTEGER NOT NULL, v TEXT, PRIMARY KEY (k, n)) WITHOUT ROWID;
             CREATE INDEX t2_v ON t2 (v);
             CREATE TABLE t3 (id INTEGER PRIMARY KEY, x TEXT);
             CREATE INDEX t3_x ON t3 (x) WHERE id % 2 = 0;
             CREATE TABLE t5 (id INTEGER PRIMARY KEY, y TEXT);
             CREATE TABLE t4 (p TEXT, q TEXT);
             CREATE INDEX t4_pq ON t4 (p, q);
             BEGIN;
             WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 29999)
             INSERT INTO t1 SELECT i % 7 * (i % 3), 'b' || (i % 1000), i, CASE i % 2 WHEN 0 THEN 'X' ELSE 'x' END
               FROM s;
             WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 11999)
             INSERT INTO t2 SELECT 'k' || (i % 5), i, CASE WHEN i % 4 = 0 THEN NULL ELSE 'v' || (i % 50) END FROM s;
             WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 4999)
             INSERT INTO t3 (x) SELECT 'x' || i FROM s;
             WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 2999)
             INSERT INTO t5 (y) SELECT 'y' || i FROM s;
             COMMIT;",
        )
        .expect("données");
        path
    }

    #[test]
    fn two_steps_write_what_analyze_writes() {
        let dir = tempfile::tempdir().expect("répertoire");
        let path = filled(dir.path());
        let conn = open_conn(&path, false).expect("ouverture");
        conn.execute_batch("PRAGMA analysis_limit=2000; ANALYZE")
            .expect("ANALYZE");
        let expected = stat1(&conn);
        assert!(
            expected.len() >= 7,
            "une ligne par index et table : {expected:?}"
        );
        conn.execute_batch(
            "DELETE FROM sqlite_stat1; DELETE FROM socle_meta WHERE name = 'analyzed_seq'",
        )
        .expect("effacement");

        let reader = open_conn(&path, true).expect("lecteur");
        let counts = count_rows(&reader, &AtomicBool::new(false)).expect("comptage");
        assert_eq!(counts.seq, 30000);
        assert!(counts.tables.contains(&("t1".to_string(), 30000)));
        apply(&path, &counts, 2000).expect("statistiques");
        assert_eq!(stat1(&conn), expected);
        assert_eq!(
            meta_value(&conn, "analyzed_seq").expect("méta"),
            Some(30000)
        );

        // The counts are what step 2 writes: other counts, other first figures, the rest unchanged — except for
        // the table with a partial index (t3), analyzed the usual way, its own figures exact.
        let mut other = counts;
        for (_, n) in other.tables.iter_mut() {
            *n *= 3;
        }
        apply(&path, &other, 2000).expect("statistiques");
        let got = stat1(&conn);
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            if g.0 == "t3" {
                assert_eq!(g, e);
                continue;
            }
            let (gn, grest) = g.2.split_once(' ').unwrap_or((&g.2, ""));
            let (en, erest) = e.2.split_once(' ').unwrap_or((&e.2, ""));
            assert_eq!(
                gn.parse::<i64>().ok(),
                en.parse::<i64>().ok().map(|n| n * 3),
                "{g:?}"
            );
            assert_eq!(grest, erest, "{g:?}");
        }
    }

    #[test]
    fn the_writers_analyze_does_not_count_the_entries() {
        let dir = tempfile::tempdir().expect("répertoire");
        let path = filled(dir.path());
        let conn = open_conn(&path, false).expect("ouverture");
        set_disabled_optimisations(&conn, STAT4);
        conn.execute_batch("PRAGMA analysis_limit=2000; ANALYZE t1")
            .expect("ANALYZE");
        // Its entry count is an estimate, not the 30,000 entries an exact count reads (the sampled figures
        // still are what they would be).
        let rows = stat1(&conn);
        let ab = rows
            .iter()
            .find(|r| r.1.as_deref() == Some("t1_ab"))
            .expect("t1_ab");
        assert!(!ab.2.starts_with("30000 "), "{ab:?}");
    }

    #[test]
    fn a_count_stops_when_dropped() {
        let dir = tempfile::tempdir().expect("répertoire");
        let path = filled(dir.path());
        let mut c = Counting::start(&path, None).expect("comptage");
        let started = std::time::Instant::now();
        let done = loop {
            if let Some(r) = c.take() {
                break r;
            }
            assert!(started.elapsed().as_secs() < 30, "comptage trop long");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let Outcome::Counted(counts) = done.expect("comptes") else {
            panic!("sans écrivain, le fil ne fait que compter");
        };
        assert!(counts.tables.contains(&("t3".to_string(), 5000)));
        assert!(counts.tables.contains(&("t4".to_string(), 0)));
        // Another, dropped at once: the drop interrupts it and returns.
        drop(Counting::start(&path, None).expect("comptage"));
    }
}
