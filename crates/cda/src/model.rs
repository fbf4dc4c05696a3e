//! The CDA R2 header as the DMP reads it: plain data, no parsing logic.

use serde::{Deserialize, Serialize};

use crate::time::{HlTime, Timestamp};

/// OID of the IDNPS identifier of health professionals (RPPS/ADELI based national id).
pub const OID_IDNPS: &str = "1.2.250.1.71.4.2.1";

/// An HL7 instance identifier (`II`): `root` (an OID or UUID) and optional `extension`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceId {
    pub root: String,
    pub extension: Option<String>,
}

impl InstanceId {
    /// Builds an identifier.
    pub fn new(root: impl Into<String>, extension: Option<&str>) -> Self {
        Self {
            root: root.into(),
            extension: extension.map(str::to_string),
        }
    }

    /// XDS form used in document metadata (`uniqueId`, `setId`): `root^extension`, or `root`.
    pub fn to_xds(&self) -> String {
        match &self.extension {
            Some(ext) => format!("{}^{}", self.root, ext),
            None => self.root.clone(),
        }
    }

    /// Reads the XDS form back (`root^extension` or `root`).
    pub fn from_xds(s: &str) -> Self {
        match s.split_once('^') {
            Some((root, ext)) if !ext.is_empty() => Self::new(root, Some(ext)),
            Some((root, _)) => Self::new(root, None),
            None => Self::new(s, None),
        }
    }
}

/// A coded value (`CD`/`CE`/`CS`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Coded {
    pub code: String,
    pub code_system: Option<String>,
    pub display_name: Option<String>,
}

/// The kinds of INS (identifiant national de santé) recognised by their OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InsKind {
    /// INS-NIR, `1.2.250.1.213.1.4.8`.
    Nir,
    /// INS-NIA, `1.2.250.1.213.1.4.9`.
    Nia,
    /// Test INS, `1.2.250.1.213.1.4.10`.
    Test,
    /// Demonstration INS, `1.2.250.1.213.1.4.11`.
    Demo,
}

impl InsKind {
    /// The kind whose OID this is.
    pub fn from_oid(oid: &str) -> Option<Self> {
        match oid {
            "1.2.250.1.213.1.4.8" => Some(Self::Nir),
            "1.2.250.1.213.1.4.9" => Some(Self::Nia),
            "1.2.250.1.213.1.4.10" => Some(Self::Test),
            "1.2.250.1.213.1.4.11" => Some(Self::Demo),
            _ => None,
        }
    }

    /// The OID of this kind.
    pub fn oid(self) -> &'static str {
        match self {
            Self::Nir => "1.2.250.1.213.1.4.8",
            Self::Nia => "1.2.250.1.213.1.4.9",
            Self::Test => "1.2.250.1.213.1.4.10",
            Self::Demo => "1.2.250.1.213.1.4.11",
        }
    }
}

/// A patient identifier that is an INS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ins<'a> {
    pub kind: InsKind,
    /// The matricule (the identifier's `extension`).
    pub value: &'a str,
    /// The OID (the identifier's `root`).
    pub oid: &'a str,
}

/// Kind of a name part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NamePartKind {
    Family,
    Given,
    Prefix,
    Suffix,
}

/// One part of a person name, e.g. `<family qualifier="BR">DUPONT</family>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamePart {
    pub kind: NamePartKind,
    /// Text, trimmed.
    pub value: String,
    /// `qualifier` attribute (`BR` birth name, `SP` used/spouse name, `CL` called-by…), verbatim.
    pub qualifier: Option<String>,
}

/// A person name (`PN`), its parts in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonName {
    /// `use` attribute, if any.
    pub use_code: Option<String>,
    pub parts: Vec<NamePart>,
    /// Text directly inside `<name>` (unstructured name), trimmed, if any.
    pub text: Option<String>,
}

impl PersonName {
    /// Family names, in order.
    pub fn family(&self) -> impl Iterator<Item = &NamePart> {
        self.parts.iter().filter(|p| p.kind == NamePartKind::Family)
    }

    /// Given names, in order.
    pub fn given(&self) -> impl Iterator<Item = &NamePart> {
        self.parts.iter().filter(|p| p.kind == NamePartKind::Given)
    }

    /// First part of `kind` with this qualifier (e.g. the birth family name: `Family`, `"BR"`).
    pub fn part_with_qualifier(&self, kind: NamePartKind, qualifier: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p.kind == kind && p.qualifier.as_deref() == Some(qualifier))
            .map(|p| p.value.as_str())
    }
}

/// Birth place (`patient/birthplace/place`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BirthPlace {
    pub name: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    /// `addr/county`: the INSEE code of the birth commune in French documents.
    pub county: Option<String>,
    pub country: Option<String>,
}

/// The patient (`recordTarget/patientRole`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    /// All `patientRole/id`, in order (INS, local IPP…).
    pub ids: Vec<InstanceId>,
    pub names: Vec<PersonName>,
    pub administrative_gender: Option<Coded>,
    pub birth_time: Option<HlTime>,
    pub birth_place: Option<BirthPlace>,
}

impl Patient {
    /// The first identifier whose root is an INS OID and that has an extension.
    pub fn ins(&self) -> Option<Ins<'_>> {
        self.all_ins().next()
    }

    /// Every identifier whose root is an INS OID and that has an extension.
    pub fn all_ins(&self) -> impl Iterator<Item = Ins<'_>> {
        self.ids.iter().filter_map(|id| {
            let kind = InsKind::from_oid(&id.root)?;
            let value = id.extension.as_deref()?;
            Some(Ins {
                kind,
                value,
                oid: &id.root,
            })
        })
    }
}

