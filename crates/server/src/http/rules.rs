//! The patient's rules over the API (MES-5/6, IAM-4): `GET /fhir/Patient/{id}/$policy-rules` lists them,
//! `POST` (Parameters `kind`, `professional`, `actor`, `target`, `detail`, `days`) adds one and
//! `DELETE /fhir/Patient/{id}/$policy-rules/{rule}` revokes one. The patient manages their own blocks, masks,
//! visibility for legal representatives and delegations to professionals (app consents are the identity provider's:
//! `/auth/patient/consents`); software acting for a
//! structure (system scopes) also records care relationships and documents not yet announced.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use socle_fhir::outcome::IssueType;
use socle_policy::Actor;
use socle_store::RepoError;

use super::{App, Req, error, fhir_bytes, json_body, policy, run};

/// Rules a patient may set about their own record.
const PATIENT_KINDS: &[&str] = &["block", "mask", "hide-representative", "patient-delegation"];

/// Rules a legal representative may set for the person they represent: the patient's, except the visibility of
/// documents for representatives (the represented person's choice, e.g. a minor's confidential care).
const REPRESENTATIVE_KINDS: &[&str] = &["block", "mask", "patient-delegation"];

/// Who may manage `patient`'s rules, and which kinds: the patient (their own kinds), their legal representative
/// (the same but the visibility for representatives), software acting for a structure (every kind).
/// Professionals do not manage patients' rules.
fn manager(req: &Req, patient: &str) -> Result<&'static [&'static str], Response> {
    match policy::actor_of(req.caller.as_ref()) {
        Some(Actor::Patient { patient: own }) if own == patient => Ok(PATIENT_KINDS),
        Some(Actor::Representative { patient: own }) if own == patient => Ok(REPRESENTATIVE_KINDS),
        Some(Actor::Client { .. }) => Ok(socle_policy::rules::KINDS),
        None if matches!(req.caller, Some(super::guard::Caller::Insecure)) => {
            Ok(socle_policy::rules::KINDS)
        }
        _ => Err(error(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            "seuls le patient (pour son propre dossier), son représentant légal et les logiciels des structures gèrent \
             ces règles",
        )),
    }
}

fn engine_of(app: &App) -> Result<std::sync::Arc<socle_policy::Engine>, Response> {
    app.policy.clone().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::Transient,
            "moteur de politique indisponible",
        )
    })
}

fn param<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

fn text_param(body: &Value, name: &str) -> Option<String> {
    let p = param(body, name)?;
    ["valueString", "valueCode", "valueId", "valueUri"]
        .iter()
        .find_map(|k| p[*k].as_str())
        .map(str::to_string)
}

/// The visibility rules a user may not see: a document hidden from someone is not betrayed by the rule that
/// hides it, nor by another rule about it (a mask the patient set on a document hidden from representatives).
fn hidden_kinds(actor: Option<&Actor>) -> &'static [&'static str] {
    match actor {
        Some(Actor::Patient { .. }) => &["hide-patient"],
        Some(Actor::Representative { .. }) => &["hide-patient", "hide-representative"],
        _ => &[],
    }
}

/// The resources (`Type/id`) that `rules` hide from a user (`hidden`: [`hidden_kinds`]).
fn unseen_in(
    rules: &[socle_policy::rules::StoredRule],
    hidden: &[&str],
) -> std::collections::HashSet<String> {
    rules
        .iter()
        .filter(|r| hidden.contains(&r.kind.as_str()) && !r.target.is_empty())
        .map(|r| r.target.clone())
        .collect()
}

/// The resources of `patient`'s record hidden from `actor` (a patient: documents not yet announced; a legal
/// representative: those too, and the documents hidden from representatives): left out of what they read about
/// their record, the access trail included.
pub(super) fn unseen_targets(
    engine: &socle_policy::Engine,
    actor: Option<&Actor>,
    patient: &str,
) -> Result<std::collections::HashSet<String>, RepoError> {
    let hidden = hidden_kinds(actor);
    if hidden.is_empty() {
        return Ok(Default::default());
    }
    let rules = engine
        .rules
        .list(patient)
        .map_err(|e| RepoError::Invalid(e.to_string()))?;
    Ok(unseen_in(&rules, hidden))
}

