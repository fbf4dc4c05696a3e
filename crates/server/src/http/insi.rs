//! The INSi teleservice as FHIR operations: `POST /fhir/Patient/$ins-retrieve` and
//! `POST /fhir/Patient/$ins-verify`, `Parameters` in and out, and their OperationDefinitions.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use socle_fhir::outcome::IssueType;
use socle_ins::{RegistryError, Retrieved, Traits, Verified};

use super::{App, Req, blocking, error, fhir_bytes, json_body};

/// The input parameters of both operations.
#[derive(Default)]
struct Input {
    traits: Traits,
    ins: Option<String>,
    card: Option<String>,
    /// A local Patient whose traits (and INS, for verify) are used when not given.
    patient: Option<String>,
}

/// Fills the input from the local Patient it names: refused when that identity is doubtful or fictitious.
async fn with_patient(app: &App, req: &Req, mut input: Input) -> Result<Input, Response> {
    let Some(id) = input.patient.clone() else {
        return Ok(input);
    };
    // The store is synchronous: read on a blocking thread, never on the async runtime.
    let (repo, ctx) = (app.repo.clone(), req.ctx.clone());
    let p = blocking(move || super::rniv::patient_for_insi(&repo, &ctx, &id)).await??;
    let t = socle_ins::rniv::traits_of(&p);
    if input.traits.family.is_empty() {
        input.traits.family = t.family;
    }
    if input.traits.given.is_empty() {
        input.traits.given = t.given;
    }
    if input.traits.birth_date.is_empty() {
        input.traits.birth_date = t.birth_date;
    }
    if input.traits.gender.is_empty() {
        input.traits.gender = t.gender;
    }
    if input.traits.birth_place.is_none() {
        input.traits.birth_place = t.birth_place;
    }
    if input.ins.is_none() {
        input.ins = socle_ins::rniv::ins_of(&p).map(|(_, v)| v);
    }
    Ok(input)
}

/// Runs a registry lookup (a few index probes): in place on an embedded store, like reads by id, otherwise
/// on the blocking pool.
async fn quick<T: Send + 'static>(
    app: &App,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    if app.repo.point_reads_are_local() {
        Ok(f())
    } else {
        blocking(f).await
    }
}

/// The value of a parameter, whatever its `value[x]` type (string, code, date, or an Identifier's value).
fn value_of(p: &Value) -> Option<String> {
    let obj = p.as_object()?;
    for (k, v) in obj {
        if let Some(rest) = k.strip_prefix("value") {
            if rest == "Identifier" {
                return v["value"].as_str().map(str::to_string);
            }
            return v.as_str().map(str::to_string);
        }
    }
    None
}

fn parse_input(body: &Value) -> Result<Input, String> {
    if body["resourceType"] != "Parameters" {
        return Err("une ressource Parameters est attendue".into());
    }
    let mut input = Input::default();
    for p in body["parameter"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let name = p["name"].as_str().unwrap_or_default();
        if name == "patient" {
            input.patient = Some(
                super::rniv::reference_id(p)
                    .ok_or_else(|| "paramètre patient : référence Patient attendue".to_string())?,
            );
            continue;
        }
        let value = value_of(p).ok_or_else(|| format!("paramètre {name:?} sans valeur"))?;
        match name {
            "family" => input.traits.family = value,
            "given" => input.traits.given.push(value),
            "birthdate" => input.traits.birth_date = value,
            "gender" => input.traits.gender = value,
            "birthplace" => input.traits.birth_place = Some(value.to_ascii_uppercase()),
            "ins" => input.ins = Some(value),
            "carte-vitale" => input.card = Some(value),
            other => return Err(format!("paramètre inconnu : {other:?}")),
        }
    }
    Ok(input)
}

fn parameters(result: &str, patient: Option<Value>, mismatch: &[&str]) -> Value {
    let mut params = vec![json!({"name": "result", "valueCode": result})];
    if let Some(p) = patient {
        params.push(json!({"name": "patient", "resource": p}));
    }
    for m in mismatch {
        params.push(json!({"name": "mismatch", "valueCode": m}));
    }
    json!({"resourceType": "Parameters", "parameter": params})
}

/// The request body as the operations' input (400 with the reason otherwise).
async fn read_input(app: &App, headers: &HeaderMap, body: Body) -> Result<Input, Response> {
    let body = json_body(app, headers, body).await?;
    parse_input(&body).map_err(|m| error(StatusCode::BAD_REQUEST, IssueType::Invalid, m))
}

fn registry_error(e: RegistryError) -> Response {
    match e {
        RegistryError::Invalid(m) => error(StatusCode::BAD_REQUEST, IssueType::Invalid, m),
        RegistryError::Store(e) => {
            tracing::error!(error = %e, "registre INS indisponible");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                "registre INS indisponible",
            )
        }
    }
}

