//! Reproducible synthetic structures and professionals (same seed, same data).
//!
//! - Structures (`Organization`): FINESS numbers with the département of their commune and a valid check
//!   digit, IDNST `1` + FINESS, a category (subset of TRE_R66: pharmacies 40 %, EHPAD 15 %, health centres
//!   10 %, laboratories 8 %, hospitals 5 %, regional hospitals 1 %, others 21 %), a commune drawn by
//!   population (address with city, postal code and INSEE code) and an organisational MSSanté mailbox.
//! - Professionals (`Practitioner`): RPPS numbers (valid Luhn) and IDNPS, names from the INS name lists, a
//!   profession of TRE_G15 drawn with rough national shares (nurses 40 %, physicians 22 %, physiotherapists
//!   9 %, pharmacists 7 %…), for physicians a TRE_R38 specialty (general medicine 45 %), a personal MSSanté
//!   mailbox, and 1 to 3 practice situations (`PractitionerRole`, 80/17/3 %) in structures drawn at random.

use std::collections::HashMap;

use serde_json::{Value, json};
use socle_ins::data::{Place, tables};
use socle_ins::generate::{Rng, Weighted};

use crate::data::nomenclature;
use crate::ids::{Finess, Rpps, SYSTEM_FINESS, SYSTEM_IDNPS, SYSTEM_IDNST, SYSTEM_RPPS};
use crate::{EXT_MAILBOX_MSS, SYSTEM_CATEGORY, SYSTEM_PROFESSION, SYSTEM_SPECIALTY};

/// (TRE_R66 code, label, weight, name pattern).
const CATEGORIES: &[(&str, &str, u64, &str)] = &[
    ("620", "Pharmacie d'Officine", 40, "Pharmacie"),
    ("500", "EHPAD", 15, "EHPAD"),
    ("124", "Centre de Santé", 10, "Centre de santé"),
    (
        "611",
        "Laboratoire de Biologie Médicale",
        8,
        "Laboratoire de biologie médicale",
    ),
    ("355", "Centre Hospitalier (C.H.)", 5, "Centre hospitalier"),
    (
        "101",
        "Centre Hospitalier Régional (C.H.R.)",
        1,
        "Centre hospitalier régional",
    ),
    (
        "603",
        "Maison de santé pour Maladies Mentales",
        3,
        "Maison de santé",
    ),
    (
        "698",
        "Autre Etablissement Loi Hospitalière",
        18,
        "Établissement de santé",
    ),
];

/// (TRE_G15 code, weight, mailbox domain label).
const PROFESSIONS: &[(&str, u64, &str)] = &[
    ("60", 400, "infirmier"),
    ("10", 220, "medecin"),
    ("70", 90, "kine"),
    ("21", 70, "pharmacien"),
    ("40", 45, "dentiste"),
    ("98", 35, "manipulateur"),
    ("86", 30, "laboratoire"),
    ("28", 30, "opticien"),
    ("50", 22, "sagefemme"),
    ("91", 22, "orthophoniste"),
    ("80", 14, "podologue"),
    ("94", 12, "ergotherapeute"),
    ("95", 10, "dieteticien"),
    ("96", 8, "psychomotricien"),
    ("92", 5, "orthoptiste"),
    ("26", 4, "audioprothesiste"),
];

const EHPAD_NAMES: &[&str] = &[
    "Les Tilleuls",
    "Les Glycines",
    "Le Parc",
    "Les Jardins",
    "La Roseraie",
    "Les Charmilles",
    "Le Val Fleuri",
    "Les Peupliers",
];

/// Lowercase ASCII with `-` between words (for mailbox addresses).
pub fn slug(s: &str) -> String {
    socle_ins::traits::normalize_name(s)
        .to_ascii_lowercase()
        .replace(' ', "-")
}

fn insee_ext(code: &str) -> Value {
    json!([{"url": socle_ins::EXT_INSEE_CODE, "valueCoding": {"system": socle_ins::SYSTEM_INSEE_COMMUNE, "code": code}}])
}

/// An MSSanté mailbox as a `ContactPoint` with the ANS metadata extension.
pub fn mailbox(address: &str, kind: &str) -> Value {
    json!({
        "system": "email",
        "value": address,
        "extension": [{"url": EXT_MAILBOX_MSS, "extension": [{"url": "type", "valueCodeableConcept": {"coding": [{"code": kind}]}}]}]
    })
}

/// The département part of a FINESS number for a commune's INSEE code.
fn finess_dept(code: &str) -> &str {
    &code[..2]
}

