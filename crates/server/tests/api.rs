//! FHIR REST interactions against the real binary, on every backend.

mod common;

use common::{Server, backends};
use serde_json::{Value, json};

/// The latest entry of `Patient/{id}`'s history is a creation by `POST Patient` (the server chose the id).
fn shows_as_post(s: &Server, id: &str) {
    let h = s.get(&format!("Patient/{id}/_history"));
    let request = &h.json["entry"][0]["request"];
    assert_eq!(
        (&request["method"], &request["url"]),
        (&json!("POST"), &json!("Patient")),
        "{}",
        h.text
    );
}

fn patient(family: &str, given: &str, birth: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family, "given": [given]}], "birthDate": birth, "gender": "female",
           "identifier": [{"system": "urn:oid:1.2.250.1.999.1.1", "value": format!("{family}-{birth}")}]})
}

#[test]
fn crud_versioning_and_headers() {
    for b in backends() {
        let s = Server::start(&b);
        // create
        let r = s.post("Patient", &patient("Martin", "Élodie", "1975-03-04"));
        r.expect(201);
        let id = r.json["id"].as_str().unwrap().to_string();
        assert_eq!(r.header("etag"), Some("W/\"1\""));
        let loc = r.header("location").unwrap();
        assert!(loc.ends_with(&format!("/Patient/{id}/_history/1")), "{loc}");
        assert!(r.header("last-modified").is_some());
        assert_eq!(r.json["meta"]["versionId"], "1");
        // read
        let r = s.get(&format!("Patient/{id}"));
        r.expect(200);
        assert_eq!(r.json["name"][0]["given"][0], "Élodie");
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/fhir+json")
        );
        // update with If-Match
        let mut p = r.json.clone();
        p["gender"] = json!("male");
        let r = s.request(
            "PUT",
            &format!("Patient/{id}"),
            Some(p.to_string()),
            &[("If-Match", "W/\"1\"")],
        );
        r.expect(200);
        assert_eq!(r.json["meta"]["versionId"], "2");
        // stale If-Match: 412, nothing changed
        let r = s.request(
            "PUT",
            &format!("Patient/{id}"),
            Some(p.to_string()),
            &[("If-Match", "W/\"1\"")],
        );
        r.expect(412);
        assert!(r.diagnostics().contains("version"), "{}", r.text);
        s.get(&format!("Patient/{id}")).expect(200);
        assert_eq!(
            s.get(&format!("Patient/{id}")).json["meta"]["versionId"],
            "2"
        );
        // vread
        let r = s.get(&format!("Patient/{id}/_history/1"));
        r.expect(200);
        assert_eq!(r.json["gender"], "female");
        s.get(&format!("Patient/{id}/_history/9")).expect(404);
        // create-on-update with the client's id
        let mut q = patient("Bernard", "Luc", "1990-01-01");
        q["id"] = json!("client-id-1");
        s.put("Patient/client-id-1", &q).expect(201);
        s.put("Patient/client-id-1", &q).expect(200);
        // Prefer
        let r = s.request(
            "POST",
            "Patient",
            Some(patient("A", "B", "2000").to_string()),
            &[("Prefer", "return=minimal")],
        );
        r.expect(201);
        assert!(r.text.is_empty());
        let r = s.request(
            "POST",
            "Patient",
            Some(patient("A", "B", "2000").to_string()),
            &[("Prefer", "return=OperationOutcome")],
        );
        r.expect(201);
        assert_eq!(r.json["resourceType"], "OperationOutcome");
        // delete, then 410, history keeps all versions; the unfiltered count follows
        let live = |s: &Server| {
            s.get("Patient?_summary=count").json["total"]
                .as_i64()
                .unwrap()
        };
        let before = live(&s);
        assert_eq!(before, s.get("Patient?_count=1000").ids().len() as i64);
        s.delete(&format!("Patient/{id}")).expect(204);
        assert_eq!(live(&s), before - 1);
        s.get(&format!("Patient/{id}")).expect(410);
        s.delete(&format!("Patient/{id}")).expect(204);
        let h = s.get(&format!("Patient/{id}/_history"));
        h.expect(200);
        assert_eq!(h.json["type"], "history");
        let entries = h.json["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0]["request"]["method"], "DELETE");
        assert_eq!(entries[2]["request"]["method"], "POST");
        // re-create after delete
        let mut again = patient("Martin", "Élodie", "1975-03-04");
        again["id"] = json!(id.clone());
        let r = s.put(&format!("Patient/{id}"), &again);
        r.expect(201);
        assert_eq!(r.json["meta"]["versionId"], "4");
        assert_eq!(live(&s), before);
        // type and system history, _count and next link
        let h = s.get("Patient/_history?_count=2");
        assert_eq!(h.json["entry"].as_array().unwrap().len(), 2);
        let next = h.link("next").expect("lien next");
        let h2 = s.get(&next);
        h2.expect(200);
        assert!(!h2.json["entry"].as_array().unwrap().is_empty());
        let all = s.get("_history?_count=100");
        assert!(all.json["entry"].as_array().unwrap().len() >= 8);
        let future = s.get("_history?_since=2999-01-01");
        assert!(future.json.get("entry").is_none());
        // `_at`: the versions current at some moment of that date's span (to the second here).
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
        };
        // The second of an instant, as a FHIR dateTime of that precision.
        let at = |ms: &i64| format!("{}Z", &socle_store::repo::iso_instant(*ms)[..19]);
        let versions = |q: &str| -> Vec<String> {
            let h = s.get(q);
            h.expect(200);
            h.json["entry"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            e["resource"]["meta"]["versionId"]
                                .as_str()
                                .unwrap_or("")
                                .to_string()
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut body = patient("Instant", "Ana", "1980-02-02");
        body["id"] = json!("at1");
        s.put("Patient/at1", &body).expect(201);
        let first = now();
        // The next version in a later second.
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        body["gender"] = json!("female");
        s.put("Patient/at1", &body).expect(200);
        // A resource deleted before the moment asked: not in the history at that moment.
        let mut gone = patient("Parti", "Paul", "1980-03-03");
        gone["id"] = json!("atdel");
        s.put("Patient/atdel", &gone).expect(201);
        s.delete("Patient/atdel").expect(204);
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        let later = now();
        assert_eq!(
            versions(&format!("Patient/at1/_history?_at={}", at(&first))),
            ["1"]
        );
        assert_eq!(
            versions(&format!("Patient/at1/_history?_at={}", at(&later))),
            ["2"]
        );
        assert_eq!(
            versions(&format!("Patient/at1/_history?_at={}", &at(&first)[..4])),
            ["2", "1"]
        );
        // The type's history at a moment: each resource's version of then (at1's second, not its first).
        let h = s.get(&format!("Patient/_history?_at={}&_count=100", at(&later)));
        let of_at1: Vec<&Value> = h.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["id"] == "at1")
            .collect();
        assert_eq!(of_at1.len(), 1, "{}", h.text);
        assert!(
            !h.text.contains("Patient/atdel"),
            "a resource deleted before the moment: {}",
            h.text
        );
        assert_eq!(of_at1[0]["resource"]["meta"]["versionId"], "2");
        s.get("Patient/at1/_history?_at=hier").expect(400);
        // _pretty and _format
        let r = s.get(&format!("Patient/{id}?_pretty=true"));
        assert!(r.text.contains("\n  "));
        s.get(&format!("Patient/{id}?_format=xml")).expect(406);
        s.get(&format!("Patient/{id}?_format=json")).expect(200);
    }
}

