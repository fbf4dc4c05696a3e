//! What the corpus tests of this crate share: where the official R4 examples are, their files, and the
//! examples that are not valid R4 (`invalid-examples.tsv`).
#![allow(dead_code)]

use std::path::PathBuf;

pub fn corpus_dir() -> Option<PathBuf> {
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
        "FHIR R4 examples not found at {}: run scripts/fetch-fhir-package.sh (or set FHIR_EXAMPLES_DIR, \
         or SOCLE_SKIP_CORPUS=1 to skip)",
        dir.display()
    );
}

/// The package's JSON files, sorted by name.
pub fn json_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable examples dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// The official examples that are not valid R4, with a text their refusal names (`invalid-examples.tsv`).
pub fn invalid_examples() -> Vec<(&'static str, &'static str)> {
    include_str!("../invalid-examples.tsv")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .collect()
}
