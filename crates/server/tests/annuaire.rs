//! The Annuaire Santé over HTTP, on both backends: synthetic structures and professionals from
//! `socle generate`, an extraction imported with `socle import --annuaire`, the searches an integrator uses,
//! and identifiers with a wrong check digit refused.

mod common;

use common::{Server, backends};
use serde_json::{Value, json};
use socle_directory::{Finess, Rpps};

fn ids(r: &common::Resp, rtype: &str) -> Vec<String> {
    r.json["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["resource"]["resourceType"] == rtype)
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

const HEADER: &str = "Type d'identifiant PP|Identifiant PP|Identification nationale PP|Code civilité d'exercice|Nom d'exercice|Prénom d'exercice|Code profession|Libellé profession|Code savoir-faire|Libellé savoir-faire|Code mode exercice|Numéro FINESS site|Raison sociale site|Code postal (coord. structure)|Code commune (coord. structure)|Libellé commune (coord. structure)|Adresse e-mail (coord. structure)|";

#[test]
fn annuaire_generation_import_and_search() {
    for b in backends() {
        let s = Server::start(&b);
        let o = s.cli(&[
            "generate",
            "--structures",
            "40",
            "--professionals",
            "150",
            "--seed",
            "2",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(s.get("Organization?_summary=count").json["total"], 40);
        assert_eq!(s.get("Practitioner?_summary=count").json["total"], 150);

        // The data as an integrator sees it: take one professional and find them every way.
        let all = s.get("PractitionerRole?_count=1000&_include=PractitionerRole:practitioner&_include=PractitionerRole:organization");
        let entries: Vec<Value> = all.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .collect();
        let role = entries
            .iter()
            .find(|r| r["resourceType"] == "PractitionerRole" && r["specialty"].is_array())
            .expect("a physician with a specialty")
            .clone();
        let pid = role["practitioner"]["reference"]
            .as_str()
            .unwrap()
            .trim_start_matches("Practitioner/")
            .to_string();
        let oid = role["organization"]["reference"]
            .as_str()
            .unwrap()
            .trim_start_matches("Organization/")
            .to_string();
        let p = entries
            .iter()
            .find(|r| r["resourceType"] == "Practitioner" && r["id"] == pid.as_str())
            .unwrap()
            .clone();
        let org = entries
            .iter()
            .find(|r| r["resourceType"] == "Organization" && r["id"] == oid.as_str())
            .unwrap()
            .clone();
        let rpps = p["identifier"][0]["value"].as_str().unwrap();
        let family = p["name"][0]["family"].as_str().unwrap();
        let mailbox = p["telecom"][0]["value"].as_str().unwrap();
        let specialty = role["specialty"][0]["coding"][0]["code"].as_str().unwrap();
        let finess = org["identifier"][0]["value"].as_str().unwrap();
        let city = org["address"][0]["city"].as_str().unwrap();
        let postal = org["address"][0]["postalCode"].as_str().unwrap();

        let has = |q: &str, rtype: &str, id: &str| {
            let r = s.get(q);
            assert_eq!(r.status, 200, "{q}: {}", r.text);
            assert!(ids(&r, rtype).contains(&id.to_string()), "{q}: {id} absent");
        };
        has(
            &format!("Practitioner?identifier=https://rpps.esante.gouv.fr|{rpps}"),
            "Practitioner",
            &pid,
        );
        has(
            &format!("Practitioner?identifier=urn:oid:1.2.250.1.71.4.2.1|8{rpps}"),
            "Practitioner",
            &pid,
        );
        has(
            &format!("Practitioner?family:exact={family}"),
            "Practitioner",
            &pid,
        );
        has(
            &format!(
                "Practitioner?name:contains={}",
                &family[1..family.len() - 1].to_lowercase()
            ),
            "Practitioner",
            &pid,
        );
        has(
            &format!("Practitioner?mailbox-mss={mailbox}"),
            "Practitioner",
            &pid,
        );
        has(
            "Practitioner?mailbox-mss-type=PER&_count=500",
            "Practitioner",
            &pid,
        );
        has(
            &format!("PractitionerRole?mailbox-mss={mailbox}"),
            "PractitionerRole",
            role["id"].as_str().unwrap(),
        );
        has(
            &format!("PractitionerRole?role=10&specialty={specialty}&_count=500"),
            "PractitionerRole",
            role["id"].as_str().unwrap(),
        );
        has(
            &format!("Organization?identifier=https://finess.esante.gouv.fr|{finess}"),
            "Organization",
            &oid,
        );
        has(
            &format!("Organization?address-city={city}&address-postalcode={postal}"),
            "Organization",
            &oid,
        );
        has(
            "Organization?_lastUpdated=gt2020-01-01&_count=500",
            "Organization",
            &oid,
        );
        // _include / _revinclude between roles, practitioners and organisations.
        let r = s.get(&format!("Practitioner?_id={pid}&_revinclude=PractitionerRole:practitioner&_include:iterate=PractitionerRole:organization"));
        assert!(
            ids(&r, "PractitionerRole").contains(&role["id"].as_str().unwrap().to_string()),
            "{}",
            r.text
        );
        assert!(ids(&r, "Organization").contains(&oid), "{}", r.text);
        let r = s.get(&format!(
            "Organization?_id={oid}&_revinclude=PractitionerRole:organization"
        ));
        assert!(!ids(&r, "PractitionerRole").is_empty());
        // A mailbox search that matches nothing.
        assert!(
            ids(
                &s.get("Practitioner?mailbox-mss=nobody@nowhere.mssante.fr"),
                "Practitioner"
            )
            .is_empty()
        );

        // Wrong check digits are refused, naming the identifier.
        let mut bad = p.clone();
        bad["id"] = json!("bad-rpps");
        let mut digits = rpps.as_bytes().to_vec();
        digits[10] = if digits[10] == b'9' {
            b'0'
        } else {
            digits[10] + 1
        };
        bad["identifier"][0]["value"] = json!(String::from_utf8(digits).unwrap());
        let r = s.put("Practitioner/bad-rpps", &bad);
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(r.diagnostics().contains("RPPS"));
        let r = s.post("Organization", &json!({"resourceType": "Organization", "identifier": [{"system": "https://finess.esante.gouv.fr", "value": "750000000"}]}));
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(r.diagnostics().contains("FINESS"));

        // An extraction: three good lines (two situations of one professional), two bad ones.
        let r1 = Rpps::from_body(1_999_000_001);
        let r2 = Rpps::from_body(1_999_000_002);
        let f1 = Finess::build("69", 901).unwrap();
        let f2 = Finess::build("2A", 902).unwrap();
        let line = |r: &Rpps,
                    name: &str,
                    prof: &str,
                    sf: &str,
                    f: &Finess,
                    city: &str,
                    insee: &str,
                    mail: &str| {
            format!(
                "8|{r}|{}|DR|{name}|Claire|{prof}||{sf}||L|{f}|Cabinet {name}|69003|{insee}|{city}|{mail}|",
                r.idnps()
            )
        };
        let mut bad_rpps = r2.as_str().to_string();
        bad_rpps.replace_range(10..11, if bad_rpps.ends_with('1') { "2" } else { "1" });
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            [
                HEADER.to_string(),
                line(
                    &r1,
                    "ZORGLUB",
                    "10",
                    "SM54",
                    &f1,
                    "Lyon 3e",
                    "69383",
                    "claire.zorglub@medecin.mssante.fr",
                ),
                format!("8|{bad_rpps}|8{bad_rpps}|DR|X|Y|10||||L|{f1}|X|69003|69383|Lyon|x@y.fr|"),
                line(
                    &r1,
                    "ZORGLUB",
                    "10",
                    "SM54",
                    &f2,
                    "Ajaccio",
                    "2A004",
                    "claire.zorglub@medecin.mssante.fr",
                ),
                "8|1|2|".to_string(),
                line(
                    &r2,
                    "ZORGLUB-MARTIN",
                    "60",
                    "",
                    &f1,
                    "Lyon 3e",
                    "69383",
                    "c.zm@infirmier.mssante.fr",
                ),
            ]
            .join("\n"),
        )
        .unwrap();
        let o = s.cli(&["import", "--annuaire", file.path().to_str().unwrap()]);
        let report = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{report}");
        assert!(report.contains("5 ligne(s) lue(s)"), "{report}");
        assert!(report.contains(":3 : numéro RPPS"), "{report}");
        assert!(report.contains(":5 : 4 colonnes"), "{report}");
        let r = s.get("PractitionerRole?practitioner.family:exact=ZORGLUB&_include=PractitionerRole:organization");
        assert_eq!(ids(&r, "PractitionerRole").len(), 2, "{}", r.text);
        assert_eq!(ids(&r, "Organization").len(), 2, "{}", r.text);
        let r = s.get("PractitionerRole?practitioner.family=ZORGLUB");
        assert_eq!(
            ids(&r, "PractitionerRole").len(),
            3,
            "string search matches the start of the name"
        );
        has(
            &format!("Practitioner?identifier=https://rpps.esante.gouv.fr|{r2}"),
            "Practitioner",
            &r2.idnps(),
        );
        has(
            "Organization?address-city=Ajaccio",
            "Organization",
            &f2.idnst(),
        );
        // Importing the same extraction again updates, never duplicates.
        let o = s.cli(&["import", "--annuaire", file.path().to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        let r = s.get("PractitionerRole?practitioner.family:exact=ZORGLUB");
        assert_eq!(ids(&r, "PractitionerRole").len(), 2);
    }
}
