//! IHE MHD ITI-65 "Provide Document Bundle" as the DMP accepts it: one SubmissionSet `List`, its
//! `DocumentReference`s with comprehensive metadata, and the `Binary` each one points to.
//!
//! [`Submission::parse`] checks everything that needs only the request: the Bundle's shape, the metadata (codes
//! against the CI-SIS value sets), each document's bytes (size, SHA-1, CDA R2 header read safely).
//! [`Submission::check_patient`] then checks the patient's identity (qualified, with an INS) and cross-checks
//! every CDA header with it. [`Submission::into_transaction`] turns the submission into the transaction Socle
//! stores: the Binary bytes replaced by a reference to the blob store, each Binary's `securityContext` set to
//! its DocumentReference (its reads are decided as the document's), replaced documents marked `superseded`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use socle_cda::{CdaDocument, CodeRef, Expected, InstanceId, Limits};
use socle_ins::rniv;

use crate::codes::{Element, Terminology};
use crate::{DmpError, EXT_BLOB};

/// The MHD code system of List types (`submissionset`, `folder`).
pub const MHD_LIST_TYPES: &str = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes";
/// The MHD extension naming the submitting source (`ihe-sourceId`).
pub const EXT_SOURCE_ID: &str = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId";
/// Profile of a comprehensive-metadata Provide Document Bundle.
pub const PROFILE_COMPREHENSIVE: &str =
    "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Comprehensive.ProvideBundle";
/// System of the CI-SIS visibility labels (J08: `INVISIBLE_PATIENT`, `MASQUE_PS`, …).
pub const OID_VISIBILITY: &str = "1.2.250.1.213.1.1.4.13";
/// System of the HL7 confidentiality codes (`N`, `R`, `V`).
pub const OID_CONFIDENTIALITY: &str = "2.16.840.1.113883.5.25";

/// Content types read as CDA R2.
const CDA_TYPES: &[&str] = &[
    "text/xml",
    "application/xml",
    "application/hl7-v3+xml",
    "application/cda+xml",
];
/// Content types of image references kept in a PACS (no bytes sent to the DMP).
const IMAGING_TYPES: &[&str] = &["application/dicom", "application/dicom+json"];
/// Content types a patient may add as they are (a scan, a photo), besides CDA documents.
const PATIENT_MEDIA: &[&str] = &["application/pdf", "image/jpeg", "image/png"];
/// System of the CI-SIS document types specific to France (J07), patient categories included.
pub const OID_TYPES_FR: &str = "1.2.250.1.213.1.1.4.12";

/// Whether a document type (system OID, code) is one of the patient categories (documents the patient adds:
/// `DOCPAT01`…`DOCPAT09`, `EXPPAT_1`…`EXPPAT_3`).
pub fn is_patient_type((system, code): &(String, String)) -> bool {
    system == OID_TYPES_FR && (code.starts_with("DOCPAT") || code.starts_with("EXPPAT_"))
}

/// Who submits: a professional (or their software), or the patient themself (Mon Espace Santé).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitter {
    Professional,
    Patient,
}

/// Whether `bundle` is an ITI-65 submission: it claims an MHD Provide Bundle profile, or it carries a
/// SubmissionSet `List`.
pub fn is_provide_bundle(bundle: &Value) -> bool {
    let profiled = bundle["meta"]["profile"].as_array().is_some_and(|a| {
        a.iter().any(|p| {
            p.as_str()
                .is_some_and(|p| p.starts_with("https://profiles.ihe.net/ITI/MHD/"))
        })
    });
    profiled
        || bundle["entry"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| is_submission_set(&e["resource"])))
}

fn is_submission_set(r: &Value) -> bool {
    r["resourceType"] == "List"
        && r["code"]["coding"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["system"] == MHD_LIST_TYPES && c["code"] == "submissionset")
        })
}

/// Limits on what a submission may carry.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest document accepted, in bytes (default 10 MiB: its base64 fits in a server's default 16 MiB body).
    pub max_document_bytes: u64,
    /// Limits of the CDA reader.
    pub cda: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_document_bytes: 10 * 1024 * 1024,
            cda: Limits::default(),
        }
    }
}

