//! Who is calling, and may they: every `/fhir` route goes through [`guard`]. It classifies the request
//! (resource type, SMART permission, minimum `acr`), reads the bearer token, and lets it through only when the
//! token's scopes allow it. Anonymous callers reach only the discovery documents and the public Annuaire data.
//!
//! Minimum `acr` of each API (users only; client-credentials tokens carry none):
//! - reads, searches, history, INSi, `$duplicates`, creates and updates: `eidas1`;
//! - deletions and `Patient/$merge`: `eidas2` (a second factor).
//!
//! Patient tokens (realm `patient`) read by id (versions and one resource's history included), search and write
//! (the policy engine then allows their own data only; not their Patient record, kept by identity vigilance) and
//! read their `$audit-trail`. For every user, histories of a type or of the system and system-wide searches of
//! patient data stay closed (the policy decides patient by patient).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use socle_auth::{ACR_ONE_FACTOR, ACR_TWO_FACTORS, Context, Perm, Principal, Realm, acr_rank};
use socle_fhir::IssueType;

use super::{App, error};

/// The caller of a request, as the handlers see it (request extension).
#[derive(Debug, Clone)]
pub enum Caller {
    /// `--insecure-local`: every request acts as the local developer.
    Insecure,
    Anonymous,
    Token(std::sync::Arc<Principal>),
}

impl Caller {
    /// How the audit trail names the caller.
    pub fn label(&self) -> String {
        match self {
            Caller::Insecure => "local-insecure".into(),
            Caller::Anonymous => "anonymous".into(),
            Caller::Token(p) => match p.realm {
                // A legal representative: named as such in the represented person's trail.
                Some(Realm::Patient)
                    if p.claims
                        .get("representative")
                        .and_then(serde_json::Value::as_bool)
                        == Some(true) =>
                {
                    format!("representative:{}", p.subject)
                }
                Some(r) => format!("{}:{}", r.as_str(), p.subject),
                None => format!("client:{}", p.client_id),
            },
        }
    }
}

/// Resource types of the public Annuaire: readable without a token.
pub const PUBLIC_TYPES: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "HealthcareService",
    "Location",
    "Endpoint",
];

/// The confidentiality labels that make a directory entry restricted (`meta.security`, HL7 v3
/// Confidentiality): *R* (restricted, e.g. a professional on the "liste rouge") and *V* (very restricted).
pub const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
pub const RESTRICTED_CODES: &[&str] = &["R", "V"];

/// Whether a stored resource carries a restricted confidentiality label.
///
/// Stored content is written by `serde_json`, which never escapes a letter: a resource without the bytes
/// `"security"` has no `meta.security` and is not parsed (an anonymous postal-code page decides this for some
/// 250 included roles, each a full parse otherwise).
pub fn restricted(content: &[u8]) -> bool {
    if !content.windows(10).any(|w| w == b"\"security\"") {
        return false;
    }
    serde_json::from_slice::<Value>(content).is_ok_and(|v| {
        v["meta"]["security"].as_array().is_some_and(|labels| {
            labels.iter().any(|l| {
                l["system"] == CONFIDENTIALITY
                    && l["code"]
                        .as_str()
                        .is_some_and(|c| RESTRICTED_CODES.contains(&c))
            })
        })
    })
}

/// The search parameters that keep restricted entries out of an anonymous search.
pub fn public_filter() -> Vec<(String, String)> {
    restricted_labels()
        .into_iter()
        .map(|l| ("_security:not".to_string(), l))
        .collect()
}

/// The restricted labels as search values (`system|code`): what an anonymous search's chains do not look
/// through.
pub fn restricted_labels() -> Vec<String> {
    RESTRICTED_CODES
        .iter()
        .map(|c| format!("{CONFIDENTIALITY}|{c}"))
        .collect()
}

impl Caller {
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Caller::Anonymous)
    }
}

