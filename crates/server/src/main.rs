//! `socle`: the command-line entry point. Subcommands serve the API, import data and check the audit trail.

mod capability;
mod http;
mod import;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Socle — plateforme souveraine de santé numérique : serveur FHIR R4, registres, DMP, messagerie.
///
/// Par défaut les données vont dans un fichier SQLite sous --data ; --database postgres://… choisit PostgreSQL.
#[derive(Parser)]
#[command(name = "socle", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the data lives (shared by every subcommand that opens the store).
#[derive(Args, Clone)]
struct StoreArgs {
    /// Data directory: the SQLite file (socle.db) and the blob directory.
    #[arg(long, env = "SOCLE_DATA", default_value = "./socle-data")]
    data: PathBuf,
    /// PostgreSQL URL (postgres://user:pass@host/db); when set, PostgreSQL is used instead of SQLite.
    #[arg(long, env = "SOCLE_DATABASE_URL")]
    database: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the FHIR R4 API (base URL http://HOST:PORT/fhir) and /health.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// Address and port to listen on.
        #[arg(long, env = "SOCLE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Largest accepted request body, in bytes.
        #[arg(long, env = "SOCLE_MAX_BODY", default_value_t = 16 * 1024 * 1024)]
        max_body: usize,
        /// Public base URL of the FHIR API, if it differs from http://<Host header>/fhir (behind a proxy).
        #[arg(long, env = "SOCLE_BASE_URL")]
        base_url: Option<String>,
    },
    /// Load FHIR JSON files: single resources, Bundles (transaction/batch processed, others stored) and NDJSON.
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// Files to load (.json or .ndjson).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Resources per transaction when loading NDJSON.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain and report any altered, inserted or deleted record (exit code 1 if so).
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOCLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn open_store(s: &StoreArgs) -> anyhow::Result<Arc<dyn socle_store::Store>> {
    socle_store::open(s.database.as_deref(), &s.data).context("ouverture du stockage")
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("erreur : {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Serve {
            store,
            listen,
            max_body,
            base_url,
        } => {
            let st = open_store(&store)?;
            let repo = Arc::new(socle_store::Repository::new(st));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("runtime tokio")?;
            rt.block_on(http::serve(
                repo,
                listen,
                http::Options { max_body, base_url },
            ))?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Import {
            store,
            files,
            batch,
        } => {
            let st = open_store(&store)?;
            let repo = socle_store::Repository::new(st);
            let report = import::run(&repo, &files, batch.max(1))?;
            repo.flush_audit();
            println!("{report}");
            Ok(if report.failed == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            })
        }
        Command::Audit {
            command: AuditCommand::Verify { store },
        } => {
            let st = open_store(&store)?;
            let repo = socle_store::Repository::new(st);
            let v = repo.audit_verify().map_err(|e| anyhow::anyhow!("{e}"))?;
            if v.problems.is_empty() {
                println!(
                    "journal d'audit intègre : {} enregistrements vérifiés",
                    v.records
                );
                Ok(std::process::ExitCode::SUCCESS)
            } else {
                println!(
                    "journal d'audit ALTÉRÉ : {} problème(s) sur {} enregistrements",
                    v.problems.len(),
                    v.records
                );
                for (seq, p) in &v.problems {
                    println!("  enregistrement {seq} : {p}");
                }
                Ok(std::process::ExitCode::from(1))
            }
        }
    }
}
