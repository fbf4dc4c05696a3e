//! The top-level elements of each R4 resource type (`data/elements.json`, extracted from the official
//! StructureDefinitions by `scripts/gen-fhir-defs.py`): their names, whether they are summary, modifier,
//! mandatory or repeating, and their types. They shape `_summary` and `_elements` results and give a resource's
//! first level the checks FHIR JSON asks for: known elements only, arrays where an element repeats and not
//! elsewhere, primitives of the right JSON type and lexical form.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

static ELEMENTS_JSON: &str = include_str!("../data/elements.json");

/// One top-level element of a resource type.
#[derive(Debug, Clone)]
pub struct Element {
    /// As defined: `status`, `value[x]` for a choice.
    pub name: String,
    pub summary: bool,
    pub modifier: bool,
    /// Minimum cardinality ≥ 1.
    pub mandatory: bool,
    /// Maximum cardinality above 1: an array in JSON.
    pub repeating: bool,
    /// Type codes (`boolean`, `CodeableConcept`…); several for a choice.
    pub types: Vec<String>,
}

impl Element {
    /// The name without `[x]` (the JSON names of a choice start with it).
    pub fn base(&self) -> &str {
        self.name.strip_suffix("[x]").unwrap_or(&self.name)
    }

    pub fn is_choice(&self) -> bool {
        self.name.ends_with("[x]")
    }
}

fn table() -> &'static HashMap<String, Vec<Element>> {
    static T: OnceLock<HashMap<String, Vec<Element>>> = OnceLock::new();
    T.get_or_init(|| {
        let raw: HashMap<String, Vec<(String, u8, String)>> =
            serde_json::from_str(ELEMENTS_JSON).unwrap_or_default();
        raw.into_iter()
            .map(|(t, rows)| {
                let els = rows
                    .into_iter()
                    .map(|(name, flags, types)| Element {
                        name,
                        summary: flags & 1 != 0,
                        modifier: flags & 2 != 0,
                        mandatory: flags & 4 != 0,
                        repeating: flags & 8 != 0,
                        types: types
                            .split('|')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect(),
                    })
                    .collect();
                (t, els)
            })
            .collect()
    })
}

/// The top-level elements of `rtype`, in definition order.
pub fn of(rtype: &str) -> Option<&'static [Element]> {
    table().get(rtype).map(Vec::as_slice)
}

/// The element a JSON property name stands for, and for a choice the type its suffix names
/// (`valueQuantity` → `value[x]`, `Quantity`).
pub fn lookup(rtype: &str, key: &str) -> Option<(&'static Element, Option<&'static str>)> {
    let els = of(rtype)?;
    if let Some(e) = els.iter().find(|e| !e.is_choice() && e.name == key) {
        return Some((e, None));
    }
    els.iter().filter(|e| e.is_choice()).find_map(|e| {
        let suffix = key.strip_prefix(e.base())?;
        let t = e.types.iter().find(|t| capitalised(t) == suffix)?;
        Some((e, Some(t.as_str())))
    })
}

fn capitalised(t: &str) -> String {
    let mut c = t.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// Whether `_elements` may name `name` on `rtype`: an element, or a choice by its base name or a typed name.
pub fn is_known(rtype: &str, name: &str) -> bool {
    of(rtype).is_some_and(|els| els.iter().any(|e| e.base() == name))
        || lookup(rtype, name).is_some()
}

/// Whether a JSON property of `rtype` belongs to the element named `name` (`_elements`, summaries): the
/// element itself, its primitive extension (`_name`), or a typed name of a choice.
pub fn property_is(rtype: &str, key: &str, name: &str) -> bool {
    let key = key.strip_prefix('_').unwrap_or(key);
    key == name || lookup(rtype, key).is_some_and(|(e, _)| e.base() == name || e.name == name)
}

/// The element a JSON property of `rtype` stands for (`None`: unknown, or `resourceType`).
pub fn element_of(rtype: &str, key: &str) -> Option<&'static Element> {
    lookup(rtype, key.strip_prefix('_').unwrap_or(key)).map(|(e, _)| e)
}

