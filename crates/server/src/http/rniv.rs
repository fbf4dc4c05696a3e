//! Identity vigilance on the local patient index: `GET /fhir/Patient/{id}/$duplicates` (same five traits:
//! duplicates; same name, first name, birth date and sex but another birth place: homonyms) and
//! `POST /fhir/Patient/$merge` (the source record is replaced by the target, both linked, in one transaction).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use socle_fhir::outcome::IssueType;
use socle_ins::rniv::traits_of;
use socle_ins::traits::normalize_name;
use socle_store::{RepoError, Repository, RequestContext};

use super::{App, Req, error, fhir_bytes, json_body, repo_error, run};

fn patient(repo: &Repository, ctx: &RequestContext, id: &str) -> Result<Value, RepoError> {
    let s = repo.read(ctx, "Patient", id)?;
    serde_json::from_slice(&s.content).map_err(|e| RepoError::Invalid(e.to_string()))
}

/// A local Patient named by a parameter (`valueReference`, or `valueString` "Patient/x" or "x").
pub(super) fn reference_id(p: &Value) -> Option<String> {
    let r = p["valueReference"]["reference"]
        .as_str()
        .or_else(|| p["valueString"].as_str())?;
    let id = r.rsplit('/').next().unwrap_or(r);
    (!id.is_empty()).then(|| id.to_string())
}

/// Loads a local Patient for an INSi call: refused (422) when its identity is doubtful or fictitious.
pub(super) fn patient_for_insi(
    repo: &Repository,
    ctx: &RequestContext,
    id: &str,
) -> Result<Value, Response> {
    let p = patient(repo, ctx, id).map_err(|e| repo_error(&e))?;
    socle_ins::rniv::insi_allowed(&p)
        .map_err(|m| error(StatusCode::UNPROCESSABLE_ENTITY, IssueType::Processing, m))?;
    Ok(p)
}

/// How many records born the same day, of the same sex, `$duplicates` compares at most.
const DUPLICATE_CANDIDATES: usize = 1000;

pub(super) async fn duplicates(
    State(app): State<App>,
    Path(id): Path<String>,
    req: Req,
) -> Response {
    let res = run(&app, &req, None, move |repo, ctx| {
        let me = patient(repo, ctx, &id)?;
        let t = traits_of(&me);
        // Records merged into another (deactivated) are resolved duplicates: not listed again.
        let params = vec![
            ("birthdate".to_string(), t.birth_date.clone()),
            ("gender".to_string(), t.gender.clone()),
            ("active:not".to_string(), "false".to_string()),
            ("_count".to_string(), DUPLICATE_CANDIDATES.to_string()),
        ];
        let page = repo.search(ctx, "Patient", &params, false)?;
        let incomplete = page.next.is_some();
        let key = |x: &socle_ins::Traits| {
            (
                normalize_name(&x.family),
                x.given
                    .first()
                    .map(|g| normalize_name(g))
                    .unwrap_or_default(),
            )
        };
        let mine = key(&t);
        let (mut dup, mut homo) = (Vec::new(), Vec::new());
        for s in page.matches {
            if s.id == id {
                continue;
            }
            let Ok(other) = serde_json::from_slice::<Value>(&s.content) else {
                continue;
            };
            let o = traits_of(&other);
            if key(&o) != mine || mine.0.is_empty() {
                continue;
            }
            match (&t.birth_place, &o.birth_place) {
                (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => homo.push(s.id),
                _ => dup.push(s.id),
            }
        }
        Ok((dup, homo, incomplete))
    })
    .await;
    let (dup, homo, incomplete) = match res {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut params = Vec::new();
    for d in &dup {
        params.push(
            json!({"name": "duplicate", "valueReference": {"reference": format!("Patient/{d}")}}),
        );
    }
    for h in &homo {
        params.push(
            json!({"name": "homonym", "valueReference": {"reference": format!("Patient/{h}")}}),
        );
    }
    if incomplete {
        // More records share the birth date and sex than were compared: said, not hidden.
        params.push(json!({"name": "incomplete", "valueBoolean": true}));
    }
    fhir_bytes(
        StatusCode::OK,
        serde_json::to_vec(&json!({"resourceType": "Parameters", "parameter": params}))
            .unwrap_or_default(),
        &req,
    )
}

pub(super) async fn merge(
    State(app): State<App>,
    headers: HeaderMap,
    req: Req,
    body: Body,
) -> Response {
    let body = match json_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body["resourceType"] != "Parameters" {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            "une ressource Parameters est attendue",
        );
    }
    let find = |name: &str| {
        body["parameter"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .and_then(reference_id)
    };
    let (Some(source), Some(target)) = (find("source-patient"), find("target-patient")) else {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Required,
            "paramètres source-patient et target-patient (références Patient) obligatoires",
        );
    };
    if source == target {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            "source-patient et target-patient désignent le même dossier",
        );
    }
    let (src, tgt) = (source.clone(), target.clone());
    let res = run(
        &app,
        &req,
        Some(("merge", Some("Patient"), Some(&source))),
        move |repo, ctx| {
            let s_stored = repo.read(ctx, "Patient", &src)?;
            let t_stored = repo.read(ctx, "Patient", &tgt)?;
            let mut s: Value = serde_json::from_slice(&s_stored.content)
                .map_err(|e| RepoError::Invalid(e.to_string()))?;
            let mut t: Value = serde_json::from_slice(&t_stored.content)
                .map_err(|e| RepoError::Invalid(e.to_string()))?;
            let replaced = |p: &Value| {
                p["link"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x["type"] == "replaced-by"))
            };
            if replaced(&s) || replaced(&t) {
                return Err(RepoError::Conflict(
                    "un des dossiers a déjà été fusionné dans un autre".into(),
                ));
            }
            s["active"] = json!(false);
            push_link(&mut s, &tgt, "replaced-by");
            push_link(&mut t, &src, "replaces");
            if t.get("active").is_none() {
                t["active"] = json!(true);
            }
            let entry = |p: &Value, id: &str, v: i64| {
                json!({"resource": p, "request": {"method": "PUT", "url": format!("Patient/{id}"), "ifMatch": format!("W/\"{v}\"")}})
            };
            repo.bundle(
                ctx,
                json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                    entry(&s, &src, s_stored.version), entry(&t, &tgt, t_stored.version)
                ]}),
            )?;
            repo.audit_operation(
                ctx,
                "merge",
                Some("Patient"),
                Some(&tgt),
                "success",
                Some(format!("Patient/{src} remplacé par Patient/{tgt}")),
            );
            let t_now = repo.read(ctx, "Patient", &tgt)?;
            serde_json::from_slice::<Value>(&t_now.content)
                .map_err(|e| RepoError::Invalid(e.to_string()))
        },
    )
    .await;
    let target_now = match res {
        Ok(v) => v,
        Err(r) => return r,
    };
    let out = json!({"resourceType": "Parameters", "parameter": [
        {"name": "outcome", "resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational",
            "diagnostics": format!("Patient/{source} fusionné dans Patient/{target}")}]}},
        {"name": "result", "resource": target_now}
    ]});
    fhir_bytes(
        StatusCode::OK,
        serde_json::to_vec(&out).unwrap_or_default(),
        &req,
    )
}

fn push_link(p: &mut Value, other: &str, kind: &str) {
    let link = json!({"other": {"reference": format!("Patient/{other}")}, "type": kind});
    match p["link"].as_array_mut() {
        Some(a) => a.push(link),
        None => p["link"] = json!([link]),
    }
}
