//! Indexing again after the search parameters changed (a new release): `socle reindex` and the background pass
//! of `socle serve`, on both backends. The test makes a store "from an older release" by removing the rows of
//! one parameter and changing the digest its type was recorded with, as an older binary would have left them.

mod common;

use std::time::{Duration, Instant};

use common::{Server, backends, printed};
use serde_json::{Value, json};
use socle_store::SqlValue;

const PATIENTS: usize = 1_200;

/// The store as an older release would have left it: `Patient.gender` never indexed, another digest recorded.
fn age_the_index(s: &Server) {
    let st = socle_store::open(s.database.as_deref(), s.data.path()).expect("store");
    st.write(&mut |c| {
        c.execute(
            "DELETE FROM idx_token WHERE rtype = 'Patient' AND param = 'gender'",
            &[],
        )?;
        let n = c.execute(
            "UPDATE socle_meta SET value = ? WHERE name = 'index:Patient'",
            &[SqlValue::Int(42)],
        )?;
        assert_eq!(n, 1, "a new store records each type's digest");
        Ok(())
    })
    .expect("aging the index");
}

fn count(s: &Server, query: &str) -> i64 {
    let r = s.get(&format!("Patient?{query}&_summary=count"));
    r.expect(200);
    r.json["total"].as_i64().unwrap_or(-1)
}

