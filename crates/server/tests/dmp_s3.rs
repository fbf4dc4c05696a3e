//! The DMP's document bytes in an S3-compatible object store: a local moto server (PyPI `moto[server]`) with
//! request signatures enforced, a bucket made by boto3. Feeds land in the bucket under their SHA-256, read back
//! byte for byte (also after a restart), an object altered in the bucket is reported and never served, the
//! sweep removes orphans there, and a wrong key or a missing bucket stops the server at start with the reason.
//! Skipped with a note when python3 with moto is absent, unless `SOCLE_REQUIRE_CLIENTS=1`.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Backend, Server, insi_date, local, registry, walk};
use serde_json::{Value, json};
use socle_dmp::sample::{self, Person, SampleDoc};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/clients/s3_bucket.py"
);

/// The moto server, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Option<Moto> {
    if !common::python_with("moto.server, boto3", "pip install 'moto[server]'") {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port libre")
        .port();
    let child = Command::new("python3")
        .args(["-c", "from moto.server import main; main()"])
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lancement de moto");
    let endpoint = format!("http://127.0.0.1:{port}");
    let m = Moto { child, endpoint };
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(m);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("moto ne répond pas sur {}", m.endpoint);
}

fn bucket(endpoint: &str, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "s3_bucket.py {args:?} : {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn raw_get(s: &Server, path: &str) -> (u16, Vec<u8>) {
    let resp = match ureq::get(&s.url(path)).set("Accept", "text/xml").call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = resp.status();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
    (status, bytes)
}

