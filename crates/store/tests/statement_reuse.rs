//! Searches, histories, `$everything` and trail pages reuse their prepared statements on SQLite: run again with
//! other values, none is prepared again. A bound `LIMIT` or a bare bound `LIKE` pattern would make SQLite
//! prepare the statement again at each execution (it plans with those values); that was a third of a search's
//! time (session 32). Its own test binary: the counter is the process's.

use serde_json::json;
use socle_store::repo::HistoryScope;
use socle_store::{Repository, RequestContext, sqlite};

fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn repeated_queries_with_other_values_are_not_prepared_again() {
    let dir = tempfile::tempdir().expect("répertoire temporaire");
    let ctx = RequestContext {
        principal: "test".into(),
        client: None,
        base_url: "http://localhost/fhir".into(),
    };
    let store = socle_store::open(None, dir.path()).expect("ouverture");
    let repo = Repository::new(store);
    let families = ["Dupont", "Martin", "Bernard", "Durand"];
    for (i, family) in families.iter().enumerate() {
        let p = format!("p{i}");
        repo.update(
            &ctx,
            "Patient",
            &p,
            json!({"resourceType": "Patient", "id": p, "name": [{"family": family, "given": ["Anne"]}],
                   "birthDate": format!("198{i}-01-0{}", i + 1)}),
            None,
        )
        .expect("patient");
        for j in 0..3 {
            let o = format!("o{i}-{j}");
            repo.update(
                &ctx,
                "Observation",
                &o,
                json!({"resourceType": "Observation", "id": o, "status": "final",
                       "code": {"coding": [{"system": "http://loinc.org", "code": format!("{j}-{i}")}]},
                       "subject": {"reference": format!("Patient/{p}")},
                       "valueQuantity": {"value": i * 10 + j, "unit": "mg"}}),
                None,
            )
            .expect("observation");
        }
    }
    // Each query shape twice over with different values (and page sizes) after a first round that fills the
    // statement cache; the count must not move during the second and third rounds.
    let round = |k: usize| {
        let i = k % families.len();
        let p = format!("p{i}");
        let count = (2 + k % 3).to_string();
        let searches: Vec<(&str, Vec<(String, String)>)> = vec![
            (
                "Observation",
                params(&[
                    ("patient", &format!("Patient/{p}")),
                    ("code", &format!("http://loinc.org|1-{i}")),
                ]),
            ),
            (
                "Patient",
                params(&[("family", &families[i][..3]), ("_count", &count)]),
            ),
            (
                "Patient",
                params(&[("family:contains", &families[i][1..4])]),
            ),
            (
                "Patient",
                params(&[("name:contains", &families[i][2..4]), ("_count", &count)]),
            ),
            (
                "Observation",
                params(&[("_sort", "-value-quantity"), ("_count", &count)]),
            ),
            (
                "Observation",
                params(&[
                    ("code", &format!("http://loinc.org|{}-{i}", k % 3)),
                    ("_count", &count),
                ]),
            ),
            (
                "Observation",
                params(&[("subject:Patient.family", families[i])]),
            ),
        ];
        for (rtype, ps) in &searches {
            let page = repo.search(&ctx, rtype, ps, true).expect("recherche");
            assert!(
                !page.matches.is_empty(),
                "{rtype}?{ps:?} ne trouve rien : la requête ne mesure rien"
            );
        }
        repo.history(
            &ctx,
            HistoryScope::Type("Observation"),
            &params(&[("_count", &count)]),
        )
        .expect("historique");
        repo.everything(
            &ctx,
            &p,
            None,
            None,
            2 + (k % 3) as i64,
            None,
            None,
            None,
            None,
        )
        .expect("$everything");
        repo.audit_events(Some(&p), 2 + (k % 3) as i64)
            .expect("traces du patient");
        repo.audit_events(None, 3 + (k % 3) as i64).expect("traces");
    };
    for k in 0..3 {
        round(k);
    }
    let before = sqlite::reprepares();
    for k in 3..9 {
        round(k);
    }
    assert_eq!(
        sqlite::reprepares() - before,
        0,
        "des requêtes ont été préparées de nouveau à leur exécution"
    );
}