pub(super) async fn list(State(app): State<App>, Path(id): Path<String>, req: Req) -> Response {
    if let Err(r) = manager(&req, &id) {
        return r;
    }
    let engine = match engine_of(&app) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let hidden = hidden_kinds(policy::actor_of(req.caller.as_ref()).as_ref());
    let res = run(&app, &req, None, move |r, c| {
        let mut rules = engine.rules.list(&id).map_err(|e| RepoError::Invalid(e.to_string()))?;
        let unseen = unseen_in(&rules, hidden);
        rules.retain(|r| !hidden.contains(&r.kind.as_str()) && !unseen.contains(&r.target));
        let notes = engine.rules.notifications(&id).map_err(|e| RepoError::Invalid(e.to_string()))?;
        r.audit_operation(c, "policy-rules-read", Some("Patient"), Some(&id), "200", None);
        let mut parameter: Vec<Value> = rules
            .iter()
            .map(|r| {
                let mut part = vec![
                    json!({"name": "id", "valueString": r.id}),
                    json!({"name": "kind", "valueCode": r.kind}),
                ];
                for (n, v) in [("actor", &r.actor), ("target", &r.target), ("detail", &r.detail)] {
                    if !v.is_empty() {
                        part.push(json!({"name": n, "valueString": v}));
                    }
                }
                if let Some(e) = r.expires {
                    part.push(json!({"name": "expires", "valueInstant": socle_store::repo::iso_instant(e)}));
                }
                json!({"name": "rule", "part": part})
            })
            .collect();
        parameter.extend(notes.iter().map(|(kind, message, at)| {
            json!({"name": "notification", "part": [
                {"name": "kind", "valueCode": kind},
                {"name": "message", "valueString": message},
                {"name": "created", "valueInstant": socle_store::repo::iso_instant(*at)}]})
        }));
        Ok(json!({"resourceType": "Parameters", "parameter": parameter}))
    })
    .await;
    match res {
        Ok(v) => fhir_bytes(
            StatusCode::OK,
            serde_json::to_vec(&v).unwrap_or_default(),
            &req,
        ),
        Err(r) => r,
    }
}

pub(super) async fn add(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    req: Req,
    body: Body,
) -> Response {
    let kinds = match manager(&req, &id) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let body = match json_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body["resourceType"] != "Parameters" {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            "corps attendu : Parameters",
        );
    }
    let Some(kind) = text_param(&body, "kind") else {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Required,
            "paramètre « kind » absent",
        );
    };
    if kind == "consent" {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::NotSupported,
            "les autorisations données aux applications ne sont pas des règles d'accès : elles s'accordent sur la \
             page d'autorisation et se gèrent à /auth/patient/consents",
        );
    }
    if !kinds.contains(&kind.as_str()) {
        return error(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            format!(
                "règle « {kind} » : le patient ou son représentant peut poser {}",
                kinds.join(", ")
            ),
        );
    }
    let actor = match text_param(&body, "professional") {
        Some(p) => match crate::admin::idnps_of(&p) {
            Ok(i) => i,
            Err(e) => return error(StatusCode::BAD_REQUEST, IssueType::Value, e.to_string()),
        },
        None => text_param(&body, "actor").unwrap_or_default(),
    };
    let target = text_param(&body, "target").unwrap_or_default();
    let detail = text_param(&body, "detail").unwrap_or_default();
    let days = param(&body, "days").and_then(|p| p["valueInteger"].as_i64());
    if days.is_some_and(|d| !(1..=3650).contains(&d)) {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Value,
            "« days » : de 1 à 3650",
        );
    }
    let engine = match engine_of(&app) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let res = run(&app, &req, None, move |r, c| {
        let expires = days.map(|d| socle_auth::now_ms() + d * 24 * 3600 * 1000);
        let rule = engine
            .rules
            .add(&id, &kind, &actor, &target, &detail, expires)
            .map_err(|e| RepoError::Unprocessable(e.to_string()))?;
        r.audit_operation(c, "policy-rule-add", Some("Patient"), Some(&id), "201", Some(format!("policy-rule={kind}")));
        Ok(json!({"resourceType": "Parameters", "parameter": [{"name": "id", "valueString": rule}]}))
    })
    .await;
    match res {
        Ok(v) => fhir_bytes(
            StatusCode::CREATED,
            serde_json::to_vec(&v).unwrap_or_default(),
            &req,
        ),
        Err(r) => r,
    }
}

