//! Values extracted from a resource for its search parameters (what the store indexes).
//!
//! Owns: converting FHIRPath results into typed index values (normalised strings, tokens, references, date
//! ranges, numbers, quantities, URIs, composites). Must not know how the store lays them out.
//!
//! Conversion follows the R4 search rules (<https://hl7.org/fhir/R4/search.html>):
//! - string: `HumanName` → family, given, prefix, suffix, text; `Address` → line, city, district, state,
//!   postalCode, country, text; primitives as they are. `norm` is [`normalize_string`].
//! - token: `Coding` → system|code; `CodeableConcept` → each coding; and, as string values of the same
//!   parameter (for `:text`), `CodeableConcept.text`, `Coding.display` and `Identifier.type.text`;
//!   `Identifier` → system|value; `ContactPoint` → value without system; code/string/id/uri/boolean
//!   primitives → code without system.
//! - reference: `Type/id[/_history/v]` → type and id; an absolute URL `…/Type/id` → type, id and url;
//!   `#contained`, `urn:…`, conditional references and canonical/uri values → url only. A resource reached by
//!   the expression itself (`Bundle.entry[0].resource`) → its type and id, if it is one of the targets.
//! - date: date/dateTime/instant → [`parse_date_range`]; `Period` → start of `start` .. end of `end` (open
//!   ends `i64::MIN`/`i64::MAX`); `Timing` → outer limits of its events and `repeat.boundsPeriod`.
//! - number: [`number_range`] on the number as written. quantity: Quantity/Age/Duration/Distance/Count
//!   (value, system, code, unit), Money (value, currency as code of `urn:iso:std:iso:4217`), Range (low..high).
//! - uri: the string. composite: one entry per item of the main expression, with one value per component
//!   (cartesian product when a component has several values; none when a component has none).
//! - an `Extension` reached by the expression is indexed through its `value[x]`.
//! - special (`Location.near`) is not indexed: [`IndexValue`] has no geographic value.
//!
//! [`parse_date_range`] and [`number_range`] are public so that query values get the same precision rules.

mod convert;
mod date;
mod number;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::Value;

use socle_fhirpath::Variables;

use crate::search_params::{
    COMPOSITE_ITEM_VAR, Component, ParamType, SearchParam, Storage, registry,
};

pub use convert::{MAX_NORM_BYTES, normalize_string};
pub use date::parse_date_range;
pub use number::number_range;

/// One indexed value of one search parameter of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// The search parameter code (`name`, `subject`, `_tag`, …).
    pub param: String,
    pub value: IndexValue,
}

/// A typed index value. Dates are ranges in milliseconds since the Unix epoch (UTC), both ends inclusive;
/// an open end is `i64::MIN` / `i64::MAX`.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// `norm`: lower-cased, accents removed, for the default starts-with and `:contains` searches;
    /// `exact`: as written, for `:exact`.
    String {
        norm: String,
        exact: String,
    },
    /// `system` is `None` when the element has no system (e.g. a `code`).
    Token {
        system: Option<String>,
        code: String,
    },
    /// A local reference `Type/id` (also from an absolute URL) or an external/canonical `url`.
    Reference {
        target_type: Option<String>,
        target_id: Option<String>,
        url: Option<String>,
    },
    Date {
        lo: i64,
        hi: i64,
    },
    /// `lo`..`hi` is the implied precision range of `value` (1.5 → 1.45..1.55).
    Number {
        value: f64,
        lo: f64,
        hi: f64,
    },
    Quantity {
        value: f64,
        lo: f64,
        hi: f64,
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
    },
    Uri(String),
    /// One value per component, in the order of the SearchParameter's components.
    Composite(Vec<IndexValue>),
}

impl IndexValue {
    /// A string value, with its normalised form computed by [`normalize_string`].
    pub fn string(exact: &str) -> IndexValue {
        IndexValue::String {
            norm: normalize_string(exact),
            exact: exact.to_string(),
        }
    }

    /// A token value.
    pub fn token(system: Option<&str>, code: &str) -> IndexValue {
        IndexValue::Token {
            system: system.map(str::to_string),
            code: code.to_string(),
        }
    }

    /// A date range value.
    pub fn date(lo: i64, hi: i64) -> IndexValue {
        IndexValue::Date { lo, hi }
    }

