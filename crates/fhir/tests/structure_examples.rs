//! Checks every JSON file of the official R4 package (`hl7.fhir.r4.examples@4.0.1`) against the element
//! definitions ([`socle_fhir::resource::check_structure`]): the examples are valid R4, so each passes, but for
//! the few listed in `invalid-examples.tsv` with the defect the check finds in them. Also times the whole pass.
//!
//! The package is looked for in `$FHIR_EXAMPLES_DIR`, else `<repo>/.cache/fhir/package` (fetch it with
//! `scripts/fetch-fhir-package.sh`). Set `SOCLE_SKIP_CORPUS=1` to skip when it is absent.

mod common;

use std::time::Instant;

use common::{corpus_dir, invalid_examples, json_files};

use serde_json::Value;
use socle_fhir::resource::check_structure;

#[test]
fn every_official_example_is_valid() {
    let Some(dir) = corpus_dir() else { return };
    let files = json_files(&dir);
    let expected = invalid_examples();
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
        .filter(|(n, e)| !expected.iter().any(|(x, why)| x == n && e.contains(why)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} unexpected refusals",
        unexpected.len()
    );
    for (x, _) in &expected {
        assert!(
            failures.iter().any(|(n, _)| n == x),
            "{x} was expected to be refused"
        );
    }
    assert!(checked > 5000, "only {checked} resources");
}
