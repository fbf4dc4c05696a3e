//! Identity vigilance (RNIV) in the local patient index: the FR Core `identityReliability` extension of
//! `Patient`, the rules its statuses obey, and which identifier may leave the system.
//!
//! Socle reads the FR Core extension `fr-core-identity-reliability` with these sub-extensions:
//!
//! | sub-extension | value | meaning |
//! |---|---|---|
//! | `identityStatus` | `valueCoding` (`PROV`, `RECUP`, `VALI`, `QUAL`) | the RNIV status (absent extension = `PROV`) |
//! | `methodColl` | `valueCoding` (e.g. `INSI`, `CARTE_VITALE`, `SAISIE`) | how the traits were collected |
//! | `insiDate` | `valueDate` / `valueDateTime` | when INSi was queried (required for `RECUP` and `QUAL`) |
//! | `validationMode` | `valueCoding` (`CN` identity card, `PA` passport, `AN` birth certificate, `CS` residence permit, `LF` family record book…) | the identity document checked (required for `VALI` and `QUAL`) |
//! | `validationDate` | `valueDate` | when the document was checked |
//! | `identityAttribute` (repeatable) | `valueCode` (`DOUT` doubtful, `FICT` fictitious, `HOMO` homonym) | attributes |
//!
//! Rules enforced on every write of a `Patient` (422 with the reason otherwise):
//! - `DOUT` and `FICT` never together, and an identity carrying either stays `PROV`;
//! - an INS identifier (`…4.8` to `…4.11`) may only be held by a `RECUP` or `QUAL` identity;
//! - `RECUP` and `QUAL` need the INSi query date and an INS that the reference registry verifies against the
//!   patient's traits (INSi is the only way to obtain an INS);
//! - `VALI` and `QUAL` need the identity document that was checked.
//!
//! Outward, only a `QUAL` identity's INS is shared; otherwise the local identifier
//! ([`outward_identifier`]).

use serde_json::{Value, json};

use crate::registry::{INS_SYSTEMS, Registry, Verified, birth_place_of};
use crate::traits::Traits;

pub const EXT_RELIABILITY: &str =
    "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability";
pub const SYSTEM_STATUS: &str = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Prov,
    Recup,
    Vali,
    Qual,
}

impl Status {
    pub fn code(self) -> &'static str {
        match self {
            Status::Prov => "PROV",
            Status::Recup => "RECUP",
            Status::Vali => "VALI",
            Status::Qual => "QUAL",
        }
    }
}

/// The identity-reliability data of a `Patient`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reliability {
    pub status: Status,
    pub method: Option<String>,
    pub insi_date: Option<String>,
    pub document: Option<String>,
    pub validation_date: Option<String>,
    pub attributes: Vec<String>,
}

fn sub<'a>(ext: &'a Value, url: &str) -> impl Iterator<Item = &'a Value> {
    ext["extension"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter(move |e| e["url"] == url)
}

fn coding_code(v: &Value) -> Option<String> {
    v["valueCoding"]["code"]
        .as_str()
        .or_else(|| v["valueCode"].as_str())
        .map(str::to_string)
}

/// Reads the extension; `Ok(None)` when absent. Errors name the malformed part.
pub fn reliability_of(patient: &Value) -> Result<Option<Reliability>, String> {
    let exts: Vec<&Value> = patient["extension"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["url"] == EXT_RELIABILITY).collect())
        .unwrap_or_default();
    let ext = match exts.as_slice() {
        [] => return Ok(None),
        [e] => *e,
        _ => return Err("identityReliability : une seule extension attendue".into()),
    };
    let status = match sub(ext, "identityStatus")
        .next()
        .and_then(coding_code)
        .as_deref()
    {
        Some("PROV") | None => Status::Prov,
        Some("RECUP") => Status::Recup,
        Some("VALI") => Status::Vali,
        Some("QUAL") => Status::Qual,
        Some(other) => {
            return Err(format!(
                "identityReliability : statut {other:?} inconnu (PROV, RECUP, VALI ou QUAL)"
            ));
        }
    };
    let date = |name: &str| {
        sub(ext, name).next().and_then(|e| {
            e["valueDate"]
                .as_str()
                .or_else(|| e["valueDateTime"].as_str())
                .map(str::to_string)
        })
    };
    Ok(Some(Reliability {
        status,
        method: sub(ext, "methodColl").next().and_then(coding_code),
        insi_date: date("insiDate"),
        document: sub(ext, "validationMode").next().and_then(coding_code),
        validation_date: date("validationDate"),
        attributes: sub(ext, "identityAttribute")
            .filter_map(coding_code)
            .collect(),
    }))
}