    /// The [`ParamType`] this value belongs to.
    pub fn param_type(&self) -> ParamType {
        match self {
            IndexValue::String { .. } => ParamType::String,
            IndexValue::Token { .. } => ParamType::Token,
            IndexValue::Reference { .. } => ParamType::Reference,
            IndexValue::Date { .. } => ParamType::Date,
            IndexValue::Number { .. } => ParamType::Number,
            IndexValue::Quantity { .. } => ParamType::Quantity,
            IndexValue::Uri(_) => ParamType::Uri,
            IndexValue::Composite(_) => ParamType::Composite,
        }
    }

    fn hash_into<H: Hasher>(&self, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        match self {
            IndexValue::String { norm, exact } => (norm, exact).hash(h),
            IndexValue::Token { system, code } => (system, code).hash(h),
            IndexValue::Reference {
                target_type,
                target_id,
                url,
            } => (target_type, target_id, url).hash(h),
            IndexValue::Date { lo, hi } => (lo, hi).hash(h),
            IndexValue::Number { value, lo, hi } => {
                (value.to_bits(), lo.to_bits(), hi.to_bits()).hash(h)
            }
            IndexValue::Quantity {
                value,
                lo,
                hi,
                system,
                code,
                unit,
            } => (
                value.to_bits(),
                lo.to_bits(),
                hi.to_bits(),
                system,
                code,
                unit,
            )
                .hash(h),
            IndexValue::Uri(u) => u.hash(h),
            IndexValue::Composite(parts) => {
                parts.len().hash(h);
                for p in parts {
                    p.hash_into(h);
                }
            }
        }
    }
}

/// Parameters that are not extracted: the store handles `_id`/`_lastUpdated`, the others have no index.
const SKIPPED: &[&str] = &[
    "_id",
    "_lastUpdated",
    "_text",
    "_content",
    "_query",
    "_filter",
    "_list",
    "_has",
    "_type",
];

/// The version of the conversion of values into index entries (normalisation, date ranges, token forms…).
/// Raise it with any change to what [`extract`] produces for the same definitions: stores then index every
/// resource again ([`index_fingerprint`]).
pub const EXTRACTION_VERSION: u32 = 3;

/// The suffix of the parameter under which an Identifier's type and value are kept (`identifier:of-type` rows:
/// system `type-system|type-code`, code the value), for the `:of-type` modifier.
pub const OF_TYPE_SUFFIX: &str = ":of-type";

/// A digest of how resources of `rtype` are indexed — the extraction version and each of its search parameters
/// as defined (code, type, expression, targets, components, how its rows are kept), and the parameters that
/// place it in a patient's compartment — stable across builds and
/// platforms (FNV-1a). A store keeps it per type and indexes again the resources of a type whose digest
/// changed, so that a search parameter added or redefined by a new release finds the resources written before.
pub fn index_fingerprint(rtype: &str) -> i64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(&EXTRACTION_VERSION.to_le_bytes());
    h.field(rtype);
    for p in registry().params(rtype) {
        if SKIPPED.contains(&p.code.as_str()) {
            continue;
        }
        h.field(&p.code);
        h.field(p.kind.as_str());
        h.field(p.expression.as_ref().map_or("", |e| e.source()));
        for t in &p.targets {
            h.field(t);
        }
        h.field("|");
        for c in &p.components {
            h.field(&c.code);
            h.field(c.kind.as_str());
            h.field(c.expression.as_ref().map_or("", |e| e.source()));
        }
        h.field(&format!("{:?}", p.storage));
    }
    // The parameters that place a resource in a patient's compartment (its rows' key).
    h.field("compartment");
    for p in registry().patient_compartment_params(rtype) {
        h.field(p);
    }
    h.0 as i64
}

struct Fnv(u64);

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// A field and its length, so that ("ab", "c") and ("a", "bc") differ.
    fn field(&mut self, s: &str) {
        self.write(&(s.len() as u64).to_le_bytes());
        self.write(s.as_bytes());
    }
}

/// Extracts every index entry of `resource` for all search parameters of its type (see the module doc for the
/// conversion rules). Identical entries are reported once. Never panics; an unknown or missing
/// `resourceType` gives no entries; values that cannot be converted (malformed dates…) are skipped.
pub fn extract(resource: &Value) -> Vec<IndexEntry> {
    let Some(rtype) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut out = Dedup::default();
    for param in registry().params(rtype) {
        if SKIPPED.contains(&param.code.as_str()) {
            continue;
        }
        // Identifiers' types go under their own parameter name (`identifier:of-type`): a search without the
        // modifier must not meet them. Only for parameters keeping their own rows.
        if param.kind == ParamType::Token && matches!(param.storage, Storage::Own) {
            let of_type = format!("{}{OF_TYPE_SUFFIX}", param.code);
            let mut typed = Vec::new();
            extract_param_with(
                param,
                resource,
                &mut |v| out.push(&param.code, v),
                &mut |v| typed.push(v),
            );
            for v in typed {
                out.push(&of_type, v);
            }
        } else {
            extract_param(param, resource, &mut |v| out.push(&param.code, v));
        }
    }
    out.entries
}

