//! The INSi operations on the reference registry, with the hard cases of identity matching. Runs on the
//! embedded store (the HTTP tests run the same operations on PostgreSQL too).

use socle_ins::nir::compose;
use socle_ins::{OID_DEMO, Official, Registry, Retrieved, Traits, Verified};

fn person(sex: u8, family: &str, given: &[&str], date: &str, place: &str, order: u16) -> Official {
    let y: u8 = date[2..4].parse().unwrap();
    let m: u8 = date[5..7].parse().unwrap();
    Official {
        matricule: compose(sex, y, m, place, order).unwrap(),
        system: OID_DEMO.into(),
        traits: Traits {
            family: family.into(),
            given: given.iter().map(|s| s.to_string()).collect(),
            birth_date: date.into(),
            gender: if sex % 2 == 1 { "male" } else { "female" }.into(),
            birth_place: Some(place.into()),
        },
        card: Some(format!("{:010}", order as u64 * 7919)),
    }
}

fn q(family: &str, given: &[&str], date: &str, gender: &str, place: Option<&str>) -> Traits {
    Traits {
        family: family.into(),
        given: given.iter().map(|s| s.to_string()).collect(),
        birth_date: date.into(),
        gender: gender.into(),
        birth_place: place.map(str::to_string),
    }
}

fn found(r: Retrieved) -> Option<String> {
    match r {
        Retrieved::Found(o) => Some(o.matricule),
        _ => None,
    }
}

