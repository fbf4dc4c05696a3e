//! The policy engine on the FHIR API: who the caller is for `socle_policy`, what a stored resource is (its
//! patient, its document type and author), and the check every read by id goes through.

use axum::http::HeaderMap;
use serde_json::Value;
use socle_auth::{ACR_TWO_FACTORS, Realm, acr_rank};
use socle_policy::{Actor, Decision, Engine, Reason, Target, Write};
use socle_store::RepoError;
use socle_store::repo::{Before, Stored};

use super::guard::Caller;

/// The header a professional sets to declare an emergency access, with its reason (UTF-8, percent-encoded).
pub const BREAK_GLASS_HEADER: &str = "x-socle-break-glass";

/// The policy actor of a caller (`None`: no policy applies — development mode, anonymous directory reads).
pub fn actor_of(caller: Option<&Caller>) -> Option<Actor> {
    let Some(Caller::Token(p)) = caller else {
        return None;
    };
    Some(match p.realm {
        Some(Realm::Pro) => Actor::Professional {
            idnps: p.subject.clone(),
            professions: p
                .claims
                .get("profession")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        },
        Some(Realm::Patient) => {
            let patient = p.claim("patient").unwrap_or_default().to_string();
            // A grant made by the holder acting as someone's legal representative (see `socle_auth`).
            if p.claims.get("representative").and_then(Value::as_bool) == Some(true) {
                Actor::Representative { patient }
            } else {
                Actor::Patient { patient }
            }
        }
        None => Actor::Client {
            client_id: p.client_id.clone(),
        },
    })
}

/// The raw break-glass header of a request.
pub fn break_glass_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get(BREAK_GLASS_HEADER)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// The declared break-glass reason, if any (`raw`: the header); it needs a second factor (acr eidas2).
pub fn break_glass(
    raw: Option<&str>,
    caller: Option<&Caller>,
) -> Result<Option<String>, RepoError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let reason: String = form_urlencoded::parse(format!("r={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    if reason.chars().count() < 10 {
        return Err(RepoError::Invalid(
            "bris de glace : motif obligatoire (10 caractères au moins, en-tête X-Socle-Break-Glass)".into(),
        ));
    }
    let strong = matches!(caller, Some(Caller::Token(p)) if p.realm == Some(Realm::Pro)
        && acr_rank(p.acr.as_deref().unwrap_or("")) >= acr_rank(ACR_TWO_FACTORS));
    if !strong {
        return Err(RepoError::Forbidden {
            patient: None,
            code: "break-glass-needs-eidas2".into(),
            message: "bris de glace réservé aux professionnels authentifiés avec un second facteur (acr eidas2)".into(),
        });
    }
    Ok(Some(reason))
}

/// What the policy needs to know about a stored resource.
pub fn target_of(s: &Stored, patient: Option<&str>) -> Target {
    if s.rtype == "DocumentReference"
        && let Ok(v) = serde_json::from_slice::<Value>(&s.content)
    {
        return target_of_value(&s.rtype, &s.id, &v, patient);
    }
    Target {
        patient: patient.map(str::to_string),
        resource: Some(format!("{}/{}", s.rtype, s.id)),
        rtype: Some(s.rtype.clone()),
        ..Target::default()
    }
}

