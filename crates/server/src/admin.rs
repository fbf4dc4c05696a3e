//! Administration of the identity provider from the command line: accounts (professionals from the Annuaire,
//! patients from their INS), clients, signing keys. The claims an account's tokens carry are read from the
//! Annuaire (professionals) or the reference registry and the local patient index (patients) when the account
//! is created.

use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use socle_auth::{AccountInfo, NewClient, Provider, ProviderConfig, Realm};
use socle_store::{Repository, RequestContext};

use crate::StoreArgs;

pub fn provider(
    st: Arc<dyn socle_store::Store>,
    public_url: &str,
    secrets: Arc<socle_auth::seal::Sealer>,
) -> anyhow::Result<Arc<Provider>> {
    let mut config = ProviderConfig::new(public_url);
    config.secrets = Some(secrets);
    Provider::open(st, config).map_err(|e| anyhow::anyhow!("fournisseur d'identité : {e}"))
}

fn admin_ctx() -> RequestContext {
    RequestContext {
        principal: "admin-cli".into(),
        client: None,
        base_url: "http://localhost/fhir".into(),
    }
}

fn search(repo: &Repository, rtype: &str, params: &[(&str, String)]) -> anyhow::Result<Vec<Value>> {
    search_as(repo, &admin_ctx(), rtype, params)
}

/// [`search`] on behalf of `ctx`'s principal (audited as such).
fn search_as(
    repo: &Repository,
    ctx: &RequestContext,
    rtype: &str,
    params: &[(&str, String)],
) -> anyhow::Result<Vec<Value>> {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let page = repo
        .search(ctx, rtype, &params, true)
        .map_err(|e| anyhow::anyhow!("recherche {rtype} : {e}"))?;
    Ok(page
        .matches
        .iter()
        .chain(&page.includes)
        .filter_map(|s| serde_json::from_slice(&s.content).ok())
        .collect())
}

