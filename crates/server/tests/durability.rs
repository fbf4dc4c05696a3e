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