/// `$ins-retrieve`: from the traits (`family`, `given`…, `birthdate`, `gender`, optional `birthplace`) or
/// from a Carte Vitale (`carte-vitale`, optional `birthdate`/`given` to pick a beneficiary).
pub(super) async fn retrieve(
    State(app): State<App>,
    headers: HeaderMap,
    req: Req,
    body: Body,
) -> Response {
    let input = match read_input(&app, &headers, body).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    if input.ins.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            "ins n'est pas un paramètre de $ins-retrieve (utilisez $ins-verify)",
        );
    }
    let input = match with_patient(&app, &req, input).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let registry = app.registry.clone();
    let res = quick(&app, move || match &input.card {
        Some(card) => {
            let date =
                (!input.traits.birth_date.is_empty()).then_some(input.traits.birth_date.as_str());
            registry.retrieve_by_card(card, date, &input.traits.given)
        }
        None => registry.retrieve(&input.traits),
    })
    .await;
    let res = match res {
        Ok(r) => r,
        Err(r) => return r,
    };
    let result = res.map(|r| match r {
        Retrieved::Found(o) => parameters("found", Some(o.to_fhir()), &[]),
        Retrieved::NotFound => parameters("not-found", None, &[]),
        Retrieved::Multiple(_) => parameters("multiple", None, &[]),
    });
    answer(&app, &req, "ins-retrieve", result)
}

/// Audits an INSi call (its result code, or the error status) and answers it.
fn answer(app: &App, req: &Req, action: &str, result: Result<Value, RegistryError>) -> Response {
    let result = match result {
        Ok(v) => v,
        Err(e) => {
            let r = registry_error(e);
            app.repo.audit_operation(
                &req.ctx,
                action,
                Some("Patient"),
                None,
                r.status().as_str(),
                None,
            );
            return r;
        }
    };
    let code = result["parameter"][0]["valueCode"]
        .as_str()
        .map(str::to_string);
    app.repo
        .audit_operation(&req.ctx, action, Some("Patient"), None, "success", code);
    fhir_bytes(
        StatusCode::OK,
        serde_json::to_vec(&result).unwrap_or_default(),
        req,
    )
}

