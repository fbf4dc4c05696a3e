//! The public flat extractions of the *Annuaire Santé* ("extraction des données en libre accès",
//! `PS_LibreAcces_Personne_activite_*.txt`): pipe-separated, a header line naming the columns, one line per
//! practice situation of a professional. Columns are found by their header name, so their order does not
//! matter and unknown columns are ignored.
//!
//! Columns read (the others are ignored):
//!
//! | column | required | becomes |
//! |---|---|---|
//! | `Identifiant PP` | yes | RPPS identifier (checked: 11 digits, Luhn) when `Type d'identifiant PP` is `8` |
//! | `Identification nationale PP` | yes | IDNPS identifier, and the `Practitioner` id |
//! | `Type d'identifiant PP` | no | `8` RPPS (default), `0` ADELI |
//! | `Code civilité d'exercice` | no | `name.prefix` (`DR` → `Dr`, `PR` → `Pr`) |
//! | `Nom d'exercice`, `Prénom d'exercice` | yes, no | `name.family`, `name.given` |
//! | `Code profession`, `Libellé profession` | yes, no | TRE_G15 `qualification` and `PractitionerRole.code` |
//! | `Code savoir-faire`, `Libellé savoir-faire` | no | TRE_R38 `qualification` and `PractitionerRole.specialty` |
//! | `Numéro FINESS site`, `Raison sociale site` | no | the `Organization` of the situation (id `1` + FINESS) |
//! | `Code postal (coord. structure)`, `Code commune (coord. structure)`, `Libellé commune (coord. structure)` | no | address of the organisation |
//! | `Téléphone (coord. structure)`, `Adresse e-mail (coord. structure)` | no | telecom of the situation |
//!
//! A situation becomes `PractitionerRole` `<IDNPS>-<FINESS or "0">-<profession>`, so re-importing a newer
//! extraction updates the same resources.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::ids::{
    Finess, Rpps, SYSTEM_FINESS, SYSTEM_IDNPS, SYSTEM_IDNST, SYSTEM_RPPS, check_idnps,
};
use crate::{SYSTEM_PROFESSION, SYSTEM_SPECIALTY};

/// The column positions of an extraction, from its header line.
#[derive(Debug)]
pub struct Header {
    columns: HashMap<String, usize>,
    width: usize,
}

const REQUIRED: &[&str] = &[
    "Identifiant PP",
    "Identification nationale PP",
    "Nom d'exercice",
    "Code profession",
];

impl Header {
    /// Reads the header line; names the missing required columns.
    pub fn parse(line: &str) -> Result<Header, String> {
        let names: Vec<&str> = line.trim_end_matches(['\r', '\n']).split('|').collect();
        let columns: HashMap<String, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.trim().trim_start_matches('\u{feff}').to_string(), i))
            .collect();
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|c| !columns.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "en-tête de l'extraction : colonne(s) absente(s) : {}",
                missing.join(", ")
            ));
        }
        // The extraction files end every line with a `|`: the last, empty, column is not data.
        let width = names.len();
        Ok(Header { columns, width })
    }
}

