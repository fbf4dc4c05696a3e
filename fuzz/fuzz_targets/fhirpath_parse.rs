#![no_main]
//! FHIRPath: parse arbitrary text, evaluate what parses on a fixed resource.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(e) = socle_fhirpath::Expression::parse(s) {
            let r = serde_json::json!({"resourceType": "Patient", "id": "x", "name": [{"family": "a", "given": ["b"]}], "birthDate": "2000-01-01"});
            let _ = e.evaluate(&r);
        }
    }
});
