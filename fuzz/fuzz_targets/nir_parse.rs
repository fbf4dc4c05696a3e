//! The matricule INS parser and the name normalisation must accept or refuse any input without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(n) = socle_ins::Nir::parse(s) {
            let _ = n.inconsistencies(Some("male"), Some(s), Some(s));
        }
        let _ = socle_ins::traits::normalize_name(s);
        let _ = socle_ins::traits::official_name(s);
    }
});
