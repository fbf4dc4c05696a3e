//! The audit trail: one append-only, hash-chained record per interaction, written in the same transaction as
//! the data it concerns, readable as FHIR `AuditEvent` (shaped after IHE BALP).
//!
//! Chain: `hash = SHA-256(prev_hash ‖ canonical record)`, with a gapless sequence and a head row
//! (`audit_head`) updated in the same transaction, so an altered, inserted or deleted record — including the
//! last ones — breaks verification. Owns: the record format and its verification; nothing else.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::StoreError;
use crate::sql::{SqlConn, SqlValue};

/// Hash that precedes the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record, as given by the interaction layer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditRecord {
    /// Milliseconds since the epoch.
    pub recorded: i64,
    pub principal: String,
    /// The FHIR interaction: `create`, `read`, `vread`, `update`, `delete`, `search-type`, `history-instance`,
    /// `transaction`, `batch`, `capabilities`…
    pub action: String,
    pub rtype: Option<String>,
    pub id: Option<String>,
    pub version: Option<i64>,
    /// The patient (compartment key) the data belongs to, when known.
    pub patient: Option<String>,
    /// `success`, or the HTTP status of the failure (`404`, `412`…).
    pub outcome: String,
    pub client: Option<String>,
    /// Free detail without health data: the search parameters' names, the bundle size…
    pub detail: Option<String>,
}

/// A stored record with its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAudit {
    pub seq: i64,
    /// In the access log (its own chain, apart from the write records kept with the data): its id is
    /// `log-<seq>`.
    pub log: bool,
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
}

fn field(h: &mut Sha256, s: Option<&str>) {
    match s {
        Some(s) => {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
        None => h.update(u64::MAX.to_be_bytes()),
    }
}

/// The chain hash of a record.
pub fn chain_hash(seq: i64, r: &AuditRecord, prev_hash: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"socle-audit-v1");
    h.update(prev_hash.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(r.recorded.to_be_bytes());
    field(&mut h, Some(&r.principal));
    field(&mut h, Some(&r.action));
    field(&mut h, r.rtype.as_deref());
    field(&mut h, r.id.as_deref());
    field(&mut h, r.version.map(|v| v.to_string()).as_deref());
    field(&mut h, r.patient.as_deref());
    field(&mut h, Some(&r.outcome));
    field(&mut h, r.client.as_deref());
    field(&mut h, r.detail.as_deref());
    hex::encode(h.finalize())
}

/// Appends records at the end of the chain, inside the caller's transaction.
pub fn append(c: &mut dyn SqlConn, records: &[AuditRecord]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let lock = match c.dialect() {
        crate::Dialect::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
        crate::Dialect::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
    };
    let head = c
        .query_one(lock, &[])?
        .ok_or_else(|| StoreError::Corrupt("tête de la chaîne d'audit absente".into()))?;
    let mut it = head.into_iter();
    let mut seq = it.next().and_then(|v| v.as_i64()).unwrap_or_default();
    let mut prev = it
        .next()
        .and_then(SqlValue::into_string)
        .unwrap_or_default();
    use crate::sql::ColType::{Int, Text};
    const COLUMNS: &[(&str, crate::sql::ColType)] = &[
        ("seq", Int),
        ("recorded", Int),
        ("principal", Text),
        ("action", Text),
        ("rtype", Text),
        ("rid", Text),
        ("version", Int),
        ("patient", Text),
        ("outcome", Text),
        ("client", Text),
        ("detail", Text),
        ("prev_hash", Text),
        ("hash", Text),
    ];
    // In chunks: a read-audit batch holds hundreds of records, and building all their rows at once made the
    // allocator fault fresh (huge) pages in at every batch.
    const CHUNK: usize = 256;
    let mut rows = Vec::with_capacity(records.len().min(CHUNK));
    for r in records {
        seq += 1;
        let hash = chain_hash(seq, r, &prev);
        rows.push(vec![
            seq.into(),
            r.recorded.into(),
            r.principal.as_str().into(),
            r.action.as_str().into(),
            r.rtype.clone().into(),
            r.id.clone().into(),
            r.version.map_or(SqlValue::Null, SqlValue::Int),
            r.patient.clone().into(),
            r.outcome.as_str().into(),
            r.client.clone().into(),
            r.detail.clone().into(),
            prev.as_str().into(),
            hash.as_str().into(),
        ]);
        prev = hash;
        if rows.len() == CHUNK {
            c.insert_rows("audit_log", COLUMNS, &rows)?;
            rows.clear();
        }
    }
    if !rows.is_empty() {
        c.insert_rows("audit_log", COLUMNS, &rows)?;
    }
    c.execute(
        "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1",
        &[seq.into(), prev.into()],
    )?;
    Ok(())
}

const AUDIT_COLS: &str = "seq, recorded, principal, action, rtype, rid, version, patient, outcome, client, detail, prev_hash, hash";

fn from_row(r: Vec<SqlValue>) -> StoredAudit {
    let mut it = r.into_iter();
    let mut s = || it.next().unwrap_or(SqlValue::Null);
    let seq = s().as_i64().unwrap_or_default();
    let record = AuditRecord {
        recorded: s().as_i64().unwrap_or_default(),
        principal: s().into_string().unwrap_or_default(),
        action: s().into_string().unwrap_or_default(),
        rtype: s().into_string(),
        id: s().into_string(),
        version: s().as_i64(),
        patient: s().into_string(),
        outcome: s().into_string().unwrap_or_default(),
        client: s().into_string(),
        detail: s().into_string(),
    };
    StoredAudit {
        seq,
        log: false,
        record,
        prev_hash: s().into_string().unwrap_or_default(),
        hash: s().into_string().unwrap_or_default(),
    }
}

impl StoredAudit {
    /// The record's id: its sequence number, prefixed with `log-` in the access log.
    pub fn id(&self) -> String {
        if self.log {
            format!("{LOG_PREFIX}{}", self.seq)
        } else {
            self.seq.to_string()
        }
    }
}

/// The id prefix of the access log's records.
pub const LOG_PREFIX: &str = "log-";

/// The most recent records, newest first: all, or those concerning one patient. `log`: the access log's
/// layout (patients indexed later, see [`crate::schema::access_log_ddl`]).
pub fn recent(
    c: &mut dyn SqlConn,
    patient: Option<&str>,
    limit: i64,
    log: bool,
) -> Result<Vec<StoredAudit>, StoreError> {
    recent_before(c, patient, limit, log, i64::MAX, Window::default())
}

/// A period of the trail: records whose time (`recorded`, milliseconds since the epoch) is within `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: i64,
    pub to: i64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            from: i64::MIN,
            to: i64::MAX,
        }
    }
}