/// `Binary` in its own format (FHIR's REST convention): a PDF posted as `application/pdf` is stored as a
/// `Binary` holding it, read back byte for byte in its own type and as a resource; `X-Security-Context` names the
/// resource whose rules it follows; `PUT` replaces it the same way; FHIR's own types still mean a resource.
#[test]
fn binary_in_its_own_format() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for b in backends() {
        let s = Server::start(&b);
        let send = |method: &str, path: &str, ct: &str, bytes: &[u8], extra: &[(&str, &str)]| {
            let mut r = ureq::request(method, &s.url(path)).set("Content-Type", ct);
            for (k, v) in extra {
                r = r.set(k, v);
            }
            match r.send_bytes(bytes) {
                Ok(r) | Err(ureq::Error::Status(_, r)) => {
                    let status = r.status();
                    let location = r.header("location").map(str::to_string);
                    let text = r.into_string().unwrap_or_default();
                    (
                        status,
                        location,
                        serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
                    )
                }
                Err(e) => panic!("{method} {path} : {e}"),
            }
        };
        let fetch = |path: &str, accept: &str| {
            let r = ureq::get(&s.url(path))
                .set("Accept", accept)
                .call()
                .expect("lecture");
            let ct = r.header("content-type").unwrap_or("").to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).expect("corps");
            (ct, bytes)
        };
        let pdf: Vec<u8> = b"%PDF-1.4\n"
            .iter()
            .copied()
            .chain((0..=255u8).cycle().take(3000))
            .collect();
        let (status, location, made) = send(
            "POST",
            "Binary",
            "application/pdf",
            &pdf,
            &[("X-Security-Context", "Patient/p-binaire")],
        );
        assert_eq!(status, 201, "{made}");
        assert!(location.is_some_and(|l| l.contains("/Binary/")));
        assert_eq!(made["contentType"], "application/pdf");
        assert_eq!(made["data"], b64(&pdf));
        assert_eq!(made["securityContext"]["reference"], "Patient/p-binaire");
        let id = made["id"].as_str().expect("id").to_string();
        let (ct, bytes) = fetch(&format!("Binary/{id}"), "application/pdf");
        assert!(ct.starts_with("application/pdf"), "{ct}");
        assert_eq!(bytes, pdf);
        let (ct, bytes) = fetch(&format!("Binary/{id}"), "application/fhir+json");
        assert!(ct.starts_with("application/fhir+json"), "{ct}");
        let v: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(
            (v["contentType"].clone(), v["data"].clone()),
            (json!("application/pdf"), json!(b64(&pdf)))
        );
        // A CDA document is XML but not FHIR's XML: its own format too, kept as sent, its charset with it.
        let cda = "<?xml version=\"1.0\"?><ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>".as_bytes();
        let (status, _, v) = send(
            "PUT",
            &format!("Binary/{id}"),
            "Text/XML ;  charset=utf-8",
            cda,
            &[],
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            (v["id"].as_str(), v["meta"]["versionId"].as_str()),
            (Some(id.as_str()), Some("2"))
        );
        assert_eq!(v["contentType"], "text/xml; charset=utf-8");
        assert!(v.get("securityContext").is_none(), "{v}");
        let (ct, bytes) = fetch(&format!("Binary/{id}"), "text/xml");
        assert_eq!(
            (ct.as_str(), bytes.as_slice()),
            ("text/xml; charset=utf-8", cda)
        );
        // An X-Security-Context that names nothing: 400, nothing stored.
        let (status, _, v) = send(
            "POST",
            "Binary",
            "application/pdf",
            &pdf,
            &[("X-Security-Context", " ")],
        );
        assert_eq!(status, 400, "{v}");
        assert!(
            v["issue"][0]["diagnostics"]
                .as_str()
                .unwrap_or("")
                .contains("X-Security-Context"),
            "{v}"
        );
        // An empty body: a Binary without data.
        let (status, _, v) = send("POST", "Binary", "application/octet-stream", b"", &[]);
        assert_eq!(status, 201, "{v}");
        assert!(v.get("data").is_none(), "{v}");
        // FHIR's JSON is a resource; FHIR's XML is refused for Binary as for any type.
        let (status, _, v) = send(
            "POST",
            "Binary",
            "application/fhir+json",
            json!({"resourceType": "Binary", "contentType": "text/plain", "data": "QQ=="})
                .to_string()
                .as_bytes(),
            &[],
        );
        assert_eq!((status, v["data"].as_str()), (201, Some("QQ==")), "{v}");
        let (status, _, v) = send("POST", "Binary", "application/fhir+xml", b"<Binary/>", &[]);
        assert_eq!(status, 415, "{v}");
        // Other types are not read in their own format.
        let (status, _, _) = send("POST", "Patient", "application/pdf", &pdf, &[]);
        assert_eq!(status, 415);
        // Without authentication (`--insecure-local`), a page of another origin open in a browser may not write
        // here (a `text/plain` body needs no CORS approval) nor read; the server's own origin may.
        let host = s
            .url("")
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        for origin in ["http://intrus.example", "null", "http://localhost:1"] {
            let (status, _, v) = send(
                "POST",
                "Binary",
                "text/plain",
                b"hop",
                &[("Origin", origin)],
            );
            assert_eq!(status, 403, "{origin}: {v}");
            assert!(
                v["issue"][0]["diagnostics"]
                    .as_str()
                    .unwrap_or("")
                    .contains("origine"),
                "{v}"
            );
        }
        let r = s.request(
            "GET",
            "metadata",
            None,
            &[("Origin", "http://intrus.example")],
        );
        r.expect(403);
        let (status, _, v) = send(
            "POST",
            "Binary",
            "text/plain",
            b"hop",
            &[("Origin", &format!("http://{host}"))],
        );
        assert_eq!(status, 201, "{v}");
        // Over the body limit: 413, as for JSON.
        let big = vec![0u8; 17 * 1024 * 1024];
        let (status, _, _) = send("POST", "Binary", "application/octet-stream", &big, &[]);
        assert_eq!(status, 413);
    }
}

