//! The registry of R4 search parameters, built from the official definitions (generated extract in `data/`).
//!
//! Owns: which search parameters exist for each resource type, their type, their compiled FHIRPath expression
//! (narrowed to the branches that concern that type), their targets and composite components, the list of
//! concrete resource types and the Patient compartment. Must not evaluate anything: see [`crate::index`].
//!
//! The data comes from `scripts/gen-fhir-defs.py` (run on the `hl7.fhir.r4.examples@4.0.1` package) and is
//! embedded with `include_str!`; it is parsed and compiled once, on first use.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;
use socle_fhirpath::Expression;

static SEARCH_PARAMETERS_JSON: &str = include_str!("../data/search-parameters.json");
/// French national search parameters (ANS implementation guides), written from their published definitions:
/// `mailbox-mss` and `mailbox-mss-type` of the *Annuaire Santé* IG (interop.esante.gouv.fr/ig/fhir/annuaire).
static SEARCH_PARAMETERS_FR_JSON: &str = include_str!("../data/search-parameters-fr.json");
static RESOURCE_TYPES_JSON: &str = include_str!("../data/resource-types.json");
static COMPARTMENT_PATIENT_JSON: &str = include_str!("../data/compartment-patient.json");

/// The type of a search parameter (FHIR R4 `SearchParamType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// `string`: names, addresses, plain strings.
    String,
    /// `token`: codes, codings, identifiers, booleans.
    Token,
    /// `reference`: references to other resources, canonical URLs.
    Reference,
    /// `date`: dates, date-times, periods, timings.
    Date,
    /// `number`: decimals and integers.
    Number,
    /// `quantity`: a value with a unit (Quantity, Age, Duration, Money…).
    Quantity,
    /// `uri`: URIs and URLs.
    Uri,
    /// `composite`: a combination of other parameters, see [`SearchParam::components`].
    Composite,
    /// `special`: parameters with their own search logic (`Location.near`, `_filter`).
    Special,
}

impl ParamType {
    /// Parses the FHIR code of a search parameter type (`"token"`, `"date"`…).
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "string" => Self::String,
            "token" => Self::Token,
            "reference" => Self::Reference,
            "date" => Self::Date,
            "number" => Self::Number,
            "quantity" => Self::Quantity,
            "uri" => Self::Uri,
            "composite" => Self::Composite,
            "special" => Self::Special,
            _ => return None,
        })
    }

    /// The FHIR code of this type (`"token"`, `"date"`…).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Token => "token",
            Self::Reference => "reference",
            Self::Date => "date",
            Self::Number => "number",
            Self::Quantity => "quantity",
            Self::Uri => "uri",
            Self::Composite => "composite",
            Self::Special => "special",
        }
    }
}

/// One component of a composite search parameter.
#[derive(Debug, Clone)]
pub struct Component {
    /// The code of the search parameter this component is defined by (`code`, `value-quantity`…).
    pub code: String,
    /// The type of that parameter, which decides how the component values are converted.
    pub kind: ParamType,
    /// The official component expression, relative to each item of the composite's main expression.
    pub expression: Option<Expression>,
    /// The same, scoped for evaluation on the whole resource: `%compositeItem.select(<expression>)`, with
    /// the item bound to `%compositeItem` (keeps the item's FHIR type and `%resource` right).
    pub(crate) scoped: Option<Expression>,
}

/// The variable that holds the current composite item in [`Component`] scoped expressions.
pub(crate) const COMPOSITE_ITEM_VAR: &str = "compositeItem";

