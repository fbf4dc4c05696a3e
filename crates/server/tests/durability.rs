//! A 2xx means durable: writes acknowledged just before a SIGKILL are all there after restart, with their audit
//! records, on every backend.

mod common;

use std::sync::{Arc, Mutex};

use common::{Server, backends};
use serde_json::json;

#[test]
fn acknowledged_writes_survive_sigkill() {
    for b in backends() {
        let mut s = Server::start(&b);
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
        let base = s.base.clone();
        let mut threads = Vec::new();
        for t in 0..4 {
            let acked = acked.clone();
            let base = base.clone();
            threads.push(std::thread::spawn(move || {
                for i in 0..40 {
                    let family = format!("Durable{t}x{i}");
                    let body = json!({"resourceType": "Patient", "name": [{"family": family}], "birthDate": "1970-01-01"});
                    let r = ureq::post(&format!("{base}/Patient"))
                        .set("Content-Type", "application/fhir+json")
                        .send_string(&body.to_string())
                        .expect("création");
                    assert_eq!(r.status(), 201);
                    let v: serde_json::Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
                    acked.lock().unwrap().push((v["id"].as_str().unwrap().to_string(), family));
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        // One transaction too, acknowledged right before the kill.
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": (0..50).map(|i| json!({
            "resource": {"resourceType": "Patient", "id": format!("tx-durable-{i}"), "name": [{"family": "TxDurable"}]},
            "request": {"method": "PUT", "url": format!("Patient/tx-durable-{i}")}})).collect::<Vec<_>>()});
        s.post("", &tx).expect(200);
        s.kill();
        s.restart();
        let acked = acked.lock().unwrap().clone();
        assert_eq!(acked.len(), 160);
        for (id, family) in &acked {
            let r = s.get(&format!("Patient/{id}"));
            r.expect(200);
            assert_eq!(r.json["name"][0]["family"], family.as_str());
        }
        let r = s.get("Patient?family=TxDurable&_summary=count");
        assert_eq!(r.json["total"], 50, "{b:?}");
        // Every acknowledged create has its audit record, committed with the data.
        let events = s.get("$audit-trail?_count=1000");
        let creates = events.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["subtype"][0]["code"] == "create")
            .count();
        assert!(creates >= 210, "{creates} enregistrements de création");
    }
}

/// Concurrent writers share commits (SQLite group commit): a writer that fails inside the group rolls back only
/// its own work, and every acknowledged write is there.
#[test]
fn failures_inside_a_commit_group_roll_back_only_their_own_work() {
    for b in backends() {
        let s = Server::start(&b);
        s.put(
            "Patient/shared",
            &json!({"resourceType": "Patient", "id": "shared"}),
        )
        .expect(201);
        let base = s.base.clone();
        let mut threads = Vec::new();
        for t in 0..8 {
            let base = base.clone();
            threads.push(std::thread::spawn(move || {
                let mut ok = 0;
                for i in 0..25 {
                    // A stale If-Match fails inside the transaction, after its writer joined a group.
                    let stale = ureq::put(&format!("{base}/Patient/shared"))
                        .set("Content-Type", "application/fhir+json")
                        .set("If-Match", "W/\"999\"")
                        .send_string(&json!({"resourceType": "Patient", "id": "shared", "gender": "male"}).to_string());
                    assert!(matches!(stale, Err(ureq::Error::Status(412, _))));
                    let body = json!({"resourceType": "Patient", "id": format!("g{t}-{i}"), "name": [{"family": "Groupe"}]});
                    let r = ureq::put(&format!("{base}/Patient/g{t}-{i}"))
                        .set("Content-Type", "application/fhir+json")
                        .send_string(&body.to_string())
                        .expect("écriture");
                    assert_eq!(r.status(), 201);
                    ok += 1;
                }
                ok
            }));
        }
        let total: i32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 200);
        assert_eq!(
            s.get("Patient?family=groupe&_summary=count").json["total"],
            200
        );
        let shared = s.get("Patient/shared");
        assert_eq!(shared.json["meta"]["versionId"], "1", "{b:?}");
        assert!(shared.json.get("gender").is_none());
    }
}