#[test]
fn conditional_interactions() {
    for b in backends() {
        let s = Server::start(&b);
        let p = patient("Conditionnel", "Anne", "1960-02-02");
        let h = [(
            "If-None-Exist",
            "identifier=urn:oid:1.2.250.1.999.1.1|Conditionnel-1960-02-02",
        )];
        let r1 = s.request("POST", "Patient", Some(p.to_string()), &h);
        r1.expect(201);
        let r2 = s.request("POST", "Patient", Some(p.to_string()), &h);
        r2.expect(200);
        assert_eq!(r1.json["id"], r2.json["id"]);
        // conditional update: one match → update
        let mut p2 = p.clone();
        p2["gender"] = json!("other");
        let r = s.put(
            "Patient?identifier=urn:oid:1.2.250.1.999.1.1|Conditionnel-1960-02-02",
            &p2,
        );
        r.expect(200);
        assert_eq!(r.json["id"], r1.json["id"]);
        assert_eq!(r.json["meta"]["versionId"], "2");
        // no match → create
        let r = s.put(
            "Patient?identifier=urn:oid:1.2.250.1.999.1.1|nobody",
            &patient("Nouveau", "X", "2001-01-01"),
        );
        r.expect(201);
        // The server chose its id: its history shows a creation (POST), not a PUT to a URL nobody sent.
        shows_as_post(&s, r.json["id"].as_str().unwrap());
        // several matches → 412
        s.post("Patient", &patient("Double", "A", "1999-09-09"))
            .expect(201);
        s.post("Patient", &patient("Double", "B", "1999-09-09"))
            .expect(201);
        s.put(
            "Patient?family=Double",
            &patient("Double", "C", "1999-09-09"),
        )
        .expect(412);
        s.request("DELETE", "Patient?family=Double", None, &[])
            .expect(412);
        // conditional delete with one match
        s.request(
            "DELETE",
            "Patient?identifier=urn:oid:1.2.250.1.999.1.1|Conditionnel-1960-02-02",
            None,
            &[],
        )
        .expect(204);
        s.get(&format!("Patient/{}", r1.json["id"].as_str().unwrap()))
            .expect(410);

        // No match, but the body names an existing resource the criteria did not select: not overwritten.
        let mut victim = patient("Victime", "V", "1970-07-07");
        victim["id"] = json!("victime");
        s.put("Patient/victime", &victim).expect(201);
        let mut other = victim.clone();
        other["name"][0]["family"] = json!("Ecrase");
        let r = s.put("Patient?identifier=urn:v|personne", &other);
        assert_eq!(r.status, 409, "{}", r.text);
        assert_eq!(s.get("Patient/victime").json["meta"]["versionId"], "1");
        // Criteria made of result parameters only select nothing: refused, nothing written or deleted.
        for (method, path) in [
            ("DELETE", "Patient?_count=1"),
            ("PUT", "Patient?_sort=_id"),
            ("DELETE", "Patient?_summary=count"),
        ] {
            let body = (method == "PUT").then(|| other.to_string());
            let r = s.request(method, path, body, &[]);
            assert_eq!(r.status, 400, "{method} {path} : {}", r.text);
        }
        let r = s.request(
            "POST",
            "Patient",
            Some(patient("Compte", "C", "1980-01-01").to_string()),
            &[("If-None-Exist", "_summary=count")],
        );
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(s.get("Patient/victime").json["meta"]["versionId"], "1");

        // If-Match on a deletion: the version the caller has seen, else 412 and nothing deleted.
        s.put("Patient/victime", &victim).expect(200);
        for stale in ["W/\"1\"", "W/\"9\""] {
            let r = s.request("DELETE", "Patient/victime", None, &[("If-Match", stale)]);
            assert_eq!(r.status, 412, "{stale} : {}", r.text);
        }
        let r = s.request(
            "DELETE",
            "Patient/victime",
            None,
            &[("If-Match", "n'importe quoi")],
        );
        assert_eq!(r.status, 400, "{}", r.text);
        s.get("Patient/victime").expect(200);
        let tx = |version: &str| {
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"request": {"method": "DELETE", "url": "Patient/victime", "ifMatch": format!("W/\"{version}\"")}}]})
        };
        let r = s.post("", &tx("1"));
        assert_eq!(r.status, 412, "{}", r.text);
        s.get("Patient/victime").expect(200);
        s.post("", &tx("2")).expect(200);
        s.get("Patient/victime").expect(410);
        s.request(
            "DELETE",
            "Patient/victime",
            None,
            &[("If-Match", "W/\"2\"")],
        )
        .expect(412);
        // Created again by PUT after the deletion: its history says PUT to that id (a POST makes a new id).
        s.put("Patient/victime", &victim).expect(201);
        let h = s.get("Patient/victime/_history");
        assert_eq!(h.json["entry"][0]["request"]["method"], "PUT", "{}", h.text);
        assert_eq!(
            h.json["entry"][0]["request"]["url"], "Patient/victime",
            "{}",
            h.text
        );
        // Its first version, created by PUT too, is that PUT; a POST-created resource shows its POST.
        let entries = h.json["entry"].as_array().unwrap();
        let first = &entries[entries.len() - 1];
        assert_eq!(first["resource"]["meta"]["versionId"], "1", "{}", h.text);
        assert_eq!(
            (
                &first["request"]["method"],
                &first["request"]["url"],
                &first["response"]["status"]
            ),
            (
                &json!("PUT"),
                &json!("Patient/victime"),
                &json!("201 Created")
            ),
            "{}",
            h.text
        );
        let posted = s.post("Patient", &patient("Poste", "Paul", "1950-05-05"));
        posted.expect(201);
        shows_as_post(&s, posted.json["id"].as_str().unwrap());

        // `If-None-Match: *`: create, never overwrite; `If-Match: *`: only if it exists.
        let mut body = patient("Sansecraser", "Inès", "1971-01-01");
        body["id"] = json!("inm");
        let put = |headers: &[(&str, &str)]| {
            s.request("PUT", "Patient/inm", Some(body.to_string()), headers)
        };
        put(&[("If-Match", "*")]).expect(412);
        put(&[("If-None-Match", "*")]).expect(201);
        let r = put(&[("If-None-Match", "*")]);
        r.expect(412);
        assert!(r.diagnostics().contains("existe déjà"), "{}", r.text);
        assert_eq!(s.get("Patient/inm").json["meta"]["versionId"], "1");
        put(&[("If-Match", "*")]).expect(200);
        for bad in [
            vec![("If-None-Match", "W/\"1\"")],
            vec![("If-Match", "W/\"0\"")],
            vec![("If-Match", "W/\"2\""), ("If-None-Match", "*")],
        ] {
            put(&bad).expect(400);
        }
        assert_eq!(s.get("Patient/inm").json["meta"]["versionId"], "2");
        s.request("DELETE", "Patient/inm", None, &[("If-Match", "*")])
            .expect(204);
        s.request("DELETE", "Patient/inm", None, &[("If-Match", "*")])
            .expect(412);
        // A deleted resource may be created again under `If-None-Match: *`.
        put(&[("If-None-Match", "*")]).expect(201);

        // Conditional reads: `If-None-Match` (an ETag among several, or `*`), else `If-Modified-Since`.
        let get = |headers: &[(&str, &str)]| s.request("GET", "Patient/inm", None, headers);
        let v = get(&[]).json["meta"]["versionId"]
            .as_str()
            .unwrap()
            .to_string();
        let etag = format!("W/\"{v}\"");
        get(&[("If-None-Match", &format!("W/\"999\", {etag}"))]).expect(304);
        get(&[("If-None-Match", "*")]).expect(304);
        get(&[("If-None-Match", "W/\"999\"")]).expect(200);
        get(&[("If-Modified-Since", "Tue, 01 Jan 2999 00:00:00 GMT")]).expect(304);
        get(&[("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")]).expect(200);
        let last = get(&[]).header("last-modified").unwrap().to_string();
        get(&[("If-Modified-Since", &last)]).expect(304);
        // `If-None-Match` decides when both are sent.
        get(&[
            ("If-None-Match", "W/\"999\""),
            ("If-Modified-Since", "Tue, 01 Jan 2999 00:00:00 GMT"),
        ])
        .expect(200);

        // `_summary` and `_elements` on a read and a version read: shaped and tagged SUBSETTED.
        let r = s.get("Patient/inm?_elements=birthDate");
        r.expect(200);
        assert_eq!(r.json["birthDate"], "1971-01-01", "{}", r.text);
        assert!(r.json.get("name").is_none(), "{}", r.text);
        assert!(r.text.contains("SUBSETTED"), "{}", r.text);
        let r = s.get(&format!("Patient/inm/_history/{v}?_summary=true"));
        r.expect(200);
        assert!(
            r.json.get("name").is_some() && r.text.contains("SUBSETTED"),
            "{}",
            r.text
        );
        let r = s.get("Patient/inm?_summary=false");
        assert!(!r.text.contains("SUBSETTED"), "{}", r.text);
        for bad in ["_summary=count", "_summary=bogus", "_elements=nope"] {
            let r = s.get(&format!("Patient/inm?{bad}"));
            r.expect(400);
            assert!(
                r.diagnostics().contains(bad.split('=').next().unwrap()),
                "{}",
                r.text
            );
        }
    }
}