pub(super) async fn revoke(
    State(app): State<App>,
    Path((id, rule)): Path<(String, String)>,
    req: Req,
) -> Response {
    let kinds = match manager(&req, &id) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let engine = match engine_of(&app) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let res = run(&app, &req, None, move |r, c| {
        // A patient revokes only the kinds they may set (not a care relationship recorded by a structure).
        let live = engine
            .rules
            .list(&id)
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
        if let Some(found) = live.iter().find(|x| x.id == rule)
            && !kinds.contains(&found.kind.as_str())
        {
            return Err(RepoError::Forbidden {
                patient: None,
                code: "rule-not-yours".into(),
                message: format!(
                    "règle « {} » posée par une structure : le patient ne peut pas la révoquer",
                    found.kind
                ),
            });
        }
        if engine
            .rules
            .revoke(&id, &rule)
            .map_err(|e| RepoError::Invalid(e.to_string()))?
        {
            r.audit_operation(
                c,
                "policy-rule-revoke",
                Some("Patient"),
                Some(&id),
                "200",
                None,
            );
            Ok(())
        } else {
            Err(RepoError::NotFound(format!(
                "aucune règle active « {rule} » pour ce patient"
            )))
        }
    })
    .await;
    match res {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

/// `POST /fhir/Patient/{id}/$delegation-code` (the patient): `Parameters` `section` (repeated: `*`, `documents`,
/// `mesures`, `profil-medical`, `agenda`, or a document type — see `socle_policy::sections`) and `days` (1–90) →
/// the code to give a professional (valid 24 h, usable once).
pub(super) async fn delegation_code(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    req: Req,
    body: Body,
) -> Response {
    match policy::actor_of(req.caller.as_ref()) {
        Some(Actor::Patient { patient } | Actor::Representative { patient }) if patient == id => {}
        _ => {
            return error(
                StatusCode::FORBIDDEN,
                IssueType::Forbidden,
                "seul le patient (ou son représentant légal) crée un code de délégation pour son dossier",
            );
        }
    }
    let body = match json_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let sections: Vec<String> = body["parameter"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["name"] == "section")
                .filter_map(|p| p["valueString"].as_str().or(p["valueCode"].as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let days = param(&body, "days")
        .and_then(|p| p["valueInteger"].as_i64())
        .unwrap_or(0);
    let engine = match engine_of(&app) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let res = run(&app, &req, None, move |r, c| {
        let code = engine
            .rules
            .delegation_code(&id, &sections, days)
            .map_err(|e| RepoError::Unprocessable(e.to_string()))?;
        r.audit_operation(
            c,
            "delegation-code",
            Some("Patient"),
            Some(&id),
            "201",
            None,
        );
        Ok(json!({"resourceType": "Parameters", "parameter": [
            {"name": "code", "valueString": code},
            {"name": "validity", "valueString": "24 heures, une seule utilisation"}]}))
    })
    .await;
    match res {
        Ok(v) => fhir_bytes(
            StatusCode::CREATED,
            serde_json::to_vec(&v).unwrap_or_default(),
            &req,
        ),
        Err(r) => r,
    }
}

/// `POST /fhir/Patient/$delegation-claim` (a professional): `Parameters` `code` → the patient and the end of the
/// delegation; the patient is notified.
pub(super) async fn delegation_claim(
    State(app): State<App>,
    headers: HeaderMap,
    req: Req,
    body: Body,
) -> Response {
    let Some(Actor::Professional { idnps, .. }) = policy::actor_of(req.caller.as_ref()) else {
        return error(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            "un code de délégation est utilisé par un professionnel authentifié",
        );
    };
    let body = match json_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(code) = text_param(&body, "code") else {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Required,
            "paramètre « code » absent",
        );
    };
    let engine = match engine_of(&app) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let res = run(&app, &req, None, move |r, c| {
        let (patient, rule, end) = match engine.rules.claim_delegation(&code, &idnps) {
            Ok(x) => x,
            Err(e) => {
                r.audit_operation(c, "delegation-claim", Some("Patient"), None, "403", None);
                return Err(RepoError::Forbidden {
                    patient: None,
                    code: "delegation-code".into(),
                    message: e.to_string(),
                });
            }
        };
        r.audit_operation(
            c,
            "delegation-claim",
            Some("Patient"),
            Some(&patient),
            "200",
            Some(format!("policy-rule={rule}")),
        );
        let _ = engine.rules.notify(
            &patient,
            "delegation",
            &format!(
                "Le professionnel {} a utilisé votre code de délégation (jusqu'au {})",
                c.principal,
                socle_store::repo::iso_instant(end)
            ),
        );
        Ok(json!({"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": format!("Patient/{patient}")}},
            {"name": "rule", "valueString": rule},
            {"name": "end", "valueInstant": socle_store::repo::iso_instant(end)}]}))
    })
    .await;
    match res {
        Ok(v) => fhir_bytes(
            StatusCode::OK,
            serde_json::to_vec(&v).unwrap_or_default(),
            &req,
        ),
        Err(r) => r,
    }
}
