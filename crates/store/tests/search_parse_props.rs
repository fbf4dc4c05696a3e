//! Property tests: search parsing never panics, whatever the parameters, and either builds SQL whose `?`
//! placeholders match its bound values or reports an error.

use proptest::prelude::*;
use socle_store::search::parse;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("family".to_string()),
        Just("birthdate".to_string()),
        Just("gender:not".to_string()),
        Just("name:contains".to_string()),
        Just("general-practitioner:Practitioner.name".to_string()),
        Just("_has:Observation:patient:code".to_string()),
        Just("_lastUpdated".to_string()),
        Just("_sort".to_string()),
        Just("_count".to_string()),
        Just("_include".to_string()),
        Just("_revinclude:iterate".to_string()),
        "[_a-z:.-]{0,20}",
        any::<String>(),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "(eq|ne|gt|lt|ge|le|sa|eb|ap)?[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?",
        "[a-z|,$\\\\]{0,12}",
        "-?[0-9]{1,5}(\\.[0-9]{1,3})?(\\|[a-z:/]{0,8}\\|[a-z]{0,3})?",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn parse_never_panics(params in proptest::collection::vec((name(), value()), 0..6), strict in any::<bool>()) {
        if let Ok(q) = parse("Patient", &params, strict) {
            prop_assert_eq!(q.filter_sql.matches('?').count(), q.filter_params.len());
            let sort_marks: usize = q.sort_sql.iter().map(|s| s.matches('?').count()).sum();
            prop_assert_eq!(sort_marks, q.sort_params.len());
        }
    }
}
