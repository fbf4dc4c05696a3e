//! Synthetic documents and submissions: a CDA R2 level-1 document wrapping a PDF, and the ITI-65 Bundle that
//! submits it with comprehensive metadata. Used by the tests, the benchmark and the demonstration data; never
//! real health data.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::submission::{EXT_SOURCE_ID, MHD_LIST_TYPES, PROFILE_COMPREHENSIVE};

/// The patient a document is about.
#[derive(Debug, Clone)]
pub struct Person {
    /// INS OID, e.g. `1.2.250.1.213.1.4.10` (test INS) or `…4.8` (INS-NIR).
    pub ins_oid: String,
    pub ins: String,
    pub family: String,
    pub given: String,
    /// `M` or `F`.
    pub gender: String,
    /// `YYYYMMDD`.
    pub birth: String,
}

impl Person {
    /// A test identity (INS OID `…4.10`, a matricule whose key verifies).
    pub fn example() -> Person {
        Person {
            ins_oid: "1.2.250.1.213.1.4.10".into(),
            ins: "279035121518989".into(),
            family: "MARTIN".into(),
            given: "Zoé".into(),
            gender: "F".into(),
            birth: "19790328".into(),
        }
    }
}

/// One document to submit.
#[derive(Debug, Clone)]
pub struct SampleDoc {
    /// Document type (LOINC, in J07), e.g. `11488-4` (compte rendu de consultation).
    pub type_code: String,
    pub type_display: String,
    /// The document's unique id: OID root and extension.
    pub id_root: String,
    pub id_extension: String,
    /// Author's IDNPS.
    pub author: String,
    /// Size of the embedded PDF, in bytes.
    pub pdf_bytes: usize,
    /// Extra security labels (system URI, code), e.g. the CI-SIS `INVISIBLE_PATIENT`.
    pub labels: Vec<(String, String)>,
    /// The stored DocumentReference this one replaces.
    pub replaces: Option<String>,
    /// Creation time, `YYYYMMDDHHMMSS+ZZZZ`.
    pub time: String,
    /// The CDA `setId`'s extension (common to a document's versions) and `versionNumber`.
    pub set_extension: String,
    pub version: u32,
}

impl SampleDoc {
    /// A consultation report of `pdf_bytes` by author `810000000001`, unique id `1.2.250.1.999.1^{ext}`.
    pub fn report(ext: &str, pdf_bytes: usize) -> SampleDoc {
        SampleDoc {
            type_code: "11488-4".into(),
            type_display: "Compte rendu de consultation".into(),
            id_root: "1.2.250.1.999.1".into(),
            id_extension: ext.into(),
            author: "810000000001".into(),
            pdf_bytes,
            labels: Vec::new(),
            replaces: None,
            time: "20261120101500+0100".into(),
            set_extension: format!("{ext}-set"),
            version: 1,
        }
    }
}

/// The code system of a document type: the CI-SIS French types (`DOCPAT04`, `EXPPAT_3`…) or LOINC.
fn type_system(code: &str) -> &'static str {
    if code.chars().any(|c| c.is_ascii_alphabetic()) {
        crate::submission::OID_TYPES_FR
    } else {
        "2.16.840.1.113883.6.1"
    }
}

