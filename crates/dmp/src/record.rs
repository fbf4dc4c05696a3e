//! The DMP record of each patient (created at the first feed, objection, closure), the visibility rules a feed
//! sets, and the durable queue of feed events — all written in the feed's own transaction.
//!
//! Tables (same database as the resources):
//! - `dmp_records (patient, state, created, changed, reason)`: `open`, `closed` (by the patient or their
//!   representative: no feed is accepted any more, stored documents are kept for the legal retention and stay
//!   readable by the patient), `opposed` (the patient objected to the record: no feed is accepted; a record
//!   with documents cannot be opposed, it is closed instead).
//! - `dmp_feed_events (id, created, patient, kind, submission, documents, author, state, attempts,
//!   lease_until, consumer)`: one per accepted feed, `pending` until a consumer acknowledges it. A consumer
//!   claims events with a lease; an event whose lease ran out is handed out again (at-least-once delivery).

use std::sync::Arc;

use serde_json::{Value, json};
use socle_policy::rules::RuleStore;
use socle_store::bundle::TxView;
use socle_store::sql::Row;
use socle_store::{Dialect, RepoError, SqlConn, SqlValue, Store};

use crate::DmpError;
use crate::submission::{Layout, OID_VISIBILITY};

/// Creates the DMP tables if needed.
pub fn open(store: &Arc<dyn Store>) -> Result<(), DmpError> {
    store.write(&mut |c| {
        c.execute(
            "CREATE TABLE IF NOT EXISTS dmp_records (patient TEXT PRIMARY KEY, state TEXT NOT NULL, \
             created BIGINT NOT NULL, changed BIGINT NOT NULL, reason TEXT NOT NULL)",
            &[],
        )?;
        c.execute(
            "CREATE TABLE IF NOT EXISTS dmp_feed_events (id TEXT PRIMARY KEY, created BIGINT NOT NULL, \
             patient TEXT NOT NULL, kind TEXT NOT NULL, submission TEXT NOT NULL, documents TEXT NOT NULL, \
             author TEXT NOT NULL, state TEXT NOT NULL, attempts BIGINT NOT NULL, lease_until BIGINT NOT NULL, \
             consumer TEXT NOT NULL)",
            &[],
        )?;
        c.execute(
            "CREATE INDEX IF NOT EXISTS dmp_feed_events_pending ON dmp_feed_events (state, lease_until, id)",
            &[],
        )?;
        Ok(())
    })?;
    Ok(())
}

/// A record's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordState {
    pub state: String,
    pub created: i64,
    pub changed: i64,
    pub reason: String,
}

fn text(r: &Row, i: usize) -> String {
    r.get(i)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

fn int(r: &Row, i: usize) -> i64 {
    r.get(i).and_then(|v| v.as_i64()).unwrap_or(0)
}

/// The record of a patient, if one exists.
pub fn state_in(
    c: &mut dyn SqlConn,
    patient: &str,
) -> Result<Option<RecordState>, socle_store::StoreError> {
    Ok(c.query(
        "SELECT state, created, changed, reason FROM dmp_records WHERE patient = ?",
        &[patient.into()],
    )?
    .first()
    .map(|r| RecordState {
        state: text(r, 0),
        created: int(r, 1),
        changed: int(r, 2),
        reason: text(r, 3),
    }))
}

/// Reads a record's state.
pub fn state(store: &Arc<dyn Store>, patient: &str) -> Result<Option<RecordState>, DmpError> {
    let mut out = None;
    store.read(&mut |c| {
        out = state_in(c, patient)?;
        Ok(())
    })?;
    Ok(out)
}

/// What a patient (or an operator acting for them) does to their record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordAction {
    /// Objection to the record's existence (only before any document; afterwards it is a closure).
    Object,
    /// Closure: no more feeds; documents kept.
    Close,
    /// Reopening a closed or opposed record.
    Reopen,
}

