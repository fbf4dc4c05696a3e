//! The official HL7 R4 examples (npm `hl7.fhir.r4.examples@4.0.1`, 5,307 files), loaded through the API on every
//! backend: transaction/batch Bundles processed, everything else stored with its id; each resource reads back
//! equal (apart from `meta.versionId`/`meta.lastUpdated`), and values taken from the examples find them again
//! through their search parameters.
//!
//! The package is fetched by `scripts/fetch-fhir-package.sh` (CI does it); `FHIR_EXAMPLES_DIR` points at its
//! `package/` directory. Without it the test fails, unless `SOCLE_SKIP_CORPUS=1`.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Server, backends};
use serde_json::Value;
use socle_fhir::index::{IndexValue, extract};

/// Official examples that a conforming server must refuse, with why. The test checks that exactly these fail.
fn expected_rejections() -> Vec<(&'static str, &'static str)> {
    // Its entry 7 invokes `POST ValueSet/$lookup`, a terminology operation Socle does not provide (yet): the
    // whole transaction is refused, as atomicity requires.
    let mut v = vec![("Bundle-bundle-transaction.json", "$lookup")];
    // The examples that are not valid R4, refused by the element checks (the list and why: the file).
    v.extend(
        include_str!("../../fhir/tests/invalid-examples.tsv")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('\t')),
    );
    v
}

fn examples_dir() -> Option<PathBuf> {
    if std::env::var("SOCLE_SKIP_CORPUS").as_deref() == Ok("1") {
        eprintln!("note: corpus HL7 ignoré (SOCLE_SKIP_CORPUS=1)");
        return None;
    }
    let dir = std::env::var("FHIR_EXAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/fhir/package")
        });
    assert!(
        dir.is_dir(),
        "{} absent : lancez scripts/fetch-fhir-package.sh (ou SOCLE_SKIP_CORPUS=1)",
        dir.display()
    );
    Some(dir)
}

/// The value compared after a round trip: without the server-managed meta fields (and an emptied meta).
fn comparable(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("meta").and_then(Value::as_object_mut) {
        meta.shift_remove("versionId");
        meta.shift_remove("lastUpdated");
        if meta.is_empty() {
            v.as_object_mut().unwrap().shift_remove("meta");
        }
    }
    v
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('$', "\\$")
        .replace('|', "\\|")
}

fn iso(ms: i64) -> String {
    chrono_like(ms)
}

