//! FHIR search: parses query parameters against the search-parameter registry and turns them into SQL over the
//! index tables (the same SQL for both backends).
//!
//! Owns: search syntax (prefixes, modifiers, chaining, `_has`, composites), sorting, paging cursors, includes.
//! Must not know HTTP: the caller hands over decoded `(name, value)` pairs.

use socle_fhir::index::{normalize_string, number_range, parse_date_range};
use socle_fhir::outcome::IssueType;
use socle_fhir::search_params::{ParamType, SearchParam, Storage, registry};

use crate::sql::SqlValue;

/// Why a search cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    #[error("paramètre de recherche {0} : {1}")]
    Invalid(String, String),
    #[error("paramètre de recherche inconnu pour {0} : {1}")]
    Unknown(String, String),
    #[error("modificateur non pris en charge : {0}")]
    UnsupportedModifier(String),
    /// Past one of the [limits](MAX_SEARCH_PARAMS) a search may ask for: always an error, never ignored.
    #[error("recherche trop large : {0}")]
    TooCostly(String),
}

/// Limits on what one search may ask for, so that its cost stays proportional to what a real client sends
/// (a form body may be 16 MiB): parameters in all…
pub const MAX_SEARCH_PARAMS: usize = 100;
/// …values of one parameter (`a,b,c`), keys of `_sort`, elements of `_elements`…
pub const MAX_OR_VALUES: usize = 1000;
pub const MAX_SORT_KEYS: usize = 8;
pub const MAX_ELEMENTS: usize = 200;
/// …and values bound to the SQL of the conditions (chains multiply their inner condition by each target type).
pub const MAX_BOUND_VALUES: usize = 20_000;

impl SearchError {
    /// The OperationOutcome issue type that describes this error.
    pub fn issue_type(&self) -> IssueType {
        match self {
            SearchError::Invalid(..) => IssueType::Invalid,
            SearchError::Unknown(..) | SearchError::UnsupportedModifier(..) => {
                IssueType::NotSupported
            }
            SearchError::TooCostly(_) => IssueType::TooCostly,
        }
    }
}

/// How `_total` is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TotalMode {
    /// Only when it costs nothing (a single, complete page).
    #[default]
    Cheap,
    None,
    Accurate,
}

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    Count,
    Data,
    Text,
    True,
    False,
}

/// An `_include` or `_revinclude` directive.
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    pub source_type: String,
    pub param: String,
    pub target_type: Option<String>,
    pub iterate: bool,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cursor {
    #[default]
    First,
    /// Keyset: resources numbered after this one.
    After(i64),
    /// Keyset backwards: the page that ends just before this one.
    Before(i64),
    /// Sorted results: skip this many.
    Offset(i64),
}

/// One `_sort` key: an SQL expression over the resources row `r`, its bound values and its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub expr: String,
    pub params: Vec<SqlValue>,
    pub desc: bool,
}

/// Where a page of sorted results starts: just after (or, backwards, just before) the row whose sort values
/// and resource number are these. Keyset paging: a resource committed between two pages can never shift the
/// following ones (no duplicate, no skip), whatever the commit order of concurrent writers.
#[derive(Debug, Clone, PartialEq)]
pub struct SortCursor {
    pub forward: bool,
    pub values: Vec<SqlValue>,
    pub rid: i64,
}

impl SortCursor {
    /// The `_cursor` parameter value of this cursor.
    pub fn encode(&self) -> String {
        let mut a: Vec<serde_json::Value> = self
            .values
            .iter()
            .map(|v| match v {
                SqlValue::Int(i) => serde_json::Value::from(*i),
                SqlValue::Real(f) => serde_json::Number::from_f64(*f)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number),
                SqlValue::Text(t) => serde_json::Value::from(t.as_str()),
                SqlValue::Null | SqlValue::Blob(_) => serde_json::Value::Null,
            })
            .collect();
        a.push(self.rid.into());
        format!(
            "{}.{}",
            if self.forward {
                "sortafter"
            } else {
                "sortbefore"
            },
            serde_json::Value::Array(a)
        )
    }

    fn decode(forward: bool, json: &str) -> Option<SortCursor> {
        let serde_json::Value::Array(mut a) = serde_json::from_str(json).ok()? else {
            return None;
        };
        let rid = a.pop()?.as_i64()?;
        let values = a
            .into_iter()
            .map(|v| match v {
                serde_json::Value::Null => Some(SqlValue::Null),
                serde_json::Value::String(s) => Some(SqlValue::Text(s)),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Some(SqlValue::Int(i)),
                    None => n.as_f64().map(SqlValue::Real),
                },
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(SortCursor {
            forward,
            values,
            rid,
        })
    }
}

/// A parsed search, ready to run.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub rtype: String,
    /// Predicate over the resources row aliased `r`, with its bound values.
    pub filter_sql: String,
    pub filter_params: Vec<SqlValue>,
    /// `ORDER BY` terms (without the final tiebreaker) and their bound values.
    pub sort_sql: Vec<String>,
    pub sort_params: Vec<SqlValue>,
    /// The same keys, for keyset paging of sorted results.
    pub sort_keys: Vec<SortKey>,
    /// The page start of sorted results (`_cursor=sortafter.…` / `sortbefore.…`).
    pub sort_cursor: Option<SortCursor>,
    pub count: i64,
    pub cursor: Cursor,
    /// Only resources numbered up to this one (fixed at the first page so later pages ignore newer writes).
    pub snapshot: Option<i64>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    pub summary: Option<Summary>,
    pub total: TotalMode,
    pub elements: Option<Vec<String>>,
    /// Parameters that were ignored, with the reason (reported as warnings; an error in strict mode).
    pub warnings: Vec<(IssueType, String)>,
    /// The query parameters that define the result set (for self/next/previous links).
    pub canonical: Vec<(String, String)>,
    /// The paging parameters received (`_snapshot`, `_cursor`, `_offset`): the `self` link of a later page names
    /// that page.
    pub paging: Vec<(String, String)>,
    /// The top-level conditions `filter_sql` joins with `AND`, in order (their values are bound in order too).
    pub conds: Vec<String>,
    /// The conditions that are one index lookup (`r.rid IN (SELECT i.rid FROM idx_… i WHERE …)`): a page
    /// query may instead probe them row by row (see [`Probe::exists`]).
    pub probes: Vec<Probe>,
    /// Matches are decided one by one after the query (a user's search about one patient): counts decide every
    /// match, and sorted pages link by position (`_offset`), not by the sort values of their last row.
    pub matches_decided: bool,
}

/// A top-level condition of the form `r.rid IN (sub)` over one index table.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Its position in `SearchQuery::conds`.
    pub cond: usize,
    /// `SELECT i.rid FROM idx_… i WHERE …`.
    pub sub: String,
    /// Its values in `SearchQuery::filter_params`.
    pub params: std::ops::Range<usize>,
    /// When the condition is "the index column holds one of the values this query lists" (a name's
    /// `:contains` or prefix, answered by the names' vocabulary): its entries can be read value by value,
    /// each value's in resource order (see `repo::value_streams`).
    pub values: Option<ValueList>,
}

/// The values a condition's index entries may hold, listed by a query of their own.
#[derive(Debug, Clone)]
pub struct ValueList {
    /// `SELECT norm FROM …`: one column, the values.
    pub sql: String,
    pub params: Vec<SqlValue>,
    /// The index table and the column the values are of; entries are those of `rtype` and `param`.
    pub table: &'static str,
    pub column: &'static str,
    pub rtype: String,
    pub param: String,
}

impl Probe {
    /// The index table and the condition on its rows (alias `i`), to walk the index itself.
    pub fn driven_from(&self) -> Option<(&str, &str)> {
        self.sub
            .strip_prefix("SELECT i.rid FROM ")?
            .split_once(" i WHERE ")
    }

    /// Whether the condition is one value on every index column before `rid` (a code with its system, a
    /// typed reference): its index entries are then in resource order, and walking them stops after a page
    /// whatever the value's frequency.
    pub fn walks_in_order(&self) -> bool {
        match self.driven_from() {
            Some(("idx_token", rest)) => {
                rest.starts_with("((i.code = ? AND i.system = ?)) AND i.rtype = ? AND i.param = ?")
            }
            Some(("idx_ref", rest)) => {
                rest.starts_with("((i.tid = ? AND i.ttype = ?)) AND i.rtype = ? AND i.param = ?")
            }
            _ => false,
        }
    }

    /// The same condition checked for one candidate row (`i.rid = r.rid`, the index tables' key prefix):
    /// cheap per row, and it lets a page scan resources in order and stop after `_count` matches instead of
    /// first collecting every match of a frequent value. Same bound values, in the same order.
    pub fn exists(&self) -> String {
        self.exists_in(crate::Dialect::Sqlite)
    }