/// Applies `action` to the record of `patient` (`documents`: how many current documents the patient has) and
/// returns the new state.
pub fn apply(
    store: &Arc<dyn Store>,
    patient: &str,
    action: RecordAction,
    documents: u64,
    reason: &str,
) -> Result<RecordState, DmpError> {
    let now = socle_store::now_ms();
    let mut out: Option<Result<RecordState, DmpError>> = None;
    store.write(&mut |c| {
        let current = state_in(c, patient)?;
        let next = match (action, current.as_ref().map(|s| s.state.as_str())) {
            (RecordAction::Object, Some("open")) if documents > 0 => Err(DmpError::Operation(
                "le DMP contient déjà des documents : l'opposition n'est plus possible, le patient peut le fermer".into(),
            )),
            (RecordAction::Object, Some("closed")) if documents > 0 => Err(DmpError::Operation(
                "le DMP fermé contient des documents : l'opposition n'est plus possible, il reste fermé".into(),
            )),
            (RecordAction::Object, Some("opposed")) => Err(DmpError::Operation("opposition déjà enregistrée".into())),
            (RecordAction::Object, _) => Ok("opposed"),
            (RecordAction::Close, Some("open")) => Ok("closed"),
            (RecordAction::Close, Some(s)) => Err(DmpError::Operation(format!("DMP déjà {}", label(s)))),
            (RecordAction::Close, None) => Err(DmpError::Operation("aucun DMP à fermer pour ce patient".into())),
            (RecordAction::Reopen, Some("closed" | "opposed")) => Ok("open"),
            (RecordAction::Reopen, _) => Err(DmpError::Operation("le DMP n'est ni fermé ni en opposition".into())),
        };
        match next {
            Ok(s) => {
                let created = current.as_ref().map_or(now, |c| c.created);
                c.execute("DELETE FROM dmp_records WHERE patient = ?", &[patient.into()])?;
                c.execute(
                    "INSERT INTO dmp_records (patient, state, created, changed, reason) VALUES (?, ?, ?, ?, ?)",
                    &[patient.into(), s.into(), created.into(), now.into(), reason.into()],
                )?;
                out = Some(Ok(RecordState { state: s.into(), created, changed: now, reason: reason.into() }));
            }
            Err(e) => out = Some(Err(e)),
        }
        Ok(())
    })?;
    out.unwrap_or_else(|| Err(DmpError::Storage("aucune réponse".into())))
}

/// French label of a state.
pub fn label(state: &str) -> &'static str {
    match state {
        "open" => "ouvert",
        "closed" => "fermé",
        "opposed" => "en opposition",
        _ => "inconnu",
    }
}

/// Why a record in state `state` takes no feed (`None`: it takes them).
pub fn refusal(state: &str) -> Option<DmpError> {
    let reason = match state {
        "open" => return None,
        "closed" => "le patient a fermé son DMP : aucun nouveau document n'est accepté",
        _ => "le patient s'est opposé à la création de son DMP : aucun document n'est accepté",
    };
    Some(DmpError::Record {
        state: label(state).into(),
        reason: reason.into(),
    })
}

/// What the feed hook needs besides the Bundle's responses.
#[derive(Debug, Clone)]
pub struct FeedPlan {
    pub patient: String,
    /// The submission set's uniqueId as a token search value (`system|value`).
    pub submission_token: String,
    /// Per document: its uniqueId token and its security labels (system OID, code).
    pub documents: Vec<(String, Vec<(String, String)>)>,
    pub author: String,
    pub layout: Layout,
}

/// The id of the resource a transaction-response entry created.
fn created_id(resp: &Value) -> Option<String> {
    let u = resp["fullUrl"].as_str()?;
    u.rsplit('/').next().map(str::to_string)
}