#[test]
fn transaction_is_atomic_and_resolves_references() {
    for b in backends() {
        let s = Server::start(&b);
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": patient("Transac", "Paul", "1950-05-05"),
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059", "resource": {"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
                "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]});
        let r = s.post("", &tx);
        r.expect(200);
        assert_eq!(r.json["type"], "transaction-response");
        let loc = r.json["entry"][0]["response"]["location"].as_str().unwrap();
        assert!(
            r.json["entry"][0]["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("201")
        );
        let pid = loc.split('/').rev().nth(2).unwrap().to_string();
        let obs = s.get(&format!("Observation?subject=Patient/{pid}"));
        assert_eq!(obs.ids().len(), 1);
        let o = &obs.json["entry"][0]["resource"];
        assert_eq!(o["subject"]["reference"], format!("Patient/{pid}"));

        // A broken entry: nothing at all is written.
        let before = s.get("Patient?_summary=count").json["total"].clone();
        let bad = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient("Atomique", "Zoé", "1980-01-01"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": null}},
             "request": {"method": "POST", "url": "Observation"}}
        ]});
        let r = s.post("", &bad);
        assert!(r.status == 400 || r.status == 422, "{}", r.text);
        assert!(r.text.contains("entry[1]"), "{}", r.text);
        assert_eq!(s.get("Patient?_summary=count").json["total"], before);
        assert!(s.get("Patient?family=Atomique").ids().is_empty());

        // Batch: entries independent.
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": patient("Lot", "Un", "1970-01-01"), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
            {"request": {"method": "GET", "url": format!("Patient/{pid}")}}
        ]});
        let r = s.post("", &batch);
        r.expect(200);
        assert_eq!(r.json["type"], "batch-response");
        assert!(
            r.json["entry"][0]["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("201")
        );
        assert!(
            r.json["entry"][1]["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("404")
        );
        assert_eq!(r.json["entry"][2]["resource"]["id"], pid);
        // Prefer on a Bundle: the resources as stored, or an outcome per entry; no empty `entry`.
        let one = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient("Rendu", "R", "1970-01-01"), "request": {"method": "POST", "url": "Patient"}}]});
        let r = s.request(
            "POST",
            "",
            Some(one.to_string()),
            &[("Prefer", "return=representation")],
        );
        r.expect(200);
        assert_eq!(
            r.json["entry"][0]["resource"]["name"][0]["family"], "Rendu",
            "{}",
            r.text
        );
        let r = s.request(
            "POST",
            "",
            Some(one.to_string()),
            &[("Prefer", "return=OperationOutcome")],
        );
        r.expect(200);
        assert_eq!(
            r.json["entry"][0]["response"]["outcome"]["resourceType"], "OperationOutcome",
            "{}",
            r.text
        );
        assert!(r.json["entry"][0].get("resource").is_none());
        let r = s.post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction"}),
        );
        r.expect(200);
        assert!(r.json.get("entry").is_none(), "{}", r.text);
        // In a batch an entry that cannot be read is answered alone; the others are processed.
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "PATCH", "url": format!("Patient/{pid}")}},
            {"request": {"method": "POST", "url": "Patient"}},
            {"resource": patient("Lot", "Deux", "1970-01-01"), "request": {"method": "POST", "url": "Patient"}}
        ]});
        let r = s.post("", &batch);
        r.expect(200);
        let status = |i: usize| {
            r.json["entry"][i]["response"]["status"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert!(
            status(0).starts_with("400") && status(1).starts_with("400"),
            "{}",
            r.text
        );
        assert!(status(2).starts_with("201"), "{}", r.text);
        assert!(
            r.json["entry"][1]["response"]["outcome"]
                .to_string()
                .contains("resource absent"),
            "{}",
            r.text
        );
        // Histories read in a batch: the instance's, the type's and the system's, each its own history Bundle.
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": format!("Patient/{pid}/_history")}},
            {"request": {"method": "GET", "url": "Patient/_history?_count=1"}},
            {"request": {"method": "GET", "url": "_history?_count=2"}},
            {"request": {"method": "GET", "url": "Patient/inconnu-9/_history"}}
        ]});
        let r = s.post("", &batch);
        r.expect(200);
        let direct = s.get(&format!("Patient/{pid}/_history"));
        let h = &r.json["entry"][0]["resource"];
        assert_eq!(h["type"], "history", "{}", r.text);
        assert_eq!(h["total"], direct.json["total"], "{}", r.text);
        assert_eq!(
            h["entry"].as_array().map(Vec::len),
            direct.json["entry"].as_array().map(Vec::len),
            "{}",
            r.text
        );
        assert_eq!(
            r.json["entry"][1]["resource"]["entry"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "{}",
            r.text
        );
        assert_eq!(
            r.json["entry"][2]["resource"]["entry"]
                .as_array()
                .map(Vec::len),
            Some(2),
            "{}",
            r.text
        );
        assert!(
            r.json["entry"][3]["response"]["status"]
                .as_str()
                .is_some_and(|st| st.starts_with("404")),
            "{}",
            r.text
        );

        // A fullUrl given twice, or a `urn:uuid:` that names no entry: refused, nothing written.
        let before = s.get("Patient?_summary=count").json["total"].clone();
        let u = "urn:uuid:11111111-1111-4111-8111-111111111111";
        let twice = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": u, "resource": patient("Deux", "A", "1970-01-01"), "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": u, "resource": patient("Deux", "B", "1970-01-01"), "request": {"method": "POST", "url": "Patient"}}
        ]});
        let r = s.post("", &twice);
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(r.text.contains("fullUrl en double"), "{}", r.text);
        let dangling = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "urn:uuid:09b30000-0000-4000-8000-000000000000"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]});
        let r = s.post("", &dangling);
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(r.text.contains("aucune entrée"), "{}", r.text);
        assert_eq!(s.get("Patient?_summary=count").json["total"], before);
    }
}

