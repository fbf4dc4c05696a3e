//! Socle's one policy engine (domain, no HTTP): may this actor do this to this patient's data? Every decision
//! carries a reason code and an explanation, so that it can be audited and shown (to the professional refused,
//! to the patient reading their trail).
//!
//! Inputs: the default matrix profession × document type ([`matrix`]), and the rules stored per patient
//! ([`rules`]): care relationships (médecin traitant, care team, declared), blocks of a professional, documents
//! masked from professionals, documents invisible to the patient or to legal representatives, delegations
//! (professional → secretary; patient → professional with sections and an expiry), app consents. Break-glass
//! (emergency access with a stated reason) replaces a missing care relationship, never a block or a mask.

pub mod matrix;
pub mod rules;

/// The sections (*rubriques*) a patient shares by delegation (MES-6): `*` (everything), the named sections of
/// the record — `documents` (every document), `mesures` (measures), `profil-medical` (allergies, conditions,
/// treatments, vaccinations, procedures, family history), `agenda` (appointments) — or a document type (CI-SIS
/// J07 code, e.g. LOINC `11502-2`: documents of that type only). The patient's identity (`Patient`) goes with
/// any delegation; data of no section only with `*`.
pub mod sections {
    pub const ALL: &str = "*";
    pub const DOCUMENTS: &str = "documents";
    pub const MEASURES: &str = "mesures";
    pub const PROFILE: &str = "profil-medical";
    pub const AGENDA: &str = "agenda";
    /// The named sections.
    pub const NAMES: &[&str] = &[DOCUMENTS, MEASURES, PROFILE, AGENDA];

    /// The section a resource type belongs to.
    pub fn of_type(rtype: &str) -> Option<&'static str> {
        Some(match rtype {
            "DocumentReference" | "Binary" | "List" | "Composition" | "DiagnosticReport"
            | "ImagingStudy" => DOCUMENTS,
            "Observation" => MEASURES,
            "AllergyIntolerance"
            | "Condition"
            | "Immunization"
            | "MedicationStatement"
            | "MedicationRequest"
            | "Procedure"
            | "FamilyMemberHistory" => PROFILE,
            "Appointment" => AGENDA,
            _ => return None,
        })
    }

    /// Whether `s` may be shared: `*`, a named section, or a document type code (letters, digits, `-._:`).
    pub fn valid(s: &str) -> bool {
        s == ALL
            || NAMES.contains(&s)
            || (!s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')))
    }

    /// Whether the `shared` sections reach data of type `rtype` (a document of type `doc_type`). Without the
    /// document's type (a search of documents, a submission set), any document section does: the documents are
    /// then decided one by one.
    pub fn allow(shared: &[String], rtype: Option<&str>, doc_type: Option<&str>) -> bool {
        let has = |want: &str| shared.iter().any(|s| s == want);
        if has(ALL) {
            return true;
        }
        if let Some(t) = doc_type {
            return has(DOCUMENTS) || has(t);
        }
        match rtype {
            Some("Patient") => true,
            // A search of DocumentReference with document types shared: its results are then decided one by one
            // with their type. Other document-like data (reports, compositions, submission sets, images) carry
            // no J07 type: they need the whole `documents` section.
            Some("DocumentReference") => shared
                .iter()
                .any(|s| !NAMES.contains(&s.as_str()) || s == DOCUMENTS),
            Some(t) => match of_type(t) {
                Some(section) => has(section),
                None => false,
            },
            None => false,
        }
    }
}

pub use matrix::Matrix;
pub use rules::{Facts, RuleStore};

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A professional (IDNPS) with their professions (TRE_G15 codes).
    Professional {
        idnps: String,
        professions: Vec<String>,
    },
    /// The patient themselves (their local `Patient` id).
    Patient { patient: String },
    /// A legal representative acting for the patient.
    Representative { patient: String },
    /// Software or a structure acting on its own behalf (client credentials): its scopes decide.
    Client { client_id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Search,
    Create,
    Update,
    Delete,
}

/// What is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// The patient whose compartment holds the data (`None`: not patient data).
    pub patient: Option<String>,
    /// `Type/id` of the resource, when known.
    pub resource: Option<String>,
    /// The resource type, when known (a search's type, or that of `resource`).
    pub rtype: Option<String>,
    /// Document type (CI-SIS J07 code), for documents.
    pub doc_type: Option<String>,
    /// The author's IDNPS, for documents.
    pub author: Option<String>,
    /// For documents: the type is one of the patient categories (a document the patient added themself).
    pub patient_category: bool,
}

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    /// An update, or a replacement by a new version (`relatesTo`).
    Update,
    Delete,
}

