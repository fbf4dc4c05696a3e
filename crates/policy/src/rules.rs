//! The rules stored per patient, in one table (`policy_rules`) of the same database, and the facts a decision
//! needs, read in one indexed query per decision.
//!
//! | kind | actor | target | detail |
//! |---|---|---|---|
//! | `care` | professional (IDNPS) | | `medecin-traitant`, `equipe-de-soins`, `relation-declaree` |
//! | `block` | professional | | |
//! | `mask` | | `DocumentReference/id` (masked from professionals) | |
//! | `hide-patient` | | `DocumentReference/id` (invisible to the patient until announced) | |
//! | `hide-representative` | | `DocumentReference/id` (invisible to legal representatives) | |
//! | `patient-delegation` | professional | | document types shared, comma-separated (`*`: all) |
//! | `delegation` (patient `*`) | delegate (a secretary) | professional delegating | |
//! | `consent` | application (client id) | | no longer set: app consents live in the identity provider |
//! | `record-closed` | | `dmp` | the DMP's state (`closed`, `opposed`): set and lifted by the DMP itself |

use std::sync::Arc;

use socle_store::sql::Row;
use socle_store::{SqlConn, SqlValue, Store, StoreError};

pub const MEDECIN_TRAITANT: &str = "medecin-traitant";
pub const CARE_KINDS: &[&str] = &[MEDECIN_TRAITANT, "equipe-de-soins", "relation-declaree"];
pub const KINDS: &[&str] = &[
    "care",
    "block",
    "mask",
    "hide-patient",
    "hide-representative",
    "patient-delegation",
    "delegation",
    "consent",
];

/// What the stored rules say about one (patient, actor, resource).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The care relationship (its kind), direct or through a delegating professional.
    pub care: Option<String>,
    pub blocked: bool,
    pub masked: bool,
    pub hidden_from_patient: bool,
    pub hidden_from_representative: bool,
    /// The patient's DMP is closed (or opposed): its documents are out of professionals' reach.
    pub record_closed: bool,
    /// Document types the patient shared with this professional by delegation.
    pub patient_delegation: Option<Vec<String>>,
}