/// `socle serve` that must stop at start: its message.
fn refused_start(data: &std::path::Path, args: &[&str], secret: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_socle"))
        .args([
            "serve",
            "--insecure-local",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data)
        .args(args)
        .env("SOCLE_S3_SECRET_ACCESS_KEY", secret)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "le serveur a démarré : {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn documents_in_an_s3_bucket() {
    let Some(m) = moto() else { return };
    let keys: Value = serde_json::from_str(&bucket(&m.endpoint, &["setup"], b"")).unwrap();
    let (ak, sk) = (
        keys["access_key"].as_str().unwrap().to_string(),
        keys["secret_key"].as_str().unwrap().to_string(),
    );
    // SAFETY: set before any thread of this test binary (its only test) reads the environment; the servers it
    // starts inherit it.
    unsafe {
        std::env::set_var("SOCLE_S3_ACCESS_KEY_ID", &ak);
        std::env::set_var("SOCLE_S3_SECRET_ACCESS_KEY", &sk);
    }
    let s3 = [
        "--blobs",
        "s3://docs/socle",
        "--s3-endpoint",
        m.endpoint.as_str(),
        "--s3-region",
        "eu-west-3",
    ];
    let mut s = Server::start_with(&Backend::Sqlite, &s3);
    let people = registry(&s, 20, 11);
    let r = &people[2];
    let ins = r["identifier"][0]["value"].as_str().unwrap();
    s.put(
        "Patient/p1",
        &local(
            "p1",
            r,
            "QUAL",
            &[
                insi_date(),
                json!({"url": "validationMode", "valueCoding": {"code": "CN"}}),
            ],
            Some(ins),
        ),
    )
    .expect(201);
    let person = Person {
        ins_oid: r["identifier"][0]["system"]
            .as_str()
            .unwrap()
            .trim_start_matches("urn:oid:")
            .into(),
        ins: ins.into(),
        family: r["name"][0]["family"].as_str().unwrap().into(),
        given: r["name"][0]["given"][0].as_str().unwrap().into(),
        gender: if r["gender"] == "male" { "M" } else { "F" }.into(),
        birth: r["birthDate"].as_str().unwrap().replace('-', ""),
    };

    // Two feeds: their bytes are objects named by their SHA-256 under the prefix, nothing left locally.
    let mut cdas = Vec::new();
    for (i, size) in [(1, 100_000), (2, 2_000)] {
        let d = SampleDoc::report(&format!("S3-{i}"), size);
        let cda = sample::cda_n1(&person, &d);
        s.post(
            "",
            &sample::provide_bundle("p1", &format!("SUB-S3-{i}"), &[(d, cda.clone())]),
        )
        .expect(200);
        cdas.push(cda);
    }
    let listed: Value =
        serde_json::from_str(&bucket(&m.endpoint, &["list", &ak, &sk], b"")).unwrap();
    let names: Vec<String> = cdas
        .iter()
        .map(|c| socle_store::blob::sha256_hex(c))
        .collect();
    for (name, cda) in names.iter().zip(&cdas) {
        let key = format!("socle/{}/{}/{name}", &name[0..2], &name[2..4]);
        assert_eq!(listed[&key], cda.len(), "{key} : {listed}");
    }
    assert!(
        !s.data.path().join("blobs").exists() || walk(&s.data.path().join("blobs")).is_empty(),
        "aucun document sur le disque local"
    );

    // ITI-68: byte for byte, also after a restart.
    let bins = s.get("Binary?_count=10");
    let urls: Vec<String> = s.get("DocumentReference?patient=p1&_sort=_id").json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["resource"]["content"][0]["attachment"]["url"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(urls.len(), 2, "{}", bins.text);
    let read_all = |s: &Server| -> Vec<Vec<u8>> {
        urls.iter()
            .map(|u| {
                let (st, b) = raw_get(s, u);
                assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
                b
            })
            .collect()
    };
    let mut got = read_all(&s);
    got.sort();
    let mut want = cdas.clone();
    want.sort();
    assert_eq!(got, want);
    s.restart();
    let mut got = read_all(&s);
    got.sort();
    assert_eq!(got, want);

    // An object altered in the bucket: reported, never served.
    let small = &cdas[1];
    let name = &names[1];
    let mut altered = small.clone();
    altered[50] ^= 1;
    bucket(
        &m.endpoint,
        &[
            "put",
            &ak,
            &sk,
            &format!("socle/{}/{}/{name}", &name[0..2], &name[2..4]),
        ],
        &altered,
    );
    let served: Vec<(u16, Vec<u8>)> = urls.iter().map(|u| raw_get(&s, u)).collect();
    assert!(
        served
            .iter()
            .any(|(st, b)| *st == 500 && String::from_utf8_lossy(b).contains("altéré")),
        "{:?}",
        served.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    assert!(served.iter().any(|(st, b)| *st == 200 && b == &cdas[0]));

    // Orphans in the bucket: swept, never the objects a Binary names.
    let orphan = b"octets d'une soumission interrompue";
    let oname = socle_store::blob::sha256_hex(orphan);
    let okey = format!("socle/{}/{}/{oname}", &oname[0..2], &oname[2..4]);
    bucket(&m.endpoint, &["put", &ak, &sk, &okey], orphan);
    // Not under the prefix, or not a blob name: never touched.
    bucket(&m.endpoint, &["put", &ak, &sk, "ailleurs/objet"], b"x");
    let sweep = |extra: &[&str]| {
        let mut args = vec!["dmp", "sweep", "--older-than", "0"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&s3);
        let out = s.cli(&args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = sweep(&["--dry-run"]);
    assert!(
        out.contains(" 1 document(s) orphelin(s) à supprimer"),
        "{out}"
    );
    let out = sweep(&[]);
    assert!(
        out.contains(" 1 document(s) orphelin(s) supprimé(s)"),
        "{out}"
    );
    let listed: Value =
        serde_json::from_str(&bucket(&m.endpoint, &["list", &ak, &sk], b"")).unwrap();
    assert!(listed.get(&okey).is_none(), "{listed}");
    assert!(listed.get("ailleurs/objet").is_some(), "{listed}");
    for name in &names {
        let key = format!("socle/{}/{}/{name}", &name[0..2], &name[2..4]);
        assert!(listed.get(&key).is_some(), "{key} : {listed}");
    }
    s.stop();

    // A wrong key, a missing bucket, no endpoint: the server does not start, and says why.
    let data = tempfile::tempdir().unwrap();
    let err = refused_start(data.path(), &s3, "mauvais-secret");
    assert!(err.contains("refuse cette clé (HTTP 403)"), "{err}");
    let mut missing = s3;
    missing[1] = "s3://absent";
    let err = refused_start(data.path(), &missing, &sk);
    assert!(err.contains("n'existe pas"), "{err}");
    let err = refused_start(data.path(), &s3[..2], &sk);
    assert!(err.contains("--s3-endpoint"), "{err}");
}