/// Why a decision was taken (stable codes, audited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NotPatientData,
    ClientScopes,
    OwnRecord,
    OtherPatient,
    HiddenFromPatient,
    HiddenFromRepresentative,
    PatientBlocked,
    NoCareRelationship,
    DocumentMasked,
    MatrixDenied,
    CareRelationship,
    PatientDelegation,
    SectionNotDelegated,
    BreakGlass,
    NotAuthor,
    PatientCategoryOnly,
    RecordClosed,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::NotPatientData => "not-patient-data",
            Reason::ClientScopes => "client-scopes",
            Reason::OwnRecord => "own-record",
            Reason::OtherPatient => "other-patient",
            Reason::HiddenFromPatient => "hidden-from-patient",
            Reason::HiddenFromRepresentative => "hidden-from-representative",
            Reason::PatientBlocked => "patient-blocked",
            Reason::NoCareRelationship => "no-care-relationship",
            Reason::DocumentMasked => "document-masked",
            Reason::MatrixDenied => "matrix-denied",
            Reason::CareRelationship => "care-relationship",
            Reason::PatientDelegation => "patient-delegation",
            Reason::SectionNotDelegated => "section-not-delegated",
            Reason::BreakGlass => "break-glass",
            Reason::NotAuthor => "not-author",
            Reason::PatientCategoryOnly => "patient-category-only",
            Reason::RecordClosed => "record-closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// In French, for the person refused and for the patient's trail.
    pub explanation: String,
}

impl Decision {
    fn allow(reason: Reason, explanation: impl Into<String>) -> Decision {
        Decision {
            allowed: true,
            reason,
            explanation: explanation.into(),
        }
    }

    fn deny(reason: Reason, explanation: impl Into<String>) -> Decision {
        Decision {
            allowed: false,
            reason,
            explanation: explanation.into(),
        }
    }
}