/// The fullUrl of a conditional entry (a create with `ifNoneExist`, an update by criteria) names the resource
/// the entry ends on — found or created —, whatever the entries' order: the "create the patient if missing,
/// then add the observations" loaders rely on it.
#[test]
fn references_to_conditional_entries_resolve_to_what_they_end_on() {
    for b in backends() {
        let s = Server::start(&b);
        let ident = |v: &str| json!([{"system": "urn:oid:1.2.3.4", "value": v}]);
        let obs = |subject: &str| {
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "pouls"},
                   "subject": {"reference": subject}})
        };
        let pu = "urn:uuid:6a1e1a8e-0000-4000-8000-000000000001";
        let conditional_create = |value: &str, obs_first: bool| {
            let mut p = patient("Conditionnel", "Cé", "1960-06-06");
            p["identifier"] = ident(value);
            let pe = json!({"fullUrl": pu, "resource": p,
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier=urn:oid:1.2.3.4|{value}")}});
            let oe =
                json!({"resource": obs(pu), "request": {"method": "POST", "url": "Observation"}});
            let entries = if obs_first {
                vec![oe, pe]
            } else {
                vec![pe, oe]
            };
            json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
        };
        let subject_of_new_obs = |r: &common::Resp, i: usize| {
            let loc = r.json["entry"][i]["response"]["location"]
                .as_str()
                .unwrap()
                .to_string();
            let path = loc
                .split("/fhir/")
                .nth(1)
                .unwrap()
                .split("/_history")
                .next()
                .unwrap()
                .to_string();
            s.get(&path).json["subject"]["reference"]
                .as_str()
                .unwrap()
                .to_string()
        };
        // First time: the Patient is created and the Observation points to it.
        let r = s.post("", &conditional_create("CC1", false));
        r.expect(200);
        assert!(
            r.json["entry"][0]["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("201"),
            "{}",
            r.text
        );
        let pid = s.get("Patient?identifier=urn:oid:1.2.3.4|CC1").ids()[0].clone();
        assert_eq!(subject_of_new_obs(&r, 1), format!("Patient/{pid}"));
        // Again, in both orders: the Patient is found (200), nothing created, the Observation points to it.
        for obs_first in [false, true] {
            let r = s.post("", &conditional_create("CC1", obs_first));
            r.expect(200);
            let (pi, oi) = if obs_first { (1, 0) } else { (0, 1) };
            assert!(
                r.json["entry"][pi]["response"]["status"]
                    .as_str()
                    .unwrap()
                    .starts_with("200"),
                "{}",
                r.text
            );
            assert_eq!(
                subject_of_new_obs(&r, oi),
                format!("Patient/{pid}"),
                "{b:?} {}",
                r.text
            );
            assert_eq!(
                s.get("Patient?identifier=urn:oid:1.2.3.4|CC1").ids().len(),
                1
            );
        }
        // A conditional update's fullUrl: created (no match, no id) then updated (match), referenced by an
        // entry processed before it (a POST).
        let cu = |value: &str, given: &str| {
            let mut p = patient("MiseAJour", given, "1961-07-07");
            p["identifier"] = ident(value);
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": obs(pu), "request": {"method": "POST", "url": "Observation"}},
                {"fullUrl": pu, "resource": p,
                 "request": {"method": "PUT", "url": format!("Patient?identifier=urn:oid:1.2.3.4|{value}")}}]})
        };
        let r = s.post("", &cu("CU1", "Un"));
        r.expect(200);
        let found = s.get("Patient?identifier=urn:oid:1.2.3.4|CU1");
        assert_eq!(found.ids().len(), 1, "{}", found.text);
        let cu_id = found.ids()[0].clone();
        assert_eq!(
            subject_of_new_obs(&r, 0),
            format!("Patient/{cu_id}"),
            "{}",
            r.text
        );
        let r = s.post("", &cu("CU1", "Deux"));
        r.expect(200);
        assert_eq!(
            subject_of_new_obs(&r, 0),
            format!("Patient/{cu_id}"),
            "{}",
            r.text
        );
        assert_eq!(
            s.get(&format!("Patient/{cu_id}")).json["name"][0]["given"][0],
            "Deux"
        );
        // Two conditional creates of one transaction meeting on one resource: refused, nothing written.
        let before = s.get("Patient?_summary=count").json["total"].clone();
        let mut p = patient("Double", "D", "1962-08-08");
        p["identifier"] = ident("DUP");
        let two = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": pu, "resource": p.clone(),
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:oid:1.2.3.4|DUP"}},
            {"fullUrl": "urn:uuid:6a1e1a8e-0000-4000-8000-000000000002", "resource": p,
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:oid:1.2.3.4|DUP"}},
            {"resource": obs("urn:uuid:6a1e1a8e-0000-4000-8000-000000000002"), "request": {"method": "POST", "url": "Observation"}}]});
        let r = s.post("", &two);
        assert_eq!(r.status, 409, "{}", r.text);
        assert!(r.text.contains("même ressource"), "{}", r.text);
        assert_eq!(s.get("Patient?_summary=count").json["total"], before);
    }
}

