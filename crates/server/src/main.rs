//! `socle`: the command-line entry point. Subcommands serve the API, import data and check the audit trail.

mod admin;
mod annuaire_io;
mod capability;
mod dmp_cli;
mod http;
mod import;
mod registry_io;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
pub(crate) struct StoreArgs {
    /// Data directory: the SQLite file (socle.db) and the blob directory.
    #[arg(long, env = "SOCLE_DATA", default_value = "./socle-data")]
    data: PathBuf,
    /// PostgreSQL URL (postgres://user:pass@host/db); when set, PostgreSQL is used instead of SQLite.
    #[arg(long, env = "SOCLE_DATABASE_URL")]
    database: Option<String>,
    /// Where document bytes go: s3://bucket[/prefix] for an S3-compatible object store (key from the
    /// environment: SOCLE_S3_ACCESS_KEY_ID and SOCLE_S3_SECRET_ACCESS_KEY, or AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY). Default: the directory <data>/blobs.
    #[arg(long, env = "SOCLE_BLOBS")]
    blobs: Option<String>,
    /// The S3 API's address (http(s)://host[:port]), with --blobs s3://…
    #[arg(long, env = "SOCLE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The S3 region (signing), with --blobs s3://…
    #[arg(long, env = "SOCLE_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// The key that encrypts the identity provider's secrets in the database (private signing keys, TOTP
    /// seeds), AES-256-GCM: a file of 64 hexadecimal digits, created (owner-only) when absent. Default:
    /// <data>/secrets.key. Every node of a deployment needs the same file; keep it apart from database backups.
    #[arg(long, env = "SOCLE_SECRETS_KEY")]
    secrets_key: Option<PathBuf>,
}

/// The secrets key at `path` (created when absent).
pub(crate) fn sealer_at(path: &std::path::Path) -> anyhow::Result<Arc<socle_auth::seal::Sealer>> {
    Ok(Arc::new(
        socle_auth::seal::Sealer::load_or_create(path).map_err(|e| anyhow::anyhow!("{e}"))?,
    ))
}

impl StoreArgs {
    fn secrets_path(&self) -> PathBuf {
        self.secrets_key
            .clone()
            .unwrap_or_else(|| self.data.join("secrets.key"))
    }

    /// The identity provider's secrets key (see `--secrets-key`), created when absent (`socle serve`).
    pub(crate) fn sealer(&self) -> anyhow::Result<Arc<socle_auth::seal::Sealer>> {
        sealer_at(&self.secrets_path())
    }

    /// The secrets key for an administration command: on a shared database (PostgreSQL) it must be the servers'
    /// file — one made here would seal what the servers cannot open; the embedded store's is created as by
    /// `serve` (same data directory).
    pub(crate) fn admin_sealer(&self) -> anyhow::Result<Arc<socle_auth::seal::Sealer>> {
        let path = self.secrets_path();
        if self.database.is_some() && !path.exists() {
            anyhow::bail!(
                "clé de chiffrement des secrets absente : {} — sur une base partagée, la commande utilise le \
                 fichier des serveurs (--secrets-key ou SOCLE_SECRETS_KEY)",
                path.display()
            );
        }
        sealer_at(&path)
    }

