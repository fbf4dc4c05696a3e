//! `socle-bench`: a load generator for FHIR R4 servers, driven by base URL.
//!
//! Workloads (one subcommand each):
//! - `ingest`: transaction Bundles of synthetic Patient/Encounter/Observation/Condition, N concurrent clients;
//!   writes a state file (ids and search keys of the created Patients) for the other workloads.
//! - `create`: single `POST /Observation`.
//! - `read`: `GET /Patient/{id}`.
//! - `search`: one of four queries (`patient-code`, `family-birthdate`, `code-paged`, `summary-count`).
//! - `check`: a few correctness probes (does the server honour the search parameters?) before measuring.
//! - `jitter`: the machine's own latency noise, no server involved (a fixed CPU task timed many times).
//! - `analyze`: a SQLite data file's planner statistics refreshed both ways (one `ANALYZE`, or two steps).
//!
//! Each workload prints one JSON line (appended to `--out` if given) with throughput and latency percentiles.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "socle-bench", about = "Load generator for FHIR R4 servers")]
struct Cli {
    /// FHIR base URL, e.g. http://127.0.0.1:8080/fhir
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080/fhir")]
    base: String,
    /// Free-form label copied into each result line (server, backend, size…).
    #[arg(long, global = true, default_value = "")]
    label: String,
    /// Append the JSON result line to this file.
    #[arg(long, global = true)]
    out: Option<String>,
    /// Per-request timeout, seconds.
    #[arg(long, global = true, default_value_t = 120)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load synthetic data with transaction Bundles; writes the state file.
    Ingest {
        /// Total resources to create (rounded up to whole bundles).
        #[arg(long, default_value_t = 10_000)]
        resources: u64,
        /// Resources per transaction Bundle (multiple of 10: each patient brings 10 resources).
        #[arg(long, default_value_t = 100)]
        bundle_size: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Where to write the created patients (ids, family, birthDate).
        #[arg(long)]
        state: String,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Give up after this many seconds (the figures then cover what was done).
        #[arg(long, default_value_t = 3600)]
        max_seconds: u64,
    },
    /// Single creates: POST /Observation referencing an ingested Patient.
    Create {
        #[arg(long, default_value_t = 5_000)]
        count: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long)]
        state: String,
        #[arg(long, default_value_t = 300)]
        max_seconds: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Reads by id: GET /Patient/{id} with ids from the ingest.
    Read {
        #[arg(long, default_value_t = 20_000)]
        count: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long)]
        state: String,
        #[arg(long, default_value_t = 300)]
        max_seconds: u64,
        /// Unmeasured requests first.
        #[arg(long, default_value_t = 200)]
        warmup: u64,
        #[arg(long, default_value_t = 11)]
        seed: u64,
        /// Every other request with the token in SOCLE_BENCH_TOKEN_B (the same patient as the request before
        /// it); their figures go on a second result line with this label.
        #[arg(long)]
        alternate_label: Option<String>,
    },
    /// Searches.
    Search {
        #[arg(long, value_enum)]
        query: Query,
        #[arg(long, default_value_t = 2_000)]
        count: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long)]
        state: String,
        #[arg(long, default_value_t = 300)]
        max_seconds: u64,
        #[arg(long, default_value_t = 50)]
        warmup: u64,
        /// Pages to walk for `code-paged` (first page + next links).
        #[arg(long, default_value_t = 5)]
        pages: usize,
        /// `_count` for `code-paged`.
        #[arg(long, default_value_t = 100)]
        page_size: usize,
        #[arg(long, default_value_t = 13)]
        seed: u64,
    },
    /// The OpenID Connect provider: `token` (client-credentials tokens issued) or `introspect` (RFC 7662 calls on
    /// one token), with a confidential client of the realm: a secret (HTTP Basic) or, over HTTPS, a client
    /// certificate (RFC 8705 `tls_client_auth`).
    Auth(AuthArgs),
    /// The DMP (IHE MHD): patients first (`--op setup`), then feeds, finds and retrievals. Patients are the first
    /// `--patients` persons of `socle generate --persons N --seed S` (the registry must hold them).
    Dmp {
        #[arg(long, value_enum)]
        op: DmpOp,
        #[arg(long, default_value_t = 1000)]
        patients: u64,
        #[arg(long, default_value_t = 1)]
        gen_seed: u64,
        /// Size of the PDF inside each fed CDA document.
        #[arg(long, default_value_t = 100_000)]
        pdf_bytes: usize,
        /// Distinguishes the unique ids of successive feed runs on one server.
        #[arg(long, default_value = "r1")]
        run: String,
        /// Patients to feed (feed: documents go to the first `--feed-patients` patients, round robin).
        #[arg(long)]
        feed_patients: Option<u64>,
        /// `_count` of the find queries.
        #[arg(long, default_value_t = 50)]
        page_size: usize,
        #[arg(long, default_value_t = 2_000)]
        count: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
        #[arg(long, default_value_t = 50)]
        warmup: u64,
        #[arg(long, default_value_t = 17)]
        seed: u64,
        /// Feeds: build each submission when it is sent instead of all of them before the run (memory stays flat
        /// — 6.4 KB per 1 KB-PDF submission otherwise, which at a million pushes the database out of the page
        /// cache; the load generator's building then runs during the measurement).
        #[arg(long)]
        stream: bool,
    },
    /// INSi calls against the reference registry filled by `socle generate --persons N --seed S`: the same
    /// generator, re-run here, gives a sample of identities that exist (every (N / sample)-th person).
    Insi {
        #[arg(long, value_enum)]
        op: InsiOp,
        /// Persons in the registry (as generated).
        #[arg(long)]
        persons: u64,
        /// Seed of the generation.
        #[arg(long, default_value_t = 1)]
        gen_seed: u64,
        /// Identities to draw queries from.
        #[arg(long, default_value_t = 20_000)]
        sample: u64,
        #[arg(long, default_value_t = 5_000)]
        count: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value_t = 300)]
        max_seconds: u64,
        #[arg(long, default_value_t = 200)]
        warmup: u64,
        #[arg(long, default_value_t = 17)]
        seed: u64,
    },
    /// Annuaire searches against the directory filled by
    /// `socle generate --structures S --professionals P --seed G`: the same generator, re-run here, gives
    /// values that exist (professionals spread over the whole directory).
    Annuaire {
        #[arg(long, value_enum)]
        query: AnnuaireQuery,
        #[arg(long)]
        structures: u64,
        #[arg(long)]
        professionals: u64,
        #[arg(long, default_value_t = 1)]
        gen_seed: u64,
        #[arg(long, default_value_t = 5_000)]
        sample: u64,
        #[arg(long, default_value_t = 2_000)]
        count: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value_t = 300)]
        max_seconds: u64,
        #[arg(long, default_value_t = 100)]
        warmup: u64,
        #[arg(long, default_value_t = 19)]
        seed: u64,
    },
    /// The machine's own latency noise, with no server involved: one fixed CPU task (the same work every
    /// time, about 1 ms on this project's 2-core machine) timed `count` times on one thread. Its p99 ÷ p50 is
    /// what the host adds to any p99 measured at that time (other tenants, frequency changes); recorded by the
    /// benchmark scripts before and after their runs.
    Jitter {
        #[arg(long, default_value_t = 2_000)]
        count: u64,
        /// Rounds of the task's inner loop (the work per task).
        #[arg(long, default_value_t = 1_000_000)]
        work: u64,
        /// A name for when it was taken (`before`, `after`…), copied into the result line.
        #[arg(long, default_value = "")]
        phase: String,
    },
    /// Planner statistics of a SQLite data file no server has open (`socle.db`), refreshed both ways one after
    /// the other: one `ANALYZE` holding the writer (a small store's way), then the two steps of a large store
    /// (rows counted on a reader, a short write). Prints how long each held the writer and took in all.
    Analyze {
        #[arg(long)]
        db: String,
        /// `analyze`, `two-steps`, or both (the default), in that order.
        #[arg(long)]
        way: Option<String>,
    },
    /// Correctness probes: exit 1 if the server ignores the search parameters.
    Check {
        #[arg(long)]
        state: String,
    },
}