    /// [`Probe::exists`] for a dialect. PostgreSQL has no unary `+` on text; `OFFSET 0` keeps the check a
    /// per-row subplan on the index tables' key (`rid`): without it the planner turned it into a merge semi
    /// join, filtering the whole token table in resource order up to the type's first rows (166 ms for
    /// `role=10&specialty=SM54` at 1 M; 0.96 ms checked row by row).
    pub fn exists_in(&self, dialect: crate::Dialect) -> String {
        if dialect == crate::Dialect::Postgres
            && let Some((table, rest)) = self.driven_from()
        {
            // `i.rtype || ''`: the type leads every value index, so the check can then only reach the
            // candidate's rows by their key; otherwise PostgreSQL read a whole name range per candidate
            // (`given=elodie` with `rid = r.rid` as a last index condition: 89 ms instead of 16).
            let rest = rest.replacen("i.rtype = ?", "i.rtype || '' = ?", 1);
            return format!(
                "EXISTS (SELECT 1 FROM {table} i WHERE i.rid = r.rid AND {rest} OFFSET 0)"
            );
        }
        match self.driven_from() {
            Some((table, rest)) => {
                // A value tested against a list (`:contains` candidates, chained targets) is checked on the
                // candidate's own rows: without the unary `+`, SQLite seeks the value index once per list
                // item for every candidate (twenty seeks per row for a common substring).
                //
                // The type is written `+i.rtype` for the same reason: it leads every value index, so SQLite can
                // then only reach the candidate's rows by their key (`rid`, a handful of rows). Its sampled
                // statistics average over all values (`status = current` looks like 4 rows when it is every
                // document), and it preferred seeking the value index, then reading every entry of a frequent
                // value for each candidate (60 ms for a page of a patient's documents among 1,000).
                //
                // Every other column is written `+i.…` too: with `param` and `code` left usable, SQLite still
                // skip-scanned the value index (`ANY(rtype) AND param=? AND code=?`), reading every entry of
                // `status = current` for each of a patient's documents (4.4 instead of 1.1 ms for a page of 50).
                format!(
                    "EXISTS (SELECT 1 FROM {table} i WHERE i.rid = r.rid AND {})",
                    unindexable(rest)
                )
            }
            None => format!("r.rid IN ({})", self.sub),
        }
    }
}

/// `sql` with a unary `+` before every column of the index table `i` but its key `rid` (`i.code` → `+i.code`):
/// such terms cannot use an index, so the only way to the rows is the key.
fn unindexable(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let starts_column = b[i] == b'i'
            && b.get(i + 1) == Some(&b'.')
            && (i == 0 || matches!(b[i - 1], b' ' | b'(' | b','))
            && !sql[i + 2..].starts_with("rid")
            && b.get(i + 2).is_some_and(|c| c.is_ascii_alphabetic());
        if starts_column {
            out.push('+');
        }
        // Byte-wise copy is safe: only ASCII bytes are inspected, and whole UTF-8 sequences pass through.
        let ch_len = sql[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&sql[i..i + ch_len]);
        i += ch_len;
    }
    out
}

pub const DEFAULT_COUNT: i64 = 20;

/// Marks, in the top-level index subqueries of `filter_sql`, where a page's `rid` range can be pushed down
/// (`AND i.rid > N`), so that the index scan starts at the cursor instead of re-reading every earlier match.
/// An SQL comment: left in place it changes nothing.
pub const RID_RANGE: &str = " /*rid-range*/";
pub const MAX_COUNT: i64 = 1000;

/// Parameters that shape the result rather than select it.
const RESULT_PARAMS: &[&str] = &[
    "_sort",
    "_count",
    "_include",
    "_revinclude",
    "_summary",
    "_total",
    "_elements",
    "_contained",
    "_containedType",
    "_format",
    "_pretty",
    "_cursor",
    "_snapshot",
    "_offset",
];

/// The resources of `rtype` in the compartment of Patient `id` (`GET [base]/Patient/{id}/{type}`): those that
/// reference the patient through one of the type's compartment parameters (the official CompartmentDefinition),
/// and for `Patient` the patient itself too. Not the `pkey` column: that is the first patient a resource
/// references, and a resource that references two (an Observation by one patient about another) is in both
/// compartments.
fn compartment_condition(b: &mut Builder, rtype: &str, id: &str) -> Result<String, SearchError> {
    let invalid = |m: String| SearchError::Invalid("Patient/{id}/{type}".into(), m);
    let reg = registry();
    let params: Vec<&SearchParam> = reg
        .patient_compartment_params(rtype)
        .iter()
        .filter_map(|code| reg.param(rtype, code))
        .filter(|p| p.kind == ParamType::Reference)
        .collect();
    let own = (rtype == "Patient").then(|| format!("r.id = {} OR ", b.bind(id.to_string())));
    if params.is_empty() && own.is_none() {
        return Err(invalid(format!(
            "le type {rtype} n'appartient pas au compartiment Patient"
        )));
    }
    let mut sql = format!("({}", own.unwrap_or_default());
    if params.is_empty() {
        sql.push_str("1 = 0)");
        return Ok(sql);
    }
    let rt = b.bind(rtype.to_string());
    let ors: Vec<String> = params
        .iter()
        .map(|p| format!("({})", stored_param(b, "i", p)))
        .collect();
    let tid = b.bind(id.to_string());
    sql.push_str(&format!(
        "r.rid IN (SELECT i.rid FROM idx_ref i WHERE i.rtype = {rt} AND ({}) AND i.ttype = 'Patient' AND i.tid = {tid}))",
        ors.join(" OR ")
    ));
    Ok(sql)
}

/// Parses a type-level search. `strict` turns unknown parameters into errors (`Prefer: handling=strict`).
pub fn parse(
    rtype: &str,
    params: &[(String, String)],
    strict: bool,
) -> Result<SearchQuery, SearchError> {
    parse_hiding(rtype, params, strict, &[])
}

/// [`parse`] for a caller who may not see resources carrying the security labels `hidden` (`system|code`): a
/// chained parameter then only looks through to targets without them. (The matches themselves are filtered by
/// the caller's own `_security:not` parameters; a chain would otherwise tell, by what it finds, what a hidden
/// target holds: `PractitionerRole?practitioner.family=…` for a professional on the red list.)
pub fn parse_hiding(
    rtype: &str,
    params: &[(String, String)],
    strict: bool,
    hidden: &[String],
) -> Result<SearchQuery, SearchError> {
    parse_scoped(rtype, params, strict, hidden, None)
}

