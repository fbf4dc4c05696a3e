//! A crash during DMP feeds leaves, for each submission, either all of it or nothing: the server is killed
//! (SIGKILL) while several clients are feeding; after restart every acknowledged submission is whole, each
//! submission that was in flight is whole or absent, no document lacks its submission set, its bytes or its
//! feed event, the orphaned bytes of interrupted feeds are swept, and the audit chain verifies.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, backends, person, qualified, registry};
use serde_json::Value;
use socle_dmp::sample::{self, SampleDoc};

const WRITERS: usize = 3;
const DOCS_PER_FEED: usize = 2;

fn submission_url(sub: &str) -> String {
    format!("urn:oid:1.2.250.1.999.2.{sub}")
}

fn total(s: &Server, query: &str) -> i64 {
    let r = s.get(&format!("{query}&_summary=count"));
    r.expect(200);
    r.json["total"].as_i64().unwrap()
}

#[derive(Default)]
struct Outcome {
    acked: Vec<String>,
    in_flight: Vec<String>,
}

#[test]
fn a_crash_during_feeds_leaves_whole_submissions_or_nothing() {
    for backend in backends() {
        let mut s = Server::start(&backend);
        let people = registry(&s, 20, 11);
        qualified(&s, "pc", &people[2]);
        let who = person(&people[2]);
        assert!(s.cli(&["dmp", "subscribe", "copie"]).status.success());

        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let base = s.base.clone();
        let mut threads = Vec::new();
        for t in 0..WRITERS {
            let outcome = outcome.clone();
            let base = base.clone();
            let who = who.clone();
            threads.push(std::thread::spawn(move || {
                for i in 0.. {
                    let sub = format!("crash.{t}.{i}");
                    let docs: Vec<(SampleDoc, Vec<u8>)> = (0..DOCS_PER_FEED)
                        .map(|k| {
                            // Documents of different sizes, so that the bytes of one feed take a while to write.
                            let d =
                                SampleDoc::report(&format!("K{t}x{i}x{k}"), 150_000 + 40_000 * k);
                            let cda = sample::cda_n1(&who, &d);
                            (d, cda)
                        })
                        .collect();
                    let body = sample::provide_bundle("pc", &sub, &docs).to_string();
                    let r = ureq::post(&base)
                        .set("Content-Type", "application/fhir+json")
                        .timeout(Duration::from_secs(60))
                        .send_string(&body);
                    match r {
                        Ok(resp) => {
                            assert_eq!(resp.status(), 200);
                            outcome.lock().unwrap().acked.push(sub);
                        }
                        Err(ureq::Error::Status(code, resp)) => {
                            panic!("{code} : {}", resp.into_string().unwrap_or_default())
                        }
                        // The server was killed: this submission's fate is unknown to the client.
                        Err(_) => {
                            outcome.lock().unwrap().in_flight.push(sub);
                            return;
                        }
                    }
                }
            }));
        }
        // Kill once a few feeds are acknowledged, while the writers are still feeding.
        let start = Instant::now();
        while outcome.lock().unwrap().acked.len() < 6 {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "aucune soumission acceptée"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(37));
        s.kill();
        for t in threads {
            t.join().unwrap();
        }
        let Outcome { acked, in_flight } = std::mem::take(&mut *outcome.lock().unwrap());
        assert_eq!(in_flight.len(), WRITERS, "{backend:?}");
        s.restart();

        // Every acknowledged submission is there, whole.
        for sub in &acked {
            let r = s.get(&format!("List?identifier={}", submission_url(sub)));
            r.expect(200);
            assert_eq!(r.json["total"], 1, "{backend:?} {sub}");
            let list = &r.json["entry"][0]["resource"];
            assert_eq!(list["entry"].as_array().unwrap().len(), DOCS_PER_FEED);
        }
        // A submission in flight at the kill is whole or absent.
        let mut landed = 0;
        for sub in &in_flight {
            let n = total(&s, &format!("List?identifier={}", submission_url(sub)));
            assert!(n <= 1, "{backend:?} {sub}");
            landed += n;
        }
        // Whatever is stored: each submission set names all its documents, each document is readable with
        // its bytes verified, and no document is outside a submission set.
        let lists = s.get("List?patient=pc&_count=1000");
        lists.expect(200);
        let lists: Vec<Value> = lists.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .collect();
        assert_eq!(
            lists.len() as i64,
            acked.len() as i64 + landed,
            "{backend:?}"
        );
        eprintln!(
            "{backend:?} : {} soumissions acquittées, {} en cours au SIGKILL dont {landed} entières après redémarrage",
            acked.len(),
            in_flight.len()
        );
        let mut in_lists = BTreeSet::new();
        for list in &lists {
            let items = list["entry"].as_array().unwrap();
            assert_eq!(items.len(), DOCS_PER_FEED, "{list}");
            for item in items {
                let reference = item["item"]["reference"].as_str().unwrap().to_string();
                let d = s.get(&reference);
                d.expect(200);
                let url = d.json["content"][0]["attachment"]["url"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let resp = ureq::get(&s.url(&url))
                    .set("Accept", "text/xml")
                    .call()
                    .unwrap_or_else(|e| panic!("{backend:?} {url} : {e}"));
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
                assert!(bytes.starts_with(b"<?xml"), "{url}");
                in_lists.insert(reference);
            }
        }
        let docs = total(&s, "DocumentReference?patient=pc");
        assert_eq!(docs, in_lists.len() as i64, "{backend:?}");
        assert_eq!(total(&s, "Binary?_id:not=x"), docs, "{backend:?}");
        // One feed event per stored submission, none for what was lost.
        let events = s.cli(&["dmp", "events", "--consumer", "copie"]);
        assert!(events.status.success());
        assert_eq!(
            String::from_utf8_lossy(&events.stdout).lines().count(),
            lists.len(),
            "{backend:?}"
        );
        // The bytes of the feeds that did not land are orphans: swept, the stored documents untouched.
        let out = s.cli(&["dmp", "sweep", "--older-than", "0"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again = s.cli(&["dmp", "sweep", "--older-than", "0", "--dry-run"]);
        assert!(
            String::from_utf8_lossy(&again.stdout).contains(" 0 document(s) orphelin"),
            "{}",
            String::from_utf8_lossy(&again.stdout)
        );
        for reference in in_lists.iter().take(4) {
            let d = s.get(reference);
            let url = d.json["content"][0]["attachment"]["url"].as_str().unwrap();
            assert_eq!(
                ureq::get(&s.url(url))
                    .set("Accept", "text/xml")
                    .call()
                    .map(|r| r.status())
                    .unwrap_or(0),
                200
            );
        }
        // The audit chain survived the crash.
        let out = s.cli(&["audit", "verify"]);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // And the record takes feeds again.
        let d = SampleDoc::report("apres-crash", 10_000);
        let cda = sample::cda_n1(&who, &d);
        s.post("", &sample::provide_bundle("pc", "apres", &[(d, cda)]))
            .expect(200);
    }
}
