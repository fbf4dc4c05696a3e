//! The DMP on the FHIR API (IHE MHD and the DMP operations):
//!
//! - ITI-65 Provide Document Bundle: `POST /fhir` with an MHD Bundle (recognised by its profile or its
//!   SubmissionSet `List`) → checked by `socle_dmp`, bytes put in the blob store, stored in one transaction with
//!   the record, the visibility rules and the feed event; the response lists the request's entries in order.
//! - ITI-67 / ITI-66: ordinary `DocumentReference` / `List` searches (decided per patient by the policy).
//! - ITI-68: `GET /fhir/Binary/{id}` → the document's bytes, read from the blob store and verified, as its own
//!   media type (or as a FHIR `Binary` when JSON is asked for); decided as a read of its DocumentReference.
//! - `GET /fhir/Patient/{id}/$dmp`: the record's state; `POST …/$dmp-close`, `$dmp-object`, `$dmp-reopen`.
//! - `POST /fhir/DocumentReference/{id}/$dmp-mask` / `$dmp-unmask` (hidden from professionals),
//!   `$dmp-announce` (made visible to the patient), `$dmp-archive` / `$dmp-unarchive`.

use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use socle_dmp::record::{self, FeedPlan, RecordAction};
use socle_dmp::{DmpError, Submission, Terminology};
use socle_fhir::outcome::IssueType;
use socle_policy::Actor;
use socle_policy::rules::RuleStore;
use socle_store::blob::{BlobConfig, BlobStore};
use socle_store::repo::Stored;
use socle_store::{RepoError, Repository, RequestContext};

use super::{App, Req, error, fhir_bytes, guard, policy, prepare, repo_error, version_headers};

macro_rules! tryr {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

/// The DMP's configuration and document store.
pub struct Dmp {
    pub terms: Terminology,
    pub blobs: Arc<dyn BlobStore>,
    pub opts: socle_dmp::Options,
}

impl Dmp {
    /// Opens the DMP of a store: its tables, its blob store (`blobs`), the embedded value sets and the
    /// operator's (`value_sets`).
    pub fn open(
        store: &Arc<dyn socle_store::Store>,
        blobs: &BlobConfig,
        value_sets: Option<&FsPath>,
    ) -> anyhow::Result<Dmp> {
        record::open(store).map_err(|e| anyhow::anyhow!("tables du DMP : {e}"))?;
        let mut terms = Terminology::embedded().map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(dir) = value_sets {
            let loaded = terms
                .load_dir(dir)
                .map_err(|e| anyhow::anyhow!("jeux de valeurs : {e}"))?;
            tracing::info!(loaded = ?loaded, "jeux de valeurs CI-SIS chargés");
        }
        let blobs = socle_store::blob::open(blobs).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Dmp {
            terms,
            blobs,
            opts: socle_dmp::Options::default(),
        })
    }
}

/// The code system of Socle's DMP error codes (OperationOutcome `details`).
const ERROR_SYSTEM: &str = "https://socle.example/fhir/CodeSystem/dmp-error";
/// The tag of archived documents.
const ARCHIVE_TAG: &str = "https://socle.example/fhir/CodeSystem/dmp-state";

fn dmp_error(e: &DmpError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    let code = match e.status() {
        400 => "structure",
        404 => "not-found",
        409 => "conflict",
        413 => "too-long",
        500 => "exception",
        _ => match e {
            DmpError::UnknownCode { .. } => "code-invalid",
            DmpError::Missing { .. } => "required",
            DmpError::IdentityNotQualified { .. } => "business-rule",
            _ => "invalid",
        },
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "DMP : échec interne");
    }
    let mut issue = json!({
        "severity": "error",
        "code": code,
        "details": {"coding": [{"system": ERROR_SYSTEM, "code": e.code()}], "text": e.to_string()},
        "diagnostics": e.to_string(),
    });
    if let Some(f) = e.field() {
        issue["expression"] = json!([f]);
    }
    let body = json!({"resourceType": "OperationOutcome", "issue": [issue]});
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(super::FHIR_JSON),
        )],
        body.to_string(),
    )
        .into_response()
}

enum Failure {
    Dmp(DmpError),
    Repo(RepoError),
}

impl From<DmpError> for Failure {
    fn from(e: DmpError) -> Self {
        Failure::Dmp(e)
    }
}
impl From<RepoError> for Failure {
    fn from(e: RepoError) -> Self {
        Failure::Repo(e)
    }
}

