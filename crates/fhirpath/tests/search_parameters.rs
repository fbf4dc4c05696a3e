//! Every `expression` of the official R4 SearchParameter definitions must parse.
//! Reads the unpacked hl7.fhir.r4.examples package (`scripts/fetch-fhir-package.sh`; `FHIR_EXAMPLES_DIR`
//! overrides the default `<repo>/.cache/fhir/package`). Absent, the test fails unless `SOCLE_SKIP_CORPUS=1`.

use socle_fhirpath::Expression;
use std::path::Path;

fn package_dir() -> Option<std::path::PathBuf> {
    if std::env::var("SOCLE_SKIP_CORPUS").as_deref() == Ok("1") {
        println!("note: SOCLE_SKIP_CORPUS=1, SearchParameter check skipped");
        return None;
    }
    let dir = std::env::var("FHIR_EXAMPLES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/fhir/package")
        });
    assert!(
        dir.is_dir(),
        "{} absent: run scripts/fetch-fhir-package.sh (or SOCLE_SKIP_CORPUS=1)",
        dir.display()
    );
    Some(dir)
}

#[test]
fn all_r4_search_parameter_expressions_parse() {
    let Some(dir) = package_dir() else { return };
    let dir = dir.as_path();
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("{} illisible", dir.display());
    };
    // example resources by type (a few of each) to evaluate the expressions on
    let mut examples: std::collections::HashMap<String, Vec<serde_json::Value>> =
        Default::default();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("SearchParameter-")
            || name.starts_with("StructureDefinition-")
            || !name.ends_with(".json")
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let Some(rt) = json
            .get("resourceType")
            .and_then(|r| r.as_str())
            .map(str::to_string)
        else {
            continue;
        };
        let v = examples.entry(rt).or_default();
        if v.len() < 4 {
            v.push(json);
        }
    }
    let mut evaluated = 0;
    let mut total = 0;
    let mut failures = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("SearchParameter-") || !name.ends_with(".json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let Some(expr) = json.get("expression").and_then(|e| e.as_str()) else {
            continue;
        };
        total += 1;
        match Expression::parse(expr) {
            Ok(e) => {
                // evaluating on an empty resource of each base type must not fail
                let bases = json
                    .get("base")
                    .and_then(|b| b.as_array())
                    .cloned()
                    .unwrap_or_default();
                for b in bases.iter().filter_map(|b| b.as_str()) {
                    let empty = serde_json::json!({ "resourceType": b });
                    let mut inputs = vec![&empty];
                    let others: Vec<&serde_json::Value> = match b {
                        "Resource" | "DomainResource" => {
                            examples.values().flatten().take(50).collect()
                        }
                        _ => examples
                            .get(b)
                            .map(|v| v.iter().collect())
                            .unwrap_or_default(),
                    };
                    inputs.extend(others);
                    for r in inputs {
                        evaluated += 1;
                        if let Err(err) = e.evaluate(r) {
                            let id = r.get("id").and_then(|i| i.as_str()).unwrap_or("(empty)");
                            failures.push(format!("{name} on {b}/{id}: {expr}: {err}"));
                        }
                    }
                }
            }
            Err(err) => failures.push(format!("{name}: {expr}: {err}")),
        }
    }
    println!(
        "SearchParameter expressions: {total} parsed, {evaluated} evaluations, {} failures",
        failures.len()
    );
    for f in &failures {
        println!("  {f}");
    }
    assert!(
        failures.is_empty(),
        "{} SearchParameter expressions failed",
        failures.len()
    );
}

/// Rough throughput check (run with `--release -- --ignored --nocapture`).
#[test]
#[ignore]
fn throughput_patient_search_parameters() {
    let Some(dir) = package_dir() else { return };
    let dir = dir.as_path();
    let Ok(text) = std::fs::read_to_string(dir.join("Patient-example.json")) else {
        panic!("{} : Patient-example.json absent", dir.display());
    };
    let patient: serde_json::Value = serde_json::from_str(&text).expect("json");
    let mut exprs = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("SearchParameter-") {
            continue;
        }
        let Ok(t) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(j) = serde_json::from_str::<serde_json::Value>(&t) else {
            continue;
        };
        let bases: Vec<&str> = j
            .get("base")
            .and_then(|b| b.as_array())
            .map(|b| b.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        if !bases
            .iter()
            .any(|b| matches!(*b, "Patient" | "Resource" | "DomainResource"))
        {
            continue;
        }
        if let Some(e) = j.get("expression").and_then(|e| e.as_str()) {
            exprs.push(Expression::parse(e).expect("parse"));
        }
    }
    let n = 2000;
    let start = std::time::Instant::now();
    let mut items = 0;
    for _ in 0..n {
        for e in &exprs {
            items += e.evaluate(&patient).map(|r| r.len()).unwrap_or(0);
        }
    }
    let el = start.elapsed();
    println!(
        "{} Patient search parameters x {n} resources: {:?} ({:.0} resources/s, {items} items)",
        exprs.len(),
        el,
        n as f64 / el.as_secs_f64()
    );
}