/// A document's bytes, from a `Binary` of the Bundle.
#[derive(Debug)]
pub struct Part {
    /// Position of the entry in the submitted Bundle.
    pub index: usize,
    pub full_url: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// One `DocumentReference` of the submission, checked.
#[derive(Debug)]
pub struct Doc {
    pub index: usize,
    pub full_url: String,
    /// `masterIdentifier` (XDS uniqueId): (system, value).
    pub unique_id: (Option<String>, String),
    /// Document type: (system OID, code).
    pub type_code: (String, String),
    /// Security labels: (system OID, code).
    pub labels: Vec<(String, String)>,
    /// The `Part` holding its bytes (`None`: images kept in a PACS).
    pub part: Option<usize>,
    /// The id of the document it replaces (`relatesTo.code = replaces`).
    pub replaces: Option<String>,
    /// The CDA header, for CDA documents.
    pub cda: Option<CdaDocument>,
    /// The author's IDNPS, when the metadata gives it.
    pub author: Option<String>,
    /// The custodian's identifier (`custodian.identifier`: IDNST, FINESS…), when the metadata gives it.
    pub custodian: Option<(Option<String>, String)>,
    /// `content[0].attachment.creation` (XDS `creationTime`), when given: the CDA header's `effectiveTime`.
    pub creation: Option<String>,
}

/// A checked ITI-65 submission.
#[derive(Debug)]
pub struct Submission {
    bundle: Value,
    pub list_index: usize,
    pub list_full_url: String,
    /// The SubmissionSet's uniqueId: (system, value).
    pub unique_id: (Option<String>, String),
    /// The patient's id (the `subject` of every resource).
    pub patient: String,
    pub docs: Vec<Doc>,
    pub parts: Vec<Part>,
    /// Checks that could not be made (value sets not loaded), reported to the submitter as warnings.
    pub notes: Vec<String>,
}

fn missing(field: impl Into<String>) -> DmpError {
    DmpError::Missing {
        field: field.into(),
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> DmpError {
    DmpError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A Binary's `data` (`at`: the entry) that is not base64: the reason from the strict decoder, which names the
/// faulty byte.
fn bad_base64(at: &str, data: &str) -> DmpError {
    let detail = STANDARD
        .decode(data)
        .err()
        .map_or_else(|| "refusé".to_string(), |e| e.to_string());
    invalid(
        format!("{at}.resource(Binary).data"),
        format!("base64 invalide : {detail}"),
    )
}

/// The patient id of a `subject` reference: `Patient/{id}`, relative or absolute.
fn patient_id(field: &str, subject: &Value) -> Result<String, DmpError> {
    let r = subject["reference"]
        .as_str()
        .ok_or_else(|| missing(format!("{field}.reference")))?;
    let tail = r.rsplit_once("Patient/").map(|(_, id)| id);
    match tail {
        Some(id) if !id.is_empty() && !id.contains(['/', '?']) => Ok(id.to_string()),
        _ => Err(invalid(
            field,
            format!("référence au patient attendue sous la forme Patient/{{id}} (reçu « {r} »)"),
        )),
    }
}

fn identifier(field: &str, v: &Value) -> Result<(Option<String>, String), DmpError> {
    let value = v["value"]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| missing(format!("{field}.value")))?;
    Ok((v["system"].as_str().map(str::to_string), value.to_string()))
}

/// The submitted uniqueId as a CDA instance identifier (`urn:oid:root^extension` or `root^extension`).
fn unique_instance(value: &str) -> InstanceId {
    InstanceId::from_xds(value.strip_prefix("urn:oid:").unwrap_or(value))
}

fn codings<'a>(field: &str, v: &'a Value) -> Result<&'a [Value], DmpError> {
    match v["coding"].as_array() {
        Some(a) if !a.is_empty() => Ok(a),
        _ => Err(missing(format!("{field}.coding"))),
    }
}

impl Submission {
    /// Reads and checks an ITI-65 Bundle (see the module documentation).
    pub fn parse(
        bundle: Value,
        terms: &Terminology,
        opts: &Options,
        by: Submitter,
    ) -> Result<Submission, DmpError> {
        if bundle["resourceType"] != "Bundle" || bundle["type"] != "transaction" {
            return Err(DmpError::Structure(
                "un Bundle de type transaction est attendu".into(),
            ));
        }
        let entries = bundle["entry"]
            .as_array()
            .ok_or_else(|| DmpError::Structure("Bundle.entry absent".into()))?;
        let mut list: Option<(usize, String)> = None;
        let mut doc_entries = Vec::new();
        let mut parts = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let r = &e["resource"];
            let rt = r["resourceType"].as_str().unwrap_or("");
            let at = format!("Bundle.entry[{i}]");
            let full_url = e["fullUrl"]
                .as_str()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| missing(format!("{at}.fullUrl")))?
                .to_string();
            if e["request"]["method"] != "POST" || e["request"]["url"] != rt {
                return Err(DmpError::Structure(format!(
                    "{at} : chaque entrée d'une soumission est une création (request POST {rt})"
                )));
            }
            match rt {
                "List" if is_submission_set(r) => {
                    if list.is_some() {
                        return Err(DmpError::Structure(
                            "une seule SubmissionSet (List) par soumission".into(),
                        ));
                    }
                    list = Some((i, full_url));
                }
                "DocumentReference" => doc_entries.push((i, full_url)),
                "Binary" => parts.push(Self::part(i, &at, full_url, r, opts)?),
                _ => {
                    return Err(DmpError::Structure(format!(
                        "{at} : {rt} inattendu (une soumission contient une List SubmissionSet, des DocumentReference et leurs Binary ; le patient doit déjà être connu)"
                    )));
                }
            }
        }
        let (list_index, list_full_url) = list.ok_or_else(|| {
            DmpError::Structure(format!(
                "SubmissionSet absente : une List de code {MHD_LIST_TYPES}|submissionset est attendue"
            ))
        })?;
        if doc_entries.is_empty() {
            return Err(DmpError::Structure(
                "aucun DocumentReference dans la soumission".into(),
            ));
        }
        let lr = &entries[list_index]["resource"];
        let lat = format!("Bundle.entry[{list_index}].resource(List)");
        let patient = patient_id(&format!("{lat}.subject"), &lr["subject"])?;
        let unique_id = lr["identifier"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["use"] == "usual"))
            .ok_or_else(|| missing(format!("{lat}.identifier (use = usual : uniqueId du lot)")))
            .and_then(|i| identifier(&format!("{lat}.identifier"), i))?;
        let source = lr["extension"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["url"] == EXT_SOURCE_ID));
        if source.is_none_or(|s| s["valueIdentifier"]["value"].as_str().is_none()) {
            return Err(missing(format!(
                "{lat}.extension({EXT_SOURCE_ID}).valueIdentifier (identifiant de la source)"
            )));
        }
        let mut listed: Vec<&str> = lr["entry"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["item"]["reference"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        listed.sort_unstable();
        let mut expected: Vec<&str> = doc_entries.iter().map(|(_, u)| u.as_str()).collect();
        expected.sort_unstable();
        if listed != expected {
            return Err(invalid(
                format!("{lat}.entry"),
                "la SubmissionSet doit lister exactement les DocumentReference de la soumission",
            ));
        }
        let mut notes = Vec::new();
        for (el, what) in [(Element::Class, "classe"), (Element::Format, "format")] {
            if !terms.has(el) {
                notes.push(format!(
                    "{what} ({}) vérifié(e) sans le jeu de valeurs {} (non chargé : socle serve --value-sets)",
                    match el {
                        Element::Class => "category",
                        _ => "content.format",
                    },
                    el.value_set()
                ));
            }
        }
        let mut docs = Vec::new();
        let mut used = vec![false; parts.len()];
        for (i, full_url) in doc_entries {
            let d = Self::doc(
                i,
                full_url,
                &entries[i]["resource"],
                &patient,
                &parts,
                terms,
            )?;
            let field = format!("Bundle.entry[{i}].resource(DocumentReference).type");
            match (by, is_patient_type(&d.type_code)) {
                (Submitter::Patient, false) => {
                    return Err(invalid(
                        field,
                        "un patient dépose ses documents dans les catégories patient (DOCPAT01 à DOCPAT09, EXPPAT_1 à EXPPAT_3)",
                    ));
                }
                (Submitter::Professional, true) if d.type_code.1.starts_with("DOCPAT") => {
                    return Err(invalid(
                        field,
                        format!(
                            "{} : catégorie réservée aux documents déposés par le patient",
                            d.type_code.1
                        ),
                    ));
                }
                _ => {}
            }
            if let Some(p) = d.part {
                if used[p] {
                    return Err(DmpError::Structure(format!(
                        "le Binary {} est référencé par plusieurs DocumentReference",
                        parts[p].full_url
                    )));
                }
                used[p] = true;
            }
            docs.push(d);
        }
        if let Some(p) = used.iter().position(|u| !u) {
            return Err(DmpError::Structure(format!(
                "le Binary {} n'est référencé par aucun DocumentReference",
                parts[p].full_url
            )));
        }
        let mut ids: Vec<&(Option<String>, String)> = docs.iter().map(|d| &d.unique_id).collect();
        ids.sort();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(DmpError::Structure(
                "deux documents de la soumission ont le même masterIdentifier".into(),
            ));
        }
        for d in &mut docs {
            let Some(p) = d.part else { continue };
            let part = &parts[p];
            if CDA_TYPES.contains(&base_type(&part.content_type).as_str()) {
                let field = format!("Bundle.entry[{}].resource(Binary)", part.index);
                let doc =
                    socle_cda::parse(&part.bytes, &opts.cda).map_err(|source| DmpError::Cda {
                        field: field.clone(),
                        source,
                    })?;
                // A level-1 body in a format of the CI-SIS list, in base64 unless it is text: what `$n1-body`
                // serves later must be what its media type says.
                if let socle_cda::Body::NonXml {
                    media_type,
                    representation,
                    bytes_base64_len,
                    compression,
                } = &doc.body
                {
                    // What `$n1-body` could not serve is refused now (the base64 itself is checked by the
                    // reader as the body streams past).
                    if *bytes_base64_len == 0 {
                        return Err(invalid(
                            format!("{field} : nonXMLBody/text"),
                            "corps de niveau 1 vide (aucun contenu intégré au document)"
                                .to_string(),
                        ));
                    }
                    if let Some(c) = compression {
                        return Err(invalid(
                            format!("{field} : nonXMLBody/text/@compression"),
                            format!(
                                "corps compressé (« {c} ») non pris en charge : envoyez-le non compressé"
                            ),
                        ));
                    }
                    let media = media_type
                        .as_deref()
                        .map_or_else(|| "text/plain".to_string(), base_type);
                    if !N1_MEDIA.contains(&media.as_str()) {
                        return Err(invalid(
                            format!("{field} : nonXMLBody/text/@mediaType"),
                            format!(
                                "« {media} » n'est pas un format de corps non structuré du CI-SIS ({})",
                                N1_MEDIA.join(", ")
                            ),
                        ));
                    }
                    let b64 = representation.as_deref() == Some("B64");
                    if !b64 && !media.starts_with("text/") {
                        return Err(invalid(
                            format!("{field} : nonXMLBody/text/@representation"),
                            format!("un corps {media} s'écrit en base64 (representation=\"B64\")"),
                        ));
                    }
                }
                d.cda = Some(doc);
            } else if by == Submitter::Patient
                && PATIENT_MEDIA.contains(&base_type(&part.content_type).as_str())
            {
                // A patient's own scan or photo: kept as sent, checked by its hash only.
            } else {
                return Err(invalid(
                    format!("Bundle.entry[{}].resource(Binary).contentType", part.index),
                    format!(
                        "le DMP reçoit des documents CDA R2 (niveau 1 ou 3, text/xml){} ; « {} » reçu",
                        if by == Submitter::Patient {
                            ", ou du patient un PDF, JPEG ou PNG"
                        } else {
                            ""
                        },
                        part.content_type
                    ),
                ));
            }
        }
        Ok(Submission {
            bundle,
            list_index,
            list_full_url,
            unique_id,
            patient,
            docs,
            parts,
            notes,
        })
    }

    fn part(
        index: usize,
        at: &str,
        full_url: String,
        r: &Value,
        opts: &Options,
    ) -> Result<Part, DmpError> {
        let content_type = r["contentType"]
            .as_str()
            .ok_or_else(|| missing(format!("{at}.resource(Binary).contentType")))?
            .to_string();
        let data = r["data"]
            .as_str()
            .ok_or_else(|| missing(format!("{at}.resource(Binary).data")))?;
        // Checked before decoding: base64 is 4 characters per 3 bytes, the last 2 maybe padding (whitespace
        // counted out only when the value looks too large with it). The decoded size is checked exactly after.
        let approx = |n: usize| ((n as u64 / 4) * 3).saturating_sub(2);
        if approx(data.len()) > opts.max_document_bytes {
            let size = approx(data.bytes().filter(|b| !b.is_ascii_whitespace()).count());
            if size > opts.max_document_bytes {
                return Err(DmpError::TooLarge {
                    size,
                    max: opts.max_document_bytes,
                });
            }
        }
        // The same alphabet, padding and canonical last symbol as `STANDARD`. FHIR's base64Binary may be
        // wrapped in lines (whitespace is not part of the value): looked for only when the value does not
        // decode as it is, then taken out and the value decoded again (the request body's own limit bounds the
        // copy). The error names the faulty byte.
        let bytes = match base64_simd::STANDARD.decode_to_vec(data) {
            Ok(b) => b,
            Err(_) if data.bytes().any(|b| b.is_ascii_whitespace()) => {
                let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                base64_simd::STANDARD
                    .decode_to_vec(&compact)
                    .map_err(|_| bad_base64(at, &compact))?
            }
            Err(_) => return Err(bad_base64(at, data)),
        };
        if bytes.len() as u64 > opts.max_document_bytes {
            return Err(DmpError::TooLarge {
                size: bytes.len() as u64,
                max: opts.max_document_bytes,
            });
        }
        Ok(Part {
            index,
            full_url,
            content_type,
            bytes,
        })
    }

    fn doc(
        index: usize,
        full_url: String,
        r: &Value,
        patient: &str,
        parts: &[Part],
        terms: &Terminology,
    ) -> Result<Doc, DmpError> {
        let at = format!("Bundle.entry[{index}].resource(DocumentReference)");
        let f = |s: &str| format!("{at}.{s}");
        if r["status"] != "current" {
            return Err(invalid(
                f("status"),
                "un document déposé a le statut « current »",
            ));
        }
        if patient_id(&f("subject"), &r["subject"])? != patient {
            return Err(invalid(
                f("subject"),
                "tous les documents d'une soumission concernent le patient de la SubmissionSet",
            ));
        }
        let unique_id = identifier(
            &f("masterIdentifier"),
            r.get("masterIdentifier")
                .ok_or_else(|| missing(f("masterIdentifier")))?,
        )?;
        // Every coding of the type is checked, and they name one kind of document: a patient category beside a
        // professional type would let one pass for the other (searches, the matrix, the patient's rights).
        let type_codings = codings(&f("type"), &r["type"])?;
        let type_code = terms.check(Element::Type, &f("type"), &type_codings[0])?;
        for (k, c) in type_codings.iter().enumerate().skip(1) {
            let other = terms.check(Element::Type, &f(&format!("type.coding[{k}]")), c)?;
            if is_patient_type(&other) != is_patient_type(&type_code) {
                return Err(invalid(
                    f("type"),
                    "les codes du type mêlent une catégorie patient et un type de document professionnel",
                ));
            }
        }
        let categories = r["category"]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| missing(f("category")))?;
        for (k, c) in categories.iter().enumerate() {
            let field = f(&format!("category[{k}]"));
            terms.check(Element::Class, &field, &codings(&field, c)?[0])?;
        }
        let labels_raw = r["securityLabel"]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| missing(f("securityLabel")))?;
        let mut labels = Vec::new();
        for (k, l) in labels_raw.iter().enumerate() {
            let field = f(&format!("securityLabel[{k}]"));
            for c in codings(&field, l)? {
                labels.push(terms.check(Element::Confidentiality, &field, c)?);
            }
        }
        if labels
            .iter()
            .filter(|(s, _)| s == OID_CONFIDENTIALITY)
            .count()
            > 1
        {
            return Err(invalid(
                f("securityLabel"),
                "un seul niveau de confidentialité (N, R ou V) par document",
            ));
        }
        if !labels.iter().any(|(s, _)| s == OID_CONFIDENTIALITY) {
            return Err(missing(format!(
                "{} (niveau de confidentialité N, R ou V)",
                f("securityLabel")
            )));
        }
        let ctx = &r["context"];
        terms.check(
            Element::FacilityType,
            &f("context.facilityType"),
            &codings(&f("context.facilityType"), &ctx["facilityType"])?[0],
        )?;
        terms.check(
            Element::PracticeSetting,
            &f("context.practiceSetting"),
            &codings(&f("context.practiceSetting"), &ctx["practiceSetting"])?[0],
        )?;
        match r["date"].as_str() {
            None => return Err(missing(f("date"))),
            Some(d) if !socle_fhir::elements::is_instant(d) => {
                return Err(invalid(
                    f("date"),
                    format!(
                        "« {d} » n'est pas un instant FHIR (date, heure à la seconde et fuseau : \
                         2026-11-20T10:15:00+01:00)"
                    ),
                ));
            }
            Some(_) => {}
        }
        let author = r["author"].as_array().and_then(|a| {
            a.iter().find_map(|x| {
                (x["identifier"]["system"] == "urn:oid:1.2.250.1.71.4.2.1")
                    .then(|| x["identifier"]["value"].as_str().map(str::to_string))
                    .flatten()
            })
        });
        if r["author"].as_array().is_none_or(Vec::is_empty) {
            return Err(missing(f("author")));
        }
        let custodian = r["custodian"]["identifier"]["value"]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(|v| {
                let system = r["custodian"]["identifier"]["system"]
                    .as_str()
                    .map(str::to_string);
                (system, v.to_string())
            });
        let content = r["content"]
            .as_array()
            .filter(|a| a.len() == 1)
            .ok_or_else(|| invalid(f("content"), "un seul contenu par document"))?;
        let c = &content[0];
        let fmt = &c["format"];
        if fmt["code"].as_str().is_none() {
            return Err(missing(f("content[0].format")));
        }
        terms.check(Element::Format, &f("content[0].format"), fmt)?;
        let att = &c["attachment"];
        let creation = match &att["creation"] {
            Value::Null => None,
            Value::String(t) => Some(t.clone()),
            _ => {
                return Err(invalid(
                    f("content[0].attachment.creation"),
                    "date et heure attendues (dateTime FHIR)",
                ));
            }
        };
        let ct = att["contentType"]
            .as_str()
            .ok_or_else(|| missing(f("content[0].attachment.contentType")))?;
        let url = att["url"]
            .as_str()
            .ok_or_else(|| missing(f("content[0].attachment.url")))?;
        let part = parts.iter().position(|p| p.full_url == url);
        let part = match part {
            Some(p) => {
                let bytes = &parts[p].bytes;
                if base_type(&parts[p].content_type) != base_type(ct) {
                    return Err(invalid(
                        f("content[0].attachment.contentType"),
                        format!(
                            "« {ct} » ne correspond pas au Binary ({})",
                            parts[p].content_type
                        ),
                    ));
                }
                let hash_field = f("content[0].attachment.hash");
                let submitted = att["hash"].as_str().ok_or_else(|| DmpError::HashMissing {
                    field: hash_field.clone(),
                })?;
                let digest = Sha1::digest(bytes);
                let same = STANDARD
                    .decode(submitted)
                    .is_ok_and(|h| h.as_slice() == digest.as_slice());
                if !same {
                    return Err(DmpError::HashMismatch {
                        field: hash_field,
                        submitted: submitted.to_string(),
                        computed: STANDARD.encode(digest),
                    });
                }
                {
                    let size = att
                        .get("size")
                        .ok_or_else(|| missing(f("content[0].attachment.size")))?;
                    let size = size.as_u64().ok_or_else(|| {
                        invalid(f("content[0].attachment.size"), "entier attendu")
                    })?;
                    if size != bytes.len() as u64 {
                        return Err(DmpError::SizeMismatch {
                            field: f("content[0].attachment.size"),
                            submitted: size,
                            received: bytes.len() as u64,
                        });
                    }
                }
                Some(p)
            }
            None if IMAGING_TYPES.contains(&base_type(ct).as_str())
                && (url.starts_with("https://") || url.starts_with("http://")) =>
            {
                None
            }
            None => {
                return Err(invalid(
                    f("content[0].attachment.url"),
                    format!(
                        "« {url} » ne désigne aucun Binary de la soumission (seules les images d'un PACS — application/dicom — restent à l'extérieur)"
                    ),
                ));
            }
        };
        let mut replaces = None;
        for (k, rel) in r["relatesTo"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let field = f(&format!("relatesTo[{k}]"));
            let code = rel["code"]
                .as_str()
                .ok_or_else(|| missing(format!("{field}.code")))?;
            if !matches!(code, "replaces" | "transforms" | "signs" | "appends") {
                return Err(invalid(
                    format!("{field}.code"),
                    format!("relation « {code} » inconnue"),
                ));
            }
            let target = rel["target"]["reference"]
                .as_str()
                .ok_or_else(|| missing(format!("{field}.target.reference")))?;
            let id = target
                .rsplit_once("DocumentReference/")
                .map(|(_, id)| id)
                .filter(|id| !id.is_empty() && !id.contains(['/', '?']))
                .ok_or_else(|| {
                    invalid(
                        format!("{field}.target"),
                        "DocumentReference/{id} d'un document du DMP attendu",
                    )
                })?;
            if code == "replaces" {
                if replaces.is_some() {
                    return Err(invalid(field, "un document en remplace un seul"));
                }
                replaces = Some(id.to_string());
            }
        }
        Ok(Doc {
            index,
            full_url,
            unique_id,
            type_code,
            labels,
            part,
            replaces,
            cda: None,
            author,
            custodian,
            creation,
        })
    }

    /// Checks the patient (the stored `Patient` named by the submission): a qualified identity with an INS,
    /// and every CDA header about that INS, of the submitted type and unique id. Returns the INS
    /// (system URI, matricule).
    pub fn check_patient(&self, patient: &Value) -> Result<(String, String), DmpError> {
        let rel = rniv::reliability_of(patient).map_err(|e| invalid("Patient.extension", e))?;
        let status = rel.as_ref().map_or("PROV", |r| r.status.code());
        if status != "QUAL" {
            return Err(DmpError::IdentityNotQualified {
                status: status.to_string(),
            });
        }
        let (system, value) =
            rniv::ins_of(patient).ok_or_else(|| DmpError::IdentityNotQualified {
                status: "QUAL sans INS".into(),
            })?;
        let oid = system.strip_prefix("urn:oid:").unwrap_or(&system);
        for d in &self.docs {
            let Some(cda) = &d.cda else { continue };
            let confidentiality = d
                .labels
                .iter()
                .find(|(s, _)| s == OID_CONFIDENTIALITY)
                .map(|(s, c)| CodeRef::new(c.clone(), s.clone()));
            let expected = Expected {
                patient_ins: InstanceId::new(oid, Some(&value)),
                type_code: CodeRef::new(d.type_code.1.clone(), d.type_code.0.clone()),
                confidentiality,
                set_id: None,
                unique_id: Some(unique_instance(&d.unique_id.1)),
                author_idnps: d.author.clone(),
                custodian: d.custodian.clone(),
                creation: d.creation.clone(),
            };
            let mismatches = socle_cda::cross_check(cda, &expected);
            if !mismatches.is_empty() {
                return Err(DmpError::CdaMismatch {
                    field: format!("Bundle.entry[{}].resource(DocumentReference)", d.index),
                    mismatches,
                });
            }
        }
        Ok((system, value))
    }

    /// The transaction Socle stores, and where each submitted resource lands in it. `blobs[i]` is the stored
    /// blob (hex SHA-256, size) of `parts[i]`; `superseded` are the replaced documents as stored (id, version,
    /// resource).
    pub fn into_transaction(
        self,
        blobs: &[(String, u64)],
        superseded: &[(String, i64, Value)],
    ) -> (Value, Layout) {
        let Submission {
            mut bundle,
            list_index,
            docs,
            parts,
            ..
        } = self;
        let mut entries = match bundle["entry"].take() {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        let mut out = Vec::with_capacity(entries.len() + superseded.len());
        let mut layout = Layout::default();
        for (p, (sha256, size)) in parts.iter().zip(blobs) {
            layout.origin.push((p.index, out.len()));
            let owner = docs
                .iter()
                .find(|d| d.part.is_some_and(|i| parts[i].index == p.index))
                .map(|d| d.full_url.clone())
                .unwrap_or_default();
            out.push(json!({
                "fullUrl": p.full_url,
                "resource": {
                    "resourceType": "Binary",
                    "meta": {"extension": [{"url": EXT_BLOB, "extension": [
                        {"url": "sha256", "valueString": sha256},
                        {"url": "size", "valueUnsignedInt": size},
                    ]}]},
                    "contentType": p.content_type,
                    "securityContext": {"reference": owner},
                },
                "request": {"method": "POST", "url": "Binary"},
            }));
        }
        for d in &docs {
            layout.origin.push((d.index, out.len()));
            layout.documents.push(out.len());
            // The Binaries come first, in the order of the parts.
            layout.binaries.push(d.part);
            out.push(entries[d.index].take());
        }
        layout.origin.push((list_index, out.len()));
        layout.list_origin = list_index;
        layout.list = out.len();
        out.push(entries[list_index].take());
        for (id, version, resource) in superseded {
            let mut r = resource.clone();
            r["status"] = json!("superseded");
            layout.superseded.push(id.clone());
            out.push(json!({
                "resource": r,
                "request": {"method": "PUT", "url": format!("DocumentReference/{id}"), "ifMatch": format!("W/\"{version}\"")},
            }));
        }
        (
            json!({"resourceType": "Bundle", "type": "transaction", "entry": out}),
            layout,
        )
    }
}

