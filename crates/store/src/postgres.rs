//! The server backend: PostgreSQL through a small pool of synchronous connections (used from blocking
//! threads). Transactions run at READ COMMITTED with explicit row locks where order matters (the audit chain
//! head); serialization failures and deadlocks are retried.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement};

use crate::schema;
use crate::sql::{ColType, Dialect, Row, SqlConn, SqlValue};
use crate::{Store, StoreError, TxBody};

pub struct PgStore {
    url: String,
    max: usize,
    pool: Mutex<PoolState>,
    available: Condvar,
}

struct PoolState {
    idle: Vec<PgConn>,
    open: usize,
}

pub struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// `plan_cache_mode = force_custom_plan` is set in the current transaction.
    custom_plans: bool,
}

/// Sent with a read transaction's `BEGIN`: searches run there with very different values per execution, and
/// a generic plan chosen after five runs would ignore them (see `prefer_custom_plans`).
const CUSTOM_PLANS: &str = "SET LOCAL plan_cache_mode = force_custom_plan";

fn pg_err(e: postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return match code {
            "40001" | "40P01" => StoreError::Retryable(db.message().to_string()),
            "23505" => StoreError::Conflict(db.message().to_string()),
            _ => StoreError::Database(format!("{code}: {}", db.message())),
        };
    }
    StoreError::Database(e.to_string())
}

impl PgStore {
    pub fn connect(url: &str, max: usize) -> Result<Self, StoreError> {
        let store = Self {
            url: url.to_string(),
            max: max.max(1),
            pool: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            available: Condvar::new(),
        };
        let mut c = store.new_conn()?;
        // Schema creation is serialised between concurrently starting nodes by an advisory lock.
        c.client
            .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(727274);")
            .map_err(pg_err)?;
        let res = (|| {
            for stmt in schema::ddl(Dialect::Postgres) {
                c.execute(&stmt, &[])?;
            }
            crate::tx::init_meta(&mut c)
        })();
        match res {
            Ok(()) => c.client.batch_execute("COMMIT").map_err(pg_err)?,
            Err(e) => {
                let _ = c.client.batch_execute("ROLLBACK");
                return Err(e);
            }
        }
        {
            let mut p = store.pool.lock().map_err(|_| poisoned())?;
            p.open += 1;
            p.idle.push(c);
        }
        Ok(store)
    }

    fn new_conn(&self) -> Result<PgConn, StoreError> {
        let client = Client::connect(&self.url, NoTls).map_err(|e| {
            // The server's own message ("database … does not exist") says more than "db error".
            let why = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string());
            StoreError::Config(format!(
                "connexion PostgreSQL impossible ({}) : {why}",
                crate::redact_url(&self.url)
            ))
        })?;
        Ok(PgConn {
            client,
            statements: HashMap::new(),
            custom_plans: false,
        })
    }

    fn take(&self) -> Result<PgConn, StoreError> {
        let mut p = self.pool.lock().map_err(|_| poisoned())?;
        loop {
            if let Some(c) = p.idle.pop() {
                return Ok(c);
            }
            if p.open < self.max {
                p.open += 1;
                drop(p);
                return self.new_conn().inspect_err(|_| {
                    if let Ok(mut p) = self.pool.lock() {
                        p.open -= 1;
                    }
                });
            }
            let (guard, _) = self
                .available
                .wait_timeout(p, Duration::from_secs(30))
                .map_err(|_| poisoned())?;
            p = guard;
        }
    }

    fn give_back(&self, c: PgConn, healthy: bool) {
        if let Ok(mut p) = self.pool.lock() {
            if healthy && !c.client.is_closed() {
                p.idle.push(c);
            } else {
                p.open -= 1;
            }
        }
        self.available.notify_one();
    }

    fn run(&self, begin: &str, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut c = self.take()?;
            if let Err(e) = c.client.batch_execute(begin) {
                self.give_back(c, false);
                return Err(pg_err(e));
            }
            c.custom_plans = begin.contains(CUSTOM_PLANS);
            let res = body(&mut c);
            let (res, healthy) = match res {
                Ok(()) => match c.client.batch_execute("COMMIT") {
                    Ok(()) => (Ok(()), true),
                    Err(e) => (Err(pg_err(e)), false),
                },
                Err(e) => {
                    let ok = c.client.batch_execute("ROLLBACK").is_ok();
                    (Err(e), ok)
                }
            };
            c.custom_plans = false;
            self.give_back(c, healthy);
            match res {
                Err(StoreError::Retryable(_)) if attempt < 5 => continue,
                other => return other,
            }
        }
    }
}

fn poisoned() -> StoreError {
    StoreError::Database("verrou interne empoisonné".into())
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgresql"
    }

    fn write(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        self.run("BEGIN", body)
    }

    fn read(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        self.run(
            &format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {CUSTOM_PLANS}"),
            body,
        )
    }

    fn read_one(&self, body: &mut TxBody<'_>) -> Result<(), StoreError> {
        // One round trip instead of three: the statement runs in its own implicit transaction.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut c = self.take()?;
            let res = body(&mut c);
            let healthy = match &res {
                Ok(()) => true,
                // A failed statement in autocommit leaves no transaction open; the connection is reusable
                // unless it broke.
                Err(_) => !c.client.is_closed(),
            };
            self.give_back(c, healthy);
            match res {
                Err(StoreError::Retryable(_)) if attempt < 5 => continue,
                other => return other,
            }
        }
    }
}

