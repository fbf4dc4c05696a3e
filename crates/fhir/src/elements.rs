//! The elements of each R4 resource type and complex data type (`data/elements.json`, extracted from the
//! official StructureDefinitions by `scripts/gen-fhir-defs.py`): their names, whether they are summary,
//! modifier, mandatory or repeating, their types, and the required value set of a coded element. They shape
//! `_summary` and `_elements` results and give every stored resource the checks FHIR JSON asks for, at every
//! level: known elements only, arrays where an element repeats and not elsewhere, primitives of the right JSON
//! type and lexical form, mandatory elements present, codes from their required value sets.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value};

static ELEMENTS_JSON: &str = include_str!("../data/elements.json");

/// One element of a resource, data type or backbone element.
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
    /// Type codes (`boolean`, `CodeableConcept`…); several for a choice; `@Path` for a backbone element whose
    /// own elements are listed under that path (`@Patient.contact`).
    pub types: Vec<String>,
    /// The required value set of a `code` element, when the definitions enumerate it.
    pub binding: Option<String>,
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

#[derive(Deserialize, Default)]
struct Raw {
    elements: HashMap<String, Vec<(String, u8, String, String)>>,
    #[serde(rename = "valueSets")]
    value_sets: HashMap<String, Vec<String>>,
}

struct Table {
    /// By owner: a resource type, a complex data type or a backbone element's path.
    elements: HashMap<String, Vec<Element>>,
    value_sets: HashMap<String, HashSet<String>>,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let raw: Raw = serde_json::from_str(ELEMENTS_JSON).unwrap_or_default();
        let elements = raw
            .elements
            .into_iter()
            .map(|(t, rows)| {
                let els = rows
                    .into_iter()
                    .map(|(name, flags, types, binding)| Element {
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
                        binding: (!binding.is_empty()).then_some(binding),
                    })
                    .collect();
                (t, els)
            })
            .collect();
        let value_sets = raw
            .value_sets
            .into_iter()
            .map(|(url, codes)| (url, codes.into_iter().collect()))
            .collect();
        Table {
            elements,
            value_sets,
        }
    })
}

/// The elements of `owner` — a resource type, a complex data type or a backbone element's path — in
/// definition order.
pub fn of(owner: &str) -> Option<&'static [Element]> {
    table().elements.get(owner).map(Vec::as_slice)
}

/// The codes of a required value set the definitions enumerate.
pub fn value_set(url: &str) -> Option<&'static HashSet<String>> {
    table().value_sets.get(url)
}

/// The element a JSON property name stands for, and for a choice the type its suffix names
/// (`valueQuantity` → `value[x]`, `Quantity`).
pub fn lookup(owner: &str, key: &str) -> Option<(&'static Element, Option<&'static str>)> {
    lookup_in(of(owner)?, key)
}

fn lookup_in(
    els: &'static [Element],
    key: &str,
) -> Option<(&'static Element, Option<&'static str>)> {
    if let Some(e) = els.iter().find(|e| !e.is_choice() && e.name == key) {
        return Some((e, None));
    }
    els.iter().filter(|e| e.is_choice()).find_map(|e| {
        let suffix = key.strip_prefix(e.base())?;
        let t = e.types.iter().find(|t| is_capitalised(t, suffix))?;
        Some((e, Some(t.as_str())))
    })
}

/// Whether `suffix` is `t` with its first letter in upper case (`Quantity`, `DateTime` for `dateTime`).
fn is_capitalised(t: &str, suffix: &str) -> bool {
    let (Some(a), Some(b)) = (t.chars().next(), suffix.chars().next()) else {
        return false;
    };
    b == a.to_ascii_uppercase() && t[a.len_utf8()..] == suffix[b.len_utf8()..]
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

/// Where a check stands in the resource, kept on the stack and written out only for an error
/// (`contact[0].name.family`).
#[derive(Clone, Copy)]
struct At<'a> {
    parent: Option<&'a At<'a>>,
    key: &'a str,
    index: Option<usize>,
}

impl At<'_> {
    fn render(&self) -> String {
        let mut parts = Vec::new();
        let mut cur = Some(self);
        while let Some(a) = cur {
            parts.push(match a.index {
                Some(i) => format!("{}[{i}]", a.key),
                None => a.key.to_string(),
            });
            cur = a.parent;
        }
        parts.reverse();
        parts.join(".")
    }

    fn child<'b>(&'b self, key: &'b str, index: Option<usize>) -> At<'b> {
        At {
            parent: Some(self),
            key,
            index,
        }
    }
}