/// 401 for restricted directory data asked for without authentication (`what` says which).
pub fn restricted_response(what: &str) -> Response {
    unauthorized(
        &format!("{what} : authentification requise"),
        "Bearer realm=\"socle\"".into(),
    )
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq)]
enum Need {
    Public,
    /// Public when the query stays within the public Annuaire types, else `Access`.
    Directory(String, Perm),
    Access {
        /// `None`: every type (system-level search and history).
        rtype: Option<String>,
        perm: Perm,
        min_acr: &'static str,
    },
    /// A batch/transaction Bundle: each entry is checked by the handler ([`check_bundle`]).
    Bundle,
}

fn access(rtype: &str, perm: Perm) -> Need {
    Need::Access {
        rtype: Some(rtype.to_string()),
        perm,
        min_acr: ACR_ONE_FACTOR,
    }
}

fn classify(method: &Method, path: &str) -> Need {
    let rest = path.strip_prefix("/fhir").unwrap_or(path);
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let get = method == Method::GET || method == Method::HEAD;
    match segs.as_slice() {
        [] if get => Need::Access {
            rtype: None,
            perm: Perm::Search,
            min_acr: ACR_ONE_FACTOR,
        },
        [] => Need::Bundle,
        ["metadata"] | ["OperationDefinition", ..] => Need::Public,
        ["_history"] => Need::Access {
            rtype: None,
            perm: Perm::Search,
            min_acr: ACR_ONE_FACTOR,
        },
        ["$audit-trail", ..] => access("AuditEvent", Perm::Read),
        ["Patient", _, "$audit-trail"] => access("AuditEvent", Perm::Search),
        ["Patient", "$ins-retrieve"] | ["Patient", "$ins-verify"] => access("Patient", Perm::Read),
        ["Patient", "$merge"] => Need::Access {
            rtype: Some("Patient".into()),
            perm: Perm::Update,
            min_acr: ACR_TWO_FACTORS,
        },
        ["Patient", _, "$duplicates"] => access("Patient", Perm::Search),
        // Everything of one patient: a search of every type (`*` scopes), decided by the policy for users.
        ["Patient", _, "$everything"] if get => Need::Access {
            rtype: None,
            perm: Perm::Search,
            min_acr: ACR_ONE_FACTOR,
        },
        // The DMP record: its state is read like the patient's documents; creating, objecting, closing and
        // reopening it need a second factor.
        ["Patient", _, "$dmp"] if get => access("DocumentReference", Perm::Search),
        ["Patient", _, op] if op.starts_with("$dmp-") => Need::Access {
            rtype: Some("DocumentReference".into()),
            perm: Perm::Update,
            min_acr: ACR_TWO_FACTORS,
        },
        // The PDF inside a level-1 CDA document: a read of the document.
        ["Binary", _, "$n1-body"] if get => access("Binary", Perm::Read),
        // Masking, announcing, archiving a document (the handler decides who may do which).
        ["DocumentReference", _, op] if op.starts_with("$dmp-") => {
            access("DocumentReference", Perm::Update)
        }
        // Delegation codes (MES-6): created by the patient, claimed by a professional.
        ["Patient", _, "$delegation-code"] | ["Patient", "$delegation-claim"] => Need::Access {
            rtype: Some("Consent".into()),
            perm: Perm::Create,
            min_acr: ACR_ONE_FACTOR,
        },
        // The patient's rules (blocks, masks, delegations, consents): Consent permissions.
        ["Patient", _, "$policy-rules"] if get => access("Consent", Perm::Read),
        ["Patient", _, "$policy-rules"] => Need::Access {
            rtype: Some("Consent".into()),
            perm: Perm::Create,
            min_acr: ACR_TWO_FACTORS,
        },
        ["Patient", _, "$policy-rules", _] => Need::Access {
            rtype: Some("Consent".into()),
            perm: Perm::Delete,
            min_acr: ACR_TWO_FACTORS,
        },
        [t] | [t, "_search"] if get || segs.get(1) == Some(&"_search") => {
            if PUBLIC_TYPES.contains(t) {
                Need::Directory(t.to_string(), Perm::Search)
            } else {
                access(t, Perm::Search)
            }
        }
        // History shows every past version, restricted ones included: never public.
        [t, "_history"] if get => access(t, Perm::Search),
        [t] if method == Method::POST => access(t, Perm::Create),
        [t] if method == Method::PUT => access(t, Perm::Update),
        [t] if method == Method::DELETE => Need::Access {
            rtype: Some(t.to_string()),
            perm: Perm::Delete,
            min_acr: ACR_TWO_FACTORS,
        },
        [t, _] if get => {
            if PUBLIC_TYPES.contains(t) {
                Need::Directory(t.to_string(), Perm::Read)
            } else {
                access(t, Perm::Read)
            }
        }
        // A search within a patient's compartment (`Patient/{id}/Observation`): a search of that type.
        ["Patient", id, t]
            if get
                && !id.starts_with('$')
                && socle_fhir::search_params::registry().is_resource_type(t) =>
        {
            access(t, Perm::Search)
        }
        [t, _, "_history"] | [t, _, "_history", _] if get => access(t, Perm::Read),
        [t, _] if method == Method::PUT => access(t, Perm::Update),
        [t, _] if method == Method::DELETE => Need::Access {
            rtype: Some(t.to_string()),
            perm: Perm::Delete,
            min_acr: ACR_TWO_FACTORS,
        },
        // Anything else: the most demanding reading of the path's type.
        [t, ..] => Need::Access {
            rtype: Some(t.to_string()),
            perm: Perm::Update,
            min_acr: ACR_TWO_FACTORS,
        },
    }
}