/// A rule to store: (patient, kind, actor, target, detail, expires in ms).
pub type NewRule = (String, String, String, String, String, Option<i64>);

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRule {
    pub id: String,
    pub patient: String,
    pub kind: String,
    pub actor: String,
    pub target: String,
    pub detail: String,
    /// Milliseconds since the epoch.
    pub expires: Option<i64>,
    pub created: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct RuleStore {
    store: Arc<dyn Store>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn text(r: &Row, i: usize) -> String {
    r.get(i)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

const SELECT: &str =
    "SELECT id, patient, kind, actor, target, detail, expires, created FROM policy_rules";

fn rule_of(r: &Row) -> StoredRule {
    StoredRule {
        id: text(r, 0),
        patient: text(r, 1),
        kind: text(r, 2),
        actor: text(r, 3),
        target: text(r, 4),
        detail: text(r, 5),
        expires: r.get(6).and_then(|v| v.as_i64()),
        created: r.get(7).and_then(|v| v.as_i64()).unwrap_or(0),
    }
}

impl RuleStore {
    pub fn open(store: Arc<dyn Store>) -> Result<RuleStore, StoreError> {
        store.write(&mut |c| {
            c.execute(
                "CREATE TABLE IF NOT EXISTS policy_rules (id TEXT PRIMARY KEY, patient TEXT NOT NULL, kind TEXT NOT NULL, \
                 actor TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL, expires BIGINT, created BIGINT NOT NULL, \
                 revoked BIGINT)",
                &[],
            )?;
            c.execute(
                "CREATE INDEX IF NOT EXISTS policy_rules_actor ON policy_rules (patient, actor, kind)",
                &[],
            )?;
            c.execute(
                "CREATE INDEX IF NOT EXISTS policy_rules_target ON policy_rules (patient, target, kind)",
                &[],
            )?;
            c.execute(
                "CREATE TABLE IF NOT EXISTS patient_notifications (id TEXT PRIMARY KEY, patient TEXT NOT NULL, \
                 kind TEXT NOT NULL, message TEXT NOT NULL, created BIGINT NOT NULL, seen BIGINT)",
                &[],
            )?;
            c.execute(
                "CREATE INDEX IF NOT EXISTS patient_notifications_patient ON patient_notifications (patient, created)",
                &[],
            )?;
            c.execute(
                "CREATE TABLE IF NOT EXISTS policy_delegation_codes (code_hash TEXT PRIMARY KEY, patient TEXT NOT NULL, \
                 sections TEXT NOT NULL, days BIGINT NOT NULL, expires BIGINT NOT NULL, used_by TEXT)",
                &[],
            )?;
            Ok(())
        })?;
        Ok(RuleStore { store })
    }

    /// Stores a rule; returns its id. The kind and its fields are checked ([`RuleStore::check`]).
    pub fn add(
        &self,
        patient: &str,
        kind: &str,
        actor: &str,
        target: &str,
        detail: &str,
        expires: Option<i64>,
    ) -> Result<String, RuleError> {
        Self::check(kind, patient, actor, target, detail, expires)?;
        let mut id = String::new();
        self.store.write(&mut |c| {
            id = Self::insert_in(c, patient, kind, actor, target, detail, expires)?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Stores a rule inside the caller's transaction (a service recording rules with the data they govern,
    /// e.g. the DMP's visibility labels with the document). The caller checks the rule ([`RuleStore::check`]).
    pub fn insert_in(
        c: &mut dyn SqlConn,
        patient: &str,
        kind: &str,
        actor: &str,
        target: &str,
        detail: &str,
        expires: Option<i64>,
    ) -> Result<String, StoreError> {
        let id = new_id(now_ms());
        c.execute(
            "INSERT INTO policy_rules (id, patient, kind, actor, target, detail, expires, created, revoked) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            &[
                id.as_str().into(),
                patient.into(),
                kind.into(),
                actor.into(),
                target.into(),
                detail.into(),
                expires.into(),
                now_ms().into(),
            ],
        )?;
        Ok(id)
    }

    /// Revokes, inside the caller's transaction, the live rules of `kind` on `target` for this patient (a
    /// document unmasked, announced…); returns how many were live.
    pub fn revoke_target_in(
        c: &mut dyn SqlConn,
        patient: &str,
        kind: &str,
        target: &str,
    ) -> Result<u64, StoreError> {
        c.execute(
            "UPDATE policy_rules SET revoked = ? WHERE patient = ? AND target = ? AND kind = ? AND revoked IS NULL",
            &[now_ms().into(), patient.into(), target.into(), kind.into()],
        )
    }

    /// Whether a live rule of `kind` on `target` exists for this patient.
    pub fn has_target_in(
        c: &mut dyn SqlConn,
        patient: &str,
        kind: &str,
        target: &str,
    ) -> Result<bool, StoreError> {
        Ok(!c
            .query(
                "SELECT 1 FROM policy_rules WHERE patient = ? AND target = ? AND kind = ? AND revoked IS NULL \
                 AND (expires IS NULL OR expires > ?) LIMIT 1",
                &[patient.into(), target.into(), kind.into(), now_ms().into()],
            )?
            .is_empty())
    }

    /// Whether a rule is well formed: a known kind, the fields that kind needs, a known care relationship, an
    /// end date for patient delegations.
    pub fn check(
        kind: &str,
        patient: &str,
        actor: &str,
        target: &str,
        detail: &str,
        expires: Option<i64>,
    ) -> Result<(), RuleError> {
        // Kept among the kinds so that rules stored earlier stay listed and revocable; no longer set.
        if kind == "consent" {
            return Err(RuleError::Invalid(
                "les autorisations données aux applications ne sont pas des règles d'accès : la personne les \
                 accorde sur la page d'autorisation et les gère à /auth/patient/consents"
                    .into(),
            ));
        }
        if !KINDS.contains(&kind) {
            return Err(RuleError::Invalid(format!(
                "type de règle inconnu : « {kind} » (attendu : {})",
                KINDS.join(", ")
            )));
        }
        if patient.is_empty() {
            return Err(RuleError::Invalid("patient absent".into()));
        }
        let needs_actor = matches!(
            kind,
            "care" | "block" | "patient-delegation" | "delegation" | "consent"
        );
        if needs_actor && actor.is_empty() {
            return Err(RuleError::Invalid(format!(
                "la règle {kind} exige un acteur"
            )));
        }
        if matches!(
            kind,
            "mask" | "hide-patient" | "hide-representative" | "delegation"
        ) && target.is_empty()
        {
            return Err(RuleError::Invalid(format!(
                "la règle {kind} exige une cible"
            )));
        }
        // Masks and visibility are about documents: searches decide each document they find, not each resource
        // of other types, so a mask of an Observation would hold for its read and not for a search.
        if matches!(kind, "mask" | "hide-patient" | "hide-representative")
            && target
                .strip_prefix("DocumentReference/")
                .is_none_or(|id| id.is_empty() || id.contains(['/', '?', '#']))
        {
            return Err(RuleError::Invalid(format!(
                "la règle {kind} porte sur un document : cible « DocumentReference/id » attendue, pas « {target} »"
            )));
        }
        if kind == "care" && !CARE_KINDS.contains(&detail) {
            return Err(RuleError::Invalid(format!(
                "relation de soins inconnue : « {detail} » (attendu : {})",
                CARE_KINDS.join(", ")
            )));
        }
        if kind == "patient-delegation" && expires.is_none() {
            return Err(RuleError::Invalid(
                "une délégation du patient a toujours une date de fin".into(),
            ));
        }
        Ok(())
    }

    /// Many rules in one transaction (bulk loads, benchmarks): (patient, kind, actor, target, detail, expires).
    pub fn add_many(&self, rules: &[NewRule]) -> Result<(), RuleError> {
        let now = now_ms();
        let rows: Vec<Vec<SqlValue>> = rules
            .iter()
            .map(|(p, k, a, t, d, e)| {
                vec![
                    new_id(now).into(),
                    p.as_str().into(),
                    k.as_str().into(),
                    a.as_str().into(),
                    t.as_str().into(),
                    d.as_str().into(),
                    (*e).into(),
                    now.into(),
                ]
            })
            .collect();
        self.store.write(&mut |c| {
            c.execute_many(
                "INSERT INTO policy_rules (id, patient, kind, actor, target, detail, expires, created, revoked) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                &rows,
            )
        })?;
        Ok(())
    }

    /// How many synthetic rules ([`synthetic_rules`], patients `syn-…`) are stored: where a further bulk load
    /// continues their sequence.
    pub fn synthetic_count(&self) -> Result<u64, RuleError> {
        let mut rows = Vec::new();
        self.store.read(&mut |c| {
            rows = c.query(
                "SELECT count(*) FROM policy_rules WHERE patient >= 'syn-' AND patient < 'syn.'",
                &[],
            )?;
            Ok(())
        })?;
        let n = rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_i64());
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Revokes a rule of this patient; `false` if there is none live with that id.
    pub fn revoke(&self, patient: &str, id: &str) -> Result<bool, RuleError> {
        let mut n = 0;
        self.store.write(&mut |c| {
            n = c.execute(
                "UPDATE policy_rules SET revoked = ? WHERE id = ? AND patient = ? AND revoked IS NULL",
                &[now_ms().into(), id.into(), patient.into()],
            )?;
            Ok(())
        })?;
        Ok(n > 0)
    }

    /// The live rules of a patient (the patient's own view of them).
    pub fn list(&self, patient: &str) -> Result<Vec<StoredRule>, RuleError> {
        let mut rows = Vec::new();
        self.store.read(&mut |c| {
            rows = c.query(
                &format!("{SELECT} WHERE patient = ? AND revoked IS NULL AND (expires IS NULL OR expires > ?) ORDER BY created"),
                &[patient.into(), now_ms().into()],
            )?;
            Ok(())
        })?;
        Ok(rows.iter().map(rule_of).collect())
    }

    /// A delegation code (MES-6): the patient gives it to a professional, who claims it within 24 hours to read
    /// the chosen sections (see [`crate::sections`]: `*`, named sections, document types) for `days` days.
    /// Returns the code (12 digits).
    pub fn delegation_code(
        &self,
        patient: &str,
        sections: &[String],
        days: i64,
    ) -> Result<String, RuleError> {
        if sections.is_empty() {
            return Err(RuleError::Invalid(
                "rubriques partagées absentes (section : *, documents, mesures, profil-medical, agenda ou un type \
                 de document)"
                    .into(),
            ));
        }
        if let Some(bad) = sections.iter().find(|s| !crate::sections::valid(s)) {
            return Err(RuleError::Invalid(format!(
                "rubrique invalide : « {bad} » (*, documents, mesures, profil-medical, agenda ou un type de document)"
            )));
        }
        if !(1..=90).contains(&days) {
            return Err(RuleError::Invalid(
                "durée de la délégation : de 1 à 90 jours".into(),
            ));
        }
        let mut b = [0u8; 8];
        getrandom_fill(&mut b)?;
        let n = u64::from_be_bytes(b) % 1_000_000_000_000;
        let digits = format!("{n:012}");
        let code = format!("{}-{}-{}", &digits[0..4], &digits[4..8], &digits[8..12]);
        let now = now_ms();
        let row: Vec<SqlValue> = vec![
            code_hash(&code).into(),
            patient.into(),
            sections.join(",").into(),
            days.into(),
            (now + 24 * 3600 * 1000).into(),
        ];
        self.store.write(&mut |c| {
            c.execute(
                "INSERT INTO policy_delegation_codes (code_hash, patient, sections, days, expires, used_by) VALUES (?, ?, ?, ?, ?, NULL)",
                &row,
            )?;
            Ok(())
        })?;
        Ok(code)
    }

    /// A professional claims a delegation code: once, before it expires. Returns (patient, rule id, end ms).
    pub fn claim_delegation(
        &self,
        code: &str,
        idnps: &str,
    ) -> Result<(String, String, i64), RuleError> {
        let now = now_ms();
        let hash = code_hash(code.trim());
        let mut found = None;
        self.store.write(&mut |c| {
            found = None;
            let Some(r) = c.query_one(
                "SELECT patient, sections, days, expires, used_by FROM policy_delegation_codes WHERE code_hash = ?",
                &[hash.as_str().into()],
            )?
            else {
                return Ok(());
            };
            let usable = r.get(4).is_none_or(|v| v.as_str().is_none())
                && r.get(3).and_then(|v| v.as_i64()).unwrap_or(0) > now;
            if usable {
                c.execute(
                    "UPDATE policy_delegation_codes SET used_by = ? WHERE code_hash = ? AND used_by IS NULL",
                    &[idnps.into(), hash.as_str().into()],
                )?;
                found = Some((text(&r, 0), text(&r, 1), r.get(2).and_then(|v| v.as_i64()).unwrap_or(1)));
            }
            Ok(())
        })?;
        let (patient, sections, days) = found.ok_or_else(|| {
            RuleError::Invalid("code de délégation inconnu, expiré ou déjà utilisé".into())
        })?;
        let end = now + days * 24 * 3600 * 1000;
        let id = self.add(
            &patient,
            "patient-delegation",
            idnps,
            "",
            &sections,
            Some(end),
        )?;
        Ok((patient, id, end))
    }

    /// Queues a notification for the patient (Mon Espace Santé shows them), e.g. after a break-glass access.
    pub fn notify(&self, patient: &str, kind: &str, message: &str) -> Result<(), RuleError> {
        let now = now_ms();
        let id = new_id(now);
        self.store.write(&mut |c| {
            c.execute(
                "INSERT INTO patient_notifications (id, patient, kind, message, created, seen) VALUES (?, ?, ?, ?, ?, NULL)",
                &[id.as_str().into(), patient.into(), kind.into(), message.into(), now.into()],
            )?;
            Ok(())
        })?;
        Ok(())
    }

    /// The patient's notifications, newest first: (kind, message, created ms).
    pub fn notifications(&self, patient: &str) -> Result<Vec<(String, String, i64)>, RuleError> {
        let mut rows = Vec::new();
        self.store.read(&mut |c| {
            rows = c.query(
                "SELECT kind, message, created FROM patient_notifications WHERE patient = ? ORDER BY created DESC",
                &[patient.into()],
            )?;
            Ok(())
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    text(r, 0),
                    text(r, 1),
                    r.get(2).and_then(|v| v.as_i64()).unwrap_or(0),
                )
            })
            .collect())
    }

    /// The facts of one decision: the live rules of `patient` about `actor` (and the professionals who
    /// delegated to them) and about `resource`.
    pub fn facts(
        &self,
        patient: &str,
        actor: Option<&str>,
        resource: Option<&str>,
    ) -> Result<Facts, RuleError> {
        let mut facts = Facts::default();
        self.store.read(&mut |c| {
            facts = facts_in(c, patient, actor, resource)?;
            Ok(())
        })?;
        Ok(facts)
    }
}

const LIVE: &str = "revoked IS NULL AND (expires IS NULL OR expires > ?)";

/// The rules one decision needs, as one query: the live rules of the patient (`patient`: a placeholder `?` or an
/// SQL expression) about the actor, about the professionals who delegated to the actor (a secretary acts within
/// their care relationships), and about the resource. Rows: (kind, [`OWN`] / [`DELEGATOR`] / 0 (about the
/// resource), detail).
fn facts_sql(patient: &str) -> String {
    format!(
        "SELECT kind, 1, detail FROM policy_rules WHERE patient = {patient} AND actor = ? AND actor <> '' AND {LIVE} \
         UNION ALL \
         SELECT kind, 2, detail FROM policy_rules WHERE patient = {patient} AND actor IN (\
           SELECT target FROM policy_rules WHERE patient = '*' AND actor = ? AND kind = 'delegation' AND {LIVE}) AND {LIVE} \
         UNION ALL \
         SELECT kind, 0, detail FROM policy_rules WHERE patient = {patient} AND target = ? AND target <> '' AND {LIVE} \
         UNION ALL \
         SELECT kind, 0, detail FROM policy_rules WHERE patient = {patient} AND target = '{RECORD_TARGET}' \
           AND kind = '{RECORD_CLOSED}' AND {LIVE}"
    )
}

/// The rule the DMP sets while a patient's record is closed or opposed (target [`RECORD_TARGET`]): professionals
/// no longer reach its documents.
pub const RECORD_CLOSED: &str = "record-closed";
/// The target of the rules about the DMP record as a whole.
pub const RECORD_TARGET: &str = "dmp";

/// The parameters of [`facts_sql`], in order; `patient` when it is a placeholder.
fn facts_params(patient: Option<&str>, actor: &str, resource: &str) -> Vec<SqlValue> {
    let now = now_ms();
    let p = || patient.map(SqlValue::from);
    let mut v: Vec<SqlValue> = Vec::with_capacity(12);
    v.extend(p());
    v.extend([actor.into(), now.into()]);
    v.extend(p());
    v.extend([actor.into(), now.into(), now.into()]);
    v.extend(p());
    v.extend([resource.into(), now.into()]);
    v.extend(p());
    v.push(now.into());
    v
}

/// A care relationship's strength: its place in `CARE_KINDS` (none: weakest).
fn care_rank(kind: Option<&str>) -> usize {
    kind.and_then(|k| CARE_KINDS.iter().position(|c| *c == k))
        .unwrap_or(CARE_KINDS.len())
}

/// Adds one rule row to the facts.
/// A rule row about the actor themself.
const OWN: i64 = 1;
/// A rule row about a professional who delegated to the actor (a secretary acts for them).
const DELEGATOR: i64 = 2;

/// Adds one rule row to the facts (`whose`: [`OWN`], [`DELEGATOR`], or 0 for a rule about the resource).
fn fold(facts: &mut Facts, kind: &str, whose: i64, detail: String) {
    let own = whose == OWN;
    match kind {
        // The strongest relationship wins, in the order of `CARE_KINDS` (médecin traitant first), whatever
        // the order the rows come in.
        "care" if care_rank(Some(&detail)) < care_rank(facts.care.as_deref()) => {
            facts.care = Some(detail);
        }
        // A block of the professional holds for whoever acts for them (their secretary).
        "block" if own || whose == DELEGATOR => facts.blocked = true,
        "mask" => facts.masked = true,
        "hide-patient" => facts.hidden_from_patient = true,
        "hide-representative" => facts.hidden_from_representative = true,
        RECORD_CLOSED => facts.record_closed = true,
        "patient-delegation" if own => {
            facts
                .patient_delegation
                .get_or_insert_with(Vec::new)
                .extend(detail.split(',').map(|s| s.trim().to_string()));
        }
        _ => {}
    }
}

/// The facts of one decision, read on `c` (the caller's transaction, e.g. the one that read the resource): one
/// statement — the live rules of `patient` about `actor`, about the professionals who delegated to `actor` (a
/// secretary acts within their care relationships), and about `resource`.
pub fn facts_in(
    c: &mut dyn socle_store::SqlConn,
    patient: &str,
    actor: Option<&str>,
    resource: Option<&str>,
) -> Result<Facts, StoreError> {
    let params = facts_params(Some(patient), actor.unwrap_or(""), resource.unwrap_or(""));
    let mut facts = Facts::default();
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| facts_sql("?"));
    for r in c.query(&SQL, &params)? {
        let whose = r.get(1).and_then(|v| v.as_i64()).unwrap_or(0);
        fold(&mut facts, &text(&r, 0), whose, text(&r, 2));
    }
    Ok(facts)
}

/// The same query as [`facts_in`], for the patient of the resource a read by id finds (`r.pkey`), attached to
/// that read's statement (PostgreSQL: one round trip instead of two); its value, JSON, is read back by
/// [`facts_of_attached`].
pub fn facts_attached(actor: Option<&str>, resource: Option<&str>) -> socle_store::Attached {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "(SELECT COALESCE(json_agg(json_build_array(f.kind, f.own, f.detail)), '[]')::text \
             FROM ({}) AS f(kind, own, detail))",
            facts_sql("r.pkey")
        )
    });
    socle_store::Attached {
        sql: SQL.as_str(),
        params: facts_params(None, actor.unwrap_or(""), resource.unwrap_or("")),
    }
}

