//! Test support: starts the real `socle` binary on a random loopback port, on SQLite or on a fresh PostgreSQL
//! database, and talks HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

/// Whether `python3` can import `modules` (e.g. `"requests, fhirpy"`), for the tests that run real Python
/// clients. Without them the test is skipped with a note naming what to install — a failure instead when
/// `SOCLE_REQUIRE_CLIENTS=1` (CI installs them).
pub fn python_with(modules: &str, install: &str) -> bool {
    let have = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var("SOCLE_REQUIRE_CLIENTS").as_deref() != Ok("1"),
            "SOCLE_REQUIRE_CLIENTS=1 mais python3 ne peut importer {modules} ({install})"
        );
        eprintln!("note : python3 ne peut importer {modules}, test sauté ({install})");
    }
    have
}

/// Runs a Python client script with its arguments; its output is printed, and it must succeed (`label` names
/// the run in the failure).
pub fn run_python(script: &str, args: &[&str], label: &str) {
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{label}: {stdout}");
    assert!(out.status.success(), "{label}: {stdout}\n{stderr}");
}

/// The backends to test: SQLite always; PostgreSQL when `SOCLE_TEST_DATABASE_URL` is set (an admin URL; each
/// server gets a fresh database). With `SOCLE_REQUIRE_POSTGRES=1` a missing URL is a failure, not a skip.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    match std::env::var("SOCLE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => v.push(Backend::Postgres(url)),
        _ => {
            if std::env::var("SOCLE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("SOCLE_REQUIRE_POSTGRES=1 mais SOCLE_TEST_DATABASE_URL n'est pas défini");
            }
            eprintln!("note: PostgreSQL non testé (SOCLE_TEST_DATABASE_URL absent)");
        }
    }
    v
}

/// Creates a fresh database on the server of `admin_url` and returns its URL.
pub fn fresh_pg_database(admin_url: &str) -> String {
    let name = format!("socle_t_{}", uuid::Uuid::new_v4().simple());
    let mut c = postgres::Client::connect(admin_url, postgres::NoTls)
        .expect("connexion PostgreSQL de test");
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("création de la base de test");
    let scheme_end = admin_url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url, String::new()),
    };
    match base[scheme_end..].find('/') {
        Some(i) => format!("{}/{name}{query}", &base[..scheme_end + i]),
        None => format!("{base}/{name}{query}"),
    }
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub root: String,
    pub data: tempfile::TempDir,
    pub database: Option<String>,
    extra: Vec<String>,
}

impl Server {
    pub fn start(backend: &Backend) -> Server {
        Self::start_with(backend, &[])
    }

    /// A server with `extra` arguments, in the development mode without authentication (`--insecure-local`):
    /// the tests of the FHIR core and the registries; the access-control tests use [`Server::start_secure`].
    pub fn start_with(backend: &Backend, extra: &[&str]) -> Server {
        let mut args = vec!["--insecure-local"];
        args.extend_from_slice(extra);
        Self::start_secure(backend, &args)
    }

