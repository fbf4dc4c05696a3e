//! The reference identity registry (the RNIPP/SNGI stand-in) and the two INSi operations on it.
//!
//! One table, `ins_registry`, in the same database as the FHIR store: the matricule is the primary key
//! (verify is one lookup), and `(family_key, birth_date)` is indexed (retrieve reads the few identities that
//! share a normalised birth name and a birth date, then applies the first-name, sex and birth-place rules of
//! [`crate::traits`] in Rust).

use std::sync::Arc;

use serde_json::{Value, json};
use socle_store::sql::ColType;
use socle_store::{SqlConn, SqlValue, Store, StoreError};

use crate::data::tables;
use crate::nir::Nir;
use crate::traits::{Traits, differences, given_match, normalize_name, official_name};

/// A reference identity: the matricule, its identifier system and the official traits.
#[derive(Debug, Clone, PartialEq)]
pub struct Official {
    pub matricule: String,
    /// `urn:oid:1.2.250.1.213.1.4.x`.
    pub system: String,
    pub traits: Traits,
    /// Carte Vitale number, when known.
    pub card: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Bad input: the message names the faulty trait or field.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer of *retrieve*.
#[derive(Debug, Clone, PartialEq)]
pub enum Retrieved {
    Found(Box<Official>),
    NotFound,
    /// Several identities match: none is returned (the caller must add traits).
    Multiple(usize),
}

/// The answer of *verify*.
#[derive(Debug, Clone, PartialEq)]
pub enum Verified {
    Match(Box<Official>),
    /// The traits that differ; `ins` alone when the matricule is unknown.
    Mismatch(Vec<&'static str>),
}

const COLUMNS: &[(&str, ColType)] = &[
    ("matricule", ColType::Text),
    ("system", ColType::Text),
    ("family", ColType::Text),
    ("given", ColType::Text),
    ("birth_date", ColType::Text),
    ("gender", ColType::Text),
    ("birth_place", ColType::Text),
    ("family_key", ColType::Text),
    ("card", ColType::Text),
];
const SELECT: &str = "SELECT matricule, system, family, given, birth_date, gender, birth_place, card FROM ins_registry";

pub struct Registry {
    store: Arc<dyn Store>,
}

impl Registry {
    /// Opens the registry in `store`, creating its table if needed.
    pub fn open(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        store.write(&mut |c| {
            // No PRIMARY KEY clause: the unique index on the matricule plays that role, and a bulk load into
            // an empty registry can drop it and build it once at the end (see `bulk_load`).
            c.execute(
                "CREATE TABLE IF NOT EXISTS ins_registry (matricule TEXT NOT NULL, system TEXT NOT NULL, \
                 family TEXT NOT NULL, given TEXT NOT NULL, birth_date TEXT NOT NULL, gender TEXT NOT NULL, \
                 birth_place TEXT, family_key TEXT NOT NULL, card TEXT)",
                &[],
            )?;
            create_indexes(c)
        })?;
        Ok(Registry { store })
    }