/// The facts from the value of [`facts_attached`]: `[[kind, own, detail], …]`.
pub fn facts_of_attached(json: &str) -> Result<Facts, StoreError> {
    let bad =
        |why: &str| StoreError::Corrupt(format!("règles d'accès jointes à la lecture : {why}"));
    let rows: Vec<(String, i64, String)> =
        serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
    let mut facts = Facts::default();
    for (kind, whose, detail) in rows {
        fold(&mut facts, &kind, whose, detail);
    }
    Ok(facts)
}

/// `n` synthetic rules for synthetic patients (`syn-<k>`) and professionals (IDNPS `8` + 11 digits), of every
/// kind in realistic proportions (care relationships first), reproducible from `seed`: the data a benchmark needs
/// to measure decisions among millions of stored rules.
pub fn synthetic_rules(n: u64, seed: u64, first: u64) -> Vec<NewRule> {
    (first..first + n)
        .map(|i| {
            // Each rule from its own index: loads of any size compose into the same sequence.
            let mut x =
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            let mut next = move || {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            };
            let patient = format!("syn-{}", next() % 1_000_000);
            let pro = format!("8{:011}", next() % 100_000_000_000);
            let (kind, actor, target, detail, expires) = match next() % 100 {
                0..=69 => (
                    "care",
                    pro,
                    String::new(),
                    CARE_KINDS[(next() % 3) as usize].to_string(),
                    None,
                ),
                70..=79 => ("block", pro, String::new(), String::new(), None),
                80..=89 => (
                    "mask",
                    String::new(),
                    format!("DocumentReference/syn-{}", next() % 10_000_000),
                    String::new(),
                    None,
                ),
                90..=94 => (
                    "hide-patient",
                    String::new(),
                    format!("DocumentReference/syn-{}", next() % 10_000_000),
                    String::new(),
                    None,
                ),
                _ => (
                    "patient-delegation",
                    pro,
                    String::new(),
                    "*".to_string(),
                    Some(now_ms() + 30 * 24 * 3600 * 1000),
                ),
            };
            (patient, kind.to_string(), actor, target, detail, expires)
        })
        .collect()
}