/// A PDF of about `size` bytes (a one-page document padded with a comment), the same bytes for the same size.
pub fn pdf(size: usize) -> Vec<u8> {
    let head = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >> endobj\n\
trailer << /Root 1 0 R >>\n";
    let mut out = head.to_vec();
    let mut x: u32 = 0x9E37_79B9;
    while out.len() + 6 < size {
        out.extend_from_slice(b"% ");
        for _ in 0..70.min(size.saturating_sub(out.len() + 6)) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push(b'A' + (x % 26) as u8);
        }
        out.push(b'\n');
    }
    out.extend_from_slice(b"%%EOF\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A CDA R2 level-1 document about `p`, wrapping a PDF (see [`SampleDoc`]).
pub fn cda_n1(p: &Person, d: &SampleDoc) -> Vec<u8> {
    let body = STANDARD.encode(pdf(d.pdf_bytes));
    let mut lines = String::with_capacity(body.len() + body.len() / 76 + 1);
    for chunk in body.as_bytes().chunks(76) {
        lines.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        lines.push('\n');
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <id root="{root}" extension="{ext}"/>
  <code code="{code}" codeSystem="{code_system}" displayName="{display}"/>
  <title>{display}</title>
  <effectiveTime value="{time}"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <setId root="{root}" extension="{set}"/>
  <versionNumber value="{version}"/>
  <recordTarget>
    <patientRole>
      <id root="{ins_oid}" extension="{ins}"/>
      <patient>
        <name><family qualifier="BR">{family}</family><given>{given}</given></name>
        <administrativeGenderCode code="{gender}" codeSystem="2.16.840.1.113883.5.1"/>
        <birthTime value="{birth}"/>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="{time}"/>
    <assignedAuthor><id root="1.2.250.1.71.4.2.1" extension="{author}"/></assignedAuthor>
  </author>
  <custodian>
    <assignedCustodian>
      <representedCustodianOrganization>
        <id root="1.2.250.1.71.4.2.2" extension="1750000000"/><name>Centre de santé Socle</name>
      </representedCustodianOrganization>
    </assignedCustodian>
  </custodian>
  <component>
    <nonXMLBody>
      <text mediaType="application/pdf" representation="B64">
{lines}      </text>
    </nonXMLBody>
  </component>
</ClinicalDocument>
"#,
        root = escape(&d.id_root),
        ext = escape(&d.id_extension),
        code = escape(&d.type_code),
        code_system = type_system(&d.type_code),
        display = escape(&d.type_display),
        time = escape(&d.time),
        ins_oid = escape(&p.ins_oid),
        ins = escape(&p.ins),
        family = escape(&p.family),
        given = escape(&p.given),
        gender = escape(&p.gender),
        birth = escape(&p.birth),
        author = escape(&d.author),
        set = escape(&d.set_extension),
        version = d.version,
    )
    .into_bytes()
}

/// The `DocumentReference` of a submission (comprehensive metadata), its bytes sent as `binary_url`.
pub fn document_reference(
    patient_id: &str,
    d: &SampleDoc,
    bytes: &[u8],
    binary_url: &str,
) -> Value {
    let mut labels = vec![json!({"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]})];
    for (s, c) in &d.labels {
        labels.push(json!({"coding": [{"system": s, "code": c}]}));
    }
    let mut r = json!({
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986",
                             "value": format!("urn:oid:{}^{}", d.id_root, d.id_extension)},
        "status": "current",
        "type": {"coding": [{"system": crate::codes::system_uri(type_system(&d.type_code)), "code": d.type_code, "display": d.type_display}]},
        "category": [{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.1", "code": "10",
                                  "display": "Compte rendu"}]}],
        "subject": {"reference": format!("Patient/{patient_id}")},
        "date": "2026-11-20T10:15:00+01:00",
        "author": [{"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": d.author}}],
        "custodian": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1750000000"}},
        "securityLabel": labels,
        "content": [{
            "attachment": {"contentType": "text/xml", "language": "fr-FR", "url": binary_url,
                           "size": bytes.len(), "hash": STANDARD.encode(Sha1::digest(bytes)),
                           "title": d.type_display, "creation": fhir_time(&d.time)},
            "format": {"system": "urn:oid:1.2.250.1.213.1.1.4.2.282", "code": "urn:ihe:iti:xds-sd:pdf:2008",
                       "display": "Document à corps non structuré en PDF/A-1"}
        }],
        "context": {
            "facilityType": {"coding": [{"system": "urn:oid:1.2.250.1.71.4.2.4", "code": "SA01",
                                         "display": "Etablissement Public de santé"}]},
            "practiceSetting": {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.9", "code": "ETABLISSEMENT",
                                            "display": "Etablissement de santé"}]}
        }
    });
    if let Some(old) = &d.replaces {
        r["relatesTo"] = json!([{"code": "replaces", "target": {"reference": format!("DocumentReference/{old}")}}]);
    }
    r
}

