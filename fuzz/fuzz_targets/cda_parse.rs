//! The CDA header parser, the level-1 body extraction and the CI-SIS value-set loader must
//! accept or refuse any input without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = socle_cda::Limits::default();
    if let Ok(doc) = socle_cda::parse(data, &limits) {
        let expected = socle_cda::Expected {
            patient_ins: socle_cda::InstanceId::new("1.2.250.1.213.1.4.8", Some("279035121518989")),
            type_code: socle_cda::CodeRef::new("11502-2", "2.16.840.1.113883.6.1"),
            confidentiality: None,
            set_id: doc.set_id.clone(),
            unique_id: None,
        };
        let _ = socle_cda::cross_check(&doc, &expected);
        let _ = doc.effective_time.parsed.as_ref().map(|t| t.to_iso8601());
    }
    let _ = socle_cda::extract_n1_body(data, &limits);
    let _ = socle_cda::value_set::ValueSet::parse(data, &limits);
});