/// Decides. `facts` are the stored rules that concern this patient, actor and resource
/// ([`RuleStore::facts`]); `break_glass` is the stated reason of an emergency access, if any.
pub fn decide(
    matrix: &Matrix,
    facts: &Facts,
    actor: &Actor,
    target: &Target,
    break_glass: Option<&str>,
) -> Decision {
    let Some(patient) = target.patient.as_deref() else {
        return Decision::allow(Reason::NotPatientData, "donnée non rattachée à un patient");
    };
    match actor {
        Actor::Client { .. } => Decision::allow(
            Reason::ClientScopes,
            "logiciel agissant pour son propre compte : ses portées décident",
        ),
        Actor::Patient { patient: own } => {
            if own != patient {
                Decision::deny(Reason::OtherPatient, "donnée d'un autre patient")
            } else if facts.hidden_from_patient {
                Decision::deny(
                    Reason::HiddenFromPatient,
                    "document pas encore visible par le patient (en attente d'annonce)",
                )
            } else {
                Decision::allow(Reason::OwnRecord, "le patient consulte son propre dossier")
            }
        }
        Actor::Representative { patient: own } => {
            if own != patient {
                Decision::deny(Reason::OtherPatient, "donnée d'un autre patient")
            } else if facts.hidden_from_representative || facts.hidden_from_patient {
                Decision::deny(
                    Reason::HiddenFromRepresentative,
                    "document non visible par les représentants légaux",
                )
            } else {
                Decision::allow(Reason::OwnRecord, "représentant légal du patient")
            }
        }
        Actor::Professional { idnps, professions } => {
            // A closed (or opposed) DMP: its documents are kept for the patient, out of every professional's
            // reach, break-glass included.
            if facts.record_closed && target.doc_type.is_some() {
                return Decision::deny(
                    Reason::RecordClosed,
                    "le patient a fermé son DMP : ses documents ne sont plus accessibles aux professionnels",
                );
            }
            if facts.blocked {
                return Decision::deny(
                    Reason::PatientBlocked,
                    "le patient a bloqué l'accès de ce professionnel à son dossier",
                );
            }
            let mut via = if let Some(kind) = &facts.care {
                (
                    Reason::CareRelationship,
                    format!("relation de soins ({kind})"),
                )
            } else if let Some(shared) = &facts.patient_delegation {
                let rtype = target.rtype.as_deref().or_else(|| {
                    target
                        .resource
                        .as_deref()
                        .and_then(|r| r.split_once('/'))
                        .map(|(t, _)| t)
                });
                if !sections::allow(shared, rtype, target.doc_type.as_deref()) {
                    return Decision::deny(
                        Reason::SectionNotDelegated,
                        match target.doc_type {
                            Some(_) => {
                                "ce type de document ne fait pas partie des rubriques que le patient a partagées"
                            }
                            None => {
                                "ces données ne font pas partie des rubriques que le patient a partagées"
                            }
                        },
                    );
                }
                (
                    Reason::PatientDelegation,
                    "accès délégué par le patient (code, rubriques choisies, durée limitée)"
                        .to_string(),
                )
            } else if let Some(why) = break_glass.map(str::trim).filter(|r| !r.is_empty()) {
                (
                    Reason::BreakGlass,
                    format!("accès en urgence (bris de glace) : {why}"),
                )
            } else {
                return Decision::deny(
                    Reason::NoCareRelationship,
                    "aucune relation de soins avec ce patient (médecin traitant, équipe de soins, relation déclarée) ; \
                     en urgence, déclarez un bris de glace motivé",
                );
            };
            let is_author = target.author.as_deref() == Some(idnps.as_str());
            if facts.masked && !is_author && facts.care.as_deref() != Some(rules::MEDECIN_TRAITANT)
            {
                return Decision::deny(
                    Reason::DocumentMasked,
                    "document masqué aux professionnels par le patient",
                );
            }
            if let Some(t) = target.doc_type.as_deref()
                && !is_author
            {
                match matrix.rule_for(professions, t) {
                    Some(r) if r.allow => {
                        via.1.push_str(&format!(" ; matrice ligne {}", r.line));
                    }
                    other => {
                        let line = other
                            .map(|r| format!(" (ligne {})", r.line))
                            .unwrap_or_default();
                        return Decision::deny(
                            Reason::MatrixDenied,
                            format!(
                                "la matrice d'habilitation ne donne pas accès à ce type de document ({t}) pour cette profession{line}"
                            ),
                        );
                    }
                }
            }
            Decision::allow(via.0, via.1)
        }
    }
}

/// The rules on writing documents, beyond the access decision on each patient's data (which comes first, with
/// the stored document as its target: a document a user may not read, they may not change either). `sent`: the
/// document as written (create, update); `stored`: as it was (update, replacement, deletion). Answers the
/// refusal, if any.
///
/// - Only a document's producer changes it (DMP-6): a professional updates, replaces or deletes the documents
///   they authored, not a colleague's (a new document of their own completes the record instead).
/// - A patient adds documents in the patient categories only, and updates or replaces only those; they may
///   delete any document of their own record that they can see (their record, their choice: the producer keeps
///   their copy).
/// - Software acting on its own behalf: its scopes decide (the structure answers for its software).
pub fn document_write(
    actor: &Actor,
    write: Write,
    sent: Option<&Target>,
    stored: Option<&Target>,
) -> Option<Decision> {
    match actor {
        Actor::Professional { idnps, .. } => {
            let stored = stored.filter(|_| write != Write::Create)?;
            (stored.author.as_deref() != Some(idnps.as_str())).then(|| {
                Decision::deny(
                    Reason::NotAuthor,
                    "seul l'auteur d'un document le modifie, le remplace ou le supprime (DMP-6) ; \
                     complétez le dossier par un document de votre main",
                )
            })
        }
        Actor::Patient { .. } | Actor::Representative { .. } => {
            if write == Write::Update && stored.is_some_and(|t| !t.patient_category) {
                return Some(Decision::deny(
                    Reason::NotAuthor,
                    "le patient ne modifie ni ne remplace un document déposé par un professionnel ; \
                     il peut le masquer aux professionnels ou le supprimer de son dossier",
                ));
            }
            sent.is_some_and(|t| !t.patient_category).then(|| {
                Decision::deny(
                    Reason::PatientCategoryOnly,
                    "le patient ajoute ses documents dans les catégories patient (DOCPAT, EXPPAT)",
                )
            })
        }
        Actor::Client { .. } => None,
    }
}