/// Whether a query on a public type stays within the public types (no `_has`, no `_revinclude` or
/// `_include` from or to another type).
fn stays_public(rtype: &str, query: Option<&str>) -> bool {
    params_stay_public(rtype, &super::parse_query(query))
}

/// [`stays_public`] on parsed parameters (a POST `_search` body included).
/// (`rtype`: the searched type, what `_include=*` names).
pub fn params_stay_public(rtype: &str, params: &[(String, String)]) -> bool {
    params.iter().all(|(k, v)| {
        if k.starts_with("_has") {
            return false;
        }
        if k.starts_with("_include") || k.starts_with("_revinclude") {
            let mut parts = v.split(':');
            let source = match parts.next().unwrap_or("") {
                "*" => rtype,
                s => s,
            };
            let target = parts.nth(1);
            return PUBLIC_TYPES.contains(&source)
                && target.is_none_or(|t| PUBLIC_TYPES.contains(&t));
        }
        true
    })
}

/// Header values are ASCII: French accents folded, quotes replaced.
pub fn header_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'à' | 'â' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' => 'i',
            'ô' | 'ö' => 'o',
            'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            'É' | 'È' | 'Ê' => 'E',
            'À' => 'A',
            '"' | '«' | '»' => '\'',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => ' ',
        })
        .collect()
}

fn unauthorized(msg: &str, www: String) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, IssueType::Login, msg);
    if let Ok(v) = HeaderValue::from_str(&www) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn forbidden(msg: String, scope_hint: &str) -> Response {
    let mut r = error(StatusCode::FORBIDDEN, IssueType::Forbidden, msg);
    let www =
        format!("Bearer realm=\"socle\", error=\"insufficient_scope\", scope=\"{scope_hint}\"");
    if let Ok(v) = HeaderValue::from_str(&www) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// The context a principal's scopes count in: users of the pro realm act in `user/`, patients in `patient/`,
/// clients on their own behalf in `system/`.
fn context_of(p: &Principal) -> Context {
    match p.realm {
        Some(Realm::Pro) => Context::User,
        Some(Realm::Patient) => Context::Patient,
        None => Context::System,
    }
}

fn perm_letter(p: Perm) -> &'static str {
    match p {
        Perm::Create => "c",
        Perm::Read => "r",
        Perm::Update => "u",
        Perm::Delete => "d",
        Perm::Search => "s",
    }
}

