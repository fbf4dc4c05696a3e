//! The embedded backend: one SQLite file in WAL mode. One writer connection (SQLite allows one writer at a
//! time anyway), a small pool of reader connections that see committed snapshots concurrently.
//! `synchronous=FULL`: a commit is on disk before it is acknowledged.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::types::{Value as RValue, ValueRef};
use rusqlite::{Connection, OpenFlags};

use crate::schema;
use crate::sql::{Dialect, Row, SqlConn, SqlValue};
use crate::{Store, StoreError, TxBody};

const READERS: usize = 8;

pub struct SqliteStore {
    path: std::path::PathBuf,
    writer: Mutex<SqliteConn>,
    readers: Mutex<Vec<SqliteConn>>,
}

pub struct SqliteConn {
    conn: Connection,
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

fn open_conn(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
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
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA temp_store=MEMORY; \
         PRAGMA cache_size=-65536; PRAGMA mmap_size=268435456;",
    )
    .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut writer = SqliteConn {
            conn: open_conn(path, false)?,
        };
        writer
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(db_err)?;
        let res = (|| {
            for stmt in schema::ddl(Dialect::Sqlite) {
                writer.execute(&stmt, &[])?;
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
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn take_reader(&self) -> Result<SqliteConn, StoreError> {
        if let Some(c) = self.readers.lock().map_err(|_| poisoned())?.pop() {
            return Ok(c);
        }
        Ok(SqliteConn {
            conn: open_conn(&self.path, true)?,
        })
    }

    fn give_back(&self, c: SqliteConn) {
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < READERS
        {
            pool.push(c);
        }
    }
}

fn poisoned() -> StoreError {
    StoreError::Database("verrou interne empoisonné".into())
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn write(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        let mut w = self.writer.lock().map_err(|_| poisoned())?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            w.conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
            let res = body(&mut *w);
            match res {
                Ok(()) => match w.conn.execute_batch("COMMIT") {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        let _ = w.conn.execute_batch("ROLLBACK");
                        return Err(db_err(e));
                    }
                },
                Err(e) => {
                    let _ = w.conn.execute_batch("ROLLBACK");
                    match e {
                        StoreError::Retryable(_) if attempt < 5 => continue,
                        e => return Err(e),
                    }
                }
            }
        }
    }

    fn read(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        let mut c = self.take_reader()?;
        c.conn.execute_batch("BEGIN").map_err(db_err)?;
        let res = body(&mut c);
        let end = c
            .conn
            .execute_batch(if res.is_ok() { "COMMIT" } else { "ROLLBACK" });
        if end.is_ok() {
            self.give_back(c);
        }
        res
    }
}

fn to_rvalue(v: &SqlValue) -> RValue {
    match v {
        SqlValue::Null => RValue::Null,
        SqlValue::Int(i) => RValue::Integer(*i),
        SqlValue::Real(f) => RValue::Real(*f),
        SqlValue::Text(s) => RValue::Text(s.clone()),
        SqlValue::Blob(b) => RValue::Blob(b.clone()),
    }
}

impl SqlConn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params.iter().map(to_rvalue)))
            .map_err(db_err)?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_err)?;
        let ncol = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter().map(to_rvalue)))
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
        Ok(out)
    }

    fn execute_many(&mut self, sql: &str, rows: &[Vec<SqlValue>]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_err)?;
        for r in rows {
            stmt.execute(rusqlite::params_from_iter(r.iter().map(to_rvalue)))
                .map_err(db_err)?;
        }
        Ok(())
    }
}