fn name_parts(res: &Value) -> (String, String) {
    let n = &res["name"][0];
    let family = n["family"].as_str().unwrap_or_default().to_string();
    let given: Vec<&str> = n["given"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    (family, given.join(" "))
}

/// The claims of a professional, from the Annuaire: the Practitioner with this RPPS, its PractitionerRoles
/// (profession, specialty) and their organisations (FINESS / structure identifiers).
pub fn professional_profile(repo: &Repository, rpps: &str) -> anyhow::Result<(String, Value)> {
    match current_professional_profile(repo, &admin_ctx(), rpps)? {
        Some(x) => Ok(x),
        None => bail!(
            "aucun professionnel actif de l'Annuaire n'a le RPPS {} : importez-le d'abord (socle import --annuaire, \
             socle generate)",
            rpps.trim()
        ),
    }
}

/// [`professional_profile`], read on behalf of `ctx`; `None` when no active Practitioner of the Annuaire has that
/// RPPS (never there, struck off, made inactive).
pub fn current_professional_profile(
    repo: &Repository,
    ctx: &RequestContext,
    rpps: &str,
) -> anyhow::Result<Option<(String, Value)>> {
    let rpps = socle_directory::ids::Rpps::parse(rpps).map_err(|e| anyhow::anyhow!("{e}"))?;
    let found = search_as(
        repo,
        ctx,
        "Practitioner",
        &[(
            "identifier",
            format!("https://rpps.esante.gouv.fr|{}", rpps.as_str()),
        )],
    )?;
    let Some(p) = found.iter().find(|p| p["active"] != false) else {
        return Ok(None);
    };
    let id = p["id"].as_str().unwrap_or_default().to_string();
    let (family, given) = name_parts(p);
    let roles = search_as(
        repo,
        ctx,
        "PractitionerRole",
        &[
            ("practitioner", format!("Practitioner/{id}")),
            ("_include", "PractitionerRole:organization".into()),
        ],
    )?;
    let mut professions = Vec::new();
    let mut specialties = Vec::new();
    let mut structures = Vec::new();
    for r in roles
        .iter()
        .filter(|r| r["resourceType"] == "PractitionerRole")
    {
        for c in r["code"].as_array().into_iter().flatten() {
            if let Some(code) = c["coding"][0]["code"].as_str() {
                professions.push(code.to_string());
            }
        }
        for c in r["specialty"].as_array().into_iter().flatten() {
            if let Some(code) = c["coding"][0]["code"].as_str() {
                specialties.push(code.to_string());
            }
        }
        if let Some(org_ref) = r["organization"]["reference"].as_str() {
            let org = roles.iter().find(|o| {
                o["resourceType"] == "Organization"
                    && format!("Organization/{}", o["id"].as_str().unwrap_or("")) == org_ref
            });
            let ids: Vec<Value> = org
                .and_then(|o| o["identifier"].as_array())
                .map(|ids| {
                    ids.iter()
                        .map(|i| json!({"system": i["system"], "value": i["value"]}))
                        .collect()
                })
                .unwrap_or_default();
            structures.push(json!({
                "organization": org_ref,
                "name": org.and_then(|o| o["name"].as_str()),
                "identifier": ids,
                "role": r["id"],
            }));
        }
    }
    professions.dedup();
    specialties.dedup();
    let idnps = rpps.idnps();
    let profile = json!({
        "idnps": idnps,
        "rpps": rpps.as_str(),
        "family_name": family,
        "given_name": given,
        "name": format!("{given} {family}").trim().to_string(),
        "profession": professions,
        "specialty": specialties,
        "structures": structures,
        "fhirUser": format!("Practitioner/{id}"),
    });
    Ok(Some((idnps, profile)))
}

/// The claims of a patient: the official traits from the reference registry, and the local `Patient` that
/// carries this INS (the `patient` claim, SMART launch context), if there is one.
pub fn patient_profile(
    repo: &Repository,
    registry: &socle_ins::Registry,
    ins: &str,
) -> anyhow::Result<Value> {
    let official = registry
        .get(ins)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("le matricule INS {ins} est inconnu du registre de référence"))?;
    let mut local = None;
    for oid in ["8", "9", "10", "11"] {
        let found = search(
            repo,
            "Patient",
            &[(
                "identifier",
                format!("urn:oid:1.2.250.1.213.1.4.{oid}|{ins}"),
            )],
        )?;
        if let Some(p) = found.into_iter().find(|p| p["active"] != false) {
            local = p["id"].as_str().map(str::to_string);
            break;
        }
    }
    let given = official.traits.given.join(" ");
    let mut profile = json!({
        "ins": official.matricule,
        "ins_system": official.system,
        "family_name": official.traits.family,
        "given_name": given,
        "name": format!("{given} {}", official.traits.family),
        "birthdate": official.traits.birth_date,
    });
    if let Some(id) = local {
        profile["patient"] = id.clone().into();
        profile["fhirUser"] = format!("Patient/{id}").into();
    }
    Ok(profile)
}

fn read_password(from_stdin: bool) -> anyhow::Result<Option<String>> {
    if !from_stdin {
        return Ok(None);
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("lecture du mot de passe sur l'entrée standard")?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        bail!("mot de passe vide sur l'entrée standard");
    }
    Ok(Some(s))
}

pub fn print_account(a: &AccountInfo) {
    println!(
        "compte {} créé : identifiant {}, sujet {}, état {}",
        a.realm.as_str(),
        a.login,
        a.subject,
        a.status
    );
    if let Some(code) = &a.activation_code {
        println!("code d'activation (à remettre à la personne, valable 30 jours) : {code}");
        println!("page d'activation : /auth/{}/activate", a.realm.as_str());
    }
    if let Some((secret, uri)) = &a.totp {
        println!("clé TOTP (à saisir dans l'application d'authentification) : {secret}");
        println!("URI d'enrôlement : {uri}");
    }
}