#[derive(clap::Args)]
struct AuthArgs {
    #[arg(long, value_enum)]
    op: AuthOp,
    /// Issuer, e.g. http://127.0.0.1:8080/auth/pro or https://…
    #[arg(long)]
    issuer: String,
    #[arg(long)]
    client_id: String,
    /// The client's secret, sent with HTTP Basic; without it, the client authenticates with its certificate.
    #[arg(long)]
    client_secret: Option<String>,
    /// Authority of the server's certificate (PEM), for an https issuer.
    #[arg(long)]
    ca: Option<String>,
    /// Client certificate and key (PEM) presented in the TLS handshake.
    #[arg(long, requires = "client_key")]
    client_cert: Option<String>,
    #[arg(long, requires = "client_cert")]
    client_key: Option<String>,
    #[arg(long, default_value = "system/*.rs")]
    scope: String,
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    #[arg(long, default_value_t = 200)]
    warmup: u64,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum AnnuaireQuery {
    /// Practitioner?identifier=https://rpps.esante.gouv.fr|{rpps}
    Rpps,
    /// Practitioner?family={family}&given={given}
    Name,
    /// Practitioner?name:contains={middle of the family name}&_count=20
    NameContains,
    /// PractitionerRole?mailbox-mss={mailbox}&_include=PractitionerRole:organization
    Mailbox,
    /// PractitionerRole?role={profession}&specialty={specialty}&_count=20 (physicians, dentists)
    RoleSpecialty,
    /// Organization?address-postalcode={postal}&_revinclude=PractitionerRole:organization&_count=20
    PostalRevinclude,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum DmpOp {
    /// Create the qualified patients `dmp-0…` (PUT Patient) from the registry's persons; not measured.
    Setup,
    /// ITI-65: one CDA N1 document (a PDF of `--pdf-bytes`) per Provide Document Bundle.
    Feed,
    /// ITI-67: `DocumentReference?patient=…&status=current` (first page of `--page-size`).
    Find,
    /// ITI-68: `GET Binary/{id}` of documents found first (not measured), their bytes as sent.
    Retrieve,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum InsiOp {
    /// POST Patient/$ins-verify with the matricule and the traits (expects `match`).
    Verify,
    /// POST Patient/$ins-retrieve with the traits and birth place (expects `found`).
    Retrieve,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Query {
    /// Observation?patient=Patient/{id}&code=http://loinc.org|{code}
    PatientCode,
    /// Patient?family={name}&birthdate={date}
    FamilyBirthdate,
    /// Observation?code=http://loinc.org|{code}&_count=100, following `next` links
    CodePaged,
    /// Observation?_summary=count
    SummaryCount,
    /// Patient/{id}/Observation?code=http://loinc.org|{code}: `patient-code` as a compartment search (every
    /// compartment parameter of Observation, not `patient` alone)
    CompartmentCode,
    /// Patient/{id}/$everything: the patient and their compartment (the first page, 20 resources)
    Everything,
}

// ---------------------------------------------------------------- synthetic data

const LOINC: &[(&str, &str, &str, f64, f64)] = &[
    // code, display, UCUM unit, min, max
    ("8867-4", "Heart rate", "/min", 45.0, 130.0),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 90.0, 180.0),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 50.0, 110.0),
    ("8310-5", "Body temperature", "Cel", 35.5, 40.0),
    ("29463-7", "Body weight", "kg", 3.0, 140.0),
    ("8302-2", "Body height", "cm", 50.0, 200.0),
    (
        "2339-0",
        "Glucose [Mass/volume] in Blood",
        "mg/dL",
        60.0,
        250.0,
    ),
    (
        "2093-3",
        "Cholesterol [Mass/volume] in Serum or Plasma",
        "mg/dL",
        120.0,
        300.0,
    ),
    (
        "4548-4",
        "Hemoglobin A1c/Hemoglobin.total in Blood",
        "%",
        4.0,
        12.0,
    ),
    (
        "59408-5",
        "Oxygen saturation in Arterial blood by Pulse oximetry",
        "%",
        85.0,
        100.0,
    ),
];

const SNOMED: &[(&str, &str)] = &[
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("195967001", "Asthma"),
    ("13645005", "Chronic obstructive lung disease"),
    ("49436004", "Atrial fibrillation"),
    ("35489007", "Depressive disorder"),
    ("55822004", "Hyperlipidemia"),
    ("399211009", "History of myocardial infarction"),
];

const FAMILIES: &[&str] = &[
    "Martin",
    "Bernard",
    "Thomas",
    "Petit",
    "Robert",
    "Richard",
    "Durand",
    "Dubois",
    "Moreau",
    "Laurent",
    "Simon",
    "Michel",
    "Lefèvre",
    "Leroy",
    "Roux",
    "David",
    "Bertrand",
    "Morel",
    "Fournier",
    "Girard",
    "Bonnet",
    "Dupont",
    "Lambert",
    "Fontaine",
    "Rousseau",
    "Vincent",
    "Muller",
    "Lefebvre",
    "Faure",
    "André",
    "Mercier",
    "Blanc",
    "Guérin",
    "Boyer",
    "Garnier",
    "Chevalier",
    "François",
    "Legrand",
    "Gauthier",
    "Garcia",
    "Perrin",
    "Robin",
    "Clément",
    "Morin",
    "Nicolas",
    "Henry",
    "Roussel",
    "Mathieu",
    "Gautier",
    "Masson",
    "Marchand",
    "Duval",
    "Denis",
    "Dumont",
    "Marie",
    "Lemaire",
    "Noël",
    "Meyer",
    "Dufour",
    "Meunier",
];
const GIVEN_F: &[&str] = &[
    "Marie",
    "Camille",
    "Léa",
    "Manon",
    "Chloé",
    "Inès",
    "Jeanne",
    "Louise",
    "Émilie",
    "Sophie",
    "Nathalie",
    "Isabelle",
    "Sylvie",
    "Catherine",
    "Hélène",
    "Claire",
    "Anne",
    "Juliette",
    "Zoé",
    "Margaux",
];
const GIVEN_M: &[&str] = &[
    "Jean",
    "Pierre",
    "Michel",
    "Philippe",
    "Alain",
    "Nicolas",
    "Thomas",
    "Lucas",
    "Hugo",
    "Louis",
    "Théo",
    "Julien",
    "François",
    "Éric",
    "Laurent",
    "Olivier",
    "Antoine",
    "Mathieu",
    "Gabriel",
    "Raphaël",
];

/// Resources per patient in the ingest mix: 1 Patient, 1 Encounter, 6 Observations, 2 Conditions.
const PER_PATIENT: u64 = 10;
const OBS_PER_PATIENT: u64 = 6;

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, s: &'a [T]) -> &'a T {
        &s[self.below(s.len() as u64) as usize]
    }
    fn float(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
    fn uuid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

/// Days since 1970-01-01 → (y, m, d) (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
fn date(days: i64) -> String {
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}
/// A dateTime with a French offset, somewhere in 2015..2025.
fn datetime(rng: &mut Rng) -> String {
    let days = 16_436 + rng.below(3_650) as i64; // 2015-01-01 + up to 10 years
    let mins = rng.below(24 * 60);
    format!("{}T{:02}:{:02}:00+01:00", date(days), mins / 60, mins % 60)
}

/// The LOINC codes of patient number `p` (global index): 6 distinct codes, derivable from `p` alone.
fn patient_codes(p: u64) -> impl Iterator<Item = &'static str> {
    (0..OBS_PER_PATIENT).map(move |k| LOINC[((p + k * 3) % LOINC.len() as u64) as usize].0)
}

struct PatientKey {
    index: u64,
    family: String,
    birth: String,
}

/// Transaction Bundle number `k`: `per_bundle` patients with their Encounter, Observations, Conditions.
fn make_bundle(seed: u64, k: u64, per_bundle: u64) -> (Value, Vec<PatientKey>) {
    let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(k));
    let mut entries = Vec::with_capacity((per_bundle * PER_PATIENT) as usize);
    let mut keys = Vec::with_capacity(per_bundle as usize);
    let entry = |full: &str, r: Value| {
        let rt = r["resourceType"].as_str().unwrap().to_string();
        json!({"fullUrl": format!("urn:uuid:{full}"), "resource": r, "request": {"method": "POST", "url": rt}})
    };
    for j in 0..per_bundle {
        let p = k * per_bundle + j;
        let pid = rng.uuid();
        let eid = rng.uuid();
        let female = rng.below(2) == 0;
        let family = rng.pick(FAMILIES).to_string();
        let given = if female {
            rng.pick(GIVEN_F)
        } else {
            rng.pick(GIVEN_M)
        };
        let birth = date(-14_610 + rng.below(32_000) as i64); // 1930-01-01 .. ~2017
        let nir = format!(
            "{}{:012}",
            if female { 2 } else { 1 },
            rng.below(1_000_000_000_000)
        );
        entries.push(entry(
            &pid,
            json!({
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:1.2.250.1.999.1.1", "value": nir}],
                "name": [{"use": "official", "family": family, "given": [given]}],
                "gender": if female { "female" } else { "male" },
                "birthDate": birth,
                "address": [{"city": rng.pick(&["Paris", "Lyon", "Marseille", "Toulouse", "Nantes", "Lille", "Rennes"]), "country": "FR"}]
            }),
        ));
        let start = datetime(&mut rng);
        entries.push(entry(
            &eid,
            json!({
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
                "subject": {"reference": format!("urn:uuid:{pid}")},
                "period": {"start": start, "end": start}
            }),
        ));
        for code in patient_codes(p) {
            let (c, display, unit, lo, hi) = *LOINC.iter().find(|l| l.0 == code).unwrap();
            let v = (rng.float(lo, hi) * 10.0).round() / 10.0;
            let cat = if c.starts_with('8') || c == "29463-7" || c == "59408-5" {
                "vital-signs"
            } else {
                "laboratory"
            };
            entries.push(entry(
                &rng.uuid(),
                json!({
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": cat}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": c, "display": display}]},
                    "subject": {"reference": format!("urn:uuid:{pid}")},
                    "encounter": {"reference": format!("urn:uuid:{eid}")},
                    "effectiveDateTime": datetime(&mut rng),
                    "valueQuantity": {"value": v, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
                }),
            ));
        }
        for _ in 0..2 {
            let (c, display) = *rng.pick(SNOMED);
            entries.push(entry(
                &rng.uuid(),
                json!({
                    "resourceType": "Condition",
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                    "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": c, "display": display}]},
                    "subject": {"reference": format!("urn:uuid:{pid}")},
                    "onsetDateTime": datetime(&mut rng)
                }),
            ));
        }
        keys.push(PatientKey {
            index: p,
            family,
            birth,
        });
    }
    (
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        keys,
    )
}