/// The checks of a resource's first level: every property an element of the type (or its primitive
/// extension `_name`), an array exactly where the element repeats, primitives of the right JSON type and form
/// (boolean, integers, decimal, strings; date, dateTime, instant, time), complex types as objects, contained
/// resources of known types checked the same way. The error names the property and what is wrong, in French.
pub fn check(rtype: &str, m: &Map<String, Value>) -> Result<(), (String, String)> {
    if of(rtype).is_none() {
        return Ok(());
    }
    for (key, v) in m {
        if key == "resourceType" {
            continue;
        }
        let (name, ext) = match key.strip_prefix('_') {
            Some(n) => (n, true),
            None => (key.as_str(), false),
        };
        let Some((e, choice_type)) = lookup(rtype, name) else {
            return Err((key.clone(), format!("élément inconnu pour {rtype} (R4)")));
        };
        let items: Vec<&Value> = match v {
            Value::Array(a) if e.repeating => a.iter().collect(),
            Value::Array(_) => {
                return Err((
                    key.clone(),
                    "un seul élément attendu, pas un tableau".into(),
                ));
            }
            _ if e.repeating => {
                return Err((key.clone(), "tableau attendu (élément répétable)".into()));
            }
            one => vec![one],
        };
        let ty = choice_type
            .or_else(|| e.types.first().map(String::as_str))
            .unwrap_or("");
        for it in items {
            if ext {
                // A primitive's extension: an object (or null in a repeating list, to keep positions).
                if !(it.is_object() || it.is_null() && e.repeating) {
                    return Err((key.clone(), "objet d'extension de primitif attendu".into()));
                }
                continue;
            }
            if let Some(problem) = check_value(ty, it) {
                return Err((key.clone(), problem));
            }
            if e.name == "contained" {
                let inner = it
                    .as_object()
                    .ok_or_else(|| (key.clone(), "ressource attendue".into()))?;
                let t = inner
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !crate::search_params::is_resource_type(t) {
                    return Err((key.clone(), format!("type de ressource inconnu : « {t} »")));
                }
                check(t, inner).map_err(|(k, p)| (format!("{key}.{k}"), p))?;
            }
        }
    }
    Ok(())
}

/// What is wrong with a value of type `ty`, if anything.
fn check_value(ty: &str, v: &Value) -> Option<String> {
    let want = |what: &str| Some(format!("{what} attendu ({ty})"));
    match ty {
        "boolean" => (!v.is_boolean()).then(|| "true ou false attendu (boolean)".into()),
        "integer" => match v.as_i64() {
            Some(n) if i32::try_from(n).is_ok() => None,
            _ => want("entier sur 32 bits"),
        },
        "positiveInt" => match v.as_i64() {
            Some(n) if n >= 1 && i32::try_from(n).is_ok() => None,
            _ => want("entier positif"),
        },
        "unsignedInt" => match v.as_i64() {
            Some(n) if n >= 0 && i32::try_from(n).is_ok() => None,
            _ => want("entier positif ou nul"),
        },
        "decimal" => match v {
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => None,
            _ => want("nombre décimal"),
        },
        "date" | "dateTime" | "instant" | "time" => match v.as_str() {
            Some(s) if temporal_ok(ty, s) => None,
            Some(s) => Some(format!("« {s} » n'est pas un {ty} FHIR")),
            None => want("chaîne"),
        },
        "string" | "code" | "id" | "uri" | "url" | "canonical" | "markdown" | "oid" | "uuid"
        | "base64Binary" | "xhtml" => match v.as_str() {
            Some(s) if s.trim().is_empty() && ty != "xhtml" => Some("chaîne vide".into()),
            Some(s) if s.contains('\u{0}') => Some("caractère nul dans la chaîne".into()),
            Some(_) => None,
            None => want("chaîne"),
        },
        // Complex types and resources are objects.
        _ => (!v.is_object()).then(|| {
            format!(
                "objet attendu ({})",
                if ty.is_empty() { "élément" } else { ty }
            )
        }),
    }
}

/// Whether `s` is a FHIR `instant` (date, time to the second, zone).
pub fn is_instant(s: &str) -> bool {
    temporal_ok("instant", s)
}

