//! Runs `extract` on every JSON example of the official R4 package (`hl7.fhir.r4.examples@4.0.1`):
//! no panic, spot checks of known values, totals and timing printed.
//!
//! The package is looked for in `$FHIR_EXAMPLES_DIR`, else `<repo>/.cache/fhir/package` (fetch it with
//! `scripts/fetch-fhir-package.sh`). Set `SOCLE_SKIP_CORPUS=1` to skip these tests when it is absent.

mod common;

use common::{corpus_dir, json_files};
use std::time::{Duration, Instant};

use serde_json::Value;
use socle_fhir::index::{IndexEntry, IndexValue, extract, parse_date_range, subset_row};
use socle_fhir::search_params::{Storage, registry};

fn load(dir: &std::path::Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn values<'a>(entries: &'a [IndexEntry], param: &str) -> Vec<&'a IndexValue> {
    entries
        .iter()
        .filter(|e| e.param == param)
        .map(|e| &e.value)
        .collect()
}

#[track_caller]
fn assert_has(entries: &[IndexEntry], param: &str, expected: &IndexValue) {
    let found = values(entries, param);
    assert!(
        found.contains(&expected),
        "{param}: expected {expected:?} among {found:#?}"
    );
}

fn token(system: &str, code: &str) -> IndexValue {
    IndexValue::Token {
        system: (!system.is_empty()).then(|| system.to_string()),
        code: code.to_string(),
    }
}

fn local_ref(t: &str, id: &str) -> IndexValue {
    IndexValue::Reference {
        target_type: Some(t.into()),
        target_id: Some(id.into()),
        url: None,
    }
}

fn quantity(value: f64, lo: f64, hi: f64, system: &str, code: &str, unit: &str) -> IndexValue {
    IndexValue::Quantity {
        value,
        lo,
        hi,
        system: Some(system.into()),
        code: Some(code.into()),
        unit: Some(unit.into()),
    }
}

fn date(s: &str) -> IndexValue {
    let (lo, hi) = parse_date_range(s).unwrap();
    IndexValue::Date { lo, hi }
}

#[test]
fn registry_compiles_every_expression() {
    let errors = registry().load_errors();
    for e in errors.iter().take(20) {
        eprintln!(
            "{} [{}]: {} -> {}",
            e.param_id, e.base, e.expression, e.message
        );
    }
    assert!(
        errors.is_empty(),
        "{} search-parameter expressions failed to compile",
        errors.len()
    );
}