/// What the policy needs to know about a resource (`id` empty: not stored yet): for documents, their type (and
/// whether it is a patient category) and their author (IDNPS).
pub fn target_of_value(rtype: &str, id: &str, v: &Value, patient: Option<&str>) -> Target {
    let mut t = Target {
        patient: patient.map(str::to_string),
        resource: (!id.is_empty()).then(|| format!("{rtype}/{id}")),
        rtype: Some(rtype.to_string()),
        ..Target::default()
    };
    if rtype != "DocumentReference" {
        return t;
    }
    let codings = v["type"]["coding"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    t.doc_type = codings
        .iter()
        .find_map(|c| c["code"].as_str())
        .map(str::to_string);
    // Every coding: a patient category next to a professional type would let a patient's document pass for a
    // professional's (the matrix reads the first code) or a professional's for a patient's.
    t.patient_category = !codings.is_empty()
        && codings.iter().all(|c| {
            let system = c["system"].as_str().unwrap_or("");
            socle_dmp::submission::is_patient_type(&(
                system
                    .strip_prefix("urn:oid:")
                    .unwrap_or(system)
                    .to_string(),
                c["code"].as_str().unwrap_or("").to_string(),
            ))
        });
    t.author = v["author"].as_array().and_then(|a| {
        a.iter().find_map(|r| {
            (r["identifier"]["system"] == "urn:oid:1.2.250.1.71.4.2.1")
                .then(|| r["identifier"]["value"].as_str().map(str::to_string))
                .flatten()
                .or_else(|| {
                    r["reference"]
                        .as_str()
                        .and_then(|x| x.strip_prefix("Practitioner/"))
                        .map(str::to_string)
                })
        })
    });
    t
}

/// The decision on a read: the audit detail when allowed, the refusal otherwise.
pub fn check(
    c: &mut dyn socle_store::SqlConn,
    engine: &Engine,
    actor: &Actor,
    s: &Stored,
    patient: Option<&str>,
    break_glass: Option<&str>,
    attached: Option<&str>,
) -> Result<Decision, RepoError> {
    let d = engine.decide_in_with(c, actor, &target_of(s, patient), break_glass, attached)?;
    if d.allowed {
        Ok(d)
    } else {
        Err(RepoError::Forbidden {
            patient: None,
            code: d.reason.code().into(),
            message: format!("accès refusé ({}) : {}", d.reason.code(), d.explanation),
        })
    }
}

pub fn is_break_glass(d: &Decision) -> bool {
    d.reason == Reason::BreakGlass
}

/// The one patient a user's search on patient data is about: `patient=` or `subject=` (`Patient/x` or `x`), or
/// `_id=` on `Patient`. `_has` is refused: it filters on other resources that the policy has not decided (a
/// masked document could betray its existence). Included resources are decided after the search.
pub fn search_patient(rtype: &str, params: &[(String, String)]) -> Result<String, String> {
    let mut found: Option<String> = None;
    for (k, v) in params {
        let name = k.split(':').next().unwrap_or("");
        if name.starts_with("_has") {
            return Err(format!(
                "« {k} » n'est pas permis aux utilisateurs sur les données patient : il filtre sur des ressources que \
                 la politique d'accès ne décide pas (un document masqué trahirait son existence)"
            ));
        }
        // Only the plain parameter (or its `:Patient` type modifier) scopes: `_id:not=x` or `patient:missing=false`
        // name a patient without restricting to them.
        let scoping = match rtype {
            "Patient" => k == "_id",
            _ => {
                (name == "patient" || name == "subject")
                    && (k == name || k == &format!("{name}:Patient"))
            }
        };
        if !scoping {
            continue;
        }
        if v.is_empty() || v.ends_with('/') {
            return Err(format!(
                "une recherche de données patient porte sur un patient désigné : « {k}={v} »"
            ));
        }
        if v.contains(',') {
            return Err(format!(
                "une recherche de données patient porte sur un seul patient : « {k}={v} »"
            ));
        }
        let id = v
            .rsplit_once("Patient/")
            .map_or(v.as_str(), |(_, id)| id)
            .to_string();
        match &found {
            Some(f) if *f != id => {
                return Err("une recherche de données patient porte sur un seul patient".into());
            }
            _ => found = Some(id),
        }
    }
    found.ok_or_else(|| {
        let how = if rtype == "Patient" { "_id=…" } else { "patient=… ou subject=…" };
        format!("recherche de données patient : précisez le patient ({how}) ; la politique d'accès décide patient par patient")
    })
}

/// The patient of a compartment search (`Patient/{id}/{type}`) by a user: `id`, the parameters restricting
/// nothing beyond it (`_has` refused as in [`search_patient`]; a patient parameter naming another patient
/// refused rather than answered empty).
pub fn compartment_patient(
    rtype: &str,
    params: &[(String, String)],
    id: String,
) -> Result<String, String> {
    match search_patient(rtype, params) {
        Ok(p) if p != id => {
            Err("une recherche de données patient porte sur un seul patient".into())
        }
        Ok(_) => Ok(id),
        Err(m) if params.iter().any(|(k, _)| k.starts_with("_has")) => Err(m),
        Err(_) => Ok(id),
    }
}

/// Whether the actor is a person (a professional, a patient, a legal representative) rather than software acting
/// on its own behalf.
pub fn is_user(actor: &Actor) -> bool {
    matches!(
        actor,
        Actor::Professional { .. } | Actor::Patient { .. } | Actor::Representative { .. }
    )
}

/// Shared registries and reference data: the Annuaire's resources, terminologies and conformance resources.
pub fn shared_reference(rtype: &str) -> bool {
    super::guard::PUBLIC_TYPES.contains(&rtype)
        || matches!(
            rtype,
            "CodeSystem"
                | "ValueSet"
                | "ConceptMap"
                | "NamingSystem"
                | "TerminologyCapabilities"
                | "StructureDefinition"
                | "StructureMap"
                | "SearchParameter"
                | "OperationDefinition"
                | "CompartmentDefinition"
                | "CapabilityStatement"
                | "ImplementationGuide"
                | "GraphDefinition"
                | "MessageDefinition"
        )
}

/// Resource types outside the patient compartment that a user's search may include: the Annuaire and reference
/// data. Others (`Binary`, `Provenance`, `List`, `Task`, `Device`…) may carry patient data without a compartment.
pub fn shareable_outside_patients(rtype: &str) -> bool {
    super::guard::PUBLIC_TYPES.contains(&rtype)
        || matches!(
            rtype,
            "Medication"
                | "Substance"
                | "ValueSet"
                | "CodeSystem"
                | "ConceptMap"
                | "Questionnaire"
                | "PlanDefinition"
                | "ActivityDefinition"
                | "Library"
                | "StructureDefinition"
        )
}

/// Whether a search asks for includes that may be patient data: `_revinclude` from a type that is not shared
/// outside patients, `_include` naming such a target type (or none: the reference may lead anywhere).
pub fn asks_patient_includes(params: &[(String, String)]) -> bool {
    params.iter().any(|(k, v)| {
        let parts: Vec<&str> = v.split(':').collect();
        match k.split(':').next() {
            Some("_revinclude") => !shareable_outside_patients(parts[0]),
            Some("_include") => parts.get(2).is_none_or(|t| !shareable_outside_patients(t)),
            _ => false,
        }
    })
}

/// A `_has` towards patient data in a user's search that is not about one patient: the refusal's text.
pub fn has_on_patient_data(params: &[(String, String)]) -> Option<String> {
    params.iter().find_map(|(k, _)| {
        let t = k.strip_prefix("_has:")?.split(':').next()?;
        (super::guard::patient_data(t) || !shareable_outside_patients(t)).then(|| {
            format!(
                "« {k} » n'est pas permis aux utilisateurs : il filtre sur des données patient hors d'une recherche \
                 portant sur un patient"
            )
        })
    })
}

/// A document's content (its Binary, which names the DocumentReference in `securityContext`) changes only by a
/// new version of the document: overwritten or deleted by itself, the bytes would no longer be those the
/// document's hashes and the patient's trail speak of. For every caller — software and development mode too.
pub fn check_document_content(write: Write, before: Option<&Before>) -> Result<(), RepoError> {
    if write != Write::Create
        && let Some((_, Some(s))) = before
        && s.rtype == "Binary"
        && serde_json::from_slice::<Value>(&s.content).is_ok_and(|v| {
            v["securityContext"]["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("DocumentReference/"))
        })
    {
        return Err(RepoError::Forbidden {
            patient: None,
            code: "document-content".into(),
            message: "refusé (document-content) : le contenu d'un document ne se modifie ni ne se supprime \
                      directement ; déposez une nouvelle version du document (ITI-65, relatesTo)"
                .into(),
        });
    }
    Ok(())
}

/// A user's write of patient data, decided before it runs. `sent`: the resource as written (type, id, body;
/// none for a deletion); `before`: the resource as stored ([`socle_store::repo::Repository::before_write`]).
/// Each patient concerned — the one the resource is sent for, the one it belonged to — must be one the policy
/// lets this user act for (care relationship, delegation, break-glass; a patient: their own record), with the
/// stored resource itself as the target (a document the user may not read — masked, refused by the matrix,
/// hidden from the patient — they may not change either); then the rules on documents
/// ([`socle_policy::document_write`]: producers only; patients in the patient categories). Software acting on
/// its own behalf and non-patient data: scopes only. Returns the patients for whom only break-glass let the write
/// through: once it is done, each gets the distinct break-glass audit record and a notification
/// ([`super::after_break_glass`]).
pub fn check_write(
    engine: &Engine,
    actor: Option<&Actor>,
    write: Write,
    sent: Option<(&str, &str, &Value)>,
    before: Option<&Before>,
    break_glass: Option<&str>,
) -> Result<Vec<String>, RepoError> {
    let Some(actor) = actor.filter(|a| is_user(a)) else {
        return Ok(Vec::new());
    };
    // What is written: shared registries and reference data are not users' to change (the Annuaire is fed by
    // its authorities, terminologies by the operator's software); a patient writes their own data only.
    let rtype = sent.map(|(t, _, _)| t).or_else(|| {
        before
            .and_then(|(_, s)| s.as_ref())
            .map(|s| s.rtype.as_str())
    });
    if let Some(t) = rtype {
        if shared_reference(t) {
            return Err(RepoError::Forbidden {
                patient: None,
                code: "reference-data".into(),
                message: format!(
                    "refusé (reference-data) : les ressources {t} (Annuaire, données de référence) ne sont modifiées \
                     que par les logiciels habilités (portées system/)"
                ),
            });
        }
        if matches!(actor, Actor::Patient { .. } | Actor::Representative { .. })
            && !super::guard::patient_data(t)
            && t != "Binary"
        {
            return Err(RepoError::Forbidden {
                patient: None,
                code: "patient-data-only".into(),
                message: format!(
                    "refusé (patient-data-only) : un patient n'écrit que les données de son dossier, pas des {t}"
                ),
            });
        }
        // Their trail is kept by Socle (read as `AuditEvent`): an event of their own making would sit beside it.
        if matches!(actor, Actor::Patient { .. } | Actor::Representative { .. })
            && t == "AuditEvent"
        {
            return Err(RepoError::Forbidden {
                patient: None,
                code: "audit-by-socle".into(),
                message: "refusé (audit-by-socle) : la trace des accès est tenue par Socle ; un patient la lit \
                          (GET AuditEvent) sans y écrire"
                    .into(),
            });
        }
    }
    check_document_content(write, before)?;
    // A document enters or changes the DMP through ITI-65 (its metadata checked against the CI-SIS value sets and
    // its CDA header, a new version by `relatesTo`) and the `$dmp-*` operations (mask, visibility, archive):
    // a user's plain create or update of a DocumentReference would skip all of that. What a user may change in
    // place is the document's description (its title in the patient's list), under the rules below.
    let only_description = |body: &Value| {
        let stored = before
            .and_then(|(_, s)| s.as_ref())
            .and_then(|s| serde_json::from_slice::<Value>(&s.content).ok());
        // Everything but the description must stay as stored — tags and security labels of `meta` included
        // (an archive tag goes through `$dmp-archive`), and the narrative; only the version's own bookkeeping
        // (`meta.versionId`, `meta.lastUpdated`) may differ.
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("description");
                o.remove("id");
                if let Some(Value::Object(meta)) = o.get_mut("meta") {
                    meta.remove("versionId");
                    meta.remove("lastUpdated");
                    if meta.is_empty() {
                        o.remove("meta");
                    }
                }
            }
            v
        };
        stored.is_some_and(|old| strip(&old) == strip(body))
    };
    if let Some(("DocumentReference", _, body)) = sent
        && !(write == Write::Update && only_description(body))
    {
        return Err(RepoError::Forbidden {
            patient: None,
            code: "dmp-by-iti65".into(),
            message: "refusé (dmp-by-iti65) : un document se dépose ou se remplace par ITI-65 (Bundle MHD, \
                      relatesTo pour une nouvelle version) et se gère par les opérations $dmp-* ; une modification \
                      directe de DocumentReference ne change que sa description"
                .into(),
        });
    }
    // A Binary a user writes names what it belongs to: it is read under that resource's decision (one that
    // names nothing is for software only, see `dmp::fetch_binary`).
    if let Some(("Binary", _, body)) = sent
        && body["securityContext"]["reference"]
            .as_str()
            .is_none_or(|r| !r.contains('/'))
    {
        return Err(RepoError::Forbidden {
            patient: None,
            code: "binary-without-context".into(),
            message: "refusé (binary-without-context) : un Binary écrit par un utilisateur nomme la ressource \
                      dont il relève (securityContext, par exemple Patient/…)"
                .into(),
        });
    }
    let documents = sent.is_some_and(|(rtype, _, _)| rtype == "DocumentReference")
        || before
            .and_then(|(_, s)| s.as_ref())
            .is_some_and(|s| s.rtype == "DocumentReference");
    let sent = sent.map(|(rtype, id, body)| {
        let p = socle_store::repo::patient_of_body(rtype, id, body);
        target_of_value(rtype, id, body, p.as_deref())
    });
    let stored = before.map(|(p, s)| match s {
        Some(s) => target_of(s, p.as_deref()),
        None => Target {
            patient: p.clone(),
            rtype: sent.as_ref().and_then(|t| t.rtype.clone()),
            ..Target::default()
        },
    });
    let mut opened = Vec::new();
    for t in [&sent, &stored].into_iter().flatten() {
        if let Some(p) = &t.patient {
            let d = decide_target(engine, actor, t, break_glass)?;
            if is_break_glass(&d) && !opened.contains(p) {
                opened.push(p.clone());
            }
        }
    }
    if documents
        && let Some(d) = socle_policy::document_write(actor, write, sent.as_ref(), stored.as_ref())
    {
        return Err(refused(
            d,
            stored
                .as_ref()
                .or(sent.as_ref())
                .and_then(|t| t.patient.clone()),
        ));
    }
    Ok(opened)
}

