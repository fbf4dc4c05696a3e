//! FHIRPath (N1, as used by FHIR R4) evaluated over FHIR JSON (`serde_json::Value`).
//!
//! Owns: the FHIRPath grammar, evaluation and the FHIR type knowledge it needs. Must not touch storage
//! or HTTP. Used by `socle-fhir` to extract search-parameter values.
//!
//! CONTRACT (the rest of Socle relies on exactly this surface):
//! - `Expression::parse(&str) -> Result<Expression, ParseError>`; `Expression` is `Send + Sync + Clone`.
//! - `Expression::evaluate(&self, resource: &serde_json::Value) -> Result<Vec<Item<'_>>, EvalError>`
//!   evaluates with the resource as focus, `%resource`, `%rootResource` and `%context`.
//! - `Item::as_json()` gives the JSON element for items that are nodes of the input;
//!   `Item::fhir_type()` gives its FHIR type name (`"CodeableConcept"`, `"date"`, `"Reference"`, …) when known;
//!   `Item::to_string_value()` gives the string form of primitives.
//! - `resolve()` does not fetch: on a Reference it yields an item whose `fhir_type()` is the reference's
//!   target type (from `Reference.reference` "Type/id" or absolute URL), so `where(resolve() is Patient)` works.
//!
//! Additions: [`Expression::evaluate_with`] takes extra `%variables`; items carry System values
//! (`Decimal`, `Date`, `DateTime`, `Time`, `Quantity`) produced by the expression itself.
//! Type knowledge (element types, choice elements, backbone elements) comes from a compact table generated
//! from the R4 StructureDefinitions by `scripts/gen-fhirpath-model.py` (`data/fhir-r4-model.txt`).

mod eval;
mod model;
mod parser;
mod quantity;
mod temporal;

use serde_json::Value as JsonValue;
use std::collections::HashMap;
use std::sync::Arc;

pub use quantity::Quantity;
pub use rust_decimal::Decimal;
pub use temporal::{TKind as TemporalKind, Temporal};

/// Read-only access to the embedded FHIR R4 element type table.
pub mod fhir_model {
    use crate::model::{Kind, MODEL};

    /// One element of a FHIR type.
    #[derive(Debug, Clone, Copy)]
    pub struct ElementDef {
        /// `max` is `*` (or > 1): JSON arrays.
        pub repeats: bool,
        /// A choice element (`value[x]`): the JSON key is the name plus the capitalized type.
        pub choice: bool,
        /// Type codes; backbone elements use the path as type (`Patient.contact`).
        pub types: &'static [&'static str],
    }

    /// Looks an element up on a type (or its base types).
    pub fn element(type_name: &str, element: &str) -> Option<ElementDef> {
        let model: &'static crate::model::Model = &MODEL;
        model.element(type_name, element).map(|e| ElementDef {
            repeats: e.repeats,
            choice: e.choice,
            types: &e.types,
        })
    }

    /// Is this a FHIR primitive type (`string`, `date`, `positiveInt`, …)?
    pub fn is_primitive(type_name: &str) -> bool {
        MODEL
            .get(type_name)
            .is_some_and(|t| t.kind == Kind::Primitive)
    }

    /// System type of a FHIR primitive: `Boolean`, `Integer`, `Decimal`, `String`, `Date`, `DateTime`, `Time`.
    pub fn primitive_system_type(type_name: &str) -> Option<&'static str> {
        MODEL.system_type(type_name)
    }

    /// Is this a (possibly abstract) resource type?
    pub fn is_resource_type(name: &str) -> bool {
        MODEL.is_resource_type(name)
    }
}

/// A parse failure, with the character offset where it happened.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("FHIRPath syntax error at {position}: {message}")]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

/// An evaluation failure (type errors, singleton violations).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("FHIRPath evaluation error: {0}")]
pub struct EvalError(pub String);

/// A compiled FHIRPath expression (cheap to clone: the tree is shared).
#[derive(Debug, Clone)]
pub struct Expression {
    source: Arc<str>,
    ast: Arc<parser::Expr>,
}

/// Extra `%name` variables for [`Expression::evaluate_with`].
pub type Variables<'a> = HashMap<String, Vec<Item<'a>>>;

impl Expression {
    pub fn parse(source: &str) -> Result<Self, ParseError> {
        let ast = parser::parse(source)?;
        Ok(Expression {
            source: Arc::from(source),
            ast: Arc::new(ast),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn evaluate<'a>(&self, resource: &'a JsonValue) -> Result<Vec<Item<'a>>, EvalError> {
        self.run(resource, None)
    }

    /// Evaluates with additional `%variables` (their names without `%`).
    pub fn evaluate_with<'a>(
        &self,
        resource: &'a JsonValue,
        variables: &Variables<'a>,
    ) -> Result<Vec<Item<'a>>, EvalError> {
        self.run(resource, Some(variables))
    }

    fn run<'a>(
        &self,
        resource: &'a JsonValue,
        vars: Option<&Variables<'a>>,
    ) -> Result<Vec<Item<'a>>, EvalError> {
        let fhir_type = resource
            .get("resourceType")
            .and_then(JsonValue::as_str)
            .and_then(|t| model::MODEL.intern(t));
        let root = Item::Node {
            json: resource,
            fhir_type,
            ext: None,
        };
        let env = eval::Env {
            root: root.clone(),
            vars,
            defined: Default::default(),
            steps: Default::default(),
            lookups: Default::default(),
        };
        let ctx = [root];
        env.eval(
            &self.ast,
            &ctx,
            eval::Frame {
                index: None,
                total: None,
            },
        )
    }
}