fn path_of(parent: Option<&At<'_>>, key: &str) -> String {
    match parent {
        Some(p) => format!("{}.{key}", p.render()),
        None => key.to_string(),
    }
}

/// Deeper than this, a resource is refused (JSON itself is limited to 128 levels by the parser).
const MAX_DEPTH: usize = 64;

/// The checks of a resource against its type's definition, at every level: every property an element of the
/// object's type (or a primitive's extension `_name`), an array exactly where the element repeats, primitives
/// of the right JSON type and lexical form (boolean, integers, decimal, strings, codes, ids, URIs, OIDs,
/// UUIDs, base64; date, dateTime, instant, time), codes of a required value set among its codes, complex types
/// and backbone elements as objects checked the same way, mandatory elements present, nested resources
/// (`contained`, a Bundle's entries, a Parameters' values) checked by their own type. The error names the
/// path below the resource (`contact[0].name.family`) and what is wrong, in French.
pub fn check(rtype: &str, m: &Map<String, Value>) -> Result<(), (String, String)> {
    if of(rtype).is_none() {
        return Ok(());
    }
    check_object(rtype, m, None, 0, true)
}

fn check_object(
    owner: &str,
    m: &Map<String, Value>,
    at: Option<&At<'_>>,
    depth: usize,
    is_resource: bool,
) -> Result<(), (String, String)> {
    let Some(els) = of(owner) else {
        return Ok(());
    };
    if depth > MAX_DEPTH {
        return Err((
            at.map(At::render).unwrap_or_default(),
            "imbrication trop profonde".into(),
        ));
    }
    let mut choices: Vec<(&Element, &str)> = Vec::new();
    for (key, v) in m {
        if is_resource && key == "resourceType" {
            continue;
        }
        let (name, ext) = match key.strip_prefix('_') {
            Some(n) => (n, true),
            None => (key.as_str(), false),
        };
        let Some((e, choice_type)) = lookup_in(els, name) else {
            let what = if is_resource {
                format!("élément inconnu pour {owner} (R4)")
            } else {
                format!("élément inconnu dans {owner} (R4)")
            };
            return Err((path_of(at, key), what));
        };
        if let Some(t) = choice_type {
            // One type per choice: `valueString` and `valueInteger` side by side are two values of one element.
            match choices.iter().find(|(c, _)| std::ptr::eq(*c, e)) {
                Some((_, other)) if *other != t => {
                    return Err((
                        path_of(at, key),
                        format!("« {} » ne prend qu'un type à la fois", e.name),
                    ));
                }
                Some(_) => {}
                None => choices.push((e, t)),
            }
        }
        let ty = choice_type
            .or_else(|| e.types.first().map(String::as_str))
            .unwrap_or("");
        if ext && !is_primitive(ty) {
            return Err((
                path_of(at, key),
                format!("« _{name} » n'existe que pour un élément primitif"),
            ));
        }
        let items: Vec<&Value> = match v {
            Value::Array(a) if e.repeating => a.iter().collect(),
            Value::Array(_) => {
                return Err((
                    path_of(at, key),
                    "un seul élément attendu, pas un tableau".into(),
                ));
            }
            _ if e.repeating => {
                return Err((
                    path_of(at, key),
                    "tableau attendu (élément répétable)".into(),
                ));
            }
            one => vec![one],
        };
        if ext
            && e.repeating
            && let Some(Value::Array(values)) = m.get(name)
            && values.len() != items.len()
        {
            return Err((
                path_of(at, key),
                format!("« {key} » doit avoir autant d'entrées que « {name} »"),
            ));
        }
        for (i, it) in items.iter().enumerate() {
            let here = At {
                parent: at,
                key,
                index: e.repeating.then_some(i),
            };
            if ext {
                // A primitive's extension: an object with `id` and `extension` (or null in a repeating list,
                // to keep positions).
                match it {
                    Value::Null if e.repeating => {}
                    Value::Object(o) => check_primitive_extension(o, &here, depth)?,
                    _ => {
                        return Err((
                            here.render(),
                            "objet d'extension de primitif attendu".into(),
                        ));
                    }
                }
                continue;
            }
            if it.is_null() && e.repeating {
                // Aligned with an extension in `_name` (checked with the nulls of the whole resource).
                continue;
            }
            check_item(e, ty, it, &here, depth)?;
        }
    }
    for e in els.iter().filter(|e| e.mandatory) {
        let present = if e.is_choice() {
            m.keys().any(|k| {
                let k = k.strip_prefix('_').unwrap_or(k);
                k.starts_with(e.base()) && lookup_in(els, k).is_some_and(|(f, _)| f.name == e.name)
            })
        } else {
            m.contains_key(&e.name) || m.contains_key(&format!("_{}", e.name))
        };
        if !present {
            return Err((path_of(at, e.base()), "élément obligatoire absent".into()));
        }
    }
    Ok(())
}

