//! `socle generate --structures N --professionals N` (into the FHIR store, or NDJSON with `--out`) and
//! `socle import --annuaire FILE` (the Annuaire Santé's pipe-separated extractions), with progress bars.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde_json::Value;
use socle_directory::extraction::{Header, parse_line};
use socle_directory::generate::DirectoryGenerator;
use socle_store::{RepoError, Repository, RequestContext};

use crate::registry_io::bar;

/// Resources per transaction.
const BATCH: usize = 500;

fn ctx() -> RequestContext {
    RequestContext {
        principal: "annuaire".into(),
        client: None,
        base_url: "urn:socle:annuaire".into(),
    }
}

/// Writes resources in transactions of PUTs; a resource met twice in a batch is written once (the last).
struct Loader<'a> {
    repo: &'a Repository,
    pending: BTreeMap<String, Value>,
    written: u64,
}

impl<'a> Loader<'a> {
    fn new(repo: &'a Repository) -> Self {
        Loader {
            repo,
            pending: BTreeMap::new(),
            written: 0,
        }
    }
    fn push(&mut self, r: Value) -> Result<(), RepoError> {
        let key = format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap_or_default(),
            r["id"].as_str().unwrap_or_default()
        );
        self.pending.insert(key, r);
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), RepoError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let resources: Vec<Value> = std::mem::take(&mut self.pending).into_values().collect();
        let n = resources.len() as u64;
        self.repo
            .bundle(&ctx(), crate::import::as_transaction(resources))?;
        self.written += n;
        Ok(())
    }
}

/// Generates `structures` organisations then `professionals` practitioners with their roles.
pub fn generate(
    repo: Option<&Repository>,
    structures: u64,
    professionals: u64,
    seed: u64,
    out: Option<&Path>,
) -> anyhow::Result<String> {
    let start = Instant::now();
    let mut g = DirectoryGenerator::new(seed);
    let bar = bar(structures + professionals, "structures et professionnels");
    let mut count = 0u64;
    match (out, repo) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("création de {}", dir.display()))?;
            for (file, n, is_structure) in [
                ("structures.ndjson", structures, true),
                ("professionals.ndjson", professionals, false),
            ] {
                let path = dir.join(file);
                let f = std::fs::File::create(&path)
                    .with_context(|| format!("écriture de {}", path.display()))?;
                let mut w = BufWriter::with_capacity(1 << 20, f);
                for _ in 0..n {
                    let resources = if is_structure {
                        vec![g.structure()]
                    } else {
                        g.professional()
                    };
                    for r in resources {
                        serde_json::to_writer(&mut w, &r)?;
                        w.write_all(b"\n")?;
                        count += 1;
                    }
                    bar.inc(1);
                }
                w.flush()?;
            }
        }
        (None, Some(repo)) => {
            let mut loader = Loader::new(repo);
            for _ in 0..structures {
                loader
                    .push(g.structure())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                bar.inc(1);
            }
            loader.flush().map_err(|e| anyhow::anyhow!("{e}"))?;
            for _ in 0..professionals {
                for r in g.professional() {
                    loader.push(r).map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                bar.inc(1);
            }
            loader.flush().map_err(|e| anyhow::anyhow!("{e}"))?;
            count = loader.written;
            repo.flush_audit();
        }
        (None, None) => anyhow::bail!("ni stockage ni --out"),
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "Annuaire : {structures} structure(s), {professionals} professionnel(s) — {count} ressources {} en {secs:.1} s ({:.0} ressources/s)",
        if out.is_some() {
            "écrites"
        } else {
            "chargées"
        },
        count as f64 / secs.max(1e-9)
    ))
}

#[derive(Default)]
pub struct AnnuaireReport {
    pub lines: u64,
    pub resources: u64,
    pub errors: Vec<String>,
    pub seconds: f64,
}

impl std::fmt::Display for AnnuaireReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Annuaire : {} ligne(s) lue(s), {} ressource(s) écrite(s), {} ligne(s) refusée(s) en {:.1} s",
            self.lines,
            self.resources,
            self.errors.len(),
            self.seconds
        )?;
        crate::import::write_errors(f, &self.errors)
    }
}

/// Imports extraction files. A refused line is reported with its number; the others are imported.
pub fn import(repo: &Repository, files: &[PathBuf]) -> anyhow::Result<AnnuaireReport> {
    let start = Instant::now();
    let mut report = AnnuaireReport::default();
    let bar = crate::import::byte_bar(files);
    let mut loader = Loader::new(repo);
    for f in files {
        let name = f.display().to_string();
        let file = std::fs::File::open(f).with_context(|| format!("lecture de {name}"))?;
        let mut lines = std::io::BufReader::new(file).lines().enumerate();
        let header = match lines.next() {
            Some((_, Ok(h))) => Header::parse(&h).map_err(|e| anyhow::anyhow!("{name} : {e}"))?,
            _ => anyhow::bail!("{name} : fichier vide"),
        };
        for (n, line) in lines {
            let line = line.with_context(|| format!("lecture de {name}"))?;
            bar.inc(line.len() as u64 + 1);
            if line.trim().is_empty() {
                continue;
            }
            report.lines += 1;
            match parse_line(&header, &line) {
                Ok(resources) => {
                    for r in resources {
                        loader
                            .push(r)
                            .map_err(|e| anyhow::anyhow!("{name} : {e}"))?;
                    }
                }
                Err(e) => report.errors.push(format!("{name}:{} : {e}", n + 1)),
            }
        }
    }
    loader.flush().map_err(|e| anyhow::anyhow!("{e}"))?;
    report.resources = loader.written;
    repo.flush_audit();
    bar.finish_and_clear();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