#[derive(clap::Subcommand)]
pub enum AccountsCommand {
    /// Create a professional's account (realm pro) from the Annuaire: login = RPPS, subject = IDNPS.
    /// Password read from standard input with --password-stdin; without it, an activation code is printed.
    CreateProfessional {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        rpps: String,
        #[arg(long)]
        password_stdin: bool,
        /// Do not enrol a TOTP second factor (the professional can then only log in from an establishment
        /// network).
        #[arg(long)]
        no_totp: bool,
    },
    /// Create a patient's account (realm patient) bound to an INS of the reference registry: login and subject
    /// = the INS. TOTP is always enrolled. Password from standard input with --password-stdin; without it, an
    /// activation code is printed (the person sets the password at /auth/patient/activate).
    CreatePatient {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        ins: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Record that a patient account (`--login`, its INS) legally represents another person (`--ins`: a minor,
    /// an adult under guardianship), who must have a local record. At each authorization the holder then
    /// chooses whose record the application acts on; the represented person's trail names them as legal
    /// representative, and documents hidden from representatives stay hidden from them.
    AddRepresentative {
        #[command(flatten)]
        store: StoreArgs,
        /// The representative's account (its login: their INS).
        #[arg(long)]
        login: String,
        /// The represented person's INS.
        #[arg(long)]
        ins: String,
    },
    /// End a legal representation (majority, court decision): the grants made under it are revoked at once.
    RemoveRepresentative {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        login: String,
        #[arg(long)]
        ins: String,
    },
    /// List the persons a patient account represents.
    Representations {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        login: String,
    },
    /// List the accounts of a realm.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_parser = ["pro", "patient"])]
        realm: String,
    },
    /// Lift the lockout of an account after repeated failures.
    Unlock {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_parser = ["pro", "patient"])]
        realm: String,
        #[arg(long)]
        login: String,
    },
}

// Parsed once per command line: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand)]
pub enum ClientsCommand {
    /// Register a client application; prints its client id (and secret, shown once).
    Register {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_parser = ["pro", "patient"])]
        realm: String,
        #[arg(long)]
        name: String,
        /// Allowed redirect URI (repeat for several). Without any: a client without users (client credentials).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Allowed post-logout redirect URI (repeat for several).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_uris: Vec<String>,
        /// client_secret_basic (default), private_key_jwt (with --jwks), tls_client_auth (with --tls-subject
        /// or --certificate), self_signed_tls_client_auth (with --certificate) or none (public application, PKCE).
        #[arg(long, default_value = "client_secret_basic")]
        auth_method: String,
        /// File with the client's public JWKS (private_key_jwt).
        #[arg(long)]
        jwks: Option<std::path::PathBuf>,
        /// tls_client_auth: the distinguished name of the client's certificates, as RFC 4514 writes it
        /// (e.g. "CN=dpi.ch-exemple.fr, OU=340780477, O=CH Exemple, C=FR"); default: --certificate's subject.
        #[arg(long)]
        tls_subject: Option<String>,
        /// The client's certificate (PEM; repeatable): self_signed_tls_client_auth registers its SHA-256
        /// thumbprint, tls_client_auth its subject.
        #[arg(long = "certificate")]
        certificates: Vec<std::path::PathBuf>,
        /// Scopes the client may ask for (space-separated); default: the realm's user scopes, or system/*.rs.
        #[arg(long)]
        scope: Option<String>,
    },
    /// List the registered clients.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Make new current signing keys; the previous ones stay published for a day.
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the published signing keys.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn realm(s: &str) -> anyhow::Result<Realm> {
    Realm::parse(s).with_context(|| format!("domaine inconnu : {s}"))
}

const CLI_URL: &str = "http://127.0.0.1:8080";