fn code_hash(code: &str) -> String {
    // Codes are random and short-lived: a plain SHA-256 keeps them out of the database.
    use std::fmt::Write;
    ring::digest::digest(&ring::digest::SHA256, code.as_bytes())
        .as_ref()
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn getrandom_fill(b: &mut [u8]) -> Result<(), RuleError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(b)
        .map_err(|_| RuleError::Invalid("générateur aléatoire du système indisponible".into()))
}

static RULE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Unique across processes: time, process id, sequence within the process.
fn new_id(now: i64) -> String {
    let seq = RULE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("r{now:x}-{:x}-{seq}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with rules of patient p1: two care relationships of 8001, a block of 8002, a masked document.
    fn store_with_rules() -> (tempfile::TempDir, RuleStore) {
        let dir = tempfile::tempdir().unwrap();
        let rs = RuleStore::open(socle_store::open(None, dir.path()).unwrap()).unwrap();
        rs.add("p1", "care", "8001", "", "equipe-de-soins", None)
            .unwrap();
        rs.add("p1", "care", "8001", "", MEDECIN_TRAITANT, None)
            .unwrap();
        rs.add("p1", "block", "8002", "", "", None).unwrap();
        rs.add("p1", "mask", "", "DocumentReference/d1", "", None)
            .unwrap();
        (dir, rs)
    }

    #[test]
    fn masks_and_visibility_are_about_documents() {
        for kind in ["mask", "hide-patient", "hide-representative"] {
            assert!(RuleStore::check(kind, "p1", "", "DocumentReference/d1", "", None).is_ok());
            for bad in [
                "Observation/o1",
                "DocumentReference/",
                "DocumentReference/a/b",
                "d1",
                "",
            ] {
                assert!(
                    RuleStore::check(kind, "p1", "", bad, "", None).is_err(),
                    "{kind} {bad}"
                );
            }
        }
    }

    #[test]
    fn attached_facts_read_like_queried_ones() {
        let (_dir, rs) = store_with_rules();
        rs.add(
            "p1",
            "patient-delegation",
            "8001",
            "",
            "11502-2, SYNTH",
            Some(now_ms() + 60_000),
        )
        .unwrap();
        let queried = rs
            .facts("p1", Some("8001"), Some("DocumentReference/d1"))
            .unwrap();
        // The rows as PostgreSQL's json_agg gives them, in another order.
        let json = r#"[["mask",0,""],["patient-delegation",1,"11502-2, SYNTH"],
                       ["care",1,"medecin-traitant"],["care",1,"equipe-de-soins"]]"#;
        assert_eq!(facts_of_attached(json).unwrap(), queried);
        assert_eq!(facts_of_attached("[]").unwrap(), Facts::default());
        // Two relationships: the stronger one, in either order.
        for json in [
            r#"[["care",1,"relation-declaree"],["care",1,"equipe-de-soins"]]"#,
            r#"[["care",1,"equipe-de-soins"],["care",1,"relation-declaree"]]"#,
        ] {
            let f = facts_of_attached(json).unwrap();
            assert_eq!(f.care.as_deref(), Some("equipe-de-soins"), "{json}");
        }
        // A block is the actor's own…
        assert!(facts_of_attached(r#"[["block",1,""]]"#).unwrap().blocked);
        assert!(!facts_of_attached(r#"[["block",0,""]]"#).unwrap().blocked);
        // … or of the professional the actor acts for (a secretary).
        assert!(facts_of_attached(r#"[["block",2,""]]"#).unwrap().blocked);
        for bad in ["", "null", "{}", r#"[["care"]]"#, r#"[[1,1,""]]"#] {
            assert!(facts_of_attached(bad).is_err(), "{bad}");
        }
        // The attached query names the row's patient, never a placeholder for it.
        let a = facts_attached(Some("8001"), Some("Patient/p1"));
        assert_eq!(a.sql.matches('?').count(), a.params.len());
        assert_eq!(a.sql.matches("r.pkey").count(), 4);
    }

    #[test]
    fn synthetic_loads_continue_their_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let rs = RuleStore::open(socle_store::open(None, dir.path()).unwrap()).unwrap();
        rs.add("p1", "care", "8001", "", "equipe-de-soins", None)
            .unwrap();
        assert_eq!(rs.synthetic_count().unwrap(), 0);
        rs.add_many(&synthetic_rules(300, 7, 0)).unwrap();
        assert_eq!(rs.synthetic_count().unwrap(), 300);
        // A load from where the stored ones end is the tail of one longer load, not a repeat of the first.
        let again = synthetic_rules(300, 7, rs.synthetic_count().unwrap());
        let key = |r: &NewRule| {
            (
                r.0.clone(),
                r.1.clone(),
                r.2.clone(),
                r.3.clone(),
                r.4.clone(),
            )
        };
        let keys = |v: &[NewRule]| v.iter().map(key).collect::<Vec<_>>();
        assert_eq!(keys(&again), keys(&synthetic_rules(600, 7, 0)[300..]));
        assert_ne!(keys(&again), keys(&synthetic_rules(300, 7, 0)));
        rs.add_many(&again).unwrap();
        assert_eq!(rs.synthetic_count().unwrap(), 600);
    }

    #[test]
    fn facts_from_stored_rules() {
        let (_dir, rs) = store_with_rules();
        rs.add("*", "delegation", "8003", "8001", "", None).unwrap();
        let past = now_ms() - 1000;
        rs.add("p1", "care", "8004", "", "relation-declaree", Some(past))
            .unwrap();
        rs.add(
            "p1",
            "patient-delegation",
            "8005",
            "",
            "11502-2, SYNTH",
            Some(now_ms() + 60_000),
        )
        .unwrap();
        let f = rs
            .facts("p1", Some("8001"), Some("DocumentReference/d1"))
            .unwrap();
        assert_eq!(f.care.as_deref(), Some(MEDECIN_TRAITANT));
        assert!(f.masked && !f.blocked);
        assert!(rs.facts("p1", Some("8002"), None).unwrap().blocked);
        assert_eq!(
            rs.facts("p1", Some("8003"), None).unwrap().care.as_deref(),
            Some(MEDECIN_TRAITANT),
            "délégation"
        );
        assert_eq!(
            rs.facts("p1", Some("8004"), None).unwrap().care,
            None,
            "expirée"
        );
        // A closed record's rule reaches every decision about that patient.
        rs.add("p1", RECORD_CLOSED, "", RECORD_TARGET, "closed", None)
            .unwrap_err();
        rs.store
            .write(&mut |c| {
                RuleStore::insert_in(c, "p1", RECORD_CLOSED, "", RECORD_TARGET, "closed", None)?;
                Ok(())
            })
            .unwrap();
        assert!(
            rs.facts("p1", Some("8001"), Some("DocumentReference/d9"))
                .unwrap()
                .record_closed
        );
        assert!(!rs.facts("p2", Some("8001"), None).unwrap().record_closed);
        rs.store
            .write(&mut |c| {
                RuleStore::revoke_target_in(c, "p1", RECORD_CLOSED, RECORD_TARGET)?;
                Ok(())
            })
            .unwrap();
        assert!(!rs.facts("p1", Some("8001"), None).unwrap().record_closed);
        // The secretary of a professional the patient blocks is blocked too (8002 is blocked for p1).
        rs.add("*", "delegation", "8006", "8002", "", None).unwrap();
        assert!(rs.facts("p1", Some("8006"), None).unwrap().blocked);
        assert!(!rs.facts("p1", Some("8003"), None).unwrap().blocked);
        assert_eq!(
            rs.facts("p2", Some("8001"), None).unwrap(),
            Facts::default()
        );
        assert_eq!(
            rs.facts("p1", Some("8005"), None)
                .unwrap()
                .patient_delegation,
            Some(vec!["11502-2".to_string(), "SYNTH".to_string()])
        );
        let list = rs.list("p1").unwrap();
        assert_eq!(list.len(), 5, "{list:?}");
        let block = list.iter().find(|r| r.kind == "block").unwrap();
        assert!(rs.revoke("p1", &block.id).unwrap());
        assert!(!rs.revoke("p1", &block.id).unwrap());
        assert!(!rs.facts("p1", Some("8002"), None).unwrap().blocked);
        assert!(rs.add("p1", "care", "8001", "", "ami", None).is_err());
        assert!(
            rs.add("p1", "patient-delegation", "8001", "", "*", None)
                .is_err()
        );
        assert!(rs.add("p1", "vol", "8001", "", "", None).is_err());
    }
}
