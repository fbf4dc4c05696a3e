//! CI-SIS value sets ("jeux de valeurs", JDV) in the IHE SVS format published by the ANS:
//! `RetrieveValueSetResponse/ValueSet/ConceptList/Concept[@code, @codeSystem, @displayName]`
//! in the namespace `urn:ihe:iti:svs:2008`.
//!
//! Read with the same safe XML rules and limits as CDA documents. Used to check header codes
//! against J07 (document type), J06 (class), J02 (facility type), J04 (practice setting),
//! J08 (confidentiality), J10 (format)…

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::ValueSetError;
use crate::limits::Limits;
use crate::xml::{Item, SafeReader};

/// Namespace of IHE SVS (Sharing Value Sets) messages.
pub const SVS_NAMESPACE: &str = "urn:ihe:iti:svs:2008";

/// One concept of a value set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concept {
    pub code: String,
    pub code_system: String,
    pub display_name: Option<String>,
}

/// A value set: its concepts, indexed by (code system, code).
#[derive(Debug, Clone, Default)]
pub struct ValueSet {
    /// `ValueSet/@id`: the value set's OID.
    pub id: Option<String>,
    /// `ValueSet/@displayName`.
    pub display_name: Option<String>,
    /// `ValueSet/@description`.
    pub description: Option<String>,
    concepts: Vec<Concept>,
    /// (code system, code) → position in `concepts`.
    index: HashMap<(String, String), usize>,
}

impl ValueSet {
    /// Reads a CI-SIS JDV file.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, ValueSetError> {
        const ROOT: &str = "RetrieveValueSetResponse";
        let mut reader = SafeReader::new(bytes, limits, SVS_NAMESPACE, ROOT)?;
        let mut set = ValueSet::default();
        let mut seen_value_set = false;
        // Path of names in the SVS namespace; `None` for an element of another namespace.
        let mut path: Vec<Option<String>> = Vec::new();
        loop {
            match reader.next_item()? {
                Item::Start(el) => {
                    path.push(el.in_ns.then(|| el.local.clone()));
                    let names: Vec<Option<&str>> = path.iter().map(|n| n.as_deref()).collect();
                    match names.as_slice() {
                        [Some(ROOT), Some("ValueSet")] => {
                            seen_value_set = true;
                            if set.id.is_none() {
                                set.id = el.attr("id").map(str::to_string);
                                set.display_name = el.attr("displayName").map(str::to_string);
                                set.description = el.attr("description").map(str::to_string);
                            }
                        }
                        [
                            Some(ROOT),
                            Some("ValueSet"),
                            Some("ConceptList"),
                            Some("Concept"),
                        ] => {
                            let code = el
                                .attr("code")
                                .ok_or(ValueSetError::MissingConceptAttribute("code"))?;
                            let code_system = el
                                .attr("codeSystem")
                                .ok_or(ValueSetError::MissingConceptAttribute("codeSystem"))?;
                            set.insert(Concept {
                                code: code.to_string(),
                                code_system: code_system.to_string(),
                                display_name: el.attr("displayName").map(str::to_string),
                            });
                        }
                        _ => {}
                    }
                }
                Item::End => {
                    path.pop();
                }
                Item::Text(_) => {}
                Item::Eof => break,
            }
        }
        if !seen_value_set {
            return Err(ValueSetError::MissingValueSet);
        }
        Ok(set)
    }

    fn insert(&mut self, concept: Concept) {
        let key = (concept.code_system.clone(), concept.code.clone());
        if !self.index.contains_key(&key) {
            self.index.insert(key, self.concepts.len());
            self.concepts.push(concept);
        }
    }

    /// Whether the value set holds `code` in `code_system`.
    pub fn contains(&self, code_system: &str, code: &str) -> bool {
        self.get(code_system, code).is_some()
    }

    /// The concept for `code` in `code_system`, with its display name.
    pub fn get(&self, code_system: &str, code: &str) -> Option<&Concept> {
        let key = (code_system.to_string(), code.to_string());
        self.index.get(&key).and_then(|&i| self.concepts.get(i))
    }

    /// All concepts, in file order (duplicates removed).
    pub fn concepts(&self) -> &[Concept] {
        &self.concepts
    }

    /// Number of distinct concepts.
    pub fn len(&self) -> usize {
        self.concepts.len()
    }

    /// Whether the value set has no concept.
    pub fn is_empty(&self) -> bool {
        self.concepts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::XmlError;

    const SMALL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<RetrieveValueSetResponse xmlns="urn:ihe:iti:svs:2008">
  <ValueSet id="1.2.3" displayName="JDV_Test">
    <ConceptList>
      <Concept code="A" codeSystem="1.1" displayName="Lettre &#233;"/>
      <Concept code="B" codeSystem="1.1"/>
      <Concept code="A" codeSystem="1.1"/>
    </ConceptList>
  </ValueSet>
</RetrieveValueSetResponse>"#;

    #[test]
    fn small_value_set() {
        let vs = ValueSet::parse(SMALL.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(vs.id.as_deref(), Some("1.2.3"));
        assert_eq!(vs.len(), 2);
        assert!(vs.contains("1.1", "A"));
        assert!(!vs.contains("1.2", "A"));
        assert_eq!(
            vs.get("1.1", "A").and_then(|c| c.display_name.as_deref()),
            Some("Lettre é")
        );
    }

    #[test]
    fn value_sets_follow_the_safe_rules() {
        let dtd = SMALL.replace(
            "<RetrieveValueSetResponse",
            "<!DOCTYPE x [<!ENTITY e \"e\">]><RetrieveValueSetResponse",
        );
        assert!(matches!(
            ValueSet::parse(dtd.as_bytes(), &Limits::default()),
            Err(ValueSetError::Xml(XmlError::DoctypeForbidden))
        ));
        assert!(matches!(
            ValueSet::parse(b"", &Limits::default()),
            Err(ValueSetError::Xml(XmlError::NoRootElement))
        ));
        let other = r#"<RetrieveValueSetResponse xmlns="urn:other"/>"#;
        assert!(matches!(
            ValueSet::parse(other.as_bytes(), &Limits::default()),
            Err(ValueSetError::Xml(XmlError::WrongNamespace { .. }))
        ));
        let no_vs = r#"<RetrieveValueSetResponse xmlns="urn:ihe:iti:svs:2008"/>"#;
        assert!(matches!(
            ValueSet::parse(no_vs.as_bytes(), &Limits::default()),
            Err(ValueSetError::MissingValueSet)
        ));
    }
}