/// [`parse_hiding`] within the compartment of Patient `compartment` when given (the path of the request, never
/// its query: a client's `_compartment` parameter is unknown like any other).
pub fn parse_scoped(
    rtype: &str,
    params: &[(String, String)],
    strict: bool,
    hidden: &[String],
    compartment: Option<&str>,
) -> Result<SearchQuery, SearchError> {
    let mut q = SearchQuery {
        rtype: rtype.to_string(),
        count: DEFAULT_COUNT,
        ..Default::default()
    };
    if params.len() > MAX_SEARCH_PARAMS {
        return Err(SearchError::TooCostly(format!(
            "au plus {MAX_SEARCH_PARAMS} paramètres"
        )));
    }
    let mut b = Builder {
        hidden: hidden.to_vec(),
        ..Builder::default()
    };
    let mut conds: Vec<String> = Vec::new();
    for (name, value) in params {
        let base_name = name.split(':').next().unwrap_or("");
        if RESULT_PARAMS.contains(&base_name) {
            match parse_result_param(&mut q, name, value, strict) {
                Ok(()) => {}
                // Paging tokens are ours, not the client's: a bad one is an error even when lenient.
                Err(e)
                    if !strict
                        && !matches!(e, SearchError::TooCostly(_))
                        && !matches!(base_name, "_cursor" | "_snapshot" | "_offset") =>
                {
                    q.warnings.push((e.issue_type(), format!("{e} : ignoré")));
                    continue;
                }
                Err(e) => return Err(e),
            }
            // `_elements` names elements of the type (a choice by its base name or a typed name).
            if base_name == "_elements"
                && let Some(els) = &q.elements
            {
                let unknown = unknown_elements(rtype, els);
                if !unknown.is_empty() {
                    let e = SearchError::Invalid(
                        name.clone(),
                        format!("élément inconnu pour {rtype} : {}", unknown.join(", ")),
                    );
                    if strict {
                        return Err(e);
                    }
                    q.warnings.push((e.issue_type(), format!("{e} : ignoré")));
                }
            }
            if matches!(base_name, "_cursor" | "_snapshot" | "_offset") {
                q.paging.push((name.clone(), value.clone()));
            } else if !matches!(base_name, "_format" | "_pretty") {
                q.canonical.push((name.clone(), value.clone()));
            }
            continue;
        }
        let mark = b.params.len();
        let cond = param_condition(&mut b, rtype, "r", name, value, 0);
        let values = b.values.take();
        match cond {
            Ok(Some(c)) => {
                if let Some(sub) = c
                    .strip_prefix("r.rid IN (")
                    .and_then(|x| x.strip_suffix(')'))
                    .filter(|x| x.starts_with("SELECT i.rid FROM "))
                {
                    q.probes.push(Probe {
                        cond: conds.len(),
                        sub: sub.to_string(),
                        params: mark..b.params.len(),
                        values,
                    });
                }
                conds.push(c);
                q.canonical.push((name.clone(), value.clone()));
            }
            Ok(None) => {}
            // Lenient handling (the default): an unknown or malformed parameter is ignored with a warning.
            Err(e) if !strict && !matches!(e, SearchError::TooCostly(_)) => {
                // Values bound before the error belong to no condition.
                b.params.truncate(mark);
                q.warnings.push((e.issue_type(), format!("{e} : ignoré")));
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(id) = compartment {
        // Said by the request's path, not its query: no link repeats it.
        conds.push(compartment_condition(&mut b, rtype, id)?);
    }
    q.filter_sql = if conds.is_empty() {
        "1 = 1".to_string()
    } else {
        conds.join(" AND ")
    };
    q.conds = conds;
    q.filter_params = b.params;
    if let Some(c) = &q.sort_cursor
        && (c.values.len() != q.sort_keys.len()
            || !c
                .values
                .iter()
                .zip(&q.sort_keys)
                .all(|(v, k)| cursor_value_fits(v, &k.expr)))
    {
        return Err(SearchError::Invalid(
            "_cursor".into(),
            "curseur invalide pour ce tri".into(),
        ));
    }
    Ok(q)
}

/// The names in `_elements` that are no element of `rtype` (none when its definition is not known).
fn unknown_elements<'a>(rtype: &str, els: &'a [String]) -> Vec<&'a str> {
    if socle_fhir::elements::of(rtype).is_none() {
        return Vec::new();
    }
    els.iter()
        .map(String::as_str)
        .filter(|e| !socle_fhir::elements::is_known(rtype, e))
        .collect()
}

/// `_summary` and `_elements` on a read or a version read of `rtype` (FHIR allows them there too): what to apply
/// with [`crate::render::shape_resource`]. `_summary=count` means nothing on one resource and an unknown element
/// is an error: no Bundle carries a warning.
pub fn read_shaping(
    rtype: &str,
    params: &[(String, String)],
) -> Result<(Option<Summary>, Option<Vec<String>>), SearchError> {
    let mut q = SearchQuery::default();
    for (k, v) in params {
        if matches!(k.as_str(), "_summary" | "_elements") {
            parse_result_param(&mut q, k, v, true)?;
        }
    }
    if q.summary == Some(Summary::Count) {
        return Err(SearchError::Invalid(
            "_summary".into(),
            "count ne s'applique qu'à une recherche".into(),
        ));
    }
    if let Some(els) = &q.elements {
        let unknown = unknown_elements(rtype, els);
        if !unknown.is_empty() {
            return Err(SearchError::Invalid(
                "_elements".into(),
                format!("élément inconnu pour {rtype} : {}", unknown.join(", ")),
            ));
        }
    }
    Ok((q.summary, q.elements))
}

fn parse_result_param(
    q: &mut SearchQuery,
    name: &str,
    value: &str,
    strict: bool,
) -> Result<(), SearchError> {
    let bad = |m: &str| SearchError::Invalid(name.to_string(), m.to_string());
    match name {
        "_count" => {
            let n: i64 = value.parse().map_err(|_| bad("entier positif attendu"))?;
            if n < 0 {
                return Err(bad("entier positif attendu"));
            }
            q.count = n.min(MAX_COUNT);
        }
        "_cursor" => {
            if let Some(v) = value.strip_prefix("sortafter.") {
                q.sort_cursor =
                    Some(SortCursor::decode(true, v).ok_or_else(|| bad("curseur invalide"))?);
                return Ok(());
            }
            if let Some(v) = value.strip_prefix("sortbefore.") {
                q.sort_cursor =
                    Some(SortCursor::decode(false, v).ok_or_else(|| bad("curseur invalide"))?);
                return Ok(());
            }
            q.cursor = if let Some(v) = value.strip_prefix("after.") {
                Cursor::After(v.parse().map_err(|_| bad("curseur invalide"))?)
            } else if let Some(v) = value.strip_prefix("before.") {
                Cursor::Before(v.parse().map_err(|_| bad("curseur invalide"))?)
            } else {
                return Err(bad("curseur invalide"));
            }
        }
        "_offset" => {
            let n: i64 = value.parse().map_err(|_| bad("entier positif attendu"))?;
            q.cursor = Cursor::Offset(n.max(0));
        }
        "_snapshot" => q.snapshot = Some(value.parse().map_err(|_| bad("instantané invalide"))?),
        "_total" => {
            q.total = match value {
                "none" => TotalMode::None,
                "estimate" | "accurate" => TotalMode::Accurate,
                _ => return Err(bad("none, estimate ou accurate attendu")),
            }
        }
        "_summary" => {
            q.summary = Some(match value {
                "count" => Summary::Count,
                "data" => Summary::Data,
                "text" => Summary::Text,
                "true" => Summary::True,
                "false" => Summary::False,
                _ => return Err(bad("count, data, text, true ou false attendu")),
            })
        }
        "_elements" => {
            let elements: Vec<String> = value
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .take(MAX_ELEMENTS + 1)
                .collect();
            if elements.len() > MAX_ELEMENTS {
                return Err(SearchError::TooCostly(format!(
                    "_elements : au plus {MAX_ELEMENTS} éléments"
                )));
            }
            q.elements = Some(elements)
        }
        "_sort" => {
            if value
                .split(',')
                .filter(|s| !s.is_empty())
                .nth(MAX_SORT_KEYS)
                .is_some()
            {
                return Err(SearchError::TooCostly(format!(
                    "_sort : au plus {MAX_SORT_KEYS} clés"
                )));
            }
            // All keys are checked before any is kept, so that an ignored `_sort` leaves no partial order.
            let mut keys = Vec::new();
            for key in value.split(',').filter(|s| !s.is_empty()) {
                let (desc, code) = match key.strip_prefix('-') {
                    Some(c) => (true, c),
                    None => (false, key),
                };
                keys.push((desc, sort_term(&q.rtype, code)?));
            }
            for (desc, (expr, params)) in keys {
                q.sort_sql.push(format!(
                    "({expr}) IS NULL, ({expr}) {}",
                    if desc { "DESC" } else { "ASC" }
                ));
                q.sort_params.extend(params.iter().cloned());
                q.sort_params.extend(params.iter().cloned());
                q.sort_keys.push(SortKey { expr, params, desc });
            }
        }
        "_include"
        | "_include:iterate"
        | "_include:recurse"
        | "_revinclude"
        | "_revinclude:iterate"
        | "_revinclude:recurse" => {
            let iterate = name.contains(':');
            let forward = name.starts_with("_include");
            let reg = registry();
            // `*` alone: every reference parameter of the searched type (`_include` only: the resources of every
            // type that may point to this one are too many to gather — name the source type).
            let value = match value {
                "*" if forward => format!("{}:*", q.rtype),
                "*" => {
                    return Err(SearchError::TooCostly(format!(
                        "{name}=* : précisez le type source ({name}=Observation:* par exemple)"
                    )));
                }
                v => v.to_string(),
            };
            let mut parts = value.split(':');
            let source_type = parts.next().unwrap_or("").to_string();
            let param = parts.next().unwrap_or("").to_string();
            let target_type = parts.next().map(str::to_string);
            if !reg.is_resource_type(&source_type) {
                return Err(bad("type de ressource inconnu"));
            }
            if let Some(t) = &target_type
                && !reg.is_resource_type(t)
            {
                return Err(bad("type cible inconnu"));
            }
            // `Type:*`: each of the type's reference parameters (for a `_revinclude` of the matches, those that may
            // point to the searched type; iterated, or with a target type, the resources it applies to are of
            // other types: all of them, each read for the types in hand).
            let only_to_matches = !forward && !iterate && target_type.is_none();
            let params: Vec<String> = if param == "*" {
                reg.params(&source_type)
                    .filter(|p| p.kind == ParamType::Reference)
                    .filter(|p| {
                        !only_to_matches || p.targets.is_empty() || p.targets.contains(&q.rtype)
                    })
                    .map(|p| p.code.clone())
                    .collect()
            } else {
                match reg.param(&source_type, &param) {
                    Some(p) if p.kind == ParamType::Reference => vec![param],
                    _ => return Err(bad("paramètre de référence inconnu")),
                }
            };
            let list = if forward {
                &mut q.includes
            } else {
                &mut q.revincludes
            };
            for param in params {
                let inc = Include {
                    source_type: source_type.clone(),
                    param,
                    target_type: target_type.clone(),
                    iterate,
                };
                // The same directive twice is read once.
                if !list.contains(&inc) {
                    list.push(inc)
                }
            }
        }
        "_format" | "_pretty" => {}
        "_contained" | "_containedType" => {
            if strict {
                return Err(SearchError::Unknown(q.rtype.clone(), name.to_string()));
            }
            q.warnings.push((
                IssueType::NotSupported,
                format!("{name} n'est pas pris en charge : ignoré"),
            ));
        }
        _ => {
            if strict {
                return Err(SearchError::UnsupportedModifier(name.to_string()));
            }
            q.warnings.push((
                IssueType::NotSupported,
                format!("{name} n'est pas pris en charge : ignoré"),
            ));
        }
    }
    Ok(())
}

/// The query of one page of sorted results.
pub struct SortedPageSql {
    /// Selects the version columns, the resource number, then one column per sort key; `count + 1` rows.
    pub sql: String,
    pub params: Vec<SqlValue>,
    /// `false` for a `previous` page: rows come in reverse order.
    pub forward: bool,
    /// No cursor and no offset.
    pub first_page: bool,
}

/// The SQL of a page of sorted results over the resources selected by `base_where` (alias `r`, with
/// `base_params`). Keyset paging: the cursor names the last (first, backwards) row of the previous page by its
/// sort values and resource number, so resources committed between two pages — even with a resource number
/// below the snapshot, as concurrent PostgreSQL writers commit out of order — never shift the next pages.
/// Order: for each key, `(k IS NULL)` (NULLs last) then `k` in its direction; the resource number last.
/// `_offset` (from older links) is still honoured.
pub fn sorted_page_sql(
    q: &SearchQuery,
    base_where: &str,
    base_params: &[SqlValue],
) -> Result<SortedPageSql, SearchError> {
    let keys = &q.sort_keys;
    let mut params: Vec<SqlValue> = Vec::new();
    let mut cols = String::new();
    let mut out_cols = String::new();
    for (i, k) in keys.iter().enumerate() {
        cols.push_str(&format!(", ({}) AS k{i}", k.expr));
        out_cols.push_str(&format!(", t.k{i}"));
        params.extend(k.params.iter().cloned());
    }
    params.extend(base_params.iter().cloned());
    let (cond, forward) = match &q.sort_cursor {
        None => ("1 = 1".to_string(), true),
        Some(cur) => {
            if cur.values.len() != keys.len() {
                return Err(SearchError::Invalid(
                    "_cursor".into(),
                    "curseur sans rapport avec _sort".into(),
                ));
            }
            // Strictly after (before) the cursor row, built from the last key outwards:
            // after_i OR (eq_i AND rest), the innermost rest comparing resource numbers.
            let mut cond = format!("t.rid {} ?", if cur.forward { ">" } else { "<" });
            let mut tail: Vec<SqlValue> = vec![cur.rid.into()];
            for (i, (k, v)) in keys.iter().zip(&cur.values).enumerate().rev() {
                let mut p: Vec<SqlValue> = Vec::new();
                let (after, eq) = if *v == SqlValue::Null {
                    // NULLs sort last: only NULLs follow a NULL; every value precedes it.
                    let after = if cur.forward {
                        "1 = 0".to_string()
                    } else {
                        format!("t.k{i} IS NOT NULL")
                    };
                    (after, format!("t.k{i} IS NULL"))
                } else {
                    let op = if k.desc == cur.forward { "<" } else { ">" };
                    let after = if cur.forward {
                        format!("(t.k{i} IS NULL OR t.k{i} {op} ?)")
                    } else {
                        format!("t.k{i} {op} ?")
                    };
                    p.push(v.clone());
                    p.push(v.clone());
                    (after, format!("t.k{i} = ?"))
                };
                cond = format!("({after} OR ({eq} AND {cond}))");
                p.extend(tail);
                tail = p;
            }
            params.extend(tail);
            (cond, cur.forward)
        }
    };
    let order: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let (n, d) = match (forward, k.desc) {
                (true, false) => ("ASC", "ASC"),
                (true, true) => ("ASC", "DESC"),
                (false, false) => ("DESC", "DESC"),
                (false, true) => ("DESC", "ASC"),
            };
            format!("(t.k{i} IS NULL) {n}, t.k{i} {d}")
        })
        .collect();
    let offset = match (&q.sort_cursor, q.cursor) {
        (None, Cursor::Offset(o)) => o,
        _ => 0,
    };
    params.push(offset.into());
    let sql = format!(
        "SELECT v.rtype, v.id, v.version, v.last_updated, v.method, v.content, t.pkey, t.rid{out_cols} FROM \
         (SELECT r.pkey, r.rid, r.version{cols} FROM resources r WHERE {base_where}) t \
         JOIN resource_versions v ON v.pkey = t.pkey AND v.rid = t.rid AND v.version = t.version \
         WHERE {cond} ORDER BY {}, t.rid {} LIMIT {} OFFSET ?",
        order.join(", "),
        if forward { "ASC" } else { "DESC" },
        q.count + 1
    );
    Ok(SortedPageSql {
        sql,
        params,
        forward,
        first_page: q.sort_cursor.is_none() && offset == 0,
    })
}