// ---------------------------------------------------------------- state file

#[derive(Clone)]
struct Patient {
    id: String,
    index: u64,
    family: String,
    birth: String,
}

struct State {
    patients: Vec<Patient>,
}

fn save_state(path: &str, patients: &[Patient], resources: u64) -> anyhow::Result<()> {
    let list: Vec<Value> = patients
        .iter()
        .map(|p| json!([p.id, p.index, p.family, p.birth]))
        .collect();
    let v = json!({"resources": resources, "patients": list});
    std::fs::write(path, serde_json::to_vec(&v)?).with_context(|| format!("écriture de {path}"))
}

fn load_state(path: &str) -> anyhow::Result<State> {
    let v: Value = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("lecture de {path}"))?,
    )?;
    let patients = v["patients"]
        .as_array()
        .ok_or_else(|| anyhow!("{path}: no patients"))?
        .iter()
        .map(|p| Patient {
            id: p[0].as_str().unwrap_or_default().to_string(),
            index: p[1].as_u64().unwrap_or_default(),
            family: p[2].as_str().unwrap_or_default().to_string(),
            birth: p[3].as_str().unwrap_or_default().to_string(),
        })
        .collect::<Vec<_>>();
    if patients.is_empty() {
        bail!("{path}: no patients (did the ingest fail?)");
    }
    Ok(State { patients })
}

// ---------------------------------------------------------------- HTTP helpers

/// Percent-encode a query value (RFC 3986 unreserved characters and '/' kept).
fn enc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// The id from a Location like `Patient/abc/_history/1` or `http://h/fhir/Patient/abc/_history/1`.
fn id_from_location(loc: &str, rtype: &str) -> Option<String> {
    let parts: Vec<&str> = loc.split('/').collect();
    let i = parts.iter().rposition(|p| *p == rtype)?;
    parts
        .get(i + 1)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string())
}