#[test]
fn spot_checks() {
    let Some(dir) = corpus_dir() else { return };

    let p = extract(&load(&dir, "Patient-example.json"));
    assert_has(
        &p,
        "family",
        &IndexValue::String {
            norm: "chalmers".into(),
            exact: "Chalmers".into(),
        },
    );
    assert_has(
        &p,
        "name",
        &IndexValue::String {
            norm: "jim".into(),
            exact: "Jim".into(),
        },
    );
    assert_has(
        &p,
        "given",
        &IndexValue::String {
            norm: "peter".into(),
            exact: "Peter".into(),
        },
    );
    assert_has(&p, "birthdate", &date("1974-12-25"));
    let (lo, hi) = parse_date_range("1974-12-25").unwrap();
    assert_eq!((lo, hi), (157_161_600_000, 157_247_999_999));
    assert_has(&p, "gender", &token("", "male"));
    assert_has(
        &p,
        "identifier",
        &token("urn:oid:1.2.36.146.595.217.0.1", "12345"),
    );
    assert_has(&p, "phone", &token("", "(03) 5555 6473"));
    assert_has(&p, "telecom", &token("", "(03) 3410 5613"));
    assert_has(
        &p,
        "address-city",
        &IndexValue::String {
            norm: "pleasantville".into(),
            exact: "PleasantVille".into(),
        },
    );
    assert_has(
        &p,
        "address-postalcode",
        &IndexValue::String {
            norm: "3999".into(),
            exact: "3999".into(),
        },
    );
    assert_has(&p, "organization", &local_ref("Organization", "1"));
    assert_has(&p, "active", &token("", "true"));
    assert_has(&p, "deceased", &token("", "false"));
    assert!(
        values(&p, "_id").is_empty()
            && values(&p, "_lastUpdated").is_empty()
            && values(&p, "_text").is_empty()
    );

    let o = extract(&load(&dir, "Observation-example.json"));
    assert_has(&o, "code", &token("http://loinc.org", "29463-7"));
    assert_has(&o, "code", &token("http://snomed.info/sct", "27113001"));
    assert_has(
        &o,
        "category",
        &token(
            "http://terminology.hl7.org/CodeSystem/observation-category",
            "vital-signs",
        ),
    );
    assert_has(&o, "subject", &local_ref("Patient", "example"));
    assert_has(&o, "patient", &local_ref("Patient", "example"));
    assert_has(&o, "encounter", &local_ref("Encounter", "example"));
    assert_has(&o, "status", &token("", "final"));
    assert_has(&o, "date", &date("2016-03-28"));
    let q185 = quantity(
        185.0,
        184.5,
        185.5,
        "http://unitsofmeasure.org",
        "[lb_av]",
        "lbs",
    );
    assert_has(&o, "value-quantity", &q185);
    assert_has(
        &o,
        "code-value-quantity",
        &IndexValue::Composite(vec![token("http://loinc.org", "29463-7"), q185.clone()]),
    );
    assert_has(
        &o,
        "combo-code-value-quantity",
        &IndexValue::Composite(vec![token("http://snomed.info/sct", "27113001"), q185]),
    );

    let bp = extract(&load(&dir, "Observation-blood-pressure.json"));
    let q107 = quantity(
        107.0,
        106.5,
        107.5,
        "http://unitsofmeasure.org",
        "mm[Hg]",
        "mmHg",
    );
    assert_has(&bp, "component-code", &token("http://loinc.org", "8480-6"));
    assert_has(&bp, "component-value-quantity", &q107);
    assert_has(
        &bp,
        "component-code-value-quantity",
        &IndexValue::Composite(vec![token("http://loinc.org", "8480-6"), q107.clone()]),
    );
    assert_has(
        &bp,
        "combo-code-value-quantity",
        &IndexValue::Composite(vec![token("http://loinc.org", "8480-6"), q107]),
    );
    assert_has(
        &bp,
        "_profile",
        &IndexValue::Uri("http://hl7.org/fhir/StructureDefinition/vitalsigns".into()),
    );
    // A component's code is not paired with another component's value.
    let systolic_dia = values(&bp, "component-code-value-quantity")
        .into_iter()
        .filter(|v| matches!(v, IndexValue::Composite(c) if c[0] == token("http://loinc.org", "8480-6")))
        .count();
    assert_eq!(systolic_dia, 1);

    let doc = extract(&load(&dir, "Bundle-father.json"));
    assert_has(
        &doc,
        "composition",
        &local_ref("Composition", "180f219f-97a8-486d-99d9-ed631fe4fc57"),
    );
    assert!(
        values(&doc, "message").is_empty(),
        "a Composition is not a MessageHeader"
    );
    assert_has(&doc, "type", &token("", "document"));

    let ms = extract(&load(&dir, "MolecularSequence-example.json"));
    assert_has(
        &ms,
        "referenceseqid-variant-coordinate",
        &IndexValue::Composite(vec![
            token("http://www.ncbi.nlm.nih.gov/nuccore", "NC_000009.11"),
            IndexValue::Number {
                value: 22125503.0,
                lo: 22125502.5,
                hi: 22125503.5,
            },
            IndexValue::Number {
                value: 22125504.0,
                lo: 22125503.5,
                hi: 22125504.5,
            },
        ]),
    );
}

#[test]
fn whole_corpus() {
    let Some(dir) = corpus_dir() else { return };
    let files = json_files(&dir);
    assert!(
        files.len() > 5000,
        "only {} JSON files in {}",
        files.len(),
        dir.display()
    );

    let _ = registry(); // load time is not extraction time
    let (mut resources, mut entries, mut elapsed) = (0usize, 0usize, Duration::ZERO);
    let mut empty = Vec::new();
    let mut meta_mismatches = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable");
        let Ok(json) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let start = Instant::now();
        let extracted = extract(&json);
        elapsed += start.elapsed();
        if json
            .get("resourceType")
            .and_then(Value::as_str)
            .is_none_or(|t| !registry().is_resource_type(t))
        {
            assert!(
                extracted.is_empty(),
                "{name}: not a resource but got entries"
            );
            continue;
        }
        resources += 1;
        entries += extracted.len();
        if extracted.is_empty() {
            empty.push(name.clone());
        }
        for (i, a) in extracted.iter().enumerate() {
            assert!(
                !extracted[i + 1..].contains(a),
                "{name}: duplicate entry {a:?}"
            );
            if let IndexValue::Date { lo, hi } = a.value {
                assert!(lo <= hi, "{name}: {a:?}");
            }
        }
        // Generic cross-check: every meta.tag coding and meta.profile is indexed.
        for tag in json
            .pointer("/meta/tag")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(code) = tag.get("code").and_then(Value::as_str) {
                let system = tag.get("system").and_then(Value::as_str).unwrap_or("");
                if !values(&extracted, "_tag").contains(&&token(system, code)) {
                    meta_mismatches.push(format!("{name}: _tag {system}|{code}"));
                }
            }
        }
        for profile in json
            .pointer("/meta/profile")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let p = IndexValue::Uri(profile.as_str().unwrap_or_default().to_string());
            if !values(&extracted, "_profile").contains(&&p) {
                meta_mismatches.push(format!("{name}: _profile {p:?}"));
            }
        }
    }
    let per_sec = resources as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "extract: {resources} resources, {entries} entries in {:.3} s ({per_sec:.0} resources/s); \
         {} resources without any entry",
        elapsed.as_secs_f64(),
        empty.len()
    );
    assert!(
        meta_mismatches.is_empty(),
        "meta not indexed: {meta_mismatches:#?}"
    );
    assert!(resources > 5000);
    // Nearly every resource has at least one indexed value (status, identifier, url…).
    assert!(
        empty.len() * 20 < resources,
        "{} resources without entries: {:?}",
        empty.len(),
        &empty[..empty.len().min(30)]
    );
}

