//! Resource limits applied to every untrusted XML input (CDA documents and CI-SIS value sets).
//!
//! This module only declares the limits; `xml` enforces the XML-level ones and `header` the
//! per-list one. Each limit, when hit, yields [`crate::XmlError::LimitExceeded`] naming it.

use std::fmt;

/// Limits on the size and shape of an input document.
///
/// The defaults accept every official CI-SIS example with a wide margin while keeping the
/// memory and time spent on a hostile document bounded by a small multiple of `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of the whole input, checked before any parsing (default 20 MiB).
    pub max_bytes: usize,
    /// Maximum element nesting depth, the root element being at depth 1 (default 256).
    pub max_depth: usize,
    /// Maximum number of attributes on one element, namespace declarations included (default 64).
    pub max_attributes: usize,
    /// Maximum length in bytes of one text node (text between two tags, character references
    /// resolved), which bounds the base64 body of a level-1 document (default 20 MiB).
    pub max_text_bytes: usize,
    /// Maximum number of items in any list gathered from the header (authors, identifiers,
    /// template ids, service events, top-level sections, names…) (default 1,000).
    pub max_list_items: usize,
    /// Maximum number of namespace declarations in scope at any element (those of its ancestors and its own)
    /// (default 64): the reader looks a prefix up among them at every element and attribute.
    pub max_namespaces: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            max_depth: 256,
            max_attributes: 64,
            max_text_bytes: 20 * 1024 * 1024,
            max_list_items: 1_000,
            max_namespaces: 64,
        }
    }
}

/// Names one of the [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// [`Limits::max_bytes`]
    MaxBytes,
    /// [`Limits::max_depth`]
    MaxDepth,
    /// [`Limits::max_attributes`]
    MaxAttributes,
    /// [`Limits::max_text_bytes`]
    MaxTextBytes,
    /// [`Limits::max_list_items`]
    MaxListItems,
    /// [`Limits::max_namespaces`]
    MaxNamespaces,
}

impl Limit {
    /// The field name in [`Limits`].
    pub fn name(self) -> &'static str {
        match self {
            Limit::MaxBytes => "max_bytes",
            Limit::MaxDepth => "max_depth",
            Limit::MaxAttributes => "max_attributes",
            Limit::MaxTextBytes => "max_text_bytes",
            Limit::MaxListItems => "max_list_items",
            Limit::MaxNamespaces => "max_namespaces",
        }
    }

    /// What the limit bounds, in French (user-facing).
    fn description_fr(self) -> &'static str {
        match self {
            Limit::MaxBytes => "taille du document en octets",
            Limit::MaxDepth => "profondeur d'imbrication des éléments",
            Limit::MaxAttributes => "nombre d'attributs d'un élément",
            Limit::MaxTextBytes => "taille d'un nœud texte en octets",
            Limit::MaxListItems => "nombre d'éléments répétés dans l'en-tête",
            Limit::MaxNamespaces => "nombre de déclarations d'espace de noms en vigueur",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.description_fr())
    }
}
