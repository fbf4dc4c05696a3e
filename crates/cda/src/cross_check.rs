//! Compares a parsed document with the metadata submitted alongside it (IHE MHD / XDS).
//!
//! The DMP must refuse a document whose header contradicts its submission ("a document for
//! another patient than the one named in the submission"). This module only compares; deciding
//! what to do with the differences belongs to the caller.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{CdaDocument, Coded, InstanceId};
use crate::time::Timestamp;

/// A code and its system, as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CodeRef {
    pub code: String,
    pub code_system: String,
}

impl CodeRef {
    /// Builds a code reference.
    pub fn new(code: impl Into<String>, code_system: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            code_system: code_system.into(),
        }
    }
}

/// What the submission's metadata says about the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// The patient's INS: `root` = its OID (`1.2.250.1.213.1.4.8` for an INS-NIR…),
    /// `extension` = the matricule.
    pub patient_ins: InstanceId,
    /// Document type (`DocumentReference.type`, XDS `typeCode`).
    pub type_code: CodeRef,
    /// Confidentiality (`securityLabel`), when the submission gives one comparable with the
    /// document's `confidentialityCode`.
    pub confidentiality: Option<CodeRef>,
    /// XDS `referenceIdList` / setId, when given.
    pub set_id: Option<InstanceId>,
    /// `masterIdentifier` / XDS `uniqueId`, when given.
    pub unique_id: Option<InstanceId>,
    /// The author's IDNPS (`DocumentReference.author.identifier`, XDS `authorPerson`), when given: one of the
    /// header's authors must carry it (compared when the header names authors by IDNPS).
    pub author_idnps: Option<String>,
    /// The document's creation time as submitted (`DocumentReference.content.attachment.creation`, XDS
    /// `creationTime`: a FHIR `dateTime`), when given: the header's `effectiveTime`.
    pub creation: Option<String>,
    /// The custodian's identifier as submitted (`DocumentReference.custodian.identifier`: system, value), when
    /// given: one of the header's custodian ids must carry that value (and that OID, for a `urn:oid:` system).
    pub custodian: Option<(Option<String>, String)>,
}

/// The field that differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MismatchField {
    /// The patient's INS (OID or matricule).
    PatientIns,
    /// The document type code or its code system.
    TypeCode,
    /// The confidentiality code or its code system.
    Confidentiality,
    /// The setId.
    SetId,
    /// The document's unique id.
    UniqueId,
    /// The author (IDNPS).
    Author,
    /// The creation time (`effectiveTime`).
    Creation,
    /// The custodian (the structure keeping the document).
    Custodian,
}

impl MismatchField {
    /// French label (user-facing).
    pub fn label_fr(self) -> &'static str {
        match self {
            Self::PatientIns => "INS du patient",
            Self::TypeCode => "type de document",
            Self::Confidentiality => "confidentialité",
            Self::SetId => "identifiant de lot de versions (setId)",
            Self::UniqueId => "identifiant unique du document",
            Self::Author => "auteur (IDNPS)",
            Self::Creation => "date de création (effectiveTime)",
            Self::Custodian => "structure dépositaire (custodian)",
        }
    }
}

/// One difference between the submission and the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    pub field: MismatchField,
    /// Value in the submission.
    pub submitted: String,
    /// Value in the document; `None` when the document has none.
    pub in_document: Option<String>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.in_document {
            Some(doc) => write!(
                f,
                "{} : la soumission indique « {} », le document CDA « {} »",
                self.field.label_fr(),
                self.submitted,
                doc
            ),
            None => write!(
                f,
                "{} : la soumission indique « {} », le document CDA n'en contient pas",
                self.field.label_fr(),
                self.submitted
            ),
        }
    }
}