/// Milliseconds → `YYYY-MM-DDThh:mm:ss.sssZ` (no chrono in the test's dependencies).
fn chrono_like(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// A search clause that must find a resource of type `rt` holding `value` for `param`.
fn clause(rt: &str, param: &str, value: &IndexValue) -> Option<Vec<(String, String)>> {
    // A reference's logical identifier is kept as a token of the reference parameter: `:identifier`.
    let is_reference = socle_fhir::search_params::registry()
        .param(rt, param)
        .is_some_and(|p| p.kind == socle_fhir::search_params::ParamType::Reference);
    if is_reference && let IndexValue::Token { system, code } = value {
        return Some(vec![(
            format!("{param}:identifier"),
            format!(
                "{}|{}",
                system.as_deref().map(esc).unwrap_or_default(),
                esc(code)
            ),
        )]);
    }
    Some(match value {
        IndexValue::String { exact, .. } if !exact.is_empty() => {
            vec![(format!("{param}:exact"), esc(exact))]
        }
        IndexValue::Token {
            system: Some(s),
            code,
        } => vec![(param.to_string(), format!("{}|{}", esc(s), esc(code)))],
        IndexValue::Token { system: None, code } => {
            vec![(param.to_string(), format!("|{}", esc(code)))]
        }
        IndexValue::Reference {
            target_type: Some(t),
            target_id: Some(i),
            ..
        } => vec![(param.to_string(), format!("{t}/{i}"))],
        IndexValue::Reference { url: Some(u), .. }
            if !u.starts_with('#') && !u.starts_with("urn:") =>
        {
            vec![(param.to_string(), esc(u))]
        }
        IndexValue::Date { lo, hi } if *lo > -62_135_596_800_000 && *hi < 253_402_300_799_999 => {
            vec![
                (param.to_string(), format!("ge{}", iso(*lo))),
                (param.to_string(), format!("le{}", iso(*hi))),
            ]
        }
        IndexValue::Uri(u) if !u.is_empty() => vec![(param.to_string(), esc(u))],
        IndexValue::Quantity {
            value,
            system: Some(s),
            code: Some(c),
            ..
        } if value.is_finite() => {
            vec![(param.to_string(), format!("{value}|{}|{}", esc(s), esc(c)))]
        }
        IndexValue::Number { value, .. } if value.is_finite() => {
            vec![(param.to_string(), format!("{value}"))]
        }
        _ => return None,
    })
}

fn query(params: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

#[test]
fn official_examples_load_read_back_and_are_found_by_search() {
    let Some(dir) = examples_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    // package.json and .index.json are npm metadata, not resources.
    files.retain(|p| p.file_name().is_some_and(|n| n != "package.json"));
    assert!(files.len() >= 5300, "{} fichiers", files.len());
    for b in backends() {
        // Bundle-resources.json alone is 35 MB.
        let s = Server::start_with(&b, &["--max-body", "67108864"]);
        let loaded = AtomicUsize::new(0);
        let bundles = AtomicUsize::new(0);
        let failures = Mutex::new(Vec::<String>::new());
        let stored: Mutex<Vec<Value>> = Mutex::new(Vec::new());
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = files.get(i) else { break };
                        let text = std::fs::read_to_string(path).unwrap();
                        let v: Value = serde_json::from_str(&text).unwrap();
                        let name = path.file_name().unwrap().to_string_lossy().to_string();
                        let rt = v["resourceType"].as_str().unwrap_or("").to_string();
                        let btype = v["type"].as_str().unwrap_or("");
                        if rt == "Bundle" && (btype == "transaction" || btype == "batch") {
                            let r = s.post("", &v);
                            if r.status == 200 {
                                bundles.fetch_add(1, Ordering::Relaxed);
                                let bad: Vec<String> = r.json["entry"]
                                    .as_array()
                                    .map(|a| {
                                        a.iter()
                                            .filter(|e| {
                                                !e["response"]["status"]
                                                    .as_str()
                                                    .unwrap_or("")
                                                    .starts_with('2')
                                            })
                                            .map(|e| e["response"].to_string())
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                if !bad.is_empty() && btype == "transaction" {
                                    failures.lock().unwrap().push(format!("{name}: {bad:?}"));
                                }
                            } else {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("{name}: {} {}", r.status, r.text));
                            }
                            continue;
                        }
                        let r = match v["id"].as_str() {
                            Some(id) => s.put(&format!("{rt}/{id}"), &v),
                            None => s.post(&rt, &v),
                        };
                        if r.status != 200 && r.status != 201 {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{name}: {} {}", r.status, r.text));
                            continue;
                        }
                        let Some(id) = r.json["id"].as_str().map(str::to_string) else {
                            failures.lock().unwrap().push(format!(
                                "{name}: réponse sans id : {}",
                                r.text.chars().take(200).collect::<String>()
                            ));
                            continue;
                        };
                        // A Binary is read as its own media type unless FHIR JSON is asked for (R4 Binary).
                        let back = if rt == "Binary" {
                            s.get(&format!("{rt}/{id}?_format=json"))
                        } else {
                            s.get(&format!("{rt}/{id}"))
                        };
                        let mut expected = v.clone();
                        expected["id"] = Value::String(id.clone());
                        if back.status != 200
                            || comparable(back.json.clone()) != comparable(expected)
                        {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{name}: relu différent ({})", back.status));
                            continue;
                        }
                        loaded.fetch_add(1, Ordering::Relaxed);
                        stored.lock().unwrap().push(back.json);
                    }
                });
            }
        });
        let mut failures = failures.into_inner().unwrap();
        let mut rejected = 0;
        failures.retain(|f| {
            let expected = expected_rejections()
                .iter()
                .any(|(file, why)| f.starts_with(&format!("{file}:")) && f.contains(why));
            if expected {
                rejected += 1;
            }
            !expected
        });
        assert_eq!(
            rejected,
            expected_rejections().len(),
            "les exemples invalides connus doivent être refusés"
        );
        let loaded = loaded.into_inner();
        let bundles = bundles.into_inner();
        println!(
            "corpus HL7 R4 ({b:?}) : {} fichiers, {loaded} ressources stockées et relues à l'identique, {bundles} Bundles batch/transaction traités, {rejected} refus attendus, {} échecs",
            files.len(),
            failures.len()
        );
        for f in failures.iter().take(30) {
            println!("  échec : {f}");
        }
        assert!(failures.is_empty(), "{} échecs", failures.len());

        // Search: for every stored resource, up to 4 of its indexed values must find it again.
        let stored = stored.into_inner().unwrap();
        let checked = AtomicUsize::new(0);
        let misses = Mutex::new(Vec::<String>::new());
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(res) = stored.get(i) else { break };
                        let rt = res["resourceType"].as_str().unwrap();
                        let id = res["id"].as_str().unwrap();
                        let entries = extract(res);
                        let mut seen_params = std::collections::HashSet::new();
                        for e in entries.iter() {
                            if seen_params.len() >= 4 || !seen_params.insert(e.param.clone()) {
                                continue;
                            }
                            let Some(mut c) = clause(rt, &e.param, &e.value) else {
                                continue;
                            };
                            c.push(("_id".into(), id.to_string()));
                            let q = query(&c);
                            let r = s.get(&format!("{rt}?{q}"));
                            checked.fetch_add(1, Ordering::Relaxed);
                            if r.status != 200 || !r.ids().iter().any(|x| x == id) {
                                misses.lock().unwrap().push(format!(
                                    "{rt}/{id} ?{q} → {} {}",
                                    r.status,
                                    r.text.chars().take(300).collect::<String>()
                                ));
                            }
                        }
                    }
                });
            }
        });
        let misses = misses.into_inner().unwrap();
        println!(
            "corpus HL7 R4 ({b:?}) : {} recherches par valeur extraite, {} sans la ressource attendue",
            checked.into_inner(),
            misses.len()
        );
        for m in misses.iter().take(30) {
            println!("  non trouvé : {m}");
        }
        assert!(
            misses.is_empty(),
            "{} recherches n'ont pas retrouvé leur ressource",
            misses.len()
        );
    }
}
