//! `socle import`: loads JSON resources, Bundles and NDJSON files into the store, with a progress bar.
//! Resources carrying an id keep it (update semantics); transaction and batch Bundles are processed; other
//! Bundles are stored as resources.

use std::fmt;
use std::io::BufRead;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use socle_store::{Repository, RequestContext};

#[derive(Default)]
pub struct Report {
    pub files: usize,
    pub resources: usize,
    pub bundles: usize,
    pub failed: usize,
    pub errors: Vec<String>,
    pub seconds: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = if self.seconds > 0.0 {
            self.resources as f64 / self.seconds
        } else {
            0.0
        };
        write!(
            f,
            "import terminé : {} fichier(s), {} ressource(s) écrite(s), {} Bundle(s) traité(s), {} échec(s) en {:.1} s ({:.0} ressources/s)",
            self.files, self.resources, self.bundles, self.failed, self.seconds, rate
        )?;
        write_errors(f, &self.errors)
    }
}

/// The first 20 errors of a report, one per line, and how many more there are.
pub(crate) fn write_errors(f: &mut fmt::Formatter<'_>, errors: &[String]) -> fmt::Result {
    for e in errors.iter().take(20) {
        write!(f, "\n  {e}")?;
    }
    if errors.len() > 20 {
        write!(f, "\n  … et {} autre(s)", errors.len() - 20)?;
    }
    Ok(())
}

/// A progress bar over the total size of `files`, in bytes.
pub(crate) fn byte_bar(files: &[PathBuf]) -> ProgressBar {
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn ctx() -> RequestContext {
    RequestContext {
        principal: "import".into(),
        client: None,
        base_url: "urn:socle:import".into(),
    }
}

/// Wraps resources in a transaction of PUTs (or POSTs for resources without id).
pub(crate) fn as_transaction(resources: Vec<Value>) -> Value {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let t = r
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match r.get("id").and_then(Value::as_str).map(str::to_string) {
                Some(id) => {
                    json!({"resource": r, "request": {"method": "PUT", "url": format!("{t}/{id}")}})
                }
                None => json!({"resource": r, "request": {"method": "POST", "url": t}}),
            }
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn load_value(repo: &Repository, v: Value, report: &mut Report, origin: &str) {
    let t = v
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let btype = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let res = if t == "Bundle" && (btype == "transaction" || btype == "batch") {
        let n = v.get("entry").and_then(Value::as_array).map_or(0, Vec::len);
        repo.bundle(&ctx(), v).map(|resp| {
            report.bundles += 1;
            let failed = resp.get("entry").and_then(Value::as_array).map_or(0, |e| {
                e.iter()
                    .filter(|x| {
                        x["response"]["status"]
                            .as_str()
                            .is_some_and(|s| !s.starts_with('2'))
                    })
                    .count()
            });
            report.failed += failed;
            report.resources += n - failed;
        })
    } else {
        store_one(repo, &t, v).map(|()| report.resources += 1)
    };
    if let Err(e) = res {
        report.failed += 1;
        report.errors.push(format!("{origin} : {e}"));
    }
}

/// One resource, by its id if it has one (created or replaced), else created.
fn store_one(repo: &Repository, rtype: &str, v: Value) -> Result<(), socle_store::repo::RepoError> {
    match v.get("id").and_then(Value::as_str).map(str::to_string) {
        Some(id) => repo.update(&ctx(), rtype, &id, v, None).map(|_| ()),
        None => repo.create(&ctx(), rtype, v, None).map(|_| ()),
    }
}

/// A batch of NDJSON lines (line number, text, resource) in one transaction; if the transaction is refused,
/// its lines one by one (read again from their text), so that each bad line is reported with its number and
/// the others still load.
fn load_lines(
    repo: &Repository,
    lines: Vec<(usize, String, Value)>,
    report: &mut Report,
    origin: &str,
) {
    let n = lines.len();
    let (texts, resources): (Vec<(usize, String)>, Vec<Value>) = lines
        .into_iter()
        .map(|(no, text, v)| ((no, text), v))
        .unzip();
    if repo.bundle(&ctx(), as_transaction(resources)).is_ok() {
        report.resources += n;
        return;
    }
    for (line, text) in texts {
        // It was read once already: it parses.
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let t = v
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match store_one(repo, &t, v) {
            Ok(()) => report.resources += 1,
            Err(e) => {
                report.failed += 1;
                report.errors.push(format!("{origin}:{line} : {e}"));
            }
        }
    }
}

pub fn run(repo: &Repository, files: &[PathBuf], batch: usize) -> anyhow::Result<Report> {
    let start = std::time::Instant::now();
    let bar = byte_bar(files);
    let mut report = Report::default();
    for f in files {
        report.files += 1;
        let name = f.display().to_string();
        bar.set_message(name.clone());
        let is_ndjson = f.extension().is_some_and(|e| e == "ndjson" || e == "jsonl");
        if is_ndjson {
            let file = match std::fs::File::open(f) {
                Ok(x) => x,
                Err(e) => {
                    report.failed += 1;
                    report
                        .errors
                        .push(format!("{name} : lecture impossible : {e}"));
                    continue;
                }
            };
            let mut pending = Vec::with_capacity(batch);
            for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = match line {
                    Ok(l) => l,
                    Err(e) => {
                        report.failed += 1;
                        report.errors.push(format!("{name}:{} : {e}", n + 1));
                        break;
                    }
                };
                bar.inc(line.len() as u64 + 1);
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => pending.push((n + 1, line, v)),
                    Err(e) => {
                        report.failed += 1;
                        report
                            .errors
                            .push(format!("{name}:{} : JSON invalide : {e}", n + 1));
                    }
                }
                if pending.len() >= batch {
                    load_lines(repo, std::mem::take(&mut pending), &mut report, &name);
                }
            }
            if !pending.is_empty() {
                load_lines(repo, pending, &mut report, &name);
            }
        } else {
            let bytes = match std::fs::read(f) {
                Ok(b) => b,
                Err(e) => {
                    report.failed += 1;
                    report
                        .errors
                        .push(format!("{name} : lecture impossible : {e}"));
                    continue;
                }
            };
            bar.inc(bytes.len() as u64);
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => load_value(repo, v, &mut report, &name),
                Err(e) => {
                    report.failed += 1;
                    report.errors.push(format!("{name} : JSON invalide : {e}"));
                }
            }
        }
    }
    bar.finish_and_clear();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