/// The INS identifier of a Patient (system, value), if any.
pub fn ins_of(patient: &Value) -> Option<(String, String)> {
    patient["identifier"].as_array()?.iter().find_map(|i| {
        let s = i["system"].as_str()?;
        INS_SYSTEMS.contains(&s).then(|| {
            (
                s.to_string(),
                i["value"].as_str().unwrap_or_default().to_string(),
            )
        })
    })
}

/// The five traits of a local Patient: the official name (else the first), birth date, gender, birth place.
pub fn traits_of(patient: &Value) -> Traits {
    let names = patient["name"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let name = names
        .iter()
        .find(|n| n["use"] == "official")
        .or_else(|| names.first());
    Traits {
        family: name
            .and_then(|n| n["family"].as_str())
            .unwrap_or_default()
            .to_string(),
        given: name
            .and_then(|n| n["given"].as_array())
            .map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        birth_date: patient["birthDate"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        gender: patient["gender"].as_str().unwrap_or_default().to_string(),
        birth_place: birth_place_of(patient),
    }
}

/// Whether INSi may be called for this patient (not for a doubtful or fictitious identity).
pub fn insi_allowed(patient: &Value) -> Result<(), String> {
    let r = reliability_of(patient)?;
    if let Some(r) = r {
        for (code, label) in [("DOUT", "douteuse"), ("FICT", "fictive")] {
            if r.attributes.iter().any(|a| a == code) {
                return Err(format!(
                    "identité {label} ({code}) : l'appel au téléservice INSi est refusé"
                ));
            }
        }
    }
    Ok(())
}

/// The RNIV rules (see the module documentation). `registry` verifies the INS of `RECUP`/`QUAL`
/// identities; without one such identities are refused.
pub fn check(patient: &Value, registry: Option<&Registry>) -> Result<(), String> {
    let rel = reliability_of(patient)?;
    let ins = ins_of(patient);
    let status = rel.as_ref().map_or(Status::Prov, |r| r.status);
    if let Some(r) = &rel {
        let dout = r.attributes.iter().any(|a| a == "DOUT");
        let fict = r.attributes.iter().any(|a| a == "FICT");
        if dout && fict {
            return Err("identityReliability : DOUT et FICT ne peuvent aller ensemble".into());
        }
        if (dout || fict) && status != Status::Prov {
            return Err(format!(
                "identité {} : le statut doit rester PROV (trouvé {})",
                if dout { "douteuse" } else { "fictive" },
                status.code()
            ));
        }
        if let Some(a) = r
            .attributes
            .iter()
            .find(|a| !matches!(a.as_str(), "DOUT" | "FICT" | "HOMO"))
        {
            return Err(format!(
                "identityReliability : attribut {a:?} inconnu (DOUT, FICT, HOMO)"
            ));
        }
    }
    if matches!(status, Status::Vali | Status::Qual)
        && rel.as_ref().and_then(|r| r.document.as_ref()).is_none()
    {
        return Err(format!(
            "statut {} : la pièce d'identité contrôlée (validationMode) est obligatoire",
            status.code()
        ));
    }
    match status {
        Status::Recup | Status::Qual => {
            if rel.as_ref().and_then(|r| r.insi_date.as_ref()).is_none() {
                return Err(format!(
                    "statut {} : la date d'appel au téléservice INSi (insiDate) est obligatoire",
                    status.code()
                ));
            }
            let Some((_, value)) = ins else {
                return Err(format!(
                    "statut {} : l'INS (matricule et OID) est obligatoire",
                    status.code()
                ));
            };
            let Some(reg) = registry else {
                return Err(
                    "registre INS indisponible : statut RECUP/QUAL impossible à vérifier".into(),
                );
            };
            match reg.verify(&value, &traits_of(patient)) {
                Ok(Verified::Match(_)) => Ok(()),
                Ok(Verified::Mismatch(d)) if d == ["ins"] => Err(format!(
                    "statut {} : l'INS {value} est inconnu du téléservice INSi",
                    status.code()
                )),
                Ok(Verified::Mismatch(d)) => Err(format!(
                    "statut {} : l'INS ne correspond pas aux traits du patient ({}) — seul un INS obtenu par le téléservice INSi est accepté",
                    status.code(),
                    d.join(", ")
                )),
                Err(e) => Err(e.to_string()),
            }
        }
        Status::Prov | Status::Vali => {
            if ins.is_some() {
                return Err(format!(
                    "statut {} : un INS ne peut être enregistré que pour une identité récupérée (RECUP) ou qualifiée (QUAL)",
                    status.code()
                ));
            }
            Ok(())
        }
    }
}

/// The identifier that may leave the system for this patient: the INS when the identity is qualified,
/// otherwise the local identifier (`use = usual`, the IPP) or, failing that, the resource id.
pub fn outward_identifier(patient: &Value, base: &str) -> Value {
    let qual = matches!(
        reliability_of(patient),
        Ok(Some(Reliability {
            status: Status::Qual,
            ..
        }))
    );
    if qual && let Some((system, value)) = ins_of(patient) {
        return json!({"use": "official", "system": system, "value": value});
    }
    let local = patient["identifier"].as_array().and_then(|a| {
        a.iter()
            .find(|i| {
                i["use"] == "usual"
                    && !INS_SYSTEMS.contains(&i["system"].as_str().unwrap_or_default())
            })
            .cloned()
    });
    local.unwrap_or_else(
        || json!({"use": "usual", "system": format!("{base}/Patient"), "value": patient["id"]}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(status: &str, attrs: &[&str], ins: bool, doc: bool, insi: bool) -> Value {
        let mut ext = vec![
            json!({"url": "identityStatus", "valueCoding": {"system": SYSTEM_STATUS, "code": status}}),
        ];
        for a in attrs {
            ext.push(json!({"url": "identityAttribute", "valueCode": a}));
        }
        if doc {
            ext.push(json!({"url": "validationMode", "valueCoding": {"code": "CN"}}));
        }
        if insi {
            ext.push(json!({"url": "insiDate", "valueDate": "2026-11-01"}));
        }
        let mut p = json!({"resourceType": "Patient", "id": "p1",
            "extension": [{"url": EXT_RELIABILITY, "extension": ext}],
            "identifier": [{"use": "usual", "system": "urn:oid:1.2.3", "value": "IPP42"}]});
        if ins {
            p["identifier"]
                .as_array_mut()
                .unwrap()
                .push(json!({"system": crate::OID_DEMO, "value": "185057800601936"}));
        }
        p
    }

    #[test]
    fn rules_without_registry() {
        assert!(check(&patient("PROV", &[], false, false, false), None).is_ok());
        assert!(check(&patient("VALI", &[], false, true, false), None).is_ok());
        assert!(
            check(&patient("VALI", &[], false, false, false), None)
                .unwrap_err()
                .contains("pièce")
        );
        assert!(
            check(&patient("PROV", &[], true, false, false), None)
                .unwrap_err()
                .contains("INS ne peut")
        );
        assert!(
            check(
                &patient("PROV", &["DOUT", "FICT"], false, false, false),
                None
            )
            .unwrap_err()
            .contains("DOUT et FICT")
        );
        assert!(
            check(&patient("VALI", &["DOUT"], false, true, false), None)
                .unwrap_err()
                .contains("PROV")
        );
        assert!(
            check(&patient("RECUP", &[], true, false, false), None)
                .unwrap_err()
                .contains("insiDate")
        );
        assert!(
            check(&patient("RECUP", &[], false, false, true), None)
                .unwrap_err()
                .contains("obligatoire")
        );
        assert!(
            check(&patient("RECUP", &[], true, false, true), None)
                .unwrap_err()
                .contains("registre")
        );
        assert!(
            check(&patient("QUAL", &[], true, false, true), None)
                .unwrap_err()
                .contains("pièce")
        );
        assert!(
            check(&patient("NOPE", &[], false, false, false), None)
                .unwrap_err()
                .contains("inconnu")
        );
        assert!(
            check(&patient("PROV", &["XX"], false, false, false), None)
                .unwrap_err()
                .contains("attribut")
        );
        assert!(insi_allowed(&patient("PROV", &["FICT"], false, false, false)).is_err());
        assert!(insi_allowed(&patient("PROV", &["HOMO"], false, false, false)).is_ok());
        // Outward identifier.
        assert_eq!(
            outward_identifier(&patient("QUAL", &[], true, true, true), "x")["value"],
            "185057800601936"
        );
        assert_eq!(
            outward_identifier(&patient("RECUP", &[], true, false, true), "x")["value"],
            "IPP42"
        );
        let mut bare = patient("PROV", &[], false, false, false);
        bare["identifier"] = json!([]);
        assert_eq!(outward_identifier(&bare, "http://h/fhir")["value"], "p1");
    }
}
