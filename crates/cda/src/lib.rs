//! Socle CDA: a safe reader for the header of HL7 CDA R2 documents submitted to the DMP.
//!
//! Professionals submit CDA R2 documents to the DMP (the French shared medical record) through
//! IHE MHD (ITI-65). The DMP keeps the exact bytes, reads the header to index the document and
//! checks it against the submitted metadata. This crate is that reading, and nothing else: no
//! HTTP, no storage. It never rewrites the input; [`hashes`] digests the bytes as received.
//!
//! # What is read
//!
//! [`parse`] returns a [`CdaDocument`]: the document `id`, `setId`, `versionNumber`, type `code`
//! (LOINC / CI-SIS, value set J07), `title`, `effectiveTime` (raw and parsed, see [`HlTime`]),
//! `confidentialityCode`, `languageCode`, `realmCode`, `templateId`s; the patient
//! (`recordTarget/patientRole`: every `id`, with [`Patient::ins`] picking the INS by its OID,
//! names with their parts and qualifiers, gender, birth time, birth place); the `author`s
//! (time, identifiers such as the IDNPS, profession code, name, organization); the `custodian`;
//! the `legalAuthenticator`; every `documentationOf/serviceEvent`; the
//! `componentOf/encompassingEncounter` (with the facility type code, J02); `inFulfillmentOf`;
//! every `relatedDocument` (replacement `RPLC`, addendum `APND`, transformation `XFRM`); and the
//! kind of body: level 1 ([`Body::NonXml`], e.g. a base64 PDF) or structured ([`Body::Structured`]).
//! [`extract_n1_body`] decodes a level-1 body. [`cross_check`] compares the header with the
//! submission's metadata. [`value_set`] loads CI-SIS value sets (JDV) to check codes.
//!
//! # Safety rules (untrusted input)
//!
//! - The size is checked before anything else ([`Limits::max_bytes`]).
//! - UTF-8 only, with or without a byte-order mark; a declared `encoding` other than UTF-8, a
//!   UTF-16/32 byte-order mark, invalid UTF-8 and characters XML 1.0 excludes are refused.
//!   (All 94 official CI-SIS examples are UTF-8.)
//! - Any `<!DOCTYPE` is refused: no DTD means no external entity (XXE) and no entity expansion
//!   ("billion laughs"). References other than the five predefined entities and character
//!   references (`&#233;`) are refused.
//! - Processing instructions other than the XML declaration, `xml-stylesheet` and `oxygen`
//!   (editor schema associations present in every official example) are refused.
//! - Nesting depth, attributes per element, text node length and header list lengths are
//!   capped ([`Limits`]); a limit hit is reported by name ([`XmlError::LimitExceeded`]).
//! - Namespaces are resolved properly (default namespace or any prefix). The root must be
//!   `ClinicalDocument` in `urn:hl7-org:v3`; elements of other namespaces (`sdtc:`, `lab:`…)
//!   are skipped with their subtree. Undeclared prefixes are refused.
//! - Elements that CDA allows once in the header (`id`, `code`, `effectiveTime`, `setId`,
//!   `recordTarget`…) are refused when repeated, instead of silently picking one: two readers
//!   of the same bytes must not disagree on whose document it is.
//! - A `B64` level-1 body is checked as it streams past: base64 alphabet, padding only at the end,
//!   a possible length, no stray bits in the last symbol — what [`extract_n1_body`] decodes.
//! - No input makes the parser panic (property tests and a fuzz target check it); memory stays
//!   bounded by the header fields kept, the body being streamed past.
//!
//! Errors are typed ([`CdaError`], [`XmlError`], [`ValueSetError`]); their messages are in French
//! because they reach the submitting professional.

mod b64;
mod cross_check;
mod error;
mod hash;
mod header;
mod limits;
mod model;
mod time;
pub mod value_set;
mod xml;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

pub use cross_check::{CodeRef, Expected, Mismatch, MismatchField, cross_check};
pub use error::{CdaError, ValueSetError, XmlError};
pub use hash::{Hashes, hashes};
pub use header::HL7_V3_NAMESPACE;
pub use limits::{Limit, Limits};
pub use model::{
    Actor, Author, BirthPlace, Body, CdaDocument, Coded, Encounter, Ins, InsKind, InstanceId,
    Interval, LegalAuthenticator, NamePart, NamePartKind, OID_IDNPS, Organization, Patient,
    PersonName, RelatedDocument, RelationType, ServiceEvent,
};
pub use time::{HlTime, Precision, Timestamp};

/// Parses the header of a CDA R2 document and identifies its body kind.
///
/// The whole input is read (every safety rule applies to the body too), but only the header is
/// kept. Fails on any rule of the crate-level documentation, or when a header element CDA R2
/// requires is missing (`id`, `code`, `effectiveTime`, `confidentialityCode`,
/// `recordTarget/patientRole`, `author`, `custodian`, `component`).
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<CdaDocument, CdaError> {
    Ok(header::parse(bytes, limits, false)?.doc)
}

/// Decodes the level-1 body (`component/nonXMLBody/text`) of a CDA document.
///
/// Returns `Ok(None)` for a structured body, else the media type (CDA default `text/plain`) and
/// the content: base64-decoded for `representation="B64"` (whitespace anywhere is tolerated,
/// padding optional), the text itself otherwise. The document must pass [`parse`] first.
pub fn extract_n1_body(
    bytes: &[u8],
    limits: &Limits,
) -> Result<Option<(String, Vec<u8>)>, CdaError> {
    let parsed = header::parse(bytes, limits, true)?;
    let Body::NonXml {
        media_type,
        representation,
        ..
    } = parsed.doc.body
    else {
        return Ok(None);
    };
    let Some(content) = parsed.non_xml_text else {
        return Err(CdaError::EmptyNonXmlBody);
    };
    if let Some(compression) = content.compression {
        return Err(CdaError::UnsupportedCompression(compression));
    }
    let media_type = media_type.unwrap_or_else(|| "text/plain".to_string());
    let data = match representation.as_deref().unwrap_or("TXT") {
        "B64" => {
            let compact: Vec<u8> = content
                .text
                .bytes()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            if compact.is_empty() {
                return Err(CdaError::EmptyNonXmlBody);
            }
            BASE64
                .decode(&compact)
                .map_err(|e| CdaError::InvalidBase64(e.to_string()))?
        }
        "TXT" => {
            if content.text.trim().is_empty() {
                return Err(CdaError::EmptyNonXmlBody);
            }
            content.text.into_bytes()
        }
        other => return Err(CdaError::UnsupportedRepresentation(other.to_string())),
    };
    Ok(Some((media_type, data)))
}

/// Standard alphabet, padding optional (encoders differ), no trailing garbage bits.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