/// Whether `p` may do `perm` on `rtype` (`None`: every type), else the 401/403 response.
fn allow(p: &Principal, rtype: Option<&str>, perm: Perm, min_acr: &str) -> Result<(), Response> {
    let ctx = context_of(p);
    let ok = match rtype {
        Some(t) => p.scopes.contexts_for(t, perm).contains(&ctx),
        None => p.scopes.0.iter().any(|s| {
            matches!(s, socle_auth::Scope::Resource { context, rtype: None, perms }
                if *context == ctx && perms & perm as u8 != 0)
        }),
    };
    let wanted = format!(
        "{}/{}.{}",
        ctx.as_str(),
        rtype.unwrap_or("*"),
        perm_letter(perm)
    );
    if !ok {
        return Err(forbidden(
            format!("portée insuffisante : cette opération exige {wanted}"),
            &wanted,
        ));
    }
    if p.realm.is_some() && acr_rank(p.acr.as_deref().unwrap_or("")) < acr_rank(min_acr) {
        return Err(unauthorized(
            &format!(
                "authentification plus forte requise (acr {min_acr}) : reconnectez-vous avec un second facteur"
            ),
            format!(
                "Bearer realm=\"socle\", error=\"insufficient_user_authentication\", acr_values=\"{min_acr}\""
            ),
        ));
    }
    Ok(())
}

/// Patients reach only their own `Patient` resource for now (see the module documentation).
fn patient_limits(p: &Principal, method: &Method, path: &str) -> Result<(), Response> {
    if p.realm != Some(Realm::Patient) {
        return Ok(());
    }
    let get = method == Method::GET || method == Method::HEAD;
    // Reads by id: the policy engine decides on the resource read (their own data only, not what is hidden
    // from them); and the trail of who accessed their data (`$audit-trail`).
    // `/fhir` and `/fhir/` are the same base (a Bundle posted to either).
    let rest = path
        .strip_prefix("/fhir")
        .unwrap_or(path)
        .trim_start_matches('/');
    let segs: Vec<&str> = rest.split('/').collect();
    if get && segs.len() == 2 && !segs[1].starts_with('$') && !segs[1].starts_with('_') {
        return Ok(());
    }
    // Versions and the history of one resource: each version decided like a read.
    if get
        && matches!(segs.as_slice(), [_, id, "_history"] | [_, id, "_history", _]
            if !id.starts_with('$') && !id.starts_with('_'))
    {
        return Ok(());
    }
    // Writes of their own data (measures, documents they add): the policy engine decides on the patient the
    // resource belongs to. Not their Patient record: identity traits follow identity vigilance.
    let writable = segs
        .first()
        .is_some_and(|t| *t != "Patient" && !t.starts_with('$'));
    if writable
        && ((method == Method::POST && segs.len() == 1)
            || ((method == Method::PUT || method == Method::DELETE) && segs.len() == 2))
    {
        return Ok(());
    }
    // Searches: the search handler scopes them to the patient's own data through the policy engine.
    if (get && segs.len() == 1 && !segs[0].starts_with('$') && !segs[0].starts_with('_'))
        || (method == Method::POST && segs.len() == 2 && segs[1] == "_search")
    {
        return Ok(());
    }
    // Searches within their compartment (`Patient/{id}/Observation`): scoped the same way.
    if get
        && matches!(segs.as_slice(), ["Patient", id, t]
            if !id.starts_with('$') && socle_fhir::search_params::registry().is_resource_type(t))
    {
        return Ok(());
    }
    // The PDF inside one of their documents: decided like the document.
    if get && segs.len() == 3 && segs[0] == "Binary" && segs[2] == "$n1-body" {
        return Ok(());
    }
    // Document operations of the DMP (masking, archiving): the handler checks the document is theirs.
    if method == Method::POST
        && segs.len() == 3
        && segs[0] == "DocumentReference"
        && segs[2].starts_with("$dmp-")
    {
        return Ok(());
    }
    if let Some(id) = p.claim("patient")
        && (get && path == format!("/fhir/Patient/{id}/$dmp")
            || path.starts_with(&format!("/fhir/Patient/{id}/$dmp-"))
            || get && path == format!("/fhir/Patient/{id}/$audit-trail")
            || get && path == format!("/fhir/Patient/{id}/$everything")
            || path == format!("/fhir/Patient/{id}/$policy-rules")
            || path == format!("/fhir/Patient/{id}/$delegation-code")
            || path.starts_with(&format!("/fhir/Patient/{id}/$policy-rules/")))
    {
        return Ok(());
    }
    Err(error(
        StatusCode::FORBIDDEN,
        IssueType::Forbidden,
        "accès patient limité à ses propres données (lectures, versions, recherches, documents ajoutés), à son \
         dossier DMP, à ses règles d'accès et à sa trace d'accès",
    ))
}