/// Every difference between `expected` and `doc`; empty when they agree.
///
/// The INS is compared with every INS identifier of the patient (several differing INS in one
/// document are a mismatch too). Codes are compared exactly, codes systems included.
pub fn cross_check(doc: &CdaDocument, expected: &Expected) -> Vec<Mismatch> {
    let mut out = Vec::new();

    let submitted_ins = show_ins(
        &expected.patient_ins.root,
        expected.patient_ins.extension.as_deref().unwrap_or(""),
    );
    let all_ins: Vec<_> = doc.patient.all_ins().collect();
    if all_ins.is_empty() {
        out.push(Mismatch {
            field: MismatchField::PatientIns,
            submitted: submitted_ins,
            in_document: None,
        });
    } else {
        for ins in all_ins {
            let same = ins.oid == expected.patient_ins.root
                && Some(ins.value) == expected.patient_ins.extension.as_deref();
            if !same {
                out.push(Mismatch {
                    field: MismatchField::PatientIns,
                    submitted: submitted_ins.clone(),
                    in_document: Some(show_ins(ins.oid, ins.value)),
                });
            }
        }
    }

    check_code(
        &mut out,
        MismatchField::TypeCode,
        &expected.type_code,
        &doc.code,
    );
    if let Some(conf) = &expected.confidentiality {
        check_code(
            &mut out,
            MismatchField::Confidentiality,
            conf,
            &doc.confidentiality_code,
        );
    }
    check_id(
        &mut out,
        MismatchField::SetId,
        expected.set_id.as_ref(),
        doc.set_id.as_ref(),
    );
    check_id(
        &mut out,
        MismatchField::UniqueId,
        expected.unique_id.as_ref(),
        Some(&doc.id),
    );
    if let Some(author) = &expected.author_idnps {
        let in_document: Vec<&str> = doc
            .authors
            .iter()
            .filter_map(|a| a.assigned.idnps())
            .collect();
        if !in_document.is_empty() && !in_document.contains(&author.as_str()) {
            out.push(Mismatch {
                field: MismatchField::Author,
                submitted: author.clone(),
                in_document: Some(in_document.join(", ")),
            });
        }
    }
    if let Some((system, value)) = &expected.custodian
        && !doc.custodian.ids.is_empty()
    {
        let oid = system.as_deref().and_then(|s| s.strip_prefix("urn:oid:"));
        let named = doc.custodian.ids.iter().any(|id| {
            id.extension.as_deref() == Some(value.as_str()) && oid.is_none_or(|o| id.root == o)
        });
        if !named {
            out.push(Mismatch {
                field: MismatchField::Custodian,
                submitted: value.clone(),
                in_document: Some(
                    doc.custodian
                        .ids
                        .iter()
                        .map(InstanceId::to_xds)
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            });
        }
    }
    if let Some(creation) = &expected.creation
        && !same_time(creation, doc.effective_time.parsed.as_ref())
    {
        out.push(Mismatch {
            field: MismatchField::Creation,
            submitted: creation.clone(),
            in_document: doc
                .effective_time
                .parsed
                .as_ref()
                .map(Timestamp::to_iso8601)
                .or_else(|| {
                    (!doc.effective_time.raw.is_empty()).then(|| doc.effective_time.raw.clone())
                }),
        });
    }
    out
}

/// A FHIR `dateTime` (`2026-11-20`, `2026-11-20T10:15:00+01:00`, `…Z`) as an HL7 TS, parsed.
fn fhir_time(s: &str) -> Option<Timestamp> {
    let (main, offset) = match s.find('T') {
        Some(t) => {
            let (d, time) = s.split_at(t);
            let cut = time
                .rfind(['+', '-', 'Z'])
                .filter(|&i| i > 0)
                .unwrap_or(time.len());
            let (clock, off) = time.split_at(cut);
            (format!("{d}{clock}"), off.to_string())
        }
        None => (s.to_string(), String::new()),
    };
    let mut ts: String = main
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | 'T'))
        .collect();
    match offset.as_str() {
        "" => {}
        "Z" => ts.push_str("+0000"),
        o => ts.push_str(&o.replace(':', "")),
    }
    Timestamp::parse(&ts)
}