/// A user's action on one patient's record as a whole (its DMP state…): the policy must let this user act for
/// the patient. Software and development mode: scopes only.
pub fn check_patient(
    engine: &Engine,
    actor: Option<&Actor>,
    patient: &str,
    break_glass: Option<&str>,
) -> Result<(), RepoError> {
    let Some(actor) = actor.filter(|a| is_user(a)) else {
        return Ok(());
    };
    // The record as a whole: what any delegation lets a professional know (like the patient's identity).
    let target = Target {
        patient: Some(patient.to_string()),
        rtype: Some("Patient".into()),
        ..Target::default()
    };
    decide_target(engine, actor, &target, break_glass).map(|_| ())
}

/// A user's action on a stored resource that they must be allowed to read (decided with its own rules: masks,
/// matrix, visibility).
pub fn check_stored(
    engine: &Engine,
    actor: &Actor,
    s: &Stored,
    patient: Option<&str>,
) -> Result<(), RepoError> {
    decide_target(engine, actor, &target_of(s, patient), None).map(|_| ())
}

fn decide_target(
    engine: &Engine,
    actor: &Actor,
    target: &Target,
    break_glass: Option<&str>,
) -> Result<Decision, RepoError> {
    let d = engine
        .decide(actor, target, break_glass)
        .map_err(|e| RepoError::Invalid(e.to_string()))?;
    if d.allowed {
        Ok(d)
    } else {
        Err(refused(d, target.patient.clone()))
    }
}

