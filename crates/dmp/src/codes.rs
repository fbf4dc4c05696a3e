//! The CI-SIS value sets submitted metadata is checked against, and the mapping between FHIR code-system URIs
//! and the OIDs the value sets use.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use socle_cda::Limits;
use socle_cda::value_set::ValueSet;

use crate::DmpError;

/// The metadata elements checked against a value set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Element {
    /// `DocumentReference.type` — J07.
    Type,
    /// `DocumentReference.category` — J06 (when loaded).
    Class,
    /// `DocumentReference.securityLabel` — J08.
    Confidentiality,
    /// `DocumentReference.content.format` — J10 (when loaded).
    Format,
    /// `DocumentReference.context.facilityType` — J02.
    FacilityType,
    /// `DocumentReference.context.practiceSetting` — J04.
    PracticeSetting,
}

impl Element {
    /// The CI-SIS value set's file prefix.
    pub fn value_set(self) -> &'static str {
        match self {
            Element::Type => "J07",
            Element::Class => "J06",
            Element::Confidentiality => "J08",
            Element::Format => "J10",
            Element::FacilityType => "J02",
            Element::PracticeSetting => "J04",
        }
    }
}

const EMBEDDED: &[(&str, &[u8])] = &[
    (
        "J02",
        include_bytes!("../data/JDV_J02_XdsHealthcareFacilityTypeCode_CISIS.xml"),
    ),
    (
        "J04",
        include_bytes!("../data/JDV_J04_XdsPracticeSettingCode_CISIS.xml"),
    ),
    (
        "J07",
        include_bytes!("../data/JDV_J07_XdsTypeCode_CISIS.xml"),
    ),
    (
        "J08",
        include_bytes!("../data/JDV_J08_XdsConfidentialityCode_CISIS.xml"),
    ),
];

/// Known FHIR code-system URIs and their OIDs (the value sets name systems by OID).
const SYSTEMS: &[(&str, &str)] = &[
    ("http://loinc.org", "2.16.840.1.113883.6.1"),
    (
        "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
        "2.16.840.1.113883.5.25",
    ),
    ("http://snomed.info/sct", "2.16.840.1.113883.6.96"),
];

/// The OID of a FHIR code system URI (`urn:oid:…` or a known URI); `None` for an unknown URI.
pub fn system_oid(system: &str) -> Option<&str> {
    if let Some(oid) = system.strip_prefix("urn:oid:") {
        return Some(oid);
    }
    SYSTEMS.iter().find(|(u, _)| *u == system).map(|(_, o)| *o)
}

/// The FHIR URI of a code system OID (`urn:oid:…` unless FHIR names it otherwise).
pub fn system_uri(oid: &str) -> String {
    SYSTEMS
        .iter()
        .find(|(_, o)| *o == oid)
        .map_or_else(|| format!("urn:oid:{oid}"), |(u, _)| u.to_string())
}

/// The value sets in force: the embedded J02/J04/J07/J08 and whatever an operator loaded.
#[derive(Debug, Clone)]
pub struct Terminology {
    sets: HashMap<String, ValueSet>,
}

impl Terminology {
    /// The value sets shipped with Socle.
    pub fn embedded() -> Result<Terminology, DmpError> {
        let mut sets = HashMap::new();
        for (name, bytes) in EMBEDDED {
            let vs = ValueSet::parse(bytes, &Limits::default())
                .map_err(|e| DmpError::Storage(format!("jeu de valeurs {name} embarqué : {e}")))?;
            sets.insert((*name).to_string(), vs);
        }
        Ok(Terminology { sets })
    }

