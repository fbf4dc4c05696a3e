//! An ITI-65 submission (any JSON) is accepted or refused by the DMP's checks without panicking, and an accepted
//! one can be checked against a patient and turned into the stored transaction.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(terms) = socle_dmp::Terminology::embedded() else {
        return;
    };
    let opts = socle_dmp::Options::default();
    for by in [socle_dmp::Submitter::Professional, socle_dmp::Submitter::Patient] {
        let _ = socle_dmp::is_provide_bundle(&bundle);
        if let Ok(sub) = socle_dmp::Submission::parse(bundle.clone(), &terms, &opts, by) {
            let _ = sub.check_patient(&bundle);
            let blobs: Vec<(String, u64)> = sub.parts.iter().map(|_| (String::new(), 0)).collect();
            let _ = sub.into_transaction(&blobs, &[]);
        }
    }
});
