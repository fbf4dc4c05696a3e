//! The DMP record of each patient (created at the first feed, objection, closure), the visibility rules a feed
//! sets, and the durable queue of feed events — all written in the feed's own transaction.
//!
//! Tables (same database as the resources):
//! - `dmp_records (patient, state, created, changed, reason)`: `open`, `closed` (by the patient or their
//!   representative: no feed is accepted any more, stored documents are kept for the legal retention and stay
//!   readable by the patient), `opposed` (the patient objected to the record: no feed is accepted; a record
//!   with documents cannot be opposed, it is closed instead).
//! - `dmp_feed_events (id, created, patient, kind, submission, documents, author, state, …)`: the log, one
//!   event per accepted feed (`state` `pending`: deliverable; `done` only for events a store of before session
//!   27 saw acknowledged, when one shared queue served every consumer).
//! - `dmp_event_consumers (name, created)`: the services subscribed to the log (the MSSanté copy, the
//!   notifications of Mon Espace Santé…); each gets every event once subscribed.
//! - `dmp_event_deliveries (consumer, event, lease_until, attempts)`: what each consumer has still to process,
//!   written in the feed's transaction for every subscribed consumer. A consumer claims its events with a lease
//!   and acknowledges each (its row goes); an event whose lease ran out is handed out again (at-least-once
//!   delivery). One consumer's progress never affects another's.

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
        c.execute(
            "CREATE TABLE IF NOT EXISTS dmp_event_consumers (name TEXT PRIMARY KEY, created BIGINT NOT NULL)",
            &[],
        )?;
        c.execute(
            "CREATE TABLE IF NOT EXISTS dmp_event_deliveries (consumer TEXT NOT NULL, event TEXT NOT NULL, \
             lease_until BIGINT NOT NULL, attempts BIGINT NOT NULL, PRIMARY KEY (consumer, event))",
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
                // The access policy follows, in the same transaction: a closed or opposed record's documents are
                // out of professionals' reach until it reopens.
                let (closed, target) = (socle_policy::rules::RECORD_CLOSED, socle_policy::rules::RECORD_TARGET);
                RuleStore::revoke_target_in(c, patient, closed, target)?;
                if s != "open" {
                    RuleStore::insert_in(c, patient, closed, "", target, s, None)?;
                }
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
/// A value as a FHIR search parameter's value: `\`, `,`, `$` and `|` escaped.
fn token_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        if matches!(ch, '\\' | ',' | '$' | '|') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

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
    // A unique id names one document whatever its writing: with or without `urn:oid:`, under any system.
    let same_id = |view: &mut TxView<'_>, rtype: &str, value: &str| -> Result<usize, RepoError> {
        let mut ids = view.match_ids(rtype, &[("identifier".into(), token_escape(value))])?;
        if !value.starts_with("urn:") {
            ids.extend(view.match_ids(
                rtype,
                &[(
                    "identifier".into(),
                    token_escape(&format!("urn:oid:{value}")),
                )],
            )?);
        }
        ids.sort();
        ids.dedup();
        Ok(ids.len())
    };
    for (token, _) in &plan.documents {
        if same_id(view, "DocumentReference", token)? > 1 {
            return refuse(
                failure,
                DmpError::Duplicate {
                    what: "le document".into(),
                    unique_id: token.clone(),
                },
            );
        }
    }
    if same_id(view, "List", &plan.submission_token)? > 1 {
        return refuse(
            failure,
            DmpError::Duplicate {
                what: "le lot de soumission".into(),
                unique_id: plan.submission_token.clone(),
            },
        );
    }
    let submission = responses
        .get(plan.layout.list)
        .and_then(created_id)
        .unwrap_or_default();
    let mut doc_ids = Vec::new();
    for (k, ((_, labels), pos)) in plan
        .documents
        .iter()
        .zip(&plan.layout.documents)
        .enumerate()
    {
        let Some(id) = responses.get(*pos).and_then(created_id) else {
            return Err(RepoError::Invalid(
                "réponse de transaction incomplète".into(),
            ));
        };
        let target = format!("DocumentReference/{id}");
        // What is hidden from the patient or their representatives is the document, and what would name it:
        // its Binary, and the submission set that lists it (their reads, searches and trail entries).
        let binary = plan
            .layout
            .binaries
            .get(k)
            .copied()
            .flatten()
            .and_then(|p| responses.get(p))
            .and_then(created_id)
            .map(|b| format!("Binary/{b}"));
        for (system, code) in labels {
            let kind = match (system.as_str(), code.as_str()) {
                (OID_VISIBILITY, "INVISIBLE_PATIENT") => "hide-patient",
                (OID_VISIBILITY, "INVISIBLE_REPRESENTANTS_LEGAUX") => "hide-representative",
                (OID_VISIBILITY, "MASQUE_PS") => "mask",
                _ => continue,
            };
            let mut targets = vec![target.clone()];
            if kind != "mask" {
                targets.extend(binary.clone());
                if !submission.is_empty() {
                    targets.push(format!("List/{submission}"));
                }
            }
            for t in &targets {
                if !RuleStore::has_target_in(view.conn(), &plan.patient, kind, t)? {
                    RuleStore::insert_in(
                        view.conn(),
                        &plan.patient,
                        kind,
                        "",
                        t,
                        "étiquette du dépôt",
                        None,
                    )?;
                }
            }
        }
        doc_ids.push(id);
    }
    let kind = if plan.layout.superseded.is_empty() {
        "feed"
    } else {
        "replace"
    };
    let event = socle_store::repo::new_id();
    view.conn().execute(
        "INSERT INTO dmp_feed_events (id, created, patient, kind, submission, documents, author, state, attempts, \
         lease_until, consumer) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0, '')",
        &[
            event.as_str().into(),
            now.into(),
            plan.patient.as_str().into(),
            kind.into(),
            submission.into(),
            doc_ids.join(",").into(),
            plan.author.as_str().into(),
        ],
    )?;
    view.conn().execute(
        "INSERT INTO dmp_event_deliveries (consumer, event, lease_until, attempts) \
         SELECT name, ?, 0, 0 FROM dmp_event_consumers",
        &[event.as_str().into()],
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

/// The event's columns (`e`); the queries add the delivery's attempts last (see [`event_of`]).
const EVENT_COLUMNS_E: &str =
    "e.id, e.created, e.patient, e.kind, e.submission, e.documents, e.author";

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

/// Subscribes `consumer` to the feed events: from then on each event is kept for it until it acknowledges it.
/// `from_start`: the events already in the log (those not acknowledged under the single queue of earlier
/// stores) are kept for it too. `false` if it was already subscribed (nothing changes).
pub fn subscribe(
    store: &Arc<dyn Store>,
    consumer: &str,
    from_start: bool,
) -> Result<bool, DmpError> {
    if consumer.is_empty() || consumer.len() > 100 || consumer.chars().any(char::is_control) {
        return Err(DmpError::Operation(
            "nom de consommateur vide, trop long ou illisible".into(),
        ));
    }
    let now = socle_store::now_ms();
    let mut added = false;
    store.write(&mut |c| {
        added = !subscribed(c, consumer)?;
        if !added {
            return Ok(());
        }
        c.execute(
            "INSERT INTO dmp_event_consumers (name, created) VALUES (?, ?)",
            &[consumer.into(), now.into()],
        )?;
        if from_start {
            c.execute(
                "INSERT INTO dmp_event_deliveries (consumer, event, lease_until, attempts) \
                 SELECT ?, id, 0, 0 FROM dmp_feed_events WHERE state = 'pending'",
                &[consumer.into()],
            )?;
        }
        Ok(())
    })?;
    Ok(added)
}

/// Unsubscribes `consumer`, forgetting what it had still to process. `false` if it was not subscribed.
pub fn unsubscribe(store: &Arc<dyn Store>, consumer: &str) -> Result<bool, DmpError> {
    let mut n = 0;
    store.write(&mut |c| {
        n = c.execute(
            "DELETE FROM dmp_event_consumers WHERE name = ?",
            &[consumer.into()],
        )?;
        c.execute(
            "DELETE FROM dmp_event_deliveries WHERE consumer = ?",
            &[consumer.into()],
        )?;
        Ok(())
    })?;
    Ok(n == 1)
}

/// The subscribed consumers and how many events each has still to process.
pub fn consumers(store: &Arc<dyn Store>) -> Result<Vec<(String, i64)>, DmpError> {
    let mut out = Vec::new();
    store.read(&mut |c| {
        out = c
            .query(
                "SELECT k.name, (SELECT COUNT(*) FROM dmp_event_deliveries d WHERE d.consumer = k.name) \
                 FROM dmp_event_consumers k ORDER BY k.name",
                &[],
            )?
            .iter()
            .map(|r| (text(r, 0), int(r, 1)))
            .collect();
        Ok(())
    })?;
    Ok(out)
}

/// Whether `consumer` is subscribed.
fn subscribed(c: &mut dyn SqlConn, consumer: &str) -> Result<bool, socle_store::StoreError> {
    Ok(!c
        .query(
            "SELECT 1 FROM dmp_event_consumers WHERE name = ?",
            &[consumer.into()],
        )?
        .is_empty())
}

fn unknown_consumer(consumer: &str) -> DmpError {
    DmpError::Operation(format!(
        "consommateur {consumer:?} inconnu : l'abonner d'abord (socle dmp subscribe {consumer})"
    ))
}

/// Hands out up to `n` of `consumer`'s events for `lease_ms` (those whose lease ran out included), oldest first.
/// Each must be acknowledged ([`ack`]) or it comes back when its lease ends.
pub fn claim(
    store: &Arc<dyn Store>,
    consumer: &str,
    n: i64,
    lease_ms: i64,
) -> Result<Vec<FeedEvent>, DmpError> {
    let now = socle_store::now_ms();
    let mut out = Vec::new();
    let mut known = true;
    store.write(&mut |c| {
        out.clear();
        known = subscribed(c, consumer)?;
        if !known {
            return Ok(());
        }
        let rows = c.query(
            &format!(
                "SELECT {EVENT_COLUMNS_E}, d.attempts FROM dmp_event_deliveries d \
                 JOIN dmp_feed_events e ON e.id = d.event \
                 WHERE d.consumer = ? AND d.lease_until <= ? ORDER BY d.event LIMIT {n}"
            ),
            &[consumer.into(), now.into()],
        )?;
        for r in &rows {
            let mut e = event_of(r);
            // Taken only if no concurrent claim of the same consumer (several workers) leased it meanwhile.
            let taken = c.execute(
                "UPDATE dmp_event_deliveries SET lease_until = ?, attempts = attempts + 1 \
                 WHERE consumer = ? AND event = ? AND lease_until <= ?",
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
    if !known {
        return Err(unknown_consumer(consumer));
    }
    Ok(out)
}

/// `consumer` acknowledges an event (processed): it is no longer kept for it. `false` if it had not this
/// event to process (already acknowledged, or never its).
pub fn ack(store: &Arc<dyn Store>, consumer: &str, id: &str) -> Result<bool, DmpError> {
    let mut n = 0;
    store.write(&mut |c| {
        n = c.execute(
            "DELETE FROM dmp_event_deliveries WHERE consumer = ? AND event = ?",
            &[consumer.into(), id.into()],
        )?;
        Ok(())
    })?;
    Ok(n == 1)
}

/// The events some consumer has still to process (oldest first, at most `n`; only `consumer`'s when given),
/// leased or not, each with the consumers that await it (`awaiting`).
pub fn pending(
    store: &Arc<dyn Store>,
    consumer: Option<&str>,
    n: i64,
) -> Result<Vec<(FeedEvent, Vec<String>)>, DmpError> {
    let mut out: Vec<(FeedEvent, Vec<String>)> = Vec::new();
    let mut known = true;
    store.read(&mut |c| {
        out.clear();
        if let Some(k) = consumer {
            known = subscribed(c, k)?;
        }
        let (filter, params): (&str, Vec<SqlValue>) = match consumer {
            Some(k) => ("WHERE d.consumer = ?", vec![k.into()]),
            None => ("", vec![]),
        };
        // The first `n` events, then who awaits each.
        let rows = c.query(
            &format!(
                "SELECT {EVENT_COLUMNS_E}, 0 FROM dmp_feed_events e WHERE e.id IN \
                 (SELECT DISTINCT d.event FROM dmp_event_deliveries d {filter} ORDER BY d.event LIMIT {n}) \
                 ORDER BY e.id"
            ),
            &params,
        )?;
        for r in &rows {
            let e = event_of(r);
            let awaiting: Vec<String> = match consumer {
                Some(k) => vec![k.to_string()],
                None => c
                    .query(
                        "SELECT consumer FROM dmp_event_deliveries WHERE event = ? ORDER BY consumer",
                        &[e.id.as_str().into()],
                    )?
                    .iter()
                    .map(|r| text(r, 0))
                    .collect(),
            };
            out.push((e, awaiting));
        }
        Ok(())
    })?;
    if !known {
        return Err(unknown_consumer(consumer.unwrap_or_default()));
    }
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