/// The row a value of a parameter kept as a typed subset of another's rows (`Storage::Subset`) adds to that
/// other parameter's rows, if any. A reference whose type is read from it (`Patient/1`, `https://…/Patient/1`)
/// is already there with that type: `None`. One whose type is not (a contained `#newborn`, an id that is not a
/// FHIR id, a conditional reference), which `resolve()` still found to be a `target`, is added with that type,
/// so that searching the subset by its URL, or with `:missing`, still finds it; searching the other parameter
/// is unchanged (it already holds the reference, untyped, and a typed row without id matches no id).
pub fn subset_row(value: &IndexValue, target: &str) -> Option<IndexValue> {
    match value {
        IndexValue::Reference {
            target_type: Some(t),
            ..
        } if t == target => None,
        IndexValue::Reference { target_id, url, .. } => Some(IndexValue::Reference {
            target_type: Some(target.to_string()),
            target_id: target_id.clone(),
            url: url.clone(),
        }),
        _ => None,
    }
}

/// Extracts the values of one search parameter of `resource` (not deduplicated).
pub fn extract_param_values(param: &SearchParam, resource: &Value) -> Vec<IndexValue> {
    let mut values = Vec::new();
    extract_param(param, resource, &mut |v| values.push(v));
    values
}

fn extract_param(param: &SearchParam, resource: &Value, emit: &mut dyn FnMut(IndexValue)) {
    extract_param_with(param, resource, emit, &mut |_| {});
}

/// [`extract_param`], with an Identifier's type and value given to `of_type` (token parameters).
fn extract_param_with(
    param: &SearchParam,
    resource: &Value,
    emit: &mut dyn FnMut(IndexValue),
    of_type: &mut dyn FnMut(IndexValue),
) {
    if param.kind != ParamType::Composite {
        for branch in &param.branches {
            if let Ok(items) = branch.evaluate(resource) {
                for item in &items {
                    if param.kind == ParamType::Reference
                        && let Some(v) = embedded_resource_reference(param, item.as_json())
                    {
                        emit(v);
                        continue;
                    }
                    convert::convert(param.kind, item, emit);
                    if param.kind == ParamType::Token {
                        convert::token_text(item, emit);
                        convert::identifier_type(item, of_type);
                    }
                }
            }
        }
        return;
    }
    let mut items = Vec::new();
    for branch in &param.branches {
        if let Ok(found) = branch.evaluate(resource) {
            items.extend(found);
        }
    }
    if param.components.is_empty() || param.components.iter().any(|c| c.scoped.is_none()) {
        return;
    }
    let mut vars = Variables::new();
    let mut per_component: Vec<Vec<IndexValue>> = Vec::with_capacity(param.components.len());
    for item in items {
        if item.as_json().is_none() {
            continue;
        }
        vars.insert(COMPOSITE_ITEM_VAR.to_string(), vec![item]);
        per_component.clear();
        for c in &param.components {
            let values = component_values(c, resource, &vars);
            if values.is_empty() {
                break;
            }
            per_component.push(values);
        }
        if per_component.len() == param.components.len() {
            cartesian(
                &per_component,
                &mut Vec::with_capacity(per_component.len()),
                emit,
            );
        }
    }
}

/// A reference parameter whose expression reaches a resource itself (`Bundle.entry[0].resource` for
/// `Bundle.composition`): that resource's `Type/id`, when its type is one of the parameter's targets.
/// `None` otherwise (the item is then converted as usual, and a resource that is not a target gives nothing).
fn embedded_resource_reference(param: &SearchParam, json: Option<&Value>) -> Option<IndexValue> {
    let obj = json?.as_object()?;
    let rtype = obj.get("resourceType")?.as_str()?;
    let id = obj.get("id")?.as_str()?;
    if !param.targets.is_empty() && !param.targets.iter().any(|t| t == rtype) {
        return None;
    }
    Some(IndexValue::Reference {
        target_type: Some(rtype.to_string()),
        target_id: Some(id.to_string()),
        url: None,
    })
}

