//! Property tests of the matricule INS parser: every well-formed number parses, any single changed digit is
//! refused, and no input makes it panic.

use proptest::prelude::*;
use socle_ins::nir::{Nir, compose};

/// A valid birth place code of any layout: metropolitan, Corsica, overseas, born abroad.
fn place() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u8..=95, 1u16..=999)
            .prop_filter("20 is old Corsica", |(d, _)| *d != 20)
            .prop_map(|(d, c)| format!("{d:02}{c:03}")),
        (prop_oneof![Just("2A"), Just("2B")], 1u16..=999).prop_map(|(d, c)| format!("{d}{c:03}")),
        (1u8..=8, 1u8..=99).prop_map(|(d, c)| format!("97{d}{c:02}")),
        (1u16..=999).prop_map(|c| format!("99{c:03}")),
    ]
}

fn month() -> impl Strategy<Value = u8> {
    prop_oneof![1u8..=12, Just(20u8), 30u8..=42, 50u8..=99]
}

fn valid() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(1u8), Just(2), Just(3), Just(4), Just(7), Just(8)],
        0u8..=99,
        month(),
        place(),
        1u16..=999,
    )
        .prop_map(|(s, y, m, p, o)| compose(s, y, m, &p, o).expect("composable"))
}

proptest! {
    #[test]
    fn valid_numbers_parse(n in valid()) {
        let nir = Nir::parse(&n).map_err(|e| TestCaseError::fail(format!("{n}: {e}")))?;
        prop_assert_eq!(nir.as_str(), n.as_str());
        prop_assert_eq!(nir.birth_place(), &n[5..10]);
    }

    #[test]
    fn any_changed_digit_is_refused(n in valid(), pos in 0usize..15, delta in 1u8..=9) {
        let b = n.as_bytes();
        prop_assume!(b[pos].is_ascii_digit());
        let d = (b[pos] - b'0' + delta) % 10;
        let mut changed = n.clone().into_bytes();
        changed[pos] = b'0' + d;
        let changed = String::from_utf8(changed).unwrap();
        prop_assert!(Nir::parse(&changed).is_err(), "{} accepted after changing position {}", changed, pos + 1);
    }

    #[test]
    fn spaces_and_case_do_not_matter(n in valid(), cut in 1usize..14) {
        let spaced = format!("{} {}", &n[..cut], &n[cut..]).to_lowercase();
        prop_assert_eq!(Nir::parse(&spaced).map(|x| x.to_string()), Ok(n));
    }

    #[test]
    fn never_panics(s in "\\PC{0,40}") {
        let _ = Nir::parse(&s);
    }

    #[test]
    fn never_panics_on_near_numbers(s in "[0-9AB ]{10,20}") {
        let _ = Nir::parse(&s);
    }
}

proptest! {
    /// The trait checks and name rules accept or refuse anything without panicking.
    #[test]
    fn traits_never_panic(family in "\\PC{0,30}", given in "\\PC{0,20}", date in "\\PC{0,12}", place in "\\PC{0,6}") {
        let t = socle_ins::Traits {
            family: family.clone(),
            given: vec![given.clone()],
            birth_date: date.clone(),
            gender: "female".into(),
            birth_place: Some(place.clone()),
        };
        let _ = socle_ins::registry::check_query(&t);
        let _ = socle_ins::registry::valid_date(&date);
        let _ = socle_ins::traits::official_name(&family);
        let _ = socle_ins::traits::differences(&t, &t);
        let v = serde_json::json!({"resourceType": "Patient", "identifier": [{"system": socle_ins::OID_NIR, "value": family}],
            "name": [{"family": given, "given": [date]}], "birthDate": place, "gender": "male"});
        let _ = socle_ins::Official::from_fhir(&v);
        let _ = socle_ins::rniv::check(&v, None);
    }
}