/// Whether a value read back from a (client-supplied) cursor has the SQL type of its sort key: a tampered
/// cursor is a 400, not a type error in the database.
fn cursor_value_fits(v: &SqlValue, expr: &str) -> bool {
    let int = expr.contains("idx_date") || expr.contains("last_updated");
    let real = expr.contains("idx_number") || expr.contains("idx_quantity");
    match v {
        SqlValue::Null => true,
        SqlValue::Int(_) => int || real,
        SqlValue::Real(_) => real,
        SqlValue::Text(_) => !int && !real,
        SqlValue::Blob(_) => false,
    }
}

/// The SQL expression giving the sort value of a resource `r` for a parameter, and its bound values.
fn sort_term(rtype: &str, code: &str) -> Result<(String, Vec<SqlValue>), SearchError> {
    match code {
        "_id" => return Ok(("r.id".into(), vec![])),
        "_lastUpdated" => return Ok(("r.last_updated".into(), vec![])),
        _ => {}
    }
    let p = registry()
        .param(rtype, code)
        .ok_or_else(|| SearchError::Unknown(rtype.to_string(), format!("_sort={code}")))?;
    let (table, col) = match p.kind {
        ParamType::String => ("idx_string", "norm"),
        ParamType::Token => ("idx_token", "code"),
        ParamType::Reference => ("idx_ref", "tid"),
        ParamType::Date => ("idx_date", "lo"),
        ParamType::Number => ("idx_number", "value"),
        ParamType::Quantity => ("idx_quantity", "value"),
        ParamType::Uri => ("idx_uri", "uri"),
        _ => {
            return Err(SearchError::Invalid(
                "_sort".into(),
                format!("{code} ne peut pas servir au tri"),
            ));
        }
    };
    let mut b = Builder::default();
    let rows = stored_param(&mut b, "s", p);
    Ok((
        format!(
            "SELECT MIN(s.{col}) FROM {table} s WHERE s.pkey = r.pkey AND s.rid = r.rid AND {rows}"
        ),
        b.params,
    ))
}

/// The index rows of parameter `p` (table alias `t`): `t.param = ?`, or, for a parameter the store keeps as
/// other parameters' rows ([`Storage`]), `t.param = ? AND t.ttype = ?` (another reference parameter's rows of
/// one target type) or `t.param IN (?, ?)` (the union of other parameters' rows). Values bound in that order.
fn stored_param(b: &mut Builder, t: &str, p: &SearchParam) -> String {
    match &p.storage {
        Storage::Own => format!("{t}.param = {}", b.bind(p.code.clone())),
        Storage::Subset { param, target } => format!(
            "{t}.param = {} AND {t}.ttype = {}",
            b.bind(param.clone()),
            b.bind(target.clone())
        ),
        Storage::Union(parts) => {
            let marks: Vec<&str> = parts.iter().map(|c| b.bind(c.clone())).collect();
            format!("{t}.param IN ({})", marks.join(", "))
        }
    }
}

#[derive(Default)]
struct Builder {
    params: Vec<SqlValue>,
    alias: usize,
    /// Set by a top-level condition whose entries can be listed value by value (see [`Probe::values`]).
    values: Option<ValueList>,
    /// Security labels (`system|code`) a chain's targets may not carry (see [`parse_hiding`]).
    hidden: Vec<String>,
}

impl Builder {
    fn bind(&mut self, v: impl Into<SqlValue>) -> &'static str {
        self.params.push(v.into());
        "?"
    }
    fn next_alias(&mut self) -> String {
        self.alias += 1;
        format!("a{}", self.alias)
    }
}

const MAX_CHAIN_DEPTH: usize = 3;

/// The comparison prefix of number, date and quantity values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

fn split_prefix(v: &str) -> (Prefix, &str) {
    if v.len() >= 2 && v.is_char_boundary(2) {
        let p = match &v[..2] {
            "eq" => Some(Prefix::Eq),
            "ne" => Some(Prefix::Ne),
            "gt" => Some(Prefix::Gt),
            "lt" => Some(Prefix::Lt),
            "ge" => Some(Prefix::Ge),
            "le" => Some(Prefix::Le),
            "sa" => Some(Prefix::Sa),
            "eb" => Some(Prefix::Eb),
            "ap" => Some(Prefix::Ap),
            _ => None,
        };
        if let Some(p) = p {
            return (p, &v[2..]);
        }
    }
    (Prefix::Eq, v)
}

/// Splits a parameter value at unescaped commas (`\,` is a literal comma).
fn split_or(v: &str) -> Vec<String> {
    split_escaped(v, ',')
}

/// [`split_or`], at most [`MAX_OR_VALUES`] values.
fn or_values(v: &str) -> Result<Vec<String>, SearchError> {
    let values = split_or(v);
    if values.len() > MAX_OR_VALUES {
        return Err(SearchError::TooCostly(format!(
            "{} valeurs séparées par des virgules, au plus {MAX_OR_VALUES}",
            values.len()
        )));
    }
    Ok(values)
}