/// An organization (`representedOrganization`, `representedCustodianOrganization`…).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    pub ids: Vec<InstanceId>,
    pub name: Option<String>,
}

/// A person or device acting in a role (`assignedAuthor`, `assignedEntity`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub ids: Vec<InstanceId>,
    /// Profession / specialty (`code`).
    pub code: Option<Coded>,
    /// `assignedPerson/name` (several are allowed, usually one).
    pub names: Vec<PersonName>,
    pub organization: Option<Organization>,
}

impl Actor {
    /// The IDNPS identifier (root `1.2.250.1.71.4.2.1`), if any.
    pub fn idnps(&self) -> Option<&str> {
        self.ids
            .iter()
            .find(|id| id.root == OID_IDNPS)
            .and_then(|id| id.extension.as_deref())
    }
}

/// An `author`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    pub time: Option<HlTime>,
    pub assigned: Actor,
}

/// The `legalAuthenticator`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalAuthenticator {
    pub time: Option<HlTime>,
    pub signature_code: Option<String>,
    pub assigned: Actor,
}

/// An interval of time (`IVL_TS`), or a single `value`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub value: Option<HlTime>,
    pub low: Option<HlTime>,
    pub high: Option<HlTime>,
}

/// A `documentationOf/serviceEvent`: the act the document documents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub code: Option<Coded>,
    pub effective_time: Interval,
    /// `performer/assignedEntity`, in order.
    pub performers: Vec<Actor>,
}

/// The `componentOf/encompassingEncounter`: the care context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encounter {
    pub ids: Vec<InstanceId>,
    pub code: Option<Coded>,
    pub effective_time: Interval,
    /// `location/healthCareFacility/id`.
    pub facility_ids: Vec<InstanceId>,
    /// `location/healthCareFacility/code`: the facility type (CI-SIS value set J02).
    pub facility_code: Option<Coded>,
    /// `location/healthCareFacility/location/name`.
    pub location_name: Option<String>,
}

/// Relation of this document to a previous one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelationType {
    /// `RPLC`: this document replaces the parent.
    Replace,
    /// `APND`: this document is an addendum to the parent.
    Append,
    /// `XFRM`: this document is a transformation of the parent.
    Transform,
    /// Any other `typeCode`, verbatim (empty if absent).
    Other(String),
}

/// A `relatedDocument`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedDocument {
    pub type_code: RelationType,
    /// `parentDocument/id` (the parent's unique id).
    pub parent_ids: Vec<InstanceId>,
}

/// What the body is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Level 1 (N1): `component/nonXMLBody`, typically a base64 PDF.
    NonXml {
        /// `text/@mediaType` (CDA default: `text/plain`).
        media_type: Option<String>,
        /// `text/@representation` (`B64` or `TXT`; CDA default `TXT`).
        representation: Option<String>,
        /// Length of the inline content, whitespace excluded.
        bytes_base64_len: usize,
        /// `text/@compression` (e.g. `DF`), when the content is compressed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compression: Option<String>,
    },
    /// Level 3 (N3) or level 2: `component/structuredBody`.
    Structured {
        /// Number of top-level sections.
        section_count: usize,
        /// Codes of the top-level sections that have one, in order.
        section_codes: Vec<Coded>,
    },
}

/// The header of a CDA R2 document and the kind of its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdaDocument {
    /// `realmCode/@code` (first), e.g. `FR`.
    pub realm_code: Option<String>,
    /// `typeId` (`2.16.840.1.113883.1.3` / `POCD_HD000040` for CDA R2).
    pub type_id: Option<InstanceId>,
    /// `templateId`s, in order.
    pub template_ids: Vec<InstanceId>,
    /// `id`: the document's unique id.
    pub id: InstanceId,
    /// `code`: the document type (LOINC or CI-SIS, value set J07).
    pub code: Coded,
    pub title: Option<String>,
    /// `effectiveTime`: creation date. Always valid: `parsed` is `Some`.
    pub effective_time: HlTime,
    pub confidentiality_code: Coded,
    pub language_code: Option<String>,
    /// `setId`: common to all versions of the document.
    pub set_id: Option<InstanceId>,
    pub version_number: Option<u32>,
    pub patient: Patient,
    pub authors: Vec<Author>,
    /// `custodian/assignedCustodian/representedCustodianOrganization`.
    pub custodian: Organization,
    pub legal_authenticator: Option<LegalAuthenticator>,
    pub service_events: Vec<ServiceEvent>,
    pub encompassing_encounter: Option<Encounter>,
    /// `inFulfillmentOf/order/id`, in order.
    pub in_fulfillment_of: Vec<InstanceId>,
    pub related_documents: Vec<RelatedDocument>,
    pub body: Body,
}

impl CdaDocument {
    /// The patient's INS (see [`Patient::ins`]).
    pub fn ins(&self) -> Option<Ins<'_>> {
        self.patient.ins()
    }

    /// The parsed creation date.
    pub fn creation_time(&self) -> Option<&Timestamp> {
        self.effective_time.parsed.as_ref()
    }

    /// Whether the body is level 1 (non-XML).
    pub fn is_n1(&self) -> bool {
        matches!(self.body, Body::NonXml { .. })
    }
}
