//! The audit trail: one record per interaction, readable as AuditEvent, hash-chained so that `socle audit
//! verify` detects any altered, inserted or deleted record.

mod common;

use std::process::Command;

use common::{Backend, Server, backends};
use serde_json::json;

fn verify(s: &Server) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_socle"));
    cmd.arg("audit")
        .arg("verify")
        .arg("--data")
        .arg(s.data.path());
    if let Some(db) = &s.database {
        cmd.arg("--database").arg(db);
    }
    let out = cmd
        .env("SOCLE_LOG", "error")
        .output()
        .expect("socle audit verify");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// Runs SQL directly on the test server's database (to play the attacker).
fn tamper(s: &Server, sql: &str) {
    match &s.database {
        None => {
            let c = rusqlite::Connection::open(s.data.path().join("socle.db")).unwrap();
            c.execute_batch(sql).unwrap();
        }
        Some(url) => {
            let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
            c.batch_execute(sql).unwrap();
        }
    }
}

#[test]
fn every_interaction_is_audited_and_readable_as_audit_event() {
    for b in backends() {
        let s = Server::start(&b);
        let p = s.post(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "Tracé"}]}),
        );
        let pid = p.json["id"].as_str().unwrap().to_string();
        let o = s.post(
            "Observation",
            &json!({"resourceType": "Observation", "status": "final", "code": {"text": "poids"},
            "subject": {"reference": format!("Patient/{pid}")}}),
        );
        let oid = o.json["id"].as_str().unwrap().to_string();
        s.get(&format!("Observation/{oid}")).expect(200);
        s.get(&format!("Patient/{pid}")).expect(200);
        s.get("Patient/inconnu").expect(404);
        s.get("Observation?code=x").expect(200);
        // The patient's own trail: creates and reads of their data, newest first.
        let r = s.get(&format!("Patient/{pid}/$audit-trail"));
        r.expect(200);
        let evs = r.json["entry"].as_array().unwrap();
        let kinds: Vec<&str> = evs
            .iter()
            .map(|e| e["resource"]["subtype"][0]["code"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "create").count(),
            2,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "read").count(),
            2,
            "{kinds:?}"
        );
        let ev = &evs[0]["resource"];
        assert_eq!(ev["resourceType"], "AuditEvent");
        assert_eq!(
            ev["agent"][0]["who"]["identifier"]["value"],
            "local-insecure"
        );
        assert_eq!(ev["agent"][0]["network"]["address"], "127.0.0.1");
        assert_eq!(ev["agent"][1]["who"]["display"], "Socle");
        assert!(ev["recorded"].as_str().unwrap().ends_with('Z'));
        // Each interaction under its BALP profile.
        let profile_of = |code: &str| {
            evs.iter()
                .map(|e| &e["resource"])
                .find(|e| e["subtype"][0]["code"] == code)
                .map(|e| {
                    e["meta"]["profile"][0]
                        .as_str()
                        .unwrap()
                        .rsplit('.')
                        .next()
                        .unwrap()
                        .to_string()
                })
        };
        assert_eq!(profile_of("create").as_deref(), Some("Create"));
        assert_eq!(profile_of("read").as_deref(), Some("Read"));
        // Failures are audited too, without health data in the record.
        let all = s.get("$audit-trail?_count=100");
        let failed: Vec<_> = all.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["outcome"] != "0")
            .collect();
        assert!(failed.iter().any(|e| e["resource"]["outcomeDesc"] == "404"));
        let search = all.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["resource"]["subtype"][0]["code"] == "search")
            .unwrap();
        assert!(
            !search.to_string().contains("code=x"),
            "les valeurs de recherche ne doivent pas être journalisées"
        );
        // One record by id; the trail is read-only.
        let seq = ev["id"].as_str().unwrap();
        s.get(&format!("$audit-trail/{seq}")).expect(200);
        // AuditEvents from other systems are ordinary resources, apart from Socle's own trail.
        s.post("AuditEvent", &json!({"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2024-01-01T00:00:00Z",
            "agent": [{"requestor": true}], "source": {"observer": {"display": "autre"}}})).expect(201);
    }
}