    /// Loads identities in batches (`next` gives them until it returns an empty batch). Into an empty
    /// registry the indexes are dropped first and built once at the end — several times faster than keeping
    /// them up to date row by row at 10 M identities; a duplicate matricule (or any failure) then empties the
    /// registry again, indexes rebuilt, and the error names the matricule. Into a non-empty registry each batch
    /// is an upsert.
    pub fn bulk_load(
        &self,
        next: &mut dyn FnMut() -> Vec<Official>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, StoreError> {
        let mut empty = true;
        self.store.read(&mut |c| {
            empty = c
                .query_one("SELECT 1 FROM ins_registry LIMIT 1", &[])?
                .is_none();
            Ok(())
        })?;
        if !empty {
            let mut n = 0;
            loop {
                let batch = next();
                if batch.is_empty() {
                    return Ok(n);
                }
                self.load(&batch)?;
                n += batch.len() as u64;
                progress(n);
            }
        }
        self.store.write(&mut |c| {
            for idx in INDEXES {
                c.execute(&format!("DROP INDEX IF EXISTS {}", idx.0), &[])?;
            }
            Ok(())
        })?;
        let mut n = 0;
        let res = (|| loop {
            let batch = next();
            if batch.is_empty() {
                return Ok(n);
            }
            let rows = rows_of(&batch);
            self.store
                .write(&mut |c| c.insert_rows("ins_registry", COLUMNS, &rows))?;
            n += batch.len() as u64;
            progress(n);
        })();
        let built = self.store.write(&mut |c| create_indexes(c));
        match (res, built) {
            (Ok(n), Ok(())) => Ok(n),
            (res, built) => {
                // All or nothing: the registry was empty, and is left so, with its indexes (a duplicate
                // matricule would otherwise keep the unique index from ever being built again).
                let mut dup = None;
                self.store.read(&mut |c| {
                    dup = c
                        .query_one(
                            "SELECT matricule FROM ins_registry GROUP BY matricule HAVING COUNT(*) > 1 LIMIT 1",
                            &[],
                        )?
                        .and_then(|r| r.into_iter().next())
                        .and_then(|v| v.into_string());
                    Ok(())
                })?;
                self.store.write(&mut |c| {
                    c.execute("DELETE FROM ins_registry", &[])?;
                    create_indexes(c)
                })?;
                Err(match (dup, res) {
                    (Some(m), _) => StoreError::Conflict(format!(
                        "matricule {m} présent deux fois : rien n'est chargé"
                    )),
                    (None, Err(e)) => e,
                    (None, Ok(_)) => built.err().unwrap_or(StoreError::Rollback),
                })
            }
        }
    }

    /// Adds or replaces identities, all in one transaction.
    pub fn load(&self, batch: &[Official]) -> Result<(), StoreError> {
        let rows = rows_of(batch);
        self.store
            .write(&mut |c| c.upsert_rows("ins_registry", COLUMNS, "matricule", &rows))
    }

    pub fn count(&self) -> Result<i64, StoreError> {
        let mut n = 0;
        self.store.read(&mut |c| {
            n = c
                .query_one("SELECT COUNT(*) FROM ins_registry", &[])?
                .and_then(|r| r.into_iter().next())
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            Ok(())
        })?;
        Ok(n)
    }

    /// *Retrieve*: the identity matching the traits, when exactly one does.
    pub fn retrieve(&self, q: &Traits) -> Result<Retrieved, RegistryError> {
        check_query(q)?;
        let mut found = Vec::new();
        self.store.read_one(&mut |c| {
            found = query(
                c,
                &format!("{SELECT} WHERE family_key = ? AND birth_date = ?"),
                &[
                    normalize_name(&q.family).into(),
                    q.birth_date.as_str().into(),
                ],
            )?;
            Ok(())
        })?;
        found.retain(|o| {
            o.traits.gender == q.gender
                && given_match(&q.given, &o.traits.given)
                && match (&q.birth_place, &o.traits.birth_place) {
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    _ => true,
                }
        });
        Ok(decide(found))
    }

    /// *Retrieve* from a Carte Vitale: the card's holder, or among the beneficiaries on the card the one
    /// with `birth_date` (and first name) when given.
    pub fn retrieve_by_card(
        &self,
        card: &str,
        birth_date: Option<&str>,
        given: &[String],
    ) -> Result<Retrieved, RegistryError> {
        if card.is_empty() || card.len() > 32 || !card.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(RegistryError::Invalid(
                "numéro de carte Vitale invalide".into(),
            ));
        }
        let mut found = Vec::new();
        self.store.read_one(&mut |c| {
            found = query(c, &format!("{SELECT} WHERE card = ?"), &[card.into()])?;
            Ok(())
        })?;
        found.retain(|o| {
            birth_date.is_none_or(|d| d == o.traits.birth_date)
                && (given.is_empty() || given_match(given, &o.traits.given))
        });
        Ok(decide(found))
    }

    /// The reference identity of a matricule, if the registry has it.
    pub fn get(&self, matricule: &str) -> Result<Option<Official>, RegistryError> {
        let nir = Nir::parse(matricule).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let mut found = Vec::new();
        self.store.read_one(&mut |c| {
            found = query(
                c,
                &format!("{SELECT} WHERE matricule = ?"),
                &[nir.as_str().into()],
            )?;
            Ok(())
        })?;
        Ok(found.pop())
    }

