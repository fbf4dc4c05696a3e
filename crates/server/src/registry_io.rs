//! `socle generate` (synthetic persons into the reference registry, or as NDJSON) and
//! `socle import --registry` (reference identities from NDJSON), with progress bars.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use socle_ins::generate::PersonGenerator;
use socle_ins::{Official, Registry};

/// Identities per registry transaction.
const BATCH: usize = 20_000;

pub fn bar(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}}, reste {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Generates `n` persons; loads them into the registry, or writes `out/persons.ndjson`.
pub fn generate_persons(
    registry: Option<&Registry>,
    n: u64,
    seed: u64,
    out: Option<&Path>,
) -> anyhow::Result<String> {
    let start = Instant::now();
    let mut g = PersonGenerator::new(seed);
    let bar = bar(n, "personnes");
    match (out, registry) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("création de {}", dir.display()))?;
            let path = dir.join("persons.ndjson");
            let f = std::fs::File::create(&path)
                .with_context(|| format!("écriture de {}", path.display()))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            for i in 0..n {
                serde_json::to_writer(&mut w, &g.next_person().to_fhir())?;
                w.write_all(b"\n")?;
                if i % 10_000 == 0 {
                    bar.set_position(i);
                }
            }
            w.flush()?;
            bar.finish_and_clear();
            Ok(format!(
                "{n} personnes écrites dans {} en {:.1} s",
                path.display(),
                start.elapsed().as_secs_f64()
            ))
        }
        (None, Some(reg)) => {
            // Order numbers start again with each seed: another generation would silently replace the
            // identities whose matricules it draws again.
            let present = reg.count().context("registre INS")?;
            if present > 0 {
                anyhow::bail!(
                    "le registre INS contient déjà {present} identités : une nouvelle génération remplacerait \
                     celles dont elle tire à nouveau le matricule ; générer dans un stockage vide, ou écrire le \
                     NDJSON (--out) et le charger en connaissance de cause (socle import --registry)"
                );
            }
            let mut made = 0u64;
            let mut next = || {
                let k = (n - made).min(BATCH as u64);
                made += k;
                (0..k).map(|_| g.next_person().to_official()).collect()
            };
            reg.bulk_load(&mut next, &mut |done| bar.set_position(done))
                .context("chargement du registre INS")?;
            bar.finish_and_clear();
            let secs = start.elapsed().as_secs_f64();
            Ok(format!(
                "{n} personnes générées et chargées dans le registre INS en {secs:.1} s ({:.0}/s)",
                n as f64 / secs.max(1e-9)
            ))
        }
        (None, None) => anyhow::bail!("ni registre ni --out"),
    }
}

/// The outcome of `socle import --registry`.
#[derive(Default)]
pub struct RegistryReport {
    pub loaded: u64,
    pub errors: Vec<String>,
    pub seconds: f64,
}

impl std::fmt::Display for RegistryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "registre INS : {} identité(s) chargée(s), {} ligne(s) refusée(s) en {:.1} s",
            self.loaded,
            self.errors.len(),
            self.seconds
        )?;
        crate::import::write_errors(f, &self.errors)
    }
}

/// Loads reference identities (one FHIR `Patient` per line). A bad line is reported with its number and
/// skipped; the others are loaded.
pub fn import_registry(registry: &Registry, files: &[PathBuf]) -> anyhow::Result<RegistryReport> {
    let start = Instant::now();
    let mut report = RegistryReport::default();
    let bar = crate::import::byte_bar(files);
    let mut batch = Vec::with_capacity(BATCH);
    for f in files {
        let name = f.display().to_string();
        let file = std::fs::File::open(f).with_context(|| format!("lecture de {name}"))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("lecture de {name}"))?;
            bar.inc(line.len() as u64 + 1);
            if line.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str(&line)
                .map_err(|e| format!("JSON invalide : {e}"))
                .and_then(|v| Official::from_fhir(&v).map_err(|e| e.to_string()));
            match parsed {
                Ok(o) => batch.push(o),
                Err(e) => report.errors.push(format!("{name}:{} : {e}", n + 1)),
            }
            if batch.len() == BATCH {
                registry
                    .load(&batch)
                    .context("chargement du registre INS")?;
                report.loaded += batch.len() as u64;
                batch.clear();
            }
        }
    }
    registry
        .load(&batch)
        .context("chargement du registre INS")?;
    report.loaded += batch.len() as u64;
    bar.finish_and_clear();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
