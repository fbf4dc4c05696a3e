//! FHIR R4 core shared by every Socle service: what a resource is (type, id, meta), how errors are told
//! (`OperationOutcome`), which search parameters exist (from the official R4 definitions) and how the values they
//! index are extracted from a resource.
//!
//! Owns: FHIR representation rules. Must not touch storage, HTTP or any domain rule.

pub mod elements;
pub mod index;
pub mod outcome;
pub mod resource;
pub mod search_params;
pub mod valueset;

pub use outcome::{IssueSeverity, IssueType, OperationOutcome};
pub use resource::{ResourceError, is_valid_id};
