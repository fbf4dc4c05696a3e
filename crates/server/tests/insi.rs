//! The INSi teleservice over HTTP, on both backends: `socle generate` and `socle import --registry` fill the
//! reference registry; `$ins-retrieve` and `$ins-verify` answer from it; bad input is refused clearly.

mod common;

use common::{Server, backends};
use serde_json::{Value, json};
use socle_ins::traits::normalize_name;
use std::collections::HashMap;

fn params(p: &Value, with_place: bool, ins: Option<&str>) -> Value {
    let name = &p["name"][0];
    let mut v = vec![
        // Lowercase and with the first first name only: the matching rules must cope.
        json!({"name": "family", "valueString": name["family"].as_str().unwrap().to_lowercase()}),
        json!({"name": "given", "valueString": name["given"][0]}),
        json!({"name": "birthdate", "valueDate": p["birthDate"]}),
        json!({"name": "gender", "valueCode": p["gender"]}),
    ];
    if with_place {
        let code = &p["extension"][0]["valueAddress"]["extension"][0]["valueCoding"]["code"];
        v.push(json!({"name": "birthplace", "valueString": code}));
    }
    if let Some(i) = ins {
        v.push(json!({"name": "ins", "valueString": i}));
    }
    json!({"resourceType": "Parameters", "parameter": v})
}