/// FHIR's lexical forms of the date and time types (a real calendar date; the timezone required with a time).
fn temporal_ok(ty: &str, s: &str) -> bool {
    match ty {
        "time" => {
            let b = s.as_bytes();
            b.len() >= 8
                && s.get(0..2)
                    .and_then(|h| h.parse::<u8>().ok())
                    .is_some_and(|h| h < 24)
                && b[2] == b':'
                && s.get(3..5)
                    .and_then(|m| m.parse::<u8>().ok())
                    .is_some_and(|m| m < 60)
                && b[5] == b':'
                && s.get(6..8)
                    .and_then(|x| x.parse::<u8>().ok())
                    .is_some_and(|x| x < 61)
                && (b.len() == 8
                    || b[8] == b'.' && b.len() > 9 && b[9..].iter().all(u8::is_ascii_digit))
        }
        _ => {
            let has_time = s.contains('T');
            match ty {
                "date" if has_time => return false,
                "instant" if !has_time => return false,
                _ => {}
            }
            // A time carries its zone (FHIR: "if hours and minutes are specified, a timezone SHALL be
            // populated"); the precision ranges are those of the search dates.
            let b = s.as_bytes();
            if has_time
                && !(s.ends_with('Z') || b.len() >= 6 && matches!(b[b.len() - 6], b'+' | b'-'))
            {
                return false;
            }
            if ty == "instant" && s.len() < 20 {
                return false;
            }
            crate::index::parse_date_range(s).is_some()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> Option<String> {
        let m = v.as_object().unwrap().clone();
        let t = m["resourceType"].as_str().unwrap().to_string();
        check(&t, &m).err().map(|(k, _)| k)
    }

    #[test]
    fn elements_of_patient_and_observation() {
        let p = of("Patient").unwrap();
        assert!(
            p.iter()
                .any(|e| e.name == "birthDate" && e.summary && !e.repeating)
        );
        assert!(p.iter().any(|e| e.name == "name" && e.repeating));
        let (e, t) = lookup("Observation", "valueQuantity").unwrap();
        assert_eq!((e.name.as_str(), t), ("value[x]", Some("Quantity")));
        assert!(lookup("Observation", "valueFoo").is_none());
        assert!(
            of("Observation")
                .unwrap()
                .iter()
                .any(|e| e.name == "status" && e.mandatory)
        );
        assert!(is_known("Observation", "value") && is_known("Observation", "valueQuantity"));
        assert!(!is_known("Observation", "bogus"));
    }

    #[test]
    fn first_level_checks() {
        assert_eq!(
            err(json!({"resourceType": "Patient", "id": "a", "active": true,
            "birthDate": "1970-01-01", "name": [{"family": "X"}], "_birthDate": {"extension": []},
            "deceasedDateTime": "2020-01-01T10:00:00+01:00", "multipleBirthInteger": 2})),
            None
        );
        for (bad, key) in [
            (
                json!({"resourceType": "Patient", "bogusField": 1}),
                "bogusField",
            ),
            (
                json!({"resourceType": "Patient", "active": "yes"}),
                "active",
            ),
            (
                json!({"resourceType": "Patient", "birthDate": "not-a-date"}),
                "birthDate",
            ),
            (
                json!({"resourceType": "Patient", "birthDate": "1970-01-01T10:00:00Z"}),
                "birthDate",
            ),
            (
                json!({"resourceType": "Patient", "name": {"family": "x"}}),
                "name",
            ),
            (
                json!({"resourceType": "Patient", "gender": ["male"]}),
                "gender",
            ),
            (
                json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01T10:00"}),
                "deceasedDateTime",
            ),
            (
                json!({"resourceType": "Patient", "contained": [{"resourceType": "Foo"}]}),
                "contained",
            ),
            (
                json!({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "x": 1}]}),
                "contained.x",
            ),
            (
                json!({"resourceType": "Observation", "valueInteger": 99999999999_i64}),
                "valueInteger",
            ),
            (
                json!({"resourceType": "Observation", "status": ""}),
                "status",
            ),
            (
                json!({"resourceType": "Observation", "status": "a\u{0}b"}),
                "status",
            ),
        ] {
            assert_eq!(err(bad.clone()).as_deref(), Some(key), "{bad}");
        }
    }

    #[test]
    fn instants() {
        for ok in [
            "2026-11-20T10:15:00+01:00",
            "2026-11-20T10:15:00Z",
            "2026-11-20T10:15:00.123-05:30",
        ] {
            assert!(is_instant(ok), "{ok}");
        }
        for bad in [
            "yesterday",
            "2026-11-20",
            "2026-11-20T10:15",
            "2026-11-20T10:15:00",
            "2026-13-20T10:15:00Z",
            "2026-11-20T25:15:00Z",
            "2026-11-20T10:15:00.Z",
            "2026-11-20T10:15:00+1:00",
            "2026-11-20T10:15:00+01:00x",
            "２０２６-11-20T10:15:00Z",
            "2026-11-20T10:15:00+01:0é",
        ] {
            assert!(!is_instant(bad), "{bad}");
        }
    }
}
