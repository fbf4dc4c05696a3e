//! `socle-ins`: the INS (identité nationale de santé) — the matricule INS (NIR or NIA) and its key, the
//! five civil-status traits and the rules that compare them, the reference identity registry and the INSi
//! teleservice (*retrieve*, *verify*) on top of it, and reproducible synthetic persons.
//!
//! Free of HTTP: the `socle` binary exposes these as FHIR operations (`$ins-retrieve`, `$ins-verify`).

pub mod data;
pub mod generate;
pub mod nir;
pub mod registry;
pub mod rniv;
pub mod traits;

pub use nir::{Nir, NirError};
pub use registry::{Official, Registry, RegistryError, Retrieved, Verified};
pub use traits::Traits;

/// INS-NIR identifier system.
pub const OID_NIR: &str = "urn:oid:1.2.250.1.213.1.4.8";
/// INS-NIA identifier system.
pub const OID_NIA: &str = "urn:oid:1.2.250.1.213.1.4.9";
/// Test NIR identifier system.
pub const OID_TEST: &str = "urn:oid:1.2.250.1.213.1.4.10";
/// Demo NIR identifier system (synthetic identities).
pub const OID_DEMO: &str = "urn:oid:1.2.250.1.213.1.4.11";
/// Carte Vitale numbers (Socle's own identifier system for the reference registry).
pub const SYSTEM_VITALE: &str = "urn:socle:carte-vitale";
/// FHIR core extension: the patient's birth place (an Address).
pub const EXT_BIRTH_PLACE: &str = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace";
/// FR Core extension: the INSEE code of an address.
pub const EXT_INSEE_CODE: &str =
    "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code";
/// INSEE communes (TRE_R13).
pub const SYSTEM_INSEE_COMMUNE: &str =
    "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM";
/// INSEE countries (TRE_R20 carries ISO codes; births abroad use the INSEE `99xxx` code).
pub const SYSTEM_INSEE_COUNTRY: &str = "https://www.insee.fr/fr/information/2028273";