    /// *Verify*: whether the matricule exists and its official traits match the given ones.
    pub fn verify(&self, matricule: &str, q: &Traits) -> Result<Verified, RegistryError> {
        check_query(q)?;
        Ok(match self.get(matricule)? {
            None => Verified::Mismatch(vec!["ins"]),
            Some(o) => {
                let d = differences(q, &o.traits);
                if d.is_empty() {
                    Verified::Match(Box::new(o))
                } else {
                    Verified::Mismatch(d)
                }
            }
        })
    }
}

/// The registry's indexes: the matricule (unique: verify), the traits (retrieve), the Carte Vitale.
const INDEXES: &[(&str, &str)] = &[
    (
        "ins_registry_matricule",
        "UNIQUE INDEX IF NOT EXISTS ins_registry_matricule ON ins_registry (matricule)",
    ),
    (
        "ins_registry_traits",
        "INDEX IF NOT EXISTS ins_registry_traits ON ins_registry (family_key, birth_date)",
    ),
    (
        "ins_registry_card",
        "INDEX IF NOT EXISTS ins_registry_card ON ins_registry (card)",
    ),
];

fn create_indexes(c: &mut dyn SqlConn) -> Result<(), StoreError> {
    for (_, ddl) in INDEXES {
        c.execute(&format!("CREATE {ddl}"), &[])?;
    }
    Ok(())
}

fn rows_of(batch: &[Official]) -> Vec<Vec<SqlValue>> {
    batch
        .iter()
        .map(|o| {
            vec![
                o.matricule.as_str().into(),
                o.system.as_str().into(),
                o.traits.family.as_str().into(),
                o.traits.given.join(" ").into(),
                o.traits.birth_date.as_str().into(),
                o.traits.gender.as_str().into(),
                o.traits.birth_place.clone().into(),
                normalize_name(&o.traits.family).into(),
                o.card.clone().into(),
            ]
        })
        .collect()
}

fn decide(mut found: Vec<Official>) -> Retrieved {
    match found.len() {
        0 => Retrieved::NotFound,
        1 => Retrieved::Found(Box::new(found.remove(0))),
        n => Retrieved::Multiple(n),
    }
}

fn query(c: &mut dyn SqlConn, sql: &str, params: &[SqlValue]) -> Result<Vec<Official>, StoreError> {
    Ok(c.query(sql, params)?
        .into_iter()
        .map(|r| {
            let mut it = r.into_iter().map(|v| v.into_string());
            let mut s = || it.next().flatten();
            let matricule = s().unwrap_or_default();
            let system = s().unwrap_or_default();
            let family = s().unwrap_or_default();
            let given = s()
                .unwrap_or_default()
                .split(' ')
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect();
            let birth_date = s().unwrap_or_default();
            let gender = s().unwrap_or_default();
            let birth_place = s();
            let card = s();
            Official {
                matricule,
                system,
                traits: Traits {
                    family,
                    given,
                    birth_date,
                    gender,
                    birth_place,
                },
                card,
            }
        })
        .collect())
}

/// Checks the traits of a query: all five present (birth place optional) and well formed.
pub fn check_query(q: &Traits) -> Result<(), RegistryError> {
    let bad = |m: &str| Err(RegistryError::Invalid(m.to_string()));
    if normalize_name(&q.family).is_empty() {
        return bad("family (nom de naissance) manquant");
    }
    if q.given.iter().all(|g| normalize_name(g).is_empty()) {
        return bad("given (prénom de naissance) manquant");
    }
    if !valid_date(&q.birth_date) {
        return bad("birthdate invalide : date complète AAAA-MM-JJ attendue");
    }
    if q.gender != "male" && q.gender != "female" {
        return bad("gender invalide : male ou female attendu");
    }
    if let Some(p) = &q.birth_place
        && !tables().is_known_place(p)
    {
        return Err(RegistryError::Invalid(format!(
            "birthplace : code INSEE {p:?} inconnu"
        )));
    }
    Ok(())
}

/// `YYYY-MM-DD`, a real calendar date, not in the future relative to year 2100.
pub fn valid_date(d: &str) -> bool {
    let b = d.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Ok(y), Ok(m), Ok(day)) = (
        d[0..4].parse::<u16>(),
        d[5..7].parse::<u8>(),
        d[8..10].parse::<u8>(),
    ) else {
        return false;
    };
    (1..=12).contains(&m) && (1800..2100).contains(&y) && day >= 1 && day <= days_in(y, m)
}

/// Days in a month of the Gregorian calendar (`month` 1–12).
pub fn days_in(year: u16, month: u8) -> u8 {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The INS identifier systems (NIR, NIA, test NIR, demo NIR).
pub const INS_SYSTEMS: &[&str] = &[
    crate::OID_NIR,
    crate::OID_NIA,
    crate::OID_TEST,
    crate::OID_DEMO,
];

impl Official {
    /// Reads a reference identity from a FHIR `Patient` (the `socle import --registry` format): the INS
    /// identifier, the official name, gender, birth date and birth place; checks the matricule and its
    /// consistency with the traits.
    pub fn from_fhir(v: &Value) -> Result<Self, RegistryError> {
        let bad = |m: String| RegistryError::Invalid(m);
        if v["resourceType"] != "Patient" {
            return Err(bad("ressource Patient attendue".into()));
        }
        let ids = v["identifier"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let ins = ids
            .iter()
            .find(|i| {
                i["system"]
                    .as_str()
                    .is_some_and(|s| INS_SYSTEMS.contains(&s))
            })
            .ok_or_else(|| {
                bad("identifiant INS (urn:oid:1.2.250.1.213.1.4.8 à .11) absent".into())
            })?;
        let system = ins["system"].as_str().unwrap_or_default().to_string();
        let nir = Nir::parse(ins["value"].as_str().unwrap_or_default())
            .map_err(|e| bad(e.to_string()))?;
        let card = ids
            .iter()
            .find(|i| i["system"] == crate::SYSTEM_VITALE)
            .and_then(|i| i["value"].as_str())
            .map(str::to_string);
        let names = v["name"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let name = names
            .iter()
            .find(|n| n["use"] == "official")
            .or_else(|| names.first())
            .ok_or_else(|| bad("nom de naissance absent".into()))?;
        let traits = Traits {
            family: official_name(name["family"].as_str().unwrap_or_default()),
            given: name["given"]
                .as_array()
                .map(|g| {
                    g.iter()
                        .filter_map(Value::as_str)
                        .map(official_name)
                        .collect()
                })
                .unwrap_or_default(),
            birth_date: v["birthDate"].as_str().unwrap_or_default().to_string(),
            gender: v["gender"].as_str().unwrap_or_default().to_string(),
            birth_place: birth_place_of(v),
        };
        check_query(&traits)?;
        let wrong = nir.inconsistencies(
            Some(&traits.gender),
            Some(&traits.birth_date),
            traits.birth_place.as_deref(),
        );
        if !wrong.is_empty() {
            return Err(bad(format!(
                "le matricule {nir} ne correspond pas aux traits : {}",
                wrong.join(", ")
            )));
        }
        Ok(Official {
            matricule: nir.to_string(),
            system,
            traits,
            card,
        })
    }

    /// The official identity as a FHIR `Patient` (what INSi returns: matricule, OID and traits).
    pub fn to_fhir(&self) -> Value {
        let mut p = json!({
            "resourceType": "Patient",
            "identifier": [{"use": "official", "system": self.system, "value": self.matricule}],
            "name": [{"use": "official", "family": self.traits.family, "given": self.traits.given}],
            "gender": self.traits.gender,
            "birthDate": self.traits.birth_date
        });
        if let Some(code) = &self.traits.birth_place {
            let abroad = code.starts_with("99");
            p["extension"] = json!([{"url": crate::EXT_BIRTH_PLACE, "valueAddress": {"extension": [{
                "url": crate::EXT_INSEE_CODE,
                "valueCoding": {"system": if abroad { crate::SYSTEM_INSEE_COUNTRY } else { crate::SYSTEM_INSEE_COMMUNE }, "code": code}
            }]}}]);
        }
        p
    }
}

/// The INSEE code of a Patient's birth place (FR Core: `patient-birthPlace` address with the INSEE code
/// extension).
pub fn birth_place_of(v: &Value) -> Option<String> {
    v["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == crate::EXT_BIRTH_PLACE)?["valueAddress"]["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == crate::EXT_INSEE_CODE)?["valueCoding"]["code"]
        .as_str()
        .map(|s| s.to_ascii_uppercase())
}