fn component_values<'a>(
    c: &Component,
    resource: &'a Value,
    vars: &Variables<'a>,
) -> Vec<IndexValue> {
    let mut values = Vec::new();
    if let Some(expr) = &c.scoped
        && let Ok(items) = expr.evaluate_with(resource, vars)
    {
        for item in &items {
            convert::convert(c.kind, item, &mut |v| values.push(v));
        }
    }
    values
}

/// Upper bound of composite combinations per item (guards against pathological inputs).
const MAX_COMBINATIONS: usize = 1024;

fn cartesian(
    sets: &[Vec<IndexValue>],
    prefix: &mut Vec<IndexValue>,
    emit: &mut dyn FnMut(IndexValue),
) {
    let total = sets
        .iter()
        .map(Vec::len)
        .try_fold(1usize, |acc, n| acc.checked_mul(n));
    if total.is_none_or(|t| t > MAX_COMBINATIONS) {
        return;
    }
    fn rec(
        sets: &[Vec<IndexValue>],
        prefix: &mut Vec<IndexValue>,
        emit: &mut dyn FnMut(IndexValue),
    ) {
        match sets.split_first() {
            None => emit(IndexValue::Composite(prefix.clone())),
            Some((first, rest)) => {
                for v in first {
                    prefix.push(v.clone());
                    rec(rest, prefix, emit);
                    prefix.pop();
                }
            }
        }
    }
    rec(sets, prefix, emit);
}

/// Collects entries, dropping exact duplicates (same param, same value).
#[derive(Default)]
struct Dedup {
    entries: Vec<IndexEntry>,
    seen: HashMap<u64, Vec<usize>>,
}