#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: &str, timeout: u64, pool: usize) -> anyhow::Result<Self> {
        // SOCLE_BENCH_TOKEN: a bearer access token sent with every request (a Socle with authentication on).
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(t) = std::env::var("SOCLE_BENCH_TOKEN")
            && !t.is_empty()
        {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))?,
            );
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .no_proxy()
            .timeout(Duration::from_secs(timeout))
            .pool_max_idle_per_host(pool.max(1))
            .tcp_nodelay(true)
            .build()?;
        Ok(Http {
            client,
            base: base.trim_end_matches('/').to_string(),
        })
    }
    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let body = self.get_raw(path, "application/fhir+json").await?;
        serde_json::from_slice(&body)
            .with_context(|| format!("GET {}: invalid JSON", self.url(path)))
    }
    async fn put(&self, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let url = self.url(path);
        let r = self
            .client
            .put(&url)
            .header("Content-Type", "application/fhir+json")
            .header("Prefer", "return=minimal")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        if !status.is_success() {
            let body = r.bytes().await?;
            bail!(
                "PUT {url} → {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok(())
    }
    /// The body as sent (a document), with `accept` as its Accept header.
    /// GET with this bearer token instead of SOCLE_BENCH_TOKEN.
    async fn get_as(&self, path: &str, token: &str) -> anyhow::Result<bytes::Bytes> {
        self.get_with(path, "application/fhir+json", Some(token))
            .await
    }
    async fn get_raw(&self, path: &str, accept: &str) -> anyhow::Result<bytes::Bytes> {
        self.get_with(path, accept, None).await
    }
    async fn get_with(
        &self,
        path: &str,
        accept: &str,
        token: Option<&str>,
    ) -> anyhow::Result<bytes::Bytes> {
        let url = self.url(path);
        let mut request = self.client.get(&url).header("Accept", accept);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        if !status.is_success() {
            bail!(
                "GET {url} → {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok(body)
    }
    async fn post(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let url = self.url(path);
        let r = self
            .client
            .post(&url)
            .header("Content-Type", "application/fhir+json")
            .header("Accept", "application/fhir+json")
            .header("Prefer", "return=minimal")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let body = r.bytes().await?;
        if !status.is_success() {
            bail!(
                "POST {url} → {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

/// Entries of a searchset that are matches of type `rtype` (not included/outcome).
fn matches(bundle: &Value, rtype: &str) -> u64 {
    bundle["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter(|e| {
                    e["resource"]["resourceType"] == rtype
                        && e["search"]["mode"]
                            .as_str()
                            .map(|m| m == "match")
                            .unwrap_or(true)
                })
                .count() as u64
        })
        .unwrap_or(0)
}
fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")?["url"]
        .as_str()
        .map(str::to_string)
}

// ---------------------------------------------------------------- runner

#[derive(Default)]
struct JobOut {
    /// Resources created (ingest).
    resources: u64,
    /// Matches returned (searches).
    hits: Option<u64>,
    /// `Bundle.total` (summary-count).
    total: Option<u64>,
    /// Per-page latencies, µs (code-paged).
    pages: Vec<u64>,
    /// Bytes transferred (document bodies: DMP feeds and retrievals).
    bytes: u64,
    /// Made with the alternate token (its latency counted apart).
    alt: bool,
}

type Job =
    Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = anyhow::Result<JobOut>> + Send>> + Send + Sync>;

#[derive(Default)]
struct Acc {
    lat: Vec<u64>,
    /// Latencies of the requests made with the alternate token.
    lat_alt: Vec<u64>,
    page_lat: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    resources: u64,
    hits: Vec<u64>,
    totals: Vec<u64>,
    bytes: u64,
}

struct Run {
    acc: Acc,
    elapsed: Duration,
    done: u64,
}

async fn run_jobs(concurrency: usize, count: u64, max: Duration, job: Job) -> Run {
    let next = Arc::new(AtomicU64::new(0));
    let acc = Arc::new(Mutex::new(Acc::default()));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, acc, job) = (next.clone(), acc.clone(), job.clone());
        handles.push(tokio::spawn(async move {
            let mut local = Acc::default();
            loop {
                if t0.elapsed() >= max {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t = Instant::now();
                let r = job(i).await;
                let us = t.elapsed().as_micros() as u64;
                match r {
                    Ok(o) => {
                        if o.alt {
                            local.lat_alt.push(us);
                        } else {
                            local.lat.push(us);
                        }
                        local.resources += o.resources;
                        local.bytes += o.bytes;
                        local.page_lat.extend(o.pages);
                        local.hits.extend(o.hits);
                        local.totals.extend(o.total);
                    }
                    Err(e) => {
                        local.errors += 1;
                        if local.first_error.is_none() {
                            local.first_error = Some(format!("{e:#}"));
                        }
                    }
                }
            }
            let mut a = acc.lock().unwrap();
            a.lat.extend(local.lat);
            a.lat_alt.extend(local.lat_alt);
            a.page_lat.extend(local.page_lat);
            a.errors += local.errors;
            if a.first_error.is_none() {
                a.first_error = local.first_error;
            }
            a.resources += local.resources;
            a.bytes += local.bytes;
            a.hits.extend(local.hits);
            a.totals.extend(local.totals);
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let elapsed = t0.elapsed();
    let acc = std::mem::take(&mut *acc.lock().unwrap());
    let done = (acc.lat.len() + acc.lat_alt.len()) as u64 + acc.errors;
    Run { acc, elapsed, done }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn round(x: f64, d: i32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let m = 10f64.powi(d);
    json!((x * m).round() / m)
}

fn latency_json(lat: &mut [u64]) -> Value {
    lat.sort_unstable();
    let mean = if lat.is_empty() {
        f64::NAN
    } else {
        lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0
    };
    json!({
        "p50_ms": round(pct(lat, 50.0), 2),
        "p90_ms": round(pct(lat, 90.0), 2),
        "p99_ms": round(pct(lat, 99.0), 2),
        "max_ms": round(lat.last().map(|x| *x as f64 / 1000.0).unwrap_or(f64::NAN), 2),
        "mean_ms": round(mean, 2),
    })
}

fn report(cli: &Cli, workload: &str, params: Value, run: Run) -> anyhow::Result<Value> {
    report_as(cli, &cli.label, workload, params, run)
}

fn report_as(
    cli: &Cli,
    label: &str,
    workload: &str,
    params: Value,
    mut run: Run,
) -> anyhow::Result<Value> {
    let secs = run.elapsed.as_secs_f64();
    let ok = run.acc.lat.len() as u64;
    let mut v = json!({
        "label": label,
        "base": cli.base,
        "workload": workload,
        "command": std::env::args().map(|a| if a.contains([' ', '|', '&', '?']) { format!("'{a}'") } else { a }).collect::<Vec<_>>().join(" "),
        "params": params,
        "requests": run.done,
        "ok": ok,
        "errors": run.acc.errors,
        "elapsed_s": round(secs, 2),
        "throughput_rps": round(ok as f64 / secs, 1),
    });
    let lat = latency_json(&mut run.acc.lat);
    v.as_object_mut()
        .unwrap()
        .extend(lat.as_object().unwrap().clone());
    if run.acc.resources > 0 {
        v["resources"] = json!(run.acc.resources);
        v["resources_per_s"] = round(run.acc.resources as f64 / secs, 1);
    }
    if run.acc.bytes > 0 {
        v["bytes"] = json!(run.acc.bytes);
        v["mb_per_s"] = round(run.acc.bytes as f64 / 1e6 / secs, 1);
    }
    if !run.acc.page_lat.is_empty() {
        v["pages"] = json!(run.acc.page_lat.len());
        v["page_latency"] = latency_json(&mut run.acc.page_lat);
    }
    if !run.acc.hits.is_empty() {
        let h = &run.acc.hits;
        v["hits_mean"] = round(h.iter().sum::<u64>() as f64 / h.len() as f64, 2);
        v["hits_min"] = json!(h.iter().min());
        v["hits_max"] = json!(h.iter().max());
        v["empty_results"] = json!(h.iter().filter(|x| **x == 0).count());
    }
    if !run.acc.totals.is_empty() {
        v["total_min"] = json!(run.acc.totals.iter().min());
        v["total_max"] = json!(run.acc.totals.iter().max());
    }
    if let Some(e) = &run.acc.first_error {
        v["first_error"] = json!(e);
    }
    emit(cli, &v)?;
    Ok(v)
}

/// Prints a result line and appends it to `--out`.
fn emit(cli: &Cli, v: &Value) -> anyhow::Result<()> {
    let line = serde_json::to_string(v)?;
    println!("{line}");
    if let Some(out) = &cli.out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

// ---------------------------------------------------------------- workloads

/// See `Cmd::Analyze`.
fn analyze(cli: &Cli, db: &str, only: Option<&str>) -> anyhow::Result<()> {
    let path = std::path::Path::new(db);
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("{db} illisible"))?
        .len();
    for (way, two_steps) in [("analyze", false), ("two-steps", true)] {
        if only.is_some_and(|o| o != way) {
            continue;
        }
        let t = socle_store::sqlite::refresh_statistics(path, two_steps)
            .map_err(|e| anyhow!("{way} : {e}"))?;
        let v = json!({
            "label": cli.label,
            "workload": "statistics",
            "way": way,
            "db_bytes": bytes,
            "writer_held_ms": (t.writer_held.as_secs_f64() * 1e4).round() / 10.0,
            "total_ms": (t.total.as_secs_f64() * 1e4).round() / 10.0,
        });
        emit(cli, &v)?;
    }
    Ok(())
}

/// See `Cmd::Jitter`. The task is a dependent chain of integer operations (no memory traffic, no allocation,
/// no system call), so its time varies only with the CPU it gets.
fn jitter(cli: &Cli, count: u64, work: u64, phase: &str) -> anyhow::Result<()> {
    let task = |seed: u64| {
        let mut x = seed | 1;
        for i in 0..work {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i) ^ (x >> 29);
        }
        std::hint::black_box(x)
    };
    for i in 0..count.min(50) {
        task(i);
    }
    let t0 = Instant::now();
    let mut acc = Acc::default();
    for i in 0..count {
        let t = Instant::now();
        task(i);
        acc.lat.push(t.elapsed().as_micros() as u64);
    }
    let run = Run {
        acc,
        elapsed: t0.elapsed(),
        done: count,
    };
    let v = report(
        cli,
        "machine-jitter",
        json!({"count": count, "work": work, "phase": phase}),
        run,
    )?;
    let (p50, p99) = (v["p50_ms"].as_f64(), v["p99_ms"].as_f64());
    if let (Some(a), Some(b)) = (p50, p99) {
        eprintln!("tâche fixe : p50 {a} ms, p99 {b} ms, p99/p50 {:.2}", b / a);
    }
    Ok(())
}

async fn ingest(
    cli: &Cli,
    resources: u64,
    bundle_size: u64,
    concurrency: usize,
    state: &str,
    seed: u64,
    max_seconds: u64,
) -> anyhow::Result<()> {
    if bundle_size == 0 || !bundle_size.is_multiple_of(PER_PATIENT) {
        bail!("--bundle-size must be a positive multiple of {PER_PATIENT}");
    }
    let per_bundle = bundle_size / PER_PATIENT;
    let bundles = resources.div_ceil(bundle_size);
    let http = Http::new(&cli.base, cli.timeout, concurrency)?;
    let created: Arc<Mutex<Vec<Patient>>> = Arc::new(Mutex::new(Vec::new()));
    let c2 = created.clone();
    let job: Job = Arc::new(move |k| {
        let http = http.clone();
        let created = c2.clone();
        Box::pin(async move {
            let (bundle, keys) = make_bundle(seed, k, per_bundle);
            let n = bundle["entry"].as_array().map(|a| a.len()).unwrap_or(0);
            let resp = http.post("", serde_json::to_vec(&bundle)?).await?;
            let entries = resp["entry"]
                .as_array()
                .ok_or_else(|| anyhow!("transaction-response without entries"))?;
            if entries.len() != n {
                bail!(
                    "transaction-response has {} entries for {n} sent",
                    entries.len()
                );
            }
            for e in entries {
                let st = e["response"]["status"].as_str().unwrap_or("");
                if !st.starts_with("201") && !st.starts_with("200") {
                    bail!("entry status {st:?}");
                }
            }
            let mut got = Vec::with_capacity(keys.len());
            for (j, key) in keys.into_iter().enumerate() {
                let e = &entries[j * PER_PATIENT as usize];
                let loc = e["response"]["location"].as_str().unwrap_or("");
                let id = id_from_location(loc, "Patient")
                    .or_else(|| e["resource"]["id"].as_str().map(str::to_string))
                    .ok_or_else(|| anyhow!("no Patient id in response entry (location {loc:?})"))?;
                got.push(Patient {
                    id,
                    index: key.index,
                    family: key.family,
                    birth: key.birth,
                });
            }
            created.lock().unwrap().extend(got);
            Ok(JobOut {
                resources: n as u64,
                ..Default::default()
            })
        })
    });
    let run = run_jobs(concurrency, bundles, Duration::from_secs(max_seconds), job).await;
    let mut pats = std::mem::take(&mut *created.lock().unwrap());
    pats.sort_by_key(|p| p.index);
    save_state(state, &pats, run.acc.resources)?;
    report(
        cli,
        "ingest",
        json!({"resources": resources, "bundle_size": bundle_size, "concurrency": concurrency, "seed": seed}),
        run,
    )?;
    Ok(())
}

async fn create(
    cli: &Cli,
    count: u64,
    concurrency: usize,
    state: &str,
    max_seconds: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let st = Arc::new(load_state(state)?);
    let http = Http::new(&cli.base, cli.timeout, concurrency)?;
    let job: Job = Arc::new(move |i| {
        let (http, st) = (http.clone(), st.clone());
        Box::pin(async move {
            let mut rng = Rng::new(seed.wrapping_mul(7_919).wrapping_add(i));
            let p = rng.pick(&st.patients);
            let (c, display, unit, lo, hi) = *rng.pick(LOINC);
            let obs = json!({
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": c, "display": display}]},
                "subject": {"reference": format!("Patient/{}", p.id)},
                "effectiveDateTime": datetime(&mut rng),
                "valueQuantity": {"value": (rng.float(lo, hi) * 10.0).round() / 10.0, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
            });
            http.post("Observation", serde_json::to_vec(&obs)?).await?;
            Ok(JobOut {
                resources: 1,
                ..Default::default()
            })
        })
    });
    let run = run_jobs(concurrency, count, Duration::from_secs(max_seconds), job).await;
    report(
        cli,
        "create",
        json!({"count": count, "concurrency": concurrency}),
        run,
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn read(
    cli: &Cli,
    count: u64,
    concurrency: usize,
    state: &str,
    max_seconds: u64,
    warmup: u64,
    seed: u64,
    alternate_label: Option<&str>,
) -> anyhow::Result<()> {
    let st = Arc::new(load_state(state)?);
    let http = Http::new(&cli.base, cli.timeout, concurrency)?;
    // With an alternate token, requests 2k and 2k+1 read the same patient, the first with SOCLE_BENCH_TOKEN, the
    // second with SOCLE_BENCH_TOKEN_B: two principals compared under the same conditions, request by request.
    let alternate = match alternate_label {
        Some(_) => Some(
            std::env::var("SOCLE_BENCH_TOKEN_B")
                .context("--alternate-label demande SOCLE_BENCH_TOKEN_B")?,
        ),
        None => None,
    };
    let alternate = Arc::new(alternate);
    let job: Job = Arc::new(move |i| {
        let (http, st, alternate) = (http.clone(), st.clone(), alternate.clone());
        Box::pin(async move {
            let (draw, alt) = match alternate.as_deref() {
                Some(_) => (i / 2, i % 2 == 1),
                None => (i, false),
            };
            let mut rng = Rng::new(seed.wrapping_mul(104_729).wrapping_add(draw));
            let p = rng.pick(&st.patients);
            let path = format!("Patient/{}", p.id);
            let r: Value = match alternate.as_deref() {
                Some(token) if alt => serde_json::from_slice(&http.get_as(&path, token).await?)?,
                _ => http.get(&path).await?,
            };
            if r["id"].as_str() != Some(p.id.as_str()) {
                bail!("read Patient/{} returned id {:?}", p.id, r["id"]);
            }
            Ok(JobOut {
                alt,
                ..JobOut::default()
            })
        })
    });
    if warmup > 0 {
        run_jobs(concurrency, warmup, Duration::from_secs(60), job.clone()).await;
    }
    let mut run = run_jobs(concurrency, count, Duration::from_secs(max_seconds), job).await;
    let params = json!({"count": count, "concurrency": concurrency, "warmup": warmup,
                        "alternating": alternate_label.is_some()});
    if let Some(label) = alternate_label {
        let alt = Run {
            acc: Acc {
                lat: std::mem::take(&mut run.acc.lat_alt),
                ..Acc::default()
            },
            elapsed: run.elapsed,
            done: 0,
        };
        let done = alt.acc.lat.len() as u64;
        report_as(cli, label, "read", params.clone(), Run { done, ..alt })?;
        run.done -= done;
    }
    report(cli, "read", params, run)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn insi(
    cli: &Cli,
    op: InsiOp,
    persons: u64,
    gen_seed: u64,
    sample: u64,
    count: u64,
    concurrency: usize,
    max_seconds: u64,
    warmup: u64,
    seed: u64,
) -> anyhow::Result<()> {
    // Re-run the generator and keep evenly spread identities.
    let step = (persons / sample.max(1)).max(1);
    let mut g = socle_ins::generate::PersonGenerator::new(gen_seed);
    let mut bodies: Vec<(Vec<u8>, String)> = Vec::with_capacity(sample as usize);
    for i in 0..persons {
        let p = g.next_person();
        if i % step != 0 {
            continue;
        }
        let mut params = vec![
            json!({"name": "family", "valueString": p.family}),
            json!({"name": "given", "valueString": p.given[0]}),
            json!({"name": "birthdate", "valueDate": p.birth_date}),
            json!({"name": "gender", "valueCode": p.gender}),
            json!({"name": "birthplace", "valueString": p.birth_place}),
        ];
        if op == InsiOp::Verify {
            params.push(json!({"name": "ins", "valueString": p.matricule}));
        }
        let body = serde_json::to_vec(&json!({"resourceType": "Parameters", "parameter": params}))?;
        bodies.push((body, p.matricule));
    }
    let bodies = Arc::new(bodies);
    let http = Http::new(&cli.base, cli.timeout, concurrency)?;
    let path = match op {
        InsiOp::Verify => "Patient/$ins-verify",
        InsiOp::Retrieve => "Patient/$ins-retrieve",
    };
    let expect = match op {
        InsiOp::Verify => "match",
        InsiOp::Retrieve => "found",
    };
    let job: Job = Arc::new(move |i| {
        let (http, bodies) = (http.clone(), bodies.clone());
        Box::pin(async move {
            let mut rng = Rng::new(seed.wrapping_mul(104_729).wrapping_add(i));
            let (body, matricule) = rng.pick(&bodies);
            let r = http.post(path, body.clone()).await?;
            let result = r["parameter"][0]["valueCode"].as_str().unwrap_or_default();
            // Perfect homonyms born in the same place would legitimately give `multiple`: counted as errors
            // here, and reported (none in practice).
            if result != expect {
                bail!("{path} for {matricule}: {result}");
            }
            Ok(JobOut::default())
        })
    });
    if warmup > 0 {
        run_jobs(concurrency, warmup, Duration::from_secs(60), job.clone()).await;
    }
    let run = run_jobs(concurrency, count, Duration::from_secs(max_seconds), job).await;
    let name = match op {
        InsiOp::Verify => "insi-verify",
        InsiOp::Retrieve => "insi-retrieve",
    };
    report(
        cli,
        name,
        json!({"count": count, "concurrency": concurrency, "persons": persons, "sample": bodies_len(sample, persons)}),
        run,
    )?;
    Ok(())
}

struct DmpOpts {
    patients: u64,
    gen_seed: u64,
    pdf_bytes: usize,
    run: String,
    feed_patients: u64,
    page_size: usize,
    count: u64,
    concurrency: usize,
    max_seconds: u64,
    warmup: u64,
    seed: u64,
    stream: bool,
}

/// The CDA view of a generated person.
fn dmp_person(p: &socle_ins::generate::Person) -> socle_dmp::sample::Person {
    socle_dmp::sample::Person {
        ins_oid: p.system.trim_start_matches("urn:oid:").to_string(),
        ins: p.matricule.clone(),
        family: p.family.clone(),
        given: p.given[0].clone(),
        gender: if p.gender == "male" { "M" } else { "F" }.to_string(),
        birth: p.birth_date.replace('-', ""),
    }
}

/// `o.warmup` unmeasured jobs, then `o.count` measured ones.
async fn warm_then_run(o: &DmpOpts, job: Job) -> Run {
    if o.warmup > 0 {
        run_jobs(
            o.concurrency,
            o.warmup,
            Duration::from_secs(60),
            job.clone(),
        )
        .await;
    }
    run_jobs(
        o.concurrency,
        o.count,
        Duration::from_secs(o.max_seconds),
        job,
    )
    .await
}

async fn dmp(cli: &Cli, op: DmpOp, o: &DmpOpts) -> anyhow::Result<()> {
    let http = Http::new(&cli.base, cli.timeout, o.concurrency)?;
    let mut g = socle_ins::generate::PersonGenerator::new(o.gen_seed);
    let persons: Vec<socle_ins::generate::Person> =
        (0..o.patients).map(|_| g.next_person()).collect();
    let params = json!({"count": o.count, "concurrency": o.concurrency, "patients": o.patients,
                        "pdf_bytes": o.pdf_bytes, "page_size": o.page_size, "feed_patients": o.feed_patients});
    match op {
        DmpOp::Setup => {
            let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
                persons
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let mut v = p.to_fhir();
                        v["id"] = json!(format!("dmp-{i}"));
                        if let Some(a) = v["extension"].as_array_mut() { a.push(json!({
                            "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability",
                            "extension": [
                                {"url": "identityStatus", "valueCoding": {"code": "QUAL"}},
                                {"url": "insiDate", "valueDate": "2026-11-20"},
                                {"url": "validationMode", "valueCoding": {"code": "CN"}}
                            ]})); }
                        serde_json::to_vec(&v).unwrap_or_default()
                    })
                    .collect(),
            );
            let job: Job = Arc::new(move |i| {
                let (http, bodies) = (http.clone(), bodies.clone());
                Box::pin(async move {
                    http.put(&format!("Patient/dmp-{i}"), bodies[i as usize].clone())
                        .await?;
                    Ok(JobOut::default())
                })
            });
            let run = run_jobs(o.concurrency, o.patients, Duration::from_secs(3600), job).await;
            report(cli, "dmp-setup", params, run)?;
        }
        DmpOp::Feed => {
            // Built before measuring unless streamed: the documents (their unique ids differ, so do their bytes
            // and hashes).
            let total = o.count + o.warmup;
            let persons = Arc::new(persons);
            let (run_id, pdf_bytes, feed_patients) =
                (o.run.clone(), o.pdf_bytes, o.feed_patients.max(1));
            let build = Arc::new(move |i: u64| -> anyhow::Result<Vec<u8>> {
                let k = (i % feed_patients) as usize;
                let d = socle_dmp::sample::SampleDoc::report(&format!("{run_id}.{i}"), pdf_bytes);
                let cda = socle_dmp::sample::cda_n1(&dmp_person(&persons[k]), &d);
                let b = socle_dmp::sample::provide_bundle(
                    &format!("dmp-{k}"),
                    &format!("{run_id}.{i}"),
                    &[(d, cda)],
                );
                Ok(serde_json::to_vec(&b)?)
            });
            let mut bodies = Vec::new();
            if !o.stream {
                bodies.reserve(total as usize);
                for i in 0..total {
                    bodies.push(build(i)?);
                }
                let sizes: u64 = bodies.iter().map(|b| b.len() as u64).sum();
                eprintln!(
                    "{} soumissions prêtes ({:.1} Mo)",
                    bodies.len(),
                    sizes as f64 / 1e6
                );
            }
            let bodies = Arc::new(bodies);
            let body_of = {
                let (bodies, build) = (bodies.clone(), build.clone());
                Arc::new(move |i: u64| -> anyhow::Result<Vec<u8>> {
                    match bodies.get(i as usize) {
                        Some(b) => Ok(b.clone()),
                        None => build(i),
                    }
                })
            };
            let for_warmup = body_of.clone();
            let warm = o.warmup;
            let job: Job = Arc::new(move |i| {
                let (http, body_of) = (http.clone(), body_of.clone());
                Box::pin(async move {
                    let body = body_of(i + warm)?;
                    let n = body.len() as u64;
                    let r = http.post("", body).await?;
                    if r["type"] != "transaction-response" {
                        bail!("réponse inattendue : {r}");
                    }
                    Ok(JobOut {
                        bytes: n,
                        ..JobOut::default()
                    })
                })
            });
            if o.warmup > 0 {
                let b = for_warmup;
                let http2 = Http::new(&cli.base, cli.timeout, o.concurrency)?;
                let w: Job = Arc::new(move |i| {
                    let (http, b) = (http2.clone(), b.clone());
                    Box::pin(async move {
                        http.post("", b(i)?).await?;
                        Ok(JobOut::default())
                    })
                });
                run_jobs(o.concurrency, o.warmup, Duration::from_secs(120), w).await;
            }
            let run = run_jobs(
                o.concurrency,
                o.count,
                Duration::from_secs(o.max_seconds),
                job,
            )
            .await;
            report(cli, "dmp-feed", params, run)?;
        }
        DmpOp::Find => {
            let (n, page, seed) = (o.patients, o.page_size, o.seed);
            let job: Job = Arc::new(move |i| {
                let http = http.clone();
                Box::pin(async move {
                    let mut rng = Rng::new(seed.wrapping_mul(7_919).wrapping_add(i));
                    let k = rng.below(n);
                    let b = http
                        .get(&format!(
                            "DocumentReference?patient=dmp-{k}&status=current&_count={page}"
                        ))
                        .await?;
                    Ok(JobOut {
                        hits: Some(matches(&b, "DocumentReference")),
                        ..JobOut::default()
                    })
                })
            });
            let run = warm_then_run(o, job).await;
            report(cli, "dmp-find", params, run)?;
        }
        DmpOp::Retrieve => {
            let mut urls = Vec::new();
            for k in 0..o.feed_patients.min(200) {
                let b = http
                    .get(&format!(
                        "DocumentReference?patient=dmp-{k}&status=current&_count=5"
                    ))
                    .await?;
                for e in b["entry"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    if let Some(u) = e["resource"]["content"][0]["attachment"]["url"].as_str() {
                        urls.push(u.to_string());
                    }
                }
            }
            if urls.is_empty() {
                bail!("aucun document à relire : lancer --op feed d'abord");
            }
            let urls = Arc::new(urls);
            let seed = o.seed;
            let job: Job = Arc::new(move |i| {
                let (http, urls) = (http.clone(), urls.clone());
                Box::pin(async move {
                    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(i));
                    let u = rng.pick(&urls);
                    let body = http.get_raw(u, "text/xml").await?;
                    if !body.starts_with(b"<?xml") {
                        bail!("{u} : pas un document CDA");
                    }
                    Ok(JobOut {
                        bytes: body.len() as u64,
                        ..JobOut::default()
                    })
                })
            });
            let run = warm_then_run(o, job).await;
            report(cli, "dmp-retrieve", params, run)?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn annuaire(
    cli: &Cli,
    query: AnnuaireQuery,
    structures: u64,
    professionals: u64,
    gen_seed: u64,
    sample: u64,
    count: u64,
    concurrency: usize,
    max_seconds: u64,
    warmup: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let mut g = socle_directory::generate::DirectoryGenerator::new(gen_seed);
    let mut postals = Vec::new();
    for i in 0..structures {
        let o = g.structure();
        if i % (structures / 200).max(1) == 0 {
            postals.push(
                o["address"][0]["postalCode"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    let step = (professionals / sample.max(1)).max(1);
    let mut paths = Vec::new();
    for i in 0..professionals {
        let rs = g.professional();
        if i % step != 0 {
            continue;
        }
        let p = &rs[0];
        let family = p["name"][0]["family"].as_str().unwrap_or_default();
        let role = &rs[1];
        let path = match query {
            AnnuaireQuery::Rpps => format!(
                "Practitioner?identifier={}",
                enc(&format!(
                    "https://rpps.esante.gouv.fr|{}",
                    p["identifier"][0]["value"].as_str().unwrap_or_default()
                ))
            ),
            AnnuaireQuery::Name => format!(
                "Practitioner?family={}&given={}",
                enc(family),
                enc(p["name"][0]["given"][0].as_str().unwrap_or_default())
            ),
            AnnuaireQuery::NameContains => {
                if family.chars().count() < 5 {
                    continue;
                }
                let mid: String = family.chars().skip(1).take(4).collect();
                format!("Practitioner?name:contains={}&_count=20", enc(&mid))
            }
            AnnuaireQuery::Mailbox => format!(
                "PractitionerRole?mailbox-mss={}&_include=PractitionerRole:organization",
                enc(p["telecom"][0]["value"].as_str().unwrap_or_default())
            ),
            AnnuaireQuery::RoleSpecialty => {
                let Some(sp) = role["specialty"][0]["coding"][0]["code"].as_str() else {
                    continue;
                };
                let prof = role["code"][0]["coding"][0]["code"]
                    .as_str()
                    .unwrap_or_default();
                format!("PractitionerRole?role={prof}&specialty={sp}&_count=20")
            }
            AnnuaireQuery::PostalRevinclude => {
                let pc = &postals[paths.len() % postals.len().max(1)];
                format!(
                    "Organization?address-postalcode={pc}&_revinclude=PractitionerRole:organization&_count=20"
                )
            }
        };
        paths.push(path);
    }
    // The sampled requests, one per line, for timing them one by one elsewhere.
    if let Some(out) = std::env::var_os("SOCLE_BENCH_PATHS_OUT") {
        std::fs::write(&out, paths.join("\n") + "\n")?;
    }
    let paths = Arc::new(paths);
    let http = Http::new(&cli.base, cli.timeout, concurrency)?;
    let job: Job = Arc::new(move |i| {
        let (http, paths) = (http.clone(), paths.clone());
        Box::pin(async move {
            let mut rng = Rng::new(seed.wrapping_mul(104_729).wrapping_add(i));
            let path = rng.pick(&paths);
            let r = http.get(path).await?;
            let hits = r["entry"].as_array().map_or(0, |a| {
                a.iter().filter(|e| e["search"]["mode"] == "match").count()
            }) as u64;
            if hits == 0 {
                bail!("{path}: no match");
            }
            Ok(JobOut {
                hits: Some(hits),
                ..JobOut::default()
            })
        })
    });
    if warmup > 0 {
        run_jobs(concurrency, warmup, Duration::from_secs(60), job.clone()).await;
    }
    let run = run_jobs(concurrency, count, Duration::from_secs(max_seconds), job).await;
    let name = format!("annuaire-{}", format!("{query:?}").to_lowercase());
    report(
        cli,
        &name,
        json!({"count": count, "concurrency": concurrency, "structures": structures, "professionals": professionals}),
        run,
    )?;
    Ok(())
}

fn bodies_len(sample: u64, persons: u64) -> u64 {
    sample.min(persons)
}

fn loinc_token(code: &str) -> String {
    enc(&format!("http://loinc.org|{code}"))
}

/// One of the codes of `p`'s Observations, at random.
fn one_patient_code(p: &Patient, rng: &mut Rng) -> &'static str {
    let codes: Vec<&'static str> = patient_codes(p.index).collect();
    codes[rng.below(codes.len() as u64) as usize]
}

fn search_path(q: Query, p: &Patient, rng: &mut Rng, page_size: usize) -> String {
    match q {
        Query::PatientCode => format!(
            "Observation?patient=Patient/{}&code={}",
            enc(&p.id),
            loinc_token(one_patient_code(p, rng))
        ),
        Query::FamilyBirthdate => format!(
            "Patient?family={}&birthdate={}",
            enc(&p.family),
            enc(&p.birth)
        ),
        Query::CodePaged => format!(
            "Observation?code={}&_count={page_size}",
            loinc_token(rng.pick(LOINC).0)
        ),
        Query::SummaryCount => "Observation?_summary=count".to_string(),
        Query::Everything => format!("Patient/{}/$everything", enc(&p.id)),
        Query::CompartmentCode => format!(
            "Patient/{}/Observation?code={}",
            enc(&p.id),
            loinc_token(one_patient_code(p, rng))
        ),
    }
}

#[allow(clippy::too_many_arguments)]
async fn search(
    cli: &Cli,
    q: Query,
    count: u64,
    concurrency: usize,
    state: &str,
    max_seconds: u64,
    warmup: u64,
    pages: usize,
    page_size: usize,
    seed: u64,
) -> anyhow::Result<()> {
    let st = Arc::new(load_state(state)?);
    let http = Http::new(&cli.base, cli.timeout, concurrency)?;
    let job: Job = Arc::new(move |i| {
        let (http, st) = (http.clone(), st.clone());
        Box::pin(async move {
            let mut rng = Rng::new(seed.wrapping_mul(15_485_863).wrapping_add(i));
            let p = rng.pick(&st.patients).clone();
            let path = search_path(q, &p, &mut rng, page_size);
            let rtype = if q == Query::FamilyBirthdate {
                "Patient"
            } else {
                "Observation"
            };
            match q {
                Query::CodePaged => {
                    let mut lat = Vec::with_capacity(pages);
                    let mut url = path;
                    let mut hits = 0;
                    for n in 0..pages {
                        let t = Instant::now();
                        let b = http.get(&url).await?;
                        lat.push(t.elapsed().as_micros() as u64);
                        hits += matches(&b, rtype);
                        // Fewer pages than asked when the data runs out (small sizes): not an error.
                        match next_link(&b) {
                            Some(u) if n + 1 < pages => url = u,
                            _ => break,
                        }
                    }
                    Ok(JobOut {
                        hits: Some(hits),
                        pages: lat,
                        ..Default::default()
                    })
                }
                Query::SummaryCount => {
                    let b = http.get(&path).await?;
                    let total = b["total"]
                        .as_u64()
                        .ok_or_else(|| anyhow!("_summary=count without total"))?;
                    Ok(JobOut {
                        total: Some(total),
                        ..Default::default()
                    })
                }
                _ => {
                    let b = http.get(&path).await?;
                    let h = matches(&b, rtype);
                    if q == Query::FamilyBirthdate
                        && !b["entry"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|e| e["resource"]["id"] == p.id.as_str())
                        && h < 20
                    {
                        bail!("{path}: Patient/{} not among {h} results", p.id);
                    }
                    Ok(JobOut {
                        hits: Some(h),
                        ..Default::default()
                    })
                }
            }
        })
    });
    if warmup > 0 {
        run_jobs(concurrency, warmup, Duration::from_secs(120), job.clone()).await;
    }
    let run = run_jobs(concurrency, count, Duration::from_secs(max_seconds), job).await;
    let name = format!("search-{}", q.to_possible_value().unwrap().get_name());
    report(
        cli,
        &name,
        json!({"count": count, "concurrency": concurrency, "warmup": warmup, "pages": pages, "page_size": page_size}),
        run,
    )?;
    Ok(())
}

/// Probes whether the server really filters on the parameters used by the workloads.
async fn check(cli: &Cli, state: &str) -> anyhow::Result<bool> {
    let st = load_state(state)?;
    let http = Http::new(&cli.base, cli.timeout, 1)?;
    let p = &st.patients[st.patients.len() / 2];
    let mut ok = true;
    let mut probe = |name: &str, good: bool, detail: String| {
        println!("{} {name}: {detail}", if good { "OK  " } else { "FAIL" });
        ok &= good;
    };
    let b = http.get(&format!("Patient/{}", p.id)).await?;
    probe(
        "read",
        b["id"] == p.id.as_str(),
        format!("Patient/{}", p.id),
    );

    let path = format!(
        "Patient?family={}&birthdate={}",
        enc(&p.family),
        enc(&p.birth)
    );
    let b = http.get(&path).await?;
    let ids: Vec<&str> = b["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["resource"]["id"].as_str())
        .collect();
    probe(
        "family+birthdate",
        ids.contains(&p.id.as_str()) && ids.len() < 20,
        format!("{path} → {} results", ids.len()),
    );

    let path = format!("Patient?family={}&birthdate=1800-01-01", enc(&p.family));
    let b = http.get(&path).await?;
    probe(
        "family+birthdate (none)",
        matches(&b, "Patient") == 0,
        format!("{path} → {} results", matches(&b, "Patient")),
    );

    let code = patient_codes(p.index).next().unwrap();
    let path = format!(
        "Observation?patient=Patient/{}&code={}",
        enc(&p.id),
        loinc_token(code)
    );
    let b = http.get(&path).await?;
    probe(
        "patient+code",
        matches(&b, "Observation") == 1,
        format!("{path} → {} results", matches(&b, "Observation")),
    );

    let other = LOINC
        .iter()
        .map(|l| l.0)
        .find(|c| !patient_codes(p.index).any(|x| x == *c))
        .unwrap();
    let path = format!(
        "Observation?patient=Patient/{}&code={}",
        enc(&p.id),
        loinc_token(other)
    );
    let b = http.get(&path).await?;
    probe(
        "patient+code (none)",
        matches(&b, "Observation") == 0,
        format!("{path} → {} results", matches(&b, "Observation")),
    );

    let path = format!("Observation?code={}&_count=100", loinc_token(code));
    let b = http.get(&path).await?;
    let n = matches(&b, "Observation");
    let same = b["entry"].as_array().into_iter().flatten().all(|e| {
        e["resource"]["code"]["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["code"] == code)
    });
    probe(
        "code paged",
        n > 0 && same && (next_link(&b).is_some() || n < 100),
        format!(
            "{path} → {n} results, next link: {}",
            next_link(&b).is_some()
        ),
    );

    let path = "Observation?_summary=count";
    let b = http.get(path).await?;
    let expected = st.patients.len() as u64 * OBS_PER_PATIENT;
    probe(
        "_summary=count",
        b["total"].as_u64().map(|t| t >= expected).unwrap_or(false),
        format!("{path} → total {} (≥ {expected} expected)", b["total"]),
    );
    Ok(ok)
}

#[derive(Clone, Copy, ValueEnum)]
enum AuthOp {
    Token,
    Introspect,
}

#[allow(clippy::too_many_arguments)]
async fn auth(cli: &Cli, args: &AuthArgs) -> anyhow::Result<()> {
    let AuthArgs {
        op,
        issuer,
        client_id: id,
        client_secret: secret,
        scope,
        count,
        concurrency,
        max_seconds,
        warmup,
        ..
    } = args;
    let (op, count, concurrency, max_seconds, warmup) =
        (*op, *count, *concurrency, *max_seconds, *warmup);
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(cli.timeout))
        .pool_max_idle_per_host(concurrency.max(1))
        .tcp_nodelay(true);
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("lecture de {ca}"))?;
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        let mut pem = std::fs::read(cert).with_context(|| format!("lecture de {cert}"))?;
        pem.extend(std::fs::read(key).with_context(|| format!("lecture de {key}"))?);
        builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
    }
    let client = builder.build()?;
    let issuer = issuer.trim_end_matches('/').to_string();
    let post = {
        let (client, id, secret) = (client.clone(), id.to_string(), secret.clone());
        move |url: String, body: String| {
            let (client, id, secret) = (client.clone(), id.clone(), secret.clone());
            async move {
                let request = client
                    .post(&url)
                    .header("Content-Type", "application/x-www-form-urlencoded");
                let r = match &secret {
                    Some(secret) => request.basic_auth(&id, Some(secret)).body(body),
                    None => request.body(format!("{body}&client_id={id}")),
                }
                .send()
                .await?;
                let status = r.status();
                let v: Value = serde_json::from_slice(&r.bytes().await?)?;
                if !status.is_success() {
                    bail!("POST {url} → {status}: {v}");
                }
                anyhow::Ok(v)
            }
        }
    };
    let form_scope: String = scope
        .replace('*', "%2A")
        .replace(' ', "+")
        .replace('/', "%2F");
    let token_body = format!("grant_type=client_credentials&scope={form_scope}");
    let job: Job = match op {
        AuthOp::Token => {
            let (post, url, body) = (post.clone(), format!("{issuer}/token"), token_body.clone());
            Arc::new(move |_| {
                let (post, url, body) = (post.clone(), url.clone(), body.clone());
                Box::pin(async move {
                    let v = post(url, body).await?;
                    if v["access_token"].as_str().is_none_or(|t| t.len() < 100) {
                        bail!("pas de jeton : {v}");
                    }
                    Ok(JobOut::default())
                })
            })
        }
        AuthOp::Introspect => {
            let v = post(format!("{issuer}/token"), token_body.clone()).await?;
            let token = v["access_token"].as_str().unwrap_or_default().to_string();
            let (post, url) = (post.clone(), format!("{issuer}/introspect"));
            Arc::new(move |_| {
                let (post, url, body) = (post.clone(), url.clone(), format!("token={token}"));
                Box::pin(async move {
                    let v = post(url, body).await?;
                    if v["active"] != true {
                        bail!("jeton inactif : {v}");
                    }
                    Ok(JobOut::default())
                })
            })
        }
    };
    if warmup > 0 {
        run_jobs(concurrency, warmup, Duration::from_secs(60), job.clone()).await;
    }
    let run = run_jobs(concurrency, count, Duration::from_secs(max_seconds), job).await;
    let name = match op {
        AuthOp::Token => "auth-token",
        AuthOp::Introspect => "auth-introspect",
    };
    report(
        cli,
        name,
        json!({"count": count, "concurrency": concurrency, "warmup": warmup, "scope": scope,
               "client_auth": if args.client_cert.is_some() { "tls_client_auth" } else { "client_secret_basic" },
               "tls": issuer.starts_with("https://")}),
        run,
    )?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Ingest {
            resources,
            bundle_size,
            concurrency,
            state,
            seed,
            max_seconds,
        } => {
            ingest(
                &cli,
                *resources,
                *bundle_size,
                *concurrency,
                state,
                *seed,
                *max_seconds,
            )
            .await
        }
        Cmd::Create {
            count,
            concurrency,
            state,
            max_seconds,
            seed,
        } => create(&cli, *count, *concurrency, state, *max_seconds, *seed).await,
        Cmd::Read {
            count,
            concurrency,
            state,
            max_seconds,
            warmup,
            seed,
            alternate_label,
        } => {
            read(
                &cli,
                *count,
                *concurrency,
                state,
                *max_seconds,
                *warmup,
                *seed,
                alternate_label.as_deref(),
            )
            .await
        }
        Cmd::Search {
            query,
            count,
            concurrency,
            state,
            max_seconds,
            warmup,
            pages,
            page_size,
            seed,
        } => {
            search(
                &cli,
                *query,
                *count,
                *concurrency,
                state,
                *max_seconds,
                *warmup,
                *pages,
                *page_size,
                *seed,
            )
            .await
        }
        Cmd::Auth(args) => auth(&cli, args).await,
        Cmd::Insi {
            op,
            persons,
            gen_seed,
            sample,
            count,
            concurrency,
            max_seconds,
            warmup,
            seed,
        } => {
            insi(
                &cli,
                *op,
                *persons,
                *gen_seed,
                *sample,
                *count,
                *concurrency,
                *max_seconds,
                *warmup,
                *seed,
            )
            .await
        }
        Cmd::Annuaire {
            query,
            structures,
            professionals,
            gen_seed,
            sample,
            count,
            concurrency,
            max_seconds,
            warmup,
            seed,
        } => {
            annuaire(
                &cli,
                *query,
                *structures,
                *professionals,
                *gen_seed,
                *sample,
                *count,
                *concurrency,
                *max_seconds,
                *warmup,
                *seed,
            )
            .await
        }
        Cmd::Dmp {
            op,
            patients,
            gen_seed,
            pdf_bytes,
            run,
            feed_patients,
            page_size,
            count,
            concurrency,
            max_seconds,
            warmup,
            seed,
            stream,
        } => {
            let o = DmpOpts {
                patients: *patients,
                gen_seed: *gen_seed,
                pdf_bytes: *pdf_bytes,
                run: run.clone(),
                feed_patients: feed_patients.unwrap_or(*patients),
                page_size: *page_size,
                count: *count,
                concurrency: *concurrency,
                max_seconds: *max_seconds,
                warmup: *warmup,
                seed: *seed,
                stream: *stream,
            };
            dmp(&cli, *op, &o).await
        }
        Cmd::Jitter { count, work, phase } => jitter(&cli, *count, *work, phase),
        Cmd::Analyze { db, way } => analyze(&cli, db, way.as_deref()),
        Cmd::Check { state } => {
            if !check(&cli, state).await? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