#[test]
fn retrieve_and_verify_hard_cases() {
    let dir = tempfile::tempdir().unwrap();
    let store = socle_store::open(None, dir.path()).unwrap();
    let reg = Registry::open(store).unwrap();
    let lucie = person(
        2,
        "LEFEVRE-DUPONT",
        &["LUCIE", "ANNE-MARIE"],
        "1985-05-17",
        "78006",
        19,
    );
    // Twins: same name, date, place; other first names; consecutive order numbers.
    let twin_a = person(1, "MARTIN", &["LUCAS"], "2001-03-04", "75115", 101);
    let twin_b = person(1, "MARTIN", &["NATHAN", "PAUL"], "2001-03-04", "75115", 102);
    // Perfect homonyms (same birth name, first name, date, sex) born in different places.
    let homo_a = person(1, "BERNARD", &["JEAN"], "1950-01-01", "69381", 7);
    let homo_b = person(1, "BERNARD", &["JEAN"], "1950-01-01", "13201", 8);
    // Corsica, overseas, born abroad.
    let corse = person(2, "ORSONI", &["MARIE-FRANCOISE"], "1972-08-30", "2A004", 3);
    let dom = person(1, "HOARAU", &["JEAN-PIERRE"], "1968-12-01", "97411", 44);
    let abroad = person(2, "BENALI", &["SAMIRA"], "1990-06-15", "99350", 301);
    // A birth name changed by decree: the registry holds the new one.
    let renamed = person(1, "DURAND", &["PAUL"], "1979-11-11", "33063", 55);
    let all = [
        &lucie, &twin_a, &twin_b, &homo_a, &homo_b, &corse, &dom, &abroad, &renamed,
    ];
    reg.load(&all.iter().map(|o| (*o).clone()).collect::<Vec<_>>())
        .unwrap();
    // Loading again replaces, never duplicates.
    reg.load(std::slice::from_ref(&lucie)).unwrap();
    assert_eq!(reg.count().unwrap(), 9);

    // Accents, case, hyphens and spaces do not matter; one first name or the whole list.
    let r = reg
        .retrieve(&q(
            "Lefèvre Dupont",
            &["lucie"],
            "1985-05-17",
            "female",
            None,
        ))
        .unwrap();
    assert_eq!(found(r), Some(lucie.matricule.clone()));
    let r = reg
        .retrieve(&q(
            "LEFEVRE-DUPONT",
            &["Lucie", "Anne Marie"],
            "1985-05-17",
            "female",
            Some("78006"),
        ))
        .unwrap();
    assert_eq!(found(r), Some(lucie.matricule.clone()));
    // Second first name alone, other spelling, wrong sex, wrong date, wrong place: not found.
    for bad in [
        q(
            "LEFEVRE-DUPONT",
            &["ANNE-MARIE"],
            "1985-05-17",
            "female",
            None,
        ),
        q("LEFEBVRE-DUPONT", &["LUCIE"], "1985-05-17", "female", None),
        q("LEFEVRE-DUPONT", &["LUCIE"], "1985-05-17", "male", None),
        q("LEFEVRE-DUPONT", &["LUCIE"], "1985-05-18", "female", None),
        q(
            "LEFEVRE-DUPONT",
            &["LUCIE"],
            "1985-05-17",
            "female",
            Some("78007"),
        ),
        q("DUPONT", &["LUCIE"], "1985-05-17", "female", None),
    ] {
        assert_eq!(reg.retrieve(&bad).unwrap(), Retrieved::NotFound, "{bad:?}");
    }
    // Twins are told apart by their first names.
    let r = reg
        .retrieve(&q("Martin", &["Nathan"], "2001-03-04", "male", None))
        .unwrap();
    assert_eq!(found(r), Some(twin_b.matricule.clone()));
    // Homonyms: several without the birth place, one with it.
    assert_eq!(
        reg.retrieve(&q("BERNARD", &["JEAN"], "1950-01-01", "male", None))
            .unwrap(),
        Retrieved::Multiple(2)
    );
    let r = reg
        .retrieve(&q(
            "BERNARD",
            &["JEAN"],
            "1950-01-01",
            "male",
            Some("13201"),
        ))
        .unwrap();
    assert_eq!(found(r), Some(homo_b.matricule.clone()));
    // Corsica, overseas, abroad.
    let r = reg
        .retrieve(&q(
            "Orsoni",
            &["Marie Françoise"],
            "1972-08-30",
            "female",
            Some("2a004"),
        ))
        .unwrap();
    assert_eq!(found(r), Some(corse.matricule.clone()));
    let r = reg
        .retrieve(&q(
            "Hoarau",
            &["Jean-Pierre"],
            "1968-12-01",
            "male",
            Some("97411"),
        ))
        .unwrap();
    assert_eq!(found(r), Some(dom.matricule.clone()));
    let r = reg
        .retrieve(&q(
            "Benali",
            &["Samira"],
            "1990-06-15",
            "female",
            Some("99350"),
        ))
        .unwrap();
    assert_eq!(found(r), Some(abroad.matricule.clone()));
    // The old name no longer matches.
    assert_eq!(
        reg.retrieve(&q("DUPUIS", &["PAUL"], "1979-11-11", "male", None))
            .unwrap(),
        Retrieved::NotFound
    );

    // Verify: match, or the names of the differing traits.
    let v = reg
        .verify(
            &lucie.matricule,
            &q(
                "lefevre dupont",
                &["LUCIE"],
                "1985-05-17",
                "female",
                Some("78006"),
            ),
        )
        .unwrap();
    assert!(matches!(v, Verified::Match(_)), "{v:?}");
    let v = reg
        .verify(
            &renamed.matricule,
            &q("DUPUIS", &["PAUL"], "1979-11-12", "male", None),
        )
        .unwrap();
    assert_eq!(v, Verified::Mismatch(vec!["family", "birthdate"]));
    let v = reg
        .verify(
            &twin_a.matricule,
            &q("MARTIN", &["NATHAN"], "2001-03-04", "male", Some("75115")),
        )
        .unwrap();
    assert_eq!(
        v,
        Verified::Mismatch(vec!["given"]),
        "a twin's INS with the other twin's traits"
    );
    let unknown = compose(1, 50, 1, "69381", 9).unwrap();
    let v = reg
        .verify(
            &unknown,
            &q("BERNARD", &["JEAN"], "1950-01-01", "male", None),
        )
        .unwrap();
    assert_eq!(v, Verified::Mismatch(vec!["ins"]));

    // Carte Vitale.
    let card = lucie.card.clone().unwrap();
    assert_eq!(
        found(reg.retrieve_by_card(&card, None, &[]).unwrap()),
        Some(lucie.matricule.clone())
    );
    assert_eq!(
        reg.retrieve_by_card(&card, Some("2000-01-01"), &[])
            .unwrap(),
        Retrieved::NotFound
    );
    assert_eq!(
        reg.retrieve_by_card("0000000000", None, &[]).unwrap(),
        Retrieved::NotFound
    );
    assert!(reg.retrieve_by_card("abc def", None, &[]).is_err());

    // Bad queries are refused with the faulty trait named.
    for (bad, needle) in [
        (q("", &["A"], "1985-05-17", "female", None), "family"),
        (q("X", &[], "1985-05-17", "female", None), "given"),
        (q("X", &["A"], "1985-02-30", "female", None), "birthdate"),
        (q("X", &["A"], "17/05/1985", "female", None), "birthdate"),
        (q("X", &["A"], "1985-05-17", "F", None), "gender"),
        (
            q("X", &["A"], "1985-05-17", "female", Some("99999")),
            "birthplace",
        ),
    ] {
        let e = reg.retrieve(&bad).unwrap_err().to_string();
        assert!(e.contains(needle), "{bad:?}: {e}");
    }
    let e = reg
        .verify("123", &q("X", &["A"], "1985-05-17", "female", None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("15 caractères"), "{e}");
    let mut wrong_key = lucie.matricule.clone();
    wrong_key.replace_range(13..15, "00");
    let e = reg
        .verify(&wrong_key, &q("X", &["A"], "1985-05-17", "female", None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("clé"), "{e}");
}

#[test]
fn registry_import_format_round_trips_and_checks_consistency() {
    let mut g = socle_ins::generate::PersonGenerator::new(3);
    for _ in 0..200 {
        let p = g.next_person();
        let o = Official::from_fhir(&p.to_fhir()).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert_eq!(o.matricule, p.matricule);
        assert_eq!(o.traits.given, p.given);
        assert_eq!(o.card.as_deref(), Some(p.card.as_str()));
        let back = Official::from_fhir(&o.to_fhir()).unwrap();
        assert_eq!(back.traits, o.traits);
    }
    // A matricule that contradicts the traits is refused, naming them.
    let p = g.next_person();
    let mut v = p.to_fhir();
    v["gender"] = if p.gender == "male" { "female" } else { "male" }.into();
    let e = Official::from_fhir(&v).unwrap_err().to_string();
    assert!(e.contains("gender"), "{e}");
    let mut v = p.to_fhir();
    v["birthDate"] = "1900-01-01".into();
    assert!(
        Official::from_fhir(&v)
            .unwrap_err()
            .to_string()
            .contains("birthdate")
    );
    let mut v = p.to_fhir();
    let mut bad_key = p.matricule.clone();
    bad_key.replace_range(
        13..15,
        if &p.matricule[13..15] == "01" {
            "02"
        } else {
            "01"
        },
    );
    v["identifier"][0]["value"] = bad_key.into();
    assert!(
        Official::from_fhir(&v)
            .unwrap_err()
            .to_string()
            .contains("clé")
    );
    let mut v = p.to_fhir();
    v["identifier"] = serde_json::json!([]);
    assert!(
        Official::from_fhir(&v)
            .unwrap_err()
            .to_string()
            .contains("INS")
    );
}

#[test]
fn bulk_load_builds_indexes_once_and_refuses_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = socle_store::open(None, dir.path()).unwrap();
    let reg = Registry::open(store).unwrap();
    let mut g = socle_ins::generate::PersonGenerator::new(11);
    let persons: Vec<Official> = (0..5000).map(|_| g.next_person().to_official()).collect();
    let mut batches = persons
        .chunks(1000)
        .map(|c| c.to_vec())
        .collect::<Vec<_>>()
        .into_iter();
    let mut seen = 0;
    let n = reg
        .bulk_load(&mut || batches.next().unwrap_or_default(), &mut |d| {
            seen = d
        })
        .unwrap();
    assert_eq!((n, seen, reg.count().unwrap()), (5000, 5000, 5000));
    for o in persons.iter().step_by(97) {
        assert!(matches!(
            reg.verify(&o.matricule, &o.traits).unwrap(),
            Verified::Match(_)
        ));
        let card = o.card.clone().unwrap();
        assert_eq!(
            found(reg.retrieve_by_card(&card, None, &[]).unwrap()),
            Some(o.matricule.clone())
        );
    }
    // Into a non-empty registry: upserts, no duplicates.
    let mut again = vec![persons[..10].to_vec()].into_iter();
    reg.bulk_load(&mut || again.next().unwrap_or_default(), &mut |_| {})
        .unwrap();
    assert_eq!(reg.count().unwrap(), 5000);
    // A duplicate in a bulk load into an empty registry is refused by the final unique index.
    let dir2 = tempfile::tempdir().unwrap();
    let reg2 = Registry::open(socle_store::open(None, dir2.path()).unwrap()).unwrap();
    let mut dup = vec![persons[..3].to_vec(), vec![persons[0].clone()]].into_iter();
    let e = reg2
        .bulk_load(&mut || dup.next().unwrap_or_default(), &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains(&persons[0].matricule), "{e}");
    // Nothing loaded, and the registry still works: indexes in place, a reopen and a clean load succeed.
    assert_eq!(reg2.count().unwrap(), 0);
    drop(reg2);
    let reg2 = Registry::open(socle_store::open(None, dir2.path()).unwrap()).unwrap();
    let mut ok = vec![persons[..3].to_vec()].into_iter();
    assert_eq!(
        reg2.bulk_load(&mut || ok.next().unwrap_or_default(), &mut |_| {})
            .unwrap(),
        3
    );
    let mut again = vec![vec![persons[0].clone()]].into_iter();
    reg2.bulk_load(&mut || again.next().unwrap_or_default(), &mut |_| {})
        .unwrap();
    assert_eq!(reg2.count().unwrap(), 3);
}