pub(crate) fn split_escaped(v: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == ',' || n == '$' || n == '|' || n == '\\' => {
                    if n == sep {
                        cur.push(n);
                    } else {
                        cur.push('\\');
                        cur.push(n);
                    }
                }
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

pub(crate) fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits `system|code` at the first unescaped bar.
fn split_token(v: &str) -> (Option<String>, Option<String>) {
    let parts = split_escaped(v, '|');
    if parts.len() == 1 {
        (None, Some(unescape(&parts[0])).filter(|s| !s.is_empty()))
    } else {
        let code = parts[1..].join("|");
        (
            Some(unescape(&parts[0])),
            Some(unescape(&code)).filter(|s| !s.is_empty()),
        )
    }
}

/// One condition for `name=value` over the resource alias `alias`, or `None` if it selects nothing special.
/// The `phonetic` parameters (Patient, Practitioner, Person, RelatedPerson): no phonetic algorithm is
/// implemented, so they are neither advertised nor run as a plain name search that would pass for one.
pub const UNSUPPORTED_PHONETIC: &str = "phonetic";

fn param_condition(
    b: &mut Builder,
    rtype: &str,
    alias: &str,
    name: &str,
    value: &str,
    depth: usize,
) -> Result<Option<String>, SearchError> {
    let invalid = |m: &str| SearchError::Invalid(name.to_string(), m.to_string());
    if name.split(':').next() == Some(UNSUPPORTED_PHONETIC) {
        return Err(SearchError::Unknown(
            rtype.to_string(),
            "phonetic (recherche phonétique non prise en charge : utilisez name, family ou given, ou \
             :contains)"
                .into(),
        ));
    }
    if depth > MAX_CHAIN_DEPTH {
        return Err(invalid("chaînage trop profond"));
    }
    if let Some(rest) = name.strip_prefix("_has:") {
        return has_condition(b, rtype, alias, rest, value, depth).map(Some);
    }
    // Chaining: `subject:Patient.name` or `subject.name`.
    if let Some(dot) = name.find('.') {
        let (head, tail) = (&name[..dot], &name[dot + 1..]);
        return chain_condition(b, rtype, alias, head, tail, value, depth).map(Some);
    }
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    if value.is_empty() && modifier != Some("missing") {
        return Err(invalid("valeur vide"));
    }
    match code {
        "_id" => {
            let ids = or_values(value)?;
            let not = match modifier {
                None | Some("exact") => false,
                Some("not") => true,
                Some("missing") => return Ok(None),
                Some(m) => return Err(SearchError::UnsupportedModifier(format!("{code}:{m}"))),
            };
            let marks: Vec<&str> = ids.iter().map(|i| b.bind(unescape(i))).collect();
            return Ok(Some(format!(
                "{alias}.id {}IN ({})",
                if not { "NOT " } else { "" },
                marks.join(", ")
            )));
        }
        "_lastUpdated" => {
            if modifier.is_some() {
                return Err(SearchError::UnsupportedModifier(name.to_string()));
            }
            let mut ors = Vec::new();
            for v in or_values(value)? {
                let (prefix, rest) = split_prefix(&v);
                let (plo, phi) = parse_date_range(rest).ok_or_else(|| invalid("date invalide"))?;
                let lu = format!("{alias}.last_updated");
                ors.push(date_predicate(b, prefix, &lu, &lu, plo, phi));
            }
            return Ok(Some(format!("({})", ors.join(" OR "))));
        }
        "_text" | "_content" | "_filter" | "_query" | "_list" | "_type" => {
            return Err(SearchError::Unknown(
                rtype.to_string(),
                format!("{code} (non pris en charge)"),
            ));
        }
        _ => {}
    }
    let reg = registry();
    let p = reg
        .param(rtype, code)
        .ok_or_else(|| SearchError::Unknown(rtype.to_string(), code.to_string()))?;
    if p.expression.is_none() && !matches!(code, "_id" | "_lastUpdated") {
        return Err(SearchError::Unknown(
            rtype.to_string(),
            format!("{code} (sans expression indexable)"),
        ));
    }
    // `author:identifier=system|value`: resources whose reference names its target by a logical identifier
    // (`Reference.identifier`), kept among the tokens under the reference parameter's name (a subset parameter's
    // under the one holding its rows: `patient:identifier` is `subject:identifier`).
    if p.kind == ParamType::Reference && modifier == Some("identifier") {
        let pred = |b: &mut Builder, v: &str| token_predicate(b, v, "i.system", "i.code");
        return rows_elsewhere(
            b,
            "idx_token",
            rtype,
            alias,
            p,
            "identifier",
            "",
            value,
            &pred,
        )
        .map(Some);
    }
    // `code:text=diab`: the token's text (`CodeableConcept.text`, `Coding.display`, `Identifier.type.text`, kept
    // as string rows of the parameter), searched as a string is by default: starts with the value, case and
    // accents aside (`diab` finds "Diabète de type 2"; `type 2` does not — not a search by word).
    if p.kind == ParamType::Token && modifier == Some("text") {
        let pred = |b: &mut Builder, v: &str| string_predicate(b, rtype, &p.code, None, v);
        return rows_elsewhere(b, "idx_string", rtype, alias, p, "text", "", value, &pred)
            .map(Some);
    }
    // `identifier:of-type=type-system|type-code|value`: an Identifier of that type with that value, kept as
    // tokens of `identifier:of-type` (system `type-system|type-code`, code the value).
    if p.kind == ParamType::Token && modifier == Some("of-type") {
        if !matches!(p.storage, Storage::Own) {
            return Err(SearchError::UnsupportedModifier(name.to_string()));
        }
        let pred = |b: &mut Builder, v: &str| {
            let parts = split_escaped(v, '|');
            let [ts, tc, val] = parts.as_slice() else {
                return Err("type-système|type-code|valeur attendu".to_string());
            };
            let (tc, val) = (unescape(tc), unescape(val));
            if tc.is_empty() || val.is_empty() {
                return Err("le code du type et la valeur sont obligatoires".to_string());
            }
            Ok(format!(
                "(i.code = {} AND i.system = {})",
                b.bind(val),
                b.bind(format!("{}|{tc}", unescape(ts)))
            ))
        };
        let suffix = socle_fhir::index::OF_TYPE_SUFFIX;
        return rows_elsewhere(
            b,
            "idx_token",
            rtype,
            alias,
            p,
            "of-type",
            suffix,
            value,
            &pred,
        )
        .map(Some);
    }
    let table = match p.kind {
        ParamType::String => "idx_string",
        ParamType::Token => "idx_token",
        ParamType::Reference => "idx_ref",
        ParamType::Date => "idx_date",
        ParamType::Number => "idx_number",
        ParamType::Quantity => "idx_quantity",
        ParamType::Uri => "idx_uri",
        ParamType::Composite => "idx_composite",
        ParamType::Special => {
            return Err(SearchError::Unknown(
                rtype.to_string(),
                format!("{code} (paramètre spécial non pris en charge)"),
            ));
        }
    };
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(invalid("true ou false attendu")),
        };
        let sub = format!(
            "SELECT i.rid FROM {table} i WHERE i.rtype = {} AND {}",
            b.bind(rtype),
            stored_param(b, "i", p)
        );
        return Ok(Some(format!(
            "{alias}.rid {}IN ({sub})",
            if missing { "NOT " } else { "" }
        )));
    }
    let mut negate = false;
    let mut ors = Vec::new();
    let values = or_values(value)?;
    let single = values.len() == 1;
    for v in values {
        let pred = match p.kind {
            ParamType::String => {
                if single && alias == "r" && depth == 0 && matches!(p.storage, Storage::Own) {
                    b.values = vocabulary_values(rtype, code, modifier, &v);
                }
                string_predicate(b, rtype, code, modifier, &v).map_err(|m| invalid(&m))?
            }
            ParamType::Token => {
                match modifier {
                    None => {}
                    Some("not") => negate = true,
                    Some(m) => return Err(SearchError::UnsupportedModifier(format!("{code}:{m}"))),
                }
                token_predicate(b, &v, "i.system", "i.code").map_err(|m| invalid(&m))?
            }
            ParamType::Reference => {
                reference_predicate(b, p, modifier, &v).map_err(|m| invalid(&m))?
            }
            ParamType::Date => {
                no_modifier(code, modifier)?;
                let (prefix, rest) = split_prefix(&v);
                let (plo, phi) = parse_date_range(rest).ok_or_else(|| invalid("date invalide"))?;
                date_predicate(b, prefix, "i.lo", "i.hi", plo, phi)
            }
            ParamType::Number => {
                no_modifier(code, modifier)?;
                let (prefix, rest) = split_prefix(&v);
                let (pv, plo, phi) =
                    number_range(rest).ok_or_else(|| invalid("nombre invalide"))?;
                number_predicate(b, prefix, "i.value", pv, plo, phi)
            }
            ParamType::Quantity => {
                no_modifier(code, modifier)?;
                quantity_predicate(b, &v).map_err(|m| invalid(&m))?
            }
            ParamType::Uri => match modifier {
                None => format!("i.uri = {}", b.bind(unescape(&v))),
                Some("below") => uri_below_predicate(b, &unescape(&v)),
                Some("above") => uri_above_predicate(b, &unescape(&v)).map_err(|m| invalid(&m))?,
                Some(m) => return Err(SearchError::UnsupportedModifier(format!("{code}:{m}"))),
            },
            ParamType::Composite => {
                no_modifier(code, modifier)?;
                composite_predicate(b, p, &v).map_err(|m| invalid(&m))?
            }
            ParamType::Special => continue,
        };
        ors.push(pred);
    }
    // Bind order: the predicate values were bound before these two, so they go first in the SQL too.
    let preds = ors.join(" OR ");
    let sub = format!(
        "SELECT i.rid FROM {table} i WHERE ({preds}) AND i.rtype = {} AND {}{}",
        b.bind(rtype),
        stored_param(b, "i", p),
        if !negate && alias == "r" {
            RID_RANGE
        } else {
            ""
        }
    );
    Ok(Some(format!(
        "{alias}.rid {}IN ({sub})",
        if negate { "NOT " } else { "" }
    )))
}

