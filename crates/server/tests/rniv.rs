//! Identity vigilance over HTTP, on both backends: statuses and their evidence, INSi calls for a local
//! patient (refused for doubtful or fictitious identities), duplicates and homonyms, merging two records.

mod common;

use common::{Server, backends, insi_date, local, registry};
use serde_json::{Value, json};

fn document() -> Value {
    json!({"url": "validationMode", "valueCoding": {"code": "CN"}})
}
fn attr(code: &str) -> Value {
    json!({"url": "identityAttribute", "valueCode": code})
}

fn out(r: &common::Resp, name: &str) -> Vec<Value> {
    r.json["parameter"]
        .as_array()
        .map(|a| a.iter().filter(|p| p["name"] == name).cloned().collect())
        .unwrap_or_default()
}

#[test]
fn identity_vigilance_over_http() {
    for b in backends() {
        let s = Server::start(&b);
        let people = registry(&s, 300, 9);
        let (r, other) = (&people[10], &people[11]);
        let ins = r["identifier"][0]["value"].as_str().unwrap();

        // A provisional identity: accepted; it may not hold an INS.
        s.put("Patient/a", &local("a", r, "PROV", &[], None))
            .expect(201);
        let e = s.put("Patient/a", &local("a", r, "PROV", &[], Some(ins)));
        assert_eq!(e.status, 422, "{}", e.text);
        assert!(e.diagnostics().contains("RECUP"), "{}", e.diagnostics());
        // INSi for the local patient: its traits are used.
        let q = json!({"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"reference": "Patient/a"}}]});
        let found = s.post("Patient/$ins-retrieve", &q);
        assert_eq!(
            out(&found, "result")[0]["valueCode"],
            "found",
            "{}",
            found.text
        );
        assert_eq!(
            out(&found, "patient")[0]["resource"]["identifier"][0]["value"],
            ins
        );
        // RECUP: needs the INSi date and an INS that INSi verifies with the patient's traits.
        let e = s.put("Patient/a", &local("a", r, "RECUP", &[], Some(ins)));
        assert!(
            e.status == 422 && e.diagnostics().contains("insiDate"),
            "{}",
            e.text
        );
        let other_ins = other["identifier"][0]["value"].as_str().unwrap();
        let e = s.put(
            "Patient/a",
            &local("a", r, "RECUP", &[insi_date()], Some(other_ins)),
        );
        assert!(
            e.status == 422 && e.diagnostics().contains("ne correspond pas"),
            "{}",
            e.text
        );
        s.put(
            "Patient/a",
            &local("a", r, "RECUP", &[insi_date()], Some(ins)),
        )
        .expect(200);
        let v = s.post("Patient/$ins-verify", &q);
        assert_eq!(out(&v, "result")[0]["valueCode"], "match", "{}", v.text);
        // QUAL = RECUP + a checked identity document.
        let e = s.put(
            "Patient/a",
            &local("a", r, "QUAL", &[insi_date()], Some(ins)),
        );
        assert!(
            e.status == 422 && e.diagnostics().contains("pièce"),
            "{}",
            e.text
        );
        s.put(
            "Patient/a",
            &local("a", r, "QUAL", &[insi_date(), document()], Some(ins)),
        )
        .expect(200);
        // VALI: a document; a doubtful identity stays PROV; DOUT and FICT never together.
        s.put("Patient/v", &local("v", other, "VALI", &[document()], None))
            .expect(201);
        let e = s.put(
            "Patient/d",
            &local("d", other, "VALI", &[document(), attr("DOUT")], None),
        );
        assert!(
            e.status == 422 && e.diagnostics().contains("PROV"),
            "{}",
            e.text
        );
        let e = s.put(
            "Patient/d",
            &local("d", other, "PROV", &[attr("DOUT"), attr("FICT")], None),
        );
        assert!(
            e.status == 422 && e.diagnostics().contains("DOUT et FICT"),
            "{}",
            e.text
        );
        // INSi refuses doubtful and fictitious identities.
        s.put(
            "Patient/f",
            &local("f", other, "PROV", &[attr("FICT")], None),
        )
        .expect(201);
        let e = s.post("Patient/$ins-retrieve", &json!({"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"reference": "Patient/f"}}]}));
        assert!(
            e.status == 422 && e.diagnostics().contains("fictive"),
            "{}",
            e.text
        );
        s.put(
            "Patient/dt",
            &local("dt", other, "PROV", &[attr("DOUT")], None),
        )
        .expect(201);
        for op in ["$ins-retrieve", "$ins-verify"] {
            let e = s.post(&format!("Patient/{op}"), &json!({"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"reference": "Patient/dt"}}]}));
            assert!(
                e.status == 422 && e.diagnostics().contains("douteuse"),
                "{op} : {}",
                e.text
            );
        }
        // Nothing half-written: Patient/a is still QUAL at its last version.
        let a = s.get("Patient/a");
        assert_eq!(a.json["meta"]["versionId"], "3");

        // Duplicates (same five traits) and homonyms (born elsewhere).
        s.put("Patient/c", &local("c", r, "PROV", &[], None))
            .expect(201);
        let mut h = local("h", r, "PROV", &[], None);
        h["extension"][1]["valueAddress"]["extension"][0]["valueCoding"]["code"] = json!(
            if r["extension"][0]["valueAddress"]["extension"][0]["valueCoding"]["code"] == "75115" {
                "75116"
            } else {
                "75115"
            }
        );
        s.put("Patient/h", &h).expect(201);
        let d = s.get("Patient/a/$duplicates");
        d.expect(200);
        let refs = |name: &str| -> Vec<String> {
            out(&d, name)
                .iter()
                .map(|p| {
                    p["valueReference"]["reference"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(refs("duplicate"), ["Patient/c"], "{}", d.text);
        assert_eq!(refs("homonym"), ["Patient/h"], "{}", d.text);

        // Merge c into a: c inactive and replaced-by a, a replaces c; once only.
        let m = json!({"resourceType": "Parameters", "parameter": [
            {"name": "source-patient", "valueReference": {"reference": "Patient/c"}},
            {"name": "target-patient", "valueReference": {"reference": "Patient/a"}}]});
        let res = s.post("Patient/$merge", &m);
        res.expect(200);
        let c = s.get("Patient/c").json;
        assert_eq!(c["active"], false);
        assert_eq!(c["link"][0]["type"], "replaced-by");
        assert_eq!(c["link"][0]["other"]["reference"], "Patient/a");
        let a = s.get("Patient/a").json;
        assert_eq!(a["link"][0]["type"], "replaces");
        // The merged record is a resolved duplicate: no longer listed.
        let d = s.get("Patient/a/$duplicates");
        d.expect(200);
        assert!(out(&d, "duplicate").is_empty(), "{}", d.text);
        assert_eq!(out(&d, "homonym").len(), 1, "{}", d.text);
        assert!(out(&d, "incomplete").is_empty(), "{}", d.text);
        assert_eq!(s.post("Patient/$merge", &m).status, 409);
        let bad = json!({"resourceType": "Parameters", "parameter": [{"name": "source-patient", "valueReference": {"reference": "Patient/c"}}]});
        assert_eq!(s.post("Patient/$merge", &bad).status, 400);
        let same = json!({"resourceType": "Parameters", "parameter": [
            {"name": "source-patient", "valueReference": {"reference": "Patient/a"}},
            {"name": "target-patient", "valueReference": {"reference": "Patient/a"}}]});
        assert_eq!(s.post("Patient/$merge", &same).status, 400);
        let missing = json!({"resourceType": "Parameters", "parameter": [
            {"name": "source-patient", "valueReference": {"reference": "Patient/nobody"}},
            {"name": "target-patient", "valueReference": {"reference": "Patient/a"}}]});
        assert_eq!(s.post("Patient/$merge", &missing).status, 404);
        assert_eq!(
            s.post("Patient/$merge", &json!({"resourceType": "Patient"}))
                .status,
            400
        );
        assert_eq!(s.get("Patient/nobody/$duplicates").status, 404);
        // The failed merges changed nothing.
        assert_eq!(
            s.get("Patient/a").json["link"].as_array().map(Vec::len),
            Some(1)
        );
        // The merge is in the audit trail.
        let trail = s.get("$audit-trail?_count=200");
        assert!(
            trail.text.contains("\"merge\""),
            "merge absent of the audit trail"
        );
    }
}
