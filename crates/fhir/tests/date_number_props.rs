//! Property tests of the public parsing helpers: never panic, always an ordered range.

use proptest::prelude::*;
use socle_fhir::index::{number_range, parse_date_range};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn date_range_never_panics(s in "\\PC{0,40}") {
        if let Some((lo, hi)) = parse_date_range(&s) {
            prop_assert!(lo <= hi);
        }
    }

    #[test]
    fn date_range_of_date_like_strings(
        s in "[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}(:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
    ) {
        if let Some((lo, hi)) = parse_date_range(&s) {
            prop_assert!(lo <= hi, "{s}: {lo} > {hi}");
        }
    }

    #[test]
    fn valid_date_times_parse(
        y in 1i32..=9999, mo in 1u32..=12, d in 1u32..=28, h in 0u32..24, mi in 0u32..60, se in 0u32..60,
        frac in proptest::option::of("[0-9]{1,6}"), tz in proptest::option::of((any::<bool>(), 0u32..14, 0u32..60)),
    ) {
        let mut s = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}");
        if let Some(f) = &frac { s.push('.'); s.push_str(f); }
        match tz {
            None => {}
            Some((neg, th, tm)) => s.push_str(&format!("{}{th:02}:{tm:02}", if neg { '-' } else { '+' })),
        }
        let (lo, hi) = parse_date_range(&s).expect("valid dateTime");
        prop_assert!(lo <= hi && hi - lo < 1000);
        // The day containing it contains it (modulo the zone offset).
        let (dlo, dhi) = parse_date_range(&s[..10]).unwrap();
        prop_assert!(lo >= dlo - 15 * 3_600_000 && hi <= dhi + 15 * 3_600_000);
    }

    #[test]
    fn number_range_never_panics(s in "\\PC{0,30}") {
        if let Some((v, lo, hi)) = number_range(&s) {
            prop_assert!(lo <= v && v <= hi && v.is_finite());
        }
    }

    #[test]
    fn number_range_of_decimals(s in "[+-]?[0-9]{1,20}(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?") {
        if let Some((v, lo, hi)) = number_range(&s) {
            prop_assert!(lo <= v && v <= hi, "{s}: {lo} {v} {hi}");
        }
    }
}
