//! The DMP over HTTP, on both backends: ITI-65 submissions (accepted, replaced, refused for each rule with
//! nothing stored), ITI-67/66 searches, ITI-68 retrieval from the blob store (verified), visibility labels,
//! masking, archiving, the record's life (objection, closure) and the feed-event queue.

mod common;

use common::{Resp, Server, backends, created_id, local, person, qualified, registry, walk};
use serde_json::{Value, json};
use socle_dmp::sample::{self, SampleDoc};

fn submit(s: &Server, patient: &str, sub: &str, docs: &[(SampleDoc, Vec<u8>)]) -> Resp {
    s.post("", &sample::provide_bundle(patient, sub, docs))
}

fn code(r: &Resp) -> String {
    r.json["issue"][0]["details"]["coding"][0]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn count(s: &Server, query: &str) -> i64 {
    let r = s.get(&format!("{query}&_summary=count"));
    r.expect(200);
    r.json["total"].as_i64().unwrap()
}

fn raw_get(s: &Server, path: &str, accept: &str) -> (u16, Option<String>, Vec<u8>) {
    let resp = ureq::get(&s.url(path)).set("Accept", accept).call();
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = resp.status();
    let ct = resp.header("content-type").map(str::to_string);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
    (status, ct, bytes)
}

/// Every collection a refused submission could have touched.
fn stored(s: &Server) -> (i64, i64, i64) {
    (
        count(s, "DocumentReference?_id:not=x"),
        count(s, "Binary?_id:not=x"),
        count(s, "List?_id:not=x"),
    )
}

#[test]
fn dmp_over_http() {
    for backend in backends() {
        let s = Server::start(&backend);
        let people = registry(&s, 50, 5);
        qualified(&s, "p1", &people[3]);
        let p1 = person(&people[3]);

        // ITI-65: one document.
        let d1 = SampleDoc::report("D1", 100_000);
        let cda1 = sample::cda_n1(&p1, &d1);
        let r = submit(&s, "p1", "S1", &[(d1.clone(), cda1.clone())]);
        r.expect(200);
        assert_eq!(r.json["type"], "transaction-response");
        let entries = r.json["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 3, "{}", r.text);
        for e in entries {
            assert!(
                e["response"]["status"].as_str().unwrap().starts_with("201"),
                "{e}"
            );
        }
        // Responses in the request's order: List, DocumentReference, Binary.
        let doc_id = created_id(&entries[1]);
        assert!(
            entries[0]["response"]["location"]
                .as_str()
                .unwrap()
                .contains("List/")
        );
        assert!(
            entries[2]["response"]["location"]
                .as_str()
                .unwrap()
                .contains("Binary/")
        );
        // The class and format value sets are not loaded: the response says so.
        assert!(
            entries[0]["response"]["outcome"]["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("J06"),
            "{}",
            r.text
        );

        let doc = s.get(&format!("DocumentReference/{doc_id}"));
        doc.expect(200);
        let url = doc.json["content"][0]["attachment"]["url"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(url.starts_with("Binary/"), "{url}");
        // ITI-68: the exact bytes, as their own media type; or as a FHIR Binary.
        let (st, ct, bytes) = raw_get(&s, &url, "text/xml");
        assert_eq!(st, 200);
        assert_eq!(ct.as_deref(), Some("text/xml"));
        assert!(bytes == cda1, "bytes differ");
        let (st, _, bytes) = raw_get(&s, &url, "*/*");
        assert_eq!(st, 200);
        assert!(bytes == cda1);
        let bin = s.get(&format!("{url}?_format=json"));
        bin.expect(200);
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD
            .decode(bin.json["data"].as_str().unwrap())
            .unwrap();
        assert!(data == cda1);
        assert!(bin.json["meta"].get("extension").is_none(), "{}", bin.text);
        assert_eq!(
            bin.json["securityContext"]["reference"],
            format!("DocumentReference/{doc_id}")
        );
        // A Binary naming the document's stored bytes, sent by a client (alone or in a transaction), is
        // refused: it would serve them without the document's access decision.
        let spoof = json!({"resourceType": "Binary", "contentType": "text/xml",
            "meta": {"extension": [{"url": socle_dmp::EXT_BLOB, "extension": [
                {"url": "sha256", "valueString": socle_store::blob::sha256_hex(&cda1)},
                {"url": "size", "valueUnsignedInt": cda1.len()}]}]}});
        let binaries = count(&s, "Binary?_id:not=x");
        let r = s.post("Binary", &spoof);
        r.expect(422);
        assert!(r.text.contains("réservée"), "{}", r.text);
        s.post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": spoof, "request": {"method": "POST", "url": "Binary"}}]}),
        )
        .expect(422);
        assert_eq!(count(&s, "Binary?_id:not=x"), binaries);

        // The PDF inside the level-1 document.
        let (st, ct, body) = raw_get(&s, &format!("{url}/$n1-body"), "*/*");
        assert_eq!((st, ct.as_deref()), (200, Some("application/pdf")));
        assert!(body == sample::pdf(100_000));

        // ITI-67 and ITI-66.
        assert_eq!(
            count(
                &s,
                "DocumentReference?patient=p1&status=current&type=http://loinc.org|11488-4"
            ),
            1
        );
        assert_eq!(
            count(
                &s,
                "DocumentReference?patient=p1&security-label=N&facility=urn:oid:1.2.250.1.71.4.2.4|SA01"
            ),
            1
        );
        assert_eq!(
            count(
                &s,
                "DocumentReference?patient=p1&setting=ETABLISSEMENT&date=ge2026-11-01"
            ),
            1
        );
        assert_eq!(
            count(
                &s,
                "DocumentReference?patient=p1&type=http://loinc.org|11502-2"
            ),
            0
        );
        assert_eq!(
            count(
                &s,
                "List?patient=p1&code=https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|submissionset"
            ),
            1
        );
        let before = stored(&s);
        assert_eq!(before, (1, 1, 1));

        // Duplicates: the same submission again, or the same document in a new submission.
        let r = submit(&s, "p1", "S1", &[(d1.clone(), cda1.clone())]);
        assert_eq!(
            (r.status, code(&r)),
            (409, "duplicate".into()),
            "{}",
            r.text
        );
        let r = submit(&s, "p1", "S1b", &[(d1.clone(), cda1.clone())]);
        assert_eq!(
            (r.status, code(&r)),
            (409, "duplicate".into()),
            "{}",
            r.text
        );
        assert_eq!(stored(&s), before);

        // Refusals, each with its reason, nothing stored.
        let d2 = SampleDoc::report("D2", 2_000);
        let cda2 = sample::cda_n1(&p1, &d2);
        let refuse = |bundle: Value, status: u16, expected: &str, text: &str| {
            let r = s.post("", &bundle);
            assert_eq!(
                (r.status, code(&r).as_str()),
                (status, expected),
                "{}",
                r.text
            );
            assert!(r.diagnostics().contains(text), "{expected}: {}", r.text);
            assert_eq!(stored(&s), before, "{expected}");
        };
        let good = || sample::provide_bundle("p1", "S2", &[(d2.clone(), cda2.clone())]);
        // Another patient's INS in the document.
        let other = sample::cda_n1(&person(&people[4]), &d2);
        refuse(
            sample::provide_bundle("p1", "S2", &[(d2.clone(), other)]),
            422,
            "cda-mismatch",
            "INS du patient",
        );
        // The metadata's type differs from the document's.
        let mut b = good();
        b["entry"][1]["resource"]["type"]["coding"][0]["code"] = json!("11502-2");
        refuse(b, 422, "cda-mismatch", "type de document");
        // The metadata names another author (IDNPS) than the document's header.
        let mut b = good();
        b["entry"][1]["resource"]["author"][0]["identifier"]["value"] = json!("810000000009");
        refuse(b, 422, "cda-mismatch", "auteur (IDNPS)");
        // Metadata a vendor might get wrong: a date that is no instant, no size, two confidentiality levels, a
        // patient category beside a professional type.
        let mut b = good();
        b["entry"][1]["resource"]["date"] = json!("2026-11-20");
        refuse(b, 422, "metadata-invalid", "instant FHIR");
        let mut b = good();
        b["entry"][1]["resource"]["content"][0]["attachment"]
            .as_object_mut()
            .unwrap()
            .remove("size");
        refuse(b, 422, "metadata-missing", "attachment.size");
        let mut b = good();
        b["entry"][1]["resource"]["securityLabel"]
            .as_array_mut()
            .unwrap()
            .push(json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}));
        refuse(
            b,
            422,
            "metadata-invalid",
            "un seul niveau de confidentialité",
        );
        let mut b = good();
        b["entry"][1]["resource"]["type"]["coding"]
            .as_array_mut()
            .unwrap()
            .push(json!({"system": "urn:oid:1.2.250.1.213.1.1.4.12", "code": "DOCPAT04"}));
        refuse(b, 422, "metadata-invalid", "mêlent une catégorie patient");
        // A level-1 body in a format outside the CI-SIS list, or a PDF not in base64.
        let text = String::from_utf8(cda2.clone()).unwrap();
        for (from, to, why) in [
            (
                "mediaType=\"application/pdf\"",
                "mediaType=\"text/html\"",
                "text/html",
            ),
            ("representation=\"B64\"", "representation=\"TXT\"", "base64"),
            (
                "representation=\"B64\"",
                "representation=\"B64\" compression=\"DF\"",
                "compressé",
            ),
        ] {
            let changed = text.replace(from, to).into_bytes();
            refuse(
                sample::provide_bundle("p1", "S2", &[(d2.clone(), changed)]),
                422,
                "metadata-invalid",
                why,
            );
        }
        // A level-1 body that is not base64 (a stray character, cut short) or empty: refused when fed, not
        // found unreadable when served.
        let open = "representation=\"B64\">";
        let body_start = text.find(open).unwrap() + open.len();
        let body_end = text[body_start..].find("</text>").unwrap() + body_start;
        let body = &text[body_start..body_end];
        // Cut short: symbols dropped from the end until their count is one past a multiple of four.
        let mut cut = body.trim_end().trim_end_matches('=').to_string();
        while cut.bytes().filter(|b| !b.is_ascii_whitespace()).count() % 4 != 1 {
            cut.pop();
        }
        for (body, code, why) in [
            (
                body.replacen('A', "!", 1),
                "cda-invalid",
                "hors de l'alphabet base64",
            ),
            (
                cut,
                "cda-invalid",
                "une longueur que le base64 ne peut avoir",
            ),
            (
                "\n".to_string(),
                "metadata-invalid",
                "corps de niveau 1 vide",
            ),
        ] {
            let changed =
                format!("{}{body}{}", &text[..body_start], &text[body_end..]).into_bytes();
            refuse(
                sample::provide_bundle("p1", "S2", &[(d2.clone(), changed)]),
                422,
                code,
                why,
            );
        }
        // … another custodian (the structure keeping the document) than the header's.
        let mut b = good();
        b["entry"][1]["resource"]["custodian"]["identifier"]["value"] = json!("1750099999");
        refuse(b, 422, "cda-mismatch", "structure dépositaire (custodian)");
        // The metadata's creation time (XDS creationTime) is not the header's effectiveTime; the same instant
        // written in UTC is.
        assert_eq!(
            good()["entry"][1]["resource"]["content"][0]["attachment"]["creation"],
            "2026-11-20T10:15:00+01:00"
        );
        let mut b = good();
        b["entry"][1]["resource"]["content"][0]["attachment"]["creation"] =
            json!("2026-11-20T10:15:00Z");
        refuse(b, 422, "cda-mismatch", "date de création (effectiveTime)");
        let mut b = good();
        b["entry"][1]["resource"]["content"][0]["attachment"]["creation"] = json!(20261120);
        refuse(b, 422, "metadata-invalid", "dateTime FHIR");
        // Unknown codes.
        let mut b = good();
        b["entry"][1]["resource"]["type"]["coding"][0]["code"] = json!("99999-9");
        refuse(b, 422, "unknown-code", "J07");
        let mut b = good();
        b["entry"][1]["resource"]["context"]["practiceSetting"]["coding"][0]["code"] =
            json!("NOPE");
        refuse(b, 422, "unknown-code", "J04");
        let mut b = good();
        b["entry"][1]["resource"]["securityLabel"][0]["coding"][0]["code"] = json!("X");
        refuse(b, 422, "unknown-code", "J08");
        // Hash: missing, wrong; size wrong.
        let mut b = good();
        b["entry"][1]["resource"]["content"][0]["attachment"]
            .as_object_mut()
            .unwrap()
            .remove("hash");
        refuse(b, 422, "hash-missing", "empreinte absente");
        let mut b = good();
        b["entry"][1]["resource"]["content"][0]["attachment"]["hash"] =
            json!("2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
        refuse(b, 422, "hash-mismatch", "calculée");
        let mut b = good();
        b["entry"][1]["resource"]["content"][0]["attachment"]["size"] = json!(12);
        refuse(b, 422, "size-mismatch", "12");
        // Missing comprehensive metadata.
        let mut b = good();
        b["entry"][1]["resource"]["context"]
            .as_object_mut()
            .unwrap()
            .remove("facilityType");
        refuse(b, 422, "metadata-missing", "facilityType");
        // Hostile or malformed XML.
        let hostile: [(&str, &[u8]); 3] = [
            ("xxe", b"<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><ClinicalDocument xmlns=\"urn:hl7-org:v3\">&x;</ClinicalDocument>"),
            ("laughs", b"<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><ClinicalDocument xmlns=\"urn:hl7-org:v3\">&b;</ClinicalDocument>"),
            ("truncated", &cda2[..cda2.len() / 2]),
        ];
        for (_, bytes) in hostile {
            refuse(
                sample::provide_bundle("p1", "S2", &[(d2.clone(), bytes.to_vec())]),
                422,
                "cda-invalid",
                "CDA",
            );
        }
        // Not a submission: a Patient inside, no SubmissionSet.
        let mut b = good();
        b["entry"].as_array_mut().unwrap().push(json!({"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}));
        refuse(b, 400, "mhd-structure", "Patient");
        // An unqualified identity.
        s.put("Patient/p2", &local("p2", &people[5], "PROV", &[], None))
            .expect(201);
        let d3 = SampleDoc::report("D3", 1_000);
        let cda3 = sample::cda_n1(&person(&people[5]), &d3);
        refuse(
            sample::provide_bundle("p2", "S3", &[(d3, cda3)]),
            422,
            "identity-not-qualified",
            "PROV",
        );
        // An unknown patient.
        refuse(
            sample::provide_bundle("nobody", "S3", &[(d2.clone(), cda2.clone())]),
            404,
            "unknown-patient",
            "nobody",
        );

        // Patient categories are for the patient's own documents.
        let mut by_patient = SampleDoc::report("DP", 1_000);
        by_patient.type_code = "DOCPAT04".into();
        by_patient.type_display = "CR déposé par le patient".into();
        let cda = sample::cda_n1(&p1, &by_patient);
        refuse(
            sample::provide_bundle("p1", "S2", &[(by_patient, cda)]),
            422,
            "metadata-invalid",
            "réservée aux documents déposés par le patient",
        );

        // Imaging: the report, and the images left in the PACS (no bytes, no hash).
        let report = SampleDoc::report("IMG-CR", 2_000);
        let report_cda = sample::cda_n1(&p1, &report);
        let mut images = sample::document_reference("p1", &SampleDoc::report("IMG-1", 0), &[], "");
        images["content"][0]["attachment"] = json!({"contentType": "application/dicom",
            "url": "https://pacs.example.org/wado-rs/studies/1.2.250.1.999.7.1"});
        let m = sample::document_reference("p1", &report, &report_cda, "");
        let r = s.post(
            "",
            &sample::provide_bundle_with("p1", "S-IMG", &[(m, report_cda), (images, Vec::new())]),
        );
        r.expect(200);
        assert_eq!(r.json["entry"].as_array().unwrap().len(), 4, "{}", r.text);
        let img_id = created_id(&r.json["entry"][3]);
        let img = s.get(&format!("DocumentReference/{img_id}"));
        assert_eq!(
            img.json["content"][0]["attachment"]["url"],
            "https://pacs.example.org/wado-rs/studies/1.2.250.1.999.7.1",
            "{}",
            img.text
        );
        // An external URL is for images only.
        let mut other = sample::document_reference("p1", &SampleDoc::report("EXT", 0), &[], "");
        other["content"][0]["attachment"]["url"] = json!("https://example.org/doc.xml");
        let b = sample::provide_bundle_with("p1", "S-EXT", &[(other, Vec::new())]);
        let r = s.post("", &b);
        assert_eq!(
            (r.status, code(&r).as_str()),
            (422, "metadata-invalid"),
            "{}",
            r.text
        );
        // The author, named by its IDNPS only (ITI-67 `author:identifier`).
        let by_author = |v: &str| {
            count(
                &s,
                &format!("DocumentReference?patient=p1&status=current&author:identifier={v}"),
            )
        };
        assert_eq!(by_author("urn:oid:1.2.250.1.71.4.2.1|810000000001"), 3);
        assert_eq!(by_author("urn:oid:1.2.250.1.71.4.2.1|810000000009"), 0);
        // The IHE MHD parameters: ITI-67 `creation`, ITI-66 `sourceId`.
        // (The imaging document kept in a PACS gives no creation time.)
        let with_creation = count(&s, "DocumentReference?patient=p1&creation:missing=false");
        assert!(with_creation >= 2, "{with_creation}");
        assert_eq!(
            count(&s, "DocumentReference?patient=p1&creation=2026-11-20"),
            with_creation
        );
        assert_eq!(
            count(&s, "DocumentReference?patient=p1&creation=lt2026-01-01"),
            0
        );
        assert!(count(&s, "List?patient=p1&sourceId=urn:oid:1.2.250.1.999.9") >= 1);
        assert_eq!(count(&s, "List?patient=p1&sourceId=urn:oid:9.9"), 0);
        // Deleted: gone from reads and finds (the versions stay for the trail).
        assert_eq!(count(&s, "DocumentReference?patient=p1&status=current"), 3);
        let d = s.delete(&format!("DocumentReference/{img_id}"));
        assert!(d.status == 200 || d.status == 204, "{}", d.text);
        assert_eq!(s.get(&format!("DocumentReference/{img_id}")).status, 410);
        assert_eq!(count(&s, "DocumentReference?patient=p1&status=current"), 2);

        // Replacement: a new version of the same CDA document (its setId, a greater versionNumber) …
        let mut d1v2 = SampleDoc::report("D1v2", 3_000);
        d1v2.replaces = Some(doc_id.clone());
        for (set, version, why) in [("D1v2-set", 2, "setId"), ("D1-set", 1, "versionNumber")] {
            d1v2.set_extension = set.into();
            d1v2.version = version;
            let r = submit(
                &s,
                "p1",
                "S4",
                &[(d1v2.clone(), sample::cda_n1(&p1, &d1v2))],
            );
            assert_eq!(
                (r.status, code(&r).as_str()),
                (422, "replacement"),
                "{}",
                r.text
            );
            assert!(r.text.contains(why), "{why} : {}", r.text);
        }
        assert_eq!(
            s.get(&format!("DocumentReference/{doc_id}")).json["status"],
            "current"
        );
        d1v2.version = 2;
        // … and the old version is superseded, not lost.
        let cda = sample::cda_n1(&p1, &d1v2);
        let r = submit(&s, "p1", "S4", &[(d1v2.clone(), cda.clone())]);
        r.expect(200);
        let old = s.get(&format!("DocumentReference/{doc_id}"));
        assert_eq!(old.json["status"], "superseded");
        assert_eq!(old.json["meta"]["versionId"], "2");
        assert_eq!(count(&s, "DocumentReference?patient=p1&status=current"), 2);
        assert_eq!(
            count(
                &s,
                &format!("DocumentReference?patient=p1&relatesto=DocumentReference/{doc_id}")
            ),
            1
        );
        // A superseded document is not replaced again.
        let mut again = SampleDoc::report("D1v3", 3_000);
        again.replaces = Some(doc_id.clone());
        let r = submit(
            &s,
            "p1",
            "S5",
            &[(again.clone(), sample::cda_n1(&p1, &again))],
        );
        assert_eq!(
            (r.status, code(&r).as_str()),
            (422, "replacement"),
            "{}",
            r.text
        );

        // Visibility: a document not yet announced to the patient, then announced.
        let mut hidden = SampleDoc::report("D5", 1_000);
        hidden.labels = vec![(
            "urn:oid:1.2.250.1.213.1.1.4.13".into(),
            "INVISIBLE_PATIENT".into(),
        )];
        let r = submit(
            &s,
            "p1",
            "S6",
            &[(hidden.clone(), sample::cda_n1(&p1, &hidden))],
        );
        r.expect(200);
        let hidden_id = created_id(&r.json["entry"][1]);
        let rules = s.get("Patient/p1/$policy-rules");
        assert!(
            rules
                .text
                .contains(&format!("DocumentReference/{hidden_id}"))
                && rules.text.contains("hide-patient"),
            "{}",
            rules.text
        );
        s.post(
            &format!("DocumentReference/{hidden_id}/$dmp-announce"),
            &json!({}),
        )
        .expect(200);
        let rules = s.get("Patient/p1/$policy-rules");
        assert!(!rules.text.contains("hide-patient"), "{}", rules.text);
        // Each operation says whether it changed anything: asked twice, the second changes nothing.
        let op = |name: &str| {
            let r = s.post(
                &format!("DocumentReference/{hidden_id}/${name}"),
                &json!({}),
            );
            r.expect(200);
            r.diagnostics()
        };
        assert!(op("dmp-announce").contains("déjà visible du patient"));
        // Masking to professionals and back.
        assert!(op("dmp-mask").contains("appliqué"));
        assert!(s.get("Patient/p1/$policy-rules").text.contains("\"mask\""));
        assert!(op("dmp-mask").contains("déjà masqué"));
        assert!(op("dmp-unmask").contains("appliqué"));
        assert!(!s.get("Patient/p1/$policy-rules").text.contains("\"mask\""));
        assert!(op("dmp-unmask").contains("n'était pas masqué"));
        // Archiving: tagged, left out of searches that ask so; archiving again writes no new version.
        assert!(op("dmp-unarchive").contains("n'était pas archivé"));
        let before =
            s.get(&format!("DocumentReference/{hidden_id}")).json["meta"]["versionId"].clone();
        assert!(op("dmp-archive").contains("appliqué"));
        let archived =
            s.get(&format!("DocumentReference/{hidden_id}")).json["meta"]["versionId"].clone();
        assert_ne!(before, archived);
        assert!(op("dmp-archive").contains("déjà archivé"));
        assert_eq!(
            s.get(&format!("DocumentReference/{hidden_id}")).json["meta"]["versionId"],
            archived
        );
        let not_archived = "_tag:not=https://socle.example/fhir/CodeSystem/dmp-state|archived";
        assert_eq!(
            count(
                &s,
                &format!("DocumentReference?patient=p1&status=current&{not_archived}")
            ),
            2
        );
        assert_eq!(count(&s, "DocumentReference?patient=p1&status=current"), 3);
        s.post(
            &format!("DocumentReference/{hidden_id}/$dmp-unarchive"),
            &json!({}),
        )
        .expect(200);
        assert_eq!(
            count(
                &s,
                &format!("DocumentReference?patient=p1&status=current&{not_archived}")
            ),
            3
        );

        // Feed events: one per accepted feed, durable; every subscribed consumer gets each of them, claims
        // them with a lease and acknowledges them, whatever the others do.
        let lines = |out: std::process::Output| -> Vec<Value> {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let out = s.cli(&["dmp", "claim", "--consumer", "mssante"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("socle dmp subscribe mssante"));
        assert!(lines(s.cli(&["dmp", "events"])).is_empty());
        let out = s.cli(&["dmp", "subscribe", ""]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("nom de consommateur"));
        for c in ["mssante", "notifications"] {
            assert!(s.cli(&["dmp", "subscribe", c]).status.success());
        }
        assert!(
            s.cli(&["dmp", "subscribe", "tardif", "--from-now"])
                .status
                .success()
        );
        let events = lines(s.cli(&["dmp", "events"]));
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(events[0]["kind"], "feed");
        assert_eq!(events[0]["documents"], json!([doc_id]));
        assert_eq!(events[1]["documents"].as_array().unwrap().len(), 2);
        assert_eq!(events[2]["kind"], "replace");
        assert_eq!(events[0]["patient"], "p1");
        assert_eq!(events[0]["awaiting"], json!(["mssante", "notifications"]));
        let claimed = lines(s.cli(&["dmp", "claim", "--consumer", "mssante", "--limit", "2"]));
        assert_eq!(claimed.len(), 2);
        assert_eq!(claimed[0]["attempts"], 1);
        // Leased: the same consumer gets only the other two; another consumer gets all four.
        assert_eq!(
            lines(s.cli(&["dmp", "claim", "--consumer", "mssante"])).len(),
            2
        );
        assert_eq!(
            lines(s.cli(&["dmp", "claim", "--consumer", "notifications"])).len(),
            4
        );
        assert!(lines(s.cli(&["dmp", "claim", "--consumer", "tardif"])).is_empty());
        let first = claimed[0]["id"].as_str().unwrap();
        assert!(
            s.cli(&["dmp", "ack", "--consumer", "mssante", first])
                .status
                .success()
        );
        assert_eq!(
            s.cli(&["dmp", "ack", "--consumer", "mssante", first])
                .status
                .code(),
            Some(1)
        );
        assert_eq!(
            lines(s.cli(&["dmp", "events", "--consumer", "mssante"])).len(),
            3
        );
        assert_eq!(
            lines(s.cli(&["dmp", "events", "--consumer", "notifications"])).len(),
            4
        );
        let consumers = lines(s.cli(&["dmp", "consumers"]));
        assert_eq!(
            consumers,
            vec![
                json!({"consumer": "mssante", "pending": 3}),
                json!({"consumer": "notifications", "pending": 4}),
                json!({"consumer": "tardif", "pending": 0}),
            ]
        );

        // The record: state, closure (feeds refused, documents kept), reopening; objection before any document.
        let st = s.get("Patient/p1/$dmp");
        st.expect(200);
        assert!(st.text.contains("\"open\""), "{}", st.text);
        s.post("Patient/p1/$dmp-close", &json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "demande du patient"}]})).expect(200);
        let d6 = SampleDoc::report("D6", 1_000);
        let blob_files = || walk(&s.data.path().join("blobs")).len();
        let before = blob_files();
        let r = submit(&s, "p1", "S7", &[(d6.clone(), sample::cda_n1(&p1, &d6))]);
        assert_eq!(
            (r.status, code(&r).as_str()),
            (409, "record-state"),
            "{}",
            r.text
        );
        assert!(r.diagnostics().contains("fermé"));
        // Refused before its bytes were written: nothing left on disk for a sweep.
        assert_eq!(blob_files(), before);
        assert_eq!(count(&s, "DocumentReference?patient=p1&status=current"), 3);
        s.post("Patient/p1/$dmp-reopen", &json!({})).expect(200);
        submit(&s, "p1", "S7", &[(d6.clone(), sample::cda_n1(&p1, &d6))]).expect(200);
        // Subscribed from now: only this feed's event.
        let late = lines(s.cli(&["dmp", "events", "--consumer", "tardif"]));
        assert_eq!(late.len(), 1, "{late:?}");
        assert_eq!(late[0]["awaiting"], json!(["tardif"]));
        assert!(s.cli(&["dmp", "unsubscribe", "tardif"]).status.success());
        assert_eq!(
            s.cli(&["dmp", "events", "--consumer", "tardif"])
                .status
                .code(),
            Some(2)
        );
        qualified(&s, "p3", &people[6]);
        let st = s.get("Patient/p3/$dmp");
        assert!(st.text.contains("\"valueBoolean\":false"), "{}", st.text);
        s.post("Patient/p3/$dmp-object", &json!({})).expect(200);
        let d7 = SampleDoc::report("D7", 1_000);
        let r = submit(
            &s,
            "p3",
            "S8",
            &[(d7.clone(), sample::cda_n1(&person(&people[6]), &d7))],
        );
        assert_eq!(
            (r.status, code(&r).as_str()),
            (409, "record-state"),
            "{}",
            r.text
        );
        assert!(r.diagnostics().contains("opposé"));
        // Objection is no longer possible once documents are there: closure is — and a closed record with
        // documents stays closed.
        let r = s.post("Patient/p1/$dmp-object", &json!({}));
        assert_eq!(r.status, 409, "{}", r.text);
        s.post("Patient/p1/$dmp-close", &json!({})).expect(200);
        let r = s.post("Patient/p1/$dmp-object", &json!({}));
        assert_eq!(r.status, 409, "{}", r.text);
        assert!(r.text.contains("reste fermé"), "{}", r.text);
        let st = s.get("Patient/p1/$dmp");
        assert!(st.text.contains("\"closed\""), "{}", st.text);
        s.post("Patient/p1/$dmp-reopen", &json!({})).expect(200);

        // The patient's trail shows the DMP operations.
        let trail = s.get("Patient/p1/$audit-trail");
        assert!(
            trail.text.contains("dmp-announce") && trail.text.contains("dmp-closed"),
            "{}",
            trail.text
        );

        // Integrity: a blob altered on disk is reported, never served.
        if backend == common::Backend::Sqlite {
            let blobs = s.data.path().join("blobs");
            let mut altered = false;
            for e in walk(&blobs) {
                let content = std::fs::read(&e).unwrap();
                if content == cda1 {
                    let mut c = content.clone();
                    c[100] ^= 1;
                    std::fs::write(&e, c).unwrap();
                    altered = true;
                }
            }
            assert!(altered);
            // Orphans (a feed's bytes written, then its transaction refused or interrupted): one written here —
            // the feeds refused above for a closed or opposed record left none; swept once old enough, never
            // the bytes a Binary names.
            let orphan = b"octets d'une soumission refusee";
            let name = socle_store::blob::sha256_hex(orphan);
            let dir = blobs.join(&name[0..2]).join(&name[2..4]);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(&name), orphan).unwrap();
            // An age past any date is refused with a message, not a crash.
            let out = s.cli(&["dmp", "sweep", "--older-than", "18446744073709551615"]);
            assert_eq!(out.status.code(), Some(2));
            assert!(String::from_utf8_lossy(&out.stderr).contains("--older-than"));
            let out = s.cli(&["dmp", "sweep", "--older-than", "3600"]);
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(" 0 document(s) orphelin"),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(
                std::process::Command::new("touch")
                    .args(["-d", "2 hours ago"])
                    .arg(dir.join(&name))
                    .status()
                    .unwrap()
                    .success()
            );
            for f in walk(&blobs) {
                if f.parent().is_some_and(|p| p.ends_with("tmp")) {
                    continue;
                }
                assert!(
                    std::process::Command::new("touch")
                        .args(["-d", "2 hours ago"])
                        .arg(&f)
                        .status()
                        .unwrap()
                        .success()
                );
            }
            let out = s.cli(&["dmp", "sweep", "--older-than", "3600", "--dry-run"]);
            assert!(
                String::from_utf8_lossy(&out.stdout)
                    .contains(" 1 document(s) orphelin(s) à supprimer"),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(dir.join(&name).exists());
            let out = s.cli(&["dmp", "sweep", "--older-than", "3600"]);
            assert!(
                String::from_utf8_lossy(&out.stdout)
                    .contains(" 1 document(s) orphelin(s) supprimé(s)"),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(!dir.join(&name).exists());
            // The other documents are still there (the altered one aside).
            let h = s.get(&format!("DocumentReference/{hidden_id}"));
            let u = h.json["content"][0]["attachment"]["url"].as_str().unwrap();
            let (st, _, bytes) = raw_get(&s, u, "text/xml");
            assert_eq!(st, 200);
            assert!(bytes.starts_with(b"<?xml"));
            let (st, _, bytes) = raw_get(&s, &url, "text/xml");
            assert_eq!(st, 500);
            assert!(String::from_utf8_lossy(&bytes).contains("altéré"));
        }
    }
}

/// A document over `--max-document` is refused as such (413 `too-large`, nothing stored), and a server whose
/// `--max-document` would not fit in `--max-body` once base64-encoded refuses to start, saying why.
#[test]
fn oversized_documents_are_named() {
    for backend in backends() {
        let s = Server::start_with(&backend, &["--max-document", "60000"]);
        let people = registry(&s, 20, 5);
        qualified(&s, "p1", &people[3]);
        let p1 = person(&people[3]);
        let before = stored(&s);
        let d = SampleDoc::report("GROS", 100_000);
        let cda = sample::cda_n1(&p1, &d);
        let r = submit(&s, "p1", "SG", &[(d, cda)]);
        assert_eq!(
            (r.status, code(&r).as_str()),
            (413, "too-large"),
            "{}",
            r.text
        );
        assert!(r.diagnostics().contains("60000"), "{}", r.text);
        assert_eq!(stored(&s), before);
        let d = SampleDoc::report("PETIT", 20_000);
        let cda = sample::cda_n1(&p1, &d);
        submit(&s, "p1", "SP", &[(d, cda)]).expect(200);
    }
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_socle"))
        .args(["serve", "--insecure-local", "--listen", "127.0.0.1:0"])
        .args(["--max-document", "20000000", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-body") && err.contains("26732204"),
        "{err}"
    );
}

/// A feed as vendors' software writes it (what an integration review tried): the Binary named by an absolute
/// URL, base64 in lines, a media type in capitals, a unique id written without `urn:oid:`; and a fed document's
/// bytes out of reach of direct writes, software included.
#[test]
fn feeds_as_vendors_write_them() {
    for backend in backends() {
        let s = Server::start(&backend);
        let people = registry(&s, 20, 3);
        qualified(&s, "p1", &people[3]);
        let p1 = person(&people[3]);

        // The Binary by an absolute URL of this server: the stored attachment points to the stored Binary.
        let d = SampleDoc::report("V1", 2_000);
        let cda = sample::cda_n1(&p1, &d);
        let mut b = sample::provide_bundle("p1", "SV1", &[(d.clone(), cda.clone())]);
        let abs = s.url("Binary/envoye-1");
        b["entry"][2]["fullUrl"] = json!(abs);
        b["entry"][1]["resource"]["content"][0]["attachment"]["url"] = json!(abs);
        let r = s.post("", &b);
        r.expect(200);
        let doc = s.get(&format!(
            "DocumentReference/{}",
            created_id(&r.json["entry"][1])
        ));
        let url = doc.json["content"][0]["attachment"]["url"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            url.starts_with("Binary/") && url != "Binary/envoye-1",
            "{url}"
        );
        let (status, _, bytes) = raw_get(&s, &url, "text/xml");
        assert_eq!((status, bytes.as_slice()), (200, cda.as_slice()));

        // base64 in lines of 76 with a final line break, and the media type in capitals.
        let d2 = SampleDoc::report("V2", 2_000);
        let cda2 = sample::cda_n1(&p1, &d2);
        let mut b = sample::provide_bundle("p1", "SV2", &[(d2.clone(), cda2.clone())]);
        let data = b["entry"][2]["resource"]["data"]
            .as_str()
            .unwrap()
            .to_string();
        let lines: Vec<&str> = data
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        b["entry"][2]["resource"]["data"] = json!(format!("{}\n", lines.join("\n")));
        b["entry"][2]["resource"]["contentType"] = json!("TEXT/XML");
        b["entry"][1]["resource"]["content"][0]["attachment"]["contentType"] = json!("Text/Xml");
        s.post("", &b).expect(200);

        // The same document under another writing of its unique id (no `urn:oid:`, another system): a duplicate.
        let mut b = sample::provide_bundle("p1", "SV3", &[(d2.clone(), cda2.clone())]);
        b["entry"][1]["resource"]["masterIdentifier"] =
            json!({"system": "urn:ietf:rfc:3986", "value": "1.2.250.1.999.1^V2"});
        let r = s.post("", &b);
        assert_eq!(
            (r.status, code(&r)),
            (409, "duplicate".into()),
            "{}",
            r.text
        );
        // The same submission set's id without its `urn:oid:`: a duplicate too.
        let d4 = SampleDoc::report("V4", 1_000);
        let mut b = sample::provide_bundle("p1", "SV2", &[(d4.clone(), sample::cda_n1(&p1, &d4))]);
        b["entry"][0]["resource"]["identifier"][0] =
            json!({"use": "usual", "value": "1.2.250.1.999.2.SV2"});
        let r = s.post("", &b);
        assert_eq!(
            (r.status, code(&r)),
            (409, "duplicate".into()),
            "{}",
            r.text
        );

        // A fed document's bytes change only by a new version of the document: not by software either.
        let before = stored(&s);
        let bin = url.trim_start_matches("Binary/").to_string();
        let other = json!({"resourceType": "Binary", "id": bin, "contentType": "text/plain", "data": "eA=="});
        let r = s.put(&url, &other);
        assert_eq!(
            (r.status, r.text.contains("document-content")),
            (403, true),
            "{}",
            r.text
        );
        let r = s.delete(&url);
        assert_eq!(
            (r.status, r.text.contains("document-content")),
            (403, true),
            "{}",
            r.text
        );
        let r = s.post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": other, "request": {"method": "PUT", "url": url}}]}),
        );
        assert_eq!(r.status, 403, "{}", r.text);
        let r = s.delete(&format!("Binary?_id={bin}"));
        assert_eq!(r.status, 400, "{}", r.text);
        let (status, _, bytes) = raw_get(&s, &url, "text/xml");
        assert_eq!((status, bytes.as_slice()), (200, cda.as_slice()));
        assert_eq!(stored(&s), before);
        // A retrieval of a version the client holds: 304, nothing sent again.
        let etag = ureq::get(&s.url(&url))
            .set("Accept", "text/xml")
            .call()
            .unwrap()
            .header("etag")
            .unwrap()
            .to_string();
        let again = ureq::get(&s.url(&url))
            .set("Accept", "text/xml")
            .set("If-None-Match", &etag)
            .call()
            .unwrap();
        assert_eq!(again.status(), 304);
        // … or a copy as recent as its last change, or any (`*`).
        for (h, v) in [
            ("If-Modified-Since", "Tue, 01 Jan 2999 00:00:00 GMT"),
            ("If-None-Match", "*"),
        ] {
            let again = ureq::get(&s.url(&url))
                .set("Accept", "text/xml")
                .set(h, v)
                .call()
                .unwrap();
            assert_eq!(again.status(), 304, "{h}");
        }
        // A part of the document (Range), or a refusal naming its size.
        let part = |range: &str| {
            let r = match ureq::get(&s.url(&url))
                .set("Accept", "text/xml")
                .set("Range", range)
                .call()
            {
                Ok(r) | Err(ureq::Error::Status(_, r)) => r,
                Err(e) => panic!("{e}"),
            };
            let (status, cr) = (r.status(), r.header("content-range").map(str::to_string));
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut r.into_reader(), &mut b).unwrap();
            (status, cr, b)
        };
        let n = cda.len();
        let (status, cr, b) = part("bytes=0-9");
        assert_eq!(
            (status, cr.as_deref(), b.as_slice()),
            (206, Some(format!("bytes 0-9/{n}").as_str()), &cda[..10])
        );
        let (status, _, b) = part("bytes=-5");
        assert_eq!((status, b.as_slice()), (206, &cda[n - 5..]));
        let (status, cr, _) = part("bytes=999999999-");
        assert_eq!((status, cr), (416, Some(format!("bytes */{n}"))));
        // Nor is the patient record of a DMP deleted from under its documents.
        let r = s.delete("Patient/p1");
        assert_eq!(r.status, 409, "{}", r.text);
        s.get("Patient/p1").expect(200);
    }
}