/// The engine a server holds: the matrix in force (from the database when an operator loaded one, else the
/// shipped default) and the rule store.
pub struct Engine {
    matrix: std::sync::RwLock<std::sync::Arc<Matrix>>,
    pub rules: RuleStore,
    store: std::sync::Arc<dyn socle_store::Store>,
}

impl Engine {
    pub fn open(store: std::sync::Arc<dyn socle_store::Store>) -> Result<Engine, rules::RuleError> {
        let rules = RuleStore::open(store.clone())?;
        store.write(&mut |c| {
            c.execute(
                "CREATE TABLE IF NOT EXISTS policy_matrix (id BIGINT PRIMARY KEY, source TEXT NOT NULL, loaded BIGINT NOT NULL)",
                &[],
            )?;
            Ok(())
        })?;
        let mut text = None;
        store.read(&mut |c| {
            text = c
                .query_one("SELECT source FROM policy_matrix WHERE id = 1", &[])?
                .and_then(|r| r.first().and_then(|v| v.as_str()).map(str::to_string));
            Ok(())
        })?;
        let matrix = match text {
            Some(t) => Matrix::parse(&t).map_err(|e| rules::RuleError::Invalid(e.to_string()))?,
            None => Matrix::default_matrix(),
        };
        Ok(Engine {
            matrix: std::sync::RwLock::new(std::sync::Arc::new(matrix)),
            rules,
            store,
        })
    }