pub fn accounts(cmd: AccountsCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        AccountsCommand::CreateProfessional {
            store,
            rpps,
            password_stdin,
            no_totp,
        } => {
            let (st, _) = crate::open_store(&store)?;
            let repo = Repository::new(st.clone());
            let (idnps, profile) = professional_profile(&repo, &rpps)?;
            let password = read_password(password_stdin)?;
            let p = provider(st, CLI_URL, store.admin_sealer()?)?;
            let login = profile["rpps"].as_str().unwrap_or_default().to_string();
            let a = p
                .create_account(
                    Realm::Pro,
                    &login,
                    &idnps,
                    password.as_deref(),
                    !no_totp,
                    &profile,
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            print_account(&a);
        }
        AccountsCommand::CreatePatient {
            store,
            ins,
            password_stdin,
        } => {
            let (st, registry) = crate::open_store(&store)?;
            let repo = Repository::new(st.clone());
            let profile = patient_profile(&repo, &registry, &ins)?;
            let password = read_password(password_stdin)?;
            let p = provider(st, CLI_URL, store.admin_sealer()?)?;
            let ins = profile["ins"].as_str().unwrap_or_default().to_string();
            let a = p
                .create_account(
                    Realm::Patient,
                    &ins,
                    &ins,
                    password.as_deref(),
                    true,
                    &profile,
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            print_account(&a);
        }
        AccountsCommand::AddRepresentative { store, login, ins } => {
            let (st, registry) = crate::open_store(&store)?;
            let repo = Repository::new(st.clone());
            let profile = patient_profile(&repo, &registry, &ins)?;
            let Some(patient) = profile["patient"].as_str() else {
                bail!(
                    "la personne représentée (INS {ins}) n'a pas de dossier local : créez d'abord son Patient, \
                     identité qualifiée"
                );
            };
            let p = provider(st, CLI_URL, store.admin_sealer()?)?;
            let r = p
                .add_representation(
                    &login,
                    patient,
                    profile["ins"].as_str().unwrap_or(&ins),
                    profile["name"].as_str().unwrap_or_default(),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "le compte {login} représente légalement {} (INS {}, dossier Patient/{})",
                r.name, r.ins, r.patient
            );
        }
        AccountsCommand::RemoveRepresentative { store, login, ins } => {
            let (st, _) = crate::open_store(&store)?;
            let p = provider(st, CLI_URL, store.admin_sealer()?)?;
            if !p
                .remove_representation(&login, &ins)
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                bail!("le compte {login} ne représente pas l'INS {ins}");
            }
            println!(
                "représentation de l'INS {ins} par le compte {login} terminée ; accès donnés sous elle révoqués"
            );
        }
        AccountsCommand::Representations { store, login } => {
            let (st, _) = crate::open_store(&store)?;
            let p = provider(st, CLI_URL, store.admin_sealer()?)?;
            for r in p
                .representations_of_login(&login)
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                println!(
                    "{}\t{}\tPatient/{}\tdepuis {}",
                    r.ins,
                    r.name,
                    r.patient,
                    socle_store::repo::iso_instant(r.since)
                );
            }
        }
        AccountsCommand::List { store, realm: r } => {
            let (st, _) = crate::open_store(&store)?;
            let p = provider(st, CLI_URL, store.admin_sealer()?)?;
            for (login, subject, status, locked) in p
                .list_accounts(realm(&r)?)
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                println!(
                    "{login}\t{subject}\t{status}{}",
                    if locked { "\tverrouillé" } else { "" }
                );
            }
        }
        AccountsCommand::Unlock {
            store,
            realm: r,
            login,
        } => {
            let (st, _) = crate::open_store(&store)?;
            let p = provider(st, CLI_URL, store.admin_sealer()?)?;
            if !p
                .unlock(realm(&r)?, &login)
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                bail!("compte inconnu : {login}");
            }
            println!("compte {login} déverrouillé");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