impl Window {
    fn is_all(&self) -> bool {
        *self == Window::default()
    }
}

/// [`recent`], among the records numbered below `before` (the next page of a trail, newest first) and recorded
/// within `window`.
pub fn recent_before(
    c: &mut dyn SqlConn,
    patient: Option<&str>,
    limit: i64,
    log: bool,
    before: i64,
    window: Window,
) -> Result<Vec<StoredAudit>, StoreError> {
    match patient {
        Some(p) if log => return list_for_patient_in_log(c, p, limit, before, window),
        Some(p) => return list_for_patient(c, p, limit, before, window),
        None => {}
    }
    let max = head_seq(c)?.min(before.saturating_sub(1));
    if !window.is_all() {
        let sql = format!(
            "SELECT {AUDIT_COLS} FROM audit_log WHERE seq <= ? AND recorded >= ? AND recorded <= ? \
             ORDER BY seq DESC LIMIT {limit}"
        );
        return Ok(c
            .query(&sql, &[max.into(), window.from.into(), window.to.into()])?
            .into_iter()
            .map(from_row)
            .collect());
    }
    let mut v = list(c, (max - limit).max(0), limit.min(max).max(0))?;
    v.reverse();
    Ok(v)
}

/// Reads records in chain order, `after` a sequence number, at most `limit`.
pub fn list(c: &mut dyn SqlConn, after: i64, limit: i64) -> Result<Vec<StoredAudit>, StoreError> {
    let sql =
        format!("SELECT {AUDIT_COLS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT {limit}");
    Ok(c.query(&sql, &[after.into()])?
        .into_iter()
        .map(from_row)
        .collect())
}