/// An HL7 TS to the second with its offset (`20261120101500+0100`) as a FHIR dateTime
/// (`2026-11-20T10:15:00+01:00`); other text unchanged.
fn fhir_time(ts: &str) -> String {
    match (
        ts.get(0..4),
        ts.get(4..6),
        ts.get(6..8),
        ts.get(8..10),
        ts.get(10..12),
        ts.get(12..14),
        ts.get(14..17),
        ts.get(17..19),
    ) {
        (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s), Some(oh), Some(om))
            if ts.len() == 19 =>
        {
            format!("{y}-{mo}-{d}T{h}:{mi}:{s}{oh}:{om}")
        }
        _ => ts.to_string(),
    }
}

/// An ITI-65 Provide Document Bundle submitting `docs` (already built CDA bytes with their metadata) for the
/// stored patient `patient_id`; `submission` is the submission set's unique id extension.
pub fn provide_bundle(patient_id: &str, submission: &str, docs: &[(SampleDoc, Vec<u8>)]) -> Value {
    let docs: Vec<(Value, Vec<u8>)> = docs
        .iter()
        .map(|(d, bytes)| (document_reference(patient_id, d, bytes, ""), bytes.clone()))
        .collect();
    provide_bundle_with(patient_id, submission, &docs)
}

/// [`provide_bundle`] with DocumentReferences built by the caller (their attachment URL is set here).
pub fn provide_bundle_with(patient_id: &str, submission: &str, docs: &[(Value, Vec<u8>)]) -> Value {
    let mut entries = Vec::new();
    let mut items = Vec::new();
    for (k, (d, bytes)) in docs.iter().enumerate() {
        let doc_url = format!("urn:uuid:00000000-0000-4000-8000-{:012x}", 2 * k + 1);
        let bin_url = format!("urn:uuid:00000000-0000-4000-8000-{:012x}", 2 * k + 2);
        let mut d = d.clone();
        items.push(json!({"item": {"reference": doc_url}}));
        entries.push(json!({
            "fullUrl": doc_url,
            "resource": d.clone(),
            "request": {"method": "POST", "url": "DocumentReference"}
        }));
        if bytes.is_empty() {
            // No bytes: a reference to images kept in a PACS (the attachment's URL is the caller's).
            continue;
        }
        d["content"][0]["attachment"]["url"] = json!(bin_url);
        if let Some(last) = entries.last_mut() {
            last["resource"] = d.clone();
        }
        let ct = d["content"][0]["attachment"]["contentType"].clone();
        entries.push(json!({
            "fullUrl": bin_url,
            "resource": {"resourceType": "Binary", "contentType": ct, "data": STANDARD.encode(bytes)},
            "request": {"method": "POST", "url": "Binary"}
        }));
    }
    entries.insert(
        0,
        json!({
            "fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000000",
            "resource": {
                "resourceType": "List",
                "extension": [{"url": EXT_SOURCE_ID,
                               "valueIdentifier": {"value": "urn:oid:1.2.250.1.999.9"}}],
                "identifier": [{"use": "usual", "system": "urn:ietf:rfc:3986",
                                "value": format!("urn:oid:1.2.250.1.999.2.{submission}")}],
                "status": "current", "mode": "working",
                "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
                "subject": {"reference": format!("Patient/{patient_id}")},
                "date": "2026-11-20T10:15:00+01:00",
                "entry": items
            },
            "request": {"method": "POST", "url": "List"}
        }),
    );
    json!({"resourceType": "Bundle", "type": "transaction",
           "meta": {"profile": [PROFILE_COMPREHENSIVE]}, "entry": entries})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_documents_parse() {
        let p = Person::example();
        let d = SampleDoc::report("A<1>", 100_000);
        let bytes = cda_n1(&p, &d);
        let doc = socle_cda::parse(&bytes, &socle_cda::Limits::default()).unwrap();
        assert_eq!(doc.id.extension.as_deref(), Some("A<1>"));
        assert_eq!(doc.ins().unwrap().value, "279035121518989");
        let (mt, body) = socle_cda::extract_n1_body(&bytes, &socle_cda::Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(mt, "application/pdf");
        assert_eq!(body, pdf(100_000));
        assert!((99_990..=100_010).contains(&body.len()), "{}", body.len());
        assert!(body.starts_with(b"%PDF-1.4") && body.ends_with(b"%%EOF\n"));
    }
}