impl Failure {
    fn status(&self) -> u16 {
        match self {
            Failure::Dmp(e) => e.status(),
            Failure::Repo(e) => e.status(),
        }
    }
    fn response(&self) -> Response {
        match self {
            Failure::Dmp(e) => dmp_error(e),
            Failure::Repo(e) => repo_error(e),
        }
    }
    /// What the patient's trail says of a refusal besides its status: the policy's reason code (never the
    /// message, which may quote the document).
    fn trail_detail(&self) -> Option<String> {
        match self {
            Failure::Repo(RepoError::Forbidden { code, .. }) => Some(format!("policy={code}")),
            _ => None,
        }
    }
}

fn service(app: &App) -> Result<Arc<Dmp>, Response> {
    app.opts.dmp.clone().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::NotSupported,
            "service DMP non configuré sur ce serveur",
        )
    })
}

/// The value of a unique id as the duplicate check compares it (`socle_dmp::record`): its system left out (a
/// uniqueId is unique by itself), surrounding spaces and a `urn:oid:` prefix removed.
fn token((_, value): &(Option<String>, String)) -> String {
    let v = value.trim();
    v.strip_prefix("urn:oid:").unwrap_or(v).to_string()
}

fn json_of(s: &Stored) -> Result<Value, RepoError> {
    serde_json::from_slice(&s.content)
        .map_err(|e| RepoError::Invalid(format!("ressource stockée illisible : {e}")))
}