fn refused(d: Decision, patient: Option<String>) -> RepoError {
    RepoError::Forbidden {
        patient,
        code: d.reason.code().into(),
        message: format!("refusé ({}) : {}", d.reason.code(), d.explanation),
    }
}

/// Users' batch and transaction entries that the policy cannot decide yet: reads (they would bypass the
/// per-resource decision), deletions and conditional operations.
pub fn bundle_entries_for_users(bundle: &Value) -> Result<(), RepoError> {
    // Checked here too: each entry is decided (its resource indexed) before the transaction would count them.
    let n = bundle["entry"].as_array().map_or(0, Vec::len);
    if n > socle_store::bundle::MAX_ENTRIES {
        return Err(RepoError::Invalid(format!(
            "{n} entrées : au plus {} par Bundle",
            socle_store::bundle::MAX_ENTRIES
        )));
    }
    for (i, e) in bundle["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let method = e["request"]["method"].as_str().unwrap_or("");
        let url = e["request"]["url"].as_str().unwrap_or("");
        // A conditional reference (`Patient?identifier=…`) is resolved by the transaction, after the policy
        // decided on the patient the entry named — none: it could write into anyone's record.
        if let Some(r) = conditional_reference(&e["resource"]) {
            return Err(RepoError::Forbidden {
                patient: None,
                code: "bundle-entry-not-decided".into(),
                message: format!(
                    "entrée {i} : référence conditionnelle « {r} » : dans un Bundle, un utilisateur désigne les \
                     ressources par leur identifiant (la politique d'accès décide avant la résolution)"
                ),
            });
        }
        let conditional = url.contains('?')
            || e["request"].get("ifNoneExist").is_some()
            || e["request"].get("ifMatch").is_some() && method == "DELETE";
        if matches!(method, "GET" | "HEAD" | "DELETE" | "PATCH") || conditional {
            return Err(RepoError::Forbidden {
                patient: None,
                code: "bundle-entry-not-decided".into(),
                message: format!(
                    "entrée {i} ({method} {url}) : dans un Bundle, un utilisateur ne peut que créer ou modifier \
                     (lectures, suppressions et opérations conditionnelles : une requête à la fois)"
                ),
            });
        }
    }
    Ok(())
}