/// The store keeps no rows of its own for parameters stored as others' rows (`Storage::Subset`, `Storage::Union`):
/// over every resource of the official examples (Bundle entries included), a parameter's extracted values must
/// be exactly those it is searched through — else searching it would miss or add matches.
#[test]
fn stored_as_rows_are_the_same_values() {
    let Some(dir) = corpus_dir() else { return };
    let files = json_files(&dir);
    let mut resources: Vec<(String, Value)> = Vec::new();
    for path in &files {
        let Ok(json) =
            serde_json::from_str::<Value>(&std::fs::read_to_string(path).expect("readable"))
        else {
            continue;
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for e in json
            .pointer("/entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(r) = e.get("resource") {
                resources.push((format!("{name} (entry)"), r.clone()));
            }
        }
        resources.push((name, json));
    }
    let (mut checked, mut with_values) = (0usize, 0usize);
    let mut mismatches = Vec::new();
    for (name, json) in &resources {
        let Some(rtype) = json.get("resourceType").and_then(Value::as_str) else {
            continue;
        };
        let extracted = extract(json);
        // The rows a Subset parameter adds to the rows it is kept as (references typed by `resolve()` only).
        let mut added: Vec<(String, IndexValue)> = Vec::new();
        for p in registry().params(rtype) {
            if let Storage::Subset { param, target } = &p.storage {
                for v in values(&extracted, &p.code) {
                    added.extend(subset_row(v, target).map(|r| (param.clone(), r)));
                }
            }
        }
        let stored = |param: &str| -> Vec<&IndexValue> {
            let mut rows = values(&extracted, param);
            rows.extend(added.iter().filter(|(q, _)| q == param).map(|(_, v)| v));
            rows
        };
        // What a reference is searched by: its id and its URL.
        let key = |v: &IndexValue| match v {
            IndexValue::Reference { target_id, url, .. } => (target_id.clone(), url.clone()),
            _ => (None, None),
        };
        for p in registry().params(rtype) {
            let own: Vec<&IndexValue> = values(&extracted, &p.code);
            let same = match &p.storage {
                Storage::Own => continue,
                // A reference is searched by its id and its URL: those must be the same.
                Storage::Subset { param, target } => {
                    let rows: Vec<_> = stored(param)
                        .into_iter()
                        .filter(|v| {
                            matches!(v, IndexValue::Reference { target_type: Some(t), .. } if t == target)
                        })
                        .map(key)
                        .collect();
                    same_set(&own.iter().map(|v| key(v)).collect::<Vec<_>>(), &rows)
                }
                Storage::Union(parts) => {
                    let all: Vec<&IndexValue> =
                        parts.iter().flat_map(|q| values(&extracted, q)).collect();
                    same_set(&own, &all)
                }
            };
            checked += 1;
            if !own.is_empty() {
                with_values += 1;
            }
            if !same {
                mismatches.push(format!(
                    "{name}: {rtype}.{} {own:?} vs {:?}",
                    p.code, p.storage
                ));
            }
        }
    }
    eprintln!(
        "stored-as parameters: {checked} (resource, parameter) pairs checked, {with_values} with values, {} mismatches",
        mismatches.len()
    );
    assert!(
        with_values > 500,
        "too few values to be a check: {with_values}"
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Whether `a` and `b` hold the same values (duplicates aside).
fn same_set<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}