/// Where the submitted resources are in the stored transaction (positions of its entries).
#[derive(Debug, Default, Clone)]
pub struct Layout {
    pub documents: Vec<usize>,
    /// For each document (as `documents`), the position of its Binary in the stored transaction.
    pub binaries: Vec<Option<usize>>,
    pub list: usize,
    pub superseded: Vec<String>,
    /// (position in the submitted Bundle, position in the stored transaction) of every submitted entry.
    pub origin: Vec<(usize, usize)>,
    /// Position of the SubmissionSet in the submitted Bundle.
    pub list_origin: usize,
}

/// The media types of a CDA level-1 body (CI-SIS, volet structuration minimale): PDF, plain text, RTF, JPEG,
/// TIFF.
const N1_MEDIA: &[&str] = &[
    "application/pdf",
    "text/plain",
    "text/rtf",
    "image/jpeg",
    "image/tiff",
];

/// A media type without its parameters, in lower case (media types compare case-insensitively, RFC 6838).
fn base_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A CDA document that replaces another must be a new version of the same document (CI-SIS): the same
/// `setId`, a greater `versionNumber` — each compared when both headers carry it. `index`: the new
/// DocumentReference's entry, named in the error.
pub fn check_new_version(
    index: usize,
    old: &CdaDocument,
    new: &CdaDocument,
) -> Result<(), DmpError> {
    if let (Some(o), Some(n)) = (&old.set_id, &new.set_id)
        && o != n
    {
        return Err(DmpError::Replacement(format!(
            "Bundle.entry[{index}] : le setId du document ({}) n'est pas celui du document remplacé ({}) ; une \
             nouvelle version d'un document CDA garde son setId",
            n.to_xds(),
            o.to_xds()
        )));
    }
    if let (Some(o), Some(n)) = (old.version_number, new.version_number)
        && n <= o
    {
        return Err(DmpError::Replacement(format!(
            "Bundle.entry[{index}] : versionNumber {n} n'est pas supérieur à celui du document remplacé ({o})"
        )));
    }
    Ok(())
}