/// The CDA header of a stored document (`None`: its bytes are not a CDA document, or are kept elsewhere).
fn stored_cda(
    r: &Repository,
    ctx: &RequestContext,
    dmp: &Dmp,
    doc: &Value,
) -> Result<Option<socle_cda::CdaDocument>, Failure> {
    let Some(id) = doc["content"][0]["attachment"]["url"]
        .as_str()
        .and_then(|u| u.rsplit_once("Binary/"))
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty() && !id.contains(['/', '?', '#']))
    else {
        return Ok(None);
    };
    let bin = match r.read(ctx, "Binary", id) {
        Ok(s) => json_of(&s)?,
        Err(RepoError::NotFound(_) | RepoError::Gone(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some((sha, _)) = socle_dmp::blob_of(&bin) else {
        return Ok(None);
    };
    let bytes = dmp
        .blobs
        .get(&sha)
        .map_err(|e| DmpError::Storage(e.to_string()))?;
    Ok(socle_cda::parse(&bytes, &dmp.opts.cda).ok())
}

/// ITI-65: a Provide Document Bundle.
pub(super) async fn provide(app: App, req: Req, body: Value) -> Response {
    let dmp = tryr!(service(&app));
    let (actor, engine, bg) = tryr!(super::write_policy(&app, &req));
    let repo = app.repo.clone();
    let ctx = req.ctx.clone();
    let out = super::blocking(move || {
        let mut patient = None;
        let out = provide_blocking(
            &repo,
            &ctx,
            &dmp,
            body,
            actor.as_ref(),
            engine.as_deref(),
            bg.as_deref(),
            &mut patient,
        );
        (out, patient)
    })
    .await;
    match tryr!(out) {
        (Ok(v), _) => fhir_bytes(StatusCode::OK, v.to_string().into_bytes(), &req),
        (Err(f), patient) => {
            // A refused feed for an existing patient is in that patient's trail, with the reason's code.
            app.repo.audit_operation(
                &req.ctx,
                "transaction",
                Some("DocumentReference"),
                patient.as_deref(),
                &f.status().to_string(),
                f.trail_detail(),
            );
            f.response()
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn provide_blocking(
    r: &Repository,
    ctx: &RequestContext,
    dmp: &Dmp,
    body: Value,
    actor: Option<&Actor>,
    engine: Option<&socle_policy::Engine>,
    bg: Option<&str>,
    known_patient: &mut Option<String>,
) -> Result<Value, Failure> {
    let n_entries = body["entry"].as_array().map_or(0, Vec::len);
    let by = match actor {
        Some(Actor::Patient { .. } | Actor::Representative { .. }) => socle_dmp::Submitter::Patient,
        _ => socle_dmp::Submitter::Professional,
    };
    let sub = Submission::parse(body, &dmp.terms, &dmp.opts, by)?;
    let patient = match r.read(ctx, "Patient", &sub.patient) {
        Ok(p) => p,
        Err(RepoError::NotFound(_) | RepoError::Gone(_)) => {
            return Err(DmpError::UnknownPatient(format!("Patient/{}", sub.patient)).into());
        }
        Err(e) => return Err(e.into()),
    };
    *known_patient = Some(sub.patient.clone());
    sub.check_patient(&json_of(&patient)?)?;
    if let Some(e) = engine {
        policy::check_patient(e, actor, &sub.patient, bg)?;
    }
    let mut superseded = Vec::new();
    for d in &sub.docs {
        let Some(old_id) = &d.replaces else { continue };
        let old = match r.read(ctx, "DocumentReference", old_id) {
            Ok(s) => s,
            Err(RepoError::NotFound(_) | RepoError::Gone(_)) => {
                return Err(DmpError::Replacement(format!(
                    "DocumentReference/{old_id} n'existe pas dans le DMP"
                ))
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        let v = json_of(&old)?;
        let same_patient = v["subject"]["reference"]
            .as_str()
            .and_then(|s| s.rsplit_once("Patient/"))
            .is_some_and(|(_, id)| id == sub.patient);
        if !same_patient {
            return Err(DmpError::Replacement(format!(
                "DocumentReference/{old_id} concerne un autre patient"
            ))
            .into());
        }
        if v["status"] != "current" {
            return Err(DmpError::Replacement(format!(
                "DocumentReference/{old_id} a le statut « {} » : seul un document en vigueur (current) est remplacé",
                v["status"].as_str().unwrap_or("?")
            ))
            .into());
        }
        // Replacing is changing the old document: the same rules as an update (its producer; a patient, their own).
        if let Some(e) = engine {
            policy::check_write(
                e,
                actor,
                socle_policy::Write::Update,
                None,
                Some(&(Some(sub.patient.clone()), Some(old.clone()))),
                bg,
            )?;
        }
        // Once allowed to replace it: a new version of a CDA document: same setId, greater versionNumber than the one it replaces.
        if let Some(new) = &d.cda
            && let Some(old) = stored_cda(r, ctx, dmp, &v)?
        {
            socle_dmp::check_new_version(d.index, &old, new)?;
        }
        superseded.push((old_id.clone(), old.version, v));
    }
    // A record that takes no feed refuses it before its bytes are written (checked again in the transaction,
    // which decides): a closed record would otherwise leave each refused document on disk until a sweep.
    if let Some(e) =
        record::state(r.store(), &sub.patient)?.and_then(|st| record::refusal(&st.state))
    {
        return Err(e.into());
    }
    let mut blobs = Vec::with_capacity(sub.parts.len());
    for p in &sub.parts {
        let b = dmp
            .blobs
            .put(&p.bytes)
            .map_err(|e| DmpError::Storage(e.to_string()))?;
        blobs.push((b.sha256, b.size));
    }
    let documents: Vec<(String, Vec<(String, String)>)> = sub
        .docs
        .iter()
        .map(|d| (token(&d.unique_id), d.labels.clone()))
        .collect();
    let submission_token = token(&sub.unique_id);
    let patient_id = sub.patient.clone();
    let notes = sub.notes.clone();
    let (tx, layout) = sub.into_transaction(&blobs, &superseded);
    let plan = FeedPlan {
        patient: patient_id,
        submission_token,
        documents,
        author: ctx.principal.clone(),
        layout,
    };
    let mut failure = None;
    let resp = r.transaction_with(ctx, tx, &mut |view, responses| {
        record::commit_in(view, &plan, responses, &mut failure)
    });
    let resp = match resp {
        Ok(v) => v,
        Err(e) => {
            return Err(match failure {
                Some(f) => Failure::Dmp(f),
                None => Failure::Repo(e),
            });
        }
    };
    // The response lists the request's entries in their order (the stored transaction orders them its way).
    let stored = resp["entry"].as_array().cloned().unwrap_or_default();
    let mut entries = vec![Value::Null; n_entries];
    for (orig, pos) in &plan.layout.origin {
        if let (Some(slot), Some(e)) = (entries.get_mut(*orig), stored.get(*pos)) {
            *slot = e.clone();
        }
    }
    if !notes.is_empty()
        && let Some(list) = entries.get_mut(plan.layout.list_origin)
    {
        let issues: Vec<Value> = notes
            .iter()
            .map(|n| json!({"severity": "warning", "code": "informational", "diagnostics": n}))
            .collect();
        list["response"]["outcome"] = json!({"resourceType": "OperationOutcome", "issue": issues});
    }
    Ok(json!({"resourceType": "Bundle", "type": "transaction-response", "entry": entries}))
}

/// The request's facts for a route that serves other media types than JSON (ITI-68): the usual checks without
/// the `Accept` one; returns the `Accept` header too.
fn lenient_req(app: &App, request: &Request) -> Result<(Req, String), Response> {
    let mut headers = request.headers().clone();
    let accept = headers
        .remove(header::ACCEPT)
        .and_then(|h| h.to_str().ok().map(str::to_string))
        .unwrap_or_default();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0);
    let caller = request.extensions().get::<guard::Caller>().cloned();
    let req = prepare(app, &headers, request.uri().query(), peer, caller)?;
    Ok((req, accept))
}

/// Whether the client asked for the FHIR `Binary` resource rather than the document itself.
fn wants_resource(req: &Req, accept: &str) -> bool {
    req.params.iter().any(|(k, _)| k == "_format")
        || accept.split(',').any(|a| {
            matches!(
                a.split(';').next().unwrap_or("").trim(),
                "application/fhir+json" | "application/json" | "application/json+fhir"
            )
        })
}

/// A Binary, read under the policy of its DocumentReference, and its bytes from the blob store (verified);
/// `None` for a Binary kept inline.
async fn fetch_binary(
    app: &App,
    req: &Req,
    id: String,
) -> Result<(Stored, Value, Option<Vec<u8>>), Response> {
    let dmp = service(app)?;
    let actor = policy::actor_of(req.caller.as_ref());
    let bg = policy::break_glass(req.break_glass.as_deref(), req.caller.as_ref())
        .map_err(|e| repo_error(&e))?;
    let engine = app.policy.clone();
    let repo = app.repo.clone();
    let ctx = req.ctx.clone();
    let out = super::blocking(
        move || -> Result<(Stored, Value, Option<Vec<u8>>), Failure> {
            let s = repo.read(&ctx, "Binary", &id)?;
            let bin = json_of(&s)?;
            // Decided as a read of what it belongs to (`securityContext`): a document (its patient, type, masks,
            // visibility), or any other resource — a patient's record among them. A Binary that names nothing
            // could hold anyone's data: users do not read it (software acting on its own behalf does).
            let context = bin["securityContext"]["reference"]
                .as_str()
                .and_then(|r| r.split_once('/'))
                .filter(|(t, i)| !t.is_empty() && !i.is_empty() && !i.contains(['/', '?', '#']));
            if context.is_none() && actor.as_ref().is_some_and(policy::is_user) {
                return Err(RepoError::Forbidden {
                    patient: None,
                    code: "binary-without-context".into(),
                    message: format!(
                        "refusé (binary-without-context) : Binary/{id} ne nomme pas la ressource dont il relève \
                         (securityContext) ; sa lecture est réservée aux logiciels agissant pour leur compte"
                    ),
                }
                .into());
            }
            if let (Some(actor), Some(engine)) = (&actor, &engine)
                && let Some((rtype, of)) = context
            {
                let note = if rtype == "DocumentReference" {
                    format!(" (document de Binary/{id})")
                } else {
                    format!(" (contexte de Binary/{id})")
                };
                super::decided_read(
                    &repo,
                    &ctx,
                    engine,
                    actor,
                    (rtype, of, None),
                    bg.as_deref(),
                    &note,
                )?;
            }
            let bytes = match socle_dmp::blob_of(&bin) {
                Some((sha, _)) => Some(
                    dmp.blobs
                        .get(&sha)
                        .map_err(|e| DmpError::Storage(e.to_string()))?,
                ),
                // Kept inline (a Binary created directly): served as stored, decoded only for a raw read.
                None => None,
            };
            Ok((s, bin, bytes))
        },
    )
    .await?;
    out.map_err(|f| f.response())
}

/// The bytes of an inline Binary (`data`; whitespace inside base64 is tolerated, as in the official examples).
fn inline_bytes(bin: &Value) -> Result<Vec<u8>, Response> {
    let compact: Vec<u8> = bin["data"]
        .as_str()
        .unwrap_or("")
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| {
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                IssueType::Processing,
                format!(
                    "Binary.data n'est pas du base64 valide ({e}) : demandez le format FHIR (_format=json)"
                ),
            )
        })
}

/// `GET /fhir/Binary/{id}/$n1-body`: the body of a level-1 CDA document (the PDF it wraps), as its own media
/// type; decided like the document itself.
pub(super) async fn n1_body(
    State(app): State<App>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let (req, _) = tryr!(lenient_req(&app, &request));
    let (_, bin, bytes) = tryr!(fetch_binary(&app, &req, id).await);
    let bytes = match bytes {
        Some(b) => b,
        None => tryr!(inline_bytes(&bin)),
    };
    let limits = socle_cda::Limits::default();
    match super::blocking(move || socle_cda::extract_n1_body(&bytes, &limits)).await {
        Ok(Ok(Some((media_type, body)))) => document_response(&media_type, body),
        Ok(Ok(None)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueType::NotSupported,
            "document structuré (CDA niveau 3) : il n'a pas de corps non structuré à extraire",
        ),
        Ok(Err(e)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueType::Processing,
            format!("ce document n'est pas un CDA lisible : {e}"),
        ),
        Err(r) => r,
    }
}

/// A document's bytes as its own media type. A document is data, never a page of this site: no sniffing, no
/// script.
fn document_response(media_type: &str, bytes: Vec<u8>) -> Response {
    let ct = HeaderValue::from_str(media_type)
        .ok()
        .filter(|_| !media_type.is_empty())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let mut resp = (StatusCode::OK, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    resp
}

/// ITI-68: a document's bytes.
pub(super) async fn read_binary(
    State(app): State<App>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let (req, accept) = tryr!(lenient_req(&app, &request));
    let range = request
        .headers()
        .get(header::RANGE)
        .map(|h| h.to_str().unwrap_or("?").to_string());
    let (s, mut bin, bytes) = tryr!(fetch_binary(&app, &req, id).await);
    // The client holds this version already (its ETag, or a copy as recent): nothing to send again (read decided
    // and traced above).
    if super::not_modified(request.headers(), &s) {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        version_headers(&mut resp, &s);
        return resp;
    }
    let as_resource = wants_resource(&req, &accept);
    let bytes = match bytes {
        None if as_resource => return super::resource_response(StatusCode::OK, &s, &req),
        None => tryr!(inline_bytes(&bin)),
        Some(b) => b,
    };
    if as_resource {
        if let Some(meta) = bin["meta"].as_object_mut() {
            meta.remove("extension");
        }
        bin["data"] = json!(base64::engine::general_purpose::STANDARD.encode(&bytes));
        let mut resp = fhir_bytes(StatusCode::OK, bin.to_string().into_bytes(), &req);
        version_headers(&mut resp, &s);
        return resp;
    }
    let media_type = bin["contentType"].as_str().unwrap_or("").to_string();
    let mut resp = match range.as_deref().map(|r| byte_range(r, bytes.len())) {
        None => document_response(&media_type, bytes),
        // A part of the document (a viewer fetching a large one piece by piece).
        Some(Some((first, last))) => {
            let total = bytes.len();
            let mut resp = document_response(&media_type, bytes[first..=last].to_vec());
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{total}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            resp
        }
        Some(None) => {
            let mut resp = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                IssueType::Invalid,
                format!(
                    "Range non satisfiable : une seule plage d'octets (bytes=début-fin, bytes=début-, bytes=-n) \
                     dans un document de {} octets",
                    bytes.len()
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", bytes.len())) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            resp
        }
    };
    resp.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    version_headers(&mut resp, &s);
    resp
}

/// One byte range of a `Range` header (RFC 9110 §14.1.2: `bytes=a-b`, `bytes=a-`, `bytes=-n`) within a document of
/// `len` bytes, as inclusive offsets; `None` when it is malformed, asks for several ranges, or lies outside.
fn byte_range(header: &str, len: usize) -> Option<(usize, usize)> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (a.is_empty(), b.is_empty()) {
        (true, false) if digits(b) => {
            let n: usize = b.parse().ok()?;
            (n > 0).then(|| (len.saturating_sub(n), len - 1))
        }
        (false, true) if digits(a) => {
            let first: usize = a.parse().ok()?;
            (first < len).then_some((first, len - 1))
        }
        (false, false) if digits(a) && digits(b) => {
            let (first, last): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
            (first <= last && first < len).then(|| (first, last.min(len - 1)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod range_tests {
    use super::byte_range;

    #[test]
    fn ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(byte_range("bytes=90-200", 100), Some((90, 99)));
        assert_eq!(byte_range("bytes=95-", 100), Some((95, 99)));
        assert_eq!(byte_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(byte_range("bytes=-200", 100), Some((0, 99)));
        for bad in [
            "bytes=100-",
            "bytes=5-1",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=-0",
            "bytes=a-b",
            "bytes=-",
            "",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(byte_range(bad, 100), None, "{bad}");
        }
        assert_eq!(byte_range("bytes=0-0", 0), None);
    }
}

/// Who acts on a record: the patient themself (or their legal representative) or software acting for a structure
/// (or the developer).
fn record_manager(req: &Req, patient: &str) -> Result<(), Response> {
    match policy::actor_of(req.caller.as_ref()) {
        Some(Actor::Patient { patient: own } | Actor::Representative { patient: own })
            if own == patient =>
        {
            Ok(())
        }
        Some(Actor::Client { .. }) => Ok(()),
        None if matches!(req.caller, Some(guard::Caller::Insecure)) => Ok(()),
        _ => Err(error(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            "seuls le patient (pour son propre dossier) et les logiciels habilités agissent sur l'existence du DMP",
        )),
    }
}

fn state_json(patient: &str, st: Option<&record::RecordState>, documents: i64) -> Value {
    let mut p = vec![json!({"name": "exists", "valueBoolean": st.is_some()})];
    if let Some(s) = st {
        p.push(json!({"name": "state", "valueCode": s.state}));
        p.push(json!({"name": "label", "valueString": record::label(&s.state)}));
        p.push(
            json!({"name": "created", "valueInstant": socle_store::repo::iso_instant(s.created)}),
        );
        p.push(
            json!({"name": "changed", "valueInstant": socle_store::repo::iso_instant(s.changed)}),
        );
        p.push(json!({"name": "reason", "valueString": s.reason}));
    }
    p.push(json!({"name": "documents", "valueInteger": documents}));
    p.push(
        json!({"name": "patient", "valueReference": {"reference": format!("Patient/{patient}")}}),
    );
    json!({"resourceType": "Parameters", "parameter": p})
}

/// The number of current documents of a patient.
fn current_documents(
    r: &Repository,
    ctx: &RequestContext,
    patient: &str,
) -> Result<i64, RepoError> {
    let page = r.search(
        ctx,
        "DocumentReference",
        &[
            ("patient".into(), format!("Patient/{patient}")),
            ("status".into(), "current".into()),
            ("_summary".into(), "count".into()),
        ],
        true,
    )?;
    Ok(page.total.unwrap_or(0))
}

/// `GET /fhir/Patient/{id}/$dmp`: does the record exist, in which state, with how many current documents.
pub(super) async fn record_state(
    State(app): State<App>,
    Path(id): Path<String>,
    req: Req,
) -> Response {
    let engine = app.policy.clone();
    let actor = policy::actor_of(req.caller.as_ref());
    let out = super::run(&app, &req, None, move |r, c| {
        if let Some(e) = &engine {
            policy::check_patient(e, actor.as_ref(), &id, None)?;
        }
        r.read(c, "Patient", &id)?;
        let st = record::state(r.store(), &id).map_err(|e| RepoError::Invalid(e.to_string()))?;
        let mut n = current_documents(r, c, &id)?;
        // What is hidden from a patient or a legal representative is not counted for them either.
        if let (Some(e), Some(a @ (Actor::Patient { .. } | Actor::Representative { .. }))) =
            (&engine, &actor)
        {
            let hidden: Vec<String> = super::rules::unseen_targets(e, Some(a), &id)?
                .into_iter()
                .filter_map(|t| t.strip_prefix("DocumentReference/").map(str::to_string))
                .collect();
            if !hidden.is_empty() {
                let page = r.search(
                    c,
                    "DocumentReference",
                    &[
                        ("_id".into(), hidden.join(",")),
                        ("patient".into(), format!("Patient/{id}")),
                        ("status".into(), "current".into()),
                        ("_summary".into(), "count".into()),
                    ],
                    true,
                )?;
                n -= page.total.unwrap_or(0);
            }
        }
        Ok(state_json(&id, st.as_ref(), n))
    })
    .await;
    let v = tryr!(out);
    fhir_bytes(StatusCode::OK, v.to_string().into_bytes(), &req)
}

macro_rules! handlers {
    ($f:ident: $($name:ident => $arg:expr),* $(,)?) => {
        $(
            pub(super) async fn $name(
                s: State<App>,
                Path(id): Path<String>,
                req: Req,
                body: axum::body::Body,
            ) -> Response {
                $f(s, id, $arg, req, body).await
            }
        )*
    };
}

handlers!(record_action:
    record_close => RecordAction::Close,
    record_object => RecordAction::Object,
    record_reopen => RecordAction::Reopen,
);
handlers!(document_action:
    doc_mask => "$dmp-mask",
    doc_unmask => "$dmp-unmask",
    doc_announce => "$dmp-announce",
    doc_archive => "$dmp-archive",
    doc_unarchive => "$dmp-unarchive",
);

/// `POST /fhir/Patient/{id}/$dmp-close|$dmp-object|$dmp-reopen` (Parameters `reason`, optional).
async fn record_action(
    State(app): State<App>,
    id: String,
    action: RecordAction,
    req: Req,
    body: axum::body::Body,
) -> Response {
    tryr!(record_manager(&req, &id));
    let bytes = tryr!(super::read_body(&app, body).await);
    let reason = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| {
            v["parameter"].as_array().and_then(|a| {
                a.iter()
                    .find(|p| p["name"] == "reason")
                    .and_then(|p| p["valueString"].as_str().map(str::to_string))
            })
        })
        .unwrap_or_default();
    let out = super::run(
        &app,
        &req,
        Some(("dmp-record", Some("Patient"), None)),
        move |r, c| {
            r.read(c, "Patient", &id)?;
            let n = current_documents(r, c, &id)?;
            let st = record::apply(r.store(), &id, action, n.max(0) as u64, &reason).map_err(
                |e| match e {
                    DmpError::Operation(m) => RepoError::Conflict(m),
                    e => RepoError::Invalid(e.to_string()),
                },
            )?;
            r.audit_patient_operation(c, &format!("dmp-{}", st.state), "Patient", &id, &id);
            Ok(state_json(&id, Some(&st), n))
        },
    )
    .await;
    let v = tryr!(out);
    fhir_bytes(StatusCode::OK, v.to_string().into_bytes(), &req)
}

/// `POST /fhir/DocumentReference/{id}/$dmp-mask|$dmp-unmask|$dmp-announce|$dmp-archive|$dmp-unarchive`.
///
/// Masking to professionals and unmasking: the patient (or software acting for them). Announcing (the
/// document becomes visible to the patient): a professional the policy lets act for the patient, or software.
/// Archiving: the patient or a professional acting for them; an archived document is tagged and left out of
/// searches that ask so (`_tag:not=…|archived`), never deleted.
async fn document_action(
    State(app): State<App>,
    id: String,
    op: &'static str,
    req: Req,
    _body: axum::body::Body,
) -> Response {
    let actor = policy::actor_of(req.caller.as_ref());
    let engine = app.policy.clone();
    let insecure = matches!(req.caller, Some(guard::Caller::Insecure));
    let id2 = id.clone();
    let out = super::run(&app, &req, Some(("dmp-document", Some("DocumentReference"), Some(&id2))), move |r, c| {
        let s = r.read(c, "DocumentReference", &id)?;
        let mut v = json_of(&s)?;
        let patient = v["subject"]["reference"]
            .as_str()
            .and_then(|s| s.rsplit_once("Patient/"))
            .map(|(_, p)| p.to_string())
            .ok_or_else(|| RepoError::Unprocessable("document sans patient".into()))?;
        let own = matches!(&actor, Some(Actor::Patient { patient: p } | Actor::Representative { patient: p }) if *p == patient);
        let client = matches!(&actor, Some(Actor::Client { .. })) || insecure;
        let pro = matches!(&actor, Some(Actor::Professional { .. }));
        let allowed = match op {
            "$dmp-mask" | "$dmp-unmask" => own || client,
            "$dmp-announce" => pro || client,
            "$dmp-archive" | "$dmp-unarchive" => own || pro || client,
            _ => return Err(RepoError::NotFound(format!("opération {op} inconnue"))),
        };
        if !allowed {
            return Err(RepoError::Forbidden {
                patient: Some(patient.clone()),
                code: "dmp-operation".into(),
                message: format!("{op} : réservé {}", match op {
                    "$dmp-announce" => "aux professionnels qui suivent le patient",
                    _ => "au patient et aux logiciels habilités",
                }),
            });
        }
        // Users act on documents they may read (a professional announces or archives a document the matrix and
        // the masks let them see; a patient masks what is visible to them).
        if let (Some(e), Some(a)) = (&engine, actor.as_ref().filter(|a| policy::is_user(a))) {
            policy::check_stored(e, a, &s, Some(&patient))?;
        }
        let target = format!("DocumentReference/{id}");
        // Whether the rule changed (an operation asked twice says so, and changes nothing the second time).
        let rule_on = |kind: &'static str, add: bool, target: &str| -> Result<bool, RepoError> {
            let mut changed = false;
            r.store().write(&mut |conn| {
                changed = if add {
                    !RuleStore::has_target_in(conn, &patient, kind, target)?
                        && {
                            RuleStore::insert_in(conn, &patient, kind, "", target, "opération DMP", None)?;
                            true
                        }
                } else {
                    RuleStore::revoke_target_in(conn, &patient, kind, target)? > 0
                };
                Ok(())
            })?;
            Ok(changed)
        };
        let rules = |kind: &'static str, add: bool| rule_on(kind, add, &target);
        let changed = match op {
            "$dmp-mask" => rules("mask", true)?,
            "$dmp-unmask" => rules("mask", false)?,
            "$dmp-announce" => {
                let changed = rules("hide-patient", false)?;
                // Its Binary, and each submission set that lists it once no document it names stays hidden.
                if let Some((_, b)) = v["content"][0]["attachment"]["url"].as_str().and_then(|u| u.rsplit_once("Binary/")) {
                    rule_on("hide-patient", false, &format!("Binary/{b}"))?;
                }
                let lists = r.search(c, "List", &[("item".into(), target.clone()), ("_count".into(), "50".into())], true)?;
                for l in &lists.matches {
                    let lv = json_of(l)?;
                    let mut still_hidden = false;
                    for item in lv["entry"].as_array().map(Vec::as_slice).unwrap_or_default() {
                        if let Some(other) = item["item"]["reference"].as_str().filter(|o| *o != target) {
                            let mut found = false;
                            r.store().read(&mut |conn| {
                                found = RuleStore::has_target_in(conn, &patient, "hide-patient", other)?;
                                Ok(())
                            })?;
                            still_hidden |= found;
                        }
                    }
                    if !still_hidden {
                        rule_on("hide-patient", false, &format!("List/{}", l.id))?;
                    }
                }
                changed
            }
            "$dmp-archive" | "$dmp-unarchive" => {
                let archive = op == "$dmp-archive";
                let tags = v["meta"]["tag"].as_array().cloned().unwrap_or_default();
                let was = tags.iter().any(|t| t["system"] == ARCHIVE_TAG);
                let mut tags: Vec<Value> = tags.into_iter().filter(|t| t["system"] != ARCHIVE_TAG).collect();
                if archive {
                    tags.push(json!({"system": ARCHIVE_TAG, "code": "archived", "display": "Archivé"}));
                }
                match v["meta"].as_object_mut() {
                    Some(meta) if tags.is_empty() => {
                        meta.remove("tag");
                    }
                    _ => v["meta"]["tag"] = json!(tags),
                }
                // No new version when the state does not change.
                if was != archive {
                    r.update(c, "DocumentReference", &id, v, Some(s.version))?;
                }
                was != archive
            }
            _ => false,
        };
        r.audit_patient_operation(c, &op[1..], "DocumentReference", &id, &patient);
        let diagnostics = if changed {
            format!("{op} appliqué à {target}")
        } else {
            let already = match op {
                "$dmp-mask" => "déjà masqué aux professionnels",
                "$dmp-unmask" => "n'était pas masqué aux professionnels",
                "$dmp-announce" => "déjà visible du patient",
                "$dmp-archive" => "déjà archivé",
                _ => "n'était pas archivé",
            };
            format!("{op} : {target} {already}, rien n'a changé")
        };
        Ok(json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational",
            "diagnostics": diagnostics}]}))
    })
    .await;
    let v = tryr!(out);
    fhir_bytes(StatusCode::OK, v.to_string().into_bytes(), &req)
}

pub(super) fn is_provide(body: &Value) -> bool {
    socle_dmp::is_provide_bundle(body)
}