/// One search parameter as it applies to one resource type.
#[derive(Debug, Clone)]
pub struct SearchParam {
    /// The id of the SearchParameter definition (`clinical-patient`, `Resource-tag`…).
    pub id: String,
    /// The definition's canonical URL.
    pub url: String,
    /// The code used in queries (`patient`, `_tag`…).
    pub code: String,
    /// The parameter type.
    pub kind: ParamType,
    /// The compiled expression, restricted to the union branches concerning this resource type. `None` when
    /// the definition has no expression (`_text`, `_content`, …) or when it failed to compile (see
    /// [`Registry::load_errors`]).
    pub expression: Option<Expression>,
    /// For references: the allowed target resource types.
    pub targets: Vec<String>,
    /// For composites: the components, in the definition's order.
    pub components: Vec<Component>,
    /// The definition's `multipleOr`, when stated.
    pub multiple_or: Option<bool>,
    /// The definition's `multipleAnd`, when stated.
    pub multiple_and: Option<bool>,
    /// Where this parameter's index rows are kept (see [`Storage`]).
    pub storage: Storage,
    /// The top-level union branches of `expression`, compiled separately: extraction evaluates them one by
    /// one (a FHIRPath union deduplicates its items, which is quadratic on large collections; the index
    /// entries are deduplicated anyway).
    pub(crate) branches: Vec<Expression>,
}

/// Where a parameter's index rows are kept. Most parameters keep their own; a few are, by their official
/// definitions, exactly another parameter's values restricted to one target type, or the union of other
/// parameters' values. Writing their rows again cost every `Observation` four more index rows (`patient`
/// beside `subject`, three `combo-*` beside `code`/`component-code`…): the store writes them once and
/// searches the rows they are made of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Storage {
    /// Rows of its own, under its own code.
    #[default]
    Own,
    /// The rows of reference parameter `param` whose target type is `target`: the parameter's expression is
    /// `param`'s followed by `.where(resolve() is target)` (`Observation.patient` is `Observation.subject`
    /// where the target is a Patient). References whose type only `resolve()` finds are added to `param`'s
    /// rows with that type ([`crate::index::subset_row`]).
    Subset { param: String, target: String },
    /// The rows of all these parameters of the same type (`Observation.combo-code` is `code` and
    /// `component-code`).
    Union(Vec<String>),
}

/// Parameters whose values are, by their R4 definitions, the union of two others' (the same resource type,
/// the same kind): `combo-*` is the value on the `Observation` itself or on one of its components. Each is
/// checked against the official examples by a test (`stored_as_rows_are_the_same_values`).
const UNIONS: &[(&str, &str, [&str; 2])] = &[
    ("Observation", "combo-code", ["code", "component-code"]),
    (
        "Observation",
        "combo-value-quantity",
        ["value-quantity", "component-value-quantity"],
    ),
    (
        "Observation",
        "combo-value-concept",
        ["value-concept", "component-value-concept"],
    ),
    (
        "Observation",
        "combo-data-absent-reason",
        ["data-absent-reason", "component-data-absent-reason"],
    ),
    (
        "Observation",
        "combo-code-value-quantity",
        ["code-value-quantity", "component-code-value-quantity"],
    ),
    (
        "Observation",
        "combo-code-value-concept",
        ["code-value-concept", "component-code-value-concept"],
    ),
];

/// A search-parameter expression that did not compile (the parameter then has no expression).
#[derive(Debug, Clone)]
pub struct LoadError {
    /// The SearchParameter id.
    pub param_id: String,
    /// The resource type the expression was narrowed for (`Resource` for resource-level parameters).
    pub base: String,
    /// The expression that failed (after narrowing).
    pub expression: String,
    /// The FHIRPath parse error.
    pub message: String,
}

#[derive(Debug, Default)]
struct TypeEntry {
    /// Indexes into `Registry::params`, sorted by code.
    params: Vec<usize>,
    by_code: HashMap<String, usize>,
    compartment: Vec<String>,
}

/// All R4 search parameters, by resource type. Obtain it with [`registry()`].
#[derive(Debug)]
pub struct Registry {
    types: Vec<String>,
    params: Vec<SearchParam>,
    by_type: HashMap<String, TypeEntry>,
    load_errors: Vec<LoadError>,
}

#[derive(Deserialize)]
struct RawComponent {
    code: String,
    #[serde(rename = "type")]
    kind: String,
    expr: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawParam {
    id: String,
    code: String,
    #[serde(rename = "type")]
    kind: String,
    base: Vec<String>,
    expr: Option<String>,
    #[serde(default)]
    target: Vec<String>,
    #[serde(default)]
    comp: Vec<RawComponent>,
    /// Canonical URL, for definitions outside the FHIR core (`http://hl7.org/fhir/SearchParameter/{id}`).
    url: Option<String>,
    multiple_or: Option<bool>,
    multiple_and: Option<bool>,
}

static RESOURCE_TYPES: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(RESOURCE_TYPES_JSON).expect("embedded resource-types.json is valid");
    map.into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or("DomainResource").to_string()))
        .collect()
});

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::load);