impl ToSql for SqlValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Int(i) => match *ty {
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            SqlValue::Real(f) => match *ty {
                Type::INT8 => (*f as i64).to_sql(ty, out),
                _ => f.to_sql(ty, out),
            },
            SqlValue::Text(s) => match *ty {
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => s.to_sql(ty, out),
            },
            SqlValue::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl PgConn {
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let pg_sql = Dialect::Postgres.placeholders(sql);
        self.prepare_as(sql, &pg_sql)
    }

    /// A statement already in PostgreSQL syntax.
    fn prepared(&mut self, pg_sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(pg_sql) {
            return Ok(s.clone());
        }
        self.prepare_as(pg_sql, pg_sql)
    }

    fn prepare_as(&mut self, key: &str, pg_sql: &str) -> Result<Statement, StoreError> {
        let s = self.client.prepare(pg_sql).map_err(pg_err)?;
        if self.statements.len() > 512 {
            self.statements.clear();
        }
        self.statements.insert(key.to_string(), s.clone());
        Ok(s)
    }
}

fn params_of(params: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl SqlConn for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn prefer_custom_plans(&mut self) -> Result<(), StoreError> {
        if !self.custom_plans {
            self.client.batch_execute(CUSTOM_PLANS).map_err(pg_err)?;
            self.custom_plans = true;
        }
        Ok(())
    }

    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        if params.is_empty() && sql.starts_with("CREATE") {
            self.client.batch_execute(sql).map_err(pg_err)?;
            return Ok(0);
        }
        let stmt = self.statement(sql)?;
        self.client
            .execute(&stmt, &params_of(params))
            .map_err(pg_err)
    }

    fn insert_rows(
        &mut self,
        table: &str,
        columns: &[(&str, ColType)],
        rows: &[Vec<SqlValue>],
    ) -> Result<(), StoreError> {
        self.unnest_insert(table, columns, rows, "")
    }

    fn upsert_rows(
        &mut self,
        table: &str,
        columns: &[(&str, ColType)],
        key: &str,
        rows: &[Vec<SqlValue>],
    ) -> Result<(), StoreError> {
        let clause = crate::sql::upsert_clause(columns, key);
        self.unnest_insert(table, columns, rows, &clause)
    }

    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql)?;
        let rows = self
            .client
            .query(&stmt, &params_of(params))
            .map_err(pg_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut row = Vec::with_capacity(r.len());
            for (i, col) in r.columns().iter().enumerate() {
                let v = match *col.type_() {
                    Type::INT8 => r
                        .try_get::<_, Option<i64>>(i)
                        .map_err(pg_err)?
                        .map(SqlValue::Int),
                    Type::INT4 => r
                        .try_get::<_, Option<i32>>(i)
                        .map_err(pg_err)?
                        .map(|v| SqlValue::Int(v.into())),
                    Type::INT2 => r
                        .try_get::<_, Option<i16>>(i)
                        .map_err(pg_err)?
                        .map(|v| SqlValue::Int(v.into())),
                    Type::BOOL => r
                        .try_get::<_, Option<bool>>(i)
                        .map_err(pg_err)?
                        .map(|v| SqlValue::Int(v.into())),
                    Type::FLOAT8 => r
                        .try_get::<_, Option<f64>>(i)
                        .map_err(pg_err)?
                        .map(SqlValue::Real),
                    Type::FLOAT4 => r
                        .try_get::<_, Option<f32>>(i)
                        .map_err(pg_err)?
                        .map(|v| SqlValue::Real(v.into())),
                    Type::BYTEA => r
                        .try_get::<_, Option<Vec<u8>>>(i)
                        .map_err(pg_err)?
                        .map(SqlValue::Blob),
                    _ => r
                        .try_get::<_, Option<String>>(i)
                        .map_err(pg_err)?
                        .map(SqlValue::Text),
                };
                row.push(v.unwrap_or(SqlValue::Null));
            }
            out.push(row);
        }
        Ok(out)
    }
}

impl PgConn {
    /// One `INSERT … SELECT * FROM UNNEST(arrays…)` for all rows, then `suffix` (e.g. an `ON CONFLICT` clause).
    fn unnest_insert(
        &mut self,
        table: &str,
        columns: &[(&str, ColType)],
        rows: &[Vec<SqlValue>],
        suffix: &str,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
        let arrays: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}", i + 1, c.1.pg_array()))
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({}) SELECT * FROM UNNEST({}){suffix}",
            names.join(", "),
            arrays.join(", ")
        );

        let mut cols: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(columns.len());
        for (i, (_, ty)) in columns.iter().enumerate() {
            match ty {
                ColType::Text => cols.push(Box::new(
                    rows.iter()
                        .map(|r| match r.get(i) {
                            Some(SqlValue::Text(s)) => Some(s.clone()),
                            _ => None,
                        })
                        .collect::<Vec<Option<String>>>(),
                )),
                ColType::Int => cols.push(Box::new(
                    rows.iter()
                        .map(|r| r.get(i).and_then(SqlValue::as_i64))
                        .collect::<Vec<Option<i64>>>(),
                )),
                ColType::Real => cols.push(Box::new(
                    rows.iter()
                        .map(|r| match r.get(i) {
                            Some(SqlValue::Real(f)) => Some(*f),
                            Some(SqlValue::Int(n)) => Some(*n as f64),
                            _ => None,
                        })
                        .collect::<Vec<Option<f64>>>(),
                )),
            }
        }
        let refs: Vec<&(dyn ToSql + Sync)> = cols.iter().map(|b| b.as_ref()).collect();
        let stmt = self.prepared(&sql)?;
        self.client.execute(&stmt, &refs).map_err(pg_err)?;
        Ok(())
    }
}