/// `$ins-verify`: `ins` (the matricule) and the traits.
pub(super) async fn verify(
    State(app): State<App>,
    headers: HeaderMap,
    req: Req,
    body: Body,
) -> Response {
    let input = match read_input(&app, &headers, body).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let input = match with_patient(&app, &req, input).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Some(ins) = input.ins.clone() else {
        return error(
            StatusCode::BAD_REQUEST,
            IssueType::Required,
            "paramètre ins (matricule INS) manquant",
        );
    };
    let registry = app.registry.clone();
    let res = match quick(&app, move || registry.verify(&ins, &input.traits)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let result = res.map(|r| match r {
        Verified::Match(o) => parameters("match", Some(o.to_fhir()), &[]),
        Verified::Mismatch(d) => parameters("mismatch", None, &d),
    });
    answer(&app, &req, "ins-verify", result)
}

/// `GET /fhir/OperationDefinition/{ins-retrieve|ins-verify|duplicates|merge|everything}`.
pub(super) async fn operation_definition(name: &'static str, req: Req) -> Response {
    match definition(name) {
        Some(v) => fhir_bytes(
            StatusCode::OK,
            serde_json::to_vec(&v).unwrap_or_default(),
            &req,
        ),
        None => error(
            StatusCode::NOT_FOUND,
            IssueType::NotFound,
            format!("OperationDefinition/{name} introuvable"),
        ),
    }
}

fn param(name: &str, use_: &str, min: u32, max: &str, ty: &str, doc: &str) -> Value {
    json!({"name": name, "use": use_, "min": min, "max": max, "type": ty, "documentation": doc})
}

/// The OperationDefinitions of the operations on local records: identity vigilance, and `$everything`.
fn vigilance_definition(name: &str) -> Option<Value> {
    let (title, doc, instance, parameters) = match name {
        "duplicates" => (
            "Doublons et homonymes d'un dossier local",
            "GET [base]/Patient/[id]/$duplicates : les dossiers locaux actifs qui ont les mêmes cinq traits \
             (doublons probables) et ceux qui n'en diffèrent que par le lieu de naissance (homonymes) ; les \
             dossiers fusionnés dans un autre (inactifs) ne sont plus listés.",
            true,
            vec![
                param(
                    "duplicate",
                    "out",
                    0,
                    "*",
                    "Reference",
                    "Dossier aux mêmes cinq traits.",
                ),
                param(
                    "homonym",
                    "out",
                    0,
                    "*",
                    "Reference",
                    "Dossier homonyme, né ailleurs.",
                ),
                param(
                    "incomplete",
                    "out",
                    0,
                    "1",
                    "boolean",
                    "Présent (true) quand plus de 1 000 dossiers actifs partagent la date de naissance et le sexe : \
                     seuls les 1 000 premiers ont été comparés.",
                ),
            ],
        ),
        "merge" => (
            "Fusion de deux dossiers locaux",
            "POST [base]/Patient/$merge : le dossier source est désactivé et lié au dossier cible \
             (Patient.link replaced-by / replaces), en une transaction tracée.",
            false,
            vec![
                param(
                    "source-patient",
                    "in",
                    1,
                    "1",
                    "Reference",
                    "Le dossier qui disparaît.",
                ),
                param(
                    "target-patient",
                    "in",
                    1,
                    "1",
                    "Reference",
                    "Le dossier conservé.",
                ),
                param(
                    "outcome",
                    "out",
                    1,
                    "1",
                    "OperationOutcome",
                    "Ce qui a été fait.",
                ),
                param(
                    "result",
                    "out",
                    1,
                    "1",
                    "Patient",
                    "Le dossier cible après la fusion.",
                ),
            ],
        ),
        "everything" => (
            "Dossier complet d'un patient",
            "GET [base]/Patient/[id]/$everything : le patient et les ressources de son compartiment, dans l'ordre \
             de leur première écriture, par pages (lien next) ; pour un utilisateur, chacune décidée comme une \
             lecture. start et end (dates de soins) ne sont pas pris en charge.",
            true,
            vec![
                param(
                    "_since",
                    "in",
                    0,
                    "1",
                    "instant",
                    "Seulement les ressources modifiées depuis.",
                ),
                param(
                    "_type",
                    "in",
                    0,
                    "*",
                    "code",
                    "Seulement ces types (séparés par des virgules).",
                ),
                param(
                    "_count",
                    "in",
                    0,
                    "1",
                    "integer",
                    "Ressources par page (20 par défaut, au plus 1 000).",
                ),
                param("return", "out", 1, "1", "Bundle", "Bundle searchset."),
            ],
        ),
        _ => return None,
    };
    let mut def = json!({
        "resourceType": "OperationDefinition",
        "id": name,
        "url": format!("urn:socle:OperationDefinition:{name}"),
        "name": name,
        "title": title,
        "status": "active",
        "kind": "operation",
        "description": doc,
        "code": name,
        "resource": ["Patient"],
        "system": false,
        "type": !instance,
        "instance": instance,
        "parameter": parameters
    });
    if name == "everything" {
        // Socle's form of the standard operation.
        def["base"] = json!("http://hl7.org/fhir/OperationDefinition/Patient-everything");
    }
    Some(def)
}

/// The OperationDefinitions of Socle's Patient operations (also referenced by the CapabilityStatement).
pub fn definition(name: &str) -> Option<Value> {
    if let Some(v) = vigilance_definition(name) {
        return Some(v);
    }
    let traits = [
        param("family", "in", 0, "1", "string", "Nom de naissance."),
        param(
            "given",
            "in",
            0,
            "*",
            "string",
            "Prénoms de naissance, dans l'ordre (le premier suffit).",
        ),
        param(
            "birthdate",
            "in",
            0,
            "1",
            "date",
            "Date de naissance (AAAA-MM-JJ).",
        ),
        param("gender", "in", 0, "1", "code", "Sexe : male ou female."),
        param(
            "birthplace",
            "in",
            0,
            "1",
            "string",
            "Code INSEE du lieu de naissance (commune, ou 99 + pays).",
        ),
        param(
            "patient",
            "in",
            0,
            "1",
            "Reference",
            "Patient local dont les traits (et l'INS pour la vérification) sont utilisés s'ils ne sont pas donnés ; refusé (422) pour une identité douteuse (DOUT) ou fictive (FICT).",
        ),
    ];
    let (code, title, extra_in, results, doc) = match name {
        "ins-retrieve" => (
            "ins-retrieve",
            "Récupération de l'INS (téléservice INSi)",
            vec![param(
                "carte-vitale",
                "in",
                0,
                "1",
                "string",
                "Numéro de carte Vitale (à la place des traits).",
            )],
            "found | not-found | multiple",
            "Renvoie l'INS et les traits officiels seulement si une identité unique correspond aux traits (ou à la carte Vitale).",
        ),
        "ins-verify" => (
            "ins-verify",
            "Vérification de l'INS (téléservice INSi)",
            vec![param(
                "ins",
                "in",
                1,
                "1",
                "string",
                "Matricule INS (NIR ou NIA, 15 caractères).",
            )],
            "match | mismatch",
            "Vérifie qu'un matricule INS existe et que ses traits officiels correspondent à ceux donnés ; sinon nomme les traits qui diffèrent (ins si le matricule est inconnu).",
        ),
        _ => return None,
    };
    let mut parameters: Vec<Value> = extra_in;
    parameters.extend(traits);
    parameters.push(param("result", "out", 1, "1", "code", results));
    parameters.push(param(
        "patient",
        "out",
        0,
        "1",
        "Patient",
        "L'identité officielle (matricule, OID et traits).",
    ));
    if name == "ins-verify" {
        parameters.push(param(
            "mismatch",
            "out",
            0,
            "*",
            "code",
            "Traits qui diffèrent : ins, family, given, birthdate, gender, birthplace.",
        ));
    }
    Some(json!({
        "resourceType": "OperationDefinition",
        "id": code,
        "url": format!("urn:socle:OperationDefinition:{code}"),
        "name": code.replace('-', "_"),
        "title": title,
        "status": "active",
        "kind": "operation",
        "description": doc,
        "code": code,
        "resource": ["Patient"],
        "system": false,
        "type": true,
        "instance": false,
        "parameter": parameters
    }))
}