/// The condition on `alias` that one of `p`'s rows in `table`, an index table other than its own type's, matches
/// one of `value`'s comma-separated values by `pred`: a reference's identifiers among the tokens (`:identifier`), a
/// token's texts among the strings (`:text`), an identifier's type and value among the tokens of
/// `param` + `suffix` (`:of-type`). The rows are `p`'s by `i.param` alone (a reference subset's rows carry no
/// target type there).
#[allow(clippy::too_many_arguments)]
fn rows_elsewhere(
    b: &mut Builder,
    table: &str,
    rtype: &str,
    alias: &str,
    p: &SearchParam,
    modifier: &str,
    suffix: &str,
    value: &str,
    pred: &dyn Fn(&mut Builder, &str) -> Result<String, String>,
) -> Result<String, SearchError> {
    let mut ors = Vec::new();
    for v in or_values(value)? {
        ors.push(
            pred(b, &v).map_err(|m| SearchError::Invalid(format!("{}:{modifier}", p.code), m))?,
        );
    }
    let rt = b.bind(rtype);
    let stored = match &p.storage {
        Storage::Own => format!("i.param = {}", b.bind(format!("{}{suffix}", p.code))),
        Storage::Subset { param, .. } => {
            format!("i.param = {}", b.bind(format!("{param}{suffix}")))
        }
        Storage::Union(parts) => {
            let marks: Vec<&str> = parts
                .iter()
                .map(|c| b.bind(format!("{c}{suffix}")))
                .collect();
            format!("i.param IN ({})", marks.join(", "))
        }
    };
    Ok(format!(
        "{alias}.rid IN (SELECT i.rid FROM {table} i WHERE ({}) AND i.rtype = {rt} AND {stored}{})",
        ors.join(" OR "),
        if alias == "r" { RID_RANGE } else { "" }
    ))
}

/// `url:below=http://a/b`: `http://a/b` itself and everything under it on a path-segment boundary
/// (`http://a/b/c`, not `http://a/bc`). Compared with `substr`, not `LIKE`: URIs are case-sensitive, and SQLite's
/// `LIKE` is not.
fn uri_below_predicate(b: &mut Builder, v: &str) -> String {
    let base = v.trim_end_matches('/');
    let under = format!("{base}/");
    format!(
        "(i.uri = {} OR substr(i.uri, 1, {}) = {})",
        b.bind(base),
        b.bind(under.chars().count() as i64),
        b.bind(under)
    )
}

/// `url:above=http://a/b/c/_history/2`: the URIs the value is under, on a path-segment boundary — itself,
/// `http://a/b/c/_history`, `http://a/b/c`, `http://a/b`, `http://a` (not `http:`: the scheme and the
/// authority stay whole). A canonical's versioned URL finds the resource.
fn uri_above_predicate(b: &mut Builder, v: &str) -> Result<String, String> {
    // The path only: a query or fragment is not a level of the hierarchy.
    let path_end = v.find(['?', '#']).unwrap_or(v.len());
    let base = v[..path_end].trim_end_matches('/');
    // Cuts only after the authority (`scheme://host`) when there is one.
    let from = base.find("://").map_or(0, |i| i + 3);
    let mut ups: Vec<&str> = base
        .char_indices()
        .filter(|(i, c)| *c == '/' && *i > from)
        .map(|(i, _)| &base[..i])
        .collect();
    ups.push(base);
    if ups.len() > MAX_URI_LEVELS {
        return Err(format!("au plus {MAX_URI_LEVELS} segments"));
    }
    // Each level as written and with a final slash (`http://a/b/` is above `http://a/b/c` too).
    let mut marks = Vec::with_capacity(ups.len() * 2);
    for u in ups {
        marks.push(b.bind(u));
        marks.push(b.bind(format!("{u}/")));
    }
    if v.len() > path_end {
        marks.push(b.bind(v));
    }
    Ok(format!("i.uri IN ({})", marks.join(", ")))
}

/// Path segments `:above` may walk up (each binds two values).
const MAX_URI_LEVELS: usize = 64;

fn no_modifier(code: &str, modifier: Option<&str>) -> Result<(), SearchError> {
    match modifier {
        None => Ok(()),
        Some(m) => Err(SearchError::UnsupportedModifier(format!("{code}:{m}"))),
    }
}