/// Converts one line into resources: the `Practitioner`, its `PractitionerRole` and, when the situation
/// names a FINESS site, the `Organization`.
pub fn parse_line(h: &Header, line: &str) -> Result<Vec<Value>, String> {
    let fields: Vec<&str> = line.trim_end_matches(['\r', '\n']).split('|').collect();
    if fields.len() != h.width {
        return Err(format!("{} colonnes au lieu de {}", fields.len(), h.width));
    }
    let get = |name: &str| -> &str {
        h.columns
            .get(name)
            .and_then(|i| fields.get(*i))
            .map(|s| s.trim())
            .unwrap_or("")
    };
    let idnps = get("Identification nationale PP");
    if idnps.is_empty() {
        return Err("Identification nationale PP vide".into());
    }
    check_idnps(idnps).map_err(|e| e.to_string())?;
    let id_type = get("Type d'identifiant PP");
    let mut identifiers = Vec::new();
    if id_type.is_empty() || id_type == "8" {
        let rpps = Rpps::parse(get("Identifiant PP")).map_err(|e| e.to_string())?;
        if idnps != rpps.idnps() {
            return Err(format!(
                "Identification nationale PP {idnps} ne correspond pas au RPPS {rpps}"
            ));
        }
        identifiers.push(json!({"system": SYSTEM_RPPS, "value": rpps.as_str()}));
    }
    identifiers.push(json!({"system": SYSTEM_IDNPS, "value": idnps}));
    let family = get("Nom d'exercice");
    if family.is_empty() {
        return Err("Nom d'exercice vide".into());
    }
    let profession = get("Code profession");
    if profession.is_empty() || !profession.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("Code profession invalide : {profession:?}"));
    }
    let prof_label = match get("Libellé profession") {
        "" => crate::data::nomenclature()
            .profession(profession)
            .unwrap_or_default(),
        l => l,
    };
    let mut name = json!({"use": "usual", "family": family});
    if !get("Prénom d'exercice").is_empty() {
        name["given"] = json!([get("Prénom d'exercice")]);
    }
    match get("Code civilité d'exercice") {
        "DR" => name["prefix"] = json!(["Dr"]),
        "PR" => name["prefix"] = json!(["Pr"]),
        _ => {}
    }
    let prof_coding = json!({"coding": [{"system": SYSTEM_PROFESSION, "code": profession, "display": prof_label}]});
    let specialty = get("Code savoir-faire");
    let spec_coding = (!specialty.is_empty()).then(|| {
        let label = match get("Libellé savoir-faire") {
            "" => crate::data::nomenclature()
                .specialty(specialty)
                .map(|s| s.1)
                .unwrap_or_default(),
            l => l,
        };
        json!({"coding": [{"system": SYSTEM_SPECIALTY, "code": specialty, "display": label}]})
    });
    let mut qualification = vec![json!({"code": prof_coding})];
    if let Some(s) = &spec_coding {
        qualification.push(json!({"code": s}));
    }
    let practitioner = json!({
        "resourceType": "Practitioner",
        "id": idnps,
        "identifier": identifiers,
        "active": true,
        "name": [name],
        "qualification": qualification
    });
    let mut out = vec![practitioner];
    let finess_raw = get("Numéro FINESS site");
    let finess = if finess_raw.is_empty() {
        None
    } else {
        Some(Finess::parse(finess_raw).map_err(|e| e.to_string())?)
    };
    let mut telecom = Vec::new();
    if !get("Téléphone (coord. structure)").is_empty() {
        telecom.push(json!({"system": "phone", "value": get("Téléphone (coord. structure)")}));
    }
    if !get("Adresse e-mail (coord. structure)").is_empty() {
        telecom.push(json!({"system": "email", "value": get("Adresse e-mail (coord. structure)")}));
    }
    let mut role = json!({
        "resourceType": "PractitionerRole",
        "id": format!("{idnps}-{}-{profession}", finess.as_ref().map_or("0", |f| f.as_str())),
        "active": true,
        "practitioner": {"reference": format!("Practitioner/{idnps}")},
        "code": [prof_coding]
    });
    if let Some(s) = spec_coding {
        role["specialty"] = json!([s]);
    }
    if !telecom.is_empty() {
        role["telecom"] = json!(telecom);
    }
    if let Some(f) = &finess {
        role["organization"] = json!({"reference": format!("Organization/{}", f.idnst())});
        let mut address = json!({"country": "FR"});
        for (col, key) in [
            ("Libellé commune (coord. structure)", "city"),
            ("Code postal (coord. structure)", "postalCode"),
        ] {
            if !get(col).is_empty() {
                address[key] = json!(get(col));
            }
        }
        if !get("Code commune (coord. structure)").is_empty() {
            address["extension"] = json!([{"url": socle_ins::EXT_INSEE_CODE, "valueCoding": {"system": socle_ins::SYSTEM_INSEE_COMMUNE, "code": get("Code commune (coord. structure)")}}]);
        }
        let mut org = json!({
            "resourceType": "Organization",
            "id": f.idnst(),
            "identifier": [
                {"system": SYSTEM_FINESS, "value": f.as_str()},
                {"system": SYSTEM_IDNST, "value": f.idnst()}
            ],
            "active": true,
            "address": [address]
        });
        if !get("Raison sociale site").is_empty() {
            org["name"] = json!(get("Raison sociale site"));
        }
        out.push(org);
    }
    out.push(role);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Type d'identifiant PP|Identifiant PP|Identification nationale PP|Code civilité d'exercice|Nom d'exercice|Prénom d'exercice|Code profession|Libellé profession|Code savoir-faire|Libellé savoir-faire|Numéro FINESS site|Raison sociale site|Code postal (coord. structure)|Code commune (coord. structure)|Libellé commune (coord. structure)|";

    #[test]
    fn lines_become_resources() {
        let h = Header::parse(HEADER).unwrap();
        let rpps = Rpps::from_body(1_000_004_242);
        let f = Finess::build("75", 42).unwrap();
        let line = format!(
            "8|{rpps}|{}|DR|MARTIN|Lucie|10|Médecin|SM54||{f}|Centre de santé X|75015|75115|Paris 15e|",
            rpps.idnps()
        );
        let r = parse_line(&h, &line).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0]["name"][0]["prefix"][0], "Dr");
        assert_eq!(
            r[0]["qualification"][1]["code"]["coding"][0]["display"],
            "Médecine Générale"
        );
        assert_eq!(r[1]["id"], f.idnst());
        assert_eq!(
            r[2]["organization"]["reference"],
            format!("Organization/{}", f.idnst())
        );
        for x in &r {
            crate::validate(x["resourceType"].as_str().unwrap(), x).unwrap();
        }
        // Errors name the problem.
        let bad = line.replace(&format!("|{rpps}|"), "|10000000000|");
        assert!(parse_line(&h, &bad).unwrap_err().contains("RPPS"));
        assert!(parse_line(&h, "8|1|2").unwrap_err().contains("colonnes"));
        let other = line.replace(&rpps.idnps(), &Rpps::from_body(1_000_004_243).idnps());
        assert!(
            parse_line(&h, &other)
                .unwrap_err()
                .contains("ne correspond pas")
        );
        assert!(
            Header::parse("a|b|c")
                .unwrap_err()
                .contains("Identifiant PP")
        );
    }
}