/// A stable 64-bit key for a PostgreSQL advisory lock.
fn lock_key(s: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The feed's work inside its transaction: the record (created at the first feed; refused when closed or
/// opposed), duplicates (a document or submission set already in the DMP), the visibility rules from the
/// security labels, and the feed event. On a refusal the reason is left in `failure` and the transaction
/// rolled back.
pub fn commit_in(
    view: &mut TxView<'_>,
    plan: &FeedPlan,
    responses: &[Value],
    failure: &mut Option<DmpError>,
) -> Result<(), RepoError> {
    // Run again when a group commit is undone: a refusal of an earlier run no longer holds.
    *failure = None;
    let refuse = |failure: &mut Option<DmpError>, e: DmpError| {
        let msg = e.to_string();
        *failure = Some(e);
        Err(RepoError::Conflict(msg))
    };
    let now = socle_store::now_ms();
    if view.conn().dialect() == Dialect::Postgres {
        // Feeds of one patient one after another: the duplicate checks below then see every committed feed.
        view.conn().query(
            "SELECT 1 FROM (SELECT pg_advisory_xact_lock(?)) l",
            &[lock_key(&plan.patient).into()],
        )?;
    }
    let st = state_in(view.conn(), &plan.patient)?;
    match st.as_ref().map(|s| s.state.as_str()) {
        None => {
            view.conn().execute(
                "INSERT INTO dmp_records (patient, state, created, changed, reason) VALUES (?, 'open', ?, ?, ?)",
                &[
                    plan.patient.as_str().into(),
                    now.into(),
                    now.into(),
                    "créé au premier dépôt".into(),
                ],
            )?;
        }
        Some(s) => {
            if let Some(e) = refusal(s) {
                return refuse(failure, e);
            }
        }
    }
    for (token, _) in &plan.documents {
        let ids = view.match_ids("DocumentReference", &[("identifier".into(), token.clone())])?;
        if ids.len() > 1 {
            return refuse(
                failure,
                DmpError::Duplicate {
                    what: "le document".into(),
                    unique_id: token.clone(),
                },
            );
        }
    }
    let ids = view.match_ids(
        "List",
        &[("identifier".into(), plan.submission_token.clone())],
    )?;
    if ids.len() > 1 {
        return refuse(
            failure,
            DmpError::Duplicate {
                what: "le lot de soumission".into(),
                unique_id: plan.submission_token.clone(),
            },
        );
    }
    let mut doc_ids = Vec::new();
    for ((_, labels), pos) in plan.documents.iter().zip(&plan.layout.documents) {
        let Some(id) = responses.get(*pos).and_then(created_id) else {
            return Err(RepoError::Invalid(
                "réponse de transaction incomplète".into(),
            ));
        };
        let target = format!("DocumentReference/{id}");
        for (system, code) in labels {
            let kind = match (system.as_str(), code.as_str()) {
                (OID_VISIBILITY, "INVISIBLE_PATIENT") => "hide-patient",
                (OID_VISIBILITY, "INVISIBLE_REPRESENTANTS_LEGAUX") => "hide-representative",
                (OID_VISIBILITY, "MASQUE_PS") => "mask",
                _ => continue,
            };
            RuleStore::insert_in(
                view.conn(),
                &plan.patient,
                kind,
                "",
                &target,
                "étiquette du dépôt",
                None,
            )?;
        }
        doc_ids.push(id);
    }
    let submission = responses
        .get(plan.layout.list)
        .and_then(created_id)
        .unwrap_or_default();
    let kind = if plan.layout.superseded.is_empty() {
        "feed"
    } else {
        "replace"
    };
    view.conn().execute(
        "INSERT INTO dmp_feed_events (id, created, patient, kind, submission, documents, author, state, attempts, \
         lease_until, consumer) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0, '')",
        &[
            socle_store::repo::new_id().into(),
            now.into(),
            plan.patient.as_str().into(),
            kind.into(),
            submission.into(),
            doc_ids.join(",").into(),
            plan.author.as_str().into(),
        ],
    )?;
    Ok(())
}

/// A feed event as consumers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    pub id: String,
    pub created: i64,
    pub patient: String,
    pub kind: String,
    pub submission: String,
    pub documents: Vec<String>,
    pub author: String,
    pub attempts: i64,
}

impl FeedEvent {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "created": self.created, "patient": self.patient, "kind": self.kind,
               "submission": self.submission, "documents": self.documents, "author": self.author,
               "attempts": self.attempts})
    }
}

const EVENT_COLUMNS: &str = "id, created, patient, kind, submission, documents, author, attempts";

fn event_of(r: &Row) -> FeedEvent {
    FeedEvent {
        id: text(r, 0),
        created: int(r, 1),
        patient: text(r, 2),
        kind: text(r, 3),
        submission: text(r, 4),
        documents: text(r, 5)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        author: text(r, 6),
        attempts: int(r, 7),
    }
}