/// The registry, loaded (and every expression compiled) on first use.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// Whether `name` is a concrete R4 resource type (`Patient`, `Observation`…). Cheap: does not load the
/// search parameters.
pub fn is_resource_type(name: &str) -> bool {
    RESOURCE_TYPES.contains_key(name)
}

impl Registry {
    fn load() -> Registry {
        let mut raw: Vec<RawParam> = serde_json::from_str(SEARCH_PARAMETERS_JSON)
            .expect("embedded search-parameters.json is valid");
        raw.extend(
            serde_json::from_str::<Vec<RawParam>>(SEARCH_PARAMETERS_FR_JSON)
                .expect("embedded search-parameters-fr.json is valid"),
        );
        let compartment: HashMap<String, Vec<String>> =
            serde_json::from_str(COMPARTMENT_PATIENT_JSON)
                .expect("embedded compartment-patient.json is valid");

        let mut types: Vec<String> = RESOURCE_TYPES.keys().cloned().collect();
        types.sort();
        let mut reg = Registry {
            types,
            params: Vec::new(),
            by_type: HashMap::new(),
            load_errors: Vec::new(),
        };
        for t in &reg.types {
            let entry = TypeEntry {
                compartment: compartment.get(t).cloned().unwrap_or_default(),
                ..Default::default()
            };
            reg.by_type.insert(t.clone(), entry);
        }

        for p in &raw {
            let Some(kind) = ParamType::from_code(&p.kind) else {
                continue;
            };
            for base in &p.base {
                let (applies_to, narrowed): (Vec<&String>, Option<String>) = match base.as_str() {
                    "Resource" => (reg.types.iter().collect(), p.expr.clone()),
                    "DomainResource" => (
                        reg.types
                            .iter()
                            .filter(|t| {
                                RESOURCE_TYPES
                                    .get(*t)
                                    .is_some_and(|b| b == "DomainResource")
                            })
                            .collect(),
                        p.expr.clone(),
                    ),
                    b if is_resource_type(b) => {
                        let t = reg.types.iter().find(|t| *t == b).expect("known type");
                        (vec![t], p.expr.as_deref().map(|e| narrow_expression(e, b)))
                    }
                    _ => continue,
                };
                let mut errors = Vec::new();
                let expression = narrowed
                    .as_deref()
                    .and_then(|src| compile(src, &p.id, base, &mut errors));
                let branches = match (&expression, narrowed.as_deref().map(split_union)) {
                    (Some(e), Some(parts)) if parts.len() > 1 => {
                        let compiled: Vec<Expression> = parts
                            .iter()
                            .filter_map(|b| compile(b, &p.id, base, &mut errors))
                            .collect();
                        if compiled.len() == parts.len() {
                            compiled
                        } else {
                            vec![e.clone()]
                        }
                    }
                    (Some(e), _) => vec![e.clone()],
                    (None, _) => Vec::new(),
                };
                let components = p
                    .comp
                    .iter()
                    .map(|c| Component {
                        code: c.code.clone(),
                        kind: ParamType::from_code(&c.kind).unwrap_or(ParamType::Special),
                        expression: compile(&c.expr, &p.id, base, &mut errors),
                        scoped: compile(
                            &format!("%{COMPOSITE_ITEM_VAR}.select({})", c.expr),
                            &p.id,
                            base,
                            &mut errors,
                        ),
                    })
                    .collect();
                reg.load_errors.extend(errors);
                let idx = reg.params.len();
                reg.params.push(SearchParam {
                    id: p.id.clone(),
                    url: p
                        .url
                        .clone()
                        .unwrap_or_else(|| format!("http://hl7.org/fhir/SearchParameter/{}", p.id)),
                    code: p.code.clone(),
                    kind,
                    expression,
                    targets: p.target.clone(),
                    components,
                    multiple_or: p.multiple_or,
                    multiple_and: p.multiple_and,
                    storage: Storage::Own,
                    branches,
                });
                for t in applies_to {
                    let entry = reg.by_type.get_mut(t).expect("entry per type");
                    // First definition wins (the generated extract has no duplicates).
                    entry.by_code.entry(p.code.clone()).or_insert(idx);
                }
            }
        }
        for entry in reg.by_type.values_mut() {
            let mut list: Vec<(&str, usize)> = entry
                .by_code
                .iter()
                .map(|(c, i)| (c.as_str(), *i))
                .collect();
            list.sort();
            entry.params = list.into_iter().map(|(_, i)| i).collect();
        }
        reg.assign_storage();
        if !reg.load_errors.is_empty() {
            tracing::warn!(
                count = reg.load_errors.len(),
                "search-parameter expressions that failed to compile"
            );
        }
        reg
    }

