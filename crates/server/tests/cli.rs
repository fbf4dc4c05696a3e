//! The command line: help texts and `socle import`.

mod common;

use std::process::Command;

use common::{Backend, Server};
use serde_json::json;

fn socle() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_socle"));
    c.env("SOCLE_LOG", "error");
    c
}

#[test]
fn help_documents_every_command_and_setting() {
    let out = socle().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for w in ["serve", "import", "audit", "generate", "demo"] {
        assert!(text.contains(w), "{w} absent de --help : {text}");
    }
    let out = socle().args(["generate", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for w in ["--persons", "--seed", "--out"] {
        assert!(text.contains(w), "{w} absent de generate --help : {text}");
    }
    let out = socle().args(["import", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--registry"));
    let out = socle().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for w in [
        "--listen",
        "SOCLE_LISTEN",
        "--data",
        "SOCLE_DATA",
        "--database",
        "SOCLE_DATABASE_URL",
        "--max-body",
        "127.0.0.1:8080",
    ] {
        assert!(text.contains(w), "{w} absent de serve --help : {text}");
    }
    // A bad setting is reported clearly, not with a panic.
    let out = socle()
        .args(["serve", "--database", "mysql://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("postgres://"));
}

#[test]
fn import_loads_json_bundles_and_ndjson_and_reports_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let nd = dir.path().join("patients.ndjson");
    let mut lines: Vec<String> = (0..30)
        .map(|i| json!({"resourceType": "Patient", "id": format!("nd{i}"), "name": [{"family": "Importé"}]}).to_string())
        .collect();
    lines.insert(7, "{pas du json".to_string());
    // Valid JSON but not a valid resource (an id with a slash, an unknown type): reported with their line
    // numbers (13 and 21), the other lines of their batch (`--batch 10`) loaded all the same.
    lines.insert(
        12,
        json!({"resourceType": "Patient", "id": "a/b"}).to_string(),
    );
    lines.insert(
        20,
        json!({"resourceType": "Inconnu", "id": "x"}).to_string(),
    );
    std::fs::write(&nd, lines.join("\n")).unwrap();
    let single = dir.path().join("one.json");
    std::fs::write(
        &single,
        json!({"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Soignant"}]})
            .to_string(),
    )
    .unwrap();
    let tx = dir.path().join("tx.json");
    std::fs::write(
        &tx,
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0b6e4f5a-1c7e-4c7a-9d7e-3b1a2f6c9d10", "resource": {"resourceType": "Patient", "name": [{"family": "Lié"}]}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "t"}, "subject": {"reference": "urn:uuid:0b6e4f5a-1c7e-4c7a-9d7e-3b1a2f6c9d10"}}, "request": {"method": "POST", "url": "Observation"}}
        ]})
        .to_string(),
    )
    .unwrap();
    let mut s = Server::start(&Backend::Sqlite);
    s.stop();
    let out = socle()
        .arg("import")
        .arg("--data")
        .arg(s.data.path())
        .arg("--batch")
        .arg("10")
        .arg(&nd)
        .arg(&single)
        .arg(&tx)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "une ligne invalide doit donner le code 1 : {stdout}"
    );
    for line in [
        "patients.ndjson:8 ",
        "patients.ndjson:13 ",
        "patients.ndjson:21 ",
    ] {
        assert!(
            stdout.contains(line),
            "le numéro de ligne doit être donné ({line}) : {stdout}"
        );
    }
    assert!(stdout.contains(" 1 Bundle(s)"), "{stdout}");
    assert!(stdout.contains("33 ressource(s)"), "{stdout}");
    s.restart();
    assert_eq!(
        s.get("Patient?family=importe&_summary=count").json["total"],
        30
    );
    s.get("Practitioner/pr1").expect(200);
    let obs = s.get("Observation?subject:Patient.family=lie");
    assert_eq!(obs.ids().len(), 1);
}

/// `socle generate --persons` fills an empty INS registry only: into a registry that holds identities, another
/// generation (another seed draws the same order numbers) would replace some of them; refused, nothing changed.
#[test]
fn generating_persons_into_a_filled_registry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let run = |seed: &str| {
        socle()
            .args([
                "generate",
                "--persons",
                "50",
                "--seed",
                seed,
                "--data",
                data,
            ])
            .output()
            .unwrap()
    };
    let first = run("1");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = run("2");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("contient déjà 50 identités"), "{err}");
}

/// `socle demo` on a fresh directory: synthetic registries, demo accounts and clients, and a demo patient whose
/// account opens onto a qualified local record, readable with the demo system client's token.
#[test]
fn the_demo_starts_with_a_patient_record_behind_its_account() {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let mut child = socle()
        .args(["demo", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Connexion d'un professionnel") {
            break;
        }
    }
    assert!(banner.contains("Patient/demo-patient"), "{banner}");
    let client = banner
        .lines()
        .find(|l| l.contains("client_secret"))
        .unwrap_or_else(|| panic!("{banner}"));
    let field = |name: &str| {
        client
            .split(name)
            .nth(1)
            .unwrap()
            .split([',', ' '])
            .find(|w| !w.is_empty())
            .unwrap()
            .to_string()
    };
    let (id, secret) = (field("client_id"), field("client_secret"));
    let root = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if ureq::get(&format!("{root}/health")).call().is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let token: serde_json::Value = ureq::post(&format!("{root}/auth/pro/token"))
        .set("Authorization", &format!("Basic {basic}"))
        .send_form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
        ])
        .unwrap()
        .into_json()
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    let patient: serde_json::Value = ureq::get(&format!("{root}/fhir/Patient/demo-patient"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert!(patient.to_string().contains("\"QUAL\""), "{patient}");
    let _ = child.kill();
    let _ = child.wait();
}