fn out(r: &common::Resp, name: &str) -> Vec<Value> {
    r.json["parameter"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["name"] == name)
                .map(|p| {
                    p.get("valueCode")
                        .or(p.get("resource"))
                        .cloned()
                        .unwrap_or(Value::Null)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn key(p: &Value, with_place: bool) -> String {
    let name = &p["name"][0];
    format!(
        "{}|{}|{}|{}|{}",
        normalize_name(name["family"].as_str().unwrap()),
        normalize_name(name["given"][0].as_str().unwrap()),
        p["birthDate"],
        p["gender"],
        if with_place {
            p["extension"][0]["valueAddress"]["extension"][0]["valueCoding"]["code"].to_string()
        } else {
            String::new()
        }
    )
}

#[test]
fn insi_retrieve_and_verify_over_http() {
    for b in backends() {
        let s = Server::start(&b);
        let dir = tempfile::tempdir().unwrap();
        // Generate as NDJSON, spoil a few lines, import: bad lines are reported by number, the rest loads.
        let o = s.cli(&[
            "generate",
            "--persons",
            "3000",
            "--seed",
            "5",
            "--out",
            dir.path().to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(dir.path().join("persons.ndjson")).unwrap();
        let persons: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(persons.len(), 3000);
        let mut bad_key = persons[0].clone();
        let m = bad_key["identifier"][0]["value"]
            .as_str()
            .unwrap()
            .to_string();
        let k = if &m[13..] == "01" { "02" } else { "01" };
        bad_key["identifier"][0]["value"] = json!(format!("{}{k}", &m[..13]));
        let mut bad_place = persons[1].clone();
        bad_place["extension"][0]["valueAddress"]["extension"][0]["valueCoding"]["code"] =
            json!("99999");
        let spoiled = format!(
            "{}\n{{not json\n{}\n{}\n",
            text.trim_end(),
            bad_key,
            bad_place
        );
        let file = dir.path().join("registry.ndjson");
        std::fs::write(&file, spoiled).unwrap();
        let o = s.cli(&["import", "--registry", file.to_str().unwrap()]);
        let report = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{report}");
        assert!(report.contains("3000 identité(s) chargée(s)"), "{report}");
        assert!(report.contains(":3001 : JSON invalide"), "{report}");
        assert!(report.contains(":3002 : matricule INS : clé"), "{report}");
        assert!(report.contains(":3003 : birthplace"), "{report}");

        // Expected answers, computed from the data with the documented rules.
        let mut by_traits: HashMap<String, usize> = HashMap::new();
        let mut by_place: HashMap<String, usize> = HashMap::new();
        for p in &persons {
            *by_traits.entry(key(p, false)).or_default() += 1;
            *by_place.entry(key(p, true)).or_default() += 1;
        }
        let (mut found, mut multiple) = (0, 0);
        for p in persons.iter().step_by(37) {
            let matricule = p["identifier"][0]["value"].as_str().unwrap();
            for with_place in [false, true] {
                let r = s.post("Patient/$ins-retrieve", &params(p, with_place, None));
                r.expect(200);
                let n = if with_place {
                    by_place[&key(p, true)]
                } else {
                    by_traits[&key(p, false)]
                };
                let result = out(&r, "result");
                if n == 1 {
                    assert_eq!(result, vec![json!("found")], "{}", r.text);
                    let got = &out(&r, "patient")[0];
                    assert_eq!(got["identifier"][0]["value"], matricule);
                    assert_eq!(got["name"][0], p["name"][0], "official traits returned");
                    found += 1;
                } else {
                    assert_eq!(result, vec![json!("multiple")], "{}", r.text);
                    assert!(
                        out(&r, "patient").is_empty(),
                        "no identity when several match"
                    );
                    multiple += 1;
                }
            }
            let r = s.post("Patient/$ins-verify", &params(p, true, Some(matricule)));
            assert_eq!(out(&r, "result"), vec![json!("match")], "{}", r.text);
            let mut wrong = p.clone();
            wrong["gender"] = json!(if p["gender"] == "male" {
                "female"
            } else {
                "male"
            });
            wrong["birthDate"] = json!("1901-01-01");
            let r = s.post(
                "Patient/$ins-verify",
                &params(&wrong, false, Some(matricule)),
            );
            assert_eq!(out(&r, "result"), vec![json!("mismatch")], "{}", r.text);
            assert_eq!(
                out(&r, "mismatch"),
                vec![json!("birthdate"), json!("gender")]
            );
        }
        assert!(found > 100, "found {found}, multiple {multiple}");
        // Not found.
        let mut nobody = persons[5].clone();
        nobody["name"][0]["family"] = json!("ZZZ-INCONNU");
        let r = s.post("Patient/$ins-retrieve", &params(&nobody, false, None));
        assert_eq!(out(&r, "result"), vec![json!("not-found")], "{}", r.text);
        // Carte Vitale.
        let card = persons[7]["identifier"][1]["value"].as_str().unwrap();
        let r = s.post(
            "Patient/$ins-retrieve",
            &json!({"resourceType": "Parameters", "parameter": [{"name": "carte-vitale", "valueString": card}]}),
        );
        assert_eq!(
            out(&r, "patient")[0]["identifier"][0]["value"],
            persons[7]["identifier"][0]["value"]
        );

        // Bad input: 400 with the faulty part named.
        let p = &persons[3];
        let matricule = p["identifier"][0]["value"].as_str().unwrap();
        let mut bad_ins = matricule.to_string();
        bad_ins.replace_range(3..5, "13");
        for (path, body, needle) in [
            (
                "Patient/$ins-retrieve",
                json!({"resourceType": "Patient"}),
                "Parameters",
            ),
            (
                "Patient/$ins-retrieve",
                json!({"resourceType": "Parameters", "parameter": [{"name": "color", "valueString": "x"}]}),
                "inconnu",
            ),
            (
                "Patient/$ins-retrieve",
                json!({"resourceType": "Parameters", "parameter": [{"name": "family"}]}),
                "sans valeur",
            ),
            (
                "Patient/$ins-retrieve",
                params(p, false, Some(matricule)),
                "$ins-verify",
            ),
            ("Patient/$ins-verify", params(p, false, None), "ins"),
            (
                "Patient/$ins-verify",
                params(p, false, Some(&bad_ins)),
                "mois",
            ),
            (
                "Patient/$ins-verify",
                params(p, false, Some("12")),
                "15 caractères",
            ),
        ] {
            let r = s.post(path, &body);
            assert_eq!(r.status, 400, "{path} {body}: {}", r.text);
            assert!(
                r.diagnostics().contains(needle),
                "{path}: {} should contain {needle}",
                r.diagnostics()
            );
        }
        let mut q = params(p, false, None);
        q["parameter"][2]["valueDate"] = json!("1990-02-30");
        let r = s.post("Patient/$ins-retrieve", &q);
        assert_eq!(r.status, 400);
        assert!(r.diagnostics().contains("birthdate"));

        // Every call is in the audit trail; the operations are declared.
        let trail = s.get("$audit-trail?_count=1000");
        let actions: Vec<&str> = trail.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["resource"]["subtype"][0]["code"].as_str())
            .collect();
        assert!(
            actions.iter().filter(|a| **a == "ins-retrieve").count() > 100,
            "{actions:?}"
        );
        assert!(actions.contains(&"ins-verify"));
        let cs = s.get("metadata");
        let patient = cs.json["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Patient")
            .unwrap()
            .clone();
        let ops: Vec<&str> = patient["operation"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["name"].as_str())
            .collect();
        assert_eq!(
            ops,
            [
                "everything",
                "ins-retrieve",
                "ins-verify",
                "duplicates",
                "merge"
            ]
        );
        // Every operation the CapabilityStatement names has its definition served.
        for op in patient["operation"].as_array().unwrap() {
            let name = op["name"].as_str().unwrap();
            let od = s.get(&format!("OperationDefinition/{name}"));
            od.expect(200);
            assert_eq!(od.json["url"], op["definition"], "{name}");
            assert_eq!(od.json["code"], name);
        }
    }
}