/// Records concerning one patient, newest first.
pub fn list_for_patient(
    c: &mut dyn SqlConn,
    patient: &str,
    limit: i64,
    before: i64,
    window: Window,
) -> Result<Vec<StoredAudit>, StoreError> {
    let sql = format!(
        "SELECT {AUDIT_COLS} FROM audit_log WHERE patient = ? AND seq < ? AND recorded >= ? AND recorded <= ? \
         ORDER BY seq DESC LIMIT {limit}"
    );
    Ok(c.query(
        &sql,
        &[
            patient.into(),
            before.into(),
            window.from.into(),
            window.to.into(),
        ],
    )?
    .into_iter()
    .map(from_row)
    .collect())
}

/// Records concerning one patient in the access log, newest first: those not indexed yet (a scan of the
/// log's end), then those of the patient index.
fn list_for_patient_in_log(
    c: &mut dyn SqlConn,
    patient: &str,
    limit: i64,
    before: i64,
    window: Window,
) -> Result<Vec<StoredAudit>, StoreError> {
    let upto = indexed_upto(c)?;
    let sql = format!(
        "SELECT {AUDIT_COLS} FROM audit_log WHERE seq > ? AND seq < ? AND patient = ? \
         AND recorded >= ? AND recorded <= ? ORDER BY seq DESC LIMIT {limit}"
    );
    let mut out: Vec<StoredAudit> = c
        .query(
            &sql,
            &[
                upto.into(),
                before.into(),
                patient.into(),
                window.from.into(),
                window.to.into(),
            ],
        )?
        .into_iter()
        .map(from_row)
        .collect();
    let rest = limit - out.len() as i64;
    if rest > 0 {
        let sql = format!(
            "SELECT {AUDIT_COLS} FROM audit_log WHERE seq IN \
             (SELECT seq FROM audit_patient WHERE patient = ? AND seq <= ? ORDER BY seq DESC LIMIT {rest}) \
             ORDER BY seq DESC"
        );
        let upto = upto.min(before.saturating_sub(1));
        if !window.is_all() {
            // The patient index holds no times: the log's rows are read in sequence order and filtered.
            let sql = format!(
                "SELECT {AUDIT_COLS} FROM audit_log WHERE seq IN \
                 (SELECT seq FROM audit_patient WHERE patient = ? AND seq <= ?) \
                 AND recorded >= ? AND recorded <= ? ORDER BY seq DESC LIMIT {rest}"
            );
            out.extend(
                c.query(
                    &sql,
                    &[
                        patient.into(),
                        upto.into(),
                        window.from.into(),
                        window.to.into(),
                    ],
                )?
                .into_iter()
                .map(from_row),
            );
            return Ok(out);
        }
        out.extend(
            c.query(&sql, &[patient.into(), upto.into()])?
                .into_iter()
                .map(from_row),
        );
    }
    Ok(out)
}

/// The sequence number of the chain's last record.
fn head_seq(c: &mut dyn SqlConn) -> Result<i64, StoreError> {
    Ok(c.query_one("SELECT seq FROM audit_head WHERE id = 1", &[])?
        .and_then(|r| r.into_iter().next())
        .and_then(|v| v.as_i64())
        .unwrap_or(0))
}

fn indexed_upto(c: &mut dyn SqlConn) -> Result<i64, StoreError> {
    Ok(
        c.query_one("SELECT upto FROM audit_indexed WHERE id = 1", &[])?
            .and_then(|r| r.into_iter().next())
            .and_then(|v| v.as_i64())
            .unwrap_or(0),
    )
}

/// Indexes by patient up to `max` records of the access log not indexed yet, in patient order (neighbouring
/// index entries share their pages); answers how many records it covered.
pub fn index_log(c: &mut dyn SqlConn, max: i64) -> Result<i64, StoreError> {
    let upto = indexed_upto(c)?;
    let head = head_seq(c)?;
    let end = head.min(upto + max);
    if end <= upto {
        return Ok(0);
    }
    let rows: Vec<Vec<SqlValue>> = c
        .query(
            "SELECT patient, seq FROM audit_log WHERE seq > ? AND seq <= ? AND patient IS NOT NULL \
             ORDER BY patient, seq",
            &[upto.into(), end.into()],
        )?
        .into_iter()
        .collect();
    use crate::sql::ColType::{Int, Text};
    for chunk in rows.chunks(256) {
        c.insert_rows("audit_patient", &[("patient", Text), ("seq", Int)], chunk)?;
    }
    c.execute(
        "UPDATE audit_indexed SET upto = ? WHERE id = 1",
        &[end.into()],
    )?;
    Ok(end - upto)
}