    /// A server with authentication enforced (the default of `socle serve`).
    pub fn start_secure(backend: &Backend, extra: &[&str]) -> Server {
        let data = tempfile::tempdir().expect("répertoire temporaire");
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres(admin) => Some(fresh_pg_database(admin)),
        };
        let mut s = Server {
            child: None,
            base: String::new(),
            root: String::new(),
            data,
            database,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_socle"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(self.data.path());
        if let Some(db) = &self.database {
            cmd.arg("--database").arg(db);
        }
        cmd.args(&self.extra);
        cmd.env("SOCLE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("lancement de socle");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("lecture de la ligne de démarrage");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("ligne de démarrage inattendue : {line:?}"))
            .to_string();
        self.base = url.clone();
        self.root = url.trim_end_matches("/fhir").to_string();
        self.child = Some(child);
        if let Some(addr) = url.strip_prefix("https://") {
            // HTTPS (the mutual-TLS tests talk to it with their own clients): the port accepts connections.
            let addr = addr.trim_end_matches("/fhir");
            for _ in 0..200 {
                if std::net::TcpStream::connect(addr).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            panic!("socle n'accepte pas de connexion sur {addr}");
        }
        // Readiness: poll /health.
        for _ in 0..200 {
            if ureq::get(&format!("{}/health", self.root)).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("socle ne répond pas sur /health");
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Graceful stop (SIGTERM), waiting for exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs a `socle` command on this server's store (`--data`, and `--database` on PostgreSQL).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_socle"));
        c.env("SOCLE_LOG", "error")
            .args(args)
            .arg("--data")
            .arg(self.data.path());
        if let Some(db) = &self.database {
            c.arg("--database").arg(db);
        }
        c.output().expect("socle")
    }

    /// Runs a `socle` command on this server's store with `input` on its standard input.
    pub fn cli_input(&self, args: &[&str], input: &str) -> std::process::Output {
        use std::io::Write;
        let mut c = Command::new(env!("CARGO_BIN_EXE_socle"));
        c.env("SOCLE_LOG", "error")
            .args(args)
            .arg("--data")
            .arg(self.data.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(db) = &self.database {
            c.arg("--database").arg(db);
        }
        let mut child = c.spawn().expect("socle");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).expect("stdin");
        }
        child.wait_with_output().expect("socle")
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None, &[])
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.request("POST", path, Some(body.to_string()), &[])
    }

    pub fn put(&self, path: &str, body: &Value) -> Resp {
        self.request("PUT", path, Some(body.to_string()), &[])
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, None, &[])
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut r = ureq::request(method, &self.url(path)).timeout(Duration::from_secs(120));
        let mut has_ct = false;
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("content-type") {
                has_ct = true;
            }
            r = r.set(k, v);
        }
        if body.is_some() && !has_ct {
            r = r.set("Content-Type", "application/fhir+json");
        }
        let res = match body {
            Some(b) => r.send_string(&b),
            None => r.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path} : {e}"),
        };
        let status = resp.status();
        let headers: Vec<(String, String)> = resp
            .headers_names()
            .into_iter()
            .map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_string()))
            .collect();
        // into_string() stops at 10 MB; some official example Bundles are larger.
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut resp.into_reader(), &mut text);
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // Each PostgreSQL test server had a database of its own: drop it (dev machines would fill up).
        if let (Some(db), Ok(admin)) = (&self.database, std::env::var("SOCLE_TEST_DATABASE_URL")) {
            let name = db
                .rsplit('/')
                .next()
                .unwrap_or("")
                .split('?')
                .next()
                .unwrap_or("");
            if name.starts_with("socle_t_")
                && let Ok(mut c) = postgres::Client::connect(&admin, postgres::NoTls)
            {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status, showing the body on failure.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "statut inattendu, corps : {}",
            self.text
        );
        self
    }

    /// For an OperationOutcome: its first diagnostics.
    pub fn diagnostics(&self) -> String {
        assert_eq!(
            self.json["resourceType"], "OperationOutcome",
            "OperationOutcome attendu : {}",
            self.text
        );
        self.json["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Ids of the `match` entries of a searchset.
    pub fn ids(&self) -> Vec<String> {
        self.json["entry"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["search"]["mode"] == "match")
                    .map(|e| e["resource"]["id"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn link(&self, rel: &str) -> Option<String> {
        self.json["link"]
            .as_array()?
            .iter()
            .find(|l| l["relation"] == rel)
            .and_then(|l| l["url"].as_str())
            .map(str::to_string)
    }
}

// ------------------------------------------------------------------ authentication fixture

/// The current TOTP time step (RFC 6238, 30 s).
pub fn now_step() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("horloge")
        .as_secs()
        / 30
}

pub const PASSWORD: &str = "mot-de-passe-de-test-2026";
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// What the CLI printed, as `key: value` / `clé … : value` lines.
pub fn printed(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "socle a échoué : {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn after(text: &str, marker: &str) -> String {
    text.lines()
        .find_map(|l| l.split_once(marker).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| panic!("« {marker} » absent de : {text}"))
}

pub struct AuthFixture {
    pub s: Server,
    pub root: String,
    /// A professional (RPPS) and their TOTP secret.
    pub rpps: String,
    pub totp: Vec<u8>,
    /// A patient (INS) and their TOTP secret.
    pub ins: String,
    pub patient_totp: Vec<u8>,
    /// A public application (code + PKCE).
    pub app: String,
    /// A confidential system client.
    pub sys: (String, String),
}

impl AuthFixture {
    /// A server with authentication enforced, synthetic registries, a professional and a patient account
    /// (password `PASSWORD`, TOTP enrolled), a public application and a confidential system client.
    pub fn new(backend: &Backend) -> AuthFixture {
        let s = Server::start_secure(backend, &[]);
        let root = s.root.clone();
        printed(&s.cli(&[
            "generate",
            "--persons",
            "20",
            "--structures",
            "3",
            "--professionals",
            "6",
            "--seed",
            "7",
        ]));
        // A professional of the Annuaire.
        let r = s.get(&format!("{}/fhir/Practitioner?_count=1", root));
        r.expect(200);
        let rpps = r.json["entry"][0]["resource"]["identifier"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["system"] == "https://rpps.esante.gouv.fr")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string();
        let totp = pro_account(&s, &rpps);
        // A patient of the registry (the generator's first person with seed 7).
        let person = socle_ins::generate::PersonGenerator::new(7).next_person();
        let patient_totp = patient_account(&s, &person.matricule);
        let out = printed(&s.cli(&[
            "clients",
            "register",
            "--realm",
            "pro",
            "--name",
            "Logiciel de cabinet",
            "--redirect-uri",
            REDIRECT,
            "--post-logout-redirect-uri",
            "http://127.0.0.1:9/bye",
            "--auth-method",
            "none",
        ]));
        let app = after(&out, "client_id:");
        let out = printed(&s.cli(&[
            "clients",
            "register",
            "--realm",
            "pro",
            "--name",
            "Serveur d'établissement",
            "--scope",
            "system/*.rs system/Observation.c",
        ]));
        let sys = (after(&out, "client_id:"), after(&out, "client_secret:"));
        AuthFixture {
            s,
            root,
            rpps,
            totp,
            ins: person.matricule,
            patient_totp,
            app,
            sys,
        }
    }
}

// ------------------------------------------------------------------ identity vigilance

pub const EXT: &str =
    "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability";

/// A local Patient with the traits of a reference identity `r` (as `socle generate --out` writes it).
/// A professional's account for the Annuaire's `rpps` (password `PASSWORD`); returns its TOTP secret.
pub fn pro_account(s: &Server, rpps: &str) -> Vec<u8> {
    let out = printed(&s.cli_input(
        &[
            "accounts",
            "create-professional",
            "--rpps",
            rpps,
            "--password-stdin",
        ],
        PASSWORD,
    ));
    socle_auth::totp::unbase32(&after(
        &out,
        "clé TOTP (à saisir dans l'application d'authentification) :",
    ))
    .unwrap()
}

/// A patient account for the registry identity `ins` (password `PASSWORD`); returns its TOTP secret.
pub fn patient_account(s: &Server, ins: &str) -> Vec<u8> {
    let out = printed(&s.cli_input(
        &[
            "accounts",
            "create-patient",
            "--ins",
            ins,
            "--password-stdin",
        ],
        PASSWORD,
    ));
    socle_auth::totp::unbase32(&after(
        &out,
        "clé TOTP (à saisir dans l'application d'authentification) :",
    ))
    .unwrap()
}

/// `socle generate --persons n --seed seed` imported into the server's INS registry; returns the persons (FHIR
/// `Patient`s, as written by `--out`).
pub fn registry(s: &Server, n: usize, seed: u64) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let o = s.cli(&[
        "generate",
        "--persons",
        &n.to_string(),
        "--seed",
        &seed.to_string(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file = dir.path().join("persons.ndjson");
    let o = s.cli(&["import", "--registry", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn local(id: &str, r: &Value, status: &str, extra: &[Value], ins: Option<&str>) -> Value {
    let mut ext = vec![json!({"url": "identityStatus", "valueCoding": {"code": status}})];
    ext.extend(extra.iter().cloned());
    let mut identifier = vec![
        json!({"use": "usual", "system": "urn:oid:1.2.250.1.999.1", "value": format!("IPP-{id}")}),
    ];
    if let Some(i) = ins {
        identifier.push(json!({"system": r["identifier"][0]["system"], "value": i}));
    }
    json!({
        "resourceType": "Patient", "id": id,
        "extension": [{"url": EXT, "extension": ext}, r["extension"][0].clone()],
        "identifier": identifier,
        "name": [{"use": "official", "family": r["name"][0]["family"].as_str().unwrap().to_lowercase(), "given": [r["name"][0]["given"][0]]}],
        "gender": r["gender"], "birthDate": r["birthDate"]
    })
}

pub fn insi_date() -> Value {
    json!({"url": "insiDate", "valueDate": "2026-11-20"})
}

/// The identity check of a qualified identity (an identity document seen).
pub fn document_check() -> Value {
    json!({"url": "validationMode", "valueCoding": {"code": "CN"}})
}

/// The CDA view of a registry person.
pub fn person(r: &Value) -> socle_dmp::sample::Person {
    socle_dmp::sample::Person {
        ins_oid: r["identifier"][0]["system"]
            .as_str()
            .unwrap()
            .trim_start_matches("urn:oid:")
            .into(),
        ins: r["identifier"][0]["value"].as_str().unwrap().into(),
        family: r["name"][0]["family"].as_str().unwrap().into(),
        given: r["name"][0]["given"][0].as_str().unwrap().into(),
        gender: if r["gender"] == "male" { "M" } else { "F" }.into(),
        birth: r["birthDate"].as_str().unwrap().replace('-', ""),
    }
}

/// Stores the registry person `r` as the local patient `id`, identity qualified (INSi answer + document seen).
pub fn qualified(s: &Server, id: &str, r: &Value) {
    let ins = r["identifier"][0]["value"].as_str().unwrap();
    s.put(
        &format!("Patient/{id}"),
        &local(id, r, "QUAL", &[insi_date(), document_check()], Some(ins)),
    )
    .expect(201);
}

/// The id of the resource a transaction-response entry created (`…/Type/id/_history/n`).
pub fn created_id(entry: &Value) -> String {
    entry["response"]["location"]
        .as_str()
        .unwrap()
        .split('/')
        .nth_back(2)
        .unwrap()
        .to_string()
}

/// The ids of a search Bundle's resources, in order (none: empty).
pub fn entry_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every file below `dir`.
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