pub fn clients(cmd: ClientsCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        ClientsCommand::Register {
            store,
            realm: r,
            name,
            redirect_uris,
            post_logout_uris,
            auth_method,
            jwks,
            tls_subject,
            certificates,
            scope,
        } => {
            let mut tls_thumbprints = Vec::new();
            let mut subjects = Vec::new();
            for f in &certificates {
                for der in crate::tls::read_certs(f)? {
                    tls_thumbprints.push(socle_auth::mtls::thumbprint(&der));
                    let subject = crate::tls::subject_of(&der)
                        .with_context(|| format!("{} : certificat X.509 illisible", f.display()))?;
                    subjects.push(
                        socle_auth::mtls::ClientCertificate {
                            thumbprint: String::new(),
                            subject,
                            chain_verified: false,
                        }
                        .subject_text(),
                    );
                }
            }
            let tls_subject = match tls_subject {
                Some(s) => Some(s),
                None if auth_method == "tls_client_auth" => subjects.first().cloned(),
                None => None,
            };
            let jwks = match jwks {
                Some(f) => Some(
                    serde_json::from_slice::<Value>(
                        &std::fs::read(&f)
                            .with_context(|| format!("lecture de {}", f.display()))?,
                    )
                    .with_context(|| format!("{} n'est pas un JWKS JSON", f.display()))?,
                ),
                None => None,
            };
            let (st, _) = crate::open_store(&store)?;
            let p = provider(st, CLI_URL, store.admin_sealer()?)?;
            let c = p
                .register_client(NewClient {
                    realm: realm(&r)?,
                    name,
                    redirect_uris,
                    post_logout_uris,
                    auth_method,
                    jwks,
                    tls_subject: tls_subject.clone(),
                    tls_thumbprints: tls_thumbprints.clone(),
                    scope,
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("client_id: {}", c.client_id);
            match c.auth_method.as_str() {
                "tls_client_auth" => {
                    println!(
                        "sujet du certificat attendu : {}",
                        tls_subject.unwrap_or_default()
                    )
                }
                "self_signed_tls_client_auth" => {
                    println!("empreintes x5t#S256 : {}", tls_thumbprints.join(" "))
                }
                _ => {}
            }
            if let Some(s) = &c.secret {
                println!("client_secret: {s}");
                println!("(le secret n'est affiché qu'une fois : conservez-le)");
            }
            println!("méthode : {} ; portées : {}", c.auth_method, c.scope);
        }
        ClientsCommand::List { store } => {
            let (st, _) = crate::open_store(&store)?;
            let p = provider(st, CLI_URL, store.admin_sealer()?)?;
            for c in p.list_clients().map_err(|e| anyhow::anyhow!("{e}"))? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    c.client_id,
                    c.realm.as_str(),
                    c.auth_method,
                    c.name,
                    c.redirect_uris.join(" ")
                );
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

pub fn keys(cmd: KeysCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        KeysCommand::Rotate { store } => {
            let (st, _) = crate::open_store(&store)?;
            let p = provider(st, CLI_URL, store.admin_sealer()?)?;
            let made = p.keys().rotate().map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("nouvelles clés courantes : {}", made.join(", "));
            println!(
                "les serveurs en marche les prennent en compte dans les 5 secondes ; les anciennes restent publiées 24 h"
            );
        }
        KeysCommand::List { store } => {
            let (st, _) = crate::open_store(&store)?;
            let p = provider(st, CLI_URL, store.admin_sealer()?)?;
            for (kid, alg, created, retired) in p.keys().describe() {
                let state = match retired {
                    Some(t) => format!("retirée {}", socle_store::repo::iso_instant(t)),
                    None => "courante".into(),
                };
                println!(
                    "{kid}\t{alg}\tcréée {}\t{state}",
                    socle_store::repo::iso_instant(created)
                );
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The demonstration's password for its accounts (the demonstration holds synthetic data only).
pub const DEMO_PASSWORD: &str = "socle-demo-2026";
const DEMO_FILE: &str = "demo-identifiants.txt";

/// The local record of the demo patient.
const DEMO_PATIENT: &str = "demo-patient";

/// Creates, on first start, the demonstration's accounts and clients (a professional of the Annuaire, a patient
/// of the registry, a system client with a secret, a public application) and returns how to use them (kept in
/// `demo-identifiants.txt` under the data directory: the secret is shown once by the provider).
pub fn demo_accounts(
    st: Arc<dyn socle_store::Store>,
    repo: &Repository,
    registry: &socle_ins::Registry,
    data: &std::path::Path,
    listen: std::net::SocketAddr,
) -> anyhow::Result<String> {
    let file = data.join(DEMO_FILE);
    if let Ok(text) = std::fs::read_to_string(&file) {
        return Ok(text);
    }
    let p = provider(
        st,
        &format!("http://{listen}"),
        crate::sealer_at(&data.join("secrets.key"))?,
    )?;
    let err = |e: socle_auth::AuthError| anyhow::anyhow!("{e}");
    let first = search(repo, "Practitioner", &[("_count", "1".into())])?;
    let rpps = first
        .first()
        .and_then(|p| p["identifier"].as_array())
        .and_then(|ids| {
            ids.iter()
                .find(|i| i["system"] == "https://rpps.esante.gouv.fr")
        })
        .and_then(|i| i["value"].as_str())
        .context("aucun professionnel dans l'Annuaire de démonstration")?
        .to_string();
    let (idnps, profile) = professional_profile(repo, &rpps)?;
    let pro = p
        .create_account(
            Realm::Pro,
            &rpps,
            &idnps,
            Some(DEMO_PASSWORD),
            true,
            &profile,
        )
        .map_err(err)?;
    let person = socle_ins::generate::PersonGenerator::new(1).next_person();
    // The person's record in the local patient index, identity qualified (INSi answer and an identity document
    // seen), so that their account opens onto it; the demo professional is on their care team.
    let mut local = person.to_fhir();
    local["id"] = DEMO_PATIENT.into();
    if let Some(ext) = local["extension"].as_array_mut() {
        ext.push(serde_json::json!({"url": socle_ins::rniv::EXT_RELIABILITY, "extension": [
            {"url": "identityStatus", "valueCoding": {"system": socle_ins::rniv::SYSTEM_STATUS, "code": "QUAL"}},
            {"url": "insiDate", "valueDate": socle_store::repo::iso_instant(socle_auth::now_ms())[..10]},
            {"url": "validationMode", "valueCoding": {"code": "CN"}}]}));
    }
    if let Some(ids) = local["identifier"].as_array_mut() {
        ids.push(serde_json::json!({"use": "usual", "system": "urn:oid:1.2.250.1.999.1", "value": "IPP-DEMO-1"}));
    }
    repo.update(&admin_ctx(), "Patient", DEMO_PATIENT, local, None)
        .map_err(|e| anyhow::anyhow!("dossier du patient de démonstration : {e}"))?;
    let rules = socle_policy::RuleStore::open(repo.store().clone())
        .map_err(|e| anyhow::anyhow!("règles d'accès : {e}"))?;
    rules
        .add(
            DEMO_PATIENT,
            "care",
            &idnps,
            "",
            socle_policy::rules::MEDECIN_TRAITANT,
            None,
        )
        .map_err(|e| anyhow::anyhow!("relation de soins de démonstration : {e}"))?;
    let pprofile = patient_profile(repo, registry, &person.matricule)?;
    let pat = p
        .create_account(
            Realm::Patient,
            &person.matricule,
            &person.matricule,
            Some(DEMO_PASSWORD),
            true,
            &pprofile,
        )
        .map_err(err)?;
    let system = p
        .register_client(NewClient {
            realm: Realm::Pro,
            name: "Logiciel de démonstration (sans utilisateur)".into(),
            redirect_uris: vec![],
            post_logout_uris: vec![],
            auth_method: "client_secret_basic".into(),
            jwks: None,
            tls_subject: None,
            tls_thumbprints: Vec::new(),
            scope: Some("system/*.cruds".into()),
        })
        .map_err(err)?;
    let app = p
        .register_client(NewClient {
            realm: Realm::Pro,
            name: "Application de démonstration".into(),
            redirect_uris: vec!["http://127.0.0.1:8765/callback".into()],
            post_logout_uris: vec!["http://127.0.0.1:8765/".into()],
            auth_method: "none".into(),
            jwks: None,
            tls_subject: None,
            tls_thumbprints: Vec::new(),
            scope: None,
        })
        .map_err(err)?;
    let secret = system.secret.clone().unwrap_or_default();
    let pro_totp = pro.totp.map(|t| t.0).unwrap_or_default();
    let (pat_totp, pat_uri) = pat.totp.unwrap_or_default();
    let text = format!(
        "Comptes de démonstration (mot de passe : {DEMO_PASSWORD})\n\
         - professionnel (domaine pro) : identifiant {rpps} (RPPS) ; depuis cette machine le mot de passe suffit, \
         ailleurs code TOTP de la clé {pro_totp}\n\
         - patient (domaine patient) : identifiant {ins} (INS) ; code TOTP obligatoire, clé {pat_totp}\n  ({pat_uri})\n  \
         son dossier : Patient/{DEMO_PATIENT} (identité qualifiée), dont le professionnel ci-dessus est le médecin traitant\n\
         Clients :\n\
         - sans utilisateur (client credentials) : client_id {sid}, client_secret {secret}\n\
         - application publique (code + PKCE) : client_id {aid}, redirect_uri http://127.0.0.1:8765/callback\n",
        ins = person.matricule,
        sid = system.client_id,
        aid = app.client_id,
    );
    std::fs::write(&file, &text).with_context(|| format!("écriture de {}", file.display()))?;
    Ok(text)
}

/// The `client_id` and secret of the demonstration's system client, read back from its file.
pub fn demo_system_client(text: &str) -> Option<(String, String)> {
    let line = text.lines().find(|l| l.contains("client credentials"))?;
    let id = line
        .split("client_id ")
        .nth(1)?
        .split(',')
        .next()?
        .trim()
        .to_string();
    let secret = line.split("client_secret ").nth(1)?.trim().to_string();
    Some((id, secret))
}

#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Record a rule for a patient (local Patient id): `care` (--professional, --detail medecin-traitant |
    /// equipe-de-soins | relation-declaree), `block` (--professional), `mask` / `hide-patient` /
    /// `hide-representative` (--target DocumentReference/id), `patient-delegation` (--professional, --detail
    /// document types or *, --days), `delegation` (--patient '*', --actor the delegate's IDNPS, --target the
    /// professional's). Prints the
    /// rule id. (App consents are not rules: the identity provider keeps them.)
    AddRule {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, required_unless_present = "patients_file")]
        patient: Option<String>,
        #[arg(long)]
        kind: String,
        /// A professional's RPPS or IDNPS.
        #[arg(long)]
        professional: Option<String>,
        /// Another actor (a delegate: a secretary's IDNPS).
        #[arg(long)]
        actor: Option<String>,
        #[arg(long, default_value = "")]
        target: String,
        #[arg(long, default_value = "")]
        detail: String,
        /// Validity in days (no end if absent).
        #[arg(long)]
        days: Option<i64>,
        /// The same rule for every patient listed in this file (one local Patient id per line), in one
        /// transaction — e.g. a ward's care team from the admissions list. Replaces --patient.
        #[arg(long, conflicts_with = "patient")]
        patients_file: Option<std::path::PathBuf>,
    },
    /// The live rules of a patient.
    Rules {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        patient: String,
    },
    /// Revoke a rule.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        patient: String,
        #[arg(long)]
        id: String,
    },
    /// Replace the profession × document-type matrix (tab-separated file, format of the default one).
    LoadMatrix {
        #[command(flatten)]
        store: StoreArgs,
        file: std::path::PathBuf,
    },
    /// Print the default matrix (a starting point for `load-matrix`).
    DefaultMatrix,
}

/// A professional given by RPPS (11 digits) or IDNPS (`8` + RPPS) → IDNPS.
pub fn idnps_of(s: &str) -> anyhow::Result<String> {
    let s = s.trim();
    let rpps = if s.len() == 12 && s.starts_with('8') {
        &s[1..]
    } else {
        s
    };
    let r = socle_directory::ids::Rpps::parse(rpps).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(r.idnps())
}

pub fn policy(cmd: PolicyCommand) -> anyhow::Result<std::process::ExitCode> {
    let engine = |store: &StoreArgs| -> anyhow::Result<socle_policy::Engine> {
        let (st, _) = crate::open_store(store)?;
        socle_policy::Engine::open(st).map_err(|e| anyhow::anyhow!("{e}"))
    };
    match cmd {
        PolicyCommand::AddRule {
            store,
            patient,
            kind,
            professional,
            actor,
            target,
            detail,
            days,
            patients_file,
        } => {
            let actor = match (professional, actor) {
                (Some(p), _) => idnps_of(&p)?,
                (None, Some(a)) => a,
                (None, None) => String::new(),
            };
            let expires = days.map(|d| socle_auth::now_ms() + d * 24 * 3600 * 1000);
            let e = engine(&store)?;
            if let Some(f) = patients_file {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("lecture de {}", f.display()))?;
                let patients: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                let Some(first) = patients.first() else {
                    bail!("{} ne liste aucun patient", f.display());
                };
                // Checked once (same kind and fields for all), then stored for every patient.
                socle_policy::rules::RuleStore::check(
                    &kind, first, &actor, &target, &detail, expires,
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                let rules: Vec<socle_policy::rules::NewRule> = patients
                    .iter()
                    .map(|p| {
                        let (k, a, t, d) =
                            (kind.clone(), actor.clone(), target.clone(), detail.clone());
                        (p.to_string(), k, a, t, d, expires)
                    })
                    .collect();
                e.rules
                    .add_many(&rules)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("{} règles {kind} enregistrées", rules.len());
                return Ok(std::process::ExitCode::SUCCESS);
            }
            let patient = patient.unwrap_or_default();
            let id = e
                .rules
                .add(&patient, &kind, &actor, &target, &detail, expires)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("règle {id} enregistrée ({kind}, patient {patient})");
        }
        PolicyCommand::Rules { store, patient } => {
            for r in engine(&store)?
                .rules
                .list(&patient)
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    r.id,
                    r.kind,
                    r.actor,
                    r.target,
                    r.detail,
                    r.expires
                        .map(socle_store::repo::iso_instant)
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        PolicyCommand::Revoke { store, patient, id } => {
            if !engine(&store)?
                .rules
                .revoke(&patient, &id)
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                bail!("aucune règle active {id} pour le patient {patient}");
            }
            println!("règle {id} révoquée");
        }
        PolicyCommand::LoadMatrix { store, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("lecture de {}", file.display()))?;
            let n = engine(&store)?
                .load_matrix(&text)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "matrice chargée : {n} règles (prise en compte par les serveurs à leur redémarrage)"
            );
        }
        PolicyCommand::DefaultMatrix => print!("{}", socle_policy::matrix::DEFAULT),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `socle generate --policy-rules N`: synthetic rules, loaded by batches of 10,000 with a progress bar.
pub fn generate_rules(
    st: Arc<dyn socle_store::Store>,
    n: u64,
    seed: u64,
) -> anyhow::Result<String> {
    let engine = socle_policy::Engine::open(st).map_err(|e| anyhow::anyhow!("{e}"))?;
    // A second load continues the sequence (the rules differ from those already stored).
    let first = engine
        .rules
        .synthetic_count()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(n);
    let mut done = 0;
    while done < n {
        let k = (n - done).min(10_000);
        let rules = socle_policy::rules::synthetic_rules(k, seed, first + done);
        engine
            .rules
            .add_many(&rules)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        done += k;
        bar.set_position(done);
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "{n} règles d'accès synthétiques chargées en {secs:.1} s ({:.0}/s) ; {} en tout",
        n as f64 / secs.max(1e-9),
        first + n
    ))
}