/// Whether a resource type holds patient data (the Patient compartment, or Patient itself).
pub fn patient_data(rtype: &str) -> bool {
    rtype == "Patient"
        || !socle_fhir::search_params::registry()
            .patient_compartment_params(rtype)
            .is_empty()
}

/// Users (professionals, patients) reach patient data through decisions of the policy engine: reads by id and
/// searches scoped to one patient, versions and the history of one resource are decided; histories of a type
/// or of the system and system-wide searches are not, so they stay with software acting on its own behalf
/// (`system/` scopes).
fn user_limits(p: &Principal, method: &Method, path: &str) -> Result<(), Response> {
    if p.realm.is_none() {
        return Ok(());
    }
    let segs: Vec<&str> = path
        .trim_start_matches("/fhir")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let get = method == Method::GET || method == Method::HEAD;
    let undecided = match segs.as_slice() {
        [] if get => true,
        ["_history"] => true,
        // Every patient's access records; a patient reads their own (see `patient_limits`).
        ["$audit-trail", ..] => true,
        ["Patient", _, "$audit-trail"] => p.realm != Some(Realm::Patient),
        // Identity vigilance across patients (duplicates, merges): for the identity staff's software.
        ["Patient", _, "$duplicates"] | ["Patient", "$merge"] => true,
        // A Binary is decided as its DocumentReference (`GET /Binary/{id}`, its `$n1-body`); listing Binaries or
        // reading their versions would bypass that.
        ["Binary"]
        | ["Binary", "_search"]
        | ["Binary", "_history"]
        | ["Binary", _, "_history", ..] => true,
        [t, "_history"] => patient_data(t),
        _ => false,
    };
    if undecided {
        return Err(error(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            "opération sur les données de plusieurs patients (historique d'un type ou du système, recherche globale, \
             identitovigilance, trace globale) : réservée aux logiciels agissant pour leur propre compte (portées \
             system/)",
        ));
    }
    Ok(())
}

/// Reads and checks the bearer token of a request, if any.
fn caller_of(app: &App, req: &Request) -> Result<Caller, Response> {
    if app.insecure_local {
        return Ok(Caller::Insecure);
    }
    let Some(h) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
    };
    let Some(provider) = &app.auth else {
        return Ok(Caller::Anonymous);
    };
    let h = h.to_str().unwrap_or("");
    let token = match h.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => {
            return Err(unauthorized(
                "en-tête Authorization invalide : « Bearer <jeton> » attendu",
                "Bearer realm=\"socle\", error=\"invalid_request\"".into(),
            ));
        }
    };
    match provider.validate_presented(
        token,
        super::presented_certificate(req.extensions()).as_deref(),
    ) {
        Ok(p) => Ok(Caller::Token(p)),
        Err(e) => Err(unauthorized(
            &format!("jeton refusé : {e}"),
            format!(
                "Bearer realm=\"socle\", error=\"invalid_token\", error_description=\"{}\"",
                header_text(&e)
            ),
        )),
    }
}