/// Records of the access log not indexed by patient yet.
pub fn log_pending(c: &mut dyn SqlConn) -> Result<i64, StoreError> {
    let upto = indexed_upto(c)?;
    let head = head_seq(c)?;
    Ok(head - upto)
}

/// One record by sequence number.
pub fn get(c: &mut dyn SqlConn, seq: i64) -> Result<Option<StoredAudit>, StoreError> {
    let sql = format!("SELECT {AUDIT_COLS} FROM audit_log WHERE seq = ?");
    Ok(c.query_one(&sql, &[seq.into()])?.map(from_row))
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    pub records: i64,
    /// Each problem found, with the id of the record concerned (its sequence number; `log-<seq>` in the
    /// access log).
    pub problems: Vec<(String, String)>,
}

/// Recomputes the whole chain and compares it with the head.
pub fn verify(c: &mut dyn SqlConn) -> Result<Verification, StoreError> {
    let mut problems: Vec<(i64, String)> = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 1;
    let mut after = 0;
    let mut count = 0;
    loop {
        let batch = list(c, after, 10_000)?;
        if batch.is_empty() {
            break;
        }
        for a in batch {
            count += 1;
            if a.seq != expected_seq {
                problems.push((
                    expected_seq,
                    format!("enregistrements {expected_seq} à {} absents", a.seq - 1),
                ));
            }
            if a.prev_hash != prev {
                problems.push((
                    a.seq,
                    "chaînage rompu : empreinte précédente différente".into(),
                ));
            }
            let h = chain_hash(a.seq, &a.record, &a.prev_hash);
            if h != a.hash {
                problems.push((
                    a.seq,
                    "contenu modifié : empreinte recalculée différente".into(),
                ));
            }
            prev = a.hash.clone();
            expected_seq = a.seq + 1;
            after = a.seq;
        }
    }
    let head = c.query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])?;
    match head {
        Some(r) => {
            let mut it = r.into_iter();
            let hseq = it.next().and_then(|v| v.as_i64()).unwrap_or_default();
            let hhash = it
                .next()
                .and_then(SqlValue::into_string)
                .unwrap_or_default();
            if hseq != after {
                problems.push((
                    hseq,
                    format!(
                        "la tête annonce {hseq} enregistrements, {after} trouvés (fin supprimée)"
                    ),
                ));
            } else if hhash != prev {
                problems.push((
                    hseq,
                    "la tête de chaîne ne correspond pas au dernier enregistrement".into(),
                ));
            }
        }
        None => problems.push((0, "tête de chaîne absente".into())),
    }
    Ok(Verification {
        records: count,
        problems: problems
            .into_iter()
            .map(|(seq, p)| (seq.to_string(), p))
            .collect(),
    })
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The record as a FHIR `AuditEvent`, shaped after IHE Basic Audit Log Patterns (BALP).
pub fn to_audit_event(a: &StoredAudit) -> Value {
    let r = &a.record;
    let (subtype_code, action_code) = match r.action.as_str() {
        "create" => ("create", "C"),
        "read" => ("read", "R"),
        "vread" => ("vread", "R"),
        "update" => ("update", "U"),
        "delete" => ("delete", "D"),
        "search-type" | "search-system" => ("search", "E"),
        "history-instance" | "history-type" | "history-system" => ("history", "R"),
        "transaction" => ("transaction", "E"),
        "batch" => ("batch", "E"),
        other => (other, "E"),
    };
    // The BALP profile of the interaction: creations, reads, updates, deletions and queries (searches,
    // histories) each have theirs; other operations (transactions, the services' own) are RESTful events.
    let profile = match (r.action.as_str(), action_code) {
        (_, "C") => "IHE.BasicAudit.Create",
        ("history-instance" | "history-type" | "history-system", _) => "IHE.BasicAudit.Query",
        (_, "R") => "IHE.BasicAudit.Read",
        (_, "U") => "IHE.BasicAudit.Update",
        (_, "D") => "IHE.BasicAudit.Delete",
        ("search-type" | "search-system", _) => "IHE.BasicAudit.Query",
        _ => "IHE.BasicAudit.Rest",
    };
    let outcome = if r.outcome == "success" {
        "0"
    } else if r.outcome.starts_with('5') {
        "8"
    } else {
        "4"
    };
    let mut ev = json!({
        "resourceType": "AuditEvent",
        "id": a.id(),
        "meta": {"profile": [format!("https://profiles.ihe.net/ITI/BALP/StructureDefinition/{profile}")]},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": subtype_code}],
        "action": action_code,
        "recorded": iso(r.recorded),
        "outcome": outcome,
        "agent": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "who": {"identifier": {"value": r.principal}},
            "requestor": true,
            "network": r.client.as_ref().map(|c| json!({"address": c, "type": "2"})).unwrap_or(json!({"type": "2"})),
        }, {
            // The server that answered (BALP: the destination of the request).
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110152",
                                 "display": "Destination Role ID"}]},
            "who": {"display": "Socle"},
            "requestor": false,
        }],
        "source": {"observer": {"display": "Socle"}, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        "extension": [{"url": "https://socle.example/fhir/StructureDefinition/audit-chain", "extension": [
            {"url": "sequence", "valueInteger": a.seq},
            {"url": "previousHash", "valueString": a.prev_hash},
            {"url": "hash", "valueString": a.hash},
        ]}],
    });
    if r.outcome != "success" {
        ev["outcomeDesc"] = json!(r.outcome);
    }
    let mut entities = Vec::new();
    if let (Some(t), Some(id)) = (&r.rtype, &r.id) {
        let reference = match r.version {
            Some(v) => format!("{t}/{id}/_history/{v}"),
            None => format!("{t}/{id}"),
        };
        entities.push(json!({"what": {"reference": reference},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"}}));
    }
    if let Some(p) = &r.patient {
        entities.push(json!({"what": {"reference": format!("Patient/{p}")},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}}));
    }
    if let Some(d) = &r.detail {
        if let Some(policy) = d.strip_prefix("policy=") {
            // An access-policy decision: readable by the patient (reason code, and for break-glass the stated
            // motive), and the emergency purpose of use.
            // `policy=<code>[ <note>][; motif=<motive>][; search=<parameter names>]`.
            let mut parts = policy.split("; ");
            let head = parts.next().unwrap_or_default();
            let (code, note) = head
                .split_once(' ')
                .map_or((head, None), |(c, n)| (c, Some(n.trim())));
            let mut detail = vec![json!({"type": "decision", "valueString": code})];
            if let Some(n) = note {
                detail.push(json!({"type": "note", "valueString": n}));
            }
            for part in parts {
                if let Some(m) = part.strip_prefix("motif=") {
                    detail.push(json!({"type": "motif", "valueString": m}));
                } else if let Some(q) = part.strip_prefix("search=") {
                    detail.push(json!({"type": "recherche", "valueString": q}));
                }
            }
            entities.push(json!({"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                "name": "politique d'accès", "detail": detail}));
            if code == "break-glass" {
                ev["purposeOfEvent"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                    "code": "ETREAT", "display": "emergency treatment"}]}]);
            }
        } else {
            entities.push(json!({"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                "query": base64_encode(d.as_bytes())}));
        }
    }
    if !entities.is_empty() {
        ev["entity"] = Value::Array(entities);
    }
    ev
}

fn base64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"M"), "TQ==");
    }

    #[test]
    fn hash_changes_with_any_field() {
        let r = AuditRecord {
            principal: "p".into(),
            action: "read".into(),
            outcome: "success".into(),
            ..Default::default()
        };
        let h = chain_hash(1, &r, GENESIS);
        let mut r2 = r.clone();
        r2.patient = Some("x".into());
        assert_ne!(h, chain_hash(1, &r2, GENESIS));
        assert_ne!(h, chain_hash(2, &r, GENESIS));
    }
}