/// Hands out up to `n` pending events to `consumer` for `lease_ms` (events whose lease ran out included), oldest
/// first. Each must be acknowledged ([`ack`]) or it comes back when its lease ends.
pub fn claim(
    store: &Arc<dyn Store>,
    consumer: &str,
    n: i64,
    lease_ms: i64,
) -> Result<Vec<FeedEvent>, DmpError> {
    let now = socle_store::now_ms();
    let mut out = Vec::new();
    store.write(&mut |c| {
        out.clear();
        let rows = c.query(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM dmp_feed_events WHERE state = 'pending' AND lease_until <= ? \
                 ORDER BY id LIMIT ?"
            ),
            &[now.into(), n.into()],
        )?;
        for r in &rows {
            let mut e = event_of(r);
            let taken = c.execute(
                "UPDATE dmp_feed_events SET lease_until = ?, consumer = ?, attempts = attempts + 1 \
                 WHERE id = ? AND state = 'pending' AND lease_until <= ?",
                &[
                    (now + lease_ms).into(),
                    consumer.into(),
                    e.id.as_str().into(),
                    now.into(),
                ],
            )?;
            if taken == 1 {
                e.attempts += 1;
                out.push(e);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Acknowledges an event (done); `false` if it was not pending.
pub fn ack(store: &Arc<dyn Store>, id: &str) -> Result<bool, DmpError> {
    let mut n = 0;
    store.write(&mut |c| {
        n = c.execute(
            "UPDATE dmp_feed_events SET state = 'done' WHERE id = ? AND state = 'pending'",
            &[id.into()],
        )?;
        Ok(())
    })?;
    Ok(n == 1)
}

/// The pending events (oldest first, at most `n`), leased or not.
pub fn pending(store: &Arc<dyn Store>, n: i64) -> Result<Vec<FeedEvent>, DmpError> {
    let mut out = Vec::new();
    store.read(&mut |c| {
        out = c
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM dmp_feed_events WHERE state = 'pending' ORDER BY id LIMIT ?"
                ),
                &[SqlValue::from(n)],
            )?
            .iter()
            .map(event_of)
            .collect();
        Ok(())
    })?;
    Ok(out)
}

/// What a sweep of the blob store did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Blobs some version of a stored `Binary` names (kept).
    pub referenced: u64,
    /// Unreferenced blobs old enough to go: removed (or, in a dry run, that would be).
    pub removed: u64,
    pub removed_bytes: u64,
}

/// Removes the blobs no version of any stored `Binary` names and last written before `before`: the bytes of
/// feeds refused after their blobs were written, or interrupted by a crash. Every version counts (a replaced or
/// deleted document's bytes stay readable in its history). Reads every Binary version once (small: the bytes are
/// not in the database).
pub fn sweep(
    store: &Arc<dyn Store>,
    blobs: &dyn socle_store::blob::BlobStore,
    before: std::time::SystemTime,
    dry_run: bool,
) -> Result<Sweep, DmpError> {
    // Listed first: a blob written after this point is younger than `before` and not a candidate anyway.
    let candidates = blobs
        .list_older_than(before)
        .map_err(|e| DmpError::Storage(e.to_string()))?;
    let mut named = std::collections::HashSet::new();
    store.read(&mut |c| {
        named.clear();
        for r in c.query(
            "SELECT content FROM resource_versions WHERE rtype = 'Binary'",
            &[],
        )? {
            let Some(bytes) = r.into_iter().next().and_then(|v| v.into_bytes()) else {
                continue;
            };
            if let Some((sha, _)) = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| crate::blob_of(&v))
            {
                named.insert(sha);
            }
        }
        Ok(())
    })?;
    let mut out = Sweep {
        referenced: named.len() as u64,
        ..Sweep::default()
    };
    for (name, size) in candidates {
        if named.contains(&name) {
            continue;
        }
        if !dry_run {
            blobs
                .remove(&name)
                .map_err(|e| DmpError::Storage(e.to_string()))?;
        }
        out.removed += 1;
        out.removed_bytes += size;
    }
    Ok(out)
}
