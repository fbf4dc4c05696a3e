#![no_main]
//! Arbitrary JSON bodies: structural checks and index extraction must never panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = socle_fhir::resource::check_structure(&v);
        let _ = socle_fhir::index::extract(&v);
    }
});
