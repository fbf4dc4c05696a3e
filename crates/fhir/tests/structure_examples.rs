//! Checks every JSON file of the official R4 package (`hl7.fhir.r4.examples@4.0.1`) against the element
//! definitions ([`socle_fhir::resource::check_structure`]): the examples are valid R4, so each passes, but for
//! the few listed below with the defect the check finds in them. Also times the whole pass.
//!
//! The package is looked for in `$FHIR_EXAMPLES_DIR`, else `<repo>/.cache/fhir/package` (fetch it with
//! `scripts/fetch-fhir-package.sh`). Set `SOCLE_SKIP_CORPUS=1` to skip when it is absent.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::Value;
use socle_fhir::resource::check_structure;

/// Official examples that are not valid R4, with the defect named in the error.
const EXPECTED: &[(&str, &str)] = &[
    // `ImplementationGuide.name` is 1..1; these two guides have none.
    ("ImplementationGuide-fhir.json", "ImplementationGuide.name"),
    ("ig-r4.json", "ImplementationGuide.name"),
    // `Questionnaire.item.linkId` is 1..1; the nested item of qs1 has none.
    ("Questionnaire-qs1.json", "item[0].item[0].linkId"),
    // `SearchParameter.base` is 1..*; these extension parameters (XPath only) name no base.
    (
        "SearchParameter-codesystem-extensions-CodeSystem-author.json",
        "SearchParameter.base",
    ),
    (
        "SearchParameter-codesystem-extensions-CodeSystem-effective.json",
        "SearchParameter.base",
    ),
    (
        "SearchParameter-codesystem-extensions-CodeSystem-end.json",
        "SearchParameter.base",
    ),
    (
        "SearchParameter-codesystem-extensions-CodeSystem-keyword.json",
        "SearchParameter.base",
    ),
    (
        "SearchParameter-codesystem-extensions-CodeSystem-workflow.json",
        "SearchParameter.base",
    ),
    (
        "SearchParameter-valueset-extensions-ValueSet-author.json",
        "SearchParameter.base",
    ),
    (
        "SearchParameter-valueset-extensions-ValueSet-effective.json",
        "SearchParameter.base",
    ),
    (
        "SearchParameter-valueset-extensions-ValueSet-end.json",
        "SearchParameter.base",
    ),
    (
        "SearchParameter-valueset-extensions-ValueSet-keyword.json",
        "SearchParameter.base",
    ),
    (
        "SearchParameter-valueset-extensions-ValueSet-workflow.json",
        "SearchParameter.base",
    ),
    // Its id has 67 characters; R4 ids have at most 64.
    (
        "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json",
        "identifiant invalide",
    ),
];

fn corpus_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FHIR_EXAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/fhir/package")
        });
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("SOCLE_SKIP_CORPUS").is_ok_and(|v| v == "1") {
        eprintln!(
            "SOCLE_SKIP_CORPUS=1: skipping, no FHIR examples at {}",
            dir.display()
        );
        return None;
    }
    panic!(
        "FHIR R4 examples not found at {}: run scripts/fetch-fhir-package.sh (or SOCLE_SKIP_CORPUS=1)",
        dir.display()
    );
}

#[test]
fn every_official_example_is_valid() {
    let Some(dir) = corpus_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("readable examples dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut checked = 0usize;
    let mut bytes = 0usize;
    let mut spent = std::time::Duration::ZERO;
    for p in &files {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(p).unwrap();
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if v.get("resourceType").is_none() {
            continue; // package.json, .index.json
        }
        checked += 1;
        bytes += text.len();
        let t = Instant::now();
        let r = check_structure(&v);
        spent += t.elapsed();
        if let Err(e) = r {
            failures.push((name, e.to_string()));
        }
    }
    eprintln!(
        "{checked} resources ({} MB) checked in {:.1} ms; {} refused",
        bytes / 1_000_000,
        spent.as_secs_f64() * 1000.0,
        failures.len()
    );
    for (n, e) in &failures {
        eprintln!("  {n}: {e}");
    }
    let unexpected: Vec<_> = failures
        .iter()
        .filter(|(n, e)| !EXPECTED.iter().any(|(x, why)| x == n && e.contains(why)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} unexpected refusals",
        unexpected.len()
    );
    for (x, _) in EXPECTED {
        assert!(
            failures.iter().any(|(n, _)| n == x),
            "{x} was expected to be refused"
        );
    }
    assert!(checked > 5000, "only {checked} resources");
}
