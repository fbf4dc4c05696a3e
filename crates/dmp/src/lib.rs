//! Socle DMP (dossier médical partagé): the rules of the shared medical record that do not depend on HTTP.
//!
//! - [`submission`]: IHE MHD ITI-65 submissions — Bundle shape, comprehensive metadata checked against the
//!   CI-SIS value sets ([`codes`]), document bytes (size, SHA-1), the CDA R2 header read safely (`socle-cda`)
//!   and cross-checked with the patient's INS and the submitted type and unique id; the transaction stored.
//! - [`record`]: each patient's record (created at the first feed, objection, closure), the visibility rules
//!   a feed's security labels set, duplicate detection, and the durable queue of feed events, all inside the
//!   feed's transaction.
//!
//! Errors ([`DmpError`]) carry a stable code, an HTTP status and a French message naming the element at fault.

pub mod codes;
mod error;
pub mod record;
pub mod sample;
pub mod submission;

pub use codes::{Element, Terminology};
pub use error::DmpError;
pub use submission::{Options, Submission, Submitter, check_new_version, is_provide_bundle};

/// The extension on a stored `Binary`'s `meta` that names its bytes in the blob store (`sha256`, `size`).
pub const EXT_BLOB: &str = "https://socle.example/fhir/StructureDefinition/blob";

/// The blob a stored `Binary` points to: (hex SHA-256, size).
pub fn blob_of(binary: &serde_json::Value) -> Option<(String, u64)> {
    let ext = binary["meta"]["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == EXT_BLOB)?;
    let sub = ext["extension"].as_array()?;
    let sha = sub
        .iter()
        .find(|e| e["url"] == "sha256")?
        .get("valueString")?
        .as_str()?
        .to_string();
    let size = sub
        .iter()
        .find(|e| e["url"] == "size")?
        .get("valueUnsignedInt")?
        .as_u64()?;
    Some((sha, size))
}