/// Seconds since the epoch of a timestamp given at least to the minute with its offset (missing seconds: 0), and
/// whether its seconds were given.
fn instant(t: &Timestamp) -> Option<(i64, bool)> {
    let (m, d, h, mi, off) = (t.month?, t.day?, t.hour?, t.minute?, t.offset_minutes?);
    // Days from the civil date (proleptic Gregorian).
    let (y, m) = if m <= 2 {
        (i64::from(t.year) - 1, i64::from(m) + 9)
    } else {
        (i64::from(t.year), i64::from(m) - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((
        days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(t.second.unwrap_or(0))
            - i64::from(off) * 60,
        t.second.is_some(),
    ))
}

/// Whether the submitted creation time names the document's: the same instant when both are given with an
/// offset (to the second, or to the minute when one stops there), else the same date as far as both go.
fn same_time(submitted: &str, doc: Option<&Timestamp>) -> bool {
    let (Some(a), Some(b)) = (fhir_time(submitted), doc) else {
        return false;
    };
    if let (Some((x, xs)), Some((y, ys))) = (instant(&a), instant(b)) {
        return if xs && ys {
            x == y
        } else {
            x.div_euclid(60) == y.div_euclid(60)
        };
    }
    a.year == b.year
        && a.month.zip(b.month).is_none_or(|(x, y)| x == y)
        && a.day.zip(b.day).is_none_or(|(x, y)| x == y)
}

fn show_ins(oid: &str, value: &str) -> String {
    format!("{value} (OID {oid})")
}

fn show_code(code: &str, system: Option<&str>) -> String {
    format!("{code} ({})", system.unwrap_or("système de codes absent"))
}

fn check_code(out: &mut Vec<Mismatch>, field: MismatchField, expected: &CodeRef, doc: &Coded) {
    if expected.code != doc.code
        || Some(expected.code_system.as_str()) != doc.code_system.as_deref()
    {
        out.push(Mismatch {
            field,
            submitted: show_code(&expected.code, Some(&expected.code_system)),
            in_document: Some(show_code(&doc.code, doc.code_system.as_deref())),
        });
    }
}

fn check_id(
    out: &mut Vec<Mismatch>,
    field: MismatchField,
    expected: Option<&InstanceId>,
    doc: Option<&InstanceId>,
) {
    if let Some(expected) = expected
        && Some(expected) != doc
    {
        out.push(Mismatch {
            field,
            submitted: expected.to_xds(),
            in_document: doc.map(InstanceId::to_xds),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_times_compare_as_instants_or_dates() {
        let doc = Timestamp::parse("20261120101500+0100");
        assert!(same_time("2026-11-20T10:15:00+01:00", doc.as_ref()));
        assert!(same_time("2026-11-20T09:15:00Z", doc.as_ref()));
        assert!(same_time("2026-11-20T04:15:00-05:00", doc.as_ref()));
        assert!(!same_time("2026-11-20T10:15:01+01:00", doc.as_ref()));
        assert!(!same_time("2026-11-20T10:15:00Z", doc.as_ref()));
        // To the minute on one side: the minutes.
        assert!(same_time(
            "2026-11-20T09:15:00Z",
            Timestamp::parse("202611201015+0100").as_ref()
        ));
        assert!(!same_time(
            "2026-11-20T09:16:00Z",
            Timestamp::parse("202611201015+0100").as_ref()
        ));
        // To the day only: the dates.
        assert!(same_time("2026-11-20", doc.as_ref()));
        assert!(!same_time("2026-11-21", doc.as_ref()));
        assert!(same_time("2026-11", Timestamp::parse("20261103").as_ref()));
        assert!(!same_time(
            "2025-11-03",
            Timestamp::parse("20261103").as_ref()
        ));
        // Across a month and a year boundary.
        assert!(same_time(
            "2026-12-31T23:30:00-01:00",
            Timestamp::parse("20270101003000+0000").as_ref()
        ));
        assert!(same_time(
            "2024-03-01T00:30:00+01:00",
            Timestamp::parse("20240229233000+0000").as_ref()
        ));
        // Nonsense never matches.
        assert!(!same_time("hier", doc.as_ref()));
        assert!(!same_time("2026-11-20", None));
    }
}