    /// Where document bytes go (see `--blobs`).
    pub(crate) fn blob_config(&self) -> anyhow::Result<socle_store::blob::BlobConfig> {
        let Some(url) = &self.blobs else {
            return Ok(socle_store::blob::BlobConfig::Local(
                self.data.join("blobs"),
            ));
        };
        let endpoint = self
            .s3_endpoint
            .as_deref()
            .context("--blobs s3://… demande --s3-endpoint (ou SOCLE_S3_ENDPOINT)")?;
        let env = |a: &str, b: &str| {
            std::env::var(a)
                .or_else(|_| std::env::var(b))
                .unwrap_or_default()
        };
        let cfg = socle_store::s3::S3Config::from_url(
            url,
            endpoint,
            &self.s3_region,
            &env("SOCLE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
            &env("SOCLE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        )?;
        Ok(socle_store::blob::BlobConfig::S3(cfg))
    }
}

/// Authentication settings of the server.
#[derive(Args, Clone)]
struct AuthArgs {
    /// URL at which clients reach Socle (http(s)://host:port): the OpenID Connect issuers are
    /// <URL>/auth/pro and <URL>/auth/patient, access tokens are for <URL>/fhir. Default: http://<listen address>.
    #[arg(long, env = "SOCLE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Establishment networks (CIDR, comma-separated): professionals connecting from them may log in with a
    /// password alone (acr eidas1); from anywhere else a TOTP code is required (eidas2).
    #[arg(long, env = "SOCLE_ESTABLISHMENT_NETWORKS", value_delimiter = ',')]
    establishment_networks: Vec<socle_auth::Network>,
    /// DEVELOPMENT ONLY: no authentication, every request acts as the local developer with every right.
    /// Refused unless --listen is a loopback address.
    #[arg(long)]
    insecure_local: bool,
}

/// HTTPS settings of the server (without them: plain HTTP, for a TLS-terminating proxy or development).
#[derive(Args, Clone)]
struct TlsArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first).
    #[arg(long, env = "SOCLE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SOCLE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Certification authorities of client certificates (PEM; e.g. the IGC-Santé's): client certificates are
    /// then requested (never required) and clients may authenticate with them (tls_client_auth,
    /// self_signed_tls_client_auth; RFC 8705), their access tokens bound to the certificate.
    #[arg(long, env = "SOCLE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Revocation lists of those authorities (PEM; repeatable, or comma-separated).
    #[arg(
        long,
        env = "SOCLE_TLS_CLIENT_CRL",
        value_delimiter = ',',
        requires = "tls_client_ca"
    )]
    tls_client_crl: Vec<PathBuf>,
    /// TESTS: seconds between looks at the revocation lists' files.
    #[arg(long, hide = true, default_value_t = 60)]
    tls_reload_secs: u64,
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
        /// Largest document a DMP feed accepts, in bytes (refused beyond with the code `too-large`); by default
        /// 10 MiB, or less when --max-body is smaller than its base64 in a Bundle. Given explicitly, it must fit
        /// in --max-body: the server refuses to start otherwise.
        #[arg(long, env = "SOCLE_MAX_DOCUMENT")]
        max_document: Option<u64>,
        /// Public base URL of the FHIR API, if it differs from http://<Host header>/fhir (behind a proxy).
        #[arg(long, env = "SOCLE_BASE_URL")]
        base_url: Option<String>,
        #[command(flatten)]
        auth: AuthArgs,
        #[command(flatten)]
        tls: TlsArgs,
        /// Directory of extra CI-SIS value sets (JDV_*.xml, IHE SVS format) for the DMP's metadata checks: J06
        /// (class) and J10 (format) switch those checks on; a file replaces the embedded set of the same number.
        #[arg(long, env = "SOCLE_VALUE_SETS")]
        value_sets: Option<PathBuf>,
        /// TESTS: read every unsorted search page one way (drive, scan, intersect, streams) instead of choosing.
        #[arg(long, hide = true, value_parser = ["auto", "drive", "scan", "intersect", "streams"], default_value = "auto")]
        search_plan: String,
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
        /// The files are reference identities for the INS registry (NDJSON, one FHIR Patient per line with its
        /// INS identifier and official traits), not resources of the FHIR store.
        #[arg(long, conflicts_with = "annuaire")]
        registry: bool,
        /// The files are extractions of the Annuaire Santé (pipe-separated "PS_LibreAcces_Personne_activite"
        /// files; columns supported: see the README).
        #[arg(long)]
        annuaire: bool,
    },
    /// Generate reproducible synthetic data: persons with coherent INS for the reference registry, structures
    /// and professionals for the Annuaire Santé.
    Generate {
        #[command(flatten)]
        store: StoreArgs,
        /// Persons (reference identities) to generate.
        #[arg(long, default_value_t = 0)]
        persons: u64,
        /// Professionals (Practitioner with their PractitionerRole) to generate (needs --structures).
        #[arg(long, default_value_t = 0)]
        professionals: u64,
        /// Structures (Organization with a FINESS number) to generate.
        #[arg(long, default_value_t = 0)]
        structures: u64,
        /// Seed: the same seed gives the same data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write NDJSON files in this directory (loadable with `socle import`) instead of loading the store.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Synthetic access-policy rules (care relationships, blocks, masks, consents, delegations for synthetic
        /// patients `syn-…`), loaded into the store (not with --out); added to those already there.
        #[arg(long, default_value_t = 0)]
        policy_rules: u64,
    },
    /// Start Socle with a demonstration population, on the embedded store (nothing to install).
    Demo {
        /// Data directory of the demonstration (created and filled on first start).
        #[arg(long, env = "SOCLE_DATA", default_value = "./socle-demo")]
        data: PathBuf,
        /// Address and port to listen on.
        #[arg(long, env = "SOCLE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Index again the resources of the types whose search parameters changed since they were written (after an
    /// upgrade; `socle serve` also does it in the background when it starts), or of the types given.
    Reindex {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this resource type (repeatable), whatever the state of its index.
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// Every type that has resources, whatever the state of its index.
        #[arg(long, conflicts_with = "types")]
        all: bool,
        /// Resources per transaction.
        #[arg(long, default_value_t = socle_store::reindex::BATCH)]
        batch: usize,
    },
    /// DMP: the queue of feed events that later services consume.
    Dmp {
        #[command(subcommand)]
        command: dmp_cli::DmpCommand,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Accounts of the identity provider (professionals, patients).
    Accounts {
        #[command(subcommand)]
        command: admin::AccountsCommand,
    },
    /// Client applications of the identity provider.
    Clients {
        #[command(subcommand)]
        command: admin::ClientsCommand,
    },
    /// Signing keys of the identity provider.
    Keys {
        #[command(subcommand)]
        command: admin::KeysCommand,
    },
    /// Access policy: patient rules (care relationships, blocks, masks, delegations, consents) and the
    /// profession × document-type matrix.
    Policy {
        #[command(subcommand)]
        command: admin::PolicyCommand,
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

/// Opens the store, its INS registry, and installs the business rules (see `with_rules`).
pub(crate) fn open_store(
    s: &StoreArgs,
) -> anyhow::Result<(Arc<dyn socle_store::Store>, Arc<socle_ins::Registry>)> {
    let st = socle_store::open(s.database.as_deref(), &s.data).context("ouverture du stockage")?;
    let registry = with_rules(st.clone())?;
    Ok((st, registry))
}

/// Starts indexing again, on a background thread, the types whose search parameters changed since their
/// resources were written (a new release): the server answers meanwhile.
fn reindex_in_background(st: &Arc<dyn socle_store::Store>) -> anyhow::Result<()> {
    let stale = socle_store::reindex::stale_types(&**st, None).context("état des index")?;
    if !stale.is_empty() {
        let resources: i64 = stale.iter().map(|s| s.live).sum();
        tracing::warn!(
            types = stale.len(),
            resources,
            "index de recherche faits sous d'autres définitions : réindexation en arrière-plan \
             (les paramètres changés peuvent manquer des ressources jusqu'à sa fin)"
        );
        socle_store::reindex::spawn_background(st.clone(), stale);
    }
    Ok(())
}

/// `socle reindex`: the stale types (or those asked), one after the other, with a progress bar.
fn reindex(
    store: &StoreArgs,
    types: &[String],
    all: bool,
    batch: usize,
) -> anyhow::Result<std::process::ExitCode> {
    let st = socle_store::open(store.database.as_deref(), &store.data)
        .context("ouverture du stockage")?;
    let reg = socle_fhir::search_params::registry();
    if let Some(bad) = types.iter().find(|t| !reg.is_resource_type(t)) {
        anyhow::bail!("type de ressource inconnu : {bad}");
    }
    let everything: Vec<String>;
    let only = if all {
        everything = reg.resource_types().map(str::to_string).collect();
        Some(everything.as_slice())
    } else if types.is_empty() {
        None
    } else {
        Some(types)
    };
    let lease = socle_store::reindex::Lease::new();
    if let Some(until) = lease.acquire(&*st).context("bail de réindexation")? {
        anyhow::bail!(
            "une réindexation est en cours dans un autre processus (un serveur qui démarre sur ce stockage) : \
             son bail court jusqu'à {} ; réessayez ensuite",
            socle_store::reindex::lease_end(until)
        );
    }
    let r = reindex_leased(&*st, only, batch, &lease);
    if let Err(e) = lease.release(&*st) {
        tracing::warn!(error = %e, "bail de réindexation non rendu (il expirera)");
    }
    r
}

fn reindex_leased(
    st: &dyn socle_store::Store,
    only: Option<&[String]>,
    batch: usize,
    lease: &socle_store::reindex::Lease,
) -> anyhow::Result<std::process::ExitCode> {
    let stale = socle_store::reindex::stale_types(st, only).context("état des index")?;
    if stale.is_empty() {
        println!("index à jour : rien à réindexer");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let total: i64 = stale.iter().map(|s| s.live).sum();
    let bar = indicatif::ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>24} [{bar:40}] {pos}/{len} ressources ({per_sec}, reste {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let mut before = 0u64;
    let mut lines = Vec::new();
    for s in &stale {
        bar.set_message(s.rtype.clone());
        let t = std::time::Instant::now();
        let n = socle_store::reindex::reindex_type(st, &s.rtype, batch, lease, &mut |done| {
            bar.set_position(before + done)
        })
        .with_context(|| format!("réindexation de {}", s.rtype))?;
        before += n;
        lines.push(format!(
            "{} : {n} ressources en {:.1} s",
            s.rtype,
            t.elapsed().as_secs_f64()
        ));
    }
    bar.finish_and_clear();
    for l in lines {
        println!("{l}");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{before} ressources réindexées ({} types) en {secs:.1} s, {:.0} ressources/s",
        stale.len(),
        before as f64 / secs.max(1e-9)
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// An import's exit code: 1 when some input was refused.
fn exit_code(all_accepted: bool, report: impl std::fmt::Display) -> std::process::ExitCode {
    println!("{report}");
    if all_accepted {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

/// Opens the INS registry of a store and installs the business rules of the national registries that every
/// write goes through (Annuaire identifiers, identity vigilance, which verifies INS against the registry).
fn with_rules(st: Arc<dyn socle_store::Store>) -> anyhow::Result<Arc<socle_ins::Registry>> {
    let registry = Arc::new(socle_ins::Registry::open(st).context("registre INS")?);
    let reg = registry.clone();
    socle_store::set_validators(vec![
        Arc::new(socle_directory::validate),
        Arc::new(move |rtype: &str, v: &serde_json::Value| {
            if rtype == "Patient" {
                socle_ins::rniv::check(v, Some(&reg))
            } else {
                Ok(())
            }
        }),
    ]);
    Ok(registry)
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
            max_document,
            base_url,
            auth,
            tls,
            value_sets,
            search_plan,
        } => {
            // A document's base64 (4 bytes per 3) and the Bundle around it (metadata: 64 KiB is ample).
            const BUNDLE_MARGIN: u64 = 64 * 1024;
            let fits = (max_body as u64).saturating_sub(BUNDLE_MARGIN) / 4 * 3;
            let max_document = match max_document {
                None => fits.min(10 * 1024 * 1024),
                Some(n) => {
                    let needed = n
                        .div_ceil(3)
                        .saturating_mul(4)
                        .saturating_add(BUNDLE_MARGIN);
                    if needed > max_body as u64 {
                        anyhow::bail!(
                            "--max-document {n} : un document de cette taille, encodé en base64 dans un Bundle, \
                             dépasse --max-body {max_body} ; portez --max-body à {needed} au moins ou baissez \
                             --max-document"
                        );
                    }
                    n
                }
            };
            socle_store::force_search_plan(match search_plan.as_str() {
                "drive" => socle_store::SearchPlan::Drive,
                "scan" => socle_store::SearchPlan::Scan,
                "intersect" => socle_store::SearchPlan::Intersect,
                "streams" => socle_store::SearchPlan::Streams,
                _ => socle_store::SearchPlan::Auto,
            });
            if auth.insecure_local && !listen.ip().is_loopback() {
                anyhow::bail!(
                    "--insecure-local n'est accepté que sur une adresse de bouclage (127.0.0.1, ::1), pas sur {listen}"
                );
            }
            let tls = match (tls.tls_cert, tls.tls_key) {
                (Some(cert), Some(key)) => Some(tls::Tls::load(&tls::TlsFiles {
                    cert,
                    key,
                    client_ca: tls.tls_client_ca,
                    client_crl: tls.tls_client_crl,
                    reload_every: std::time::Duration::from_secs(tls.tls_reload_secs.max(1)),
                })?),
                _ => None,
            };
            let (st, registry) = open_store(&store)?;
            reindex_in_background(&st)?;
            let secrets = store.sealer()?;
            let mut dmp = http::dmp::Dmp::open(&st, &store.blob_config()?, value_sets.as_deref())?;
            dmp.opts.max_document_bytes = max_document;
            let repo = Arc::new(socle_store::Repository::new(st.clone()));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("runtime tokio")?;
            rt.block_on(http::serve(
                repo,
                registry,
                listen,
                http::Options {
                    max_body,
                    base_url,
                    auth: None,
                    insecure_local: auth.insecure_local,
                    policy: None,
                    dmp: Some(Arc::new(dmp)),
                },
                http::AuthSetup {
                    store: st,
                    public_url: auth.public_url,
                    trusted_networks: auth.establishment_networks,
                    tls,
                    secrets,
                },
            ))?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Accounts { command } => admin::accounts(command),
        Command::Clients { command } => admin::clients(command),
        Command::Keys { command } => admin::keys(command),
        Command::Policy { command } => admin::policy(command),
        Command::Import {
            store,
            files,
            annuaire: true,
            ..
        } => {
            let repo = socle_store::Repository::new(open_store(&store)?.0);
            let report = annuaire_io::import(&repo, &files)?;
            Ok(exit_code(report.errors.is_empty(), report))
        }
        Command::Import {
            store,
            files,
            registry: true,
            ..
        } => {
            let report = registry_io::import_registry(&open_store(&store)?.1, &files)?;
            Ok(exit_code(report.errors.is_empty(), report))
        }
        Command::Generate {
            store,
            persons,
            professionals,
            structures,
            seed,
            out,
            policy_rules,
        } => {
            if policy_rules > 0 && out.is_some() {
                anyhow::bail!("--policy-rules charge le stockage : incompatible avec --out");
            }
            if professionals > 0 && structures == 0 {
                anyhow::bail!(
                    "--professionals demande des structures où exercer : ajoutez --structures N"
                );
            }
            let st = match &out {
                Some(_) => None,
                None => Some(open_store(&store)?),
            };
            if persons > 0 {
                let registry = st.as_ref().map(|(_, r)| r.as_ref());
                println!(
                    "{}",
                    registry_io::generate_persons(registry, persons, seed, out.as_deref())?
                );
            }
            if policy_rules > 0
                && let Some((st, _)) = &st
            {
                println!("{}", admin::generate_rules(st.clone(), policy_rules, seed)?);
            }
            if structures > 0 {
                let repo = st.map(|(st, _)| socle_store::Repository::new(st));
                println!(
                    "{}",
                    annuaire_io::generate(
                        repo.as_ref(),
                        structures,
                        professionals,
                        seed,
                        out.as_deref()
                    )?
                );
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Demo { data, listen } => {
            let st =
                socle_store::open(None, &data).context("ouverture du stockage de démonstration")?;
            let registry = with_rules(st.clone())?;
            reindex_in_background(&st)?;
            if registry.count().context("registre INS")? == 0 {
                println!("Premier démarrage : génération de la population de démonstration…");
                println!(
                    "{}",
                    registry_io::generate_persons(Some(&registry), DEMO_PERSONS, 1, None)?
                );
            }
            let repo = Arc::new(socle_store::Repository::new(st.clone()));
            if repo.type_count("Practitioner").context("Annuaire")? == 0 {
                println!(
                    "{}",
                    annuaire_io::generate(
                        Some(&repo),
                        DEMO_STRUCTURES,
                        DEMO_PROFESSIONALS,
                        1,
                        None
                    )?
                );
            }
            let dmp = http::dmp::Dmp::open(
                &st,
                &socle_store::blob::BlobConfig::Local(data.join("blobs")),
                None,
            )?;
            let accounts = admin::demo_accounts(st.clone(), &repo, &registry, &data, listen)?;
            println!("{}", demo_banner(listen, &data, &accounts));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("runtime tokio")?;
            rt.block_on(http::serve(
                repo,
                registry,
                listen,
                http::Options {
                    max_body: 16 * 1024 * 1024,
                    base_url: None,
                    auth: None,
                    insecure_local: false,
                    policy: None,
                    dmp: Some(Arc::new(dmp)),
                },
                http::AuthSetup {
                    store: st,
                    public_url: None,
                    // The demonstration's professionals log in from this machine with a password alone.
                    trusted_networks: vec![
                        "127.0.0.0/8".parse().map_err(anyhow::Error::msg)?,
                        "::1/128".parse().map_err(anyhow::Error::msg)?,
                    ],
                    tls: None,
                    secrets: sealer_at(&data.join("secrets.key"))?,
                },
            ))?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Import {
            store,
            files,
            batch,
            ..
        } => {
            let repo = socle_store::Repository::new(open_store(&store)?.0);
            let report = import::run(&repo, &files, batch.max(1))?;
            repo.flush_audit();
            Ok(exit_code(report.failed == 0, report))
        }
        Command::Reindex {
            store,
            types,
            all,
            batch,
        } => reindex(&store, &types, all, batch),
        Command::Dmp { command } => dmp_cli::run(command),
        Command::Audit {
            command: AuditCommand::Verify { store },
        } => {
            let repo = socle_store::Repository::new(open_store(&store)?.0);
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

/// Persons of the demonstration's reference registry.
const DEMO_PERSONS: u64 = 2_000;
/// Structures and professionals of the demonstration's Annuaire.
const DEMO_STRUCTURES: u64 = 60;
const DEMO_PROFESSIONALS: u64 = 300;

fn demo_banner(listen: SocketAddr, data: &std::path::Path, accounts: &str) -> String {
    // The first person the demonstration generated (seed 1): a query that finds someone.
    let p = socle_ins::generate::PersonGenerator::new(1).next_person();
    let mut params = vec![
        serde_json::json!({"name": "family", "valueString": p.family}),
        serde_json::json!({"name": "given", "valueString": p.given[0]}),
        serde_json::json!({"name": "birthdate", "valueDate": p.birth_date}),
        serde_json::json!({"name": "gender", "valueCode": p.gender}),
    ];
    let retrieve = serde_json::json!({"resourceType": "Parameters", "parameter": params.clone()});
    params.push(serde_json::json!({"name": "ins", "valueString": p.matricule}));
    let verify = serde_json::json!({"resourceType": "Parameters", "parameter": params});
    let (id, secret) = admin::demo_system_client(accounts).unwrap_or_default();
    format!(
        "Démonstration Socle — données dans {data} (supprimez ce dossier pour repartir de zéro)\n\
         Registre INS : {DEMO_PERSONS} identités synthétiques ; Annuaire : {DEMO_STRUCTURES} structures, {DEMO_PROFESSIONALS} professionnels (graine 1).\n\n\
         {accounts}\n\
         Essayez (l'Annuaire public se lit sans jeton ; le reste exige un jeton d'accès) :\n  \
         curl http://{listen}/auth/pro/.well-known/openid-configuration\n  \
         curl 'http://{listen}/fhir/PractitionerRole?role=10&specialty=SM54&_include=PractitionerRole:practitioner&_include=PractitionerRole:organization'\n  \
         TOKEN=$(curl -s -u {id}:{secret} -d grant_type=client_credentials -d scope='system/*.rs' http://{listen}/auth/pro/token | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n  \
         curl -X POST http://{listen}/fhir/Patient/\\$ins-retrieve -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/fhir+json' -d '{retrieve}'\n  \
         curl -X POST http://{listen}/fhir/Patient/\\$ins-verify -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/fhir+json' -d '{verify}'\n  \
         curl http://{listen}/fhir/Patient/demo-patient -H \"Authorization: Bearer $TOKEN\"\n\
         Connexion d'un professionnel dans le navigateur : http://{listen}/auth/pro/authorize (paramètres : README, « Authentication and access »).\n",
        data = data.display()
    )
}