fn is_primitive(ty: &str) -> bool {
    ty.starts_with(|c: char| c.is_ascii_lowercase())
}

fn check_primitive_extension(
    o: &Map<String, Value>,
    at: &At<'_>,
    depth: usize,
) -> Result<(), (String, String)> {
    for (k, v) in o {
        match (k.as_str(), v) {
            ("id", Value::String(_)) => {}
            ("extension", Value::Array(items)) => {
                for (i, x) in items.iter().enumerate() {
                    let here = at.child("extension", Some(i));
                    let x = x
                        .as_object()
                        .ok_or_else(|| (here.render(), "objet attendu (Extension)".into()))?;
                    check_object("Extension", x, Some(&here), depth + 1, false)?;
                }
            }
            _ => {
                return Err((
                    at.child(k, None).render(),
                    "seuls « id » et « extension » sont permis dans l'extension d'un primitif"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

fn check_item(
    e: &Element,
    ty: &str,
    it: &Value,
    at: &At<'_>,
    depth: usize,
) -> Result<(), (String, String)> {
    if let Some(problem) = check_value(ty, it) {
        return Err((at.render(), problem));
    }
    if let (Some(url), Some(code)) = (&e.binding, it.as_str())
        && let Some(codes) = value_set(url)
        && !codes.contains(code)
    {
        return Err((
            at.render(),
            format!("code « {code} » absent du jeu de valeurs requis {url}"),
        ));
    }
    if let Some(path) = ty.strip_prefix('@') {
        if let Some(o) = it.as_object() {
            check_object(path, o, Some(at), depth + 1, false)?;
        }
    } else if ty == "Resource" {
        let inner = it
            .as_object()
            .ok_or_else(|| (at.render(), "ressource attendue".into()))?;
        let t = inner
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !crate::search_params::is_resource_type(t) {
            return Err((at.render(), format!("type de ressource inconnu : « {t} »")));
        }
        if let Some(id) = inner.get("id")
            && !id.as_str().is_some_and(crate::resource::is_valid_id)
        {
            return Err((at.child("id", None).render(), "identifiant invalide".into()));
        }
        check_object(t, inner, Some(at), depth + 1, true)?;
    } else if !is_primitive(ty)
        && let Some(o) = it.as_object()
    {
        check_object(ty, o, Some(at), depth + 1, false)?;
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
            Some(s) => Some(format!("« {} » n'est pas un {ty} FHIR", shorten(s))),
            None => want("chaîne"),
        },
        "string" | "code" | "id" | "uri" | "url" | "canonical" | "markdown" | "oid" | "uuid"
        | "base64Binary" | "xhtml" => match v.as_str() {
            // R4: a string is not empty; one of white space only is allowed (it SHOULD not be), a code is not.
            Some("") if ty != "xhtml" => Some("chaîne vide".into()),
            Some(s) if s.contains('\u{0}') => Some("caractère nul dans la chaîne".into()),
            Some(s) => lexical_problem(ty, s),
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

/// The lexical rules of R4's string-based primitives beyond "a non-empty string".
fn lexical_problem(ty: &str, s: &str) -> Option<String> {
    let ok = match ty {
        // `[^\s]+(\s[^\s]+)*`: no leading, trailing or doubled white space.
        "code" => {
            // White space here is XML Schema's `\s`: space, tab, line feed, carriage return.
            s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) == s
                && !s
                    .as_bytes()
                    .windows(2)
                    .any(|w| is_xml_space(w[0]) && is_xml_space(w[1]))
        }
        "id" => crate::resource::is_valid_id(s),
        "uri" | "url" | "canonical" => !s.bytes().any(is_xml_space),
        "oid" => s.strip_prefix("urn:oid:").is_some_and(|o| {
            let mut arcs = o.split('.');
            arcs.next().is_some_and(|a| matches!(a, "0" | "1" | "2"))
                && o.contains('.')
                && arcs.all(|a| {
                    !a.is_empty()
                        && a.bytes().all(|b| b.is_ascii_digit())
                        && (a == "0" || !a.starts_with('0'))
                })
        }),
        "uuid" => s.strip_prefix("urn:uuid:").is_some_and(|u| {
            u.len() == 36
                && u.bytes().enumerate().all(|(i, b)| match i {
                    8 | 13 | 18 | 23 => b == b'-',
                    _ => b.is_ascii_hexdigit(),
                })
        }),
        "base64Binary" => is_base64_text(s.as_bytes()),
        _ => true,
    };
    (!ok).then(|| format!("« {} » n'est pas un {ty} FHIR valide", shorten(s)))
}

/// Whether every byte is of base64's alphabet, padding or white space. Written without early exit so that
/// the compiler vectorises it: a DMP document's hundreds of kilobytes pass in a few microseconds.
fn is_base64_text(s: &[u8]) -> bool {
    s.chunks(64).all(|c| {
        c.iter().fold(true, |ok, &b| {
            let letter = (b | 0x20).wrapping_sub(b'a') < 26;
            let digit = b.wrapping_sub(b'0') < 10;
            ok & (letter
                | digit
                | (b == b'+')
                | (b == b'/')
                | (b == b'=')
                | (b == b' ')
                | (b == b'\n')
                | (b == b'\r')
                | (b == b'\t'))
        })
    })
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A value quoted in a message, cut to a readable length.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Whether `s` is a FHIR `instant` (date, time to the second, zone).
pub fn is_instant(s: &str) -> bool {
    temporal_ok("instant", s)
}

/// FHIR's lexical forms of the date and time types (R4's regular expressions: a year other than 0000, month and
/// day in range and a real calendar date, a time to the second with its zone once a time is given — the zone
/// at most ±14:00 —, `time` without zone).
fn temporal_ok(ty: &str, s: &str) -> bool {
    if ty == "time" {
        return clock(s.as_bytes()) == Some(&[][..]);
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    match (ty, time) {
        ("date", Some(_)) | ("instant", None) => return false,
        _ => {}
    }
    let d = date.as_bytes();
    let digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    let two = |b: &[u8], lo: u8, hi: u8| {
        b.len() == 2 && digits(b) && (lo..=hi).contains(&((b[0] - b'0') * 10 + (b[1] - b'0')))
    };
    let date_ok = match d.len() {
        4 => digits(d) && d != b"0000",
        7 => digits(&d[..4]) && &d[..4] != b"0000" && d[4] == b'-' && two(&d[5..7], 1, 12),
        10 => {
            digits(&d[..4])
                && &d[..4] != b"0000"
                && d[4] == b'-'
                && two(&d[5..7], 1, 12)
                && d[7] == b'-'
                && two(&d[8..10], 1, 31)
        }
        _ => false,
    };
    if !date_ok {
        return false;
    }
    if let Some(t) = time {
        // A time needs the whole date, the seconds and the zone.
        let zone = match clock(t.as_bytes()) {
            Some(z) if d.len() == 10 => z,
            _ => return false,
        };
        let zone_ok = zone == b"Z"
            || zone.len() == 6
                && matches!(zone[0], b'+' | b'-')
                && zone[3] == b':'
                && two(&zone[1..3], 0, 14)
                && two(&zone[4..6], 0, 59)
                && (zone[1..3] != *b"14" || zone[4..6] == *b"00");
        if !zone_ok {
            return false;
        }
    }
    // The calendar: no 30 February.
    crate::index::parse_date_range(s).is_some()
}

/// `hh:mm:ss` and optional fraction at the start of `b` (R4: 00-23, 00-59, 00-60 for a leap second); what
/// follows, or `None`.
fn clock(b: &[u8]) -> Option<&[u8]> {
    let two = |x: &[u8], hi: u8| {
        x.len() == 2 && x.iter().all(u8::is_ascii_digit) && (x[0] - b'0') * 10 + (x[1] - b'0') <= hi
    };
    if b.len() < 8
        || !two(&b[0..2], 23)
        || b[2] != b':'
        || !two(&b[3..5], 59)
        || b[5] != b':'
        || !two(&b[6..8], 60)
    {
        return None;
    }
    let mut rest = &b[8..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    Some(rest)
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
                "contained[0]",
            ),
            (
                json!({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "x": 1}]}),
                "contained[0].x",
            ),
            (
                json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "valueInteger": 99999999999_i64}),
                "valueInteger",
            ),
            (
                json!({"resourceType": "Observation", "status": "", "code": {"text": "x"}}),
                "status",
            ),
            (
                json!({"resourceType": "Observation", "status": "a\u{0}b", "code": {"text": "x"}}),
                "status",
            ),
        ] {
            assert_eq!(err(bad.clone()).as_deref(), Some(key), "{bad}");
        }
    }

    #[test]
    fn deeper_levels() {
        let ok = json!({"resourceType": "Patient", "id": "p",
            "name": [{"family": "Martin", "given": ["Anne", "Marie"], "_given": [null, {"extension": [
                {"url": "http://example.org/x", "valueString": "y"}]}]}],
            "contact": [{"relationship": [{"coding": [{"system": "http://x", "code": "N"}]}],
                "name": {"family": "Durand"}, "gender": "female"}],
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1"}],
            "extension": [{"url": "http://example.org/e", "valueQuantity": {"value": 1.5, "unit": "kg"}}],
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}});
        assert_eq!(err(ok), None);
        let q = json!({"resourceType": "Questionnaire", "status": "draft",
            "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string"}]}]});
        assert_eq!(err(q), None);
        // FHIR JSON's own example: nulls keep a repeating primitive aligned with its extensions.
        let aligned = json!({"resourceType": "Patient", "name": [{"given": [null, "Marie"],
            "_given": [{"extension": [{"url": "http://example.org/x", "valueString": "y"}]}, null]}]});
        assert_eq!(
            crate::resource::check_structure(&aligned).map_err(|e| e.to_string()),
            Ok(())
        );
        for bad in [
            json!({"resourceType": "Patient", "name": [{"given": [null, "Marie"]}]}),
            json!({"resourceType": "Patient", "name": [{"given": [null], "_given": [null]}]}),
            json!({"resourceType": "Patient", "name": [{"given": ["A", null], "_given": [{"id": "x"}, null]}]}),
        ] {
            let e = crate::resource::check_structure(&bad).map_err(|e| e.to_string());
            assert!(e.as_ref().is_err_and(|m| m.contains("null")), "{bad} {e:?}");
        }
        // White space only is a string (R4 says it SHOULD not be), not a code.
        assert_eq!(
            err(json!({"resourceType": "Patient", "name": [{"family": " "}]})),
            None
        );
        assert_eq!(
            err(json!({"resourceType": "Patient", "gender": " "})).as_deref(),
            Some("gender")
        );
        let typed = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "valueString": "a", "_valueString": {"id": "v"}});
        assert_eq!(err(typed), None);
        for (bad, key) in [
            // Unknown element in a data type, in a backbone element, in a nested backbone element.
            (
                json!({"resourceType": "Patient", "name": [{"famly": "X"}]}),
                "name[0].famly",
            ),
            (
                json!({"resourceType": "Patient", "contact": [{"foo": 1}]}),
                "contact[0].foo",
            ),
            (
                json!({"resourceType": "Questionnaire", "status": "draft",
                "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "2", "type": "string", "x": 1}]}]}),
                "item[0].item[0].x",
            ),
            // Repeating and single elements below the first level.
            (
                json!({"resourceType": "Patient", "name": [{"given": "Anne"}]}),
                "name[0].given",
            ),
            (
                json!({"resourceType": "Patient", "name": [{"family": ["X"]}]}),
                "name[0].family",
            ),
            // Primitive forms in data types.
            (
                json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "valueQuantity": {"value": "12"}}),
                "valueQuantity.value",
            ),
            (
                json!({"resourceType": "Patient", "identifier": [{"period": {"start": "hier"}}]}),
                "identifier[0].period.start",
            ),
            (
                json!({"resourceType": "Patient", "identifier": [{"system": "a b"}]}),
                "identifier[0].system",
            ),
            (
                json!({"resourceType": "Patient", "telecom": [{"system": " phone"}]}),
                "telecom[0].system",
            ),
            // Required value sets of codes, at every level.
            (
                json!({"resourceType": "Patient", "gender": "homme"}),
                "gender",
            ),
            (
                json!({"resourceType": "Patient", "contact": [{"gender": "F"}]}),
                "contact[0].gender",
            ),
            (
                json!({"resourceType": "Observation", "status": "done", "code": {"text": "x"}}),
                "status",
            ),
            // Mandatory elements, at the top and below.
            (
                json!({"resourceType": "Observation", "code": {"text": "x"}}),
                "status",
            ),
            (
                json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "component": [{"valueString": "x"}]}),
                "component[0].code",
            ),
            (
                json!({"resourceType": "Patient", "extension": [{"valueString": "x"}]}),
                "extension[0].url",
            ),
            // A primitive's extension: only for primitives, with id and extension only, aligned.
            (
                json!({"resourceType": "Patient", "_name": [{"id": "x"}]}),
                "_name",
            ),
            (
                json!({"resourceType": "Patient", "_gender": {"value": "x"}}),
                "_gender.value",
            ),
            (
                json!({"resourceType": "Patient", "name": [{"given": ["A"], "_given": [null, null]}]}),
                "name[0]._given",
            ),
            (
                json!({"resourceType": "Patient", "_gender": {"extension": [{"valueString": "x"}]}}),
                "_gender.extension[0].url",
            ),
            // One type per choice (a value and the extension of the same typed value go together).
            (
                json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "valueString": "a", "valueBoolean": true}),
                "valueBoolean",
            ),
            // Resources nested in a Bundle, their type and id.
            (
                json!({"resourceType": "Bundle", "type": "collection",
                "entry": [{"resource": {"resourceType": "Patient", "gender": "x"}}]}),
                "entry[0].resource.gender",
            ),
            (
                json!({"resourceType": "Bundle", "type": "collection",
                "entry": [{"resource": {"resourceType": "Patient", "id": "a b"}}]}),
                "entry[0].resource.id",
            ),
        ] {
            assert_eq!(err(bad.clone()).as_deref(), Some(key), "{bad}");
        }
        // A code with a no-break space inside is still a code (XML Schema white space is ASCII).
        let nbsp = json!({"resourceType": "CodeSystem", "status": "draft", "content": "complete",
            "concept": [{"code": "CHEST\u{a0}"}]});
        assert_eq!(err(nbsp), None);
    }

    #[test]
    fn base64_text() {
        assert!(is_base64_text(b"QUJD\nREVG+/==\r\n\t "));
        for bad in [
            &b"QUJD!"[..],
            b"QU@D",
            b"QU[D",
            b"QU`D",
            b"QU{D",
            "é".as_bytes(),
            b"QU\0D",
        ] {
            assert!(!is_base64_text(bad), "{bad:?}");
        }
        let long = "QUJD".repeat(50_000);
        assert!(is_base64_text(long.as_bytes()));
        let t = std::time::Instant::now();
        for _ in 0..10 {
            std::hint::black_box(is_base64_text(std::hint::black_box(long.as_bytes())));
        }
        eprintln!("base64 check of 200 KB: {:?}", t.elapsed() / 10);
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
            "2026-11-20T10:15+01:00",
            "2026-11-20T10:15:00+14:30",
            "0000-11-20T10:15:00Z",
            "2026-02-30T10:15:00Z",
        ] {
            assert!(!is_instant(bad), "{bad}");
        }
        for (ty, ok) in [
            ("dateTime", "2026"),
            ("dateTime", "2026-11"),
            ("dateTime", "2026-11-20T10:15:00.5+14:00"),
            ("dateTime", "2026-11-20T23:59:60Z"),
            ("date", "0001-01-01"),
            ("time", "10:15:00"),
            ("time", "10:15:00.250"),
        ] {
            assert!(temporal_ok(ty, ok), "{ty} {ok}");
        }
        for (ty, bad) in [
            ("dateTime", "2020-01-01T10Z"),
            ("dateTime", "2020-01-01T10:15Z"),
            ("dateTime", "2020-01T10:15:00Z"),
            ("dateTime", "0000"),
            ("dateTime", "2020-13"),
            ("dateTime", "2020-1-01"),
            ("date", "2020-01-00"),
            ("time", "+1:00:00"),
            ("time", "24:00:00"),
            ("time", "10:15:00Z"),
            ("time", "10:15"),
        ] {
            assert!(!temporal_ok(ty, bad), "{ty} {bad}");
        }
    }
}