#[test]
fn bad_input_is_rejected_clearly_and_nothing_is_written() {
    for b in backends() {
        let s = Server::start_with(&b, &["--max-body", "100000"]);
        let count = || {
            s.get("Patient?_summary=count").json["total"]
                .as_i64()
                .unwrap()
        };
        let n0 = count();
        let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
            ("POST", "Patient", Some("{not json".into()), 400, "JSON invalide"),
            ("GET", "Patient?family=%C3", None, 400, "pas de l'UTF-8 valide"),
            ("GET", "Patient?family=ok&given=%FF%FE", None, 400, "pas de l'UTF-8 valide"),
            ("POST", "Observation", Some(r#"{"resourceType":"Observation","status":"final","status":"entered-in-error","code":{"text":"x"}}"#.into()), 400, "« status » donnée deux fois"),
            ("POST", "Patient", Some(json!({"resourceType": "Observation"}).to_string()), 400, "ne correspond pas"),
            ("POST", "Patient", Some(json!({"name": "x"}).to_string()), 400, "resourceType"),
            ("POST", "Patient", Some("[]".into()), 400, "objet"),
            ("POST", "Patient", Some(json!({"resourceType": "Patient", "id": "bad id!"}).to_string()), 400, "identifiant invalide"),
            ("POST", "Patient", Some(json!({"resourceType": "Patient", "name": null}).to_string()), 422, "null"),
            ("POST", "Patient", Some(json!({"resourceType": "Patient", "name": []}).to_string()), 422, "vide"),
            // The first level against the type's definition: unknown elements, arrays, primitives' forms.
            ("POST", "Patient", Some(json!({"resourceType": "Patient", "bogusField": 1}).to_string()), 422, "Patient.bogusField"),
            ("POST", "Patient", Some(json!({"resourceType": "Patient", "active": "yes"}).to_string()), 422, "boolean"),
            ("POST", "Patient", Some(json!({"resourceType": "Patient", "birthDate": "not-a-date"}).to_string()), 422, "date FHIR"),
            ("POST", "Patient", Some(json!({"resourceType": "Patient", "name": {"family": "x"}}).to_string()), 422, "tableau attendu"),
            ("POST", "Patient", Some(json!({"resourceType": "Patient", "contained": [{"resourceType": "Foo"}]}).to_string()), 422, "Foo"),
            ("POST", "Observation", Some(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": 99999999999_i64}).to_string()), 422, "valueInteger"),
            ("POST", "Unicorn", Some(json!({"resourceType": "Unicorn"}).to_string()), 404, "inconnu"),
            ("PUT", "Patient/abc", Some(json!({"resourceType": "Patient", "id": "xyz"}).to_string()), 400, "ne correspond pas"),
            ("PUT", "Patient/abc", Some(json!({"resourceType": "Patient"}).to_string()), 400, "id"),
            ("PUT", "Patient/a$b", Some(json!({"resourceType": "Patient", "id": "a$b"}).to_string()), 400, "identifiant invalide"),
            ("GET", "Patient?birthdate=notadate", None, 400, "date"),
            ("GET", "Patient?_count=abc", None, 400, "_count"),
            ("GET", "Patient?_sort=birthdate&_cursor=sortafter.%5B%22x%22%2C1%5D", None, 400, "curseur"),
            ("GET", "Patient?_cursor=after.zz", None, 400, "curseur"),
            ("GET", "Patient?gender:fancy=x", None, 400, "modificateur"),
            ("GET", "Observation?subject=Unicorn/1", None, 400, "inconnu"),
            ("GET", "Observation?value-quantity=lt12|a|b|c", None, 400, "quantité"),
            ("POST", "", Some(json!({"resourceType": "Bundle", "type": "collection"}).to_string()), 400, "batch et transaction"),
            ("POST", "", Some(json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient"}}]}).to_string()), 400, "request"),
            ("GET", "Unicorn/1", None, 404, "inconnu"),
            ("GET", "Patient/", None, 404, "sans la barre oblique finale : /fhir/Patient"),
            ("GET", "Patient/nope", None, 404, "introuvable"),
            ("DELETE", "Patient", None, 400, "critères"),
            ("PATCH", "Patient/x", Some("{}".into()), 405, "PATCH"),
        ];
        for (m, path, body, status, needle) in cases {
            // Bad search parameters are errors in strict mode (lenient mode is tested in `search`).
            let strict: &[(&str, &str)] = if path.contains('?') {
                &[("Prefer", "handling=strict")]
            } else {
                &[]
            };
            let r = s.request(m, path, body, strict);
            assert_eq!(r.status, status, "{m} {path} : {}", r.text);
            assert_eq!(
                r.json["resourceType"], "OperationOutcome",
                "{m} {path} : {}",
                r.text
            );
            let d = r.diagnostics();
            assert!(
                d.to_lowercase().contains(&needle.to_lowercase()),
                "{m} {path} : {d:?} devrait contenir {needle:?}"
            );
        }
        // A POST `_search` body that is not UTF-8 once decoded: refused like such a query string.
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let r = s.request("POST", "Patient/_search", Some("family=%C3".into()), &form);
        r.expect(400);
        assert!(r.diagnostics().contains("UTF-8"), "{}", r.text);
        s.request(
            "POST",
            "Patient/_search",
            Some("family=%C3%A9".into()),
            &form,
        )
        .expect(200);
        // Wrong content type, body too large.
        let r = s.request(
            "POST",
            "Patient",
            Some("<Patient/>".into()),
            &[("Content-Type", "application/fhir+xml")],
        );
        r.expect(415);
        let big = json!({"resourceType": "Patient", "text": {"status": "generated", "div": "x".repeat(200_000)}});
        let r = s.post("Patient", &big);
        r.expect(413);
        assert!(r.diagnostics().contains("volumineux"));
        // Strict handling: unknown parameter is an error; lenient: a warning in the bundle.
        let r = s.request(
            "GET",
            "Patient?unknownparam=1",
            None,
            &[("Prefer", "handling=strict")],
        );
        r.expect(400);
        let r = s.get("Patient?unknownparam=1");
        r.expect(200);
        let outcome = r.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["search"]["mode"] == "outcome")
            .expect("avertissement");
        assert_eq!(outcome["resource"]["issue"][0]["severity"], "warning");
        assert_eq!(count(), n0, "rien ne doit avoir été écrit");
        // An id that cannot be one: 400, not a 404 that would say it was looked for.
        for (method, path) in [
            ("GET", "Patient/bad%20id"),
            ("DELETE", "Patient/bad%20id"),
            ("GET", "Patient/bad%20id/_history"),
            ("GET", "Patient/bad%20id/_history/1"),
        ] {
            let r = s.request(method, path, None, &[]);
            assert_eq!(r.status, 400, "{method} {path} : {}", r.text);
        }
        let r = s.request(
            "POST",
            "Patient",
            Some(patient("Vide", "V", "1990-01-01").to_string()),
            &[("If-None-Exist", "")],
        );
        assert_eq!(r.status, 400, "{}", r.text);
        // Media type parameters: R4 served, another version refused; a byte order mark before the JSON read.
        s.get("Patient?_count=1&_format=application/fhir%2Bjson;fhirVersion=4.0")
            .expect(200);
        let r = s.request(
            "GET",
            "Patient?_count=1",
            None,
            &[("Accept", "application/fhir+json; fhirVersion=3.0")],
        );
        assert_eq!(r.status, 406, "{}", r.text);
        // Each media range of Accept on its own: another acceptable one is served.
        s.request(
            "GET",
            "Patient?_count=1",
            None,
            &[(
                "Accept",
                "application/fhir+json; fhirVersion=3.0, application/json",
            )],
        )
        .expect(200);
        let r = s.request(
            "POST",
            "Patient",
            Some(format!("\u{feff}{}", patient("Bom", "B", "1990-01-01"))),
            &[],
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
}

#[test]
fn capability_statement_states_what_is_supported() {
    let s = Server::start(&common::Backend::Sqlite);
    let r = s.get("metadata");
    r.expect(200);
    assert_eq!(r.json["resourceType"], "CapabilityStatement");
    assert_eq!(r.json["fhirVersion"], "4.0.1");
    let res = r.json["rest"][0]["resource"].as_array().unwrap();
    assert!(res.len() >= 145, "{} types", res.len());
    let obs = res.iter().find(|x| x["type"] == "Observation").unwrap();
    let params: Vec<&str> = obs["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "code",
        "subject",
        "patient",
        "date",
        "value-quantity",
        "code-value-quantity",
        "_lastUpdated",
        "_tag",
    ] {
        assert!(params.contains(&p), "{p} manquant");
    }
    let sys: Vec<&str> = r.json["rest"][0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert!(sys.contains(&"transaction") && sys.contains(&"batch"));
}