    pub fn matrix(&self) -> std::sync::Arc<Matrix> {
        self.matrix
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks and stores a matrix (it replaces the one in force, here and, on restart, on every node).
    pub fn load_matrix(&self, text: &str) -> Result<usize, rules::RuleError> {
        let m = Matrix::parse(text).map_err(|e| rules::RuleError::Invalid(e.to_string()))?;
        let n = m.len();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.store.write(&mut |c| {
            c.execute("DELETE FROM policy_matrix WHERE id = 1", &[])?;
            c.execute(
                "INSERT INTO policy_matrix (id, source, loaded) VALUES (1, ?, ?)",
                &[text.into(), now.into()],
            )?;
            Ok(())
        })?;
        *self.matrix.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(m);
        Ok(n)
    }

    /// Gathers the facts on `c` (the transaction that read the resource: no second round trip) and decides.
    pub fn decide_in(
        &self,
        c: &mut dyn socle_store::SqlConn,
        actor: &Actor,
        target: &Target,
        break_glass: Option<&str>,
    ) -> Result<Decision, socle_store::StoreError> {
        self.decide_in_with(c, actor, target, break_glass, None)
    }

    /// What a read by id of `resource` (`Type/id`) by `actor` attaches to its statement so that the decision
    /// needs no other ([`rules::facts_attached`]); `None` when the decision reads no rules (a client acting on
    /// its own behalf).
    pub fn attach_for(&self, actor: &Actor, resource: &str) -> Option<socle_store::Attached> {
        match actor {
            Actor::Client { .. } => None,
            Actor::Professional { idnps, .. } => {
                Some(rules::facts_attached(Some(idnps), Some(resource)))
            }
            _ => Some(rules::facts_attached(None, Some(resource))),
        }
    }

    /// [`Engine::decide_in`], with the facts already read by the statement that read the resource when
    /// `attached` is the value of [`Engine::attach_for`] for this actor and `target.resource`, evaluated for
    /// `target.patient`.
    pub fn decide_in_with(
        &self,
        c: &mut dyn socle_store::SqlConn,
        actor: &Actor,
        target: &Target,
        break_glass: Option<&str>,
        attached: Option<&str>,
    ) -> Result<Decision, socle_store::StoreError> {
        let who = match (actor, target.patient.as_deref()) {
            (_, None) | (Actor::Client { .. }, _) => {
                return Ok(decide(
                    &self.matrix(),
                    &Facts::default(),
                    actor,
                    target,
                    break_glass,
                ));
            }
            (Actor::Professional { idnps, .. }, _) => Some(idnps.as_str()),
            _ => None,
        };
        let patient = target.patient.as_deref().unwrap_or_default();
        let facts = match attached {
            Some(json) => rules::facts_of_attached(json)?,
            None => rules::facts_in(c, patient, who, target.resource.as_deref())?,
        };
        Ok(decide(&self.matrix(), &facts, actor, target, break_glass))
    }

    /// Gathers the facts (in a transaction of its own) and decides.
    pub fn decide(
        &self,
        actor: &Actor,
        target: &Target,
        break_glass: Option<&str>,
    ) -> Result<Decision, rules::RuleError> {
        let mut out = None;
        self.store.read(&mut |c| {
            out = Some(self.decide_in(c, actor, target, break_glass)?);
            Ok(())
        })?;
        out.ok_or_else(|| rules::RuleError::Invalid("aucune décision".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pro(p: &str) -> Actor {
        Actor::Professional {
            idnps: "810001".into(),
            professions: vec![p.into()],
        }
    }

    fn doc(t: &str) -> Target {
        Target {
            patient: Some("p1".into()),
            resource: Some("DocumentReference/d1".into()),
            rtype: Some("DocumentReference".into()),
            doc_type: Some(t.into()),
            author: Some("899999".into()),
            patient_category: false,
        }
    }

    #[test]
    fn decisions_and_reasons() {
        let m = Matrix::default_matrix();
        let none = Facts::default();
        let care = Facts {
            care: Some("equipe-de-soins".into()),
            ..Facts::default()
        };
        let d = |a: &Actor, f: &Facts, t: &Target, bg: Option<&str>| decide(&m, f, a, t, bg).reason;
        assert_eq!(
            d(&pro("10"), &none, &doc("34874-8"), None),
            Reason::NoCareRelationship
        );
        assert_eq!(
            d(&pro("10"), &care, &doc("34874-8"), None),
            Reason::CareRelationship
        );
        assert_eq!(
            d(&pro("21"), &care, &doc("34874-8"), None),
            Reason::MatrixDenied
        );
        assert_eq!(
            d(&pro("21"), &care, &doc("60593-1"), None),
            Reason::CareRelationship
        );
        assert_eq!(
            d(
                &pro("10"),
                &none,
                &doc("34874-8"),
                Some("patient inconscient aux urgences")
            ),
            Reason::BreakGlass
        );
        assert_eq!(
            d(&pro("10"), &none, &doc("34874-8"), Some("  ")),
            Reason::NoCareRelationship
        );
        let blocked = Facts {
            blocked: true,
            ..care.clone()
        };
        assert_eq!(
            d(&pro("10"), &blocked, &doc("34874-8"), Some("urgence")),
            Reason::PatientBlocked
        );
        let masked = Facts {
            masked: true,
            ..care.clone()
        };
        assert_eq!(
            d(&pro("10"), &masked, &doc("34874-8"), None),
            Reason::DocumentMasked
        );
        let mt = Facts {
            masked: true,
            care: Some(rules::MEDECIN_TRAITANT.into()),
            ..Facts::default()
        };
        assert_eq!(
            d(&pro("10"), &mt, &doc("34874-8"), None),
            Reason::CareRelationship,
            "le médecin traitant voit les documents masqués"
        );
        let mut author = doc("34874-8");
        author.author = Some("810001".into());
        assert_eq!(
            d(&pro("21"), &masked, &author, None),
            Reason::CareRelationship,
            "l'auteur voit son document"
        );
        let deleg = Facts {
            patient_delegation: Some(vec!["11502-2".into()]),
            ..Facts::default()
        };
        assert_eq!(
            d(&pro("10"), &deleg, &doc("11502-2"), None),
            Reason::PatientDelegation
        );
        assert_eq!(
            d(&pro("10"), &deleg, &doc("34874-8"), None),
            Reason::SectionNotDelegated
        );
        // Sections beyond documents: measures, the medical profile; the identity goes with any delegation.
        let of = |rtype: &str| Target {
            patient: Some("p1".into()),
            rtype: Some(rtype.into()),
            ..Target::default()
        };
        for (rtype, want) in [
            ("Observation", Reason::SectionNotDelegated),
            ("AllergyIntolerance", Reason::SectionNotDelegated),
            ("Encounter", Reason::SectionNotDelegated),
            ("Patient", Reason::PatientDelegation),
            // A search of documents: decided document by document afterwards.
            ("DocumentReference", Reason::PatientDelegation),
            // Reports, compositions, submission sets carry no document type: not shared by a type alone.
            ("DiagnosticReport", Reason::SectionNotDelegated),
            ("List", Reason::SectionNotDelegated),
            ("Composition", Reason::SectionNotDelegated),
        ] {
            assert_eq!(d(&pro("10"), &deleg, &of(rtype), None), want, "{rtype}");
        }
        let measures = Facts {
            patient_delegation: Some(vec!["mesures".into(), "profil-medical".into()]),
            ..Facts::default()
        };
        for (rtype, want) in [
            ("Observation", Reason::PatientDelegation),
            ("Condition", Reason::PatientDelegation),
            ("DocumentReference", Reason::SectionNotDelegated),
            ("Appointment", Reason::SectionNotDelegated),
        ] {
            assert_eq!(d(&pro("10"), &measures, &of(rtype), None), want, "{rtype}");
        }
        assert_eq!(
            d(&pro("10"), &measures, &doc("11502-2"), None),
            Reason::SectionNotDelegated
        );
        let obs = Target {
            patient: Some("p1".into()),
            resource: Some("Observation/o1".into()),
            ..Target::default()
        };
        assert_eq!(
            d(&pro("10"), &measures, &obs, None),
            Reason::PatientDelegation
        );
        assert_eq!(
            d(&pro("10"), &deleg, &obs, None),
            Reason::SectionNotDelegated
        );
        assert!(sections::valid("11502-2") && sections::valid("mesures") && sections::valid("*"));
        assert!(!sections::valid("") && !sections::valid("a,b") && !sections::valid("<script>"));
        let me = Actor::Patient {
            patient: "p1".into(),
        };
        assert_eq!(d(&me, &none, &doc("34874-8"), None), Reason::OwnRecord);
        let hidden = Facts {
            hidden_from_patient: true,
            ..Facts::default()
        };
        assert_eq!(
            d(&me, &hidden, &doc("34874-8"), None),
            Reason::HiddenFromPatient
        );
        assert_eq!(
            d(
                &Actor::Patient {
                    patient: "p2".into()
                },
                &none,
                &doc("34874-8"),
                None
            ),
            Reason::OtherPatient
        );
        let rep = Actor::Representative {
            patient: "p1".into(),
        };
        let hidden_rep = Facts {
            hidden_from_representative: true,
            ..Facts::default()
        };
        assert_eq!(
            d(&rep, &hidden_rep, &doc("34874-8"), None),
            Reason::HiddenFromRepresentative
        );
        assert_eq!(d(&rep, &none, &doc("34874-8"), None), Reason::OwnRecord);
        assert_eq!(
            d(&pro("10"), &none, &Target::default(), None),
            Reason::NotPatientData
        );
        assert!(
            !decide(&m, &none, &pro("10"), &doc("x"), None)
                .explanation
                .is_empty()
        );
    }

    #[test]
    fn only_producers_change_documents() {
        let author = Actor::Professional {
            idnps: "899999".into(),
            professions: vec!["10".into()],
        };
        let w = |a: &Actor, k: Write, sent: Option<&Target>, stored: Option<&Target>| {
            document_write(a, k, sent, stored).map(|d| d.reason)
        };
        let stored = doc("34874-8");
        // The author changes their document; a colleague does not, even the médecin traitant.
        assert_eq!(
            w(&author, Write::Update, Some(&stored), Some(&stored)),
            None
        );
        assert_eq!(w(&author, Write::Delete, None, Some(&stored)), None);
        for k in [Write::Update, Write::Delete] {
            assert_eq!(
                w(&pro("10"), k, Some(&stored), Some(&stored)),
                Some(Reason::NotAuthor)
            );
        }
        assert_eq!(w(&pro("10"), Write::Create, Some(&stored), None), None);
        // The patient: patient categories only; deletes what they see of their record.
        let patient = Actor::Patient {
            patient: "p1".into(),
        };
        let own = Target {
            patient_category: true,
            ..doc("DOCPAT04")
        };
        assert_eq!(w(&patient, Write::Create, Some(&own), None), None);
        assert_eq!(
            w(&patient, Write::Create, Some(&stored), None),
            Some(Reason::PatientCategoryOnly)
        );
        assert_eq!(w(&patient, Write::Update, Some(&own), Some(&own)), None);
        assert_eq!(
            w(&patient, Write::Update, Some(&own), Some(&stored)),
            Some(Reason::NotAuthor)
        );
        assert_eq!(
            w(&patient, Write::Update, None, Some(&stored)),
            Some(Reason::NotAuthor)
        );
        assert_eq!(w(&patient, Write::Delete, None, Some(&stored)), None);
        let software = Actor::Client {
            client_id: "lgc".into(),
        };
        assert_eq!(
            w(&software, Write::Update, Some(&stored), Some(&stored)),
            None
        );
    }
}