/// The first reference in `v` that is a search (`Type?params`), if any.
fn conditional_reference(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => m.iter().find_map(|(k, x)| match (k.as_str(), x) {
            ("reference", Value::String(r)) if r.contains('?') => Some(r.clone()),
            _ => conditional_reference(x),
        }),
        Value::Array(a) => a.iter().find_map(conditional_reference),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_references_are_found_anywhere() {
        let v = serde_json::json!({"resourceType": "Observation",
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Practitioner?identifier=x|1"}]});
        assert_eq!(
            conditional_reference(&v).as_deref(),
            Some("Practitioner?identifier=x|1")
        );
        assert_eq!(
            conditional_reference(&serde_json::json!({"subject": {"reference": "Patient/p1"}})),
            None
        );
        let b = serde_json::json!({"entry": [{"resource": {"resourceType": "Observation",
            "subject": {"reference": "Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|1"}},
            "request": {"method": "POST", "url": "Observation"}}]});
        assert!(bundle_entries_for_users(&b).is_err());
    }

    #[test]
    fn a_users_bundle_past_the_entry_limit_is_refused_before_its_entries() {
        let entry = serde_json::json!({"resource": {"resourceType": "Basic", "code": {"text": "x"}},
            "request": {"method": "POST", "url": "Basic"}});
        let n = socle_store::bundle::MAX_ENTRIES;
        let b = serde_json::json!({"entry": vec![entry.clone(); n]});
        assert!(bundle_entries_for_users(&b).is_ok());
        let b = serde_json::json!({"entry": vec![entry; n + 1]});
        match bundle_entries_for_users(&b) {
            Err(RepoError::Invalid(m)) => assert!(m.contains("au plus"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn searches_are_scoped_to_one_patient() {
        assert_eq!(
            search_patient(
                "Observation",
                &p(&[("patient", "Patient/p1"), ("code", "x")])
            )
            .unwrap(),
            "p1"
        );
        assert_eq!(
            search_patient("Observation", &p(&[("subject", "p1")])).unwrap(),
            "p1"
        );
        assert_eq!(
            search_patient("Patient", &p(&[("_id", "p1")])).unwrap(),
            "p1"
        );
        assert!(search_patient("Observation", &p(&[("code", "x")])).is_err());
        assert!(search_patient("Observation", &p(&[("patient", "p1,p2")])).is_err());
        assert!(
            search_patient("Observation", &p(&[("patient", "p1"), ("subject", "p2")])).is_err()
        );
        assert_eq!(
            search_patient(
                "Observation",
                &p(&[("patient", "p1"), ("_revinclude", "Provenance:target")])
            )
            .unwrap(),
            "p1"
        );
        assert!(
            search_patient(
                "Patient",
                &p(&[("_id", "p1"), ("_has:Observation:patient:code", "x")])
            )
            .is_err()
        );
        assert!(search_patient("Observation", &p(&[("subject.name", "x")])).is_err());
        // Modifiers that do not restrict to the patient named do not scope.
        assert!(search_patient("Patient", &p(&[("_id:not", "p1")])).is_err());
        assert!(search_patient("Patient", &p(&[("_id:missing", "p1")])).is_err());
        assert!(search_patient("Observation", &p(&[("patient:missing", "false")])).is_err());
        assert!(search_patient("Observation", &p(&[("subject:not", "Patient/p1")])).is_err());
        assert!(search_patient("Observation", &p(&[("patient", "")])).is_err());
        assert_eq!(
            search_patient("Observation", &p(&[("subject:Patient", "p1")])).unwrap(),
            "p1"
        );
        // A modifier next to the scoping parameter only narrows it.
        assert_eq!(
            search_patient(
                "Observation",
                &p(&[("patient", "p1"), ("patient:missing", "false")])
            )
            .unwrap(),
            "p1"
        );
        assert!(search_patient("Patient", &p(&[("name", "x")])).is_err());
    }
}