#[test]
fn a_changed_parameter_indexes_what_was_written_before() {
    for b in backends() {
        let mut s = Server::start(&b);
        // Patients in bundles of 100 (more than one reindexing batch of 500), half of them female; one deleted.
        for k in 0..PATIENTS / 100 {
            let entries: Vec<Value> = (0..100)
                .map(|j| {
                    let i = k * 100 + j;
                    json!({"resource": {"resourceType": "Patient", "id": format!("p{i}"),
                        "gender": if i % 2 == 0 { "female" } else { "male" },
                        "name": [{"family": format!("Famille{i}")}]},
                        "request": {"method": "PUT", "url": format!("Patient/p{i}")}})
                })
                .collect();
            s.post(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
            )
            .expect(200);
        }
        s.post(
            "Observation",
            &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/p0"}}),
        )
        .expect(201);
        s.delete("Patient/p2").expect(204);
        let female = (PATIENTS / 2 - 1) as i64;
        assert_eq!(count(&s, "gender=female"), female, "{b:?}");
        let out = s.cli(&["reindex"]);
        assert!(out.status.success(), "{b:?} {}", printed(&out));
        assert!(
            printed(&out).contains("index à jour"),
            "{b:?} {}",
            printed(&out)
        );

        // An older release's store: the parameter finds nothing.
        s.kill();
        age_the_index(&s);
        s.restart();
        // The background pass of `serve` brings it back while the server answers.
        let t = Instant::now();
        while count(&s, "gender=female") != female {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{b:?}: index not rebuilt in the background ({} found)",
                count(&s, "gender=female")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(count(&s, "gender=male"), (PATIENTS / 2) as i64, "{b:?}");
        assert_eq!(count(&s, "family:exact=Famille7"), 1, "{b:?}");
        assert_eq!(
            count(&s, "_id=p2"),
            0,
            "{b:?}: a deleted resource stays deleted"
        );

        // The same by the command, server stopped: only the aged type is indexed again.
        s.kill();
        age_the_index(&s);
        let out = s.cli(&["reindex"]);
        let text = printed(&out);
        assert!(out.status.success(), "{b:?} {text}");
        assert!(
            text.contains(&format!("Patient : {} ressources", PATIENTS - 1)),
            "{b:?} {text}"
        );
        assert!(!text.contains("Observation"), "{b:?} {text}");
        let out = s.cli(&["reindex"]);
        assert!(
            printed(&out).contains("index à jour"),
            "{b:?} {}",
            printed(&out)
        );
        // Asked for explicitly, a type is indexed again whatever its state; an unknown type is refused.
        let out = s.cli(&["reindex", "--type", "Observation"]);
        assert!(
            printed(&out).contains("Observation : 1 ressources"),
            "{b:?} {}",
            printed(&out)
        );
        let out = s.cli(&["reindex", "--type", "Unicorn"]);
        assert_eq!(out.status.code(), Some(2), "{b:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("type de ressource inconnu"),
            "{b:?}"
        );
        s.restart();
        assert_eq!(count(&s, "gender=female"), female, "{b:?}");
        assert_eq!(count(&s, "gender=female&family:exact=Famille4"), 1, "{b:?}");
        let r = s.get("Observation?subject=Patient/p0");
        assert_eq!(r.ids().len(), 1, "{b:?}");
    }
}

/// A store's SQL, run while the server is stopped (or beside it).
fn sql(
    s: &Server,
    f: &mut dyn FnMut(&mut dyn socle_store::SqlConn) -> Result<(), socle_store::StoreError>,
) {
    let st = socle_store::open(s.database.as_deref(), s.data.path()).expect("store");
    st.write(f).expect("SQL de test");
}

fn pkeys(s: &Server, id: &str) -> Vec<String> {
    let st = socle_store::open(s.database.as_deref(), s.data.path()).expect("store");
    let mut keys = Vec::new();
    st.read(&mut |c| {
        keys.clear();
        for sql in [
            "SELECT pkey FROM resources WHERE id = ?",
            "SELECT pkey FROM resource_versions WHERE id = ? ORDER BY version",
            "SELECT DISTINCT pkey FROM idx_ref WHERE rid = (SELECT rid FROM resources WHERE id = ?)",
        ] {
            for r in c.query(sql, &[id.into()])? {
                if let Some(SqlValue::Text(k)) = r.into_iter().next() {
                    keys.push(k);
                }
            }
        }
        Ok(())
    })
    .expect("lecture des clés");
    keys
}

/// Definitions that place a type's resources in another compartment (an older release's, here: none) move
/// them, with their history, when indexed again.
#[test]
fn a_changed_compartment_moves_the_resource_and_its_history() {
    for b in backends() {
        let mut s = Server::start(&b);
        s.put(
            "Patient/pc",
            &json!({"resourceType": "Patient", "id": "pc", "name": [{"family": "Compartiment"}]}),
        )
        .expect(201);
        let obs = json!({"resourceType": "Observation", "id": "oc", "status": "final",
            "code": {"text": "poids"}, "subject": {"reference": "Patient/pc"}});
        s.put("Observation/oc", &obs).expect(201);
        let mut again = obs.clone();
        again["status"] = json!("amended");
        s.put("Observation/oc", &again).expect(200);
        assert_eq!(pkeys(&s, "oc"), ["pc", "pc", "pc", "pc"], "{b:?}");
        s.kill();
        // As an older release without Observation in the patient compartment would have written it.
        sql(&s, &mut |c| {
            for t in [
                "resources",
                "resource_versions",
                "idx_string",
                "idx_token",
                "idx_ref",
                "idx_date",
            ] {
                c.execute(
                    &format!("UPDATE {t} SET pkey = '' WHERE rtype = 'Observation'"),
                    &[],
                )?;
            }
            c.execute(
                "UPDATE socle_meta SET value = 42 WHERE name = 'index:Observation'",
                &[],
            )?;
            Ok(())
        });
        assert_eq!(pkeys(&s, "oc"), ["", "", "", ""], "{b:?}");
        let out = s.cli(&["reindex"]);
        let text = printed(&out);
        assert!(out.status.success(), "{b:?} {text}");
        assert!(text.contains("Observation : 1 ressources"), "{b:?} {text}");
        assert_eq!(pkeys(&s, "oc"), ["pc", "pc", "pc", "pc"], "{b:?}");
        s.restart();
        assert_eq!(s.get("Observation?patient=pc").ids(), ["oc"], "{b:?}");
        let r = s.get("Observation/oc/_history/1");
        r.expect(200);
        assert_eq!(r.json["status"], "final", "{b:?}");
        let r = s.get("Observation/oc/_history");
        r.expect(200);
        assert_eq!(r.json["entry"].as_array().map(Vec::len), Some(2), "{b:?}");
    }
}

/// One process indexes at a time: while another holds the lease, `socle reindex` refuses and a starting
/// server waits, then takes over once the lease lapses.
#[test]
fn one_process_indexes_at_a_time() {
    for b in backends() {
        let mut s = Server::start(&b);
        for i in 0..40 {
            s.put(
                &format!("Patient/l{i}"),
                &json!({"resourceType": "Patient", "id": format!("l{i}"),
                    "gender": if i % 2 == 0 { "female" } else { "male" }}),
            )
            .expect(201);
        }
        assert_eq!(count(&s, "gender=female"), 20, "{b:?}");
        s.kill();
        age_the_index(&s);
        let until = socle_store::now_ms() + 3_600_000;
        sql(&s, &mut |c| {
            c.execute(
                "INSERT INTO socle_meta (name, value) VALUES ('reindex:holder', 7), ('reindex:until', ?) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[SqlValue::Int(until)],
            )?;
            Ok(())
        });
        let out = s.cli(&["reindex"]);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{b:?} {text}");
        assert!(
            text.contains("une réindexation est en cours dans un autre processus"),
            "{b:?} {text}"
        );
        s.restart();
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            count(&s, "gender=female"),
            0,
            "{b:?}: indexed under another process's lease"
        );
        // The other process stops without giving the lease back: it lapses.
        sql(&s, &mut |c| {
            c.execute(
                "UPDATE socle_meta SET value = 0 WHERE name = 'reindex:until'",
                &[],
            )?;
            Ok(())
        });
        let t = Instant::now();
        while count(&s, "gender=female") != 20 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{b:?}: the waiting server did not take over"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Done and given back (just after the last batch): the command then finds nothing to do.
        let t = Instant::now();
        loop {
            let out = s.cli(&["reindex"]);
            if String::from_utf8_lossy(&out.stdout).contains("index à jour") {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{b:?}: lease not given back: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
