//! `extract` never panics, whatever the JSON, and its ranges are ordered; the element checks never panic and
//! find an unknown element at any depth.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use socle_fhir::index::{IndexValue, extract};
use socle_fhir::resource::check_structure;

const KEYS: &[&str] = &[
    "name",
    "family",
    "given",
    "birthDate",
    "effectiveDateTime",
    "effectivePeriod",
    "start",
    "end",
    "valueQuantity",
    "value",
    "unit",
    "system",
    "code",
    "coding",
    "subject",
    "reference",
    "identifier",
    "telecom",
    "address",
    "city",
    "meta",
    "tag",
    "profile",
    "component",
    "valueCodeableConcept",
    "period",
    "event",
    "repeat",
    "boundsPeriod",
    "extension",
    "url",
    "valueString",
    "status",
    "issued",
    "currency",
    "low",
    "high",
    "referenceSeq",
    "variant",
    "useContext",
    "valueRange",
    "deceasedBoolean",
    "gender",
    "entry",
    "resource",
    "resourceType",
    "id",
];
const TYPES: &[&str] = &[
    "Patient",
    "Observation",
    "MolecularSequence",
    "Bundle",
    "Encounter",
    "ValueSet",
    "Nope",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "-?[0-9]{1,25}(\\.[0-9]{1,25})?(e-?[0-9]{1,3})?"
            .prop_filter_map("number", |s| serde_json::from_str::<Value>(&s).ok()),
        "\\PC{0,12}".prop_map(Value::String),
        "[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,4})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
            .prop_map(Value::String),
        "(Patient|Observation|Foo|http://x/Patient|#|urn:uuid:)/?[a-z0-9.]{0,5}(/_history/1)?".prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn extract_never_panics(rtype in prop::sample::select(TYPES), fields in prop::collection::vec((prop::sample::select(KEYS), tree()), 0..8)) {
        let mut obj = Map::new();
        for (k, v) in fields {
            obj.insert(k.to_string(), v);
        }
        obj.insert("resourceType".into(), Value::String(rtype.into()));
        for e in extract(&Value::Object(obj)) {
            match e.value {
                IndexValue::Date { lo, hi } => prop_assert!(lo <= hi),
                IndexValue::Number { value, lo, hi } | IndexValue::Quantity { value, lo, hi, .. } => {
                    prop_assert!(lo <= hi && !value.is_nan());
                }
                _ => {}
            }
        }
    }
}

#[test]
fn odd_documents() {
    for v in [
        json!(null),
        json!([]),
        json!("Patient"),
        json!({}),
        json!({"resourceType": 3}),
        json!({"resourceType": "Patient"}),
    ] {
        let _ = extract(&v);
    }
}

/// A valid Patient whose objects, at every depth, receive an unknown element in turn.
fn patient_with_unknown(at: usize, value: Value) -> (Value, &'static str) {
    let mut p = json!({"resourceType": "Patient", "id": "p",
        "name": [{"family": "Martin", "given": ["Anne"], "period": {"start": "2020-01-01"}}],
        "contact": [{"name": {"family": "Durand"}, "telecom": [{"system": "phone", "value": "0600000000"}]}],
        "extension": [{"url": "http://example.org/e", "valueCoding": {"code": "x"}}]});
    let (target, path): (&mut Value, &'static str) = match at % 6 {
        0 => (&mut p, "Patient.zz"),
        1 => (&mut p["name"][0], "Patient.name[0].zz"),
        2 => (&mut p["name"][0]["period"], "Patient.name[0].period.zz"),
        3 => (&mut p["contact"][0]["name"], "Patient.contact[0].name.zz"),
        4 => (
            &mut p["contact"][0]["telecom"][0],
            "Patient.contact[0].telecom[0].zz",
        ),
        _ => (
            &mut p["extension"][0]["valueCoding"],
            "Patient.extension[0].valueCoding.zz",
        ),
    };
    target.as_object_mut().unwrap().insert("zz".into(), value);
    (p, path)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The element checks never panic, whatever the JSON, and give the same answer twice.
    #[test]
    fn element_checks_are_total(rtype in prop::sample::select(TYPES), fields in prop::collection::vec((prop::sample::select(KEYS), tree()), 0..8)) {
        let mut obj = Map::new();
        for (k, v) in fields {
            obj.insert(k.to_string(), v);
        }
        obj.insert("resourceType".into(), Value::String(rtype.into()));
        let v = Value::Object(obj);
        let first = check_structure(&v).map_err(|e| e.to_string());
        let second = check_structure(&v).map_err(|e| e.to_string());
        prop_assert_eq!(first, second);
    }

    /// An unknown element is found at any depth and named by its path, whatever its value.
    #[test]
    fn unknown_elements_are_found_at_any_depth(at in 0usize..6, value in tree().prop_filter("no null", |v| !v.is_null())) {
        let (p, path) = patient_with_unknown(at, value);
        let e = check_structure(&p).map_err(|e| e.to_string());
        prop_assert!(e.as_ref().is_err_and(|m| m.contains(path)), "{:?} {}", e, path);
    }
}
