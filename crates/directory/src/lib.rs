//! `socle-directory`: the *Annuaire Santé* — professionals (`Practitioner`), their practice situations
//! (`PractitionerRole`) and structures (`Organization`) as the ANS *Annuaire* FHIR guide lays them out, with
//! their national identifiers checked (RPPS, FINESS, IDNPS, IDNST), the national nomenclatures of professions
//! (TRE_G15) and specialties (TRE_R38), the import of the public pipe-separated extractions, and reproducible
//! synthetic professionals and structures.
//!
//! Free of HTTP; the resources live in the FHIR store and are searched with the standard and ANS search
//! parameters (`mailbox-mss`, `mailbox-mss-type`).

pub mod data;
pub mod extraction;
pub mod generate;
pub mod ids;

use serde_json::Value;

pub use ids::{Finess, IdError, Rpps};

/// TRE_G15 professions.
pub const SYSTEM_PROFESSION: &str =
    "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante";
/// TRE_R38 ordinal specialties.
pub const SYSTEM_SPECIALTY: &str =
    "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale";
/// TRE_R66 categories of establishment (FINESS).
pub const SYSTEM_CATEGORY: &str = "https://mos.esante.gouv.fr/NOS/TRE_R66-CategorieEtablissement/FHIR/TRE-R66-CategorieEtablissement";
/// ANS extension describing an MSSanté mailbox (its `type`: `PER` personal, `ORG` organisational, `APP`).
pub const EXT_MAILBOX_MSS: &str = "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-ext-mailbox-mss-metadata";

/// The write-time check of the directory resources (installed with `socle_store::set_validators`): every
/// RPPS, FINESS, IDNPS and IDNST identifier of a `Practitioner`, `PractitionerRole` or `Organization` must be
/// well formed with a correct check digit.
pub fn validate(rtype: &str, resource: &Value) -> Result<(), String> {
    if !matches!(rtype, "Practitioner" | "PractitionerRole" | "Organization") {
        return Ok(());
    }
    for id in resource["identifier"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let value = id["value"].as_str().unwrap_or_default();
        let res = match id["system"].as_str().unwrap_or_default() {
            ids::SYSTEM_RPPS => Rpps::parse(value).map(|_| ()),
            ids::SYSTEM_FINESS => Finess::parse(value).map(|_| ()),
            ids::SYSTEM_IDNPS => ids::check_idnps(value),
            ids::SYSTEM_IDNST => ids::check_idnst(value),
            _ => Ok(()),
        };
        res.map_err(|e| e.to_string())?;
    }
    Ok(())
}