/// A bound `LIKE` pattern, written so that SQLite does not see a bare bound value: it would read the value to
/// try its `LIKE` optimisation (never usable here: case-insensitive `LIKE` on `BINARY` columns) and then prepare
/// the statement again at each execution. `vocabulary_values` writes its patterns the same way.
fn like_operand(placeholder: &str) -> String {
    format!("CAST({placeholder} AS TEXT)")
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The smallest string greater than every string starting with `prefix`.
fn prefix_upper_bound(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

fn string_predicate(
    b: &mut Builder,
    rtype: &str,
    code: &str,
    modifier: Option<&str>,
    v: &str,
) -> Result<String, String> {
    let v = unescape(v);
    Ok(match modifier {
        None => {
            let n = normalize_string(&v);
            let lo = b.bind(n.clone());
            let hi = b.bind(prefix_upper_bound(&n));
            format!("(i.norm >= {lo} AND i.norm < {hi})")
        }
        Some("exact") => format!("i.exact = {}", b.bind(v)),
        Some("contains") => {
            let n = normalize_string(&v);
            let pattern = format!("%{}%", like_escape(&n));
            if !crate::vocab::has_vocabulary(code) {
                format!("i.norm LIKE {} ESCAPE '\\'", like_operand(b.bind(pattern)))
            } else {
                // Candidates from the vocabulary (see `vocab`), then the exact check on each.
                let tris = crate::vocab::query_trigrams(&n);
                let candidates = if tris.is_empty() {
                    format!(
                        "SELECT v.norm FROM str_vocab v WHERE v.rtype = {} AND v.param = {} \
                         AND v.norm LIKE {} ESCAPE '\\'",
                        b.bind(rtype),
                        b.bind(code),
                        like_operand(b.bind(pattern.clone()))
                    )
                } else {
                    let each = tris
                        .iter()
                        .map(|t| {
                            format!(
                                "SELECT t.norm FROM str_trigram t WHERE t.rtype = {} AND t.param = {} AND t.tri = {}",
                                b.bind(rtype),
                                b.bind(code),
                                b.bind(t.clone())
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" INTERSECT ");
                    // Values too long for trigrams are candidates of every search (`vocab::LONG_VALUE`).
                    format!(
                        "{each} UNION SELECT t.norm FROM str_trigram t WHERE t.rtype = {} AND t.param = {} \
                         AND t.tri = {}",
                        b.bind(rtype),
                        b.bind(code),
                        b.bind(crate::vocab::LONG_VALUE)
                    )
                };
                format!(
                    "(i.norm IN ({candidates}) AND i.norm LIKE {} ESCAPE '\\')",
                    like_operand(b.bind(pattern))
                )
            }
        }
        Some(m) => {
            return Err(format!(
                "modificateur :{m} non pris en charge pour une chaîne"
            ));
        }
    })
}

/// For a name-like string parameter searched by prefix (the default) or `:contains`, the query that lists the
/// distinct values matching it from the vocabulary (`vocab`): a few thousand at most, however many resources
/// hold them. `None` for other parameters and modifiers.
fn vocabulary_values(
    rtype: &str,
    code: &str,
    modifier: Option<&str>,
    v: &str,
) -> Option<ValueList> {
    if !crate::vocab::has_vocabulary(code) {
        return None;
    }
    let n = normalize_string(&unescape(v));
    let own = |t: &str| -> Vec<SqlValue> { vec![rtype.into(), code.into(), t.into()] };
    let (sql, params) = match modifier {
        None => {
            let mut params = own(&n);
            params.push(prefix_upper_bound(&n).into());
            (
                "SELECT v.norm FROM str_vocab v WHERE v.rtype = ? AND v.param = ? AND v.norm >= ? \
                 AND v.norm < ?"
                    .to_string(),
                params,
            )
        }
        Some("contains") => {
            let pattern = format!("%{}%", like_escape(&n));
            let tris = crate::vocab::query_trigrams(&n);
            if tris.is_empty() {
                (
                    "SELECT v.norm FROM str_vocab v WHERE v.rtype = ? AND v.param = ? \
                     AND v.norm LIKE CAST(? AS TEXT) ESCAPE '\\'"
                        .to_string(),
                    own(&pattern),
                )
            } else {
                let mut params = Vec::new();
                let each: Vec<&str> = tris
                    .iter()
                    .map(|t| {
                        params.extend(own(t));
                        "SELECT t.norm FROM str_trigram t WHERE t.rtype = ? AND t.param = ? AND t.tri = ?"
                    })
                    .collect();
                // Values too long for trigrams are candidates of every search (`vocab::LONG_VALUE`).
                params.extend(own(crate::vocab::LONG_VALUE));
                params.push(pattern.into());
                (
                    format!(
                        "SELECT c.norm FROM ({} UNION SELECT t.norm FROM str_trigram t WHERE t.rtype = ? \
                         AND t.param = ? AND t.tri = ?) c WHERE c.norm LIKE CAST(? AS TEXT) ESCAPE '\\'",
                        each.join(" INTERSECT ")
                    ),
                    params,
                )
            }
        }
        _ => return None,
    };
    Some(ValueList {
        sql,
        params,
        table: "idx_string",
        column: "norm",
        rtype: rtype.to_string(),
        param: code.to_string(),
    })
}

fn token_predicate(
    b: &mut Builder,
    v: &str,
    sys_col: &str,
    code_col: &str,
) -> Result<String, String> {
    let (system, code) = split_token(v);
    Ok(match (system, code) {
        (None, Some(c)) => format!("{code_col} = {}", b.bind(c)),
        (Some(s), Some(c)) if s.is_empty() => {
            format!("({code_col} = {} AND {sys_col} IS NULL)", b.bind(c))
        }
        (Some(s), Some(c)) => format!("({code_col} = {} AND {sys_col} = {})", b.bind(c), b.bind(s)),
        (Some(s), None) if !s.is_empty() => format!("{sys_col} = {}", b.bind(s)),
        _ => return Err("jeton vide".into()),
    })
}

/// Parses a reference search value into (type, id) or a URL.
fn reference_predicate(
    b: &mut Builder,
    p: &SearchParam,
    modifier: Option<&str>,
    v: &str,
) -> Result<String, String> {
    let v = unescape(v);
    let type_mod = match modifier {
        None => None,
        Some(m) if registry().is_resource_type(m) => Some(m.to_string()),
        Some(m) => {
            return Err(format!(
                "modificateur :{m} non pris en charge pour une référence"
            ));
        }
    };
    // Canonical or external URL.
    if v.contains("://") || v.starts_with("urn:") {
        if let Some((t, id)) = local_type_id(&v) {
            // Stored either as a local reference (Type/id) or as the URL itself (canonicals).
            let url = v.split('|').next().unwrap_or(&v).to_string();
            return Ok(format!(
                "(i.url = {} OR (i.tid = {} AND i.ttype = {}))",
                b.bind(url),
                b.bind(id),
                b.bind(t)
            ));
        }
        let url = v.split('|').next().unwrap_or(&v).to_string();
        return Ok(format!("i.url = {}", b.bind(url)));
    }
    let segs: Vec<&str> = v.split('/').collect();
    let (t, id) = match segs.as_slice() {
        // A bare id on a parameter that can only hold one type of reference names a resource of that type
        // (`patient=123` is `patient=Patient/123`): the condition then has one value on every index column before
        // `rid`, and a page walks the index in resource order instead of counting every entry.
        [id] => (type_mod.or_else(|| only_target(p)), (*id).to_string()),
        [t, id] | [t, id, "_history", _] => {
            if !registry().is_resource_type(t) {
                return Err(format!("type de ressource inconnu : {t}"));
            }
            (Some((*t).to_string()), (*id).to_string())
        }
        _ => return Err("référence invalide (attendu Type/id ou id)".into()),
    };
    if !socle_fhir::is_valid_id(&id) {
        return Err(format!("identifiant invalide : {id}"));
    }
    // A type outside the parameter's declared targets is not an error: data in the wild (and the official
    // examples) reference other types, and such a search simply matches what is there.
    Ok(match t {
        Some(t) => format!("(i.tid = {} AND i.ttype = {})", b.bind(id), b.bind(t)),
        None => format!("i.tid = {}", b.bind(id)),
    })
}

/// The one type of resource a reference parameter can hold for its resource type: its only declared target,
/// or the type its expression keeps (`DocumentReference.subject.where(resolve() is Patient)`: R4 declares
/// Patient and Group as the targets of `patient`, but that expression keeps Patients only).
fn only_target(p: &SearchParam) -> Option<String> {
    if let [only] = p.targets.as_slice() {
        return Some(only.clone());
    }
    let src = p.expression.as_ref()?.source();
    let mut kept = src.split("resolve() is ").skip(1);
    let t: String = kept
        .next()?
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    let single_branch = kept.next().is_none() && !src.contains('|');
    (single_branch && registry().is_resource_type(&t)).then_some(t)
}

/// `http://host/base/Type/id` → (Type, id) when the last two segments look like a local reference.
fn local_type_id(url: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = url.trim_end_matches('/').rsplit('/').collect();
    let (t, id) = match segs.as_slice() {
        [_, "_history", id, t, ..] => (*t, *id),
        [id, t, ..] => (*t, *id),
        _ => return None,
    };
    if registry().is_resource_type(t) && socle_fhir::is_valid_id(id) {
        Some((t.to_string(), id.to_string()))
    } else {
        None
    }
}

/// Range semantics of FHIR date search: the resource value is the range [lo_col, hi_col], the parameter value
/// [plo, phi].
fn date_predicate(
    b: &mut Builder,
    prefix: Prefix,
    lo: &str,
    hi: &str,
    plo: i64,
    phi: i64,
) -> String {
    match prefix {
        // `lo <= phi` follows from `hi <= phi` (lo ≤ hi) but bounds the range scan of the value index, which
        // starts with `lo`: without it an early date scanned every later one.
        Prefix::Eq => {
            let (a, z, z2) = (b.bind(plo), b.bind(phi), b.bind(phi));
            format!("({lo} >= {a} AND {lo} <= {z} AND {hi} <= {z2})")
        }
        Prefix::Ne => format!("NOT ({lo} >= {} AND {hi} <= {})", b.bind(plo), b.bind(phi)),
        Prefix::Gt => format!("{hi} > {}", b.bind(phi)),
        Prefix::Lt => format!("{lo} < {}", b.bind(plo)),
        Prefix::Ge => format!(
            "({hi} > {} OR ({lo} >= {} AND {hi} <= {}))",
            b.bind(phi),
            b.bind(plo),
            b.bind(phi)
        ),
        Prefix::Le => format!(
            "({lo} < {} OR ({lo} >= {} AND {hi} <= {}))",
            b.bind(plo),
            b.bind(plo),
            b.bind(phi)
        ),
        Prefix::Sa => format!("{lo} > {}", b.bind(phi)),
        Prefix::Eb => format!("{hi} < {}", b.bind(plo)),
        Prefix::Ap => {
            // Approximately: within 10 % of the distance between the value and now, at least a day.
            let now = crate::now_ms();
            let gap = ((now - plo).abs() / 10).max(86_400_000);
            format!(
                "({lo} <= {} AND {hi} >= {})",
                b.bind(phi.saturating_add(gap)),
                b.bind(plo.saturating_sub(gap))
            )
        }
    }
}

fn number_predicate(
    b: &mut Builder,
    prefix: Prefix,
    col: &str,
    pv: f64,
    plo: f64,
    phi: f64,
) -> String {
    number_predicate_eps(b, prefix, col, pv, plo, phi, 0.0)
}

/// [`number_predicate`] over a computed value (`col` carries a rounding error up to `eps`): comparisons give
/// the benefit of the doubt to the value as written.
fn number_predicate_eps(
    b: &mut Builder,
    prefix: Prefix,
    col: &str,
    pv: f64,
    plo: f64,
    phi: f64,
    eps: f64,
) -> String {
    // A value given with more significant digits than a double holds: its precision range collapses to the
    // value itself (`lo == hi`), and the half-open interval would match nothing; it is then the value, closed.
    let (lo, hi, upper) = if phi > plo {
        (plo - eps, phi - eps, "<")
    } else {
        (plo - eps, phi + eps, "<=")
    };
    match prefix {
        Prefix::Eq => format!("({col} >= {} AND {col} {upper} {})", b.bind(lo), b.bind(hi)),
        Prefix::Ne => format!(
            "NOT ({col} >= {} AND {col} {upper} {})",
            b.bind(lo),
            b.bind(hi)
        ),
        Prefix::Gt | Prefix::Sa => format!("{col} > {}", b.bind(pv + eps)),
        Prefix::Lt | Prefix::Eb => format!("{col} < {}", b.bind(pv - eps)),
        Prefix::Ge => format!("{col} >= {}", b.bind(pv - eps)),
        Prefix::Le => format!("{col} <= {}", b.bind(pv + eps)),
        Prefix::Ap => {
            let d = (pv * 0.1).abs() + eps;
            format!(
                "({col} >= {} AND {col} <= {})",
                b.bind(pv - d),
                b.bind(pv + d)
            )
        }
    }
}

fn quantity_predicate(b: &mut Builder, v: &str) -> Result<String, String> {
    let parts = split_escaped(v, '|');
    let (prefix, num) = split_prefix(&parts[0]);
    let (pv, plo, phi) = number_range(num).ok_or("nombre invalide")?;
    let mut pred = number_predicate(b, prefix, "i.value", pv, plo, phi);
    let system = parts.get(1).map(|s| unescape(s)).filter(|s| !s.is_empty());
    let code = parts.get(2).map(|s| unescape(s)).filter(|s| !s.is_empty());
    if parts.len() > 3 {
        return Err("quantité invalide (attendu [préfixe]nombre|système|code)".into());
    }
    if let Some(s) = system {
        pred = format!("{pred} AND i.system = {}", b.bind(s));
    }
    if let Some(c) = code {
        pred = format!(
            "{pred} AND (i.code = {} OR i.unit = {})",
            b.bind(c.clone()),
            b.bind(c)
        );
    }
    Ok(format!("({pred})"))
}

fn composite_predicate(b: &mut Builder, p: &SearchParam, v: &str) -> Result<String, String> {
    let parts = split_escaped(v, '$');
    if parts.len() != 2 || p.components.len() < 2 {
        return Err("valeur composite invalide (attendu a$b)".into());
    }
    let first = token_predicate(b, &parts[0], "i.c1sys", "i.c1code")?;
    let second = match p.components[1].kind {
        ParamType::Token => token_predicate(b, &parts[1], "i.c2sys", "i.c2code")?,
        ParamType::String => {
            let n = normalize_string(&unescape(&parts[1]));
            let lo = b.bind(n.clone());
            let hi = b.bind(prefix_upper_bound(&n));
            format!("(i.c2code >= {lo} AND i.c2code < {hi})")
        }
        ParamType::Quantity | ParamType::Number => {
            let q = split_escaped(&parts[1], '|');
            let (prefix, num) = split_prefix(&q[0]);
            let (pv, plo, phi) = number_range(num).ok_or("nombre invalide")?;
            // The index keeps the value's precision range (`c2lo`..`c2hi`, centred on the value): compare the
            // value itself, not the low end of its range (`$lt120` must not match 120).
            let eps = pv.abs().max(1.0) * 1e-9;
            let mut pred =
                number_predicate_eps(b, prefix, "((i.c2lo + i.c2hi) / 2)", pv, plo, phi, eps);
            if let Some(s) = q.get(1).map(|s| unescape(s)).filter(|s| !s.is_empty()) {
                pred = format!("{pred} AND i.c2sys = {}", b.bind(s));
            }
            if let Some(c) = q.get(2).map(|s| unescape(s)).filter(|s| !s.is_empty()) {
                pred = format!("{pred} AND i.c2code = {}", b.bind(c));
            }
            format!("({pred})")
        }
        ParamType::Date => {
            let (prefix, rest) = split_prefix(&parts[1]);
            let (plo, phi) = parse_date_range(rest).ok_or("date invalide")?;
            date_predicate(b, prefix, "i.c2lo", "i.c2hi", plo, phi)
        }
        ParamType::Reference => format!(
            "i.c2code LIKE {} ESCAPE '\\'",
            like_operand(b.bind(format!("%/{}", like_escape(&unescape(&parts[1])))))
        ),
        _ => return Err("composant non pris en charge".into()),
    };
    Ok(format!("({first} AND {second})"))
}

fn chain_condition(
    b: &mut Builder,
    rtype: &str,
    alias: &str,
    head: &str,
    tail: &str,
    value: &str,
    depth: usize,
) -> Result<String, SearchError> {
    let invalid = |m: &str| SearchError::Invalid(format!("{head}.{tail}"), m.to_string());
    let (code, type_mod) = match head.split_once(':') {
        Some((c, t)) => (c, Some(t)),
        None => (head, None),
    };
    let p = registry()
        .param(rtype, code)
        .ok_or_else(|| SearchError::Unknown(rtype.to_string(), code.to_string()))?;
    if p.kind != ParamType::Reference {
        return Err(invalid("le chaînage exige un paramètre de référence"));
    }
    let targets: Vec<String> = match type_mod {
        Some(t) => {
            if !registry().is_resource_type(t) {
                return Err(invalid("type cible inconnu"));
            }
            vec![t.to_string()]
        }
        None => p
            .targets
            .iter()
            .filter(|t| {
                registry()
                    .param(t, tail.split([':', '.']).next().unwrap_or(""))
                    .is_some()
                    || tail.starts_with('_')
            })
            .cloned()
            .collect(),
    };
    if targets.is_empty() {
        return Err(invalid("aucune cible possible ne connaît ce paramètre"));
    }
    let mut ors = Vec::new();
    for t in &targets {
        let inner_alias = b.next_alias();
        let mut inner = param_condition(b, t, &inner_alias, tail, value, depth + 1)?
            .unwrap_or_else(|| "1 = 1".into());
        for label in b.hidden.clone() {
            if let Some(c) =
                param_condition(b, t, &inner_alias, "_security:not", &label, depth + 1)?
            {
                inner = format!("{inner} AND {c}");
            }
        }
        // Each target type repeats the inner condition: a chain over types that are themselves chained, with a
        // long list of values, would otherwise build gigabytes of SQL.
        if b.params.len() > MAX_BOUND_VALUES {
            return Err(SearchError::TooCostly(format!(
                "{head}.{tail} : plus de {MAX_BOUND_VALUES} valeurs liées"
            )));
        }
        ors.push(format!(
            "(i.tid IN (SELECT {inner_alias}.id FROM resources {inner_alias} WHERE {inner} AND {inner_alias}.rtype = {} AND {inner_alias}.deleted = 0) AND i.ttype = {})",
            b.bind(t.clone()),
            b.bind(t.clone())
        ));
    }
    let ors = ors.join(" OR ");
    Ok(format!(
        "{alias}.rid IN (SELECT i.rid FROM idx_ref i WHERE ({ors}) AND i.rtype = {} AND {})",
        b.bind(rtype),
        stored_param(b, "i", p)
    ))
}

/// `_has:Observation:patient:code=1234` — resources referenced by an Observation (through `patient`) that
/// matches `code=1234`.
fn has_condition(
    b: &mut Builder,
    rtype: &str,
    alias: &str,
    rest: &str,
    value: &str,
    depth: usize,
) -> Result<String, SearchError> {
    let invalid = |m: &str| SearchError::Invalid(format!("_has:{rest}"), m.to_string());
    let mut parts = rest.splitn(3, ':');
    let (src, refp, inner_name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(s), Some(r), Some(n)) if !s.is_empty() && !r.is_empty() && !n.is_empty() => (s, r, n),
        _ => return Err(invalid("attendu _has:Type:référence:paramètre")),
    };
    if !registry().is_resource_type(src) {
        return Err(invalid("type de ressource inconnu"));
    }
    let refd = match registry().param(src, refp) {
        Some(p) if p.kind == ParamType::Reference => p,
        _ => return Err(invalid("paramètre de référence inconnu")),
    };
    if inner_name.starts_with("_has:") {
        return Err(invalid("un seul niveau de _has est pris en charge"));
    }
    let inner_alias = b.next_alias();
    let inner = param_condition(b, src, &inner_alias, inner_name, value, depth + 1)?
        .unwrap_or_else(|| "1 = 1".into());
    Ok(format!(
        "{alias}.id IN (SELECT h.tid FROM idx_ref h WHERE h.rid IN (SELECT {inner_alias}.rid FROM resources {inner_alias} WHERE {inner} AND {inner_alias}.rtype = {} AND {inner_alias}.deleted = 0) AND h.rtype = {} AND {} AND h.ttype = {})",
        b.bind(src),
        b.bind(src),
        stored_param(b, "h", refd),
        b.bind(rtype)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_ids_take_the_only_target_type() {
        let probe = |param: &str, v: &str| {
            let q = parse("DocumentReference", &[(param.into(), v.into())], true).unwrap();
            q.probes[0].walks_in_order()
        };
        // `patient` targets Patient only: `patient=p1` is `patient=Patient/p1`, walked in resource order.
        assert!(probe("patient", "p1"));
        assert!(probe("patient", "Patient/p1"));
        // `subject` targets several types: a bare id may name any of them.
        assert!(!probe("subject", "p1"));
        assert!(probe("subject", "Patient/p1"));
        // `DeviceUseStatement.subject` keeps Groups too under `patient`: a bare id stays untyped there.
        let q = parse(
            "DeviceUseStatement",
            &[("patient".into(), "p1".into())],
            true,
        )
        .unwrap();
        assert!(!q.probes[0].walks_in_order());
    }

    #[test]
    fn per_row_probes_reach_rows_by_key() {
        // Every value index leads with `rtype`: the per-row form must not let SQLite use one (see `exists`).
        let q = parse(
            "DocumentReference",
            &[
                ("status".into(), "current".into()),
                ("patient".into(), "Patient/p1".into()),
                ("type".into(), "http://loinc.org|11488-4".into()),
            ],
            true,
        )
        .unwrap();
        assert_eq!(q.probes.len(), 3);
        for p in &q.probes {
            let e = p.exists();
            assert!(e.contains("i.rid = r.rid"), "{e}");
            assert!(
                e.contains("+i.rtype = ?") && !e.contains(" i.rtype = ?"),
                "{e}"
            );
            // No column but the key is left for an index to use.
            for col in ["param", "code", "tid", "ttype", "system"] {
                assert!(!e.contains(&format!(" i.{col}")), "{e}");
                assert!(!e.contains(&format!("(i.{col}")), "{e}");
            }
        }
        assert_eq!(
            unindexable(
                "(i.code = ? AND i.system = ?) AND i.rtype = ? AND i.rid > 3 AND lower(i.norm) = 'é'"
            ),
            "(+i.code = ? AND +i.system = ?) AND +i.rtype = ? AND i.rid > 3 AND lower(+i.norm) = 'é'"
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(split_or("a,b\\,c"), vec!["a", "b,c"]);
        assert_eq!(
            split_token("http://x|1"),
            (Some("http://x".into()), Some("1".into()))
        );
        assert_eq!(split_token("|1"), (Some("".into()), Some("1".into())));
        assert_eq!(split_token("1"), (None, Some("1".into())));
        assert_eq!(split_token("a\\|b"), (None, Some("a|b".into())));
    }

    #[test]
    fn sort_cursor_round_trip() {
        let c = SortCursor {
            forward: false,
            values: vec![
                SqlValue::Text("a,b\"é".into()),
                SqlValue::Null,
                SqlValue::Int(-5),
                SqlValue::Real(100.0),
                SqlValue::Real(0.1),
            ],
            rid: 42,
        };
        let e = c.encode();
        let v = e.strip_prefix("sortbefore.").unwrap();
        assert_eq!(SortCursor::decode(false, v), Some(c));
        assert_eq!(SortCursor::decode(true, "[1,"), None);
        assert_eq!(SortCursor::decode(true, "[]"), None);
    }

    #[test]
    fn prefixes() {
        assert_eq!(split_prefix("ge2010"), (Prefix::Ge, "2010"));
        assert_eq!(split_prefix("2010"), (Prefix::Eq, "2010"));
        assert_eq!(split_prefix("é"), (Prefix::Eq, "é"));
    }
}