    /// Adds every `JDV_J<nn>_…xml` file of `dir` (replacing an embedded one of the same number); returns the
    /// value sets loaded.
    pub fn load_dir(&mut self, dir: &Path) -> Result<Vec<String>, DmpError> {
        let mut loaded = Vec::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| DmpError::Storage(format!("{} : {e}", dir.display())))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix("JDV_J") else {
                continue;
            };
            let num: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if num.is_empty() || !name.ends_with(".xml") {
                continue;
            }
            let bytes = std::fs::read(e.path())
                .map_err(|err| DmpError::Storage(format!("{name} : {err}")))?;
            let vs = ValueSet::parse(&bytes, &Limits::default())
                .map_err(|err| DmpError::Storage(format!("{name} : {err}")))?;
            let key = format!("J{num:0>2}");
            loaded.push(key.clone());
            self.sets.insert(key, vs);
        }
        loaded.sort();
        Ok(loaded)
    }

    /// Whether the value set of `element` is loaded (J06 and J10 only when an operator provided them).
    pub fn has(&self, element: Element) -> bool {
        self.sets.contains_key(element.value_set())
    }

    /// The display name of a code, when its value set is loaded and holds it.
    pub fn display(&self, element: Element, oid: &str, code: &str) -> Option<&str> {
        self.sets
            .get(element.value_set())?
            .get(oid, code)?
            .display_name
            .as_deref()
    }

    /// Checks one FHIR `Coding` of `element` (at `field`): a code and a known system are required; the code
    /// must be in the element's value set when that set is loaded. Returns (system OID, code).
    pub fn check(
        &self,
        element: Element,
        field: &str,
        coding: &Value,
    ) -> Result<(String, String), DmpError> {
        let code = coding["code"]
            .as_str()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| DmpError::Missing {
                field: format!("{field}.code"),
            })?;
        let system = coding["system"].as_str().ok_or_else(|| DmpError::Missing {
            field: format!("{field}.system"),
        })?;
        let oid = system_oid(system).ok_or_else(|| DmpError::Invalid {
            field: format!("{field}.system"),
            reason: format!(
                "système de codes {system} inconnu : attendu urn:oid:… (ou http://loinc.org)"
            ),
        })?;
        if let Some(vs) = self.sets.get(element.value_set())
            && !vs.contains(oid, code)
        {
            return Err(DmpError::UnknownCode {
                field: field.to_string(),
                system: system.to_string(),
                code: code.to_string(),
                value_set: element.value_set().to_string(),
            });
        }
        Ok((oid.to_string(), code.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn embedded_sets_check_codes() {
        let t = Terminology::embedded().unwrap();
        assert!(t.has(Element::Type) && !t.has(Element::Class) && !t.has(Element::Format));
        let loinc = json!({"system": "http://loinc.org", "code": "11488-4"});
        assert_eq!(
            t.check(Element::Type, "type", &loinc).unwrap(),
            ("2.16.840.1.113883.6.1".to_string(), "11488-4".to_string())
        );
        let e = t
            .check(
                Element::Type,
                "type",
                &json!({"system": "http://loinc.org", "code": "99999-9"}),
            )
            .unwrap_err();
        assert_eq!(e.code(), "unknown-code");
        assert!(e.to_string().contains("J07"), "{e}");
        let e = t
            .check(
                Element::Type,
                "type",
                &json!({"system": "http://example.org", "code": "x"}),
            )
            .unwrap_err();
        assert_eq!(e.code(), "metadata-invalid");
        let e = t
            .check(
                Element::Type,
                "type",
                &json!({"system": "http://loinc.org"}),
            )
            .unwrap_err();
        assert_eq!(e.field(), Some("type.code"));
        // Visibility labels are in J08.
        let hidden =
            json!({"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "INVISIBLE_PATIENT"});
        assert!(
            t.check(Element::Confidentiality, "securityLabel", &hidden)
                .is_ok()
        );
        let n = json!({"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"});
        assert!(
            t.check(Element::Confidentiality, "securityLabel", &n)
                .is_ok()
        );
        // Without J06, a class code is checked for shape only.
        let class = json!({"system": "urn:oid:1.2.250.1.213.1.1.4.1", "code": "10"});
        assert!(t.check(Element::Class, "category", &class).is_ok());
    }

    #[test]
    fn operator_value_sets_switch_checks_on() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("JDV_J06_XdsClassCode_CISIS.xml"),
            r#"<?xml version="1.0" encoding="UTF-8"?>
<RetrieveValueSetResponse xmlns="urn:ihe:iti:svs:2008"><ValueSet id="1.2.3" displayName="J06">
<ConceptList><Concept code="10" codeSystem="1.2.250.1.213.1.1.4.1" displayName="Compte rendu"/></ConceptList>
</ValueSet></RetrieveValueSetResponse>"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let mut t = Terminology::embedded().unwrap();
        assert_eq!(t.load_dir(dir.path()).unwrap(), vec!["J06".to_string()]);
        assert!(t.has(Element::Class));
        let ok = json!({"system": "urn:oid:1.2.250.1.213.1.1.4.1", "code": "10"});
        assert!(t.check(Element::Class, "category", &ok).is_ok());
        let bad = json!({"system": "urn:oid:1.2.250.1.213.1.1.4.1", "code": "11"});
        assert_eq!(
            t.check(Element::Class, "category", &bad)
                .unwrap_err()
                .code(),
            "unknown-code"
        );
        assert_eq!(
            t.display(Element::Class, "1.2.250.1.213.1.1.4.1", "10"),
            Some("Compte rendu")
        );
    }
}
