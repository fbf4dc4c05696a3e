//! The small SQL surface both backends implement, so that every FHIR storage rule is written once.
//!
//! Owns: value and row types crossing the backend boundary, placeholder dialects. Must not know FHIR.

use crate::StoreError;

/// A value bound to or read from SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl SqlValue {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SqlValue::Int(i) => Some(*i),
            SqlValue::Real(f) => Some(*f as i64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn into_string(self) -> Option<String> {
        match self {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            SqlValue::Blob(b) => Some(b),
            SqlValue::Text(s) => Some(s.into_bytes()),
            _ => None,
        }
    }
}

impl From<&str> for SqlValue {
    fn from(s: &str) -> Self {
        SqlValue::Text(s.to_string())
    }
}
impl From<String> for SqlValue {
    fn from(s: String) -> Self {
        SqlValue::Text(s)
    }
}
impl From<&String> for SqlValue {
    fn from(s: &String) -> Self {
        SqlValue::Text(s.clone())
    }
}
impl From<i64> for SqlValue {
    fn from(i: i64) -> Self {
        SqlValue::Int(i)
    }
}
impl From<f64> for SqlValue {
    fn from(f: f64) -> Self {
        SqlValue::Real(f)
    }
}
impl From<Option<String>> for SqlValue {
    fn from(o: Option<String>) -> Self {
        o.map_or(SqlValue::Null, SqlValue::Text)
    }
}
impl From<Option<i64>> for SqlValue {
    fn from(o: Option<i64>) -> Self {
        o.map_or(SqlValue::Null, SqlValue::Int)
    }
}
impl From<Option<&str>> for SqlValue {
    fn from(o: Option<&str>) -> Self {
        o.map_or(SqlValue::Null, |s| SqlValue::Text(s.to_string()))
    }
}

pub type Row = Vec<SqlValue>;

/// SQL flavour: placeholders are written `?` everywhere and rewritten for PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Rewrites `?` placeholders to `$1, $2…` for PostgreSQL. Our SQL never contains `?` elsewhere
    /// (values are always bound), so a plain scan is exact.
    pub fn placeholders(self, sql: &str) -> String {
        match self {
            Dialect::Sqlite => sql.to_string(),
            Dialect::Postgres => {
                let mut out = String::with_capacity(sql.len() + 16);
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }
}

/// One connection inside one transaction. Both backends implement it; everything else is shared.
pub trait SqlConn {
    fn dialect(&self) -> Dialect;
    /// For the rest of this transaction, plan every statement with its actual values (PostgreSQL's
    /// `plan_cache_mode = force_custom_plan`; nothing elsewhere). Read transactions on PostgreSQL start with it
    /// already (sent with their `BEGIN`, no extra round trip).
    fn prefer_custom_plans(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError>;
    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StoreError>;
    /// Runs one statement many times with different parameters (bulk index inserts).
    fn execute_many(&mut self, sql: &str, rows: &[Vec<SqlValue>]) -> Result<(), StoreError> {
        for r in rows {
            self.execute(sql, r)?;
        }
        Ok(())
    }
    /// Inserts many rows into `table` (bulk index writes). The default runs one statement per row; PostgreSQL
    /// overrides it with a single `UNNEST` statement.
    fn insert_rows(
        &mut self,
        table: &str,
        columns: &[(&str, ColType)],
        rows: &[Vec<SqlValue>],
    ) -> Result<(), StoreError> {
        self.execute_many(&row_insert_sql(table, columns, ""), rows)
    }
    /// Inserts many rows, skipping those that would duplicate a unique key.
    fn insert_ignore_rows(
        &mut self,
        table: &str,
        columns: &[(&str, ColType)],
        rows: &[Vec<SqlValue>],
    ) -> Result<(), StoreError> {
        self.execute_many(
            &row_insert_sql(table, columns, " ON CONFLICT DO NOTHING"),
            rows,
        )
    }
    /// Inserts many rows, replacing the rows that already have the same `key` (a unique column).
    fn upsert_rows(
        &mut self,
        table: &str,
        columns: &[(&str, ColType)],
        key: &str,
        rows: &[Vec<SqlValue>],
    ) -> Result<(), StoreError> {
        let sql = row_insert_sql(table, columns, &upsert_clause(columns, key));
        self.execute_many(&sql, rows)
    }
    fn query_one(&mut self, sql: &str, params: &[SqlValue]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// `INSERT INTO table (columns…) VALUES (?, …)` followed by `suffix`, for one row.
fn row_insert_sql(table: &str, columns: &[(&str, ColType)], suffix: &str) -> String {
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let marks = vec!["?"; columns.len()].join(", ");
    format!(
        "INSERT INTO {table} ({}) VALUES ({marks}){suffix}",
        names.join(", ")
    )
}

/// ` ON CONFLICT (key) DO UPDATE SET c = excluded.c, …` (same syntax in SQLite and PostgreSQL).
pub fn upsert_clause(columns: &[(&str, ColType)], key: &str) -> String {
    let sets: Vec<String> = columns
        .iter()
        .filter(|c| c.0 != key)
        .map(|c| format!("{0} = excluded.{0}", c.0))
        .collect();
    format!(" ON CONFLICT ({key}) DO UPDATE SET {}", sets.join(", "))
}

/// Column types for bulk inserts (PostgreSQL binds whole columns as arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Text,
    Int,
    Real,
}

impl ColType {
    pub fn pg_array(self) -> &'static str {
        match self {
            ColType::Text => "text[]",
            ColType::Int => "int8[]",
            ColType::Real => "float8[]",
        }
    }
}