    /// Every concrete resource type, sorted by name.
    pub fn resource_types(&self) -> impl Iterator<Item = &str> {
        self.types.iter().map(String::as_str)
    }

    /// Whether `name` is a concrete resource type.
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.by_type.contains_key(name)
    }

    /// The search parameters of `rtype` (its own, then those of `Resource`/`DomainResource`), sorted by code.
    /// Empty for an unknown type.
    pub fn params(&self, rtype: &str) -> impl Iterator<Item = &SearchParam> {
        self.by_type
            .get(rtype)
            .map(|e| e.params.as_slice())
            .unwrap_or(&[])
            .iter()
            .map(|&i| &self.params[i])
    }

    /// The search parameter `code` of `rtype`, if it exists.
    pub fn param(&self, rtype: &str, code: &str) -> Option<&SearchParam> {
        self.by_type
            .get(rtype)?
            .by_code
            .get(code)
            .map(|&i| &self.params[i])
    }

    /// The codes of the parameters of `rtype` that link it to the Patient compartment (empty when it is not in
    /// the compartment).
    pub fn patient_compartment_params(&self, rtype: &str) -> &[String] {
        self.by_type
            .get(rtype)
            .map(|e| e.compartment.as_slice())
            .unwrap_or(&[])
    }

    /// Decides [`SearchParam::storage`]. Only parameters defined for one concrete type qualify (those of
    /// `Resource`/`DomainResource` are shared by every type), and only when what they are made of keeps its
    /// own rows.
    fn assign_storage(&mut self) {
        let mut users: HashMap<usize, usize> = HashMap::new();
        for entry in self.by_type.values() {
            for &i in &entry.params {
                *users.entry(i).or_default() += 1;
            }
        }
        let mut decided: Vec<(usize, Storage)> = Vec::new();
        for (rtype, entry) in &self.by_type {
            let own = |code: &str| -> Option<&SearchParam> {
                let i = *entry.by_code.get(code)?;
                let p = &self.params[i];
                (users.get(&i) == Some(&1) && p.expression.is_some()).then_some(p)
            };
            for &i in &entry.params {
                let p = &self.params[i];
                let Some(expr) = &p.expression else { continue };
                if users.get(&i) != Some(&1) {
                    continue;
                }
                if p.kind == ParamType::Reference
                    && let Some((base, target)) = expr
                        .source()
                        .strip_suffix(')')
                        .and_then(|s| s.rsplit_once(".where(resolve() is "))
                    && is_resource_type(target)
                    && !base.contains("resolve()")
                    && let Some(q) = self.params(rtype).find(|q| {
                        q.kind == ParamType::Reference
                            && q.code != p.code
                            && own(&q.code).is_some()
                            && q.expression.as_ref().is_some_and(|e| e.source() == base)
                            && q.targets.iter().any(|t| t == target)
                    })
                {
                    decided.push((
                        i,
                        Storage::Subset {
                            param: q.code.clone(),
                            target: target.to_string(),
                        },
                    ));
                    continue;
                }
                if let Some((_, _, parts)) =
                    UNIONS.iter().find(|(t, c, _)| t == rtype && *c == p.code)
                    && parts
                        .iter()
                        .all(|c| own(c).is_some_and(|q| q.kind == p.kind))
                {
                    decided.push((
                        i,
                        Storage::Union(parts.iter().map(|c| c.to_string()).collect()),
                    ));
                }
            }
        }
        for (i, st) in decided {
            self.params[i].storage = st;
        }
    }

    /// The expressions that failed to compile when the registry was loaded.
    pub fn load_errors(&self) -> &[LoadError] {
        &self.load_errors
    }
}