/// The middleware on every `/fhir` route.
pub async fn guard(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let caller = match caller_of(&app, &req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let need = classify(req.method(), req.uri().path());
    let need = match need {
        Need::Directory(t, perm) => {
            if stays_public(&t, req.uri().query()) {
                Need::Public
            } else {
                access(&t, perm)
            }
        }
        n => n,
    };
    match (&caller, &need) {
        (Caller::Insecure, _) | (_, Need::Public) => {}
        (Caller::Anonymous, _) => {
            return unauthorized(
                "authentification requise : présentez un jeton d'accès (Authorization: Bearer …)",
                "Bearer realm=\"socle\"".into(),
            );
        }
        (
            Caller::Token(p),
            Need::Access {
                rtype,
                perm,
                min_acr,
            },
        ) => {
            if let Err(r) = allow(p, rtype.as_deref(), *perm, min_acr)
                .and_then(|_| patient_limits(p, req.method(), req.uri().path()))
                .and_then(|_| user_limits(p, req.method(), req.uri().path()))
            {
                return r;
            }
        }
        (Caller::Token(p), Need::Bundle) => {
            if let Err(r) = patient_limits(p, req.method(), req.uri().path()) {
                return r;
            }
        }
        (Caller::Token(_), Need::Directory(..)) => {}
    }
    req.extensions_mut().insert(caller);
    let mut resp = next.run(req).await;
    if app.insecure_local {
        resp.headers_mut()
            .insert("x-socle-insecure", HeaderValue::from_static("local"));
    }
    resp
}

/// Checks each entry of a batch/transaction Bundle against the caller's scopes (the guard cannot see the
/// body).
pub fn check_bundle(caller: Option<&Caller>, bundle: &Value) -> Result<(), Response> {
    let Some(Caller::Token(p)) = caller else {
        return Ok(());
    };
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for e in entries {
        let req = &e["request"];
        let method = req["method"].as_str().unwrap_or("GET");
        let url = req["url"].as_str().unwrap_or("");
        let path = url.split('?').next().unwrap_or("");
        let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        let need = classify(&method, &format!("/fhir/{}", path.trim_start_matches('/')));
        let need = match need {
            Need::Directory(t, perm) => access(&t, perm),
            n => n,
        };
        if let Need::Access {
            rtype,
            perm,
            min_acr,
        } = need
        {
            allow(p, rtype.as_deref(), perm, min_acr)?;
        }
    }
    Ok(())
}

/// 401 for the OIDC endpoints that take a bearer token (userinfo).
pub fn bearer_error(msg: &str) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Body::from(
            serde_json::json!({"error": "invalid_token", "error_description": msg}).to_string(),
        ),
    )
        .into_response();
    let www = format!(
        "Bearer error=\"invalid_token\", error_description=\"{}\"",
        header_text(msg)
    );
    if let Ok(v) = HeaderValue::from_str(&www) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_labels_are_found_in_stored_content() {
        let stored = |v: Value| serde_json::to_vec(&v).unwrap();
        let label = |code: &str| {
            stored(
                serde_json::json!({"resourceType": "Practitioner", "id": "a",
                "meta": {"versionId": "1", "security": [{"system": "urn:x", "code": "R"},
                                                        {"system": CONFIDENTIALITY, "code": code}]}}),
            )
        };
        assert!(restricted(&label("R")));
        assert!(restricted(&label("V")));
        assert!(!restricted(&label("N")));
        assert!(!restricted(&stored(
            serde_json::json!({"resourceType": "Practitioner", "id": "a",
            "meta": {"versionId": "1", "tag": [{"system": CONFIDENTIALITY, "code": "R"}]}})
        )));
        // The word elsewhere (a name, an extension) makes no label.
        assert!(!restricted(&stored(
            serde_json::json!({"resourceType": "Organization", "id": "b",
            "name": "\"security\" SARL", "extension": [{"url": "security", "valueCode": "R"}]})
        )));
        assert!(!restricted(b"{not json \"security\""));
    }

    fn patient(id: Option<&str>) -> Principal {
        let mut claims = serde_json::Map::new();
        if let Some(id) = id {
            claims.insert("patient".into(), id.into());
        }
        Principal {
            realm: Some(Realm::Patient),
            subject: "180017512345678".into(),
            client_id: "app".into(),
            scopes: socle_auth::Scopes::parse("patient/*.rs").unwrap(),
            acr: Some(ACR_TWO_FACTORS.into()),
            jti: "j".into(),
            expires: 0,
            claims,
        }
    }

    #[test]
    fn patients_read_by_id_and_their_own_trail_only() {
        let p = patient(Some("p1"));
        assert!(patient_limits(&p, &Method::GET, "/fhir/Patient/p1").is_ok());
        assert!(patient_limits(&p, &Method::GET, "/fhir/Patient/p1/$audit-trail").is_ok());
        // The base, with or without its slash: a Bundle (an ITI-65 feed of a patient's own document).
        assert!(patient_limits(&p, &Method::POST, "/fhir").is_ok());
        assert!(patient_limits(&p, &Method::POST, "/fhir/").is_ok());
        assert!(patient_limits(&p, &Method::GET, "/fhir/Patient/p2/$audit-trail").is_err());
        assert!(
            patient_limits(&p, &Method::GET, "/fhir/Patient/p2").is_ok(),
            "la politique décide après lecture"
        );
        assert!(
            patient_limits(&p, &Method::GET, "/fhir/Observation").is_ok(),
            "scopée au patient par la recherche"
        );
        assert!(patient_limits(&p, &Method::GET, "/fhir/Observation/_history").is_err());
        assert!(patient_limits(&p, &Method::GET, "/fhir/Observation/o1/_history").is_ok());
        assert!(patient_limits(&p, &Method::GET, "/fhir/Observation/o1/_history/2").is_ok());
        assert!(patient_limits(&p, &Method::GET, "/fhir/Observation/$x/_history").is_err());
        for path in [
            "/fhir/Binary",
            "/fhir/Binary/_search",
            "/fhir/Binary/_history",
            "/fhir/Binary/b1/_history",
            "/fhir/Binary/b1/_history/1",
        ] {
            assert!(user_limits(&p, &Method::GET, path).is_err(), "{path}");
        }
        assert!(user_limits(&p, &Method::GET, "/fhir/Binary/b1").is_ok());
        assert!(
            patient_limits(&p, &Method::PUT, "/fhir/Patient/p1").is_err(),
            "pas sa fiche d'identité"
        );
        assert!(
            patient_limits(&p, &Method::POST, "/fhir/Observation").is_ok(),
            "ses mesures : la politique décide"
        );
        assert!(patient_limits(&p, &Method::GET, "/fhir/$audit-trail").is_err());
        assert!(
            patient_limits(
                &patient(None),
                &Method::GET,
                "/fhir/Patient/p1/$audit-trail"
            )
            .is_err()
        );
        assert!(allow(&p, Some("AuditEvent"), Perm::Search, ACR_ONE_FACTOR).is_ok());
        assert!(allow(&p, Some("Observation"), Perm::Create, ACR_ONE_FACTOR).is_err());
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&Method::GET, "/fhir/metadata"), Need::Public);
        assert_eq!(classify(&Method::POST, "/fhir"), Need::Bundle);
        assert_eq!(
            classify(&Method::GET, "/fhir/Practitioner"),
            Need::Directory("Practitioner".into(), Perm::Search)
        );
        assert_eq!(
            classify(&Method::GET, "/fhir/Observation/1"),
            access("Observation", Perm::Read)
        );
        assert_eq!(
            classify(&Method::POST, "/fhir/Observation/_search"),
            access("Observation", Perm::Search)
        );
        assert_eq!(
            classify(&Method::GET, "/fhir/Patient/p1/Observation"),
            access("Observation", Perm::Search)
        );
        // Not a type: the catch-all's demanding reading.
        assert!(matches!(
            classify(&Method::GET, "/fhir/Patient/p1/Unicorn"),
            Need::Access {
                perm: Perm::Update,
                ..
            }
        ));
        assert_eq!(
            classify(&Method::POST, "/fhir/Observation"),
            access("Observation", Perm::Create)
        );
        assert!(matches!(
            classify(&Method::DELETE, "/fhir/Observation/1"),
            Need::Access {
                perm: Perm::Delete,
                min_acr: ACR_TWO_FACTORS,
                ..
            }
        ));
        assert!(stays_public(
            "PractitionerRole",
            Some("name=x&_include=PractitionerRole:organization")
        ));
        assert!(!stays_public(
            "Practitioner",
            Some("_revinclude=Observation:performer")
        ));
        assert!(!stays_public(
            "Practitioner",
            Some("_has:Observation:performer:code=x")
        ));
        assert!(stays_public("PractitionerRole", Some("_include=*")));
        assert!(!stays_public("Observation", Some("_include=*")));
        assert!(!stays_public(
            "Practitioner",
            Some("_include=PractitionerRole:practitioner:Patient")
        ));
    }
}
