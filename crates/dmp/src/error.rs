//! Why a submission or an operation on the DMP is refused: one variant per rule, each with a stable code
//! (audited, tested, documented for integrators), the HTTP status it maps to and a French message that names
//! the faulty element.

use socle_cda::{CdaError, Mismatch};

#[derive(Debug, thiserror::Error)]
pub enum DmpError {
    /// The Bundle is not an ITI-65 Provide Document Bundle (wrong type, entries of other kinds…).
    #[error("lot de soumission (ITI-65) invalide : {0}")]
    Structure(String),
    /// A metadata element the DMP requires (MHD comprehensive metadata) is absent.
    #[error("métadonnée obligatoire absente : {field}")]
    Missing { field: String },
    /// A metadata element is present but malformed.
    #[error("métadonnée invalide : {field} — {reason}")]
    Invalid { field: String, reason: String },
    /// A code outside the CI-SIS value set of its element.
    #[error(
        "code inconnu pour {field} : {system}|{code} n'appartient pas au jeu de valeurs {value_set}"
    )]
    UnknownCode {
        field: String,
        system: String,
        code: String,
        value_set: String,
    },
    /// The attachment has no hash (`content.attachment.hash`, SHA-1 in base64).
    #[error(
        "empreinte absente : {field} (SHA-1 du document en base64, obligatoire pour vérifier son intégrité)"
    )]
    HashMissing { field: String },
    /// The bytes received do not have the announced hash.
    #[error(
        "empreinte incorrecte pour {field} : annoncée {submitted}, calculée {computed} sur les octets reçus"
    )]
    HashMismatch {
        field: String,
        submitted: String,
        computed: String,
    },
    /// The bytes received do not have the announced size.
    #[error("taille incorrecte pour {field} : annoncée {submitted} octets, reçue {received}")]
    SizeMismatch {
        field: String,
        submitted: u64,
        received: u64,
    },
    /// The document is larger than the DMP accepts.
    #[error("document trop volumineux : {size} octets (maximum {max})")]
    TooLarge { size: u64, max: u64 },
    /// The document is not a CDA R2 document the DMP can read (malformed XML, DTD, wrong root…).
    #[error("document CDA illisible ({field}) : {source}")]
    Cda {
        field: String,
        #[source]
        source: CdaError,
    },
    /// The CDA header contradicts the submitted metadata (another patient, another type…).
    #[error("le document ne correspond pas à sa soumission ({field}) : {}", list(.mismatches))]
    CdaMismatch {
        field: String,
        mismatches: Vec<Mismatch>,
    },
    /// The patient of the submission is unknown here.
    #[error("patient inconnu : {0}")]
    UnknownPatient(String),
    /// The patient's identity is not qualified: no INS may be used for sharing.
    #[error(
        "identité du patient non qualifiée (statut {status}) : le DMP n'est alimenté que pour une identité qualifiée (INS vérifié par le téléservice INSi et pièce d'identité contrôlée)"
    )]
    IdentityNotQualified { status: String },
    /// A document or a submission set with the same unique id is already in the DMP.
    #[error("soumission en double : {what} {unique_id} est déjà dans le DMP")]
    Duplicate { what: String, unique_id: String },
    /// A replacement names a document that cannot be replaced.
    #[error("remplacement impossible : {0}")]
    Replacement(String),
    /// The patient closed their record, or objected to it.
    #[error("DMP {state} : {reason}")]
    Record { state: String, reason: String },
    /// A document operation (mask, visibility, archive…) that does not apply.
    #[error("{0}")]
    Operation(String),
    /// Storage failure (database or document store).
    #[error("stockage : {0}")]
    Storage(String),
}

fn list(m: &[Mismatch]) -> String {
    m.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ; ")
}

impl DmpError {
    /// The stable code of the rule (audited; integrators test against it).
    pub fn code(&self) -> &'static str {
        match self {
            DmpError::Structure(_) => "mhd-structure",
            DmpError::Missing { .. } => "metadata-missing",
            DmpError::Invalid { .. } => "metadata-invalid",
            DmpError::UnknownCode { .. } => "unknown-code",
            DmpError::HashMissing { .. } => "hash-missing",
            DmpError::HashMismatch { .. } => "hash-mismatch",
            DmpError::SizeMismatch { .. } => "size-mismatch",
            DmpError::TooLarge { .. } => "too-large",
            DmpError::Cda { .. } => "cda-invalid",
            DmpError::CdaMismatch { .. } => "cda-mismatch",
            DmpError::UnknownPatient(_) => "unknown-patient",
            DmpError::IdentityNotQualified { .. } => "identity-not-qualified",
            DmpError::Duplicate { .. } => "duplicate",
            DmpError::Replacement(_) => "replacement",
            DmpError::Record { .. } => "record-state",
            DmpError::Operation(_) => "operation",
            DmpError::Storage(_) => "storage",
        }
    }

    /// The HTTP status: 400 for a malformed request, 413 for an oversized document, 409 for a conflict with
    /// what is stored, 422 for a well-formed submission that breaks a rule.
    pub fn status(&self) -> u16 {
        match self {
            DmpError::Structure(_) => 400,
            DmpError::TooLarge { .. } => 413,
            DmpError::Duplicate { .. } | DmpError::Record { .. } => 409,
            DmpError::UnknownPatient(_) => 404,
            DmpError::Storage(_) => 500,
            _ => 422,
        }
    }

    /// The FHIRPath-like location of the faulty element, when there is one (OperationOutcome `expression`).
    pub fn field(&self) -> Option<&str> {
        match self {
            DmpError::Missing { field }
            | DmpError::Invalid { field, .. }
            | DmpError::UnknownCode { field, .. }
            | DmpError::HashMissing { field }
            | DmpError::HashMismatch { field, .. }
            | DmpError::SizeMismatch { field, .. }
            | DmpError::Cda { field, .. }
            | DmpError::CdaMismatch { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<socle_store::StoreError> for DmpError {
    fn from(e: socle_store::StoreError) -> Self {
        DmpError::Storage(e.to_string())
    }
}
