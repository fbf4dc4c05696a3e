//! Typed errors. Display messages are user-facing and therefore in French; the field's proper
//! nouns (CDA, INS, UTF-8, DTD…) are kept as they are.

use crate::limits::Limit;

/// A rule of the safe XML reader was broken: the input is refused before any meaning is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// A limit of [`crate::Limits`] was hit.
    #[error("limite dépassée : {limit} = {max}")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// Its configured value.
        max: usize,
    },
    /// The input has no byte at all, or only whitespace and comments.
    #[error("aucun élément racine (document vide ?)")]
    NoRootElement,
    /// The input is not UTF-8 (a UTF-16/UTF-32 byte-order mark, or another `encoding` declared).
    #[error("encodage « {0} » non pris en charge (seul UTF-8 est accepté)")]
    UnsupportedEncoding(String),
    /// A byte sequence is not valid UTF-8.
    #[error("UTF-8 invalide à l'octet {position}")]
    InvalidUtf8 {
        /// Byte offset in the input.
        position: usize,
    },
    /// A character that XML 1.0 forbids (control characters, U+FFFE, U+FFFF).
    #[error("caractère interdit en XML (U+{code:04X}) à l'octet {position}")]
    IllegalCharacter {
        /// Byte offset in the input.
        position: usize,
        /// The code point.
        code: u32,
    },
    /// A document type declaration: refused outright, which rules out external entities (XXE)
    /// and entity expansion bombs ("billion laughs").
    #[error("DTD interdite (<!DOCTYPE>)")]
    DoctypeForbidden,
    /// A processing instruction other than the XML declaration, `xml-stylesheet` and `oxygen`.
    #[error("instruction de traitement interdite (<?{0} ?>)")]
    ProcessingInstructionForbidden(String),
    /// An XML declaration that is not at the very start of the input.
    #[error("déclaration XML (<?xml ?>) ailleurs qu'en tête du document")]
    MisplacedDeclaration,
    /// A reference to an entity that is not one of the five predefined ones.
    #[error("référence d'entité non prédéfinie interdite (&{0};)")]
    UndeclaredEntity(String),
    /// A character reference to no character, or to a character XML forbids.
    #[error("référence de caractère invalide (&{0};)")]
    InvalidCharacterReference(String),
    /// An element or attribute prefix that no `xmlns:` declaration binds.
    #[error("préfixe d'espace de noms non déclaré : « {0} »")]
    UndeclaredPrefix(String),
    /// The root element has the expected namespace but another name.
    #[error("élément racine <{found}> au lieu de <{expected}> (espace de noms « {namespace} »)")]
    WrongRootElement {
        /// Expected local name.
        expected: &'static str,
        /// Local name found.
        found: String,
        /// Namespace of the element found (empty if none).
        namespace: String,
    },
    /// The root element is not in the expected namespace.
    #[error(
        "élément racine <{element}> dans l'espace de noms « {found} » au lieu de « {expected} »"
    )]
    WrongNamespace {
        /// Local name of the root element found.
        element: String,
        /// Expected namespace URI.
        expected: &'static str,
        /// Namespace found (`(aucun)` if none).
        found: String,
    },
    /// Non-whitespace text before or after the root element.
    #[error("texte en dehors de l'élément racine")]
    TextOutsideRoot,
    /// A second element after the root element was closed.
    #[error("contenu après la fin de l'élément racine")]
    ContentAfterRoot,
    /// The input ends inside markup or before all elements are closed.
    #[error("XML tronqué : fin des données avant la fermeture des éléments ouverts")]
    Truncated,
    /// Any other well-formedness error (detail from the XML reader, in English).
    #[error("XML mal formé à l'octet {position} : {detail}")]
    Malformed {
        /// Byte offset in the input (approximate: where the reader noticed).
        position: u64,
        /// Reader's description.
        detail: String,
    },
}

/// A CDA document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdaError {
    /// The XML itself was refused.
    #[error("document CDA : {0}")]
    Xml(#[from] XmlError),
    /// A header element required by CDA R2 (and by the DMP) is absent.
    #[error("document CDA : élément obligatoire absent : {0}")]
    MissingElement(&'static str),
    /// A required attribute of a header element is absent (or the element has a `nullFlavor`).
    #[error("document CDA : attribut obligatoire absent : {element}/@{attribute}")]
    MissingAttribute {
        /// Path of the element under `ClinicalDocument`.
        element: &'static str,
        /// Attribute name.
        attribute: &'static str,
    },
    /// A header element that CDA R2 allows once appears more than once: refused rather than
    /// choosing one, so that no two readers of the same bytes can disagree.
    #[error("document CDA : élément unique présent plusieurs fois : {0}")]
    DuplicateElement(&'static str),
    /// `ClinicalDocument/effectiveTime/@value` is not an HL7 TS (`YYYYMMDDHHMMSS+ZZZZ`…).
    #[error("document CDA : date du document (effectiveTime) invalide : « {0} »")]
    InvalidEffectiveTime(String),
    /// `ClinicalDocument/versionNumber/@value` is not a positive integer.
    #[error("document CDA : numéro de version (versionNumber) invalide : « {0} »")]
    InvalidVersionNumber(String),
    /// The level-1 body is not valid base64.
    #[error("document CDA : corps non structuré (nonXMLBody) : base64 invalide ({0})")]
    InvalidBase64(String),
    /// The level-1 body uses a representation other than `B64` or `TXT`.
    #[error(
        "document CDA : corps non structuré (nonXMLBody) : représentation « {0} » non prise en charge"
    )]
    UnsupportedRepresentation(String),
    /// The level-1 body is compressed (`text/@compression`), which is not supported.
    #[error(
        "document CDA : corps non structuré (nonXMLBody) : compression « {0} » non prise en charge"
    )]
    UnsupportedCompression(String),
    /// The level-1 body carries no inline content (e.g. only a `reference`).
    #[error("document CDA : corps non structuré (nonXMLBody) sans contenu intégré")]
    EmptyNonXmlBody,
}

/// A CI-SIS value set (JDV, IHE SVS format) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueSetError {
    /// The XML itself was refused.
    #[error("jeu de valeurs : {0}")]
    Xml(#[from] XmlError),
    /// The file has no `ValueSet` element.
    #[error("jeu de valeurs : élément ValueSet absent")]
    MissingValueSet,
    /// A `Concept` lacks its `code` or `codeSystem` attribute.
    #[error("jeu de valeurs : attribut {0} absent d'un élément Concept")]
    MissingConceptAttribute(&'static str),
}