pub struct DirectoryGenerator {
    rng: Rng,
    communes: Weighted,
    categories: Weighted,
    professions: Weighted,
    surnames: Weighted,
    given: Weighted,
    /// Next FINESS serial per département.
    serials: HashMap<String, u32>,
    /// Structure ids generated so far (roles point at them).
    pub structures: Vec<String>,
    mailboxes: HashMap<String, u32>,
    professionals: u64,
}

impl DirectoryGenerator {
    pub fn new(seed: u64) -> Self {
        let t = tables();
        DirectoryGenerator {
            rng: Rng::new(seed ^ 0xD1EC_7042),
            communes: Weighted::new(t.communes.iter().map(|c| c.weight as u64)),
            categories: Weighted::new(CATEGORIES.iter().map(|c| c.2)),
            professions: Weighted::new(PROFESSIONS.iter().map(|p| p.1)),
            surnames: Weighted::zipf(t.surnames.len()),
            given: Weighted::zipf(300),
            serials: HashMap::new(),
            structures: Vec::new(),
            mailboxes: HashMap::new(),
            professionals: 0,
        }
    }

    fn commune(&mut self) -> &'static Place {
        &tables().communes[self.communes.draw(&mut self.rng)]
    }

    fn unique_mailbox(&mut self, local: &str, domain: &str) -> String {
        let n = self
            .mailboxes
            .entry(format!("{local}@{domain}"))
            .or_insert(0);
        *n += 1;
        if *n == 1 {
            format!("{local}@{domain}")
        } else {
            format!("{local}{n}@{domain}")
        }
    }

    /// The next structure (an `Organization`).
    pub fn structure(&mut self) -> Value {
        let place = self.commune();
        let (code, label, _, pattern) = CATEGORIES[self.categories.draw(&mut self.rng)];
        let dept = finess_dept(place.code).to_string();
        let serial = self.serials.entry(dept.clone()).or_insert(0);
        *serial += 1;
        let finess = Finess::build(&dept, *serial).expect("valid département");
        let t = tables();
        let name = match code {
            "620" => format!(
                "{pattern} {}",
                t.surnames[self.surnames.draw(&mut self.rng)]
            ),
            "500" => format!(
                "{pattern} {}",
                EHPAD_NAMES[self.rng.below(EHPAD_NAMES.len() as u64) as usize]
            ),
            _ => format!("{pattern} de {}", place.name),
        };
        let mbox = self.unique_mailbox("secretariat", &format!("{}.mssante.fr", slug(&name)));
        let id = finess.idnst();
        self.structures.push(id.clone());
        json!({
            "resourceType": "Organization",
            "id": id,
            "identifier": [
                {"system": SYSTEM_FINESS, "value": finess.as_str()},
                {"system": SYSTEM_IDNST, "value": finess.idnst()}
            ],
            "active": true,
            "type": [{"coding": [{"system": SYSTEM_CATEGORY, "code": code, "display": label}]}],
            "name": name,
            "telecom": [mailbox(&mbox, "ORG")],
            "address": [{
                "extension": insee_ext(place.code),
                "line": [format!("{} rue de la République", 1 + self.rng.below(120))],
                "city": place.name,
                "postalCode": place.postal,
                "country": "FR"
            }]
        })
    }

    /// The next professional: the `Practitioner` and its `PractitionerRole`s (structures must exist).
    pub fn professional(&mut self) -> Vec<Value> {
        let t = tables();
        let n = nomenclature();
        self.professionals += 1;
        let rpps = Rpps::from_body(1_000_000_000 + self.professionals * 7 % 9_000_000_000);
        let idnps = rpps.idnps();
        let female = self.rng.chance(0.6);
        let family =
            socle_ins::traits::official_name(t.surnames[self.surnames.draw(&mut self.rng)]);
        let names = t.given_for(female, 1975);
        let given = names[self.given.draw(&mut self.rng).min(names.len() - 1)].to_string();
        let (prof, _, domain) = PROFESSIONS[self.professions.draw(&mut self.rng)];
        let prof_label = n.profession(prof).unwrap_or_default();
        let specialty = match prof {
            "10" => {
                let list = n.specialties_of("10");
                Some(if self.rng.chance(0.45) {
                    ("SM54", "Médecine Générale")
                } else {
                    list[self.rng.below(list.len() as u64) as usize]
                })
            }
            "40" if self.rng.chance(0.1) => {
                let list = n.specialties_of("40");
                Some(list[self.rng.below(list.len() as u64) as usize])
            }
            _ => None,
        };
        let mbox = self.unique_mailbox(
            &format!("{}.{}", slug(&given), slug(&family)),
            &format!("{domain}.mssante.fr"),
        );
        let mut name = json!({"use": "usual", "family": family, "given": [given]});
        if prof == "10" || prof == "40" {
            name["prefix"] = json!(["Dr"]);
        }
        let mut qualification = vec![
            json!({"code": {"coding": [{"system": SYSTEM_PROFESSION, "code": prof, "display": prof_label}]}}),
        ];
        if let Some((c, l)) = specialty {
            qualification.push(
                json!({"code": {"coding": [{"system": SYSTEM_SPECIALTY, "code": c, "display": l}]}}),
            );
        }
        let mut practitioner = json!({
            "resourceType": "Practitioner",
            "id": idnps,
            "identifier": [
                {"system": SYSTEM_RPPS, "value": rpps.as_str()},
                {"system": SYSTEM_IDNPS, "value": idnps}
            ],
            "active": true,
            "name": [name],
            "telecom": [mailbox(&mbox, "PER")],
            "gender": if female { "female" } else { "male" },
            "qualification": qualification
        });
        // One professional in 50 asked for restricted diffusion ("liste rouge"): labelled R, out of the public
        // Annuaire (chosen from the number, so the random stream and the rest of the data do not change) — and
        // so are their practice situations, which carry their name and their mailbox.
        let restricted = rpps.as_str().parse::<u64>().unwrap_or(0) % 50 == 7;
        let label = json!({"security": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R",
            "display": "restricted"}]});
        if restricted {
            practitioner["meta"] = label.clone();
        }
        let mut out = vec![practitioner];
        let roles = match self.rng.below(100) {
            0..=79 => 1,
            80..=96 => 2,
            _ => 3,
        };
        for k in 1..=roles {
            if self.structures.is_empty() {
                break;
            }
            let org =
                self.structures[self.rng.below(self.structures.len() as u64) as usize].clone();
            let mut role = json!({
                "resourceType": "PractitionerRole",
                "id": format!("{idnps}-{k}"),
                "active": true,
                "practitioner": {"reference": format!("Practitioner/{idnps}"), "display": format!("{given} {family}")},
                "organization": {"reference": format!("Organization/{org}")},
                "code": [{"coding": [{"system": SYSTEM_PROFESSION, "code": prof, "display": prof_label}]}],
                "telecom": [mailbox(&mbox, "PER")]
            });
            if let Some((c, l)) = specialty {
                role["specialty"] =
                    json!([{"coding": [{"system": SYSTEM_SPECIALTY, "code": c, "display": l}]}]);
            }
            if restricted {
                role["meta"] = label.clone();
            }
            out.push(role);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_valid() {
        let run = || {
            let mut g = DirectoryGenerator::new(3);
            let mut v: Vec<Value> = (0..50).map(|_| g.structure()).collect();
            for _ in 0..300 {
                v.extend(g.professional());
            }
            v
        };
        let a = run();
        assert_eq!(a, run());
        let mut ids = std::collections::HashSet::new();
        let mut mailboxes = std::collections::HashSet::new();
        for r in &a {
            let t = r["resourceType"].as_str().unwrap();
            crate::validate(t, r).unwrap_or_else(|e| panic!("{e}: {r}"));
            assert!(ids.insert(format!("{t}/{}", r["id"])), "duplicate id {r}");
            if t != "PractitionerRole" {
                let m = r["telecom"][0]["value"].as_str().unwrap().to_string();
                assert!(mailboxes.insert(m.clone()), "duplicate mailbox {m}");
                assert!(m.ends_with(".mssante.fr") && m.is_ascii(), "{m}");
            }
        }
        assert!(
            a.iter()
                .filter(|r| r["resourceType"] == "PractitionerRole")
                .count()
                >= 300
        );
    }

    #[test]
    fn a_restricted_professional_has_restricted_practice_situations() {
        let mut g = DirectoryGenerator::new(5);
        for _ in 0..20 {
            g.structure();
        }
        let (mut restricted, mut public) = (0, 0);
        for _ in 0..2_000 {
            let rs = g.professional();
            let label = &rs[0]["meta"]["security"];
            if label.is_null() {
                public += 1;
            } else {
                restricted += 1;
            }
            for role in &rs[1..] {
                assert_eq!(&role["meta"]["security"], label, "{role}");
            }
        }
        assert!(restricted > 10 && public > 1_000, "{restricted} / {public}");
    }
}