impl Dedup {
    fn push(&mut self, param: &str, value: IndexValue) {
        let mut h = DefaultHasher::new();
        param.hash(&mut h);
        value.hash_into(&mut h);
        let slot = self.seen.entry(h.finish()).or_default();
        if slot
            .iter()
            .any(|&i| self.entries[i].param == param && self.entries[i].value == value)
        {
            return;
        }
        slot.push(self.entries.len());
        self.entries.push(IndexEntry {
            param: param.to_string(),
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of<'a>(entries: &'a [IndexEntry], param: &str) -> Vec<&'a IndexValue> {
        entries
            .iter()
            .filter(|e| e.param == param)
            .map(|e| &e.value)
            .collect()
    }

    #[test]
    fn composite_cartesian_and_dedup() {
        let obs = json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}, {"system": "http://loinc.org", "code": "85354-9"}, {"system": "http://x", "code": "bp"}]},
            "subject": {"reference": "Patient/p1"},
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": {"value": 80.5, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "9999-9"}]}}
            ]
        });
        let e = extract(&obs);
        // Duplicated coding is indexed once.
        assert_eq!(of(&e, "code").len(), 2);
        let comp = of(&e, "component-code-value-quantity");
        assert_eq!(comp.len(), 2, "{comp:#?}");
        let q = |v: f64, lo: f64, hi: f64| IndexValue::Quantity {
            value: v,
            lo,
            hi,
            system: Some("http://unitsofmeasure.org".into()),
            code: Some("mm[Hg]".into()),
            unit: None,
        };
        assert!(comp.contains(&&IndexValue::Composite(vec![
            IndexValue::token(Some("http://loinc.org"), "8462-4"),
            q(80.5, 80.45, 80.55)
        ])));
        // The Observation itself has no value: no code-value-quantity.
        assert!(of(&e, "code-value-quantity").is_empty());
        assert_eq!(of(&e, "combo-code-value-quantity").len(), 2);
        assert_eq!(
            of(&e, "patient"),
            [&IndexValue::Reference {
                target_type: Some("Patient".into()),
                target_id: Some("p1".into()),
                url: None
            }]
        );
        // Two codings × one value = two composites.
        let with_value = json!({
            "resourceType": "Observation",
            "code": {"coding": [{"system": "a", "code": "1"}, {"system": "b", "code": "2"}]},
            "valueQuantity": {"value": 1.0}
        });
        assert_eq!(of(&extract(&with_value), "code-value-quantity").len(), 2);
    }

    /// A token's texts are string values of the same parameter (for `:text`); composites keep tokens only.
    #[test]
    fn token_texts() {
        let obs = json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hémoglobine"},
                                {"system": "http://x", "code": "hb"}], "text": "Hb sanguine"},
            "identifier": [{"type": {"text": "Numéro de demande"}, "system": "urn:x", "value": "42"}],
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6",
                                                "display": "Systolique"}]},
                           "valueQuantity": {"value": 120}}]
        });
        let e = extract(&obs);
        let code = of(&e, "code");
        assert!(code.contains(&&IndexValue::token(Some("http://loinc.org"), "718-7")));
        assert!(code.contains(&&IndexValue::string("Hémoglobine")));
        assert!(code.contains(&&IndexValue::string("Hb sanguine")));
        assert_eq!(code.len(), 4, "{code:#?}");
        let ident = of(&e, "identifier");
        assert!(
            ident.contains(&&IndexValue::string("Numéro de demande")),
            "{ident:#?}"
        );
        assert!(ident.contains(&&IndexValue::token(Some("urn:x"), "42")));
        assert!(of(&e, "component-code").contains(&&IndexValue::string("Systolique")));
        for v in of(&e, "component-code-value-quantity") {
            let IndexValue::Composite(parts) = v else {
                panic!("{v:?}");
            };
            assert_eq!(parts[0].param_type(), ParamType::Token, "{v:?}");
        }
        assert!(!of(&e, "component-code-value-quantity").is_empty());
        // Codes and strings carry no text: a status is a token, nothing more.
        assert_eq!(of(&e, "status"), [&IndexValue::token(None, "final")]);
    }

    /// An Identifier's typed codings with its value, under `param:of-type` only; untyped ones add nothing.
    #[test]
    fn identifier_types() {
        let t = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203";
        let p = json!({
            "resourceType": "Patient",
            "identifier": [
                {"type": {"coding": [{"system": t, "code": "INS-NIR"}, {"code": "NH"}]},
                 "system": "urn:oid:1.2.250.1.213.1.4.8", "value": "279035121518989"},
                {"type": {"text": "sans code"}, "system": "urn:x", "value": "1"},
                {"system": "urn:y", "value": "2"},
                {"type": {"coding": [{"system": t, "code": "PI"}]}}
            ]
        });
        let e = extract(&p);
        let typed = of(&e, "identifier:of-type");
        assert_eq!(
            typed,
            [
                &IndexValue::token(Some(&format!("{t}|INS-NIR")), "279035121518989"),
                &IndexValue::token(Some("|NH"), "279035121518989")
            ],
            "{typed:#?}"
        );
        assert_eq!(
            of(&e, "identifier")
                .iter()
                .filter(|v| v.param_type() == ParamType::Token)
                .count(),
            3
        );
        // A token parameter on codes has no identifiers to type.
        assert!(of(&e, "gender:of-type").is_empty());
    }

    #[test]
    fn skipped_and_unknown() {
        let p = json!({"resourceType": "Patient", "id": "x", "meta": {"lastUpdated": "2020-01-01T00:00:00Z",
            "tag": [{"system": "s", "code": "t"}], "source": "http://src"}, "text": {"div": "<div>hi</div>"}});
        let e = extract(&p);
        assert!(
            of(&e, "_id").is_empty()
                && of(&e, "_lastUpdated").is_empty()
                && of(&e, "_text").is_empty()
        );
        assert_eq!(of(&e, "_tag"), [&IndexValue::token(Some("s"), "t")]);
        assert_eq!(of(&e, "_source"), [&IndexValue::Uri("http://src".into())]);
        assert!(extract(&json!({"resourceType": "Nope", "name": "x"})).is_empty());
        assert!(extract(&json!({"name": "x"})).is_empty());
        assert!(extract(&json!([1, 2])).is_empty());
    }

    #[test]
    fn patient_conversions() {
        let p = json!({"resourceType": "Patient", "name": [{"family": "Ñúñez", "given": ["Zoë"]}],
            "birthDate": "1974-12", "deceasedDateTime": "2015-02-14T13:42:00+10:00",
            "generalPractitioner": [{"reference": "https://example.org/fhir/Practitioner/pr1"}]});
        let e = extract(&p);
        assert!(of(&e, "family").contains(&&IndexValue::String {
            norm: "nunez".into(),
            exact: "Ñúñez".into()
        }));
        let (lo, hi) = parse_date_range("1974-12").unwrap();
        assert_eq!(of(&e, "birthdate"), [&IndexValue::Date { lo, hi }]);
        assert_eq!(of(&e, "deceased"), [&IndexValue::token(None, "true")]);
        assert_eq!(
            of(&e, "general-practitioner"),
            [&IndexValue::Reference {
                target_type: Some("Practitioner".into()),
                target_id: Some("pr1".into()),
                url: Some("https://example.org/fhir/Practitioner/pr1".into())
            }]
        );
    }
}