fn compile(src: &str, id: &str, base: &str, errors: &mut Vec<LoadError>) -> Option<Expression> {
    if src.trim().is_empty() {
        return None;
    }
    match Expression::parse(src) {
        Ok(e) => Some(e),
        Err(e) => {
            errors.push(LoadError {
                param_id: id.to_string(),
                base: base.to_string(),
                expression: src.to_string(),
                message: e.to_string(),
            });
            None
        }
    }
}

/// Splits `expr` at its top-level `|` (outside parentheses, brackets, braces and quotes).
pub(crate) fn split_union(expr: &str) -> Vec<&str> {
    let bytes = expr.as_bytes();
    let mut parts = Vec::new();
    let mut depth: i32 = 0;
    let mut quote: Option<u8> = None;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(q) => {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                b'\'' | b'"' | b'`' => quote = Some(c),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b'|' if depth == 0 => {
                    parts.push(expr[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            },
        }
        i += 1;
    }
    parts.push(expr[start..].trim());
    parts
}

/// The first identifier of a branch, past leading whitespace and opening parentheses.
fn first_identifier(branch: &str) -> &str {
    let s = branch.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Keeps, of the top-level union branches of `expr`, those that concern `rtype`: starting with `rtype`,
/// `Resource` or `DomainResource`, or not starting with a resource type name at all.
pub(crate) fn narrow_expression(expr: &str, rtype: &str) -> String {
    let branches = split_union(expr);
    if branches.len() == 1 {
        return expr.to_string();
    }
    let kept: Vec<&str> = branches
        .iter()
        .copied()
        .filter(|b| {
            let first = first_identifier(b);
            first == rtype
                || first == "Resource"
                || first == "DomainResource"
                || !is_resource_type(first)
        })
        .collect();
    if kept.len() == branches.len() {
        expr.to_string()
    } else {
        kept.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_parentheses_and_quotes() {
        assert_eq!(split_union("A.b | C.d"), vec!["A.b", "C.d"]);
        assert_eq!(
            split_union("(A.b as X) | A.c.where(x = 'a|b') | A.e.where(f | g)"),
            vec!["(A.b as X)", "A.c.where(x = 'a|b')", "A.e.where(f | g)"]
        );
        assert_eq!(
            split_union("A.b.where(x = 'it\\'s|')"),
            vec!["A.b.where(x = 'it\\'s|')"]
        );
    }

    #[test]
    fn narrowing_keeps_matching_branches() {
        let e = "AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | (Condition.subject as Reference)";
        assert_eq!(
            narrow_expression(e, "CarePlan"),
            "CarePlan.subject.where(resolve() is Patient)"
        );
        assert_eq!(
            narrow_expression(e, "Condition"),
            "(Condition.subject as Reference)"
        );
        assert_eq!(
            narrow_expression("Resource.meta.tag | x.y", "Patient"),
            "Resource.meta.tag | x.y"
        );
        assert_eq!(
            narrow_expression("Observation.a | Patient.b | name", "Patient"),
            "Patient.b | name"
        );
        assert_eq!(narrow_expression("Patient.name", "Patient"), "Patient.name");
    }

    #[test]
    fn types_and_compartment() {
        let r = registry();
        let n = r.resource_types().count();
        assert!((145..=148).contains(&n), "{n} resource types");
        assert!(r.is_resource_type("Patient") && is_resource_type("Observation"));
        assert!(
            !r.is_resource_type("Resource")
                && !is_resource_type("DomainResource")
                && !is_resource_type("Foo")
        );
        assert_eq!(
            r.patient_compartment_params("Observation"),
            ["subject", "performer"]
        );
        assert_eq!(r.patient_compartment_params("Patient"), ["link"]);
        assert!(r.patient_compartment_params("Organization").is_empty());
        assert!(r.patient_compartment_params("Nope").is_empty());
    }

    #[test]
    fn params_per_type() {
        let r = registry();
        let p = r.param("Patient", "family").expect("Patient.family");
        assert_eq!(p.kind, ParamType::String);
        let p = r
            .param("Observation", "subject")
            .expect("Observation.subject");
        assert_eq!(p.kind, ParamType::Reference);
        assert!(p.targets.iter().any(|t| t == "Patient"));
        // Resource-level parameters apply to every type, `_text` only to DomainResources.
        for t in r.resource_types() {
            for code in [
                "_id",
                "_lastUpdated",
                "_tag",
                "_profile",
                "_security",
                "_source",
            ] {
                assert!(r.param(t, code).is_some(), "{t}.{code}");
            }
        }
        assert!(r.param("Patient", "_text").is_some());
        assert!(r.param("Bundle", "_text").is_none());
        let c = r
            .param("Observation", "code-value-quantity")
            .expect("composite");
        assert_eq!(c.kind, ParamType::Composite);
        let comps: Vec<_> = c
            .components
            .iter()
            .map(|c| (c.code.as_str(), c.kind))
            .collect();
        assert_eq!(
            comps,
            [
                ("code", ParamType::Token),
                ("value-quantity", ParamType::Quantity)
            ]
        );
        let c = r
            .param("MolecularSequence", "chromosome-variant-coordinate")
            .expect("composite");
        assert_eq!(
            c.components[0].expression.as_ref().map(|e| e.source()),
            Some("%resource.referenceSeq.chromosome")
        );
        let codes: Vec<_> = r.params("Patient").map(|p| p.code.as_str()).collect();
        let mut sorted = codes.clone();
        sorted.sort();
        assert_eq!(codes, sorted);
        assert!(codes.contains(&"birthdate") && codes.contains(&"_tag"));
        assert_eq!(r.params("Nope").count(), 0);
        assert!(r.param("Patient", "nope").is_none());
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;

    #[test]
    fn parameters_kept_as_other_rows() {
        let reg = registry();
        let storage = |t: &str, c: &str| reg.param(t, c).map(|p| p.storage.clone());
        let subset = |param: &str, target: &str| {
            Some(Storage::Subset {
                param: param.into(),
                target: target.into(),
            })
        };
        assert_eq!(
            storage("Observation", "patient"),
            subset("subject", "Patient")
        );
        assert_eq!(
            storage("DocumentReference", "patient"),
            subset("subject", "Patient")
        );
        assert_eq!(
            storage("Encounter", "practitioner"),
            subset("participant", "Practitioner")
        );
        assert_eq!(
            storage("Observation", "combo-code"),
            Some(Storage::Union(vec!["code".into(), "component-code".into()]))
        );
        // Own rows: a direct element, a type-restricted reference with no unrestricted twin, a shared parameter.
        assert_eq!(storage("AllergyIntolerance", "patient"), Some(Storage::Own));
        assert_eq!(storage("Observation", "subject"), Some(Storage::Own));
        assert_eq!(storage("Observation", "_tag"), Some(Storage::Own));
        let (mut subsets, mut unions) = (0, 0);
        for t in reg.resource_types() {
            for p in reg.params(t) {
                let parts: Vec<&str> = match &p.storage {
                    Storage::Own => continue,
                    Storage::Subset { param, .. } => {
                        subsets += 1;
                        vec![param]
                    }
                    Storage::Union(parts) => {
                        unions += 1;
                        parts.iter().map(String::as_str).collect()
                    }
                };
                for part in parts {
                    let q = reg.param(t, part).expect("part exists");
                    assert_eq!(q.storage, Storage::Own, "{t}.{} made of {part}", p.code);
                    assert_eq!(q.kind, p.kind, "{t}.{} made of {part}", p.code);
                }
            }
        }
        assert_eq!((subsets, unions), (47, 6));
    }
}