#[test]
fn verify_detects_altered_inserted_and_deleted_records() {
    for b in backends() {
        let mut s = Server::start(&b);
        for i in 0..5 {
            s.post(
                "Patient",
                &json!({"resourceType": "Patient", "name": [{"family": format!("Chaîne{i}")}]}),
            )
            .expect(201);
        }
        s.get("Patient?family=chaine").expect(200);
        s.stop();
        let (ok, out) = verify(&s);
        assert!(ok, "{out}");
        assert!(out.contains("intègre"), "{out}");

        tamper(
            &s,
            "UPDATE audit_log SET principal = 'mallory' WHERE seq = 3",
        );
        let (ok, out) = verify(&s);
        assert!(!ok, "{out}");
        assert!(out.contains("enregistrement 3"), "{out}");
        tamper(
            &s,
            "UPDATE audit_log SET principal = 'local-insecure' WHERE seq = 3",
        );
        assert!(verify(&s).0);

        tamper(&s, "DELETE FROM audit_log WHERE seq = 2");
        let (ok, out) = verify(&s);
        assert!(!ok, "{out}");
        assert!(out.contains("absents"), "{out}");
    }
    // On SQLite the access log (reads, searches, refusals) is a chain of its own, in its own file — so that
    // reads never move the data file's WAL — and verified the same way.
    let mut s = Server::start(&Backend::Sqlite);
    let p = s.post("Patient", &json!({"resourceType": "Patient"}));
    let pid = p.json["id"].as_str().unwrap().to_string();
    for _ in 0..3 {
        s.get(&format!("Patient/{pid}")).expect(200);
    }
    let trail = s.get(&format!("Patient/{pid}/$audit-trail"));
    let ids: Vec<String> = trail.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4, "{}", trail.json);
    assert!(ids[..3].iter().all(|i| i.starts_with("log-")), "{ids:?}");
    assert!(
        !ids[3].starts_with("log-"),
        "la création, avec les données : {ids:?}"
    );
    s.get(&format!("$audit-trail/{}", ids[0])).expect(200);
    s.stop();
    assert!(verify(&s).0);
    let log = rusqlite::Connection::open(s.data.path().join("socle-audit.db")).unwrap();
    log.execute_batch("UPDATE audit_log SET principal = 'mallory' WHERE seq = 2")
        .unwrap();
    let (ok, out) = verify(&s);
    assert!(!ok, "{out}");
    assert!(out.contains("enregistrement log-2"), "{out}");
    log.execute_batch("DELETE FROM audit_log WHERE seq = 3")
        .unwrap();
    let (ok, out) = verify(&s);
    assert!(!ok, "{out}");
    assert!(out.contains("fin supprimée"), "{out}");

    // Deleting the last records (the tail) is caught by the chain head.
    let mut s = Server::start(&Backend::Sqlite);
    s.post("Patient", &json!({"resourceType": "Patient"}))
        .expect(201);
    s.post("Patient", &json!({"resourceType": "Patient"}))
        .expect(201);
    s.stop();
    assert!(verify(&s).0);
    tamper(
        &s,
        "DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)",
    );
    let (ok, out) = verify(&s);
    assert!(!ok, "{out}");
}

/// A long trail is read page by page (`next` links), every record once, on both backends — on SQLite the write
/// records and the access log are two chains, paged each by its own sequence and merged by time.
#[test]
fn trails_are_paged_without_loss() {
    for backend in backends() {
        let s = Server::start(&backend);
        let p = s.post(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "PAGE"}]}),
        );
        let pid = p.json["id"].as_str().unwrap().to_string();
        for i in 0..20 {
            s.get(&format!("Patient/{pid}")).expect(200);
            s.put(
                &format!("Patient/{pid}"),
                &json!({"resourceType": "Patient", "id": pid, "name": [{"family": format!("PAGE{i}")}]}),
            )
            .expect(200);
        }
        let all = s.get(&format!("Patient/{pid}/$audit-trail?_count=1000"));
        all.expect(200);
        assert!(all.link("next").is_none());
        let ids = |r: &common::Resp| common::entry_ids(&r.json);
        let whole = ids(&all);
        assert_eq!(whole.len(), 41, "{:?}", whole);
        assert_eq!(all.json["total"], 41);
        let mut paged = Vec::new();
        let mut page = s.get(&format!("Patient/{pid}/$audit-trail?_count=7"));
        let mut pages = 1;
        loop {
            page.expect(200);
            assert!(page.json.get("total").is_none() || page.link("next").is_none());
            paged.extend(ids(&page));
            let Some(next) = page.link("next") else { break };
            page = s.get(next.split("/fhir/").nth(1).unwrap());
            pages += 1;
            assert!(pages < 50, "pages sans fin");
        }
        let mut a = whole.clone();
        let mut b = paged.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{backend:?} : {paged:?}");
        assert!(pages >= 6, "{pages}");
        let bad = s.get(&format!("Patient/{pid}/$audit-trail?page=x"));
        assert_eq!(bad.status, 400, "{}", bad.text);

        // A period: the records at or after a record's time, and those before it, paged, split the trail.
        let times: Vec<(String, String)> = all.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let r = &e["resource"];
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["recorded"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let cut = times[times.len() / 2].1.clone();
        let walk = |first: String| {
            let mut got = Vec::new();
            let mut page = s.get(&first);
            for _ in 0..50 {
                page.expect(200);
                got.extend(ids(&page));
                let Some(next) = page.link("next") else {
                    return got;
                };
                page = s.get(next.split("/fhir/").nth(1).unwrap());
            }
            panic!("pages sans fin");
        };
        let enc = |v: &str| v.replace('+', "%2B").replace(':', "%3A");
        let later = walk(format!(
            "Patient/{pid}/$audit-trail?_count=4&date=ge{}",
            enc(&cut)
        ));
        let earlier = walk(format!(
            "Patient/{pid}/$audit-trail?_count=4&date=lt{}",
            enc(&cut)
        ));
        let want = |keep: &dyn Fn(&str) -> bool| {
            let mut v: Vec<String> = times
                .iter()
                .filter(|(_, t)| keep(t))
                .map(|(i, _)| i.clone())
                .collect();
            v.sort();
            v
        };
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        // The reads of the trail above are records of their own, after `cut`: only those of `times` count.
        let later: Vec<String> = later.into_iter().filter(|i| whole.contains(i)).collect();
        assert_eq!(sorted(later), want(&|t| t >= cut.as_str()), "{backend:?}");
        assert_eq!(sorted(earlier), want(&|t| t < cut.as_str()), "{backend:?}");
        let day = &cut[..10];
        let none = s.get(&format!("Patient/{pid}/$audit-trail?date=lt{day}"));
        none.expect(200);
        assert!(ids(&none).is_empty(), "{}", none.text);
        let bad = s.get(&format!("Patient/{pid}/$audit-trail?date=ap{day}"));
        assert_eq!(bad.status, 400, "{}", bad.text);
        let bad = s.get(&format!("Patient/{pid}/$audit-trail?date=2026-13"));
        assert_eq!(bad.status, 400, "{}", bad.text);
        assert!(bad.text.contains("date invalide"), "{}", bad.text);
    }
}