/// One item of a FHIRPath collection.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    /// A node of the input JSON. `ext` is the `_field` sibling of a primitive (id/extension).
    Node {
        json: &'a JsonValue,
        fhir_type: Option<&'static str>,
        ext: Option<&'a JsonValue>,
    },
    Boolean(bool),
    Integer(i64),
    Decimal(Decimal),
    String(String),
    Date(Temporal),
    DateTime(Temporal),
    Time(Temporal),
    Quantity(Quantity),
    /// Result of `resolve()` on a reference that is not in the input: only its type is known.
    Resolved {
        resource_type: &'static str,
        reference: &'a JsonValue,
    },
    /// Result of `type()`.
    TypeInfo {
        namespace: &'static str,
        name: String,
    },
}

impl<'a> Item<'a> {
    /// The JSON node for items that are nodes of the input (`None` for computed values and for
    /// primitives that only have an extension).
    pub fn as_json(&self) -> Option<&'a JsonValue> {
        match self {
            Item::Node {
                json: JsonValue::Null,
                ..
            } => None,
            Item::Node { json, .. } => Some(json),
            _ => None,
        }
    }

    /// The FHIR type name of the node (backbone elements report `BackboneElement`/`Element`), or the
    /// target resource type of a resolved reference.
    pub fn fhir_type(&self) -> Option<&str> {
        match self {
            Item::Node { fhir_type, .. } => fhir_type.map(|t| model::MODEL.public_name(t)),
            Item::Resolved { resource_type, .. } => Some(resource_type),
            _ => None,
        }
    }

    /// The `_field` extension object of a primitive node, if any.
    pub fn primitive_extension(&self) -> Option<&'a JsonValue> {
        match self {
            Item::Node { ext, .. } => *ext,
            _ => None,
        }
    }

    /// String form of primitives (FHIR text form for dates and times, `1 'mg'` for quantities).
    pub fn to_string_value(&self) -> Option<String> {
        match self {
            Item::Node {
                json: JsonValue::String(s),
                ..
            } => Some(s.clone()),
            Item::Node {
                json: JsonValue::Number(n),
                ..
            } => Some(n.to_string()),
            Item::Node {
                json: JsonValue::Bool(b),
                ..
            } => Some(b.to_string()),
            Item::String(s) => Some(s.clone()),
            Item::Integer(i) => Some(i.to_string()),
            Item::Boolean(b) => Some(b.to_string()),
            Item::Decimal(d) => Some(d.to_string()),
            Item::Date(t) | Item::DateTime(t) | Item::Time(t) => Some(t.to_text()),
            Item::Quantity(q) => Some(q.to_text()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strs(expr: &str, r: &JsonValue) -> Vec<String> {
        let e = Expression::parse(expr).expect("parse");
        e.evaluate(r)
            .expect("eval")
            .iter()
            .filter_map(Item::to_string_value)
            .collect()
    }

    #[test]
    fn send_sync_clone() {
        fn assert<T: Send + Sync + Clone + std::fmt::Debug>() {}
        assert::<Expression>();
    }

    #[test]
    fn basics() {
        let p = json!({"resourceType": "Patient", "birthDate": "1974-12-25",
            "_birthDate": {"extension": [{"url": "http://x", "valueString": "a"}]},
            "name": [{"family": "Doe", "given": ["J"]}],
            "generalPractitioner": [{"reference": "Practitioner/1"}, {"reference": "http://x/fhir/Organization/2/_history/3"}]});
        assert_eq!(strs("Patient.name.family", &p), ["Doe"]);
        assert_eq!(strs("Observation.code", &p), Vec::<String>::new());
        assert_eq!(
            strs("Resource.id | DomainResource.name.family", &p),
            ["Doe"]
        );
        assert_eq!(strs("birthDate.extension('http://x').value", &p), ["a"]);
        let e = Expression::parse("Patient.birthDate").unwrap();
        assert_eq!(e.evaluate(&p).unwrap()[0].fhir_type(), Some("date"));
        let e = Expression::parse("Patient.generalPractitioner.where(resolve() is Organization)")
            .unwrap();
        assert_eq!(e.evaluate(&p).unwrap().len(), 1);
        let e = Expression::parse("Patient.generalPractitioner.resolve()").unwrap();
        let r = e.evaluate(&p).unwrap();
        assert_eq!(
            r.iter().map(|i| i.fhir_type().unwrap()).collect::<Vec<_>>(),
            ["Practitioner", "Organization"]
        );
        let o: JsonValue = serde_json::from_str(
            r#"{"resourceType": "Observation", "valueQuantity": {"value": 1.50, "unit": "mg"}}"#,
        )
        .unwrap();
        let e = Expression::parse("Observation.value").unwrap();
        assert_eq!(e.evaluate(&o).unwrap()[0].fhir_type(), Some("Quantity"));
        assert_eq!(strs("(Observation.value as Quantity).value", &o), ["1.50"]);
        assert_eq!(
            strs("Observation.value.ofType(string)", &o),
            Vec::<String>::new()
        );
    }

    #[test]
    fn parse_errors_have_positions() {
        let e = Expression::parse("name.where(").unwrap_err();
        assert_eq!(e.position, 11);
        assert!(Expression::parse("name.nosuchfunction()").is_err());
        let deep = "(".repeat(500) + "1" + &")".repeat(500);
        assert!(Expression::parse(&deep).is_err());
        let long = "a".to_string() + &".a".repeat(1000);
        assert!(Expression::parse(&long).is_err());
    }
}
